//! Hostile input on the QUIC port: garbage datagrams, garbage on accepted streams, oversized
//! frames. The node must shed each one and keep syncing with honest peers.

mod net_common;

use std::net::UdpSocket;

use meshlite_mesh::net::push::STREAM_BAD_PUSH;
use meshlite_mesh::net::sync::{STREAM_FRAME_TOO_LARGE, STREAM_SESSION_FAILED};
use meshlite_mesh::net::{SyncError, TransportConfig};
use net_common::{Fleet, RawClient, TestNode, TestResult, assert_still_syncs, guard, init_tracing};
use rand::RngCore;

#[tokio::test]
async fn garbage_datagrams_do_not_disturb_the_node() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let a = TestNode::start(fleet.node("a")?)?;
    let b = TestNode::start(fleet.node("b")?)?;
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let mut rng = rand::rng();
    for len in [0usize, 1, 7, 40, 1200, 1500, 9000] {
        for _ in 0..20 {
            let mut junk = vec![0u8; len];
            rng.fill_bytes(&mut junk);
            // Also junk that looks like a QUIC long-header Initial packet.
            if let Some(first) = junk.first_mut() {
                *first |= 0xc0;
            }
            socket.send_to(&junk, a.addr())?;
        }
    }
    assert_still_syncs(&b, &a, "after-datagrams").await?;
    assert_still_syncs(&a, &b, "after-datagrams-2").await
}

#[tokio::test]
async fn garbage_on_an_accepted_stream_fails_only_that_stream() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let a = TestNode::start(fleet.node("a")?)?;
    let b = TestNode::start(fleet.node("b")?)?;
    let client = RawClient::new(fleet.node("mallory")?)?;
    let conn = client.connect(a.addr()).await?;

    // A sync stream with a well-formed length prefix but a nonsense payload.
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut junk = vec![0u8; 600];
    rand::rng().fill_bytes(&mut junk);
    let mut frame = 600u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&junk);
    send.write_all(&frame).await?;
    // The node answers with its Hello and then ends the stream with an error.
    let reply = guard(recv.read_to_end(1 << 20)).await?;
    match reply {
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
            assert_eq!(code, STREAM_SESSION_FAILED)
        }
        // Or the Error frame arrived and the stream was finished cleanly.
        Ok(bytes) => assert!(!bytes.is_empty()),
        Err(e) => anyhow::bail!("unexpected stream end: {e}"),
    }

    // A push stream carrying junk is stopped.
    let mut push = conn.open_uni().await?;
    let mut junk_frame = 64u32.to_be_bytes().to_vec();
    junk_frame.extend_from_slice(&[0xff; 64]);
    push.write_all(&junk_frame).await?;
    let stopped = guard(push.stopped()).await??;
    assert_eq!(stopped, Some(STREAM_BAD_PUSH));

    // The connection survives, and honest peers still sync.
    assert!(conn.close_reason().is_none());
    assert_still_syncs(&b, &a, "after-garbage").await
}

#[tokio::test]
async fn an_oversized_frame_closes_its_stream_before_the_body_is_read() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let cfg = TransportConfig {
        max_frame_bytes: 2 * 1024 * 1024,
        ..TransportConfig::loopback()
    };
    let a = TestNode::start_with(fleet.node("a")?, cfg)?;
    let b = TestNode::start(fleet.node("b")?)?;
    let client = RawClient::new(fleet.node("mallory")?)?;
    let conn = client.connect(a.addr()).await?;

    // Announce 2 MiB + 1 on a sync stream: refused from the prefix alone.
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&(2 * 1024 * 1024 + 1u32).to_be_bytes())
        .await?;
    let stopped = guard(send.stopped()).await??;
    assert_eq!(stopped, Some(STREAM_FRAME_TOO_LARGE));
    let end = guard(recv.read_to_end(1 << 20)).await?;
    assert!(
        matches!(end, Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) if code == STREAM_FRAME_TOO_LARGE),
        "{end:?}"
    );

    // And on a push stream, with a 4 GiB claim.
    let mut push = conn.open_uni().await?;
    push.write_all(&u32::MAX.to_be_bytes()).await?;
    assert_eq!(guard(push.stopped()).await??, Some(STREAM_FRAME_TOO_LARGE));

    assert!(conn.close_reason().is_none());
    let peers = a.net.peers().await;
    let mallory = peers.iter().find(|p| {
        p.node_name
            .as_ref()
            .is_some_and(|n| n.as_str() == "mallory")
    });
    assert!(mallory.is_some_and(|p| p.errors >= 2), "{peers:?}");
    assert_still_syncs(&b, &a, "after-oversize").await
}

#[tokio::test]
async fn syncing_with_an_unknown_peer_is_a_clear_error() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let a = TestNode::start(fleet.node("a")?)?;
    let stranger = fleet.node("nobody")?.node_id();
    let result = a.net.sync_with(stranger).await;
    assert!(
        matches!(result, Err(SyncError::NotConnected(id)) if id == stranger),
        "{result:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_peer_that_never_reads_gets_its_pushes_dropped_not_buffered() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let mut a = TestNode::start(fleet.node("a")?)?;
    let b = TestNode::start(fleet.node("b")?)?;
    let mallory = fleet.node("mallory")?;
    let mallory_id = mallory.node_id();
    // Connects, then never accepts or reads a stream.
    let client = RawClient::new(mallory)?;
    let _conn = client.connect(a.addr()).await?;
    a.wait_for(|e| {
        matches!(e, meshlite_mesh::net::NetEvent::PeerUp { node_id, .. } if *node_id == mallory_id)
            .then_some(())
    })
    .await?;

    // Each push is 200 kB; flow control plus the bounded queue must start dropping long before
    // this loop's bound (1000 pushes = 200 MB).
    let mut dropped_at = None;
    for i in 0..1000 {
        let report = a
            .net
            .push_to(vec![mallory_id], vec![vec![7u8; 200_000]])
            .await?;
        if !report.dropped.is_empty() {
            dropped_at = Some(i);
            break;
        }
    }
    assert!(dropped_at.is_some(), "the queue never filled");
    let peers = a.net.peers().await;
    let info = peers
        .iter()
        .find(|p| p.node_id == mallory_id)
        .ok_or_else(|| anyhow::anyhow!("mallory gone"))?;
    assert!(info.pushes_dropped >= 1, "{info:?}");
    assert!(info.queue_depth <= TransportConfig::default().per_peer_queue);
    assert_still_syncs(&b, &a, "beside-a-stalled-peer").await
}
