//! The real `@supabase/supabase-js` Realtime client against `/realtime/v1/websocket` on a
//! two-node mesh of `meshlite run` processes (issue 9, "Realtime"): a `postgres_changes`
//! subscription with a filter on node A receives INSERT, UPDATE and DELETE of matching rows
//! written on A and on B, and nothing of the rows the filter excludes; a second socket speaks
//! the `vsn=1.0.0` serializer; heartbeats are answered; broadcast, presence and unknown tables
//! are refused. The script `tests/js/realtime.mjs` asserts every event itself. A second test
//! (`tests/js/realtime_owner.mjs`) follows a table under the owner rule as two signed-in users.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;
mod js_clients;

use std::time::Duration;

use common::{Fleet, NodeProc, wait_connected};

/// Bounds the script (a few seconds: each step waits for one event).
const SCRIPT_GUARD: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_realtime_on_a_two_node_mesh() {
    let fleet = Fleet::new();
    let mut a = fleet.linked_node("a");
    let mut b = fleet.linked_node("b");
    a.static_peers = vec![b.peer_addr()];
    b.static_peers = vec![a.peer_addr()];
    let nodes = NodeProc::start_all(vec![a, b]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    wait_connected(a, &[b]).await;
    wait_connected(b, &[a]).await;

    let urls = [a, b].map(|n| format!("http://{}", n.http())).to_vec();
    let logs = || format!("{}\n{}", a.log_tail(40), b.log_tail(40));
    let summary = js_clients::run_script("realtime.mjs", &urls, SCRIPT_GUARD, logs).await;
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["steps"].as_array().unwrap().len(), 11, "{summary}");
    assert_eq!(summary["received"], 5, "{summary}");
}

/// A table under the owner rule (the `authenticated` role sees rows whose `user_id` is its `sub`).
const OWNER_SCHEMA: &str = r#"
version = 1
strict = true

[collections.todos]
[collections.todos.fields]
title = { type = "text" }
user_id = { type = "text" }
[collections.todos.access]
owner_field = "user_id"
"#;

const JWT_SECRET: &str = "supabase-realtime-owner-test-secret-forty-chars";

/// supabase-js subscribers signed in as two users each receive only their rows' changes
/// (`tests/js/realtime_owner.mjs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_realtime_under_the_owner_rule() {
    use meshlite_node::auth::jwt::{sign_claims, sign_key};
    use meshlite_node::auth::{Role, unix_now};

    let tmp = tempfile::tempdir().unwrap();
    let schema = tmp.path().join("schema.toml");
    std::fs::write(&schema, OWNER_SCHEMA).unwrap();
    let mut cfg = common::NodeConfig::loopback("owner", tmp.path().join("node"), None);
    cfg.schema = Some(schema);
    cfg.env.push(("JWT_SECRET".into(), JWT_SECRET.into()));
    let node = NodeProc::start(cfg).await;
    let now = unix_now();
    let user = |sub: &str| {
        let claims = serde_json::json!({"role": "authenticated", "sub": sub, "exp": now + 3600});
        sign_claims(JWT_SECRET, &claims).unwrap()
    };
    let args = [
        format!("http://{}", node.http()),
        sign_key(JWT_SECRET, Role::Anon, now, 3600).unwrap(),
        sign_key(JWT_SECRET, Role::ServiceRole, now, 3600).unwrap(),
        user("u1"),
        user("u2"),
    ];
    let logs = || format!("--- node log ---\n{}", node.log_tail(40));
    let summary = js_clients::run_script("realtime_owner.mjs", &args, SCRIPT_GUARD, logs).await;
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["steps"].as_array().unwrap().len(), 4, "{summary}");
}
