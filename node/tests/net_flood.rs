//! Slow and flooding clients on the QUIC port. A flood of handshakes from one source address
//! must not lock honest peers out; a slow-loris sync stream is ended at the sync timeout.
//!
//! The flooder sends hundreds of real client Initial packets (fleet ClientHellos, caught from a
//! quinn client) from as many source ports on 127.0.0.2 and never answers: none of the handshakes ever
//! finishes, and each would hold a handshake slot of the node until `connect_timeout`. Without a
//! per-source limit those slots fill `max_peers` and an honest peer (127.0.0.1) is refused; with
//! it, the flooder gets its burst and the rest is ignored (counted, logged once). The process's
//! RSS before and after is printed (not asserted: it is the whole test process). The same flood
//! from 200 (as if spoofed) addresses is answered with QUIC Retries once the node is under
//! pressure, so it cannot hold the handshake slots either.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod net_common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use meshlite_mesh::net::TransportConfig;
use meshlite_mesh::net::config::DEFAULT_HANDSHAKE_BURST_PER_IP;
use net_common::{Fleet, RawClient, TestNode, TestResult, assert_still_syncs, guard, init_tracing};

/// Handshakes the flooder starts (more than `max_peers`, 64 by default).
const FLOOD: usize = 400;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `FLOOD` distinct client Initial packets (each a new connection id and a fleet certificate's
/// ClientHello), caught on a local socket: quinn routes Initials by connection id, so a flood
/// needs a new one per packet, and its keys derive from it, so it cannot simply be rewritten.
async fn captured_initials(config: quinn::ClientConfig) -> anyhow::Result<Vec<Vec<u8>>> {
    let trap = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let mut by_cid: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut pending = Vec::new();
    while by_cid.len() < FLOOD {
        for _ in 0..50 {
            pending.push(endpoint.connect_with(
                config.clone(),
                trap.local_addr()?,
                meshlite_mesh::net::tls::SERVER_NAME,
            )?);
        }
        let want = (by_cid.len() + 50).min(FLOOD);
        while by_cid.len() < want {
            let mut buf = vec![0u8; 2048];
            let (n, _) = guard(trap.recv_from(&mut buf)).await??;
            buf.truncate(n);
            // Long header: flags, version (4), destination connection id length, the id.
            let len = usize::from(buf[5]);
            by_cid.entry(buf[6..6 + len].to_vec()).or_insert(buf);
        }
    }
    endpoint.close(0u32.into(), b"");
    Ok(by_cid.into_values().collect())
}

/// Sends each Initial to `target` from a new UDP socket on 127.0.0.2 that is closed at once: none
/// of the handshakes ever gets an answer.
async fn flood(initials: &[Vec<u8>], target: SocketAddr) -> anyhow::Result<()> {
    flood_from(initials, target, |_| Ipv4Addr::new(127, 0, 0, 2)).await
}

/// [`flood`] with Initial number `i` sent from `source(i)`.
async fn flood_from(
    initials: &[Vec<u8>],
    target: SocketAddr,
    source: impl Fn(usize) -> Ipv4Addr,
) -> anyhow::Result<()> {
    for (i, initial) in initials.iter().enumerate() {
        let socket = UdpSocket::bind((source(i), 0))?;
        socket.send_to(initial, target)?;
        // Do not overrun the node's socket buffer (two floods may run at once, on a busy machine):
        // the flood is about handshake slots, held for seconds, not bytes.
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(())
}

/// Node `a` (the target), node `b` (the honest peer), and [`FLOOD`] Initials of a third fleet
/// member; the fleet lives as long as the first value.
async fn two_nodes_and_a_flood() -> anyhow::Result<(Fleet, TestNode, TestNode, Vec<Vec<u8>>)> {
    init_tracing();
    let fleet = Fleet::new()?;
    let a = TestNode::start(fleet.node("a")?)?;
    let b = TestNode::start(fleet.node("b")?)?;
    let flooder = RawClient::new(fleet.node("mallory")?)?;
    let initials = captured_initials(flooder.config.clone()).await?;
    drop(flooder);
    Ok((fleet, a, b, initials))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_from_one_source_does_not_lock_out_an_honest_peer() -> TestResult {
    let (_fleet, a, b, initials) = two_nodes_and_a_flood().await?;

    // Two waves; RSS after each (a bounded node grows little, if at all, in the second).
    let mut rss = vec![rss_kib()];
    for (wave, half) in initials.chunks(FLOOD / 2).enumerate() {
        flood(half, a.addr()).await?;
        // Wait until the node has seen (and limited) the wave.
        let want = ((wave + 1) * FLOOD / 2 - 2 * DEFAULT_HANDSHAKE_BURST_PER_IP as usize) as u64;
        let waited = guard(async {
            while a.net.handshakes_rate_limited() < want {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let (limited, retried) = (a.net.handshakes_rate_limited(), a.net.handshakes_retried());
        eprintln!("wave {wave}: {limited} ignored by the rate limit, {retried} retried");
        waited?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        rss.push(rss_kib());
    }
    let limited = a.net.handshakes_rate_limited();

    // The honest peer connects and syncs while the flooder's handshakes are still pending.
    let peer = guard(b.net.connect(a.addr(), None)).await??;
    assert_eq!(peer, a.net.node_id());
    assert_still_syncs(&b, &a, "during-flood").await?;
    eprintln!(
        "flood of {FLOOD} handshakes from 127.0.0.2 in two waves: {limited} ignored by the rate \
         limit (burst {DEFAULT_HANDSHAKE_BURST_PER_IP}); the honest peer connected and synced; \
         test process RSS (KiB) before, after wave 1, after wave 2: {rss:?}"
    );
    assert!(
        limited >= (FLOOD as u64) * 9 / 10,
        "only {limited} of {FLOOD} handshakes were limited"
    );
    Ok(())
}

/// Spoofed sources: the same flood from 200 addresses (127.0.0.2 to 127.0.0.201, two Initials
/// each, far below the per-source burst) passes every rate-limit bucket, and without address
/// validation would hold all `max_peers` handshake slots until `connect_timeout`. Once 8
/// handshakes are in flight the node answers unvalidated Initials with a stateless QUIC Retry
/// instead; the flooder never returns the token, so it holds at most those 8 slots, and the honest
/// peer (whose quinn client follows the Retry) connects and syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_many_spoofed_sources_is_answered_with_retries() -> TestResult {
    let (_fleet, a, b, initials) = two_nodes_and_a_flood().await?;

    flood_from(&initials, a.addr(), |i| {
        Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i / 2).unwrap())
    })
    .await?;
    let slots = meshlite_mesh::net::admission::RETRY_ABOVE_IN_FLIGHT as u64;
    let want = FLOOD as u64 - slots;
    guard(async {
        while a.net.handshakes_retried() < want {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    let peer = guard(b.net.connect(a.addr(), None)).await??;
    assert_eq!(peer, a.net.node_id());
    assert_still_syncs(&b, &a, "during-spoofed-flood").await?;
    eprintln!(
        "flood of {FLOOD} handshakes from 200 addresses: {} answered with a Retry, {} rate          limited; the honest peer connected and synced",
        a.net.handshakes_retried(),
        a.net.handshakes_rate_limited()
    );
    assert_eq!(
        a.net.handshakes_rate_limited(),
        0,
        "no source exceeded its burst"
    );
    Ok(())
}

/// A slow-loris peer on an admitted connection: it opens a sync stream, announces a 1,000-byte
/// frame and trickles one byte every 200 ms (for two minutes if let). The node ends the stream
/// at its sync timeout (2 s here) instead of holding it, and keeps syncing with honest peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_sync_stream_is_ended_at_the_sync_timeout() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let cfg = TransportConfig {
        sync_timeout: Duration::from_secs(2),
        ..TransportConfig::loopback()
    };
    let a = TestNode::start_with(fleet.node("a")?, cfg)?;
    let b = TestNode::start(fleet.node("b")?)?;
    let client = RawClient::new(fleet.node("mallory")?)?;
    let conn = client.connect(a.addr()).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&1000u32.to_be_bytes()).await?;
    let trickle = tokio::spawn(async move {
        for _ in 0..600 {
            if send.write_all(&[0]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // Whatever the node sent first (its Hello, an Error frame), the stream ends well before the
    // trickle would (the failure guard is 30 s, the trickle two minutes).
    let end = guard(recv.read_to_end(1 << 20)).await?;
    eprintln!("slow-loris stream ended by the node: {end:?}");
    trickle.abort();

    assert_still_syncs(&b, &a, "after-loris").await
}
