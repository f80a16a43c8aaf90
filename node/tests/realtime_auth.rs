//! Who may use the Realtime websocket when the node checks keys (`JWT_SECRET`): the same
//! verdicts as `/rest/v1`, over real sockets to the node's listener in this process. Keyless
//! loopback trust is turned off here, so the test sees what a remote client sees. Under an
//! owner rule each `authenticated` subscriber receives only its own rows' changes (see
//! `realtime::subscription`).

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod inproc;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use meshlite_core::schema::Schema;
use meshlite_node::auth::jwt::sign_key;
use meshlite_node::auth::{Auth, Role, unix_now};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const GUARD: Duration = Duration::from_secs(30);
const SECRET: &str = "realtime-auth-test-secret-of-forty-characters";

/// `posts` readable by anon; `notes` by nobody but the service role; `todos` owner-filtered.
const SCHEMA: &str = r#"
version = 1
strict = true
[collections.posts.fields]
title = { type = "text" }
[collections.posts.access]
anon = "read"
[collections.notes.fields]
body = { type = "text" }
[collections.notes.access]
authenticated = "none"
[collections.todos.fields]
title = { type = "text" }
user_id = { type = "text" }
[collections.todos.access]
owner_field = "user_id"
"#;

fn user_token(sub: &str) -> String {
    meshlite_node::auth::jwt::sign_claims(
        SECRET,
        &json!({"role": "authenticated", "sub": sub, "exp": unix_now() + 600}),
    )
    .unwrap()
}

async fn server() -> inproc::Server {
    let auth = Auth::with_secret(SECRET).trust_loopback(false);
    inproc::serve_with(Some(Schema::from_toml(SCHEMA).unwrap()), "rt-auth", auth).await
}

fn key(role: Role) -> String {
    sign_key(SECRET, role, unix_now(), 3600).unwrap()
}

fn url(addr: SocketAddr, apikey: Option<&str>) -> String {
    let key = apikey.map(|k| format!("apikey={k}&")).unwrap_or_default();
    format!("ws://{addr}/realtime/v1/websocket?{key}vsn=1.0.0")
}

