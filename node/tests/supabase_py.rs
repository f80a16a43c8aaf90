//! The real Python `supabase` client (supabase-py, with its `postgrest` package, from PyPI)
//! against a `meshlite run` daemon: select with filters, order, limit and count, `single`,
//! insert, upsert, update, delete and PostgREST's errors over `/rest/v1`. The client is
//! installed once, pinned, into a virtual environment under `<target>/py-clients` (see
//! `pyenv`); an install that fails fails the test with pip's output, it is never skipped. The
//! script `tests/py/supabase_slice.py` asserts every answer and exits non-zero on the first
//! mismatch.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;
mod pyenv;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{NodeConfig, NodeProc};

/// The schema the script writes to (the one `supabase_js.rs` uses).
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

/// The client, pinned (it pins its own `postgrest`, `realtime`, ... to the same version).
const PACKAGES: &[(&str, &str)] = &[("supabase", "2.34.1")];

/// Bounds the script (it takes a few seconds, most of it importing the client).
const SCRIPT_GUARD: Duration = Duration::from_secs(120);

/// Runs `tests/py/<script>` with the client against a fresh node with `schema`; the script's
/// summary line.
async fn run_on_fresh_node(script: &str, schema: &str) -> serde_json::Value {
    let python = tokio::task::spawn_blocking(|| pyenv::python_with("supabase", PACKAGES))
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let schema_file = tmp.path().join("schema.toml");
    std::fs::write(&schema_file, schema).unwrap();
    let mut cfg = NodeConfig::loopback("rest-py", tmp.path().join("node"), None);
    cfg.schema = Some(schema_file);
    let node = NodeProc::start(cfg).await;
    let url = format!("http://{}", node.http());
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);

    let started = Instant::now();
    let run = tokio::process::Command::new(&python)
        .arg(&path)
        .arg(&url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(SCRIPT_GUARD, run)
        .await
        .unwrap_or_else(|_| panic!("{script} hangs"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{}\n--- node log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        node.log_tail(40)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["ok"], true);
    eprintln!("{script}: {:?}", started.elapsed());
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_py_select_insert_upsert_update_delete_and_errors() {
    let summary = run_on_fresh_node("supabase_slice.py", SCHEMA).await;
    assert_eq!(summary["steps"].as_array().unwrap().len(), 11, "{summary}");
}

/// `client.rpc(...)`, `default_to_null=False` (`missing=default`), `on_conflict` on another
/// column, and racing inserts of one id (`tests/py/supabase_semantics.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_py_rpc_defaults_conflicts_and_races() {
    let schema = include_str!("js/semantics_schema.toml");
    let summary = run_on_fresh_node("supabase_semantics.py", schema).await;
    assert_eq!(summary["steps"].as_array().unwrap().len(), 5, "{summary}");
}
