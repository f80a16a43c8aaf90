//! A node that stops — cleanly with SIGTERM, or killed with SIGKILL — keeps every write it
//! acknowledged, and when restarted from its data directory catches up with what the rest of the
//! fleet wrote meanwhile (new records, counter increments, a delete of one of its own records).
//!
//! Writers hammer the node with `[put record, incr counter]` transactions while the signal
//! arrives; each acknowledged (HTTP 200) write must be in the data directory read offline after
//! the exit, before any peer could hand it back. A write in flight at the signal may land or be
//! refused, never half of it.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::os::unix::process::ExitStatusExt as _;
use std::sync::Arc;

use common::{Fleet, NodeProc, converge, ids};
use hyper::{Method, StatusCode};
use meshlite_fixtures::records::named_id;
use serde_json::{Value, json};
use tokio::sync::Notify;

const COLLECTIONS: &[&str] = &["tasks", "jobs"];
/// Concurrent writers against the node that is about to stop.
const WRITERS: usize = 4;
/// Acknowledged writes (all writers together) before the signal is sent.
const ACKS_BEFORE_SIGNAL: usize = 40;
/// Bound on one writer's loop (a daemon that never stops must not hang the test).
const MAX_WRITES_PER_WRITER: usize = 5_000;

/// Three nodes, each listing the other two as static peers, sharing the `stress` task.
async fn full_mesh(fleet: &Fleet) -> Vec<NodeProc> {
    let nodes = common::full_mesh(fleet, &["a", "b", "c"], |_, _| {}).await;
    nodes[0]
        .put(
            "tasks",
            json!({ "id": named_id("stress"), "status": "running", "retry_count": 0 }),
        )
        .await;
    let all: Vec<&NodeProc> = nodes.iter().collect();
    converge(&all, COLLECTIONS).await;
    nodes
}

/// Writes `[put jobs/{writer}-{k}, incr tasks/stress.retry_count]` until the node refuses or is
/// gone; returns the ids acknowledged with 200.
async fn write_until_refused(
    node: Arc<NodeProc>,
    writer: usize,
    acked: Arc<std::sync::Mutex<usize>>,
    enough: Arc<Notify>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for k in 0..MAX_WRITES_PER_WRITER {
        let id = named_id(&format!("w{writer}-{k}"));
        let ops = json!([
            { "op": "put", "collection": "jobs", "value": { "id": id, "status": "queued", "writer": writer } },
            { "op": "incr", "collection": "tasks", "id": named_id("stress"), "field": "retry_count", "by": 1 },
        ]);
        match node.try_request(Method::POST, "/v1/txn", Some(&ops)).await {
            Ok((StatusCode::OK, _)) => ids.push(id),
            Ok((status, body)) => {
                eprintln!(
                    "writer {writer}: refused after {} acks: {status} {body}",
                    ids.len()
                );
                return ids;
            }
            Err(e) => {
                eprintln!("writer {writer}: gone after {} acks: {e}", ids.len());
                return ids;
            }
        }
        let mut total = acked.lock().unwrap();
        *total += 1;
        if *total == ACKS_BEFORE_SIGNAL {
            enough.notify_one();
        }
    }
    panic!("writer {writer}: the node still accepted writes after {MAX_WRITES_PER_WRITER}");
}

/// Runs the writers against `node`, sends `signal` once enough writes were acknowledged, and
/// returns the acknowledged ids and the exit status.
async fn stop_under_load(
    node: &mut Arc<NodeProc>,
    signal: &str,
) -> (Vec<String>, std::process::ExitStatus) {
    let acked = Arc::new(std::sync::Mutex::new(0));
    let enough = Arc::new(Notify::new());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            tokio::spawn(write_until_refused(
                node.clone(),
                w,
                acked.clone(),
                enough.clone(),
            ))
        })
        .collect();
    tokio::time::timeout(common::GUARD, enough.notified())
        .await
        .expect("writes acknowledged");
    node.signal(signal);
    let mut ids = Vec::new();
    for w in writers {
        ids.extend(w.await.unwrap());
    }
    let status = Arc::get_mut(node)
        .expect("writers are done")
        .wait_exit()
        .await;
    (ids, status)
}

fn stress_count(rows: &[Value]) -> i64 {
    common::int_field(rows, &named_id("stress"), "retry_count")
}

