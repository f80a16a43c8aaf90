//! `/rest/v1` against a model, over real HTTP in one process: for random rows (written with
//! POST in a random order after a DELETE of everything, so ids re-created after deletion and
//! insertion order are exercised too) and random filters — `eq`/`gt`/`lt`, `not.`, on columns,
//! the key (`id=eq.v` reads one record instead of scanning) and a JSON path (`j->k`), `cs` on a
//! JSON array (`j->tags=cs.{a}`), nested in `or`/`and`/`not.or` trees — with `order` and
//! `limit`/`offset`, the answer of `GET /rest/v1/items` equals the same query evaluated by a
//! naive reference over the rows (SQL's three-valued logic, insertion order for ties).
//! Hostile requests get PostgREST-shaped 4xx answers and leave the rows untouched.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::cmp::Ordering;
use std::net::SocketAddr;

use hyper::{Method, StatusCode};
use meshlite_core::schema::Schema;
use meshlite_node::httpc;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

const SCHEMA: &str = r#"
version = 1
strict = true
[collections.items]
key_type = "integer"
[collections.items.fields]
n = { type = "integer" }
s = { type = "text" }
j = { type = "json" }
"#;

/// `n`, `s`, and `j = {"k": k, "tags": tags}`.
type Row = (Option<i64>, Option<String>, Option<i64>, Vec<String>);

/// A leaf filter: (column: 0 `n`, 1 `s`, 2 `id`, 3 `j->k`, 4 `j->tags` contains; op index;
/// integer operand; text operand; negated).
type Leaf = (u8, usize, i64, String, bool);

/// A condition: a leaf, or an `or`/`and` group (`any`, `negate`, members).
#[derive(Clone, Debug)]
enum Tree {
    Leaf(Leaf),
    Group(bool, bool, Vec<Tree>),
}

#[derive(Clone, Debug)]
struct Case {
    rows: Vec<Row>,
    /// Rows are inserted in this order (a permutation of the row indexes).
    insert_order: Vec<usize>,
    filters: Vec<Tree>,
    /// (on `n` (else `s`), descending, nulls first)
    order: Option<(bool, bool, bool)>,
    limit: Option<usize>,
    offset: usize,
}

const OPS: [&str; 3] = ["eq", "gt", "lt"];

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = (0u8..5, 0usize..3, -4i64..14, "[ab]{0,2}", any::<bool>()).prop_map(Tree::Leaf);
    leaf.prop_recursive(2, 8, 3, |inner| {
        (
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(inner, 1..4),
        )
            .prop_map(|(any, negate, members)| Tree::Group(any, negate, members))
    })
}

fn case() -> impl Strategy<Value = Case> {
    let row = (
        proptest::option::of(-4i64..4),
        proptest::option::of("[ab]{0,2}"),
        proptest::option::of(-2i64..2),
        proptest::collection::vec("[ab]", 0..3),
    );
    proptest::collection::vec(row, 0..12)
        .prop_flat_map(|rows| {
            let order = Just((0..rows.len()).collect::<Vec<_>>()).prop_shuffle();
            (
                Just(rows),
                order,
                proptest::collection::vec(tree(), 0..3),
                proptest::option::of((any::<bool>(), any::<bool>(), any::<bool>())),
                proptest::option::of(0usize..14),
                0usize..4,
            )
        })
        .prop_map(|(rows, insert_order, filters, order, limit, offset)| Case {
            rows,
            insert_order,
            filters,
            order,
            limit,
            offset,
        })
}

/// The tag a `cs` leaf looks for.
fn tag(t: &str) -> String {
    t.chars().next().unwrap_or('a').to_string()
}

/// SQL's three-valued result of a leaf on row `id`.
fn leaf_holds(id: i64, (n, s, k, tags): &Row, (col, op, x, t, negate): &Leaf) -> Option<bool> {
    let o = match col {
        0 => n.map(|n| n.cmp(x)),
        1 => s.as_deref().map(|s| s.cmp(t.as_str())),
        2 => Some(id.cmp(x)),
        3 => k.map(|k| k.cmp(x)),
        // `j->tags=cs.{w}`, w the first letter of t (`a` when t is empty).
        _ => return Some(tags.contains(&tag(t)) != *negate),
    };
    o.map(|o| [o.is_eq(), o.is_gt(), o.is_lt()][*op] != *negate)
}

fn holds(id: i64, row: &Row, t: &Tree) -> Option<bool> {
    match t {
        Tree::Leaf(l) => leaf_holds(id, row, l),
        Tree::Group(any, negate, members) => {
            let results: Vec<Option<bool>> = members.iter().map(|m| holds(id, row, m)).collect();
            let r = if results.contains(&Some(*any)) {
                Some(*any)
            } else if results.contains(&None) {
                None
            } else {
                Some(!*any)
            };
            r.map(|b| b != *negate)
        }
    }
}