/// The reply to a join of `table` with `apikey` (and `token` as the join's access_token).
async fn join(addr: SocketAddr, apikey: &str, token: Option<&str>, table: &str) -> Value {
    let (mut ws, _) = tokio_tungstenite::connect_async(url(addr, Some(apikey)))
        .await
        .unwrap();
    let mut payload = json!({"config": {"postgres_changes": [
        {"event": "*", "schema": "public", "table": table}
    ]}});
    if let Some(t) = token {
        payload["access_token"] = json!(t);
    }
    let join = json!({"topic": "realtime:x", "event": "phx_join", "payload": payload, "ref": "1", "join_ref": "1"});
    ws.send(Message::text(join.to_string())).await.unwrap();
    loop {
        let msg = tokio::time::timeout(GUARD, ws.next())
            .await
            .expect("a reply within the failure guard")
            .expect("the socket stays open")
            .unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["event"] == "phx_reply" {
                return v["payload"].clone();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_valid_key_is_refused() {
    let s = server().await;
    for apikey in [None, Some("garbage"), Some("a.b.c")] {
        let err = tokio_tungstenite::connect_async(url(s.addr, apikey))
            .await
            .expect_err("refused before the upgrade");
        match err {
            tokio_tungstenite::tungstenite::Error::Http(r) => {
                assert_eq!(r.status(), 403, "{apikey:?}")
            }
            other => panic!("{apikey:?}: expected an HTTP refusal, got {other}"),
        }
    }
    let forged = sign_key(
        "another-secret-that-is-just-as-long-as-ours",
        Role::ServiceRole,
        unix_now(),
        60,
    )
    .unwrap();
    assert!(
        tokio_tungstenite::connect_async(url(s.addr, Some(&forged)))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_follow_the_schemas_access_rules() {
    let s = server().await;
    let (anon, service) = (key(Role::Anon), key(Role::ServiceRole));
    let ok = |p: &Value| p["status"] == "ok";
    assert!(
        ok(&join(s.addr, &anon, None, "posts").await),
        "anon reads posts"
    );
    let refused = join(s.addr, &anon, None, "notes").await;
    assert_eq!(refused["status"], "error", "{refused}");
    assert!(
        refused.to_string().contains("permission denied"),
        "the reason names the refusal: {refused}"
    );
    assert!(
        ok(&join(s.addr, &service, None, "notes").await),
        "service_role reads all"
    );
    // A signed-in user over the anon key may follow a table under the owner rule (its rows
    // only, see below); anon may not read it at all.
    let owned = join(s.addr, &anon, Some(&user_token("u1")), "todos").await;
    assert!(ok(&owned), "{owned}");
    let anon_todos = join(s.addr, &anon, None, "todos").await;
    assert_eq!(anon_todos["status"], "error", "{anon_todos}");
    let expired = sign_key(SECRET, Role::ServiceRole, unix_now() - 7200, 60).unwrap();
    let late = join(s.addr, &anon, Some(&expired), "posts").await;
    assert_eq!(
        late["status"], "error",
        "an expired access_token is refused: {late}"
    );
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A socket of user `sub` joined to every change of `todos`.
async fn subscriber(addr: SocketAddr, sub: &str) -> Socket {
    let (mut ws, _) = tokio_tungstenite::connect_async(url(addr, Some(&key(Role::Anon))))
        .await
        .unwrap();
    let payload = json!({"config": {"postgres_changes": [
        {"event": "*", "schema": "public", "table": "todos"}
    ]}, "access_token": user_token(sub)});
    let join = json!({"topic": "realtime:t", "event": "phx_join", "payload": payload, "ref": "1", "join_ref": "1"});
    ws.send(Message::text(join.to_string())).await.unwrap();
    let reply = next_event(&mut ws, "phx_reply").await;
    assert_eq!(reply["payload"]["status"], "ok", "{reply}");
    ws
}

/// The next message with event `event` (others skipped), within the failure guard.
async fn next_event(ws: &mut Socket, event: &str) -> Value {
    loop {
        let msg = tokio::time::timeout(GUARD, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {event} within the failure guard"))
            .expect("the socket stays open")
            .unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["event"] == event {
                return v;
            }
        }
    }
}

/// `(type, id)` of each change received until the INSERT of `last` (inclusive), with the
/// `old_record` of deletes.
async fn changes_until(ws: &mut Socket, last: &str) -> Vec<(String, String, Value)> {
    let mut seen = Vec::new();
    loop {
        let m = next_event(ws, "postgres_changes").await;
        let d = &m["payload"]["data"];
        let kind = d["type"].as_str().unwrap().to_owned();
        let row = if kind == "DELETE" {
            &d["old_record"]
        } else {
            &d["record"]
        };
        let id = row["id"].as_str().unwrap().to_owned();
        let old = match kind.as_str() {
            "DELETE" => d["old_record"].clone(),
            _ => Value::Null,
        };
        let done = kind == "INSERT" && id == last;
        seen.push((kind, id, old));
        if done {
            return seen;
        }
    }
}

/// Writes through `/rest/v1/todos` with the service role key.
async fn service_write(addr: SocketAddr, method: hyper::Method, query: &str, body: Option<Value>) {
    let k = key(Role::ServiceRole);
    let bearer = format!("Bearer {k}");
    let headers = [("apikey", k.as_str()), ("authorization", bearer.as_str())];
    let path = format!("/rest/v1/todos{query}");
    let body = body.map(|b| b.to_string().into_bytes());
    let answer = meshlite_node::httpc::request_with(addr, method, &path, &headers, body)
        .await
        .unwrap();
    assert!(answer.status.is_success(), "{path}: {answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_rule_tables_stream_each_user_its_own_rows() {
    use hyper::Method;
    let s = server().await;
    let mut u1 = subscriber(s.addr, "u1").await;
    let mut u2 = subscriber(s.addr, "u2").await;
    let insert = |id: &str, user: &str| Some(json!({"id": id, "title": id, "user_id": user}));
    let w = |m: Method, q: &'static str, b: Option<Value>| service_write(s.addr, m, q, b);
    w(Method::POST, "", insert("a", "u1")).await;
    w(Method::POST, "", insert("b", "u2")).await;
    w(Method::PATCH, "?id=eq.b", Some(json!({"title": "b2"}))).await;
    // The service role gives u1's row to u2: u2 sees the UPDATE, u1 nothing (as Supabase
    // checks the new row only).
    w(Method::PATCH, "?id=eq.a", Some(json!({"user_id": "u2"}))).await;
    w(Method::DELETE, "?id=eq.b", None).await;
    w(Method::POST, "", insert("c", "u1")).await;
    w(Method::DELETE, "?id=eq.c", None).await;
    // Sentinels: each socket delivers changes in commit order, so everything a user could
    // have been sent precedes its sentinel.
    w(Method::POST, "", insert("z1", "u1")).await;
    w(Method::POST, "", insert("z2", "u2")).await;

    let key_only = |id: &str| json!({"id": id});
    let ev = |k: &str, id: &str, old: Value| (k.to_owned(), id.to_owned(), old);
    assert_eq!(
        changes_until(&mut u1, "z1").await,
        vec![
            ev("INSERT", "a", Value::Null),
            ev("INSERT", "c", Value::Null),
            ev("DELETE", "c", key_only("c")),
            ev("INSERT", "z1", Value::Null),
        ]
    );
    assert_eq!(
        changes_until(&mut u2, "z2").await,
        vec![
            ev("INSERT", "b", Value::Null),
            ev("UPDATE", "b", Value::Null),
            ev("UPDATE", "a", Value::Null),
            ev("DELETE", "b", key_only("b")),
            ev("INSERT", "z2", Value::Null),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_token_of_another_user_follows_that_users_rows() {
    use hyper::Method;
    let s = server().await;
    let mut ws = subscriber(s.addr, "u1").await;
    let refresh = json!({"topic": "realtime:t", "event": "access_token",
        "payload": {"access_token": user_token("u2")}, "ref": "2", "join_ref": "1"});
    ws.send(Message::text(refresh.to_string())).await.unwrap();
    // A heartbeat round trip: the refresh (sent before it) has been handled.
    let hb = json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "3"});
    ws.send(Message::text(hb.to_string())).await.unwrap();
    next_event(&mut ws, "phx_reply").await;
    let row = |id: &str, user: &str| Some(json!({"id": id, "title": id, "user_id": user}));
    service_write(s.addr, Method::POST, "", row("x", "u1")).await;
    service_write(s.addr, Method::POST, "", row("y", "u2")).await;
    let got = changes_until(&mut ws, "y").await;
    assert_eq!(
        got,
        vec![("INSERT".to_owned(), "y".to_owned(), Value::Null)]
    );
}
