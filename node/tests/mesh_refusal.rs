//! Who may not join, and what may not disturb: `meshlite run` processes of a fleet next to a node
//! of another fleet (a foreign CA) and a node whose certificate comes from the right CA but names
//! another cluster, all listing each other as static peers. The outsiders' writes never reach
//! the fleet (checked only after the fleet nodes completed several anti-entropy rounds among
//! themselves), the fleet's never reach them, and the fleet nodes log each refusal and show it in
//! `/peers`. Then garbage: random datagrams and, from an admitted peer, garbage streams sent to a
//! node's QUIC port leave it healthy and syncing.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;
mod net_common;

use std::net::UdpSocket;

use common::{Fleet, NodeConfig, NodeProc, converge, poll_until, wait_connected, wait_sync_rounds};
use hyper::StatusCode;
use meshlite_fixtures::records::named_id;
use meshlite_mesh::fleet::{self, ClusterId};
use rand::RngCore as _;
use serde_json::{Value, json};

const COLLECTIONS: &[&str] = &["tasks"];

/// Polls `node`'s log until it contains `needle`.
async fn wait_logged(node: &NodeProc, needle: &str) {
    poll_until(
        &format!("{} to log {needle:?}", node.name()),
        common::GUARD,
        || async {
            if node.log().contains(needle) {
                Ok(())
            } else {
                Err(node.log_tail(20))
            }
        },
    )
    .await;
}

/// The `/peers` table row listing `addr`, if any.
fn table_row<'a>(peers: &'a Value, addr: &str) -> Option<&'a Value> {
    peers["table"].as_array()?.iter().find(|row| {
        row["addresses"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == addr))
    })
}

fn ids(rows: &[Value]) -> Vec<&str> {
    rows.iter().filter_map(|r| r["id"].as_str()).collect()
}

