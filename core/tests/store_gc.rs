//! Garbage collection below the all-peers horizon, and compaction of document states.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use meshlite_core::store::{OpenOptions, Store};
use meshlite_core::{ReplicaId, Summary, Txn};
use serde_json::json;
use tempfile::TempDir;

fn open(dir: &TempDir) -> Store {
    Store::open(dir.path(), OpenOptions::default()).unwrap()
}

#[test]
fn gc_prunes_only_what_every_known_peer_holds() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir);
    for i in 0..10 {
        s.put("c", json!({"id": format!("r{i}"), "v": i})).unwrap();
    }
    let me = s.replica_id();
    let all = s.summary().unwrap();
    assert_eq!(
        s.gc().unwrap().txns_deleted,
        0,
        "no known peers: nothing is collected"
    );

    let (p1, p2) = (ReplicaId::random(), ReplicaId::random());
    let upto = |n| {
        let mut h = Summary::new();
        for seq in 1..=n {
            h.insert(meshlite_core::TxnId { origin: me, seq });
        }
        h
    };
    s.record_peer_ack(p1, upto(8)).unwrap();
    s.record_peer_ack(p2, upto(4)).unwrap();
    let report = s.gc().unwrap();
    assert_eq!(report.txns_deleted, 4);

    let want = all.missing_from(&Summary::new());
    let batch = s.txns_for(&want, usize::MAX).unwrap();
    assert_eq!(batch.pruned, vec![(me, 1..=4)]);
    let seqs: Vec<u64> = batch
        .txns
        .iter()
        .map(|b| Txn::decode(b).unwrap().id.seq)
        .collect();
    assert_eq!(seqs, (5..=10).collect::<Vec<_>>());
    let one = s.txns_for(&want, 1).unwrap();
    assert_eq!(
        (one.txns.len(), one.more),
        (1, true),
        "a budget admits at least one txn"
    );

    // A peer that left no longer holds the horizon back; acks survive a reopen.
    s.forget_peer(p2).unwrap();
    s.close().unwrap();
    let s = open(&dir);
    assert_eq!(s.gc().unwrap().txns_deleted, 4);
    let status = s.status().unwrap();
    assert_eq!(
        (status.stored_txns, status.txn_count, status.known_peers),
        (2, 10, 1)
    );
    assert_eq!(status.gc_floor.txn_count(), 8);
    assert_eq!(
        s.get("c", "r0").unwrap().unwrap()["v"],
        json!(0),
        "data is untouched"
    );
}

#[test]
fn deleted_records_free_their_state_and_compaction_keeps_content() {
    let dir = TempDir::new().unwrap();
    let s = Store::open(
        dir.path(),
        OpenOptions {
            doc_cache: 1,
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..20 {
        s.put("c", json!({"id": "hot", "n": i})).unwrap();
    }
    s.put("c", json!({"id": "gone", "n": 1})).unwrap();
    s.delete("c", "gone").unwrap();
    let compacted = s.compact(10).unwrap();
    assert_eq!(compacted, 1, "only the record with appended chunks");
    assert_eq!(s.compact(10).unwrap(), 0);
    s.put("c", json!({"id": "hot", "extra": true})).unwrap();
    s.close().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(meshlite_core::store::DB_FILE)).unwrap();
    let docs: Vec<(String, i64)> = conn
        .prepare("SELECT id, chunks FROM docs ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        docs,
        vec![("hot".to_owned(), 1)],
        "deleted record's state freed; snapshot + 1 chunk"
    );
    drop(conn);
    let s = open(&dir);
    assert_eq!(
        s.get("c", "hot").unwrap().unwrap(),
        json!({"id": "hot", "n": 19, "extra": true})
    );
}

#[test]
fn status_reports_peer_lag_from_acks() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), OpenOptions::default()).unwrap();
    for i in 0..5 {
        s.put("jobs", serde_json::json!({ "id": format!("j{i}") }))
            .unwrap();
    }
    let peer = meshlite_core::ReplicaId::random();
    let mut acked = meshlite_core::Summary::new();
    acked.set(s.replica_id(), meshlite_core::SeqSet::up_to(2));
    s.record_peer_ack(peer, acked).unwrap();
    let status = s.status().unwrap();
    assert_eq!(status.peers.len(), 1);
    assert_eq!(status.peers[0].replica, peer);
    assert_eq!(status.peers[0].missing, 3);
    s.close().unwrap();
}

#[test]
fn partial_replica_keeps_only_its_collections_and_stays_gap_free() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Store::open(da.path(), OpenOptions::default()).unwrap();
    let only_jobs = OpenOptions {
        replicate: Some(["jobs".to_owned()].into()),
        ..OpenOptions::default()
    };
    let b = Store::open(db.path(), only_jobs).unwrap();
    a.put("jobs", json!({"id": "j1"})).unwrap();
    a.put("tasks", json!({"id": "t1"})).unwrap();
    a.put("jobs", json!({"id": "j2"})).unwrap();
    let mine = a.summary().unwrap();
    let batch = a
        .txns_for(&mine.missing_from(&Summary::new()), usize::MAX)
        .unwrap();
    let txns: Vec<Txn> = batch.txns.iter().map(|t| Txn::decode(t).unwrap()).collect();
    let report = b.apply_remote(txns).unwrap();
    assert_eq!((report.applied, report.filtered), (2, 1));
    assert_eq!(
        b.summary().unwrap(),
        mine,
        "filtered transactions count as held"
    );
    assert!(b.get("tasks", "t1").unwrap().is_none());
    assert!(b.get("jobs", "j2").unwrap().is_some());
    // It cannot serve what it did not keep: only the two jobs transactions come back.
    let served = b
        .txns_for(&mine.missing_from(&Summary::new()), usize::MAX)
        .unwrap();
    assert_eq!(served.txns.len(), 2);
    a.close().unwrap();
    b.close().unwrap();
}
