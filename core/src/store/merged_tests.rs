//! Merged local transactions (`store::merged`): callers queued behind the writer share one
//! transaction, each keeps its own outcome, and what replicates converges.
//!
//! Each test holds SQLite's write lock from its own connection, so the writer's first command
//! waits in `BEGIN IMMEDIATE` while the others queue (`Store::queued_commands`); releasing the
//! lock lets the writer take them all in one group (see [`queued`]). The waits are bounded only
//! to turn a hang into a failure.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::change::Txn;
use crate::ids::ReplicaId;
use crate::schema::Schema;
use crate::store::{Committed, DB_FILE, OpenOptions, Store, WriteError, WriteOp};

const SCHEMA: &str = r#"
version = 1
strict = true

[collections.items.fields]
n = { type = "integer" }
note = { type = "text" }
"#;

/// Bounds each wait and is the writer's busy timeout (its `BEGIN` waits for the test's lock).
const GUARD: Duration = Duration::from_secs(120);

fn open(dir: &Path) -> Store {
    let opts = OpenOptions {
        schema: Some(Schema::from_toml(SCHEMA).unwrap()),
        busy_timeout: GUARD,
        ..Default::default()
    };
    Store::open(dir, opts).unwrap()
}

fn insert(id: &str, n: i64) -> WriteOp {
    WriteOp::Insert {
        collection: "items".into(),
        value: json!({ "id": id, "n": n }),
    }
}

/// An insert of a 600 kB record: two fit one transaction each, but not one together.
fn big_insert(id: &str) -> WriteOp {
    WriteOp::Insert {
        collection: "items".into(),
        value: json!({ "id": id, "note": "x".repeat(600_000) }),
    }
}

/// Runs every caller's `transact` in one group, queued behind the test's write lock, and
/// returns their outcomes in the callers' order.
///
/// A first command (forgetting an unknown peer: it writes nothing) is sent alone and must have
/// left the queue, i.e. the writer took it and waits in `BEGIN`; then every caller is sent and
/// must be queued. So when the lock goes, the writer takes them all in that group. The tasks run
/// on a current-thread runtime: a spawned task has sent its command once the test task yielded.
fn queued(store: &Store, callers: Vec<Vec<WriteOp>>) -> Vec<Result<Committed, WriteError>> {
    let lock = rusqlite::Connection::open(store.dir().join(DB_FILE)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = store.clone();
        let first = tokio::spawn(async move { s.forget_peer_async(ReplicaId::random()).await });
        tokio::task::yield_now().await;
        wait_for(|| store.queued_commands() == 0).await;
        let count = callers.len();
        let tasks: Vec<_> = callers
            .into_iter()
            .map(|ops| {
                let s = store.clone();
                tokio::spawn(async move { s.transact_async(ops).await })
            })
            .collect();
        tokio::task::yield_now().await;
        wait_for(|| store.queued_commands() == count).await;
        lock.execute_batch("ROLLBACK").unwrap();
        first.await.unwrap().unwrap();
        let mut out = Vec::with_capacity(count);
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
}

/// Polls `done` until it holds; panics after [`GUARD`].
async fn wait_for(mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < GUARD, "the commands did not queue");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every transaction the store holds, decoded.
fn all_txns(store: &Store) -> Vec<Txn> {
    let summary = store.summary().unwrap();
    let want: Vec<_> = summary
        .iter()
        .map(|(origin, seqs)| (*origin, 1..=seqs.max()))
        .collect();
    let batch = store.txns_for(&want, usize::MAX).unwrap();
    batch.txns.iter().map(|t| Txn::decode(t).unwrap()).collect()
}

/// `a` and `b` show the same `items` rows for `ids`.
fn assert_same_rows(a: &Store, b: &Store, ids: &[&str]) {
    for id in ids {
        assert_eq!(
            a.get("items", id).unwrap(),
            b.get("items", id).unwrap(),
            "{id}"
        );
    }
}

#[test]
fn queued_callers_share_one_transaction_and_keep_their_own_refusals() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    store.transact(vec![insert("taken", 0)]).unwrap();
    let stats = store.commit_stats();
    let callers = vec![
        vec![insert("a", 1)],
        vec![insert("taken", 2)], // duplicate key: refused alone
        vec![insert("b", 3), insert("taken", 4)], // its second op fails: b is not written
        vec![WriteOp::Insert {
            collection: "nope".into(), // unknown collection: refused before writing
            value: json!({ "id": "c" }),
        }],
        vec![WriteOp::Update {
            collection: "items".into(),
            value: json!({ "id": "taken", "note": "updated" }),
        }],
        vec![WriteOp::Update {
            collection: "items".into(),
            value: json!({ "id": "absent", "note": "x" }), // not live: NotFound
        }],
        vec![insert("d", 5), insert("e", 6)],
    ];
    let out = queued(&store, callers);

    assert!(
        matches!(out[1], Err(WriteError::Duplicate { .. })),
        "{:?}",
        out[1]
    );
    assert!(
        matches!(out[2], Err(WriteError::Duplicate { .. })),
        "{:?}",
        out[2]
    );
    assert!(
        matches!(out[3], Err(WriteError::UnknownCollection(_))),
        "{:?}",
        out[3]
    );
    assert!(
        matches!(out[5], Err(WriteError::NotFound { .. })),
        "{:?}",
        out[5]
    );
    let ok: Vec<&Committed> = [0, 4, 6]
        .iter()
        .map(|&i| out[i].as_ref().unwrap())
        .collect();
    assert!(
        ok.iter().all(|c| c.txn == ok[0].txn),
        "one shared transaction"
    );
    assert_eq!(ok[2].changes.len(), 2);
    assert_eq!(ok[1].changes[0].value.as_ref().unwrap()["note"], "updated");

    let after = store.commit_stats();
    assert_eq!(
        after.groups - stats.groups,
        1,
        "one commit for every caller"
    );
    for (id, live) in [
        ("a", true),
        ("b", false),
        ("c", false),
        ("d", true),
        ("e", true),
    ] {
        let collection = if id == "c" { "nope" } else { "items" };
        assert_eq!(store.get(collection, id).unwrap().is_some(), live, "{id}");
    }
    assert_eq!(store.get("items", "taken").unwrap().unwrap()["n"], 0);
    assert!(store.get("items", "absent").unwrap().is_none());

    // Two transactions in all: the first insert, then the merged one with the four writes of
    // the callers that committed, in the callers' order.
    let txns = all_txns(&store);
    assert_eq!(txns.len(), 2);
    assert_eq!(txns[1].id, ok[0].txn);
    assert_eq!(txns[1].ops.len(), 4);

    // A fresh replica applying what this one relays shows the same rows.
    let other_dir = TempDir::new().unwrap();
    let other = open(other_dir.path());
    let report = other.apply_remote(txns).unwrap();
    assert_eq!(report.applied, 2, "{report:?}");
    assert_same_rows(&other, &store, &["a", "b", "d", "e", "taken", "absent"]);
    store.close().unwrap();
    other.close().unwrap();
}

