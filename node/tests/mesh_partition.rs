//! A network partition between real daemons, built from Linux network namespaces (needs root):
//!
//! ```text
//!            bridge namespace: br0
//!        ┌───────────┼───────────┐          mesh links, 10.77.N.0/24 (QUIC)
//!      veth        veth        veth  ◄── cut: this end set down
//!   ┌───┴───┐   ┌───┴───┐   ┌───┴───┐
//!   │  n1   │   │  n2   │   │  n3   │        one namespace per `meshlite run`
//!   └───┬───┘   └───┬───┘   └───┬───┘
//!      veth        veth        veth         control links, a /30 each in 10.78.N.0/24 (HTTP)
//!        └───────────┴───────────┘
//!            the test (root namespace)
//! ```
//!
//! The control links let the test reach every node's HTTP API during the partition. n3 is cut off
//! by setting its bridge-side veth down; with short QUIC timers every daemon notices (its
//! connections time out) before the test writes on both sides: status edits (priority), counter
//! increments, and deletes racing updates. The link comes back up, the daemons redial on their
//! own, and all three converge within the failure guard; the measured time from heal to
//! convergence is printed. Names and the subnet number N are random per run; namespaces (and
//! with them every veth) are deleted on drop, also when the test fails.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::{Fleet, NodeConfig, NodeProc, converge_within, ip_command, poll_until};
use hyper::StatusCode;
use meshlite_fixtures::records::named_id;
use serde_json::{Value, json};

const NODES: usize = 3;
const QUIC_PORT: u16 = 6374;
const HTTP_PORT: u16 = 8100;
/// Failure guard for convergence after the heal (SYNC_INTERVAL_SECONDS = 1).
const HEAL_GUARD: Duration = Duration::from_secs(30);
const COLLECTIONS: &[&str] = &["tasks", "agents"];

/// The namespaces, bridge and veths of one test run.
struct Lab {
    tag: String,
    subnet: u8,
    bridge_ns: String,
    node_ns: Vec<String>,
}

impl Lab {
    fn create() -> Self {
        let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        let lab = Self {
            subnet: free_subnet(),
            bridge_ns: format!("mlp-{tag}-br"),
            node_ns: (0..NODES)
                .map(|i| format!("mlp-{tag}-n{}", i + 1))
                .collect(),
            tag,
        };
        lab.build();
        lab
    }

    fn build(&self) {
        let br = self.bridge_ns.as_str();
        ip(&["netns", "add", br]);
        ip(&["-n", br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", br, "link", "set", "br0", "up"]);
        for (i, ns) in self.node_ns.iter().enumerate() {
            let [mesh, bridge_side, control, root_side] = self.veths(i);
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            // Mesh link: node namespace <-> bridge.
            ip(&[
                "link",
                "add",
                &mesh,
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                &bridge_side,
                "netns",
                br,
            ]);
            ip(&["-n", br, "link", "set", &bridge_side, "master", "br0", "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", self.mesh_ip(i)),
                "dev",
                &mesh,
            ]);
            ip(&["-n", ns, "link", "set", &mesh, "up"]);
            // Control link: node namespace <-> root namespace (the test).
            ip(&[
                "link", "add", &control, "netns", ns, "type", "veth", "peer", "name", &root_side,
            ]);
            ip(&[
                "addr",
                "add",
                &format!("{}/30", self.control_ip(i, true)),
                "dev",
                &root_side,
            ]);
            ip(&["link", "set", &root_side, "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/30", self.control_ip(i, false)),
                "dev",
                &control,
            ]);
            ip(&["-n", ns, "link", "set", &control, "up"]);
        }
    }

    /// Interface names (at most 15 bytes): mesh end, its bridge end, control end, its root end.
    fn veths(&self, i: usize) -> [String; 4] {
        ["m", "b", "c", "r"].map(|kind| format!("ml{kind}{}{i}", self.tag))
    }

