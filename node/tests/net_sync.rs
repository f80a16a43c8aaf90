//! Two real stores synced over QUIC on 127.0.0.1: anti-entropy rounds in both directions and
//! pushes without a round.

mod net_common;

use meshlite_core::TxnId;
use meshlite_core::store::{Query, Store, WriteOp};
use meshlite_mesh::net::{NetEvent, TransportConfig};
use meshlite_mesh::replica::Replica;
use net_common::{Fleet, TestNode, TestResult, guard, init_tracing};
use serde_json::{Value, json};

fn put(collection: &str, value: Value) -> WriteOp {
    WriteOp::Put {
        collection: collection.into(),
        value,
        recreate: false,
    }
}

/// Commits `ops` as one transaction on `node`'s store.
async fn write(node: &TestNode, ops: Vec<WriteOp>) -> anyhow::Result<TxnId> {
    Ok(node.with_store(move |s| s.transact(ops)).await??.txn)
}

async fn get(node: &TestNode, collection: &str, id: &str) -> anyhow::Result<Option<Value>> {
    let (c, i) = (collection.to_owned(), id.to_owned());
    Ok(node.with_store(move |s| s.get(&c, &i)).await??)
}

async fn count(node: &TestNode, collection: &str) -> anyhow::Result<usize> {
    let c = collection.to_owned();
    Ok(node
        .with_store(move |s| s.query(&c, &Query::default()))
        .await??
        .len())
}

async fn connected_pair(fleet: &Fleet) -> anyhow::Result<(TestNode, TestNode)> {
    let a = TestNode::start(fleet.node("a")?)?;
    let b = TestNode::start(fleet.node("b")?)?;
    a.net.connect(b.addr(), Some(b.net.node_id())).await?;
    Ok((a, b))
}

#[tokio::test]
async fn a_write_on_a_is_readable_on_b_after_one_round() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let (a, b) = connected_pair(&fleet).await?;
    write(
        &a,
        vec![put("tasks", json!({"id": "t1", "title": "calibrate"}))],
    )
    .await?;
    assert_eq!(get(&b, "tasks", "t1").await?, None);

    let stats = guard(a.net.sync_with(b.net.node_id())).await??;
    assert_eq!(stats.txns_sent, 1);
    assert_eq!(stats.txns_received, 0);
    assert!(
        stats.bytes_sent > 0 && stats.bytes_received > 0,
        "{stats:?}"
    );

    let row = get(&b, "tasks", "t1").await?;
    assert_eq!(
        row.as_ref().and_then(|r| r.get("title")),
        Some(&json!("calibrate"))
    );
    let (sa, sb) = (summary(&a.store).await?, summary(&b.store).await?);
    assert_eq!(sa, sb);
    a.stop().await;
    b.stop().await;
    Ok(())
}

#[tokio::test]
async fn one_round_carries_both_directions() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let (a, b) = connected_pair(&fleet).await?;
    write(
        &a,
        vec![put("agents", json!({"id": "x", "status": "idle"}))],
    )
    .await?;
    write(
        &b,
        vec![put("agents", json!({"id": "y", "status": "running"}))],
    )
    .await?;

    // B starts the round this time: inbound rounds work the same.
    let stats = guard(b.net.sync_with(a.net.node_id())).await??;
    assert_eq!(
        (stats.txns_sent, stats.txns_received, stats.txns_applied),
        (1, 1, 1)
    );
    for node in [&a, &b] {
        assert!(get(node, "agents", "x").await?.is_some());
        assert!(get(node, "agents", "y").await?.is_some());
    }
    // A second round has nothing to carry.
    let again = guard(a.net.sync_with(b.net.node_id())).await??;
    assert_eq!((again.txns_sent, again.txns_received), (0, 0));
    let peers = a.net.peers().await;
    assert_eq!(peers[0].syncs, 2);
    assert_eq!(peers[0].errors, 0);
    Ok(())
}

