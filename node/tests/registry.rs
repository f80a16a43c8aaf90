//! The service registry of seed 003 (`/api/services`, `/api/discover`, `/api/status`) against
//! real `meshlite run` daemons: the seed's Python registration example run as written (with
//! the real `requests` from PyPI; only its `http://localhost:8100` is pointed at the test's
//! node), the seed's jq checks, bad input, heartbeat expiry, and a two-node mesh where a
//! service registered on one node is listed by the other.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;
mod pyenv;

use std::path::Path;

use common::{Fleet, GUARD, NodeConfig, NodeProc, poll_until, wait_connected};
use hyper::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The seed's example (node/tests/py/seed_003_register.py is a verbatim copy).
const SEED_SCRIPT: &str = "tests/py/seed_003_register.py";
const SEED_URL: &str = "http://localhost:8100";

/// The seed's registration, for the tests that post it from Rust.
fn seed_service(name: &str) -> Value {
    json!({
        "name": name, "host": "100.100.100.5", "port": 8080, "mode": "standalone",
        "capabilities": ["rag", "search"], "health_url": "http://100.100.100.5:8080/healthz"
    })
}

async fn standalone(dir: &Path, ttl: Option<&str>) -> NodeProc {
    let mut cfg = NodeConfig::loopback("reg", dir.join("node"), None);
    if let Some(ttl) = ttl {
        cfg.env
            .push(("MESHLITE_REGISTRY_TTL_SECONDS".into(), ttl.into()));
    }
    NodeProc::start(cfg).await
}

