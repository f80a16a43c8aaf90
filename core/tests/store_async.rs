//! The `_async` entry points on a real store return what the blocking calls return (that they
//! leave the worker thread free is tested in `store/async_tests.rs`).
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use meshlite_core::store::{OpenOptions, Query, Store, WriteOp};
use meshlite_core::{ReplicaId, Summary};
use serde_json::json;
use tempfile::TempDir;

fn put(id: &str, n: i64) -> WriteOp {
    WriteOp::Put {
        collection: "tasks".into(),
        value: json!({"id": id, "n": n}),
        recreate: false,
    }
}

#[tokio::test]
async fn async_reads_return_what_the_blocking_reads_return() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path(), OpenOptions::default()).unwrap();
    for (id, n) in [("a", 1), ("b", 2), ("a", 3)] {
        store.transact_async(vec![put(id, n)]).await.unwrap();
    }
    assert_eq!(
        store.get_async("tasks", "a").await.unwrap(),
        Some(json!({"id": "a", "n": 3}))
    );
    assert_eq!(store.get_async("tasks", "zz").await.unwrap(), None);
    let q = Query {
        limit: Some(1),
        ..Default::default()
    };
    assert_eq!(
        store.query_async("tasks", &q).await.unwrap(),
        store.query("tasks", &q).unwrap()
    );
    let summary = store.summary_async().await.unwrap();
    assert_eq!(summary, store.summary().unwrap());
    assert_eq!(summary.txn_count(), 3);
    let status = store.status_async().await.unwrap();
    assert_eq!(status.replica_id, store.replica_id());
    assert_eq!(status.stored_txns, 3);
    assert!(store.get_async("bad name", "a").await.is_err());

    let want = summary.missing_from(&Summary::new());
    let batch = store.txns_for_async(&want, usize::MAX).await.unwrap();
    assert_eq!(batch, store.txns_for(&want, usize::MAX).unwrap());
    store.close_async().await.unwrap();
}

#[tokio::test]
async fn async_writer_calls_acknowledge_collect_and_compact() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path(), OpenOptions::default()).unwrap();
    for n in 0..3 {
        store.transact_async(vec![put("a", n)]).await.unwrap();
    }
    let held = store.summary_async().await.unwrap();
    let peer = ReplicaId([7; 16]);
    store
        .record_peer_ack_async(peer, held.clone())
        .await
        .unwrap();
    let report = store.gc_async().await.unwrap();
    assert_eq!((report.horizon, report.txns_deleted), (held.clone(), 3));
    let want = held.missing_from(&Summary::new());
    let batch = store.txns_for_async(&want, usize::MAX).await.unwrap();
    assert!(batch.txns.is_empty() && batch.ids.is_empty() && !batch.pruned.is_empty());
    assert_eq!(store.compact_async(10).await.unwrap(), 1);
    store.forget_peer_async(peer).await.unwrap();
    assert_eq!(store.status_async().await.unwrap().known_peers, 0);
    store.close_async().await.unwrap();
    // Closed for good: the directory can be opened again.
    let reopened = Store::open(dir.path(), OpenOptions::default()).unwrap();
    reopened.close_async().await.unwrap();
}
