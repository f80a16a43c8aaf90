//! The native `/v1` API over real HTTP in one process, on a schemaless store (the embedded
//! default): every collection name and record id is reachable, PostgREST syntax is refused
//! instead of silently matching nothing, bodies over the limit get the JSON error shape, queries
//! are paged by default, and an append to an undeclared collection says what to declare.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use hyper::{Method, StatusCode};
use meshlite_node::api::{DEFAULT_LIMIT, MAX_BODY_BYTES};
use meshlite_node::httpc;
use serde_json::{Value, json};

mod inproc;
use inproc::Server;

async fn serve() -> Server {
    inproc::serve(None, "native").await
}

/// Sends a request; returns the status and the body as JSON (`Value::String` when not JSON).
async fn call(
    s: &Server,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> (StatusCode, Value) {
    let (status, bytes) = httpc::request(s.addr, method, path, body).await.unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post(s: &Server, path: &str, body: Value) -> (StatusCode, Value) {
    call(s, Method::POST, path, Some(body.to_string().into_bytes())).await
}

async fn get(s: &Server, path: &str) -> (StatusCode, Value) {
    call(s, Method::GET, path, None).await
}

/// The message of a JSON error answer (panics on any other shape).
fn message(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not a JSON error: {body}"))
}

#[tokio::test]
async fn append_to_an_undeclared_collection_says_what_to_declare() {
    let s = serve().await;
    let (status, body) = post(&s, "/v1/sensor_data/append", json!({"t": 1})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let msg = message(&body);
    assert!(
        msg.contains("[collections.sensor_data]") && msg.contains("kind = \"log\""),
        "{msg}"
    );
}

#[tokio::test]
async fn a_record_with_id_append_is_reachable() {
    let s = serve().await;
    let (status, _) = post(&s, "/v1/tasks", json!({"id": "append", "n": 1})).await;
    assert!(status.is_success());
    let (status, body) = get(&s, "/v1/tasks/append").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"id": "append", "n": 1}))
    );
    let (status, body) = post(&s, "/v1/tasks/append/incr", json!({"field": "c", "by": 2})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(&s, Method::DELETE, "/v1/tasks/append", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = get(&s, "/v1/tasks/append").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn collections_named_like_routes_are_reachable_with_a_trailing_slash() {
    let s = serve().await;
    for c in ["changes", "txn", "tasks"] {
        let (status, body) = post(&s, &format!("/v1/{c}/"), json!({"id": "a", "c": c})).await;
        assert_eq!(status, StatusCode::OK, "{c}: {body}");
        let (status, body) = get(&s, &format!("/v1/{c}/")).await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!([{"id": "a", "c": c}])),
            "{c}"
        );
        let (status, body) = get(&s, &format!("/v1/{c}/a")).await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({"id": "a", "c": c})),
            "{c}"
        );
    }
    // The documented routes keep their meaning.
    let op = json!([{"op": "put", "collection": "tasks", "value": {"id": "b"}}]);
    let (status, body) = post(&s, "/v1/txn", op).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = get(&s, "/v1/tasks").await;
    assert_eq!(body.as_array().map(Vec::len), Some(2), "{status} {body}");
}

