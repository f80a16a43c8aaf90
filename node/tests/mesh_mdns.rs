//! mDNS discovery between daemons: two `meshlite run` processes with no static peers, mDNS on
//! the loopback interface (on a private mDNS port, so concurrent runs and the host's responder
//! are not heard), find each other, connect, and converge on writes made on both.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use common::{Fleet, Mdns, NodeProc, converge, poll_until, wait_connected};
use meshlite_fixtures::ports::SharedUdpPort;
use meshlite_fixtures::records::named_id;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_daemons_without_static_peers_find_each_other_by_mdns_and_converge() {
    let fleet = Fleet::new();
    // Held for the whole test: both daemons share it, nobody else can take it.
    let mdns_port = SharedUdpPort::bind().unwrap();
    let mdns = Mdns {
        interfaces: vec!["lo".into()],
        port: mdns_port.port(),
    };
    let cfgs: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let mut cfg = fleet.node(name);
            cfg.mdns = Some(mdns.clone());
            assert!(cfg.static_peers.is_empty());
            cfg
        })
        .collect();
    let nodes = NodeProc::start_all(cfgs).await;
    let (a, b) = (&nodes[0], &nodes[1]);

    a.put(
        "tasks",
        json!({ "id": named_id("written-on-a"), "status": "queued", "retry_count": 1 }),
    )
    .await;
    b.put(
        "tasks",
        json!({ "id": named_id("written-on-b"), "status": "running" }),
    )
    .await;
    wait_connected(a, &[b]).await;
    wait_connected(b, &[a]).await;
    a.incr("tasks", &named_id("written-on-a"), "retry_count", 2)
        .await;
    let (snap, t) = converge(&[a, b], &["tasks"]).await;
    eprintln!("mDNS peers converged {t:?} after the last write");
    let ids: Vec<&Value> = snap["tasks"].iter().map(|r| &r["id"]).collect();
    let want = [
        json!(named_id("written-on-a")),
        json!(named_id("written-on-b")),
    ];
    assert_eq!(ids, [&want[0], &want[1]]);
    assert_eq!(snap["tasks"][0]["retry_count"], 3);

    // Each learns the other from mDNS (one side may have been dialed by the other first, so
    // wait for its own browse too): one row, under the peer's node id, at its QUIC address.
    for (me, other) in [(a, b), (b, a)] {
        let what = format!("{} to discover {} by mDNS", me.name(), other.name());
        let row = poll_until(&what, common::GUARD, || async {
            let peers = me.peers().await;
            let rows = peers["table"].as_array().cloned().unwrap_or_default();
            let by_mdns = |r: &Value| {
                r["sources"]
                    .as_array()
                    .is_some_and(|s| s.contains(&json!("mdns")))
            };
            match rows.as_slice() {
                [row] if by_mdns(row) => Ok(row.clone()),
                _ => Err(format!("{peers:#}")),
            }
        })
        .await;
        assert_eq!(row["node_id"], other.node_id(), "{row:#}");
        // `quic` joins once a connection exists; `static` never (none configured).
        let sources = row["sources"].as_array().unwrap();
        assert!(
            sources.iter().all(|s| *s == "mdns" || *s == "quic"),
            "{row:#}"
        );
        let addr = json!(other.cfg.peer_addr());
        assert!(
            row["addresses"].as_array().unwrap().contains(&addr),
            "{row:#}"
        );
    }
}
