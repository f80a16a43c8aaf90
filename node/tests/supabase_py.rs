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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_py_select_insert_upsert_update_delete_and_errors() {
    let python = tokio::task::spawn_blocking(|| pyenv::python_with("supabase", PACKAGES))
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let schema = tmp.path().join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let mut cfg = NodeConfig::loopback("rest-py", tmp.path().join("node"), None);
    cfg.schema = Some(schema);
    let node = NodeProc::start(cfg).await;
    let url = format!("http://{}", node.http());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/supabase_slice.py");

    let started = Instant::now();
    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(SCRIPT_GUARD, run)
        .await
        .expect("the supabase-py script hangs")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "supabase-py script failed ({}):\n{stdout}\n{}\n--- node log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        node.log_tail(40)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["steps"].as_array().unwrap().len(), 11, "{summary}");
    eprintln!("supabase-py script: {:?}", started.elapsed());
}