#[tokio::test]
async fn postgrest_filters_and_unknown_parameters_are_refused() {
    let s = serve().await;
    post(&s, "/v1/tasks", json!({"id": "a", "status": "eq.odd"})).await;
    for query in [
        "status=eq.queued",
        "select=id",
        "id=in.(a,b)",
        "status=not.eq.x",
        "or=(a.eq.1)",
        "bad-name=1",
    ] {
        let (status, body) = get(&s, &format!("/v1/tasks?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let msg = message(&body);
        assert!(
            msg.contains("?field=value") && msg.contains("/rest/v1"),
            "{msg}"
        );
    }
    // A quoted value is a value.
    let (status, body) = get(&s, "/v1/tasks?status=%22eq.odd%22").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");
}

#[tokio::test]
async fn bodies_over_the_limit_get_one_json_413_naming_it() {
    let s = serve().await;
    for size in [MAX_BODY_BYTES + 1, 3 * MAX_BODY_BYTES] {
        let body = format!(r#"{{"id":"big","x":"{}"}}"#, "a".repeat(size));
        let (status, body) = call(&s, Method::POST, "/v1/tasks", Some(body.into_bytes())).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{size}");
        assert!(
            message(&body).contains(&MAX_BODY_BYTES.to_string()),
            "{body}"
        );
    }
}

#[tokio::test]
async fn queries_are_paged_by_default() {
    let s = serve().await;
    let rows: Vec<Value> = (0..DEFAULT_LIMIT + 5)
        .map(|i| json!({"id": format!("r{i:05}")}))
        .collect();
    let (status, body) = post(&s, "/v1/items", Value::Array(rows)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, first) = get(&s, "/v1/items?order=id").await;
    assert_eq!(first.as_array().unwrap().len(), DEFAULT_LIMIT);
    let (_, rest) = get(&s, &format!("/v1/items?order=id&offset={DEFAULT_LIMIT}")).await;
    assert_eq!(rest.as_array().unwrap().len(), 5);
    assert_eq!(rest[0]["id"], format!("r{DEFAULT_LIMIT:05}"));
}

/// Sends a request with an `Idempotency-Key`; the status, the body as JSON, and whether the
/// answer was a replay.
async fn keyed(
    s: &Server,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, Value, bool) {
    let body = body.map(|b| b.to_string().into_bytes());
    let headers = [("idempotency-key", key)];
    let a = httpc::request_with(s.addr, method, path, &headers, body)
        .await
        .unwrap();
    let replayed = a
        .headers
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let text = String::from_utf8_lossy(&a.body).into_owned();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (a.status, json, replayed)
}

#[tokio::test]
async fn a_retried_increment_with_the_same_key_applies_once() {
    let s = serve().await;
    let by5 = json!({"field": "n", "by": 5});
    let path = "/v1/counters/c1/incr";
    let (status, first, replayed) = keyed(&s, Method::POST, path, "k-1", Some(by5.clone())).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(!replayed);
    let (status, again, replayed) = keyed(&s, Method::POST, path, "k-1", Some(by5.clone())).await;
    assert_eq!((status, replayed), (StatusCode::OK, true));
    assert_eq!(
        again, first,
        "the retry gets the first answer, txn id included"
    );
    assert_eq!(get(&s, "/v1/counters/c1").await.1["n"], 5);

    // The same key with another body, path or method is refused and applies nothing.
    let by6 = json!({"field": "n", "by": 6});
    let (status, body, _) = keyed(&s, Method::POST, path, "k-1", Some(by6)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(message(&body).contains("already used"), "{body}");
    let other = "/v1/counters/c2/incr";
    let (status, _, _) = keyed(&s, Method::POST, other, "k-1", Some(by5.clone())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(get(&s, "/v1/counters/c1").await.1["n"], 5);

    // Another key applies again; concurrent retries of one key apply once.
    let (status, _, replayed) = keyed(&s, Method::POST, path, "k-2", Some(by5.clone())).await;
    assert_eq!((status, replayed), (StatusCode::OK, false));
    let retries = (0..8).map(|_| keyed(&s, Method::POST, path, "k-3", Some(by5.clone())));
    let answers = futures_util::future::join_all(retries).await;
    assert!(
        answers
            .iter()
            .all(|a| a.0 == StatusCode::OK && a.1 == answers[0].1)
    );
    assert_eq!(
        answers.iter().filter(|a| !a.2).count(),
        1,
        "one applied, 7 replayed"
    );
    assert_eq!(get(&s, "/v1/counters/c1").await.1["n"], 15);
}

#[tokio::test]
async fn every_native_write_takes_an_idempotency_key() {
    let s = serve().await;
    let put = Some(json!({"id": "t1", "status": "queued"}));
    let (status, first, _) = keyed(&s, Method::POST, "/v1/tasks", "put-1", put.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    // The record changes in between; the retry still answers what the first request got.
    post(&s, "/v1/tasks", json!({"id": "t1", "status": "running"})).await;
    let (_, again, replayed) = keyed(&s, Method::POST, "/v1/tasks", "put-1", put).await;
    assert!(replayed);
    assert_eq!(again, first);
    assert_eq!(get(&s, "/v1/tasks/t1").await.1["status"], "running");

    // (`append` takes the key through the same path; a schemaless store has no log collection.)
    let ops =
        Some(json!([{"op": "incr", "collection": "counters", "id": "x", "field": "n", "by": 1}]));
    keyed(&s, Method::POST, "/v1/txn", "txn-1", ops.clone()).await;
    let (_, _, replayed) = keyed(&s, Method::POST, "/v1/txn", "txn-1", ops).await;
    assert!(replayed);
    assert_eq!(get(&s, "/v1/counters/x").await.1["n"], 1);

    let (status, _, _) = keyed(&s, Method::DELETE, "/v1/tasks/t1", "del-1", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, replayed) = keyed(&s, Method::DELETE, "/v1/tasks/t1", "del-1", None).await;
    assert_eq!((status, replayed), (StatusCode::OK, true));

    for bad in ["has space", &"k".repeat(256)] {
        let (status, body, _) =
            keyed(&s, Method::POST, "/v1/tasks", bad, Some(json!({"id": "z"}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(message(&body).contains("idempotency key"), "{body}");
    }
    assert_eq!(get(&s, "/v1/tasks/z").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn nesting_too_deep_is_a_400_naming_the_limit() {
    let s = serve().await;
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!({ "a": deep });
    }
    let (status, body) = post(&s, "/v1/tasks", json!({"id": "deep", "x": deep})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(message(&body).contains("32 levels"), "{body}");
    assert_eq!(get(&s, "/v1/tasks/deep").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn values_holding_nul_are_a_400_naming_the_field() {
    let s = serve().await;
    for (field, value) in [
        ("title", json!("a\u{0}b")),
        ("meta", json!({"k": ["ok", "x\u{0}"]})),
        ("meta", json!({"k\u{0}": 1})),
    ] {
        let (status, body) = post(&s, "/v1/tasks", json!({"id": "nul", field: value})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let text = message(&body);
        assert!(text.contains("U+0000") && text.contains(field), "{body}");
    }
    assert_eq!(get(&s, "/v1/tasks/nul").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn record_ids_with_control_characters_or_dot_segments_are_refused() {
    let s = serve().await;
    for bad in [
        "a\u{0}b",
        "line\nbreak",
        "tab\there",
        "esc\u{1b}[0m",
        ".",
        "..",
    ] {
        let (status, body) = post(&s, "/v1/tasks", json!({"id": bad, "x": 1})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
        assert!(message(&body).contains("id"), "{body}");
    }
    assert_eq!(get(&s, "/v1/tasks").await.1, json!([]));
    // Path-like ids are allowed and reachable with the slash percent-encoded.
    for ok in ["dir/file.txt", "../up", "ü-ñ"] {
        let (status, body) = post(&s, "/v1/tasks", json!({"id": ok, "x": 1})).await;
        assert_eq!(status, StatusCode::OK, "{ok:?}: {body}");
        let encoded: String = form_urlencoded::byte_serialize(ok.as_bytes()).collect();
        let (status, row) = get(&s, &format!("/v1/tasks/{encoded}")).await;
        assert_eq!((status, row["id"].as_str()), (StatusCode::OK, Some(ok)));
    }
}
