//! Mutual TLS between fleet nodes over real UDP sockets on 127.0.0.1: who is admitted and who
//! is refused, in both directions, and why.

mod net_common;

use meshlite_fixtures::wait::{check, poll_until};
use meshlite_mesh::fleet::ClusterId;
use meshlite_mesh::net::peer::CLOSE_DUPLICATE;
use meshlite_mesh::net::{Direction, NetEvent, PeerInfo, RefusalReason, TransportConfig};
use net_common::{Fleet, RawClient, TestNode, TestResult, days_ago, init_tracing};
use rustls::CertificateError;

/// The first refusal event (direction, reason).
fn refusal(event: &NetEvent) -> Option<(Direction, RefusalReason)> {
    match event {
        NetEvent::Refused { direction, reason } => Some((*direction, reason.clone())),
        _ => None,
    }
}

#[tokio::test]
async fn two_nodes_of_one_fleet_connect_with_mutual_tls() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let mut a = TestNode::start(fleet.node("a")?)?;
    let mut b = TestNode::start(fleet.node("b")?)?;

    let got = a.net.connect(b.addr(), Some(b.net.node_id())).await?;
    assert_eq!(got, b.net.node_id());

    let (id, name, direction) = b
        .wait_for(|e| match e {
            NetEvent::PeerUp {
                node_id,
                node_name,
                direction,
                ..
            } => Some((*node_id, node_name.clone(), *direction)),
            _ => None,
        })
        .await?;
    assert_eq!(id, a.net.node_id());
    assert_eq!(name.map(|n| n.to_string()).as_deref(), Some("a"));
    assert_eq!(direction, Direction::Inbound);
    a.wait_for(|e| matches!(e, NetEvent::PeerUp { .. }).then_some(()))
        .await?;

    let peers = a.net.peers().await;
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].node_id, b.net.node_id());
    assert_eq!(peers[0].direction, Direction::Outbound);
    // Dialing a connected node by id reuses the connection.
    assert_eq!(
        a.net.connect(b.addr(), Some(b.net.node_id())).await?,
        b.net.node_id()
    );
    assert_eq!(a.net.peers().await.len(), 1);
    a.stop().await;
    b.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_node_from_a_foreign_ca_is_refused_with_unknown_issuer() -> TestResult {
    init_tracing();
    let ours = Fleet::new()?;
    let foreign = Fleet::new()?;
    let mut a = TestNode::start(ours.node("a")?)?;
    // The intruder trusts our CA (so only our side's check can stop it) but presents a
    // certificate from its own CA, with our cluster id.
    let mut spec = foreign.spec("intruder")?;
    spec.cluster_id = ours.cluster_id;
    let intruder = TestNode::start(foreign.custom(&spec, &ours.ca_pem()?)?)?;

    let dial = intruder.net.connect(a.addr(), None).await;
    assert!(dial.is_err(), "intruder was admitted: {dial:?}");
    let (direction, reason) = a.wait_for(refusal).await?;
    assert_eq!(direction, Direction::Inbound);
    assert_eq!(
        reason,
        RefusalReason::Certificate(CertificateError::UnknownIssuer)
    );
    assert!(a.net.peers().await.is_empty());

    // Dialing out to it is refused by our side as well.
    let dial = a.net.connect(intruder.addr(), None).await;
    assert!(dial.is_err(), "connected to a foreign node: {dial:?}");
    let (direction, reason) = a.wait_for(refusal).await?;
    assert_eq!(direction, Direction::Outbound);
    assert_eq!(
        reason,
        RefusalReason::Certificate(CertificateError::UnknownIssuer)
    );
    Ok(())
}

