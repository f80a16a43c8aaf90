//! Fault injection against real `meshlite run` daemons on loopback (see RELIABILITY.md; the
//! long versions run from `deploy/faults.sh --long`):
//!
//! - **Repeated SIGKILL during writes and sync**: three nodes in a full mesh; each round one node
//!   (in turn) is killed while two writers hammer it with `[put jobs/…, incr tasks/stress]`
//!   transactions and a third writes the same kind of transactions on another node (so pushes
//!   and anti-entropy rounds into the victim are in flight); the next round starts once the
//!   restarted node has reconnected, while it catches up. Right after each kill, the victim's
//!   data directory is read offline: every write it acknowledged is there. At the end every
//!   replica converges, no acknowledged write is missing, nothing is duplicated, and the counter
//!   equals the number of `jobs` records exactly (each transaction is one put and one increment,
//!   so a half transaction anywhere would break the equality). `MESHLITE_FAULT_KILLS` rounds
//!   (default 21).
//! - **Full disk**: the data directory is a 3 MiB tmpfs (needs root). Writes until the disk is
//!   full must be refused with 507 and a message naming the full disk (never "corrupt"); reads
//!   keep working; after the tmpfs grows (`mount -o remount`), writes succeed again, and after a
//!   restart every acknowledged write and increment is there.
//! - **Full disk on a peer**: the same 3 MiB tmpfs under the second node of a pair while the
//!   first writes 3 MiB of jobs: the full peer logs that its disk is full (never "corrupt"),
//!   keeps serving, holds a prefix; once the tmpfs grows it catches up to every acknowledged write.
//! - **Clock skew**: three nodes whose clocks are 9 h ahead, true, and 5 h behind (libfaketime,
//!   `LD_PRELOAD`). A value written later in causal order wins even when its writer's clock is
//!   hours behind the earlier writer's; increments from every node add up; a delete holds.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    Fleet, NodeConfig, NodeProc, converge_within, full_mesh, ids, int_field, wait_connected,
};
use hyper::{Method, StatusCode};
use meshlite_fixtures::records::named_id;
use serde_json::{Value, json};

const COLLECTIONS: &[&str] = &["tasks", "jobs"];
/// Failure guard for convergence after the last fault.
const CONVERGE_GUARD: Duration = Duration::from_secs(90);

