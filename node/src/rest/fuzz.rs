//! Body of the fuzz target `rest_query` (`fuzz/`): a request's query string (and, after a
//! newline, a `Range` header) parsed, bound to a typed table and evaluated over rows of every
//! JSON shape. Behind the `testkit` feature; `rest::fuzz_tests` runs it on mutated seeds in
//! `cargo test`, so it stays panic-free between campaigns.
//!
//! What must hold, whatever the bytes: parsing, binding and evaluating never panic (a sort
//! whose comparison is not a total order panics in Rust's sort, so this checks that too);
//! every row kept matches the plan; evaluating the result again gives it back unchanged (the
//! filter is a predicate, the order a total preorder and the sort stable); projection of any
//! kept row answers.

use std::sync::OnceLock;

use meshlite_core::schema::Schema;
use serde_json::{Value, json};

use super::filter::Plan;
use super::query::{parse_range, parse_raw};
use super::table::Table;

/// Typed fields of every kind, a JSON field, and undeclared fields allowed.
const SCHEMA: &str = r#"
version = 1
[collections.items]
key_type = "integer"
[collections.items.fields]
n = { type = "integer" }
f = { type = "float" }
s = { type = "text" }
at = { type = "timestamp" }
ok = { type = "boolean" }
u = { type = "uuid" }
j = { type = "json" }
"#;

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let schema = Schema::from_toml(SCHEMA).expect("the fuzz schema parses");
        Table::resolve(&schema, "items").expect("the fuzz table resolves")
    })
}

/// Rows with values of every type in every field, including ones the declared types refuse
/// (older peers may have written them), nulls and missing fields.
fn rows() -> &'static [Value] {
    static ROWS: OnceLock<Vec<Value>> = OnceLock::new();
    ROWS.get_or_init(|| {
        vec![
            json!({"id": 1, "n": 10, "f": 1.5, "s": "apple", "at": "2024-05-01T12:00:00Z", "ok": true,
                   "u": "018f0000-0000-7000-8000-000000000001", "j": {"a": [1, 2], "b": {"c": "x"}}, "x": 1}),
            json!({"id": 2, "n": -3, "f": -0.0, "s": "Banana", "at": "2024-05-01 13:00:00+02:00", "ok": false,
                   "u": "018F0000-0000-7000-8000-000000000002", "j": [1, "a", null], "x": "1"}),
            json!({"id": 3, "n": null, "s": "", "j": "text", "x": [1, 2]}),
            json!({"id": 4, "n": 9_007_199_254_740_993_i64, "f": 1e300, "s": "%_\\*", "at": "not a time",
                   "ok": "true", "u": "nope", "j": 5, "x": {"k": null}}),
            json!({"id": 5, "n": "10", "f": "NaN", "s": 7, "at": 12, "ok": 1, "j": true, "x": null}),
            json!({"id": 6}),
            json!({"id": 7, "n": 10, "f": 1.5, "s": "apple", "j": {"a": [2, 1]}, "x": 1.0}),
        ]
    })
}

/// The body: bytes → query (and `Range`) → plan → rows; panics on a broken property.
pub fn rest_query(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (query, range) = text.split_once('\n').unwrap_or((text, ""));
    let _ = parse_range(range);
    let Ok(q) = parse_raw(Some(query)) else {
        return;
    };
    let table = table();
    let Ok(plan) = Plan::bind(table, &q) else {
        return;
    };
    let out = plan.apply(rows().to_vec());
    assert!(out.len() <= rows().len(), "rows appeared from nowhere");
    for row in &out {
        assert!(plan.matches(row), "a kept row does not match: {row}");
        let fields = row.as_object().expect("rows are objects");
        let _ = table.project(&q.select, fields);
    }
    assert_eq!(plan.apply(out.clone()), out, "evaluation is not idempotent");
}
