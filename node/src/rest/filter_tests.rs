#![allow(clippy::unwrap_used)]

use std::cmp::Ordering;

use meshlite_core::schema::Schema;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::rest::keys::{like, timestamp};
use crate::rest::query::parse;

const SCHEMA: &str = r#"
version = 1
strict = true
[collections.items]
key_type = "integer"
[collections.items.fields]
n = { type = "integer" }
s = { type = "text" }
at = { type = "timestamp" }
ok = { type = "boolean" }
u = {}
[collections.open]
"#;

fn table(name: &str) -> Table {
    Table::resolve(&Schema::from_toml(SCHEMA).unwrap(), name).unwrap()
}

fn run(name: &str, q: &[(&str, &str)], rows: &[Value]) -> Result<Vec<i64>, RestError> {
    let pairs: Vec<(String, String)> = q.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    let plan = Plan::bind(&table(name), &parse(&pairs)?)?;
    Ok(plan
        .apply(rows.to_vec())
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect())
}

fn rows() -> Vec<Value> {
    vec![
        json!({"id": 1, "n": 10, "s": "apple", "at": "2024-05-01T12:00:00Z", "ok": true, "u": 5}),
        json!({"id": 2, "n": 9, "s": "Banana", "at": "2024-05-01T13:00:00+02:00", "ok": false, "u": "5"}),
        json!({"id": 3, "n": null, "s": "cherry", "u": 40}),
        json!({"id": 4, "n": 100, "s": "apple pie", "at": "2024-05-01 11:30:00.5Z"}),
    ]
}

#[test]
fn typed_comparisons() {
    let r = rows();
    assert_eq!(
        run("items", &[("n", "gt.9")], &r).unwrap(),
        [1, 4],
        "numbers, not text"
    );
    assert_eq!(
        run("items", &[("n", "not.gt.9")], &r).unwrap(),
        [2],
        "null is unknown"
    );
    assert_eq!(run("items", &[("n", "is.null")], &r).unwrap(), [3]);
    assert_eq!(
        run("items", &[("n", "not.is.null")], &r).unwrap(),
        [1, 2, 4]
    );
    assert_eq!(run("items", &[("n", "in.(9,100)")], &r).unwrap(), [2, 4]);
    assert_eq!(run("items", &[("s", "like.apple*")], &r).unwrap(), [1, 4]);
    assert_eq!(run("items", &[("s", "ilike.b%")], &r).unwrap(), [2]);
    assert_eq!(
        run("items", &[("s", "like.b%")], &r).unwrap(),
        Vec::<i64>::new()
    );
    assert_eq!(run("items", &[("s", "like._pple")], &r).unwrap(), [1]);
    assert_eq!(run("items", &[("ok", "is.true")], &r).unwrap(), [1]);
    assert_eq!(run("items", &[("ok", "eq.false")], &r).unwrap(), [2]);
    // 13:00+02:00 is 11:00Z: before 11:30:00.5Z and 12:00Z.
    let by_time = [("at", "lt.2024-05-01T11:45:00Z")];
    assert_eq!(run("items", &by_time, &r).unwrap(), [2, 4]);
    let ordered = [("order", "at.asc"), ("at", "not.is.null")];
    assert_eq!(run("items", &ordered, &r).unwrap(), [2, 4, 1]);
    // Untyped: numbers compare as numbers, strings as text.
    assert_eq!(run("items", &[("u", "gt.6")], &r).unwrap(), [3]);
    assert_eq!(run("items", &[("u", "eq.5")], &r).unwrap(), [1, 2]);
    assert_eq!(run("items", &[("id", "gte.3")], &r).unwrap(), [3, 4]);
}

#[test]
fn order_nulls_and_ties() {
    let r = rows();
    assert_eq!(
        run("items", &[("order", "n.asc")], &r).unwrap(),
        [2, 1, 4, 3]
    );
    assert_eq!(
        run("items", &[("order", "n.desc")], &r).unwrap(),
        [3, 4, 1, 2]
    );
    let q = [("order", "n.desc.nullslast")];
    assert_eq!(run("items", &q, &r).unwrap(), [4, 1, 2, 3]);
    let q = [("order", "n.asc.nullsfirst")];
    assert_eq!(run("items", &q, &r).unwrap(), [3, 2, 1, 4]);
    let q = [("order", "ok.desc,id.desc")];
    assert_eq!(run("items", &q, &r).unwrap(), [4, 3, 1, 2]);
}