/// Callers whose writes fit one transaction each, but not together: the merged transaction
/// exceeds the size limit, and each caller commits alone instead of failing. (Should the
/// group's time budget split them first, in a slow debug build, they commit alone anyway; the
/// assertions hold either way.)
#[test]
fn callers_too_large_together_commit_alone() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let callers: Vec<Vec<WriteOp>> = (0..2)
        .map(|i| vec![big_insert(&format!("big{i}"))])
        .collect();
    let out = queued(&store, callers);
    let mut txns: Vec<_> = out.iter().map(|r| r.as_ref().unwrap().txn).collect();
    txns.sort_by_key(|t| t.seq);
    txns.dedup();
    assert_eq!(txns.len(), 2, "each caller in its own transaction");
    for i in 0..2 {
        let row = store.get("items", &format!("big{i}")).unwrap().unwrap();
        assert_eq!(row["note"].as_str().map(str::len), Some(600_000));
    }
    assert_eq!(all_txns(&store).len(), 2);
    store.close().unwrap();
}

/// One record written by several merged callers: each sees its own write applied on top of
/// the earlier callers' (they run in order within the transaction), and a refused caller's
/// write to it leaves no trace in the document either.
#[test]
fn merged_callers_writing_one_record_apply_in_order() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    store.transact(vec![insert("r", 0)]).unwrap();
    let put = |note: &str| WriteOp::Update {
        collection: "items".into(),
        value: json!({ "id": "r", "note": note }),
    };
    let callers = vec![
        vec![put("one")],
        vec![put("refused"), insert("r", 9)], // duplicate: both ops rolled back
        vec![put("two")],
    ];
    let out = queued(&store, callers);
    assert!(out[1].is_err());
    let notes: Vec<Value> = [0, 2]
        .iter()
        .map(|&i| out[i].as_ref().unwrap().changes[0].value.clone().unwrap()["note"].clone())
        .collect();
    // The writer takes the queued callers in arrival order, which the threads do not fix:
    // whichever ran last shows in the row.
    let row = store.get("items", "r").unwrap().unwrap();
    assert!(notes.contains(&row["note"]), "{row}");
    assert_ne!(row["note"], "refused");
    // Reopened, the document as stored agrees: a later write materializes it.
    store.close().unwrap();
    let store = open(dir.path());
    let bump = WriteOp::Update {
        collection: "items".into(),
        value: json!({ "id": "r", "n": 1 }),
    };
    let later = store.transact(vec![bump]).unwrap();
    let shown = later.changes[0].value.clone().unwrap();
    assert_eq!(shown["note"], row["note"]);
    assert_eq!(shown["n"], 1);
    store.close().unwrap();
}

