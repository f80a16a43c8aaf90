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