#[tokio::test]
async fn a_certificate_for_another_cluster_is_refused_even_from_our_ca() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let mut a = TestNode::start(fleet.node("a")?)?;
    let other = ClusterId::random();
    let mut spec = fleet.spec("elsewhere")?;
    spec.cluster_id = other;
    let stranger_identity = fleet.custom(&spec, "")?;
    let wrong_cluster = RefusalReason::WrongCluster {
        expected: fleet.cluster_id,
        presented: other,
    };

    // We dial it: our client-side check refuses its server certificate.
    let stranger = TestNode::start(stranger_identity.clone())?;
    assert!(a.net.connect(stranger.addr(), None).await.is_err());
    assert_eq!(
        a.wait_for(refusal).await?,
        (Direction::Outbound, wrong_cluster.clone())
    );

    // It dials us (with a client that does not itself object to our cluster): our
    // server-side check refuses it, and it never gets to open a stream.
    let client = RawClient::with_policy_of(stranger_identity, &fleet.node("judge")?)?;
    let result = client.connect(a.addr()).await;
    if let Ok(conn) = result {
        let closed = net_common::guard(conn.closed()).await?;
        assert!(closed.to_string().contains("certificate"), "{closed}");
    }
    assert_eq!(
        a.wait_for(refusal).await?,
        (Direction::Inbound, wrong_cluster)
    );
    assert!(a.net.peers().await.is_empty());
    Ok(())
}

#[tokio::test]
async fn an_expired_certificate_is_refused() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let mut a = TestNode::start(fleet.node("a")?)?;
    let mut spec = fleet.spec("stale")?;
    spec.not_before = days_ago(60);
    spec.not_after = days_ago(1);
    let stale = TestNode::start(fleet.custom(&spec, "")?)?;

    let dial = stale.net.connect(a.addr(), None).await;
    assert!(dial.is_err(), "expired certificate was admitted: {dial:?}");
    let (direction, reason) = a.wait_for(refusal).await?;
    assert_eq!(direction, Direction::Inbound);
    assert!(
        matches!(
            reason,
            RefusalReason::Certificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        ),
        "{reason:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_denied_node_is_refused_both_ways() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let revoked = fleet.node("revoked")?;
    let cfg = TransportConfig {
        deny_nodes: vec![revoked.node_id()],
        ..TransportConfig::loopback()
    };
    let mut a = TestNode::start_with(fleet.node("a")?, cfg)?;
    let revoked_id = revoked.node_id();
    let r = TestNode::start(revoked)?;

    assert!(r.net.connect(a.addr(), None).await.is_err());
    let (direction, reason) = a.wait_for(refusal).await?;
    assert_eq!(direction, Direction::Inbound);
    assert_eq!(reason, RefusalReason::Denied(revoked_id));

    assert!(a.net.connect(r.addr(), None).await.is_err());
    let (direction, reason) = a.wait_for(refusal).await?;
    assert_eq!(direction, Direction::Outbound);
    assert_eq!(reason, RefusalReason::Denied(revoked_id));
    assert!(a.net.peers().await.is_empty());
    Ok(())
}

#[tokio::test]
async fn denying_a_connected_node_disconnects_it() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let mut a = TestNode::start(fleet.node("a")?)?;
    let mut b = TestNode::start(fleet.node("b")?)?;
    let b_id = a.net.connect(b.addr(), None).await?;

    a.net.set_deny_list(vec![b_id]).await;
    let peer_down = |e: &NetEvent| match e {
        NetEvent::PeerDown { node_id, .. } => Some(*node_id),
        _ => None,
    };
    assert_eq!(a.wait_for(peer_down).await?, b_id);
    // Once b has seen the close too, its attempt to reconnect is refused.
    assert_eq!(b.wait_for(peer_down).await?, a.net.node_id());
    assert!(b.net.connect(a.addr(), None).await.is_err());
    let (_, reason) = a.wait_for(refusal).await?;
    assert_eq!(reason, RefusalReason::Denied(b_id));
    Ok(())
}

#[tokio::test]
async fn dialing_an_address_that_answers_with_another_node_is_refused() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let mut a = TestNode::start(fleet.node("a")?)?;
    let b = TestNode::start(fleet.node("b")?)?;
    let c = TestNode::start(fleet.node("c")?)?;

    let dial = a.net.connect(b.addr(), Some(c.net.node_id())).await;
    assert!(dial.is_err(), "{dial:?}");
    let (direction, reason) = a.wait_for(refusal).await?;
    assert_eq!(direction, Direction::Outbound);
    assert_eq!(
        reason,
        RefusalReason::UnexpectedNode {
            expected: c.net.node_id(),
            presented: b.net.node_id()
        }
    );
    Ok(())
}