/// The merged transaction's stored ops with, for each, whether its change was left out
/// (lent by a `docs` row), read straight from the database.
fn stored_left_out(dir: &Path, txn: crate::ids::TxnId) -> Vec<bool> {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    let bytes: Vec<u8> = conn
        .query_row(
            "SELECT bytes FROM txns WHERE origin = ?1 AND seq = ?2",
            rusqlite::params![&txn.origin.0[..], txn.seq as i64],
            |r| r.get(0),
        )
        .unwrap();
    Txn::decode(&bytes)
        .unwrap()
        .ops
        .iter()
        .map(|op| matches!(op, crate::change::Op::Doc { change, .. } if change.is_empty()))
        .collect()
}

/// Callers of one merged transaction create, delete and re-create records and one is refused
/// after writing a record an earlier caller created: only the rows that still exist at the end
/// lend their first change (a record created and deleted within the merged transaction keeps
/// its change in), the refused caller leaves nothing in the cached document, one event names
/// the shared transaction, and the transaction relays unchanged through later compactions and
/// deletes.
#[test]
fn merged_callers_creating_and_deleting_records_lend_only_what_survives() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    store.transact(vec![insert("taken", 0)]).unwrap();
    let mut events = store.subscribe();
    let update = |id: &str, note: &str| WriteOp::Update {
        collection: "items".into(),
        value: json!({ "id": id, "note": note }),
    };
    let delete = |id: &str| WriteOp::Delete {
        collection: "items".into(),
        id: id.into(),
    };
    let callers = vec![
        vec![insert("x", 1)],
        vec![delete("x")],
        vec![insert("y", 2)],
        vec![update("y", "refused"), insert("taken", 9)], // duplicate: rolled back alone
        vec![update("y", "kept")],
        vec![insert("x", 3)], // re-creates x (a new incarnation)
    ];
    let out = queued(&store, callers);
    assert!(
        matches!(out[3], Err(WriteError::Duplicate { .. })),
        "{:?}",
        out[3]
    );
    let txn = out[0].as_ref().unwrap().txn;
    for i in [0, 1, 2, 4, 5] {
        assert_eq!(out[i].as_ref().unwrap().txn, txn, "caller {i}");
    }
    match events.try_recv().unwrap() {
        crate::store::StoreEvent::Committed {
            txns,
            local,
            changes,
        } => {
            assert_eq!((&txns[..], local, changes.len()), (&[txn][..], true, 5));
        }
    }
    assert!(
        events.try_recv().is_err(),
        "one event for the merged transaction"
    );

    // x's first incarnation was deleted by the transaction that created it: its change stays.
    assert_eq!(
        stored_left_out(dir.path(), txn),
        [false, false, true, false, true],
        "x created, x deleted, y created, y updated, x re-created"
    );
    let sent = all_txns(&store);
    let other_dir = TempDir::new().unwrap();
    let other = open(other_dir.path());
    let report = other.apply_remote(sent.clone()).unwrap();
    assert!(
        report.rejected.is_empty() && report.parked == 0,
        "{report:?}"
    );
    assert_same_rows(&other, &store, &["x", "y", "taken"]);
    assert_eq!(store.get("items", "x").unwrap().unwrap()["n"], 3);
    // The receiving replica lends the same changes and relays what it received.
    assert_eq!(
        stored_left_out(other_dir.path(), txn),
        [false, false, true, false, true]
    );
    assert_eq!(all_txns(&other), sent);

    // The cached document of y holds no trace of the refused caller.
    let bump = WriteOp::Update {
        collection: "items".into(),
        value: json!({ "id": "y", "n": 7 }),
    };
    let shown = store.transact(vec![bump]).unwrap().changes[0]
        .value
        .clone()
        .unwrap();
    assert_eq!(shown, json!({ "id": "y", "n": 7, "note": "kept" }));

    // Rewriting and deleting the lending rows gives their changes back: relayed unchanged.
    assert!(store.compact(10).unwrap() >= 1);
    store.delete("items", "x").unwrap();
    let relayed: Vec<Txn> = all_txns(&store).into_iter().take(sent.len()).collect();
    assert_eq!(relayed, sent);
    store.close().unwrap();
    other.close().unwrap();
}