fn env_count(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The one transaction every writer repeats: a new job and one increment of the stress counter.
fn job_txn(id: &str, payload: &str) -> Value {
    json!([
        { "op": "put", "collection": "jobs", "value": { "id": id, "status": "queued", "local_gpu_id": payload } },
        { "op": "incr", "collection": "tasks", "id": named_id("stress"), "field": "retry_count", "by": 1 },
    ])
}

/// Writes job transactions on `node` until it refuses or is gone, or `stop` is set; counts
/// acknowledgements in `acked`; returns the acknowledged ids.
async fn write_jobs(
    node: Arc<NodeProc>,
    tag: String,
    acked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    pause: Duration,
) -> Vec<String> {
    let mut ids = Vec::new();
    for k in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let id = named_id(&format!("{tag}-{k}"));
        match node
            .try_request(Method::POST, "/v1/txn", Some(&job_txn(&id, &tag)))
            .await
        {
            Ok((StatusCode::OK, _)) => ids.push(id),
            Ok(_) | Err(_) => break,
        }
        acked.fetch_add(1, Ordering::Relaxed);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    ids
}

fn stress_count(rows: &[Value]) -> i64 {
    int_field(rows, &named_id("stress"), "retry_count")
}

/// One round: kills `nodes[victim]` under load, checks its data offline, restarts it. Returns
/// the ids acknowledged during the round (by the victim and by the other writer).
async fn kill_round(nodes: &mut [Arc<NodeProc>], round: usize, victim: usize) -> Vec<String> {
    let other = (victim + 1) % nodes.len();
    let stop = Arc::new(AtomicBool::new(false));
    let on_victim = Arc::new(AtomicUsize::new(0));
    let victim_writers: Vec<_> = (0..2)
        .map(|w| {
            tokio::spawn(write_jobs(
                nodes[victim].clone(),
                format!("r{round}-v{w}"),
                on_victim.clone(),
                stop.clone(),
                Duration::ZERO,
            ))
        })
        .collect();
    let elsewhere = tokio::spawn(write_jobs(
        nodes[other].clone(),
        format!("r{round}-s"),
        Arc::new(AtomicUsize::new(0)),
        stop.clone(),
        Duration::from_millis(10),
    ));
    let target = rand::random_range(3..25);
    let deadline = Instant::now() + common::GUARD;
    while on_victim.load(Ordering::Relaxed) < target {
        assert!(
            Instant::now() < deadline,
            "round {round}: no writes acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    nodes[victim].signal("KILL");
    let mut victim_acked = Vec::new();
    for w in victim_writers {
        victim_acked.extend(w.await.unwrap());
    }
    let node = Arc::get_mut(&mut nodes[victim]).expect("the victim's writers are done");
    let status = node.wait_exit().await;
    assert_eq!(status.signal(), Some(9), "round {round}: {status}");
    let on_disk: BTreeSet<String> = ids(&node.offline_query("jobs")).into_iter().collect();
    let lost: Vec<&String> = victim_acked
        .iter()
        .filter(|id| !on_disk.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "round {round}: acknowledged writes lost by {}: {lost:?}",
        node.name()
    );
    node.restart().await;
    stop.store(true, Ordering::Relaxed);
    victim_acked.extend(elsewhere.await.unwrap());
    victim_acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_sigkills_during_writes_and_sync_lose_nothing_acknowledged() {
    let kills = env_count("MESHLITE_FAULT_KILLS", 21);
    let fleet = Fleet::new();
    let mut nodes: Vec<Arc<NodeProc>> = full_mesh(&fleet, &["a", "b", "c"], |_, _| {})
        .await
        .into_iter()
        .map(Arc::new)
        .collect();
    nodes[0]
        .put(
            "tasks",
            json!({ "id": named_id("stress"), "status": "running", "retry_count": 0 }),
        )
        .await;
    let started = Instant::now();
    let mut acked = Vec::new();
    for round in 0..kills {
        let victim = round % nodes.len();
        acked.extend(kill_round(&mut nodes, round, victim).await);
        // The next kill lands while the restarted node catches up (pushes, anti-entropy).
        let others: Vec<&NodeProc> = (0..nodes.len())
            .filter(|j| *j != victim)
            .map(|j| &*nodes[j])
            .collect();
        wait_connected(&nodes[victim], &others).await;
    }
    let faults = started.elapsed();
    let all: Vec<&NodeProc> = nodes.iter().map(|n| &**n).collect();
    let (snap, t) = converge_within(&all, COLLECTIONS, CONVERGE_GUARD).await;
    let jobs = ids(&snap["jobs"]);
    let unique: BTreeSet<&String> = jobs.iter().collect();
    assert_eq!(unique.len(), jobs.len(), "duplicated records");
    let missing: Vec<&String> = acked.iter().filter(|id| !unique.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes missing after convergence: {missing:?}"
    );
    let counter = stress_count(&snap["tasks"]);
    assert_eq!(
        counter,
        jobs.len() as i64,
        "each transaction is one job and one increment: a half transaction (or a lost or doubled increment) breaks this"
    );
    eprintln!(
        "{kills} SIGKILLs in {faults:?}: {} writes acknowledged, {} jobs landed (the rest were in \
         flight at a kill), counter {counter}; all 3 replicas converged {t:?} after the last restart",
        acked.len(),
        jobs.len()
    );
}

/// A tmpfs mounted on a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        mount(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            dir.to_str().unwrap(),
        ]);
        Self(dir.to_owned())
    }

    fn resize(&self, size: &str) {
        mount(&[
            "-o",
            &format!("remount,size={size}"),
            self.0.to_str().unwrap(),
        ]);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

fn mount(args: &[&str]) {
    let out = Command::new("mount")
        .args(args)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "mount {} failed (this test needs root): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_clearly_loses_nothing_and_recovers() {
    let fleet = Fleet::new();
    let cfg = NodeConfig::loopback("disk", fleet.root().join("nodes").join("disk"), None);
    let disk = Tmpfs::mount(&cfg.data_dir(), "3m");
    let mut node = NodeProc::start(cfg).await;
    node.put(
        "tasks",
        json!({ "id": named_id("stress"), "retry_count": 0 }),
    )
    .await;
    let payload = "x".repeat(8 * 1024);
    let (mut acked, mut refusal) = (Vec::new(), None);
    for k in 0..2_000 {
        let id = named_id(&format!("fill-{k}"));
        let (status, body) = node.txn(&job_txn(&id, &payload)).await;
        if status == StatusCode::OK {
            acked.push(id);
        } else {
            refusal = Some((status, body));
            break;
        }
    }
    let (status, body) = refusal.expect("a 3 MiB disk filled up");
    let message = body["error"].as_str().unwrap_or_default().to_lowercase();
    eprintln!(
        "after {} writes the node answered {status}: {body}",
        acked.len()
    );
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert!(
        message.contains("full") && !message.contains("corrupt"),
        "{body}"
    );
    // Still refused, still serving reads, still alive.
    let (again, body) = node.txn(&job_txn(&named_id("while-full"), &payload)).await;
    assert_eq!(again, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert!(node.record("jobs", &acked[0]).await.is_some());
    assert_eq!(node.healthz().await.0, StatusCode::OK);

    disk.resize("64m");
    for k in 0..20 {
        let id = named_id(&format!("after-{k}"));
        let (status, body) = node.txn(&job_txn(&id, &payload)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "write {k} after space returned: {body}"
        );
        acked.push(id);
    }
    node.signal("TERM");
    let status = node.wait_exit().await;
    assert!(status.success(), "{status}\n{}", node.log_tail(30));
    let jobs: BTreeSet<String> = ids(&node.offline_query("jobs")).into_iter().collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !jobs.contains(*id)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(
        !jobs.contains(&named_id("while-full")),
        "a refused write landed"
    );
    assert_eq!(jobs.len(), acked.len());
    assert_eq!(
        stress_count(&node.offline_query("tasks")),
        acked.len() as i64
    );
    node.restart().await;
    assert_eq!(node.query("jobs").await.len(), acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_full_disk_refuses_remote_changes_clearly_and_catches_up() {
    let fleet = Fleet::new();
    let mut disk = None;
    let nodes = full_mesh(&fleet, &["writer", "cramped"], |i, cfg| {
        if i == 1 {
            disk = Some(Tmpfs::mount(&cfg.data_dir(), "3m"));
        }
    })
    .await;
    let disk = disk.expect("mounted");
    let (writer, full) = (&nodes[0], &nodes[1]);
    writer
        .put(
            "tasks",
            json!({ "id": named_id("stress"), "retry_count": 0 }),
        )
        .await;
    let payload = "x".repeat(8 * 1024);
    let mut acked = Vec::new();
    for k in 0..400 {
        let id = named_id(&format!("remote-{k}"));
        let (status, body) = writer.txn(&job_txn(&id, &payload)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the writer's own disk has room: {body}"
        );
        acked.push(id);
    }
    // The peer's disk cannot hold them: it refuses what it cannot store, says why, stays up.
    let log = poll_log_for(full, "disk is full", CONVERGE_GUARD).await;
    let said = log
        .lines()
        .find(|l| l.contains("disk is full"))
        .unwrap_or_default();
    eprintln!("the full peer said: {said}");
    assert!(!log.contains("corrupt"), "{}", full.log_tail(40));
    assert_eq!(full.healthz().await.0, StatusCode::OK);
    let held = full.query("jobs").await.len();
    assert!(held < acked.len(), "a 3 MiB disk held {held} jobs of 8 KiB");
    eprintln!("the full peer held {held} of {} jobs", acked.len());

    disk.resize("64m");
    let (snap, t) = converge_within(&[writer, full], COLLECTIONS, CONVERGE_GUARD).await;
    let jobs: BTreeSet<String> = ids(&snap["jobs"]).into_iter().collect();
    assert!(acked.iter().all(|id| jobs.contains(id)));
    assert_eq!(stress_count(&snap["tasks"]), acked.len() as i64);
    eprintln!("caught up {t:?} after space returned");
}

/// Waits until `node`'s log mentions `needle` (case-insensitive); returns the lowercased log.
async fn poll_log_for(node: &NodeProc, needle: &str, guard: Duration) -> String {
    let start = Instant::now();
    loop {
        let log = node.log().to_lowercase();
        if log.contains(needle) {
            return log;
        }
        assert!(
            start.elapsed() < guard,
            "{} never logged {needle:?}\n{}",
            node.name(),
            node.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// libfaketime, preloaded into a daemon to shift its wall clock.
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

fn skew(cfg: &mut NodeConfig, offset: &str) {
    assert!(
        Path::new(FAKETIME_LIB).exists(),
        "{FAKETIME_LIB} is missing: apt-get install faketime (deploy/test.sh does)"
    );
    cfg.env.push(("LD_PRELOAD".into(), FAKETIME_LIB.into()));
    cfg.env.push(("FAKETIME".into(), offset.into()));
    // Timers and timeouts keep the true monotonic clock; only the wall clock is off.
    cfg.env
        .push(("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn merges_do_not_depend_on_wall_clocks_hours_apart() {
    let fleet = Fleet::new();
    let nodes = full_mesh(&fleet, &["a", "b", "c"], |i, cfg| match i {
        0 => skew(cfg, "+9h"),
        2 => skew(cfg, "-5h"),
        _ => {}
    })
    .await;
    let (ahead, true_clock, behind) = (&nodes[0], &nodes[1], &nodes[2]);
    let all = [ahead, true_clock, behind];
    // The clocks really differ: each node reports its certificate's remaining validity.
    let (a, t, b) = (
        ahead.metric("meshlite_cert_expiry_seconds").await,
        true_clock.metric("meshlite_cert_expiry_seconds").await,
        behind.metric("meshlite_cert_expiry_seconds").await,
    );
    eprintln!("certificate validity left: {a} s (+9 h), {t} s (true), {b} s (-5 h)");
    assert!(
        ((t - a) - 9.0 * 3600.0).abs() < 600.0,
        "the +9 h clock is not skewed"
    );
    assert!(
        ((b - t) - 5.0 * 3600.0).abs() < 600.0,
        "the -5 h clock is not skewed"
    );

    let job = named_id("skewed");
    ahead
        .put(
            "jobs",
            json!({ "id": job, "local_worker_name": "first, by a clock 9 h ahead" }),
        )
        .await;
    converge_within(&all, COLLECTIONS, CONVERGE_GUARD).await;
    behind
        .put(
            "jobs",
            json!({ "id": job, "local_worker_name": "second, by a clock 5 h behind" }),
        )
        .await;
    let doomed = named_id("doomed");
    behind
        .put("jobs", json!({ "id": doomed, "status": "queued" }))
        .await;
    converge_within(&all, COLLECTIONS, CONVERGE_GUARD).await;
    let (status, body) = ahead.delete("jobs", &doomed).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (n, by) in [(ahead, 1), (true_clock, 10), (behind, 100)] {
        for _ in 0..3 {
            n.incr("jobs", &job, "retry_count", by).await;
        }
    }
    let (snap, t) = converge_within(&all, COLLECTIONS, CONVERGE_GUARD).await;
    let row = snap["jobs"]
        .iter()
        .find(|r| r["id"] == job.as_str())
        .unwrap();
    assert_eq!(
        row["local_worker_name"], "second, by a clock 5 h behind",
        "the later write in causal order wins, whatever the clocks say: {row}"
    );
    assert_eq!(row["retry_count"], 333, "{row}");
    assert!(
        snap["jobs"].iter().all(|r| r["id"] != doomed.as_str()),
        "the delete by the node 9 h ahead of the record's writer holds"
    );
    eprintln!("nodes 14 h apart converged in {t:?}; causal order won over wall clocks");
}
