//! Who may use the Realtime websocket when the node checks keys (`JWT_SECRET`): the same
//! verdicts as `/rest/v1`, over real sockets to the node's listener in this process. Keyless
//! loopback trust is turned off here, so the test sees what a remote client sees.

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
user_id = { type = "text" }
[collections.todos.access]
owner_field = "user_id"
"#;

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
    // A signed-in user over the anon key: the owner rule is not streamed, so it is refused
    // rather than sent other users' rows.
    let user = meshlite_node::auth::jwt::sign_claims(
        SECRET,
        &json!({"role": "authenticated", "sub": "u1", "exp": unix_now() + 600}),
    )
    .unwrap();
    let owned = join(s.addr, &anon, Some(&user), "todos").await;
    assert_eq!(owned["status"], "error", "{owned}");
    assert!(owned.to_string().contains("owner rule"), "{owned}");
    let expired = sign_key(SECRET, Role::ServiceRole, unix_now() - 7200, 60).unwrap();
    let late = join(s.addr, &anon, Some(&expired), "posts").await;
    assert_eq!(
        late["status"], "error",
        "an expired access_token is refused: {late}"
    );
}