/// A merged transaction too large to store, among whose callers one is refused and one
/// updates a record another created: run alone, each caller gets the outcome it would have had
/// (the refusal again, the update on top of the committed insert), nothing of the rolled-back
/// attempt stays in the documents, and what replicates converges.
#[test]
fn callers_run_alone_after_a_failed_merge_keep_their_order_and_refusals() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    store.transact(vec![insert("taken", 0)]).unwrap();
    let bump = |n: i64| WriteOp::Update {
        collection: "items".into(),
        value: json!({ "id": "big0", "n": n }),
    };
    let callers = vec![
        vec![big_insert("big0")],
        vec![insert("taken", 1)],
        vec![bump(5)],
        vec![big_insert("big1")],
    ];
    let out = queued(&store, callers);
    assert!(
        matches!(out[1], Err(WriteError::Duplicate { .. })),
        "{:?}",
        out[1]
    );
    let bumped = out[2].as_ref().unwrap().changes[0].value.clone().unwrap();
    assert_eq!(bumped["n"], 5);
    assert_eq!(bumped["note"].as_str().map(str::len), Some(600_000));
    // Together they fail; alone (or split by the group's time budget in a slow build) the
    // callers commit in order and the two large inserts never share a transaction.
    let mut seqs: Vec<u64> = [0, 2, 3]
        .iter()
        .map(|&i| out[i].as_ref().unwrap().txn.seq)
        .collect();
    assert!(
        seqs[0] <= seqs[1] && seqs[1] <= seqs[2] && seqs[0] < seqs[2],
        "{seqs:?}"
    );
    seqs.dedup();
    assert_eq!(store.get("items", "taken").unwrap().unwrap()["n"], 0);

    let later = store.transact(vec![bump(6)]).unwrap().changes[0]
        .value
        .clone()
        .unwrap();
    assert_eq!(later["n"], 6);
    assert_eq!(later["note"].as_str().map(str::len), Some(600_000));

    let txns = all_txns(&store);
    assert_eq!(
        txns.len(),
        seqs.len() + 2,
        "taken, the callers', the later update"
    );
    let other_dir = TempDir::new().unwrap();
    let other = open(other_dir.path());
    let report = other.apply_remote(txns).unwrap();
    assert!(
        report.rejected.is_empty() && report.parked == 0,
        "{report:?}"
    );
    assert_same_rows(&other, &store, &["big0", "big1", "taken"]);
    store.close().unwrap();
    other.close().unwrap();
}

/// A transaction with an idempotency key queued between mergeable callers is never merged: it
/// commits as its own transaction (the one its remembered answer names), between the callers
/// before it and those after, all in one group.
#[test]
fn an_idempotent_transaction_is_never_merged() {
    use crate::store::{IdempotencyKey, Once};
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let lock = rusqlite::Connection::open(store.dir().join(DB_FILE)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let stats = store.commit_stats();
    let (a, once, b, c) = rt.block_on(async {
        let s = store.clone();
        let first = tokio::spawn(async move { s.forget_peer_async(ReplicaId::random()).await });
        tokio::task::yield_now().await;
        wait_for(|| store.queued_commands() == 0).await;
        let s = store.clone();
        let a = tokio::spawn(async move { s.transact_async(vec![insert("a", 1)]).await });
        tokio::task::yield_now().await;
        let s = store.clone();
        let key =
            IdempotencyKey::new("k", [7; 32], |c| c.txn.seq.to_string().into_bytes()).unwrap();
        let once =
            tokio::spawn(async move { s.transact_once_async(vec![insert("o", 2)], key).await });
        tokio::task::yield_now().await;
        let tasks: Vec<_> = [("b", 3), ("c", 4)]
            .into_iter()
            .map(|(id, n)| {
                let s = store.clone();
                tokio::spawn(async move { s.transact_async(vec![insert(id, n)]).await })
            })
            .collect();
        tokio::task::yield_now().await;
        wait_for(|| store.queued_commands() == 4).await;
        lock.execute_batch("ROLLBACK").unwrap();
        first.await.unwrap().unwrap();
        let mut rest = Vec::new();
        for t in tasks {
            rest.push(t.await.unwrap().unwrap());
        }
        let c = rest.pop().unwrap();
        let b = rest.pop().unwrap();
        (
            a.await.unwrap().unwrap(),
            once.await.unwrap().unwrap(),
            b,
            c,
        )
    });
    let Once::Applied { committed, answer } = once else {
        panic!("the first use of the key applies");
    };
    assert_eq!(answer, committed.txn.seq.to_string().into_bytes());
    assert_eq!(store.commit_stats().groups - stats.groups, 1, "one group");
    assert_eq!(b.txn, c.txn, "the callers after it share a transaction");
    assert!(a.txn.seq < committed.txn.seq && committed.txn.seq < b.txn.seq);
    let txns = all_txns(&store);
    assert_eq!(txns.len(), 3);
    assert_eq!(txns[1].id, committed.txn);
    assert_eq!(txns[1].ops.len(), 1);
    store.close().unwrap();
}
