//! Four `meshlite run` processes on loopback, connected in a ring (n0–n1–n2–n3–n0, static peers
//! only), so changes between n0 and n2 always travel through a relay: pushes relayed onwards or
//! anti-entropy rounds of the middle nodes.
//!
//! Phase 1 writes on every node at once: distinct records, status edits of one shared record,
//! counter increments of one field, a delete racing updates of one record, and a multi-record
//! transaction (which another node must never show half of). Phase 2 makes concurrency certain:
//! with n1 and n3 (the only paths between n0 and n2) SIGSTOPped, n0 sets the status to `running`
//! and deletes a record while n2, later by the wall clock, sets another status and updates the
//! deleted record. After each phase every node answers every query identically; in the end the
//! status is `running` (priority, not last-writer-wins), the counter is the sum of all
//! increments, and deleted records are gone everywhere.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::sync::Arc;

use common::{Fleet, NodeProc, converge, wait_connected};
use hyper::StatusCode;
use meshlite_fixtures::records::named_id;
use serde_json::{Value, json};

const COLLECTIONS: &[&str] = &["tasks", "jobs", "agents"];
const NODES: usize = 4;
const DISTINCT_PER_NODE: usize = 10;
const INCRS_PER_NODE: i64 = 5;
/// Phase 1 status edits: any value but `running`.
const STATUSES: &[&str] = &["queued", "completed", "failed", "cancelled", "pending"];
/// The jobs written by the multi-record transaction.
const TXN_JOBS: &[&str] = &["txn-job-a", "txn-job-b", "txn-job-c"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_nodes_in_a_ring_converge_after_concurrent_writes() {
    let fleet = Fleet::new();
    let mut cfgs: Vec<_> = (0..NODES)
        .map(|i| fleet.linked_node(&format!("n{i}")))
        .collect();
    for i in 0..NODES {
        cfgs[i].static_peers = vec![cfgs[(i + 1) % NODES].peer_addr()];
    }
    let nodes = Arc::new(NodeProc::start_all(cfgs).await);
    for i in 0..NODES {
        wait_connected(
            &nodes[i],
            &[&nodes[(i + 1) % NODES], &nodes[(i + NODES - 1) % NODES]],
        )
        .await;
    }
    let all: Vec<&NodeProc> = nodes.iter().collect();

    seed(&nodes[0]).await;
    let (_, t) = converge(&all, COLLECTIONS).await;
    eprintln!("seed records converged on {NODES} nodes in {t:?}");

    phase_one(&nodes).await;
    let (snap, t) = converge(&all, COLLECTIONS).await;
    eprintln!("phase 1 (concurrent writes on all nodes) converged in {t:?} after the last write");
    let shared = find(&snap["tasks"], "shared");
    assert_ne!(
        shared["status"], "running",
        "nobody wrote running yet: {shared}"
    );
    assert_eq!(
        shared["retry_count"],
        json!(phase_one_increments()),
        "{shared}"
    );

    phase_two(&nodes).await;
    let (snap, t) = converge(&all, COLLECTIONS).await;
    eprintln!("phase 2 (n0 and n2 cut off from each other) converged in {t:?} after resuming");
    check_final(&snap);
    for n in &all {
        assert_eq!(
            n.record("tasks", &named_id("doomed")).await,
            None,
            "doomed on {}",
            n.name()
        );
        assert_eq!(
            n.record("tasks", &named_id("contested")).await,
            None,
            "contested on {}",
            n.name()
        );
    }
}

async fn seed(n0: &NodeProc) {
    n0.put(
        "tasks",
        json!([
            { "id": named_id("shared"), "status": "pending", "retry_count": 0, "title": "shared task" },
            { "id": named_id("doomed"), "status": "queued", "title": "deleted while others edit it" },
            { "id": named_id("contested"), "status": "queued", "title": "deleted in phase 2" },
            { "id": named_id("gone"), "status": "queued", "title": "deleted by the transaction" },
        ]),
    )
    .await;
    n0.put(
        "agents",
        json!({ "id": named_id("agent-x"), "status": "idle", "tasks_completed": 0 }),
    )
    .await;
}

fn phase_one_increments() -> i64 {
    // Node i increments by i + 1, INCRS_PER_NODE times; the transaction adds 100.
    (1..=NODES as i64).sum::<i64>() * INCRS_PER_NODE + 100
}

/// Every node writes at once (one task per node, released together).
async fn phase_one(nodes: &Arc<Vec<NodeProc>>) {
    let barrier = Arc::new(tokio::sync::Barrier::new(NODES + 1));
    let mut tasks = Vec::new();
    for i in 0..NODES {
        let (nodes, barrier) = (nodes.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            burst(&nodes[i], i).await;
        }));
    }
    let watcher = {
        let (nodes, barrier) = (nodes.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            watch_txn_atomicity(&nodes[0]).await
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    let observations = watcher.await.unwrap();
    eprintln!("n0 was read {observations} times while the transaction spread; never half of it");
}

/// One node's share of phase 1; the writes of different kinds are interleaved.
async fn burst(node: &NodeProc, i: usize) {
    for k in 0..DISTINCT_PER_NODE {
        let id = named_id(&format!("n{i}-t{k}"));
        node.put(
            "tasks",
            json!({ "id": id, "status": "queued", "origin": node.name(), "k": k }),
        )
        .await;
        if k < STATUSES.len() {
            let status = STATUSES[(i + k) % STATUSES.len()];
            node.put(
                "tasks",
                json!({ "id": named_id("shared"), "status": status }),
            )
            .await;
        }
        if (k as i64) < INCRS_PER_NODE {
            node.incr("tasks", &named_id("shared"), "retry_count", i as i64 + 1)
                .await;
            node.incr("agents", &named_id("agent-x"), "tasks_completed", 1)
                .await;
        }
        match (i, k) {
            (1, 3) => {
                let (status, body) = node.delete("tasks", &named_id("doomed")).await;
                assert_eq!(status, StatusCode::OK, "delete doomed: {body}");
            }
            (3, _) => {
                // Racing the delete: accepted before it arrives here, refused (409) after.
                let update =
                    json!({ "id": named_id("doomed"), "title": format!("edit {k} by n3") });
                let (status, body) = node.post("/v1/tasks", &update).await;
                assert!(
                    status == StatusCode::OK || status == StatusCode::CONFLICT,
                    "update doomed: {status} {body}"
                );
            }
            (2, 4) => multi_record_txn(node).await,
            _ => {}
        }
    }
    node.put(
        "agents",
        json!({ "id": named_id(&format!("agent-{i}")), "status": "running" }),
    )
    .await;
}

async fn multi_record_txn(node: &NodeProc) {
    let mut ops: Vec<Value> = TXN_JOBS
        .iter()
        .map(|id| json!({ "op": "put", "collection": "jobs", "value": { "id": named_id(id), "status": "queued" } }))
        .collect();
    ops.push(json!({ "op": "incr", "collection": "tasks", "id": named_id("shared"), "field": "retry_count", "by": 100 }));
    ops.push(json!({ "op": "delete", "collection": "tasks", "id": named_id("gone") }));
    let (status, body) = node.txn(&Value::Array(ops)).await;
    assert_eq!(status, StatusCode::OK, "multi-record txn: {body}");
}

/// Reads n0's jobs until the transaction's three jobs are there; every read shows none or all.
async fn watch_txn_atomicity(n0: &NodeProc) -> usize {
    let mut reads = 0;
    common::poll_until("the transaction's jobs on n0", common::GUARD, || {
        reads += 1;
        async {
            let jobs = n0.query("jobs").await;
            let seen = TXN_JOBS
                .iter()
                .filter(|id| jobs.iter().any(|j| j["id"] == named_id(id)))
                .count();
            assert!(
                seen == 0 || seen == TXN_JOBS.len(),
                "half a transaction visible: {jobs:?}"
            );
            if seen == TXN_JOBS.len() {
                Ok(())
            } else {
                Err(format!("none yet; jobs: {jobs:?}"))
            }
        }
    })
    .await;
    reads
}

/// n0 and n2 write while n1 and n3 (their only links) are stopped: certainly concurrent.
async fn phase_two(nodes: &Arc<Vec<NodeProc>>) {
    let (n0, n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2], &nodes[3]);
    n1.signal("STOP");
    n3.signal("STOP");

    n0.put(
        "tasks",
        json!({ "id": named_id("shared"), "status": "running" }),
    )
    .await;
    n0.incr("tasks", &named_id("shared"), "retry_count", 7)
        .await;
    let (status, body) = n0.delete("tasks", &named_id("contested")).await;
    assert_eq!(status, StatusCode::OK, "delete contested: {body}");

    // n2 has seen none of it, and writes later by the wall clock.
    let before = n2.record("tasks", &named_id("shared")).await.unwrap();
    assert_ne!(
        before["status"], "running",
        "n2 is not cut off from n0: {before}"
    );
    n2.put(
        "tasks",
        json!({ "id": named_id("shared"), "status": "completed" }),
    )
    .await;
    n2.incr("tasks", &named_id("shared"), "retry_count", 11)
        .await;
    let (status, body) = n2
        .post(
            "/v1/tasks",
            &json!({ "id": named_id("contested"), "title": "edited after the delete" }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "n2 has not seen the delete, so it accepts: {body}"
    );

    n1.signal("CONT");
    n3.signal("CONT");
}

/// The row of the record named `name` (see `named_id`).
fn find<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    let id = named_id(name);
    rows.iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("{name} ({id}) missing from {rows:?}"))
}

