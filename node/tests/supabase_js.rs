//! The real `@supabase/supabase-js` client against a `meshlite run` daemon: the PostgREST
//! dialect (`/rest/v1`, issue 9). `tests/js/supabase_slice.mjs` covers the basics (filters,
//! order, count, single, insert, upsert, update, delete, errors); `tests/js/supabase_dialect.mjs`
//! the rest (or/and trees, JSON paths, cs/cd/ov, match, CSV, embedding, insertion order,
//! OpenAPI). The client is installed once with npm (with `ws`)
//! into `<target>/js-clients` (a fresh machine needs node and npm, nothing else); an install that
//! fails fails the test with npm's output, it is never skipped. The script
//! `tests/js/supabase_slice.mjs` asserts every answer and exits non-zero on the first mismatch.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;
mod js_clients;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{NodeConfig, NodeProc};
use js_clients::{run_script, supabase_js};

/// The schema the script writes to: typed columns of every kind the slice compares.
const SCHEMA: &str = r#"
version = 1
strict = true

[collections.todos]
key_type = "integer"
[collections.todos.fields]
title = { type = "text" }
qty = { type = "integer" }
done = { type = "boolean" }
hits = { merge = "counter", type = "integer" }
due = { type = "timestamp" }
tags = { type = "json" }
"#;

/// The dialect script's schema: a relation (`messages.author_id` references `users`) and
/// JSON columns.
const DIALECT_SCHEMA: &str = r#"
version = 1
strict = true

[collections.users]
key_type = "integer"
[collections.users.fields]
name = { type = "text" }

[collections.messages]
key_type = "integer"
[collections.messages.fields]
author_id = { type = "integer", references = "users" }
body = { type = "text" }
meta = { type = "json" }
tags = { type = "json" }
"#;

/// Bounds the script (it takes about a second).
const SCRIPT_GUARD: Duration = Duration::from_secs(60);

/// Runs `tests/js/<script>` against a fresh node with `schema`; the script's summary line.
async fn run_on_fresh_node(script: &str, schema: &str) -> serde_json::Value {
    let tmp = tempfile::tempdir().unwrap();
    let schema_file = tmp.path().join("schema.toml");
    std::fs::write(&schema_file, schema).unwrap();
    let mut cfg = NodeConfig::loopback("rest", tmp.path().join("node"), None);
    cfg.schema = Some(schema_file);
    let node = NodeProc::start(cfg).await;
    let started = Instant::now();
    let url = format!("http://{}", node.http());
    let summary = run_script(script, &[url], SCRIPT_GUARD, || {
        format!("--- node log ---\n{}", node.log_tail(40))
    })
    .await;
    assert_eq!(summary["ok"], true);
    eprintln!("{script}: {:?}", started.elapsed());
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_basics() {
    let summary = run_on_fresh_node("supabase_slice.mjs", SCHEMA).await;
    assert_eq!(summary["steps"].as_array().unwrap().len(), 13, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_dialect() {
    let summary = run_on_fresh_node("supabase_dialect.mjs", DIALECT_SCHEMA).await;
    assert_eq!(summary["steps"].as_array().unwrap().len(), 8, "{summary}");
}

/// The semantics scripts' schema (`tests/js/supabase_semantics.mjs`,
/// `tests/py/supabase_semantics.py`): a counter, and declared defaults.
const SEMANTICS_SCHEMA: &str = include_str!("js/semantics_schema.toml");

/// rpc, `missing=default`, `on_conflict` and racing inserts through supabase-js.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_rpc_defaults_conflicts_and_races() {
    let summary = run_on_fresh_node("supabase_semantics.mjs", SEMANTICS_SCHEMA).await;
    assert_eq!(summary["steps"].as_array().unwrap().len(), 5, "{summary}");
}

/// The auth script's schema: `posts` readable by anon, `todos` under the owner rule.
const AUTH_SCHEMA: &str = r#"
version = 1
strict = true

[collections.posts]
[collections.posts.fields]
title = { type = "text" }
[collections.posts.access]
anon = "read"

[collections.todos]
[collections.todos.fields]
title = { type = "text" }
user_id = { type = "text" }
[collections.todos.access]
owner_field = "user_id"
"#;

/// A secret of the length Supabase's generator makes.
const JWT_SECRET: &str = "supabase-js-auth-test-secret-of-forty-characters";

/// supabase-js with keys signed by the node's `JWT_SECRET` (`tests/js/supabase_auth.mjs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_auth_with_signed_keys() {
    use meshlite_node::auth::jwt::{sign_claims, sign_key};
    use meshlite_node::auth::{Role, unix_now};

    let modules = tokio::task::spawn_blocking(supabase_js).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let schema = tmp.path().join("schema.toml");
    std::fs::write(&schema, AUTH_SCHEMA).unwrap();
    let mut cfg = NodeConfig::loopback("auth", tmp.path().join("node"), None);
    cfg.schema = Some(schema);
    cfg.env.push(("JWT_SECRET".into(), JWT_SECRET.into()));
    let node = NodeProc::start(cfg).await;

    let now = unix_now();
    let key = |role| sign_key(JWT_SECRET, role, now, 3600).unwrap();
    let user = serde_json::json!({"role": "authenticated", "sub": "u1", "exp": now + 3600});
    let other = "not-the-node-secret-but-as-long-as-one-should-be";
    let args = [
        format!("http://{}", node.http()),
        key(Role::Anon),
        key(Role::ServiceRole),
        sign_claims(JWT_SECRET, &user).unwrap(),
        sign_key(JWT_SECRET, Role::Anon, now - 7200, 3600).unwrap(),
        sign_key(other, Role::Anon, now, 3600).unwrap(),
    ];
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/supabase_auth.mjs");
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&modules)
        .args(&args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(SCRIPT_GUARD, run)
        .await
        .expect("the supabase-js script hangs")
        .expect("node must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "supabase-js auth script failed ({}):\n{stdout}\n{}\n--- node log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        node.log_tail(40)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["steps"].as_array().unwrap().len(), 8, "{summary}");
}
