//! Overlay-mode dissemination on real QUIC sockets on loopback: in-process fleet nodes (a real
//! store, the transport, and the mode supervisor as the daemon runs them) with the
//! `direct_push_max_peers` threshold lowered so that eight nodes are a "large" fleet.
//!
//! - above the threshold, each node keeps at most its active view of connections and a write
//!   on one node reaches every node by push (anti-entropy is slowed down so it cannot be what
//!   delivered it);
//! - a node that goes away is replaced from the passive view, and writes still reach everyone;
//! - a malformed or unknown-revision control frame is answered with an `Error` frame and the
//!   stream keeps working;
//! - below the threshold nothing changes: full mesh, one-hop push, no control messages.

mod net_common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use meshlite_core::dissemination::{DisseminationConfig, Disseminator};
use meshlite_core::epidemic::{EpidemicConfig, EpidemicMessage};
use meshlite_core::overlay::OverlayConfig;
use meshlite_core::plumtree::TreeMessage;
use meshlite_core::protocol::control::{CONTROL_VERSION, control_frame};
use meshlite_core::protocol::{ErrorCode, Frame, FrameDecoder, encode_frame};
use meshlite_core::store::WriteOp;
use meshlite_mesh::dialer::Dialer;
use meshlite_mesh::discovery::table::{PeerTable, Sighting, Source};
use meshlite_mesh::epidemic::EpidemicDriver;
use meshlite_mesh::epidemic::stats::EpidemicStats;
use meshlite_mesh::gossip::Gossip;
use meshlite_mesh::mode::Supervisor;
use meshlite_mesh::net::control::{ControlMessage, OverlayPeer};
use meshlite_mesh::net::{NetEvent, TransportConfig};
use net_common::{Fleet, GUARD, RawClient, TestNode, TestResult, guard, init_tracing};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Active view of the test fleet: below the fleet size, so the bound is visible.
const ACTIVE: usize = 3;

/// One fleet member: its transport and store, its discovery table and its counters.
struct Member {
    node: TestNode,
    stats: Arc<EpidemicStats>,
    cancel: CancellationToken,
}

fn transport() -> TransportConfig {
    TransportConfig {
        // Every node dials from 127.0.0.1: the per-source handshake limit is for real fleets.
        handshake_burst_per_ip: 4096,
        handshake_rate_per_ip: 4096,
        ..TransportConfig::loopback()
    }
}

fn epidemic_config(anti_entropy: Duration) -> EpidemicConfig {
    EpidemicConfig {
        overlay: OverlayConfig {
            active_capacity: ACTIVE,
            passive_capacity: 10,
            shuffle_interval: Duration::from_secs(2),
            ..OverlayConfig::default()
        },
        tree: Default::default(),
        anti_entropy: DisseminationConfig::with_interval(anti_entropy),
    }
}

/// Starts `n` members that know each other (as discovery would report them) with the given
/// threshold; anti-entropy every `anti_entropy`.
async fn fleet(
    fleet: &Fleet,
    n: usize,
    threshold: usize,
    anti_entropy: Duration,
) -> anyhow::Result<Vec<Member>> {
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(TestNode::start_with(
            fleet.node(&format!("n{i}"))?,
            transport(),
        )?);
    }
    let sightings: Vec<Sighting> = nodes
        .iter()
        .map(|m| Sighting::node(Source::Static, m.net.node_id()).with_addresses([m.addr()]))
        .collect();
    let mut members = Vec::new();
    for (i, node) in nodes.into_iter().enumerate() {
        let table = PeerTable::new(Duration::from_secs(3600));
        for (j, s) in sightings.iter().enumerate() {
            if i != j {
                table.observe(s.clone());
            }
        }
        members.push(supervise(node, table, threshold, anti_entropy, i as u64)?);
    }
    Ok(members)
}