#[tokio::test]
async fn large_differences_flow_both_ways_in_several_batches() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let (a, b) = connected_pair(&fleet).await?;
    // 40 transactions of 100 records on each side: well over one load batch each way, sent
    // at the same time, which would deadlock a transport that blocks writing while not reading.
    let filler = "x".repeat(200);
    for (node, side) in [(&a, "a"), (&b, "b")] {
        for t in 0..40 {
            let ops = (0..100)
                .map(|i| {
                    put(
                        "metrics",
                        json!({"id": format!("{side}-{t}-{i}"), "pad": filler}),
                    )
                })
                .collect();
            write(node, ops).await?;
        }
    }
    let stats = guard(a.net.sync_with(b.net.node_id())).await??;
    assert_eq!(
        (stats.txns_sent, stats.txns_received),
        (40, 40),
        "{stats:?}"
    );
    assert_eq!(count(&a, "metrics").await?, 8000);
    assert_eq!(count(&b, "metrics").await?, 8000);
    assert_eq!(summary(&a.store).await?, summary(&b.store).await?);
    Ok(())
}

#[tokio::test]
async fn a_push_arrives_without_an_anti_entropy_round() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let (a, mut b) = connected_pair(&fleet).await?;
    let id = write(
        &a,
        vec![put("jobs", json!({"id": "j1", "state": "queued"}))],
    )
    .await?;
    let encoded = a.store.encoded(&[id]).await?.txns;
    assert_eq!(encoded.len(), 1);

    let report = a.net.push_to(vec![b.net.node_id()], encoded).await?;
    assert_eq!(report.queued, vec![b.net.node_id()]);
    let (from, txns, applied) = b
        .wait_for(|e| match e {
            NetEvent::PushReceived {
                from,
                txns,
                applied,
                ..
            } => Some((*from, txns.clone(), *applied)),
            _ => None,
        })
        .await?;
    assert_eq!((from, txns, applied), (a.net.node_id(), vec![id], 1));
    assert!(get(&b, "jobs", "j1").await?.is_some());
    let peers = b.net.peers().await;
    assert_eq!(peers[0].syncs, 0, "a sync round ran");
    assert_eq!(peers[0].pushes_received, 1);

    // A second push reuses the open push stream.
    let id2 = write(&a, vec![put("jobs", json!({"id": "j2"}))]).await?;
    let encoded = a.store.encoded(&[id2]).await?.txns;
    a.net.push_to(vec![b.net.node_id()], encoded).await?;
    b.wait_for(|e| {
        matches!(e, NetEvent::PushReceived { txns, .. } if txns == &[id2]).then_some(())
    })
    .await?;
    assert!(get(&b, "jobs", "j2").await?.is_some());
    Ok(())
}

async fn summary(store: &Store) -> anyhow::Result<meshlite_core::Summary> {
    let store = store.clone();
    Ok(tokio::task::spawn_blocking(move || store.summary()).await??)
}

#[tokio::test]
async fn a_node_restarted_from_its_data_dir_catches_up() -> TestResult {
    init_tracing();
    let fleet = Fleet::new()?;
    let b_identity = fleet.node("b")?;
    let (a, b) = connected_pair_with(&fleet, b_identity.clone()).await?;
    write(&b, vec![put("results", json!({"id": "before"}))]).await?;
    guard(b.net.sync_with(a.net.node_id())).await??;

    let data = b.stop_keep_data().await?;
    write(&a, vec![put("results", json!({"id": "while-down"}))]).await?;

    let b = TestNode::start_in(b_identity, TransportConfig::loopback(), data)?;
    b.net.connect(a.addr(), Some(a.net.node_id())).await?;
    let stats = guard(b.net.sync_with(a.net.node_id())).await??;
    assert_eq!((stats.txns_sent, stats.txns_received), (0, 1), "{stats:?}");
    assert!(get(&b, "results", "before").await?.is_some());
    assert!(get(&b, "results", "while-down").await?.is_some());
    Ok(())
}

async fn connected_pair_with(
    fleet: &Fleet,
    b_identity: meshlite_mesh::fleet::NodeIdentity,
) -> anyhow::Result<(TestNode, TestNode)> {
    let a = TestNode::start(fleet.node("a")?)?;
    let b = TestNode::start(b_identity)?;
    a.net.connect(b.addr(), Some(b.net.node_id())).await?;
    Ok((a, b))
}