/// `GET /api/services` that must succeed.
async fn services(node: &NodeProc) -> Vec<Value> {
    let (status, body) = node.get("/api/services").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["services"].as_array().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_python_example_registers_and_the_seed_queries_answer() {
    let python =
        tokio::task::spawn_blocking(|| pyenv::python_with("requests", &[("requests", "2.34.2")]))
            .await
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let node = standalone(tmp.path(), None).await;

    let seed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(SEED_SCRIPT)).unwrap();
    assert_eq!(seed.matches(SEED_URL).count(), 1, "{seed}");
    let script = tmp.path().join("register.py");
    let url = format!("http://{}", node.http());
    std::fs::write(&script, seed.replace(SEED_URL, &url)).unwrap();
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(GUARD, out).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the seed's example failed ({}):\n{stdout}\n{}\n--- node log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        node.log_tail(20)
    );
    assert!(stdout.contains("'status': 'registered'"), "{stdout}");
    assert!(stdout.contains("'health_status': 'healthy'"), "{stdout}");

    // curl http://localhost:8100/api/services | jq '.services[] | select(.health_status != "healthy")'
    let all = services(&node).await;
    assert_eq!(all.len(), 1, "{all:?}");
    let s = &all[0];
    assert_eq!(s["name"], "my-service");
    assert_eq!(s["host"], "100.100.100.5");
    assert_eq!(s["port"], 8080);
    assert_eq!(s["mode"], "standalone");
    assert_eq!(s["capabilities"], json!(["rag", "search"]));
    assert_eq!(s["health_url"], "http://100.100.100.5:8080/healthz");
    assert_eq!(s["registered_by"], "reg");
    assert!(s["last_heartbeat"].as_str().unwrap().ends_with('Z'), "{s}");
    assert!(all.iter().all(|s| s["health_status"] == "healthy"));

    // curl http://localhost:8100/api/services/pmoves-dox | jq
    let (status, one) = node.get("/api/services/my-service").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&one["name"], "my-service");
    let (status, missing) = node.get("/api/services/pmoves-dox").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    assert!(missing["error"].as_str().unwrap().contains("pmoves-dox"));

    // curl http://localhost:8100/api/status | jq '.registry.services'
    let (status, st) = node.get("/api/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(st["registry"]["services"], 1, "{st}");
    assert_eq!(st["registry"]["healthy"], 1, "{st}");

    // curl -X POST http://localhost:8100/api/discover -d '{"capabilities": ["rag", "search"]}'
    // (curl -d sends application/x-www-form-urlencoded: the body is JSON all the same)
    let found = discover(&node, r#"{"capabilities": ["rag", "search"]}"#).await;
    assert_eq!(found["count"], 1, "{found}");
    assert_eq!(found["services"][0]["name"], "my-service");
    let none = discover(&node, r#"{"capabilities": ["rag", "clip"]}"#).await;
    assert_eq!(none["count"], 0, "{none}");
    let any = discover(
        &node,
        r#"{"capabilities": ["clip", "rag"], "match": "any"}"#,
    )
    .await;
    assert_eq!(any["count"], 1, "{any}");

    let (status, health) = node.healthz().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["health_status"], "healthy");
}

async fn discover(node: &NodeProc, body: &str) -> Value {
    let (status, value) = raw_post(
        node,
        "/api/discover",
        "application/x-www-form-urlencoded",
        body,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{value}");
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registrations_are_clear_400s_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let node = standalone(tmp.path(), None).await;
    let cases = [
        ("{\"name\": \"x\", ", "not valid JSON"),
        ("[1, 2]", "invalid registration"),
        (r#"{"name": "x", "host": "h"}"#, "missing field `port`"),
        (
            r#"{"name": "x", "host": "h", "port": "80"}"#,
            "invalid type",
        ),
        (
            r#"{"name": "a/b", "host": "h", "port": 80}"#,
            "invalid service name",
        ),
        (
            r#"{"name": "x", "host": "h", "port": 80, "mode": "docky"}"#,
            "unknown variant",
        ),
        (
            r#"{"name": "x", "host": "h", "port": 80, "capabilites": []}"#,
            "unknown field",
        ),
    ];
    for (body, want) in cases {
        let (status, answer) = raw_post(&node, "/api/services", "application/json", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(want), "{body}: {message}");
    }
    let bad = "{\"capabilities\": 1}";
    let (status, answer) = raw_post(&node, "/api/discover", "application/json", bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) = node.get("/api/services/bad%20name").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(services(&node).await.is_empty());
    assert!(node.query("services").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_becomes_unhealthy_after_the_ttl_and_heartbeats_by_registering_again() {
    let tmp = tempfile::tempdir().unwrap();
    let node = standalone(tmp.path(), Some("1")).await;
    let (status, first) = node.post("/api/services", &seed_service("beat")).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let first = first["service"].clone();

    // No timing assertion: wait (bounded by the failure guard) until the TTL has passed.
    poll_until("the service to turn unhealthy", GUARD, || async {
        let all = services(&node).await;
        match all[0]["health_status"] == "unhealthy" {
            true => Ok(()),
            false => Err(all[0].to_string()),
        }
    })
    .await;
    let (_, st) = node.get("/api/status").await;
    assert_eq!(st["registry"]["unhealthy"], 1, "{st}");
    assert_eq!(
        discover(&node, r#"{"capabilities": ["rag"]}"#).await["count"],
        0
    );
    let with_dead = r#"{"capabilities": ["rag"], "include_unhealthy": true}"#;
    assert_eq!(discover(&node, with_dead).await["count"], 1);

    // A re-registration is the heartbeat: it moves last_heartbeat, keeps registered_at, and
    // replaces the fields (here: the port and capabilities).
    let mut again = seed_service("beat");
    again["port"] = json!(9090);
    again["capabilities"] = json!(["whisper"]);
    let (status, second) = node.post("/api/services", &again).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let second = &second["service"];
    assert!(
        second["last_heartbeat_ms"].as_u64() > first["last_heartbeat_ms"].as_u64(),
        "{first} -> {second}"
    );
    assert_eq!(second["registered_at"], first["registered_at"]);
    assert_eq!(second["port"], 9090);
    assert_eq!(second["capabilities"], json!(["whisper"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_registered_on_one_node_is_listed_by_the_other() {
    let fleet = Fleet::new();
    let mut a = fleet.linked_node("a");
    let b = fleet.linked_node("b");
    a.static_peers = vec![b.peer_addr()];
    let nodes = NodeProc::start_all(vec![a, b]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    wait_connected(a, &[b]).await;

    let (status, body) = a.post("/api/services", &seed_service("gpu-node")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let listed = poll_until("b to list the service registered on a", GUARD, || async {
        let all = services(b).await;
        let found = all.iter().find(|s| s["name"] == "gpu-node").cloned();
        found.ok_or_else(|| format!("{all:?}"))
    })
    .await;
    assert_eq!(listed["registered_by"], "a");
    assert_eq!(listed["health_status"], "healthy");
    let (status, one) = b.get("/api/services/gpu-node").await;
    assert_eq!(status, StatusCode::OK, "{one}");

    // And back: b's registration reaches a; both answer for the whole fleet.
    let (status, body) = b.post("/api/services", &seed_service("edge-dox")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    poll_until("a to list both services", GUARD, || async {
        let all = services(a).await;
        match all.len() == 2 {
            true => Ok(()),
            false => Err(format!("{all:?}")),
        }
    })
    .await;
    let (_, st) = b.get("/api/status").await;
    assert_eq!(st["registry"]["services"], 2, "{st}");
}

/// A POST with the given content type and raw body (as curl sends it), over a fresh
/// connection; the status and the body parsed as JSON.
async fn raw_post(
    node: &NodeProc,
    path: &str,
    content_type: &str,
    body: &str,
) -> (StatusCode, Value) {
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(node.http()).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: {content_type}\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            node.http(),
            body.len()
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(body.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await.unwrap();
        String::from_utf8(answer).unwrap()
    };
    let answer = tokio::time::timeout(GUARD, exchange).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let code: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let value = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.into()));
    (StatusCode::from_u16(code).unwrap(), value)
}
