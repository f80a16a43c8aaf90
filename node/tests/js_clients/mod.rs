//! The real Supabase JavaScript client for the tests that drive a node with it
//! (`supabase_js.rs`, `supabase_realtime.rs`): installed once with npm (with `ws`) into
//! `<target>/js-clients` (a fresh machine needs node and npm, nothing else); an install that
//! fails fails the test with npm's output, it is never skipped.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common;

/// What the scripts need: the client, and `ws` because Node 20 has no native WebSocket (the
/// Realtime client uses it, and supabase-js builds that client at construction).
const PACKAGES: &[(&str, &str)] = &[("@supabase/supabase-js", "2"), ("ws", "8")];

/// `<target>/js-clients/node_modules`, installing supabase-js there when it is missing.
pub fn supabase_js() -> PathBuf {
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

/// Runs `tests/js/<script>` with node, giving it the modules directory and `args`; bounded by
/// `guard`. A failing script fails the test with its output and `context` (the nodes' logs);
/// on success returns the JSON summary the script prints last.
pub async fn run_script(
    script: &str,
    args: &[String],
    guard: Duration,
    context: impl Fn() -> String,
) -> serde_json::Value {
    let modules = tokio::task::spawn_blocking(supabase_js).await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/js")
        .join(script);
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&modules)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(guard, run)
        .await
        .unwrap_or_else(|_| panic!("{} hangs\n{}", script.display(), context()))
        .expect("node must be installed (node 20 and npm are on the machine image)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed ({}):\n{stdout}\n{}\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        context()
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("summary line {last:?}: {e}"))
}