#[test]
fn unknown_columns_and_bad_operands() {
    let r = rows();
    assert_eq!(
        run("items", &[("nope", "eq.1")], &r).unwrap_err().code,
        "42703"
    );
    assert_eq!(
        run("items", &[("order", "nope")], &r).unwrap_err().code,
        "42703"
    );
    assert_eq!(
        run("items", &[("select", "nope")], &r).unwrap_err().code,
        "42703"
    );
    assert_eq!(
        run("items", &[("n", "eq.abc")], &r).unwrap_err().code,
        "22P02"
    );
    assert_eq!(
        run("items", &[("at", "gt.yesterday")], &r)
            .unwrap_err()
            .code,
        "22P02"
    );
    assert_eq!(
        run("items", &[("ok", "eq.maybe")], &r).unwrap_err().code,
        "22P02"
    );
    // An open collection has every column; absent values are null.
    assert_eq!(
        run("open", &[("anything", "is.null")], &r).unwrap(),
        [1, 2, 3, 4]
    );
}

#[test]
fn like_patterns() {
    assert!(like("abc", "a%c", false));
    assert!(like("abc", "%", false));
    assert!(like("", "%", false));
    assert!(!like("abc", "a%d", false));
    assert!(like("a%c", "a\\%c", false));
    assert!(!like("abc", "a\\%c", false));
    assert!(like("ÄBC", "äb_", true));
    assert!(like(&"a".repeat(5000), &"%a".repeat(100), false));
}

proptest! {
    #[test]
    fn like_and_timestamps_never_panic(t in "\\PC{0,30}", p in "[%_\\\\a-c\\PC]{0,12}") {
        let _ = like(&t, &p, true);
        let _ = like(&t, &p, false);
        let _ = timestamp(&t);
    }
}

#[test]
fn timestamps_normalize_offsets() {
    assert_eq!(timestamp("1970-01-01T00:00:00Z"), Some((0, 0)));
    assert_eq!(timestamp("1970-01-01T01:00:00+01:00"), Some((0, 0)));
    assert_eq!(timestamp("1970-01-01 00:00:01.25Z"), Some((1, 250_000_000)));
    assert_eq!(timestamp("2000-03-01T00:00:00Z"), Some((951_868_800, 0)));
    for bad in [
        "",
        "2024-13-01T00:00:00Z",
        "2024-01-01T00:00:00",
        "2024-01-01T00:00:00.Z",
    ] {
        assert_eq!(timestamp(bad), None, "{bad}");
    }
}

#[test]
fn logic_trees_are_three_valued() {
    let r = rows();
    // n is null for 3: `n.gt.50` is unknown there, so `or` with a false member is unknown.
    assert_eq!(
        run("items", &[("or", "(n.gt.50,s.eq.apple)")], &r).unwrap(),
        [1, 4]
    );
    assert_eq!(
        run("items", &[("or", "(n.gt.50,s.eq.cherry)")], &r).unwrap(),
        [3, 4]
    );
    assert_eq!(
        run("items", &[("not.or", "(n.gt.50,s.eq.apple)")], &r).unwrap(),
        [2]
    );
    assert_eq!(
        run(
            "items",
            &[("and", "(n.lt.50,or(s.like.a*,ok.is.false))")],
            &r
        )
        .unwrap(),
        [1, 2]
    );
    assert_eq!(
        run("items", &[("or", "(not.and(n.gt.5,n.lt.50),id.eq.3)")], &r).unwrap(),
        [3, 4]
    );
    assert_eq!(
        run(
            "items",
            &[("or", "(s.eq.\"apple pie\",s.in.(\"x,y\",Banana))")],
            &r
        )
        .unwrap(),
        [2, 4]
    );
    assert_eq!(
        run("items", &[("or", "(n.eq.zz)")], &r).unwrap_err().code,
        "22P02"
    );
}

#[test]
fn json_paths_and_containment() {
    let docs = vec![
        json!({"id": 1, "u": {"a": {"b": 5}, "tags": ["x", "y"]}}),
        json!({"id": 2, "u": {"a": {"b": 40}, "tags": ["y"]}}),
        json!({"id": 3, "u": {"a": {"b": "5", "c": 1}}}),
        json!({"id": 4, "u": ["x", 1]}),
    ];
    assert_eq!(
        run("items", &[("u->a->>b", "eq.5")], &docs).unwrap(),
        [1, 3]
    );
    assert_eq!(
        run("items", &[("u->a->b", "gt.10")], &docs).unwrap(),
        [2, 3]
    );
    assert_eq!(run("items", &[("u->a->c", "eq.1")], &docs).unwrap(), [3]);
    // Text order: "40" < "5".
    assert_eq!(run("items", &[("u->a->>b", "lt.5")], &docs).unwrap(), [2]);
    assert_eq!(
        run("items", &[("u->tags", "cs.{y}")], &docs).unwrap(),
        [1, 2]
    );
    assert_eq!(
        run("items", &[("u->tags", "cd.[\"y\",\"z\"]")], &docs).unwrap(),
        [2]
    );
    assert_eq!(
        run("items", &[("u", "cs.{\"a\":{\"b\":40}}")], &docs).unwrap(),
        [2]
    );
    assert_eq!(run("items", &[("u", "cs.[1]")], &docs).unwrap(), [4]);
    assert_eq!(
        run("items", &[("u->tags", "ov.{x,q}")], &docs).unwrap(),
        [1]
    );
    assert_eq!(
        run("items", &[("u->tags->>0", "match.^[xy]$")], &docs).unwrap(),
        [1, 2]
    );
    assert_eq!(
        run("items", &[("u->tags->>0", "imatch.^X")], &docs).unwrap(),
        [1]
    );
    assert_eq!(
        run("items", &[("u", "cs.nope")], &docs).unwrap_err().code,
        "22P02"
    );
    assert_eq!(
        run("items", &[("n->a", "eq.1")], &docs).unwrap_err().code,
        "42883"
    );
    assert_eq!(
        run("items", &[("s", "cs.{a}")], &docs).unwrap_err().code,
        "42883"
    );
    assert_eq!(
        run("items", &[("s", "match.(")], &docs).unwrap_err().code,
        "2201B"
    );
}

