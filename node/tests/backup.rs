//! `meshlite backup` while `meshlite run` serves writes, and `meshlite restore` into a new
//! directory: the backup is one consistent snapshot, and the restored replica runs under a new
//! origin that syncs with the original without conflicts or duplicated transactions.
//!
//! One writer puts records `w0, w1, ...` in order, each acknowledged (HTTP 200) before the next;
//! the backup runs in between. A consistent snapshot therefore holds exactly a prefix `w0..wk` of
//! the writes, with every write acknowledged before the backup started inside it; a copy torn by
//! concurrent commits would show a gap or a half-applied record.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{BIN, Fleet, NodeProc, converge, wait_connected};
use meshlite_core::store::{OpenOptions, Query, Store};
use meshlite_fixtures::records::named_id;
use serde_json::{Value, json};

/// Writes acknowledged before the backup starts (the database is not trivially small).
const WRITES_BEFORE_BACKUP: usize = 300;
/// Bound on the writer's loop (a backup that never ends must not hang the test).
const MAX_WRITES: usize = 20_000;
/// New writes on each side after the restore.
const WRITES_AFTER_RESTORE: usize = 5;

fn record(name: &str, i: usize) -> Value {
    json!({
        "id": named_id(name),
        "status": "queued",
        "retry_count": 0,
        "input": { "n": i, "pad": "x".repeat(512) },
    })
}

/// Puts `w0, w1, ...` in order until `stop`; each id is pushed once acknowledged.
async fn writer(node: &NodeProc, acked: &Mutex<Vec<String>>, stop: &AtomicBool) {
    for i in 0..MAX_WRITES {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let value = record(&format!("w{i}"), i);
        node.put("tasks", value.clone()).await;
        acked
            .lock()
            .unwrap()
            .push(value["id"].as_str().unwrap().to_owned());
    }
}

/// Runs `meshlite <args>` and returns its stdout as JSON (the command must succeed).
async fn cli(args: &[&OsStr]) -> Value {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("MESHLITE_DATA")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "meshlite {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits for `before` acknowledged writes, takes the backup, then stops the writer. Returns
/// (acknowledged when the backup started, the backup's report).
async fn backup_during_writes(
    data: &Path,
    file: &Path,
    acked: &Mutex<Vec<String>>,
    stop: &AtomicBool,
) -> (usize, Value) {
    common::poll_until("writes before the backup", common::GUARD, || async {
        match acked.lock().unwrap().len() >= WRITES_BEFORE_BACKUP {
            true => Ok(()),
            false => Err("still writing".to_owned()),
        }
    })
    .await;
    let started = acked.lock().unwrap().len();
    let report = cli(&[
        OsStr::new("--data"),
        data.as_os_str(),
        OsStr::new("backup"),
        file.as_os_str(),
    ])
    .await;
    stop.store(true, Ordering::SeqCst);
    (started, report)
}

/// Every `tasks` row of a stopped data directory, by id.
fn offline_rows(dir: &Path) -> BTreeMap<String, Value> {
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let store = Store::open(&dir, OpenOptions::default()).unwrap();
        let rows = store.query("tasks", &Query::default()).unwrap();
        store.close().unwrap();
        rows.into_iter()
            .map(|r| (r["id"].as_str().unwrap().to_owned(), r))
            .collect()
    })
    .join()
    .unwrap()
}

/// (replica id, per-origin held ranges) from `GET /status`.
async fn origins(node: &NodeProc) -> (String, BTreeMap<String, Value>) {
    let (_, status) = node.get("/status").await;
    let ranges = status["origins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["origin"].as_str().unwrap().to_owned(),
                o["ranges"].clone(),
            )
        })
        .collect();
    (status["replica_id"].as_str().unwrap().to_owned(), ranges)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_writes_restores_a_new_origin_that_syncs_with_the_original() {
    let fleet = Fleet::new();
    let a = NodeProc::start(fleet.node("a")).await;
    let file = fleet.root().join("a.backup");
    let (acked, stop) = (Mutex::new(Vec::new()), AtomicBool::new(false));
    let a_data = a.cfg.data_dir();
    let ((started, report), ()) = tokio::join!(
        backup_during_writes(&a_data, &file, &acked, &stop),
        writer(&a, &acked, &stop),
    );
    let acked = acked.into_inner().unwrap();
    eprintln!(
        "{} writes acknowledged while the backup ran",
        acked.len() - started
    );
    let (a_origin, _) = origins(&a).await;
    assert_eq!(report["replica_id"], json!(a_origin));

    // Restore into node b's (new) data directory.
    let mut b_cfg = fleet.node("b");
    b_cfg.static_peers = vec![a.cfg.peer_addr()];
    let restored = cli(&[
        OsStr::new("--data"),
        b_cfg.data_dir().as_os_str(),
        OsStr::new("restore"),
        file.as_os_str(),
    ])
    .await;
    assert_eq!(restored["backed_up_replica_id"], json!(a_origin));
    let b_origin = restored["replica_id"].as_str().unwrap().to_owned();
    assert_ne!(b_origin, a_origin, "a restored replica starts a new origin");

    // The restored data: a prefix of the acknowledged writes, holding every write acknowledged
    // before the backup started, each row equal to the original's.
    let rows = offline_rows(&b_cfg.data_dir());
    let k = rows.len();
    assert!(
        k >= started,
        "backup lost acknowledged writes: {k} < {started}"
    );
    let prefix: Vec<&String> = rows.keys().collect();
    let mut expected: Vec<&String> = acked.iter().take(k).collect();
    expected.sort();
    assert_eq!(prefix, expected, "the backup is not a prefix of the writes");
    let original: BTreeMap<String, Value> = a
        .query("tasks")
        .await
        .into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_owned(), r))
        .collect();
    for (id, row) in &rows {
        assert_eq!(Some(row), original.get(id), "restored {id} differs");
    }

    // Both run; each writes under its own origin; they converge.
    let b = NodeProc::start(b_cfg).await;
    wait_connected(&b, &[&a]).await;
    for i in 0..WRITES_AFTER_RESTORE {
        a.put("tasks", record(&format!("a{i}"), i)).await;
        b.put("tasks", record(&format!("b{i}"), i)).await;
    }
    let (snap, _) = converge(&[&a, &b], &["tasks"]).await;
    let ids: Vec<&str> = snap["tasks"]
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), acked.len() + 2 * WRITES_AFTER_RESTORE);

    // No duplicated or colliding transactions: the original's origin holds one gap-free range
    // on both replicas, the new origin exactly the restored node's own writes.
    let want = |n: usize| json!([[1, n]]);
    let a_txns = acked.len() + WRITES_AFTER_RESTORE;
    common::poll_until("held ranges agree", common::GUARD, || async {
        let (_, on_a) = origins(&a).await;
        let (b_self, on_b) = origins(&b).await;
        let expect: BTreeMap<String, Value> = [
            (a_origin.clone(), want(a_txns)),
            (b_origin.clone(), want(WRITES_AFTER_RESTORE)),
        ]
        .into();
        match (b_self == b_origin, on_a == expect, on_b == expect) {
            (true, true, true) => Ok(()),
            _ => Err(format!(
                "b runs as {b_self}; want {expect:?}\n on a: {on_a:?}\n on b: {on_b:?}"
            )),
        }
    })
    .await;
}