/// Runs the mode supervisor over `node`, as the daemon does.
fn supervise(
    node: TestNode,
    table: PeerTable,
    threshold: usize,
    anti_entropy: Duration,
    seed: u64,
) -> anyhow::Result<Member> {
    let cancel = CancellationToken::new();
    let direct = cancel.child_token();
    let dissemination = DisseminationConfig {
        direct_push_max_peers: threshold,
        ..DisseminationConfig::with_interval(anti_entropy)
    };
    let stats = Arc::new(EpidemicStats::default());
    let overlay = EpidemicDriver::new(
        node.store.clone(),
        node.net.clone(),
        table.clone(),
        epidemic_config(anti_entropy),
        seed,
        stats.clone(),
        cancel.child_token(),
    )?;
    let supervisor = Supervisor {
        gossip: Gossip {
            store: node.store.clone(),
            net: node.net.clone(),
            table: table.clone(),
            policy: Disseminator::new(dissemination, seed, Instant::now())?,
            stats: Default::default(),
            cancel: direct.clone(),
        },
        dialer: Dialer {
            net: node.net.clone(),
            table: table.clone(),
            cancel: direct.clone(),
        },
        direct,
        overlay,
        table: table.clone(),
        me: node.net.node_id(),
        threshold,
        cancel: cancel.clone(),
    };
    tokio::spawn(supervisor.run());
    Ok(Member {
        node,
        stats,
        cancel,
    })
}

impl Member {
    async fn stop(self) {
        self.cancel.cancel();
        self.node.stop().await;
    }

    async fn write(&self, id: &str) -> TestResult {
        let op = WriteOp::Put {
            collection: "tasks".into(),
            value: json!({ "id": id }),
            recreate: false,
        };
        self.node
            .with_store(move |s| s.transact(vec![op]))
            .await??;
        Ok(())
    }

    async fn has(&self, id: &str) -> anyhow::Result<bool> {
        let id = id.to_owned();
        Ok(self
            .node
            .with_store(move |s| s.get("tasks", &id))
            .await??
            .is_some())
    }

    async fn connections(&self) -> usize {
        self.node.net.peers().await.len()
    }
}

