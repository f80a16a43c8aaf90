//! mDNS discovery on loopback: two nodes with no static peers find each other, a node of another
//! cluster is ignored, and a node that stops says goodbye. Each run uses a private mDNS port so
//! concurrent runs (and the host's own responder) are not heard.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::net::UdpSocket;
use std::time::Duration;

use meshlite_node::discovery::{Discovery, DiscoveryConfig, LocalNode, PeerKey, PeerTable, Source};
use tokio_util::sync::CancellationToken;

/// Failure guard only: resolution normally takes well under a second.
const GUARD: Duration = Duration::from_secs(60);

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn node(id_byte: &str, cluster: &str, quic_port: u16) -> LocalNode {
    LocalNode {
        node_id: id_byte.repeat(32),
        name: format!("node-{id_byte}"),
        cluster: cluster.into(),
        quic_port,
        version: "0.1.0-test".into(),
        addresses: vec![],
        collections: vec![],
        capabilities: vec![],
    }
}

struct Running {
    table: PeerTable,
    discovery: Discovery,
}

fn start(local: &LocalNode, mdns_port: u16, root: &CancellationToken) -> Running {
    let cfg = DiscoveryConfig {
        mdns: true,
        mdns_interfaces: vec!["lo".into()],
        mdns_port,
        tailscale: false,
        ..Default::default()
    };
    let table = PeerTable::new(cfg.peer_expiry());
    let discovery = Discovery::start(&cfg, local, &table, root).unwrap();
    Running { table, discovery }
}

async fn wait_until(table: &PeerTable, what: &str, pred: impl Fn(&PeerTable) -> bool) {
    let mut changes = table.changes();
    let poll = async {
        loop {
            if pred(table) {
                return;
            }
            // Removals do not signal `changes`; poll as well.
            let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
        }
    };
    if tokio::time::timeout(GUARD, poll).await.is_err() {
        panic!(
            "timed out waiting for {what}; table: {:#?}",
            table.snapshot()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_find_each_other_on_loopback() {
    let port = free_udp_port();
    let root = CancellationToken::new();
    let (a, b, other) = (
        node("a1", "c1", 7401),
        node("b2", "c1", 7402),
        node("c3", "c2", 7403),
    );
    let ra = start(&a, port, &root);
    let rb = start(&b, port, &root);
    let rc = start(&other, port, &root);

    let b_key = PeerKey::Node(b.node_id.clone());
    let a_key = PeerKey::Node(a.node_id.clone());
    wait_until(&ra.table, "a to see b", |t| t.get(&b_key).is_some()).await;
    wait_until(&rb.table, "b to see a", |t| t.get(&a_key).is_some()).await;

    let row = ra.table.get(&b_key).unwrap();
    assert_eq!(row.sources, [Source::Mdns]);
    assert_eq!(row.name.as_deref(), Some("node-b2"));
    assert_eq!(row.version.as_deref(), Some("0.1.0-test"));
    assert!(
        !row.addresses.is_empty() && row.addresses.iter().all(|s| s.port() == 7402),
        "{row:?}"
    );
    for r in [&ra, &rb] {
        let ids: Vec<_> = r
            .table
            .snapshot()
            .into_iter()
            .filter_map(|r| r.node_id)
            .collect();
        assert!(
            !ids.contains(&other.node_id),
            "foreign cluster leaked: {ids:?}"
        );
        assert_eq!(
            ids.len(),
            1,
            "only the one same-cluster peer, never ourselves: {ids:?}"
        );
    }

    // B stops: its goodbye withdraws it from A's table.
    let report = rb.discovery.shutdown(GUARD).await;
    assert_eq!((report.crashed, report.aborted), (0, 0));
    wait_until(&ra.table, "b's goodbye", |t| t.get(&b_key).is_none()).await;

    ra.discovery.shutdown(GUARD).await;
    rc.discovery.shutdown(GUARD).await;
}