fn reference(c: &Case) -> Vec<i64> {
    let mut ids: Vec<usize> = c
        .insert_order
        .iter()
        .copied()
        .filter(|i| {
            let row = &c.rows[*i];
            c.filters
                .iter()
                .all(|t| holds(*i as i64, row, t) == Some(true))
        })
        .collect();
    if let Some((on_n, desc, nulls_first)) = c.order {
        let key = |i: usize| -> Option<(Option<i64>, Option<String>)> {
            let (n, s, ..) = &c.rows[i];
            match on_n {
                true => n.map(|n| (Some(n), None)),
                false => s.clone().map(|s| (None, Some(s))),
            }
        };
        ids.sort_by(|a, b| match (key(*a), key(*b)) {
            (None, None) => Ordering::Equal,
            (None, _) if nulls_first => Ordering::Less,
            (None, _) => Ordering::Greater,
            (_, None) if nulls_first => Ordering::Greater,
            (_, None) => Ordering::Less,
            (Some(x), Some(y)) if desc => y.cmp(&x),
            (Some(x), Some(y)) => x.cmp(&y),
        });
    }
    ids.into_iter()
        .skip(c.offset)
        .take(c.limit.unwrap_or(usize::MAX))
        .map(|i| i as i64)
        .collect()
}

/// `column` and `op.value` of a leaf (`not.` included).
fn leaf_parts((col, op, x, t, negate): &Leaf) -> (&'static str, String) {
    let not = if *negate { "not." } else { "" };
    let op = OPS[*op];
    match col {
        0 => ("n", format!("{not}{op}.{x}")),
        1 => ("s", format!("{not}{op}.{t}")),
        2 => ("id", format!("{not}{op}.{x}")),
        3 => ("j->k", format!("{not}{op}.{x}")),
        _ => ("j->tags", format!("{not}cs.{{{}}}", tag(t))),
    }
}

/// A member of a logic tree: `col.op.value` or `[not.]or(...)`.
fn member(t: &Tree) -> String {
    match t {
        Tree::Leaf(l) => {
            let (col, cond) = leaf_parts(l);
            format!("{col}.{cond}")
        }
        Tree::Group(any, negate, members) => {
            let not = if *negate { "not." } else { "" };
            let name = if *any { "or" } else { "and" };
            let inner: Vec<String> = members.iter().map(member).collect();
            format!("{not}{name}({})", inner.join(","))
        }
    }
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn url(c: &Case) -> String {
    let mut q = vec!["select=id".to_owned()];
    for t in &c.filters {
        q.push(match t {
            Tree::Leaf(l) => {
                let (col, cond) = leaf_parts(l);
                format!("{}={}", enc(col), enc(&cond))
            }
            Tree::Group(any, negate, members) => {
                let not = if *negate { "not." } else { "" };
                let name = if *any { "or" } else { "and" };
                let inner: Vec<String> = members.iter().map(member).collect();
                format!("{not}{name}={}", enc(&format!("({})", inner.join(","))))
            }
        });
    }
    if let Some((on_n, desc, nulls_first)) = c.order {
        let col = if on_n { "n" } else { "s" };
        let dir = if desc { "desc" } else { "asc" };
        let nulls = if nulls_first {
            "nullsfirst"
        } else {
            "nullslast"
        };
        q.push(format!("order={col}.{dir}.{nulls}"));
    }
    if let Some(l) = c.limit {
        q.push(format!("limit={l}"));
    }
    q.push(format!("offset={}", c.offset));
    format!("/rest/v1/items?{}", q.join("&"))
}

async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let body = body.map(|b| b.to_string().into_bytes());
    let (status, bytes) = httpc::request(addr, method, path, body).await.unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v)
}

mod inproc;

/// An object nested `depth` levels deep.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |inner, _| json!({ "a": inner }))
}

async fn serve() -> inproc::Server {
    inproc::serve(Some(Schema::from_toml(SCHEMA).unwrap()), "model").await
}

#[test]
fn queries_equal_a_naive_reference() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(serve());
    let addr = server.addr;
    let mut runner = TestRunner::new(Config::with_cases(40));
    let result = runner.run(&case(), |c| {
        rt.block_on(async {
            let (st, _) = call(addr, Method::DELETE, "/rest/v1/items", None).await;
            prop_assert_eq!(st, StatusCode::NO_CONTENT);
            if !c.rows.is_empty() {
                let rows: Vec<Value> = c
                    .insert_order
                    .iter()
                    .map(|i| {
                        let (n, s, k, tags) = &c.rows[*i];
                        json!({"id": i, "n": n, "s": s, "j": {"k": k, "tags": tags}})
                    })
                    .collect();
                let (st, _) = call(addr, Method::POST, "/rest/v1/items", Some(json!(rows))).await;
                prop_assert_eq!(st, StatusCode::CREATED);
            }
            let (st, body) = call(addr, Method::GET, &url(&c), None).await;
            prop_assert_eq!(st, StatusCode::OK, "{}", body);
            let got: Vec<i64> = body
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_i64().unwrap())
                .collect();
            prop_assert_eq!(got, reference(&c), "{}", url(&c));
            Ok(())
        })
    });
    drop(server);
    result.unwrap();
}