    fn mesh_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, i as u8 + 1)
    }

    /// Node `i`'s control /30: .4i+1 in the root namespace, .4i+2 in the node's.
    fn control_ip(&self, i: usize, root_side: bool) -> Ipv4Addr {
        let base = 4 * i as u8;
        Ipv4Addr::new(10, 78, self.subnet, base + if root_side { 1 } else { 2 })
    }

    fn set_mesh_link(&self, i: usize, state: &str) {
        let [_, bridge_side, _, _] = self.veths(i);
        ip(&["-n", &self.bridge_ns, "link", "set", &bridge_side, state]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..NODES {
            let [_, _, _, root_side] = self.veths(i);
            let _ = Command::new(ip_command())
                .args(["link", "del", &root_side])
                .output();
        }
        for ns in self.node_ns.iter().chain([&self.bridge_ns]) {
            // Deleting a namespace deletes the veth ends inside it, and so their peers.
            let _ = Command::new(ip_command())
                .args(["netns", "del", ns])
                .output();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new(ip_command())
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {} failed (these tests need root): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A random N such that 10.78.N.0/24 (the control links, in the root namespace) is unused here.
fn free_subnet() -> u8 {
    let out = Command::new(ip_command())
        .args(["-4", "addr"])
        .output()
        .expect("run ip");
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    loop {
        let n = rand::random_range(1..=254u8);
        if !used.contains(&format!("10.78.{n}.")) {
            return n;
        }
    }
}

fn node_config(fleet: &Fleet, lab: &Lab, i: usize) -> NodeConfig {
    let name = format!("n{}", i + 1);
    let mut cfg = NodeConfig::loopback(
        &name,
        fleet.root().join("nodes").join(&name),
        Some(fleet.issue(&name)),
    );
    cfg.netns = Some(lab.node_ns[i].clone());
    cfg.http = SocketAddr::from((lab.control_ip(i, false), HTTP_PORT));
    cfg.quic = SocketAddr::from((lab.mesh_ip(i), QUIC_PORT));
    cfg.static_peers = (0..NODES)
        .filter(|j| *j != i)
        .map(|j| format!("{}:{QUIC_PORT}", lab.mesh_ip(j)))
        .collect();
    // Short timers so the daemons notice the cut (and redial after the heal) within seconds.
    for (key, ms) in [
        ("keepalive_ms", 500),
        ("idle_timeout_ms", 3_000),
        ("connect_timeout_ms", 2_000),
    ] {
        cfg.transport.insert(key.into(), toml::Value::Integer(ms));
    }
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_by_a_partition_converges_after_the_heal() {
    let lab = Lab::create();
    let fleet = Fleet::new();
    let nodes =
        NodeProc::start_all((0..NODES).map(|i| node_config(&fleet, &lab, i)).collect()).await;
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    common::wait_full_mesh(&nodes).await;
    seed(n1).await;
    converge_within(&[n1, n2, n3], COLLECTIONS, HEAL_GUARD).await;

    lab.set_mesh_link(2, "down");
    // Every daemon sees the partition before anybody writes.
    common::wait_connected(n1, &[n2]).await;
    common::wait_connected(n2, &[n1]).await;
    common::wait_connected(n3, &[]).await;

    edit_both_sides(n1, n2, n3).await;
    // The cut holds: neither side sees the other's writes.
    assert_eq!(
        n3.record("tasks", &named_id("majority-0")).await,
        None,
        "n3 is not cut off"
    );
    assert_eq!(
        n1.record("tasks", &named_id("minority-0")).await,
        None,
        "n1 reached n3"
    );
    assert_eq!(
        n2.record("tasks", &named_id("minority-0")).await,
        None,
        "n2 reached n3"
    );

    lab.set_mesh_link(2, "up");
    let (snap, t) = converge_within(&[n1, n2, n3], COLLECTIONS, HEAL_GUARD).await;
    eprintln!(
        "after the heal, all {NODES} nodes converged in {t:?} (failure guard {HEAL_GUARD:?})"
    );
    check_merged(&snap);
    for n in [n1, n2, n3] {
        assert_eq!(
            n.record("tasks", &named_id("del-by-majority")).await,
            None,
            "on {}",
            n.name()
        );
        assert_eq!(
            n.record("tasks", &named_id("del-by-minority")).await,
            None,
            "on {}",
            n.name()
        );
    }
}

/// Links flapping: each node's mesh link in turn goes down for 0.3–4.5 s and comes back up
/// (`MESHLITE_FAULT_FLAPS` times, default 6) while every node keeps writing records and
/// increments over its control link. Afterwards all three converge, every acknowledged record is
/// there once, and the counter is exactly the sum of the acknowledged increments.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flapping_links_lose_no_write_and_converge() {
    let flaps: usize = std::env::var("MESHLITE_FAULT_FLAPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let lab = Lab::create();
    let fleet = Fleet::new();
    let nodes =
        NodeProc::start_all((0..NODES).map(|i| node_config(&fleet, &lab, i)).collect()).await;
    let all: Vec<&NodeProc> = nodes.iter().collect();
    nodes[0]
        .put(
            "agents",
            json!({ "id": named_id("flapper"), "status": "idle", "tasks_completed": 0 }),
        )
        .await;
    converge_within(&all, COLLECTIONS, HEAL_GUARD).await;
    let (mut records, mut increments) = (Vec::new(), 0);
    for flap in 0..flaps {
        let cut = flap % NODES;
        // Some flaps are shorter than the QUIC idle timeout (3 s: packets are lost and
        // retransmitted), some longer (connections time out and are redialed).
        let down = Duration::from_millis(rand::random_range(300..4_500));
        lab.set_mesh_link(cut, "down");
        for step in 0..6 {
            let writer = &nodes[(flap + step) % NODES];
            let name = format!("flap-{flap}-{step}");
            writer
                .put(
                    "tasks",
                    json!({ "id": named_id(&name), "status": "queued" }),
                )
                .await;
            records.push(named_id(&name));
            writer
                .incr("agents", &named_id("flapper"), "tasks_completed", 1)
                .await;
            increments += 1;
            tokio::time::sleep(down / 6).await;
        }
        lab.set_mesh_link(cut, "up");
        if flap + 1 < flaps {
            tokio::time::sleep(Duration::from_millis(rand::random_range(100..1_500))).await;
        }
    }
    let (snap, t) = converge_within(&all, COLLECTIONS, HEAL_GUARD).await;
    let tasks: Vec<&Value> = snap["tasks"].iter().collect();
    for id in &records {
        let copies = tasks.iter().filter(|r| r["id"] == id.as_str()).count();
        assert_eq!(copies, 1, "record {id}: {copies} copies");
    }
    let flapper = find(&snap["agents"], "flapper");
    assert_eq!(flapper["tasks_completed"], increments, "{flapper}");
    eprintln!(
        "{flaps} link flaps, {} records and {increments} increments acknowledged: converged {t:?} \
         after the last flap",
        records.len()
    );
}

async fn seed(n1: &NodeProc) {
    n1.put(
        "tasks",
        json!([
            { "id": named_id("job"), "status": "queued", "retry_count": 0, "notes": "seeded" },
            { "id": named_id("del-by-majority"), "status": "queued" },
            { "id": named_id("del-by-minority"), "status": "queued" },
        ]),
    )
    .await;
    n1.put(
        "agents",
        json!({ "id": named_id("worker"), "status": "idle", "tasks_completed": 0 }),
    )
    .await;
}

/// The minority (n3) writes first by the wall clock, so last-writer-wins would lose its
/// `running`; the majority (n1, n2) writes after it.
async fn edit_both_sides(n1: &NodeProc, n2: &NodeProc, n3: &NodeProc) {
    n3.put(
        "tasks",
        json!({ "id": named_id("job"), "status": "running" }),
    )
    .await;
    for _ in 0..2 {
        n3.incr("tasks", &named_id("job"), "retry_count", 5).await;
    }
    n3.incr("agents", &named_id("worker"), "tasks_completed", 1)
        .await;
    let (status, body) = n3.delete("tasks", &named_id("del-by-minority")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    n3.put(
        "tasks",
        json!({ "id": named_id("del-by-majority"), "notes": "edited on n3" }),
    )
    .await;
    for k in 0..5 {
        n3.put(
            "tasks",
            json!({ "id": named_id(&format!("minority-{k}")), "status": "queued" }),
        )
        .await;
    }

    n1.put(
        "tasks",
        json!({ "id": named_id("job"), "status": "completed" }),
    )
    .await;
    for _ in 0..3 {
        n2.incr("tasks", &named_id("job"), "retry_count", 2).await;
    }
    n1.incr("agents", &named_id("worker"), "tasks_completed", 10)
        .await;
    n2.put(
        "agents",
        json!({ "id": named_id("worker"), "status": "busy" }),
    )
    .await;
    let (status, body) = n1.delete("tasks", &named_id("del-by-majority")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    n2.put(
        "tasks",
        json!({ "id": named_id("del-by-minority"), "status": "failed" }),
    )
    .await;
    for k in 0..5 {
        let writer = if k % 2 == 0 { n1 } else { n2 };
        writer
            .put(
                "tasks",
                json!({ "id": named_id(&format!("majority-{k}")), "status": "queued" }),
            )
            .await;
    }
    // The majority still syncs among itself while n3 is away.
    poll_until(
        "n1 and n2 to agree during the partition",
        HEAL_GUARD,
        || async {
            let (a, b) = (n1.query("tasks").await, n2.query("tasks").await);
            if a == b {
                Ok(())
            } else {
                Err(common::diff(
                    &[n1, n2],
                    &[[("tasks".into(), a)].into(), [("tasks".into(), b)].into()],
                ))
            }
        },
    )
    .await;
}

/// The row of the record named `name` (see `named_id`).
fn find<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    let id = named_id(name);
    rows.iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("{name} ({id}) missing: {rows:?}"))
}

fn check_merged(snap: &common::Snapshot) {
    let tasks = &snap["tasks"];
    let job = find(tasks, "job");
    assert_eq!(
        job["status"], "running",
        "priority beats the majority's later `completed`: {job}"
    );
    assert_eq!(
        job["retry_count"],
        5 * 2 + 2 * 3,
        "increments from both sides add up: {job}"
    );
    assert_eq!(job["notes"], "seeded", "{job}");
    for gone in ["del-by-majority", "del-by-minority"] {
        assert!(
            tasks.iter().all(|r| r["id"] != named_id(gone)),
            "{gone} edited on the other side still deleted: {tasks:?}"
        );
    }
    for k in 0..5 {
        find(tasks, &format!("majority-{k}"));
        find(tasks, &format!("minority-{k}"));
    }
    assert_eq!(tasks.len(), 11, "{tasks:?}");
    let worker = find(&snap["agents"], "worker");
    assert_eq!(worker["tasks_completed"], 11, "{worker}");
    // agents.status order: running, busy, error, idle, offline.
    assert_eq!(worker["status"], "busy", "{worker}");
}