// --- property: the evaluator equals a naive reference ---

#[derive(Clone, Debug)]
struct Case {
    rows: Vec<(Option<i64>, Option<String>)>,
    filters: Vec<(bool, u8, i64, String)>,
    order: Option<(bool, bool, bool)>,
    limit: Option<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    let row = (
        proptest::option::of(-5i64..5),
        proptest::option::of("[a-c]{0,2}"),
    );
    let filter = (any::<bool>(), 0u8..3, -5i64..5, "[a-c]{0,2}");
    (
        proptest::collection::vec(row, 0..20),
        proptest::collection::vec(filter, 0..3),
        proptest::option::of((any::<bool>(), any::<bool>(), any::<bool>())),
        proptest::option::of(0usize..25),
    )
        .prop_map(|(rows, filters, order, limit)| Case {
            rows,
            filters,
            order,
            limit,
        })
}

const OPS: [&str; 3] = ["eq", "gt", "lt"];

fn reference(c: &Case) -> Vec<i64> {
    let pass = |(n, s): &(Option<i64>, Option<String>)| {
        c.filters.iter().all(|(on_n, op, x, t)| {
            let o = if *on_n {
                n.map(|n| n.cmp(x))
            } else {
                s.as_ref().map(|s| s.as_str().cmp(t.as_str()))
            };
            o.is_some_and(|o| match op {
                0 => o.is_eq(),
                1 => o.is_gt(),
                _ => o.is_lt(),
            })
        })
    };
    let mut ids: Vec<usize> = (0..c.rows.len()).filter(|i| pass(&c.rows[*i])).collect();
    if let Some((on_n, desc, nulls_first)) = c.order {
        ids.sort_by(|a, b| {
            let key = |i: usize| -> Option<(Option<i64>, Option<String>)> {
                let (n, s) = &c.rows[i];
                if on_n {
                    n.map(|n| (Some(n), None))
                } else {
                    s.clone().map(|s| (None, Some(s)))
                }
            };
            match (key(*a), key(*b)) {
                (None, None) => Ordering::Equal,
                (None, _) => {
                    if nulls_first {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    }
                }
                (_, None) => {
                    if nulls_first {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    }
                }
                (Some(x), Some(y)) => {
                    if desc {
                        y.cmp(&x)
                    } else {
                        x.cmp(&y)
                    }
                }
            }
        });
    }
    ids.into_iter()
        .take(c.limit.unwrap_or(usize::MAX))
        .map(|i| i as i64)
        .collect()
}

fn evaluated(c: &Case) -> Vec<i64> {
    let rows: Vec<Value> = c
        .rows
        .iter()
        .enumerate()
        .map(|(i, (n, s))| json!({"id": i, "n": n, "s": s}))
        .collect();
    let mut q: Vec<(String, String)> = c
        .filters
        .iter()
        .map(|(on_n, op, x, t)| {
            let op = OPS[usize::from(*op)];
            match on_n {
                true => ("n".into(), format!("{op}.{x}")),
                false => ("s".into(), format!("{op}.{t}")),
            }
        })
        .collect();
    if let Some((on_n, desc, nulls_first)) = c.order {
        let col = if on_n { "n" } else { "s" };
        let dir = if desc { "desc" } else { "asc" };
        let nulls = if nulls_first {
            "nullsfirst"
        } else {
            "nullslast"
        };
        q.push(("order".into(), format!("{col}.{dir}.{nulls}")));
    }
    let plan = Plan::bind(&table("items"), &parse(&q).unwrap()).unwrap();
    plan.apply(rows)
        .iter()
        .take(c.limit.unwrap_or(usize::MAX))
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

proptest! {
    #[test]
    fn evaluator_equals_reference(c in case()) {
        prop_assert_eq!(evaluated(&c), reference(&c));
    }
}
