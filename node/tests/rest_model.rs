//! `/rest/v1` against a model, over real HTTP in one process: for random rows (written with
//! POST after a DELETE of everything, so ids re-created after deletion are exercised too) and
//! random `eq`/`gt`/`lt` filters (on the key too: `id=eq.v` reads one record instead of
//! scanning) with `order` and `limit`/`offset`, the answer of
//! `GET /rest/v1/items` equals the same query evaluated by a naive reference over the rows.
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
"#;

type Row = (Option<i64>, Option<String>);

#[derive(Clone, Debug)]
struct Case {
    rows: Vec<Row>,
    /// (column: 0 `n`, 1 `s`, 2 `id`; op index; integer operand; text operand)
    filters: Vec<(u8, usize, i64, String)>,
    /// (on `n`, descending, nulls first)
    order: Option<(bool, bool, bool)>,
    limit: Option<usize>,
    offset: usize,
}

const OPS: [&str; 3] = ["eq", "gt", "lt"];

fn case() -> impl Strategy<Value = Case> {
    let row = (
        proptest::option::of(-4i64..4),
        proptest::option::of("[ab]{0,2}"),
    );
    let filter = (0u8..3, 0usize..3, -4i64..14, "[ab]{0,2}");
    (
        proptest::collection::vec(row, 0..12),
        proptest::collection::vec(filter, 0..3),
        proptest::option::of((any::<bool>(), any::<bool>(), any::<bool>())),
        proptest::option::of(0usize..14),
        0usize..4,
    )
        .prop_map(|(rows, filters, order, limit, offset)| Case {
            rows,
            filters,
            order,
            limit,
            offset,
        })
}

fn reference(c: &Case) -> Vec<i64> {
    let pass = |id: i64, (n, s): &Row| {
        c.filters.iter().all(|(col, op, x, t)| {
            let o = match col {
                0 => n.map(|n| n.cmp(x)),
                1 => s.as_deref().map(|s| s.cmp(t.as_str())),
                _ => Some(id.cmp(x)),
            };
            o.is_some_and(|o| [o.is_eq(), o.is_gt(), o.is_lt()][*op])
        })
    };
    let mut ids: Vec<usize> = (0..c.rows.len())
        .filter(|i| pass(*i as i64, &c.rows[*i]))
        .collect();
    if let Some((on_n, desc, nulls_first)) = c.order {
        let key = |i: usize| -> Option<Row> {
            let (n, s) = &c.rows[i];
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

fn url(c: &Case) -> String {
    let mut q = vec!["select=id".to_owned()];
    for (col, op, x, t) in &c.filters {
        let op = OPS[*op];
        q.push(match col {
            0 => format!("n={op}.{x}"),
            1 => format!("s={op}.{t}"),
            _ => format!("id={op}.{x}"),
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
                    .rows
                    .iter()
                    .enumerate()
                    .map(|(i, (n, s))| json!({"id": i, "n": n, "s": s}))
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
        let seed = json!([{"id": 1, "n": 1, "s": "a"}, {"id": 2, "n": 2}]);
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
                Some(json!([{"id": 4}, {"id": 5, "n": 1.5}])),
                400,
                "22P02",
            ),
            (
                Method::POST,
                "/rest/v1/items?on_conflict=n".into(),
                Some(json!({"id": 6})),
                400,
                "42P10",
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
            json!([{"id": 1, "n": 1, "s": "a"}, {"id": 2, "n": 2, "s": null}])
        );
        drop(server);
    });
}
