//! The Realtime websocket (`/realtime/v1/websocket`) at the protocol level, over real sockets
//! to the node's listener in this process: heartbeats, joins and `postgres_changes` in both
//! serializers, and every kind of bad input — malformed frames, unknown topics, oversized and
//! binary messages, an unsupported `vsn` — answered with a clear error or close code, never a
//! crash; sockets close with 1001 when the daemon stops.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod inproc;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::{Method, StatusCode};
use meshlite_core::schema::Schema;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Failure guard for one awaited message.
const GUARD: Duration = Duration::from_secs(30);

const SCHEMA: &str = r#"
version = 1
strict = true
[collections.tasks.fields]
status = { type = "text" }
n = { type = "integer" }
"#;

async fn server() -> inproc::Server {
    inproc::serve(Some(Schema::from_toml(SCHEMA).unwrap()), "rt").await
}

async fn connect(addr: SocketAddr, vsn: &str) -> Ws {
    let url = format!("ws://{addr}/realtime/v1/websocket?apikey=k&vsn={vsn}");
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(GUARD, ws.next())
        .await
        .expect("no message within the failure guard")
        .expect("the socket ended")
        .expect("read error")
}

/// The next text message as JSON.
async fn next_json(ws: &mut Ws) -> Value {
    match next(ws).await {
        Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// The close frame the server sends next (skipping text messages).
async fn close_of(ws: &mut Ws) -> (CloseCode, String) {
    loop {
        match next(ws).await {
            Message::Close(Some(f)) => return (f.code, f.reason.as_str().to_owned()),
            Message::Close(None) => panic!("close without a code"),
            _ => {}
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

async fn put(addr: SocketAddr, row: Value) {
    let body = Some(row.to_string().into_bytes());
    let (status, body) = meshlite_node::httpc::request(addr, Method::POST, "/v1/tasks", body)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body:?}");
}

async fn heartbeat_ok(ws: &mut Ws, r: &str) {
    send(ws, json!([null, r, "phoenix", "heartbeat", {}])).await;
    assert_eq!(
        next_json(ws).await,
        json!([null, r, "phoenix", "phx_reply", {"status": "ok", "response": {}}])
    );
}

#[tokio::test]
async fn heartbeat_join_and_changes_in_vsn_2() {
    let s = server().await;
    let mut ws = connect(s.addr, "2.0.0").await;
    heartbeat_ok(&mut ws, "1").await;
    let sub = json!({"event": "*", "schema": "public", "table": "tasks", "filter": "n=gte.10"});
    let join = json!({"config": {"postgres_changes": [sub]}, "access_token": "k"});
    send(&mut ws, json!(["3", "3", "realtime:t", "phx_join", join])).await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply[3], "phx_reply");
    assert_eq!(reply[4]["status"], "ok");
    let echoed = &reply[4]["response"]["postgres_changes"][0];
    assert_eq!(echoed["filter"], "n=gte.10");
    let id = echoed["id"].clone();
    let system = next_json(&mut ws).await;
    assert_eq!(system[3], "system");
    assert_eq!(system[4]["message"], "Subscribed to PostgreSQL");

    put(s.addr, json!({"id": "low", "status": "queued", "n": 1})).await;
    put(s.addr, json!({"id": "high", "status": "running", "n": 10})).await;
    let change = next_json(&mut ws).await;
    assert_eq!(change[0], "3", "pushes carry the join ref");
    assert_eq!(change[2], "realtime:t");
    assert_eq!(change[3], "postgres_changes");
    assert_eq!(change[4]["ids"], json!([id]));
    let data = &change[4]["data"];
    assert_eq!(data["type"], "INSERT");
    assert_eq!(
        data["record"],
        json!({"id": "high", "status": "running", "n": 10})
    );
    assert_eq!(
        data["columns"],
        json!([{"name": "id", "type": "text"}, {"name": "n", "type": "int8"}, {"name": "status", "type": "text"}])
    );

    send(&mut ws, json!(["3", "4", "realtime:t", "phx_leave", {}])).await;
    assert_eq!(next_json(&mut ws).await[4]["status"], "ok");
    put(s.addr, json!({"id": "after", "n": 50})).await;
    // Nothing for the left channel: the next message is the heartbeat's reply.
    heartbeat_ok(&mut ws, "5").await;
}

#[tokio::test]
async fn vsn_1_objects() {
    let s = server().await;
    let mut ws = connect(s.addr, "1.0.0").await;
    let join = json!({"config": {"postgres_changes": [{"event": "DELETE", "schema": "public", "table": "tasks"}]}});
    let msg = json!({"topic": "realtime:d", "event": "phx_join", "payload": join, "ref": "1", "join_ref": "1"});
    send(&mut ws, msg).await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["event"], "phx_reply");
    assert_eq!(reply["ref"], "1");
    assert_eq!(reply["payload"]["status"], "ok");
    assert_eq!(next_json(&mut ws).await["event"], "system");
    put(s.addr, json!({"id": "gone", "status": "running"})).await;
    let (status, _) = meshlite_node::httpc::request(s.addr, Method::DELETE, "/v1/tasks/gone", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let change = next_json(&mut ws).await;
    assert_eq!(change["event"], "postgres_changes");
    assert_eq!(change["payload"]["data"]["type"], "DELETE");
    assert_eq!(
        change["payload"]["data"]["old_record"],
        json!({"id": "gone", "status": "running", "n": null}),
        "a delete carries the record's last state"
    );
}

#[tokio::test]
async fn unknown_topics_and_events_get_error_replies() {
    let s = server().await;
    let mut ws = connect(s.addr, "2.0.0").await;
    let cases = [
        (
            json!([null, "1", "rooms:lobby", "phx_join", {}]),
            "unmatched topic",
        ),
        (
            json!([null, "2", "realtime:x", "phx_leave", {}]),
            "unmatched topic",
        ),
        (
            json!([null, "3", "phoenix", "phx_join", {}]),
            "unmatched topic",
        ),
        (
            json!([null, "4", "realtime:x", "broadcast", {"event": "e"}]),
            "broadcast is not supported",
        ),
        (
            json!(["5", "5", "realtime:x", "phx_join", {"config": {"postgres_changes": [{"event": "*", "schema": "public", "table": "tasks", "filter": "n=eq.abc"}]}}]),
            "invalid filter",
        ),
        (
            json!(["6", "6", "realtime:x", "phx_join", {"config": {"postgres_changes": [{"event": "*", "schema": "private"}]}}]),
            "does not exist",
        ),
    ];
    for (msg, reason) in cases {
        send(&mut ws, msg.clone()).await;
        let reply = next_json(&mut ws).await;
        assert_eq!(reply[1], msg[1], "{reply}");
        assert_eq!(reply[3], "phx_reply");
        assert_eq!(reply[4]["status"], "error", "{msg} -> {reply}");
        let got = reply[4]["response"]["reason"].as_str().unwrap();
        assert!(got.contains(reason), "{msg}: {got}");
    }
    // Still serving.
    heartbeat_ok(&mut ws, "9").await;
}

#[tokio::test]
async fn malformed_frames_close_with_1007() {
    let s = server().await;
    for (vsn, text) in [
        ("2.0.0", "not json"),
        (
            "2.0.0",
            r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}"#,
        ),
        ("2.0.0", r#"[null,"1","phoenix"]"#),
        ("2.0.0", r#"[null,{"x":1},"phoenix","heartbeat",{}]"#),
        ("1.0.0", r#"[null,"1","phoenix","heartbeat",{}]"#),
        ("1.0.0", r#"{"topic":"","event":"heartbeat"}"#),
    ] {
        let mut ws = connect(s.addr, vsn).await;
        ws.send(Message::text(text)).await.unwrap();
        let (code, reason) = close_of(&mut ws).await;
        assert_eq!(code, CloseCode::Invalid, "{text}: {reason}");
        assert!(reason.starts_with("malformed message"), "{text}: {reason}");
    }
}

#[tokio::test]
async fn oversized_and_binary_messages() {
    let s = server().await;
    let mut ws = connect(s.addr, "2.0.0").await;
    let huge = format!(
        r#"[null,"1","phoenix","heartbeat",{{"x":"{}"}}]"#,
        "a".repeat(300 << 10)
    );
    // The server may close before it has read the whole message.
    let _ = ws.send(Message::text(huge)).await;
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, CloseCode::Size, "{reason}");
    assert!(reason.contains("too big"), "{reason}");

    let mut ws = connect(s.addr, "2.0.0").await;
    ws.send(Message::binary(vec![9u8, 1, 2])).await.unwrap();
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, CloseCode::Unsupported, "{reason}");

    // A realtime-js binary broadcast push (kind 3) is answered with an error reply.
    let mut ws = connect(s.addr, "2.0.0").await;
    let mut push = vec![3u8, 1, 1, 10, 1, 0, 1];
    push.extend_from_slice(b"12realtime:xe{}");
    ws.send(Message::binary(push)).await.unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(reply[1], "2");
    assert_eq!(reply[4]["status"], "error");
}

#[tokio::test]
async fn unsupported_vsn_is_refused_before_the_upgrade() {
    let s = server().await;
    let url = format!("ws://{}/realtime/v1/websocket?vsn=3.0.0", s.addr);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400),
        other => panic!("expected HTTP 400, got {other:?}"),
    }
}

#[tokio::test]
async fn sockets_close_with_1001_at_shutdown() {
    let s = server().await;
    let mut ws = connect(s.addr, "2.0.0").await;
    heartbeat_ok(&mut ws, "1").await;
    drop(s);
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, CloseCode::Away, "{reason}");
}
