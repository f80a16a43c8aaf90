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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{NodeConfig, NodeProc};

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

/// What the script needs: the client, and `ws` because Node 20 has no native WebSocket and
/// supabase-js builds its Realtime client (unused here) at construction.
const PACKAGES: &[(&str, &str)] = &[("@supabase/supabase-js", "2"), ("ws", "8")];

/// Bounds the script (it takes about a second).
const SCRIPT_GUARD: Duration = Duration::from_secs(60);

/// `<target>/js-clients/node_modules`, installing supabase-js there when it is missing.
fn supabase_js() -> PathBuf {
    let target = Path::new(common::BIN)
        .ancestors()
        .nth(2)
        .expect("the binary lives in <target>/<profile>/");
    let dir = target.join("js-clients");
    let modules = dir.join("node_modules");
    let complete = |m: &Path| {
        PACKAGES
            .iter()
            .all(|(p, _)| m.join(p).join("package.json").exists())
    };
    if complete(&modules) {
        return modules;
    }
    // Install into a private directory and rename it into place, so that concurrent runs never
    // see a half-installed tree.
    let staging = target.join(format!("js-clients.tmp-{}", std::process::id()));
    std::fs::create_dir_all(&staging).unwrap();
    let specs = PACKAGES.iter().map(|(p, v)| format!("{p}@{v}"));
    let out = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--no-save"])
        .args(specs)
        .current_dir(&staging)
        .output()
        .expect("npm must be installed (node 20 and npm are on the machine image)");
    assert!(
        out.status.success(),
        "npm install {PACKAGES:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if dir.exists() && !complete(&modules) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if std::fs::rename(&staging, &dir).is_err() {
        // Another run installed it first.
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(complete(&modules), "{} is incomplete", modules.display());
    modules
}

/// Runs `tests/js/<script>` against a fresh node with `schema`; the script's summary line.
async fn run_script(script: &str, schema: &str) -> serde_json::Value {
    let modules = tokio::task::spawn_blocking(supabase_js).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let schema_file = tmp.path().join("schema.toml");
    std::fs::write(&schema_file, schema).unwrap();
    let mut cfg = NodeConfig::loopback("rest", tmp.path().join("node"), None);
    cfg.schema = Some(schema_file);
    let node = NodeProc::start(cfg).await;
    let url = format!("http://{}", node.http());
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/js")
        .join(script);

    let started = Instant::now();
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&modules)
        .arg(&url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(SCRIPT_GUARD, run)
        .await
        .expect("the supabase-js script hangs")
        .expect("node must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "supabase-js script failed ({}):\n{stdout}\n{}\n--- node log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        node.log_tail(40)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["ok"], true);
    eprintln!("{}: {:?}", script.display(), started.elapsed());
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_basics() {
    let summary = run_script("supabase_slice.mjs", SCHEMA).await;
    assert_eq!(summary["steps"].as_array().unwrap().len(), 13, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_dialect() {
    let summary = run_script("supabase_dialect.mjs", DIALECT_SCHEMA).await;
    assert_eq!(summary["steps"].as_array().unwrap().len(), 8, "{summary}");
}