#[tokio::test]
async fn a_node_dialing_itself_is_refused() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let mut a = TestNode::start(fleet.node("a")?)?;
    assert!(a.net.connect(a.addr(), None).await.is_err());
    let (_, reason) = a.wait_for(refusal).await?;
    assert_eq!(reason, RefusalReason::OwnNode(a.net.node_id()));
    Ok(())
}

#[tokio::test]
async fn simultaneous_dials_leave_one_connection() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let a = TestNode::start(fleet.node("a")?)?;
    let b = TestNode::start(fleet.node("b")?)?;
    let (ab, ba) = tokio::join!(a.net.connect(b.addr(), None), b.net.connect(a.addr(), None));
    assert_eq!(ab?, b.net.node_id());
    assert_eq!(ba?, a.net.node_id());
    // Both sides keep the connection dialed by the smaller node id.
    let a_dialed = a.net.node_id() < b.net.node_id();
    let (a_dir, b_dir) = if a_dialed {
        (Direction::Outbound, Direction::Inbound)
    } else {
        (Direction::Inbound, Direction::Outbound)
    };
    let what = "a and b to keep only the connection dialed by the smaller node id";
    poll_until(what, net_common::GUARD, || async {
        let (on_a, on_b) = (a.net.peers().await, b.net.peers().await);
        check(
            only_peer_is(&on_a, a_dir) && only_peer_is(&on_b, b_dir),
            format!("a: {on_a:?}\nb: {on_b:?}"),
        )
    })
    .await;
    let stats = net_common::guard(a.net.sync_with(b.net.node_id())).await??;
    assert_eq!(stats.txns_received, 0);
    assert_eq!(a.net.peers().await.len(), 1);
    assert_eq!(b.net.peers().await.len(), 1);
    Ok(())
}

fn only_peer_is(peers: &[PeerInfo], direction: Direction) -> bool {
    matches!(peers, [p] if p.direction == direction)
}

#[tokio::test]
async fn concurrent_dials_to_one_address_share_one_connection() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let a = TestNode::start(fleet.node("a")?)?;
    let mut b = TestNode::start(fleet.node("b")?)?;
    let (first, second, third) = tokio::join!(
        a.net.connect(b.addr(), None),
        a.net.connect(b.addr(), None),
        a.net.connect(b.addr(), Some(b.net.node_id())),
    );
    assert_eq!(first?, b.net.node_id());
    assert_eq!(second?, b.net.node_id());
    assert_eq!(third?, b.net.node_id());
    b.wait_for(|e| matches!(e, NetEvent::PeerUp { .. }).then_some(()))
        .await?;
    let stats = net_common::guard(a.net.sync_with(b.net.node_id())).await??;
    assert_eq!(stats.txns_sent, 0);
    // b saw exactly one connection: no second PeerUp, no PeerDown.
    assert!(b.events.try_recv().is_err(), "unexpected extra event");
    Ok(())
}

#[tokio::test]
async fn a_second_connection_from_the_same_dialer_replaces_the_first() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let a = TestNode::start(fleet.node("a")?)?;
    let restarted = fleet.node("restarted")?;
    // The same node id connecting again (as after a crash and restart) takes over at once.
    let old = RawClient::new(restarted.clone())?.connect(a.addr()).await?;
    let new_client = RawClient::new(restarted)?;
    let new = new_client.connect(a.addr()).await?;
    let closed = net_common::guard(old.closed()).await?;
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == CLOSE_DUPLICATE),
        "{closed}"
    );
    assert!(new.close_reason().is_none());
    assert_eq!(a.net.peers().await.len(), 1);
    Ok(())
}

#[tokio::test]
async fn connections_beyond_max_peers_are_refused() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let cfg = TransportConfig {
        max_peers: 1,
        ..TransportConfig::loopback()
    };
    let a = TestNode::start_with(fleet.node("a")?, cfg)?;
    let b = TestNode::start(fleet.node("b")?)?;
    let c = TestNode::start(fleet.node("c")?)?;
    b.net.connect(a.addr(), None).await?;
    let third = c.net.connect(a.addr(), None).await;
    assert!(third.is_err(), "{third:?}");
    assert_eq!(a.net.peers().await.len(), 1);
    Ok(())
}