/// Every acknowledged write is in `node`'s data directory; returns the counter found there.
fn assert_durable(node: &NodeProc, acked: &[String]) -> i64 {
    let jobs = ids(&node.offline_query("jobs"));
    let lost: Vec<&String> = acked.iter().filter(|id| !jobs.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes lost by {}: {lost:?}",
        node.name()
    );
    let count = stress_count(&node.offline_query("tasks"));
    // A write committed just before the signal whose answer never arrived may add one per writer.
    assert!(
        (acked.len() as i64..=(acked.len() + WRITERS) as i64).contains(&count),
        "counter {count} for {} acknowledged increments",
        acked.len()
    );
    count
}

/// While `down` is stopped, the others write: new records, increments, a delete of one of the
/// stopped node's records and an update of another.
async fn write_meanwhile(up: &[&NodeProc], acked: &[String]) {
    let (x, y) = (up[0], up[1]);
    for k in 0..10 {
        x.put(
            "tasks",
            json!({ "id": named_id(&format!("meanwhile-{k}")), "status": "queued" }),
        )
        .await;
        y.incr("tasks", &named_id("stress"), "retry_count", 1000)
            .await;
    }
    let (status, body) = x.delete("jobs", &acked[0]).await;
    assert_eq!(status, StatusCode::OK, "delete {}: {body}", acked[0]);
    y.put("jobs", json!({ "id": acked[1], "status": "running" }))
        .await;
}

async fn check_caught_up(how: &str, nodes: &[&NodeProc], acked: &[String], counter: i64) {
    let (snap, t) = converge(nodes, COLLECTIONS).await;
    eprintln!("node restarted after {how} caught up in {t:?} after its ready line");
    let jobs = ids(&snap["jobs"]);
    assert!(
        !jobs.contains(&acked[0]),
        "deleted while the node was down: {}",
        acked[0]
    );
    let missing: Vec<&String> = acked[1..].iter().filter(|id| !jobs.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes missing after catch-up: {missing:?}"
    );
    let updated = snap["jobs"]
        .iter()
        .find(|j| j["id"] == acked[1].as_str())
        .unwrap();
    assert_eq!(updated["status"], "running", "{updated}");
    let tasks = ids(&snap["tasks"]);
    assert!(
        (0..10).all(|k| tasks.contains(&named_id(&format!("meanwhile-{k}")))),
        "{tasks:?}"
    );
    assert_eq!(stress_count(&snap["tasks"]), counter + 10 * 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_stopped_with_sigterm_loses_nothing_acknowledged_and_catches_up() {
    let fleet = Fleet::new();
    let mut nodes = full_mesh(&fleet).await.into_iter();
    let (a, b, c) = (
        nodes.next().unwrap(),
        nodes.next().unwrap(),
        nodes.next().unwrap(),
    );
    let mut c = Arc::new(c);
    let replica = c.ready.replica.clone();

    let (acked, status) = stop_under_load(&mut c, "TERM").await;
    assert!(
        status.success(),
        "SIGTERM must be a clean exit, got {status}\n{}",
        c.log_tail(30)
    );
    assert!(
        c.log().contains("store closed cleanly"),
        "{}",
        c.log_tail(30)
    );
    eprintln!("{} writes acknowledged before the clean stop", acked.len());
    let counter = assert_durable(&c, &acked);

    write_meanwhile(&[&a, &b], &acked).await;
    let c = Arc::get_mut(&mut c).unwrap();
    c.restart().await;
    assert_eq!(
        c.ready.replica, replica,
        "same data directory, same replica"
    );
    check_caught_up("SIGTERM", &[&a, &b, c], &acked, counter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkilled_node_loses_nothing_acknowledged_and_catches_up() {
    let fleet = Fleet::new();
    let mut nodes = full_mesh(&fleet).await;
    // Kill the node with the largest node id. Of two connections between a pair, both ends keep
    // the one dialed by the smaller id, so its peers hold connections *they* dialed to it, which
    // nothing closes when it dies (no goodbye). Its restart must not be locked out by those
    // stale connections until their idle timeout.
    nodes.sort_by(|x, y| x.node_id().cmp(y.node_id()));
    let mut nodes = nodes.into_iter();
    let (a, c, b) = (
        nodes.next().unwrap(),
        nodes.next().unwrap(),
        nodes.next().unwrap(),
    );
    let mut b = Arc::new(b);
    let replica = b.ready.replica.clone();

    let (acked, status) = stop_under_load(&mut b, "KILL").await;
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}");
    eprintln!("{} writes acknowledged before SIGKILL", acked.len());
    let counter = assert_durable(&b, &acked);

    write_meanwhile(&[&a, &c], &acked).await;
    let b = Arc::get_mut(&mut b).unwrap();
    b.restart().await;
    assert_eq!(
        b.ready.replica, replica,
        "same data directory, same replica"
    );
    check_caught_up("SIGKILL", &[&a, b, &c], &acked, counter).await;
}
