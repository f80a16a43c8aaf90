//! `Query::insertion_order`: rows in the order this replica first stored them (a re-created
//! record moves to the end, an update keeps its place), `order` ties broken by it; log rows in
//! append order. Real SQLite files.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use meshlite_core::Schema;
use meshlite_core::store::{OpenOptions, Query, Store, WriteOp};
use serde_json::{Value, json};

const SCHEMA: &str = r#"
version = 1
[collections.t]
key_type = "integer"
[collections.t.fields]
g = { type = "integer" }
[collections.l]
kind = "log"
"#;

fn ids(rows: Vec<Value>, key: &str) -> Vec<Value> {
    rows.into_iter().map(|r| r[key].clone()).collect()
}

#[test]
fn rows_come_back_in_insertion_order() {
    let dir = tempfile::tempdir().unwrap();
    let opts = OpenOptions {
        schema: Some(Schema::from_toml(SCHEMA).unwrap()),
        ..Default::default()
    };
    let store = Store::open(dir.path(), opts).unwrap();
    for id in [5, 1, 9, 3] {
        store.put("t", json!({"id": id, "g": id % 2})).unwrap();
    }
    let ins = Query {
        insertion_order: true,
        ..Default::default()
    };
    assert_eq!(
        ids(store.query("t", &ins).unwrap(), "id"),
        [json!(5), json!(1), json!(9), json!(3)]
    );
    assert_eq!(
        ids(store.query("t", &Query::default()).unwrap(), "id"),
        [json!(1), json!(3), json!(5), json!(9)]
    );
    store.put("t", json!({"id": 1, "g": 7})).unwrap();
    store.delete("t", "9").unwrap();
    store.recreate("t", json!({"id": 9, "g": 1})).unwrap();
    assert_eq!(
        ids(store.query("t", &ins).unwrap(), "id"),
        [json!(5), json!(1), json!(3), json!(9)]
    );
    let by_g = Query {
        order: Some(("g".into(), false)),
        insertion_order: true,
        ..Default::default()
    };
    assert_eq!(
        ids(store.query("t", &by_g).unwrap(), "id"),
        [json!(5), json!(3), json!(9), json!(1)]
    );
    let ops = ["c", "a", "b"]
        .map(|id| WriteOp::Append {
            collection: "l".into(),
            value: json!({"id": id}),
        })
        .to_vec();
    store.transact(ops).unwrap();
    assert_eq!(
        ids(store.query("l", &ins).unwrap(), "id"),
        [json!("c"), json!("a"), json!("b")]
    );
}
