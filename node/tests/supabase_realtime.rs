//! The real `@supabase/supabase-js` Realtime client against `/realtime/v1/websocket` on a
//! two-node mesh of `meshlite run` processes (issue 9, "Realtime"): a `postgres_changes`
//! subscription with a filter on node A receives INSERT, UPDATE and DELETE of matching rows
//! written on A and on B, and nothing of the rows the filter excludes; a second socket speaks
//! the `vsn=1.0.0` serializer; heartbeats are answered; broadcast, presence and unknown tables
//! are refused. The script `tests/js/realtime.mjs` asserts every event itself.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;
mod js_clients;

use std::time::Duration;

use common::{Fleet, NodeProc, wait_connected};

/// Bounds the script (a few seconds: each step waits for one event).
const SCRIPT_GUARD: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_realtime_on_a_two_node_mesh() {
    let fleet = Fleet::new();
    let mut a = fleet.linked_node("a");
    let mut b = fleet.linked_node("b");
    a.static_peers = vec![b.peer_addr()];
    b.static_peers = vec![a.peer_addr()];
    let nodes = NodeProc::start_all(vec![a, b]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    wait_connected(a, &[b]).await;
    wait_connected(b, &[a]).await;

    let urls = [a, b].map(|n| format!("http://{}", n.http())).to_vec();
    let logs = || format!("{}\n{}", a.log_tail(40), b.log_tail(40));
    let summary = js_clients::run_script("realtime.mjs", &urls, SCRIPT_GUARD, logs).await;
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["steps"].as_array().unwrap().len(), 11, "{summary}");
    assert_eq!(summary["received"], 5, "{summary}");
}
