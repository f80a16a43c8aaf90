//! Six `meshlite run` processes on loopback with `sync.direct_push_max_peers = 2`: every node
//! lists every other in `discovery.static_peers` (addresses only, so node ids are learned by
//! probing), so each is above the threshold and runs overlay mode with an active view of 2.
//! A write on one node reaches all; after one node is killed (SIGKILL: no goodbye), the rest
//! keep an active neighbor and a write still reaches the five others. `/metrics` shows the mode
//! and the view sizes, and that the eager pushes went through the push applier.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use common::{Fleet, GUARD, NodeProc, all_listed, poll_until};
use meshlite_fixtures::records::named_id;
use serde_json::json;

const NODES: usize = 6;
const ACTIVE: f64 = 2.0;

async fn wait_all_have(nodes: &[&NodeProc], id: &str) {
    let key = named_id(id);
    poll_until(&format!("{id} on every node"), GUARD, || async {
        for n in nodes {
            if n.record("tasks", &key).await.is_none() {
                return Err(format!("missing on {}", n.name()));
            }
        }
        Ok(())
    })
    .await;
}

async fn wait_overlay(nodes: &[&NodeProc]) {
    poll_until(
        "every node in overlay mode with a neighbor",
        GUARD,
        || async {
            for n in nodes {
                let mode = n.metric("meshlite_overlay_mode").await;
                let active = n.metric("meshlite_overlay_active_view").await;
                if mode != 1.0 || active < 1.0 {
                    return Err(format!("{}: mode {mode}, active view {active}", n.name()));
                }
                assert!(active <= ACTIVE, "{}: active view {active}", n.name());
            }
            Ok(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn six_daemons_above_the_threshold_run_the_overlay_and_survive_a_loss() {
    let fleet = Fleet::new();
    let names: Vec<String> = (0..NODES).map(|i| format!("n{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut nodes = all_listed(&fleet, &names, |_, cfg| {
        cfg.sync.insert("direct_push_max_peers".into(), 2.into());
        cfg.sync.insert("overlay_active".into(), 2.into());
        cfg.sync.insert("overlay_passive".into(), 8.into());
        // Every daemon dials from 127.0.0.1: the per-source handshake limit is for real fleets.
        cfg.transport
            .insert("handshake_burst_per_ip".into(), 4096.into());
        cfg.transport
            .insert("handshake_rate_per_ip".into(), 4096.into());
        // A killed peer's connections are noticed in 3 s, not the default 30 s.
        cfg.transport.insert("keepalive_ms".into(), 1000.into());
        cfg.transport.insert("idle_timeout_ms".into(), 3000.into());
    })
    .await;
    let all: Vec<&NodeProc> = nodes.iter().collect();
    wait_overlay(&all).await;
    nodes[0]
        .put("tasks", json!({"id": named_id("from-n0")}))
        .await;
    wait_all_have(&all, "from-n0").await;

    let mut victim = nodes.remove(3);
    let victim_id = victim.node_id().to_owned();
    victim.kill().await;
    let rest: Vec<&NodeProc> = nodes.iter().collect();
    poll_until("nobody connected to the killed node", GUARD, || async {
        for n in &rest {
            if n.connected().await.contains(&victim_id) {
                return Err(format!("{} still connected", n.name()));
            }
        }
        Ok(())
    })
    .await;
    wait_overlay(&rest).await;
    nodes[1]
        .put("tasks", json!({"id": named_id("after-loss")}))
        .await;
    wait_all_have(&rest, "after-loss").await;
    let mut eager = 0.0;
    for n in &rest {
        eager += n.metric("meshlite_tree_eager_pushes_total").await;
        let overlay = n.metric("meshlite_overlay_messages_total").await;
        assert!(overlay > 0.0, "{}: no overlay messages", n.name());
    }
    assert!(eager >= 1.0, "the writers pushed along their eager links");
    let mut applied = 0.0;
    for n in &rest {
        let batches = n.metric("meshlite_push_apply_batches_total").await;
        let reads = n.metric("meshlite_push_apply_reads_total").await;
        assert!(
            batches <= reads,
            "{}: {batches} batches of {reads} reads",
            n.name()
        );
        applied += n.metric("meshlite_push_apply_txns_total").await;
    }
    assert!(
        applied >= 1.0,
        "the eager pushes were applied by the push applier"
    );
}