/// The ids of the records named `names` (see `named_id`), in the same order.
fn named(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| named_id(n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_foreign_ca_and_another_cluster_are_refused_and_never_exchange_data() {
    let fleet = Fleet::new();
    let foreign = Fleet::new();
    let other_cluster = ClusterId::random();
    assert_ne!(other_cluster, fleet.cluster_id);

    let mut f1 = fleet.linked_node("f1");
    let mut f2 = fleet.linked_node("f2");
    let mut x = foreign.linked_node("x");
    let y_bundle = fleet.issue_other_cluster("y", other_cluster);
    let mut y = NodeConfig::loopback("y", fleet.root().join("nodes").join("y"), Some(y_bundle));
    y.reserve_quic();
    // Everybody lists everybody: refusals are exercised in both directions.
    let addrs = [f1.peer_addr(), f2.peer_addr(), x.peer_addr(), y.peer_addr()];
    for (i, cfg) in [&mut f1, &mut f2, &mut x, &mut y].into_iter().enumerate() {
        cfg.static_peers = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| a.clone())
            .collect();
    }
    let nodes = NodeProc::start_all(vec![f1, f2, x, y]).await;
    let (f1, f2, x, y) = (&nodes[0], &nodes[1], &nodes[2], &nodes[3]);
    wait_connected(f1, &[f2]).await;
    wait_connected(f2, &[f1]).await;

    x.put(
        "tasks",
        json!({ "id": named_id("from-foreign-ca"), "status": "running" }),
    )
    .await;
    y.put(
        "tasks",
        json!({ "id": named_id("from-2nd-cluster"), "status": "running" }),
    )
    .await;
    f1.put(
        "tasks",
        json!({ "id": named_id("from-f1"), "status": "queued" }),
    )
    .await;
    f2.put(
        "tasks",
        json!({ "id": named_id("from-f2"), "status": "queued" }),
    )
    .await;
    let (snap, _) = converge(&[f1, f2], COLLECTIONS).await;
    // Give the outsiders every chance: the fleet completes several rounds after their writes.
    wait_sync_rounds(&[f1, f2], 3.0).await;

    let wrong_cluster = format!(
        "peer is in cluster {other_cluster}, we are in {}",
        fleet.cluster_id
    );
    for f in [f1, f2] {
        wait_logged(f, "refused peer at TLS handshake").await;
        wait_logged(f, "certificate rejected: UnknownIssuer").await;
        wait_logged(f, &wrong_cluster).await;
        assert_eq!(
            ids(&f.query("tasks").await),
            named(&["from-f1", "from-f2"]),
            "on {}",
            f.name()
        );
        assert_eq!(f.record("tasks", &named_id("from-foreign-ca")).await, None);
        assert_eq!(f.record("tasks", &named_id("from-2nd-cluster")).await, None);
    }
    assert_eq!(ids(&snap["tasks"]), named(&["from-f1", "from-f2"]));
    assert_eq!(ids(&x.query("tasks").await), named(&["from-foreign-ca"]));
    assert_eq!(ids(&y.query("tasks").await), named(&["from-2nd-cluster"]));
    for outsider in [x, y] {
        assert!(
            outsider.connected().await.is_empty(),
            "{} got a connection",
            outsider.name()
        );
        assert_eq!(f1.connected().await, vec![f2.node_id().to_owned()]);
    }

    // f1 dials both outsiders (static peers): its peer table says why each failed.
    let peers = f1.peers().await;
    for outsider in [x, y] {
        let addr = outsider.cfg.peer_addr();
        let row =
            table_row(&peers, &addr).unwrap_or_else(|| panic!("no row for {addr}: {peers:#}"));
        assert!(
            row["consecutive_errors"].as_u64().unwrap_or(0) >= 1,
            "{row:#}"
        );
        assert!(row["last_error"].is_string(), "{row:#}");
        assert!(
            row["node_id"].is_null(),
            "an outsider was identified: {row:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_on_the_quic_port_leaves_the_node_healthy_and_syncing() {
    let fleet = Fleet::new();
    let mut a = fleet.linked_node("a");
    let mut b = fleet.linked_node("b");
    a.static_peers = vec![b.peer_addr()];
    b.static_peers = vec![a.peer_addr()];
    let nodes = NodeProc::start_all(vec![a, b]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    wait_connected(a, &[b]).await;

    let sent = send_garbage_datagrams(a.cfg.quic);
    garbage_streams(&fleet, a).await;

    // Writes on both sides still spread, and the node reports itself healthy.
    b.put(
        "tasks",
        json!({ "id": named_id("after-garbage-b"), "status": "queued" }),
    )
    .await;
    a.put(
        "tasks",
        json!({ "id": named_id("after-garbage-a"), "status": "queued" }),
    )
    .await;
    let (snap, t) = converge(&[a, b], COLLECTIONS).await;
    eprintln!("{sent} garbage datagrams and three garbage streams later, converged in {t:?}");
    assert_eq!(
        ids(&snap["tasks"]),
        named(&["after-garbage-a", "after-garbage-b"])
    );
    wait_sync_rounds(&[a, b], 2.0).await;
    let (status, health) = a.healthz().await;
    assert_eq!(
        (status, &health["status"]),
        (StatusCode::OK, &json!("ok")),
        "{health}"
    );
    assert_eq!(a.connected().await, vec![b.node_id().to_owned()]);
    assert!(
        a.log().contains("meshlite running") && !a.log().contains("panicked"),
        "{}",
        a.log_tail(30)
    );
}

/// Random datagrams of many sizes, some shaped like QUIC long-header (Initial) packets and some
/// like short-header packets; returns how many were sent.
fn send_garbage_datagrams(to: std::net::SocketAddr) -> usize {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = rand::rng();
    let mut sent = 0;
    for len in [0usize, 1, 7, 21, 40, 300, 1200, 1252, 1500, 9000] {
        for i in 0..60 {
            let mut junk = vec![0u8; len];
            rng.fill_bytes(&mut junk);
            if let Some(first) = junk.first_mut() {
                *first = match i % 3 {
                    0 => *first | 0xc0,          // long header
                    1 => (*first & 0x3f) | 0x40, // short header
                    _ => *first,
                };
            }
            socket.send_to(&junk, to).unwrap();
            sent += 1;
        }
    }
    sent
}

/// An admitted fleet member sends garbage on a sync stream, a push stream and an oversized
/// frame header: each stream is closed, the daemon counts the errors against that peer.
async fn garbage_streams(fleet: &Fleet, node: &NodeProc) {
    let identity = fleet::load_node_identity(&fleet.issue("mallory")).unwrap();
    let client = net_common::RawClient::new(identity).unwrap();
    let conn = client.connect(node.cfg.quic).await.unwrap();

    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut junk = vec![0u8; 600];
    rand::rng().fill_bytes(&mut junk);
    let mut frame = 600u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&junk);
    send.write_all(&frame).await.unwrap();
    let _ = net_common::guard(recv.read_to_end(1 << 20)).await.unwrap();

    let mut push = conn.open_uni().await.unwrap();
    push.write_all(&[0, 0, 0, 64]).await.unwrap();
    push.write_all(&[0xff; 64]).await.unwrap();
    let _ = net_common::guard(push.stopped()).await.unwrap();

    let mut huge = conn.open_uni().await.unwrap();
    huge.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let _ = net_common::guard(huge.stopped()).await.unwrap();

    poll_until(
        "the node to count mallory's bad streams",
        common::GUARD,
        || async {
            let peers = node.peers().await;
            let mallory = peers["connections"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["node_name"] == "mallory")
                .cloned();
            match mallory {
                Some(m) if m["errors"].as_u64().unwrap_or(0) >= 2 => Ok(()),
                other => Err(format!("mallory: {other:?}")),
            }
        },
    )
    .await;
    conn.close(0u32.into(), b"done");
    poll_until("mallory's connection to go", common::GUARD, || async {
        let peers = node.peers().await;
        let names: Vec<Value> = peers["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["node_name"].clone())
            .collect();
        if names.contains(&json!("mallory")) {
            Err(format!("{names:?}"))
        } else {
            Ok(())
        }
    })
    .await;
}