/// Polls `check` until it holds, failing after [`GUARD`].
async fn eventually<F, Fut>(what: &str, mut check: F) -> TestResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("not true within the {GUARD:?} failure guard: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn all_have(members: &[Member], id: &str) -> anyhow::Result<bool> {
    for m in members {
        if !m.has(id).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Connections older than this are the kept ones: a spare connection (a neighbor request, a
/// shuffle, a sync with a passive peer) is closed after `SPARE_GRACE` (2 s) plus a reaper tick.
const KEPT: Duration = Duration::from_secs(6);

/// Every node has long-lived connections, and at most its active view of them.
async fn all_bounded(members: &[Member]) -> anyhow::Result<bool> {
    for m in members {
        let kept = m
            .node
            .net
            .peers()
            .await
            .iter()
            .filter(|p| p.connected_since.elapsed().is_ok_and(|d| d > KEPT))
            .count();
        if kept == 0 || kept > ACTIVE {
            return Ok(false);
        }
    }
    Ok(true)
}

fn in_overlay_mode(members: &[Member]) -> bool {
    members
        .iter()
        .all(|m| m.stats.overlay_mode.load(Ordering::Relaxed) == 1)
}

/// Anti-entropy far slower than any test: what arrives, arrives by push.
const SLOW_PULL: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_threshold_connections_stay_bounded_and_a_write_reaches_all() -> TestResult {
    init_tracing();
    let f = Fleet::new()?;
    let members = fleet(&f, 8, 2, SLOW_PULL).await?;
    eventually("every node in overlay mode", || async {
        Ok(in_overlay_mode(&members))
    })
    .await?;
    eventually("every node has an active neighbor", || async {
        Ok(members
            .iter()
            .all(|m| m.stats.active_view.load(Ordering::Relaxed) > 0))
    })
    .await?;
    members[0].write("first").await?;
    eventually("the write reached all 8 nodes", || {
        all_have(&members, "first")
    })
    .await?;
    eventually("each node keeps at most its active view connected", || {
        all_bounded(&members)
    })
    .await?;
    for m in &members {
        assert!(m.stats.active_view.load(Ordering::Relaxed) <= ACTIVE as u64);
        assert_eq!(m.stats.syncs_ok.load(Ordering::Relaxed), 0, "no pull ran");
    }
    let pushes: u64 = members
        .iter()
        .map(|m| m.stats.eager_pushes.load(Ordering::Relaxed))
        .sum();
    assert!(pushes >= 7, "every other node got it by push: {pushes}");
    for m in members {
        m.stop().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_is_replaced_and_writes_still_reach_everyone() -> TestResult {
    init_tracing();
    let f = Fleet::new()?;
    let mut members = fleet(&f, 8, 2, Duration::from_secs(3)).await?;
    eventually("connections settled", || all_bounded(&members)).await?;
    members[1].write("before").await?;
    eventually("the first write reached all", || {
        all_have(&members, "before")
    })
    .await?;

    // Kill the node with the most neighbors: its peers must replace it from their passive views.
    let mut degrees = Vec::new();
    for m in &members {
        degrees.push(m.connections().await);
    }
    let victim = (0..members.len()).max_by_key(|i| degrees[*i]).unwrap_or(0);
    let gone = members.remove(victim);
    let gone_id = gone.node.net.node_id();
    gone.node.net.shutdown().await; // abrupt: no Disconnect, the connections just end

    eventually("nobody is connected to the dead node", || async {
        for m in &members {
            if m.node
                .net
                .peers()
                .await
                .iter()
                .any(|p| p.node_id == gone_id)
            {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    eventually("every node has an active neighbor again", || async {
        for m in &members {
            if m.connections().await == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    members[0].write("after").await?;
    eventually("the write after the loss reached the 7 others", || {
        all_have(&members, "after")
    })
    .await?;
    gone.cancel.cancel();
    for m in members {
        m.stop().await;
    }
    Ok(())
}

/// Reads frames from `recv` until `pick` accepts one.
async fn next_frame<T>(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
    mut pick: impl FnMut(Frame) -> Option<T>,
) -> anyhow::Result<T> {
    loop {
        while let Some(frame) = decoder.next_frame()? {
            if let Some(t) = pick(frame) {
                return Ok(t);
            }
        }
        let chunk = guard(recv.read_chunk(64 * 1024, true))
            .await??
            .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        decoder.push(&chunk.bytes);
    }
}

#[tokio::test]
async fn a_bad_control_frame_gets_an_error_and_the_stream_carries_on() -> TestResult {
    init_tracing();
    let f = Fleet::new()?;
    let mut a = TestNode::start(f.node("a")?)?;
    let client = RawClient::new(f.node("mallory")?)?;
    let conn = client.connect(a.addr()).await?;
    let mut answers = guard(conn.accept_uni()).await??;
    let mut decoder = FrameDecoder::new();
    let mut push = conn.open_uni().await?;

    let garbage = Frame::Control {
        version: CONTROL_VERSION,
        body: vec![0xff; 8],
    };
    push.write_all(&encode_frame(&garbage)?).await?;
    let code = next_frame(&mut answers, &mut decoder, |f| match f {
        Frame::Error { code, .. } => Some(code),
        _ => None,
    })
    .await?;
    assert_eq!(code, ErrorCode::Protocol);

    let future = Frame::Control {
        version: CONTROL_VERSION + 1,
        body: vec![0],
    };
    push.write_all(&encode_frame(&future)?).await?;
    let (code, message) = next_frame(&mut answers, &mut decoder, |f| match f {
        Frame::Error { code, message } => Some((code, message)),
        _ => None,
    })
    .await?;
    assert_eq!(code, ErrorCode::UnsupportedVersion);
    assert!(message.contains("revision 2"), "{message}");

    // The same stream still delivers a good control message.
    let prune: ControlMessage = EpidemicMessage::Tree(TreeMessage::Prune);
    push.write_all(&encode_frame(&control_frame(&prune)?)?)
        .await?;
    let from = a
        .wait_for(|e| match e {
            NetEvent::Control { from, message } if *message == prune => Some(*from),
            _ => None,
        })
        .await?;
    let mallory: OverlayPeer = from;
    assert_eq!(mallory.addr, client.endpoint.local_addr()?);
    assert!(conn.close_reason().is_none());
    let errors = a.net.peers().await.iter().map(|p| p.errors).sum::<u64>();
    assert_eq!(errors, 2, "both refusals counted");
    a.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_threshold_the_fleet_stays_a_full_mesh_with_one_hop_push() -> TestResult {
    init_tracing();
    let f = Fleet::new()?;
    let members = fleet(&f, 4, 32, SLOW_PULL).await?;
    eventually("a full mesh", || async {
        for m in &members {
            if m.connections().await != 3 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    members[2].write("small").await?;
    eventually("the write reached all 4 nodes", || {
        all_have(&members, "small")
    })
    .await?;
    for m in &members {
        assert_eq!(m.stats.overlay_mode.load(Ordering::Relaxed), 0);
        assert_eq!(m.stats.overlay_messages.load(Ordering::Relaxed), 0);
        assert_eq!(m.connections().await, 3, "nothing was closed");
    }
    for m in members {
        m.stop().await;
    }
    Ok(())
}