fn check_final(snap: &common::Snapshot) {
    let tasks = &snap["tasks"];
    let shared = find(tasks, "shared");
    assert_eq!(
        shared["status"], "running",
        "priority: running beats a later completed: {shared}"
    );
    assert_eq!(
        shared["retry_count"],
        json!(phase_one_increments() + 7 + 11),
        "{shared}"
    );
    for gone in ["doomed", "contested", "gone"] {
        assert!(
            tasks.iter().all(|r| r["id"] != named_id(gone)),
            "{gone} was deleted: {tasks:?}"
        );
    }
    for i in 0..NODES {
        for k in 0..DISTINCT_PER_NODE {
            let row = find(tasks, &format!("n{i}-t{k}"));
            assert_eq!(row["k"], json!(k), "{row}");
        }
    }
    assert_eq!(tasks.len(), NODES * DISTINCT_PER_NODE + 1, "{tasks:?}");
    let jobs: Vec<&str> = snap["jobs"]
        .iter()
        .filter_map(|j| j["id"].as_str())
        .collect();
    let txn_jobs: Vec<String> = TXN_JOBS.iter().map(|j| named_id(j)).collect();
    assert_eq!(jobs, txn_jobs, "the transaction's jobs, and nothing else");
    let agents = &snap["agents"];
    let agent = find(agents, "agent-x");
    assert_eq!(
        agent["tasks_completed"],
        json!(NODES as i64 * INCRS_PER_NODE),
        "{agent}"
    );
    assert_eq!(agents.len(), NODES + 1, "{agents:?}");
}
