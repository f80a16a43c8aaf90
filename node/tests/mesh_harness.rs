//! The `mesh_*` harness itself: how daemons get their ports (see "Ports" in `common`).
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use common::{Fleet, NodeProc, wait_connected};

/// Nodes started without reservations report the ports they bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daemons_pick_their_ports_and_report_them() {
    let fleet = Fleet::new();
    let cfg = fleet.node("a");
    assert_eq!((cfg.http.port(), cfg.quic.port()), (0, 0));
    let a = NodeProc::start(cfg).await;
    assert_ne!(a.cfg.quic.port(), 0);
    assert_eq!(Some(a.cfg.quic), a.ready.quic);
    assert_eq!(a.cfg.http, a.ready.http);
}

/// A reserved port that another process binds before the daemon does makes `start_all` start
/// the batch again on fresh ports, with the static peers naming the old ones rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_taken_reserved_port_moves_the_batch_to_fresh_ports() {
    let fleet = Fleet::new();
    let (mut a, mut b) = (fleet.linked_node("a"), fleet.linked_node("b"));
    let taken = std::net::UdpSocket::bind(a.quic).unwrap();
    a.static_peers = vec![b.peer_addr()];
    b.static_peers = vec![a.peer_addr()];
    let nodes = NodeProc::start_all(vec![a, b]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    assert_ne!(a.cfg.quic, taken.local_addr().unwrap());
    assert_eq!(a.cfg.static_peers, [b.cfg.peer_addr()]);
    assert_eq!(b.cfg.static_peers, [a.cfg.peer_addr()]);
    wait_connected(a, &[b]).await;
    wait_connected(b, &[a]).await;
}
