//! mDNS discovery on loopback: two nodes with no static peers find each other, a node of another
//! cluster is ignored, and a node that stops says goodbye. Each run uses a private mDNS port so
//! concurrent runs (and the host's own responder) are not heard.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

use meshlite_fixtures::ports::SharedUdpPort;
use meshlite_fixtures::wait::{check, wait_until};
use meshlite_mesh::discovery::{Discovery, DiscoveryConfig, LocalNode, PeerKey, PeerTable, Source};
use tokio_util::sync::CancellationToken;

/// Failure guard only: resolution normally takes well under a second.
const GUARD: Duration = Duration::from_secs(60);

fn node(id_byte: &str, cluster: &str, quic_port: u16) -> LocalNode {
    LocalNode {
        node_id: id_byte.repeat(16),
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

/// Waits until `pred` holds for `table` (polled: removals do not signal `changes`).
async fn wait_table(table: &PeerTable, what: &str, pred: impl Fn(&PeerTable) -> bool) {
    wait_until(what, GUARD, || {
        check(pred(table), format_args!("table: {:#?}", table.snapshot()))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_find_each_other_on_loopback() {
    // Held for the whole test: the responders share it, nobody else can take it.
    let mdns_port = SharedUdpPort::bind().unwrap();
    let port = mdns_port.port();
    let root = CancellationToken::new();
    let (a, b, other) = (
        node("a1", "c1", 7401),
        node("b2", "c1", 7402),
        node("c3", "c2", 7403),
    );
    let ra = start(&a, port, &root);
    let rb = start(&b, port, &root);
    let rc = start(&other, port, &root);

    let b_key = PeerKey::Node(b.node_id.parse().unwrap());
    let a_key = PeerKey::Node(a.node_id.parse().unwrap());
    wait_table(&ra.table, "a to see b", |t| t.get(&b_key).is_some()).await;
    wait_table(&rb.table, "b to see a", |t| t.get(&a_key).is_some()).await;

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
            !ids.contains(&other.node_id.parse().unwrap()),
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
    wait_table(&ra.table, "b's goodbye", |t| t.get(&b_key).is_none()).await;

    ra.discovery.shutdown(GUARD).await;
    rc.discovery.shutdown(GUARD).await;
}

/// Network namespaces joined by a veth pair, removed on drop (also when the test fails).
struct Netns {
    names: [String; 2],
}

impl Netns {
    const IFACE: [&'static str; 2] = ["mla", "mlb"];

    fn create() -> Self {
        let id = std::process::id();
        let names = [format!("mlite-a-{id}"), format!("mlite-b-{id}")];
        let ns = Self { names };
        let (va, vb) = ns.veths();
        ns.ip(&["netns", "add", &ns.names[0]]);
        ns.ip(&["netns", "add", &ns.names[1]]);
        ns.ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        for (i, (veth, addr)) in [(&va, "10.231.7.1/24"), (&vb, "10.231.7.2/24")]
            .into_iter()
            .enumerate()
        {
            ns.ip(&["link", "set", veth, "netns", &ns.names[i]]);
            ns.ip(&["-n", &ns.names[i], "addr", "add", addr, "dev", veth]);
            ns.ip(&["-n", &ns.names[i], "link", "set", veth, "up"]);
            ns.ip(&["-n", &ns.names[i], "link", "set", "lo", "up"]);
        }
        ns
    }

    fn veths(&self) -> (String, String) {
        let id = std::process::id();
        (
            format!("{}{id}", Self::IFACE[0]),
            format!("{}{id}", Self::IFACE[1]),
        )
    }

    fn ip(&self, args: &[&str]) {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for name in &self.names {
            // Deleting a namespace also deletes the veth end inside it (and so its peer).
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", name])
                .output();
        }
    }
}

const CHILD_ENV: &str = "MESHLITE_MDNS_NETNS_CHILD";

/// Child mode: `<own id byte>,<peer id byte>,<interface>`. Announces, waits for the peer,
/// prints `FOUND`, then keeps announcing until stdin closes.
async fn netns_child(spec: &str) {
    let parts: Vec<&str> = spec.split(',').collect();
    let (me, peer, iface) = (parts[0], parts[1], parts[2]);
    let local = node(me, "c1", 7400);
    let cfg = DiscoveryConfig {
        mdns_interfaces: vec![iface.into()],
        tailscale: false,
        ..Default::default()
    };
    let table = PeerTable::new(cfg.peer_expiry());
    let root = CancellationToken::new();
    let discovery = Discovery::start(&cfg, &local, &table, &root).unwrap();
    let peer_key = PeerKey::Node(peer.repeat(16).parse().unwrap());
    wait_table(&table, "the peer namespace's node", |t| {
        t.get(&peer_key).is_some()
    })
    .await;
    let row = table.get(&peer_key).unwrap();
    println!("FOUND {}", serde_json::to_string(&row.addresses).unwrap());
    let mut line = String::new();
    let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
    discovery.shutdown(GUARD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_find_each_other_across_network_namespaces() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return netns_child(&spec).await;
    }
    let ns = Netns::create();
    let (va, vb) = ns.veths();
    let exe = std::env::current_exe().unwrap();
    let spawn = |netns: &str, spec: String| {
        tokio::process::Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(&exe)
            .args([
                "--exact",
                "two_nodes_find_each_other_across_network_namespaces",
                "--nocapture",
            ])
            .env(CHILD_ENV, spec)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut children = [
        spawn(&ns.names[0], format!("a1,b2,{va}")),
        spawn(&ns.names[1], format!("b2,a1,{vb}")),
    ];
    let expected = ["10.231.7.2:7400", "10.231.7.1:7400"];
    let mut outputs = Vec::new();
    for (child, want) in children.iter_mut().zip(expected) {
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let found = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(addrs) = line.strip_prefix("FOUND ") {
                    return addrs.to_owned();
                }
            }
            panic!("child exited without finding its peer")
        };
        let addrs = tokio::time::timeout(GUARD, found)
            .await
            .expect("peer found in time");
        assert!(addrs.contains(want), "{addrs} lacks {want}");
        outputs.push(lines);
    }
    for (child, mut lines) in children.iter_mut().zip(outputs) {
        drop(child.stdin.take());
        // Drain the child's output so its test harness can finish writing.
        let drain = async { while lines.next_line().await.unwrap().is_some() {} };
        tokio::time::timeout(GUARD, drain).await.unwrap();
        let status = tokio::time::timeout(GUARD, child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "child failed: {status}");
    }
}