#[test]
fn hostile_requests_are_refused_and_write_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = serve().await;
        let addr = server.addr;
        let seed = json!([{"id": 1, "n": 1, "s": "a"}, {"id": 2, "n": 2, "s": null}]);
        let (st, _) = call(addr, Method::POST, "/rest/v1/items", Some(seed)).await;
        assert_eq!(st, StatusCode::CREATED);
        let huge = "9".repeat(4000);
        let cases: Vec<(Method, String, Option<Value>, u16, &str)> = vec![
            (
                Method::GET,
                format!("/rest/v1/items?limit={huge}"),
                None,
                400,
                "PGRST100",
            ),
            (
                Method::GET,
                "/rest/v1/items?n=zz.1".into(),
                None,
                400,
                "PGRST100",
            ),
            (
                Method::GET,
                "/rest/v1/items?n=eq.x".into(),
                None,
                400,
                "22P02",
            ),
            (
                Method::GET,
                "/rest/v1/items?bogus=eq.1".into(),
                None,
                400,
                "42703",
            ),
            (
                Method::GET,
                "/rest/v1/items%3Bdrop?".into(),
                None,
                404,
                "PGRST205",
            ),
            (Method::GET, "/rest/v1/nope".into(), None, 404, "PGRST205"),
            (
                Method::GET,
                "/rest/v1/items?or=(n.eq.1,and(s.eq.a)".into(),
                None,
                400,
                "PGRST100",
            ),
            (
                Method::GET,
                "/rest/v1/items?select=*,nope(*)".into(),
                None,
                400,
                "PGRST200",
            ),
            (
                Method::GET,
                "/rest/v1/items?j=cs.nope".into(),
                None,
                400,
                "22P02",
            ),
            (
                Method::GET,
                "/rest/v1/items?s=fts.word".into(),
                None,
                400,
                "PGRST100",
            ),
            (
                Method::DELETE,
                "/rest/v1/items?not.or=(n.eq.1,s.zz.2)".into(),
                None,
                400,
                "PGRST100",
            ),
            (
                Method::PATCH,
                "/rest/v1/items?n=eq.1".into(),
                Some(json!({"bogus": 1})),
                400,
                "PGRST204",
            ),
            (
                Method::PATCH,
                "/rest/v1/items?bogus=eq.1".into(),
                Some(json!({"n": 5})),
                400,
                "42703",
            ),
            (
                Method::PATCH,
                "/rest/v1/items".into(),
                Some(json!([1, 2])),
                400,
                "PGRST102",
            ),
            (
                Method::PATCH,
                "/rest/v1/items?n=gt.0".into(),
                Some(json!({"n": "x"})),
                400,
                "22P02",
            ),
            (
                Method::DELETE,
                "/rest/v1/items?n=wat.1".into(),
                None,
                400,
                "PGRST100",
            ),
            (
                Method::POST,
                "/rest/v1/items".into(),
                Some(json!("text")),
                400,
                "PGRST102",
            ),
            (
                Method::POST,
                "/rest/v1/items".into(),
                Some(json!([{"id": 3}, {"id": 1}])),
                409,
                "23505",
            ),
            (
                Method::POST,
                "/rest/v1/items".into(),
                Some(json!([{"id": 4, "n": 1}, {"id": 5, "n": 1.5}])),
                400,
                "22P02",
            ),
            (
                Method::POST,
                // (on_conflict on other columns: rest_semantics.rs, it needs a Prefer.)
                "/rest/v1/items?columns=id,nope".into(),
                Some(json!({"id": 6})),
                400,
                "PGRST204",
            ),
            (
                Method::POST,
                "/rest/v1/items".into(),
                Some(json!({"id": 7, "s": "a\u{0}b"})),
                400,
                "22P05",
            ),
            (
                Method::POST,
                "/rest/v1/items".into(),
                Some(json!({"id": 8, "j": nested(40)})),
                400,
                "22023",
            ),
        ];
        for (method, path, body, status, code) in cases {
            let (st, err) = call(addr, method.clone(), &path, body).await;
            assert_eq!(st.as_u16(), status, "{method} {path}: {err}");
            assert_eq!(err["code"], code, "{method} {path}: {err}");
            for key in ["message", "details", "hint"] {
                assert!(err.get(key).is_some(), "{err} lacks {key}");
            }
        }
        let big = vec![json!({"s": "x".repeat(1000)}); 3000];
        let (st, err) = call(addr, Method::POST, "/rest/v1/items", Some(json!(big))).await;
        assert_eq!((st.as_u16(), &err["code"]), (413, &json!("54000")), "{err}");
        let bad_json = httpc::request(addr, Method::POST, "/rest/v1/items", Some(b"{".to_vec()));
        let (st, _) = bad_json.await.unwrap();
        assert_eq!(st, StatusCode::BAD_REQUEST);
        let (_, rows) = call(addr, Method::GET, "/rest/v1/items?order=id", None).await;
        assert_eq!(
            rows,
            json!([{"id": 1, "n": 1, "s": "a", "j": null}, {"id": 2, "n": 2, "s": null, "j": null}])
        );
        drop(server);
    });
}
