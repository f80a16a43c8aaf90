//! Coalescing on real QUIC sockets (`meshlite_mesh::net::coalesce` and `net::apply`): a burst of
//! pushes from one node reaches the others in fewer frames, writer transactions and store events
//! than transactions, and every transaction is delivered exactly once, also when two peers relay
//! the same burst to a third.
//!
//! The burst is queued in one go (all `push_to` calls issued together), so the sender's push
//! writer finds many frames waiting when it first runs: the merge is what the test checks, not
//! how fast anything is.

mod net_common;

use std::collections::HashSet;

use futures_util::future::try_join_all;
use meshlite_core::TxnId;
use meshlite_core::store::{Query, StoreEvent, WriteOp};
use meshlite_mesh::net::{NetEvent, PeerInfo};
use meshlite_mesh::replica::Replica;
use net_common::{Fleet, TestNode, TestResult, guard, init_tracing};
use serde_json::json;
use tokio::sync::broadcast;

/// Transactions in the burst.
const BURST: usize = 200;
const COLLECTION: &str = "burst";

/// Commits `BURST` one-record transactions on `node`; their ids and encodings.
async fn burst(node: &TestNode) -> anyhow::Result<(Vec<TxnId>, Vec<Vec<u8>>)> {
    let ids = node
        .with_store(|s| {
            (0..BURST)
                .map(|i| {
                    let value = json!({"id": format!("r{i}"), "n": i});
                    let op = WriteOp::Put {
                        collection: COLLECTION.into(),
                        value,
                        recreate: false,
                    };
                    s.transact(vec![op]).map(|c| c.txn)
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await??;
    let encoded = node.store.encoded(&ids).await?.txns;
    assert_eq!(encoded.len(), BURST);
    Ok((ids, encoded))
}

/// Pushes each transaction as its own push to `targets`, all calls issued at once.
async fn push_each(from: &TestNode, targets: &[&TestNode], encoded: &[Vec<u8>]) -> TestResult {
    let to: Vec<_> = targets.iter().map(|t| t.net.node_id()).collect();
    let pushes = encoded
        .iter()
        .map(|txn| from.net.push_to(to.clone(), vec![txn.clone()]));
    let reports = try_join_all(pushes).await?;
    for report in reports {
        assert!(report.dropped.is_empty(), "a push was dropped: {report:?}");
    }
    Ok(())
}

/// Collects `PushReceived` events until `want` distinct transactions arrived; returns the ids in
/// arrival order (repeats included) and the sum of `applied`.
async fn received(node: &mut TestNode, want: usize) -> anyhow::Result<(Vec<TxnId>, usize)> {
    let mut ids = Vec::new();
    let mut applied = 0;
    let mut distinct = HashSet::new();
    while distinct.len() < want {
        let (txns, new) = node
            .wait_for(|e| match e {
                NetEvent::PushReceived { txns, applied, .. } => Some((txns.clone(), *applied)),
                _ => None,
            })
            .await?;
        distinct.extend(txns.iter().copied());
        ids.extend(txns);
        applied += new;
    }
    Ok((ids, applied))
}

/// Remote commit events seen so far on `rx`: (events, transactions).
fn remote_commits(rx: &mut broadcast::Receiver<StoreEvent>) -> (usize, usize) {
    let (mut events, mut txns) = (0, 0);
    while let Ok(ev) = rx.try_recv() {
        if let StoreEvent::Committed {
            txns: t,
            local: false,
            ..
        } = ev
        {
            events += 1;
            txns += t.len();
        }
    }
    (events, txns)
}

async fn rows(node: &TestNode) -> anyhow::Result<usize> {
    Ok(node
        .with_store(|s| s.query(COLLECTION, &Query::default()))
        .await??
        .len())
}

async fn peer(node: &TestNode, other: &TestNode) -> anyhow::Result<PeerInfo> {
    let id = other.net.node_id();
    node.net
        .peers()
        .await
        .into_iter()
        .find(|p| p.node_id == id)
        .ok_or_else(|| anyhow::anyhow!("{id} is not connected"))
}

#[tokio::test]
async fn a_burst_arrives_in_fewer_frames_and_writer_transactions_exactly_once() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let a = TestNode::start(fleet.node("a")?)?;
    let mut b = TestNode::start(fleet.node("b")?)?;
    let mut c = TestNode::start(fleet.node("c")?)?;
    for other in [&b, &c] {
        a.net
            .connect(other.addr(), Some(other.net.node_id()))
            .await?;
    }
    let mut b_store = b.store.subscribe();
    let (ids, encoded) = burst(&a).await?;

    push_each(&a, &[&b, &c], &encoded).await?;

    let expected: HashSet<TxnId> = ids.iter().copied().collect();
    for node in [&mut b, &mut c] {
        let (got, applied) = guard(received(node, BURST)).await??;
        assert_eq!(got.len(), BURST, "a transaction was delivered twice");
        assert_eq!(got.iter().copied().collect::<HashSet<_>>(), expected);
        assert_eq!(applied, BURST, "every pushed transaction was new here");
        assert_eq!(rows(node).await?, BURST);

        let from_a = peer(node, &a).await?;
        assert_eq!(from_a.push_txns_received, BURST as u64);
        assert!(
            from_a.pushes_received < from_a.push_txns_received,
            "no push frame carried more than one transaction: {from_a:?}"
        );
        let counts = node.net.push_apply_counts();
        assert_eq!(counts.txns, BURST as u64);
        assert!(
            counts.batches < counts.txns,
            "each transaction had its own writer transaction: {counts:?}"
        );
    }
    let to_b = peer(&a, &b).await?;
    assert!(to_b.pushes_merged > 0, "{to_b:?}");
    assert!(to_b.pushes_sent < BURST as u64, "{to_b:?}");
    // One store event per applied batch, carrying every transaction of the batch.
    let (events, txns) = remote_commits(&mut b_store);
    assert_eq!(txns, BURST);
    assert!(events < BURST, "one store event per transaction ({events})");
    Ok(())
}

#[tokio::test]
async fn the_same_burst_relayed_by_two_peers_is_applied_once() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let a = TestNode::start(fleet.node("a")?)?;
    let b = TestNode::start(fleet.node("b")?)?;
    let mut d = TestNode::start(fleet.node("d")?)?;
    for from in [&a, &b] {
        from.net.connect(d.addr(), Some(d.net.node_id())).await?;
    }
    let (ids, encoded) = burst(&a).await?;
    // b holds the same transactions (as a relay would) and pushes them too.
    let held = encoded
        .iter()
        .map(|bytes| meshlite_core::Txn::decode(bytes))
        .collect::<Result<Vec<_>, _>>()?;
    b.store.apply_txns(held).await?;

    let to_d = [&d];
    let (from_a, from_b) = tokio::join!(
        push_each(&a, &to_d, &encoded),
        push_each(&b, &to_d, &encoded)
    );
    from_a?;
    from_b?;

    // Every transaction arrives twice (once per sender) and is new exactly once.
    let mut seen = Vec::new();
    let mut applied = 0;
    while seen.len() < 2 * BURST {
        let (txns, new) = guard(d.wait_for(|e| match e {
            NetEvent::PushReceived { txns, applied, .. } => Some((txns.clone(), *applied)),
            _ => None,
        }))
        .await??;
        seen.extend(txns);
        applied += new;
    }
    assert_eq!(seen.len(), 2 * BURST);
    assert_eq!(
        seen.iter().copied().collect::<HashSet<_>>(),
        ids.into_iter().collect()
    );
    assert_eq!(applied, BURST, "a relayed duplicate counted as new");
    assert_eq!(rows(&d).await?, BURST);
    let counts = d.net.push_apply_counts();
    assert!(counts.txns <= 2 * BURST as u64, "{counts:?}");
    assert!(
        counts.batches < 2 * BURST as u64,
        "no push was coalesced: {counts:?}"
    );
    Ok(())
}
