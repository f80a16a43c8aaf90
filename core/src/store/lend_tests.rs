//! Lent first changes (see `docs`): a local transaction stored without the changes that created
//! `docs` rows relays exactly what it committed, whatever later happens to those rows.

use rusqlite::Connection;
use serde_json::json;

use crate::change::{Op, Txn};
use crate::ids::ReplicaId;
use crate::store::remote::tests::all_txns;
use crate::store::{DB_FILE, OpenOptions, Store, WriteOp};

fn open(dir: &std::path::Path) -> Store {
    let opts = OpenOptions {
        doc_cache: 1,
        ..Default::default()
    };
    Store::open(dir, opts).unwrap()
}

/// The stored (possibly packed) transactions, decoded, with their `packed` flag.
fn stored(dir: &std::path::Path) -> Vec<(Txn, bool)> {
    let conn = Connection::open(dir.join(DB_FILE)).unwrap();
    let mut stmt = conn
        .prepare("SELECT bytes, packed FROM txns ORDER BY origin, seq")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get(1)?)))
        .unwrap()
        .map(|row| {
            let (bytes, packed) = row.unwrap();
            (Txn::decode(&bytes).unwrap(), packed)
        })
        .collect()
}

/// Empty (left out) changes per op of a stored transaction.
fn left_out(txn: &Txn) -> Vec<bool> {
    txn.ops
        .iter()
        .map(|op| matches!(op, Op::Doc { change, .. } if change.is_empty()))
        .collect()
}

fn put(id: &str, n: i64) -> WriteOp {
    WriteOp::Put {
        collection: "c".into(),
        value: json!({"id": id, "n": n}),
        recreate: false,
    }
}

/// A fresh replica applying everything `from` relays ends up with `from`'s rows.
fn check_converges(from: &Store, ids: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let other = Store::open(dir.path(), OpenOptions::default()).unwrap();
    let report = other.apply_remote(all_txns(from)).unwrap();
    assert!(
        report.parked == 0 && report.rejected.is_empty(),
        "{report:?}"
    );
    for id in ids {
        assert_eq!(
            other.get("c", id).unwrap(),
            from.get("c", id).unwrap(),
            "{id}"
        );
    }
    assert_eq!(other.summary().unwrap(), from.summary().unwrap());
}

/// The changes that created records are stored once (left out of the stored transaction) and
/// relayed whole; updates, a delete, a compaction, a re-creation and a reopen leave what the
/// transaction relays unchanged, and each state rewrite or deletion puts its change back.
#[test]
fn lent_changes_are_stored_once_and_relayed_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.transact(vec![put("a", 1), put("b", 2), put("c", 3), put("a", 4)])
        .unwrap();
    let first = all_txns(&s).remove(0);
    assert!(left_out(&first).iter().all(|l| !l), "relayed whole");
    let (packed, is_packed) = stored(dir.path()).remove(0);
    assert!(is_packed);
    assert_eq!(
        left_out(&packed),
        [true, true, true, false],
        "the creating changes"
    );
    assert!(packed.encode().len() < first.encode().len());

    s.put("c", json!({"id": "a", "n": 5})).unwrap();
    s.delete("c", "b").unwrap();
    assert_eq!(
        left_out(&stored(dir.path())[0].0),
        [true, false, true, false]
    );
    assert_eq!(s.compact(10).unwrap(), 1, "a has appended chunks");
    assert_eq!(
        left_out(&stored(dir.path())[0].0),
        [false, false, true, false]
    );
    s.transact(vec![WriteOp::Put {
        collection: "c".into(),
        value: json!({"id": "b", "n": 6}),
        recreate: true,
    }])
    .unwrap();
    assert_eq!(
        all_txns(&s)[0],
        first,
        "what the first transaction relays never changed"
    );
    check_converges(&s, &["a", "b", "c"]);
    s.close().unwrap();

    let s = open(dir.path());
    assert_eq!(all_txns(&s)[0], first);
    assert_eq!(s.get("c", "c").unwrap().unwrap()["n"], json!(3));
    check_converges(&s, &["a", "b", "c"]);
}

/// A state rewritten or deleted in the transaction that created it lends nothing: the stored
/// transaction keeps those changes.
#[test]
fn a_state_rewritten_by_its_own_transaction_keeps_its_change() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut ops = vec![put("gone", 1), put("kept", 1)];
    ops.push(WriteOp::Delete {
        collection: "c".into(),
        id: "gone".into(),
    });
    // The 64th change of `hot` rewrites its state as a snapshot within the transaction.
    ops.extend((0..64).map(|n| put("hot", n)));
    s.transact(ops).unwrap();
    let (packed, _) = stored(dir.path()).remove(0);
    let left = left_out(&packed);
    assert_eq!(
        &left[..4],
        [false, true, false, false],
        "gone, kept, delete, hot"
    );
    assert!(left.iter().skip(4).all(|l| !l));
    check_converges(&s, &["gone", "kept", "hot"]);
}

/// GC deletes lending transactions; a later deletion or compaction of their records has nothing
/// to give back and works.
#[test]
fn states_outlive_their_collected_lenders() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.transact(vec![put("a", 1), put("b", 1)]).unwrap();
    s.record_peer_ack(ReplicaId([9; 16]), s.summary().unwrap())
        .unwrap();
    assert_eq!(s.gc().unwrap().txns_deleted, 1);
    s.put("c", json!({"id": "a", "n": 2})).unwrap();
    s.delete("c", "b").unwrap();
    assert_eq!(s.compact(10).unwrap(), 1);
    assert_eq!(s.get("c", "a").unwrap().unwrap()["n"], json!(2));
    assert!(s.get("c", "b").unwrap().is_none());
}

/// A store written before rows could lend (the `docs` columns absent, transactions stored
/// whole) opens, relays and updates its records, and lends from its new records on.
#[test]
fn a_store_from_before_lending_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.transact(vec![put("old", 1), put("older", 2)]).unwrap();
    let first = all_txns(&s).remove(0);
    s.close().unwrap();
    // Back to the layout before `0004_docs_lend_first_changes` (real states, see `derived`).
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute("UPDATE txns SET bytes = ?1, packed = 0", [first.encode()])
        .unwrap();
    for op in &first.ops {
        if let Op::Doc { id, change, .. } = op {
            conn.execute(
                "UPDATE docs SET state = ?2 WHERE id = ?1",
                rusqlite::params![id, change],
            )
            .unwrap();
        }
    }
    conn.execute_batch(
        "ALTER TABLE docs DROP COLUMN lender_origin;
         ALTER TABLE docs DROP COLUMN lender_seq;
         ALTER TABLE docs DROP COLUMN lent;
         DELETE FROM migrations WHERE name = '0004_docs_lend_first_changes';
         DELETE FROM migrations WHERE name = '0005_docs_derived_first_changes';",
    )
    .unwrap();
    drop(conn);

    let s = open(dir.path());
    assert_eq!(all_txns(&s)[0], first);
    s.put("c", json!({"id": "old", "n": 3})).unwrap();
    s.delete("c", "older").unwrap();
    assert_eq!(s.compact(10).unwrap(), 1);
    s.put("c", json!({"id": "new", "n": 4})).unwrap();
    let txns = stored(dir.path());
    assert!(!txns[0].1 && left_out(&txns[0].0).iter().all(|l| !l));
    assert_eq!(left_out(&txns[3].0), [true], "new records lend");
    assert_eq!(all_txns(&s)[0], first);
    check_converges(&s, &["old", "older", "new"]);
}

/// A replica that receives transactions lends their creating changes too: it stores each
/// change once and relays exactly what it received, after its own updates, deletes and
/// compactions; a change whose state its own transaction freed or rewrote stays in.
#[test]
fn received_transactions_lend_and_relay_unchanged() {
    let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(from.path());
    a.transact(vec![put("a", 1), put("b", 2), put("c", 3), put("a", 4)])
        .unwrap();
    let mut ops = vec![put("gone", 1), put("kept", 1)];
    ops.push(WriteOp::Delete {
        collection: "c".into(),
        id: "gone".into(),
    });
    ops.extend((0..64).map(|n| put("hot", n)));
    a.transact(ops).unwrap();
    let sent = all_txns(&a);
    let b = open(to.path());
    let report = b.apply_remote(sent.clone()).unwrap();
    assert_eq!(report.applied, 2, "{report:?}");
    let txns = stored(to.path());
    assert!(txns[0].1 && txns[1].1, "both stored packed");
    assert_eq!(left_out(&txns[0].0), [true, true, true, false]);
    let left = left_out(&txns[1].0);
    assert_eq!(
        &left[..4],
        [false, true, false, false],
        "gone, kept, delete, hot"
    );
    assert!(left.iter().skip(4).all(|l| !l));
    assert_eq!(all_txns(&b), sent, "relayed as received");
    check_converges(&b, &["a", "b", "c", "gone", "kept", "hot"]);

    b.put("c", json!({"id": "a", "n": 5})).unwrap();
    b.delete("c", "b").unwrap();
    assert_eq!(b.compact(10).unwrap(), 1, "a has appended chunks");
    let first = stored(to.path())
        .into_iter()
        .find(|(t, _)| t.id == sent[0].id);
    assert_eq!(left_out(&first.unwrap().0), [false, false, true, false]);
    let relayed: Vec<Txn> = all_txns(&b)
        .into_iter()
        .filter(|t| t.id.origin == sent[0].id.origin)
        .collect();
    assert_eq!(relayed, sent, "unchanged by local writes");
    // Two origins now: a fresh replica may park b's updates until a's transactions arrive.
    let dir = tempfile::tempdir().unwrap();
    let other = open(dir.path());
    let report = other.apply_remote(all_txns(&b)).unwrap();
    assert!(report.rejected.is_empty() && report.parked == report.unparked);
    for id in ["a", "b", "c", "gone", "kept", "hot"] {
        assert_eq!(other.get("c", id).unwrap(), b.get("c", id).unwrap(), "{id}");
    }
}

/// A transaction unparked after its dependency arrived was stored whole when it was parked: the
/// records it creates lend nothing, and it relays as received.
#[test]
fn an_unparked_transaction_lends_nothing() {
    let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(from.path());
    a.transact(vec![put("a", 1)]).unwrap();
    a.transact(vec![put("a", 2), put("z", 1)]).unwrap();
    let sent = all_txns(&a);
    let b = open(to.path());
    assert_eq!(b.apply_remote(vec![sent[1].clone()]).unwrap().parked, 1);
    let report = b.apply_remote(vec![sent[0].clone()]).unwrap();
    assert_eq!((report.applied, report.unparked), (1, 1), "{report:?}");
    let txns = stored(to.path());
    assert!(txns[0].1 && !txns[1].1, "the unparked one is stored whole");
    assert_eq!(left_out(&txns[1].0), [false, false]);
    assert_eq!(all_txns(&b), sent);
    assert_eq!(b.get("c", "z").unwrap().unwrap()["n"], json!(1));
    check_converges(&b, &["a", "z"]);
}

/// A received transaction lends its creating change while a later update of the record waits
/// parked for it; unparking appends to the lending row, a received delete frees it (giving the
/// change back), and a compaction of the rest leaves every transaction relayed as received.
#[test]
fn a_received_lender_survives_unparking_and_a_received_delete() {
    let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(from.path());
    a.transact(vec![put("x", 1), put("y", 1)]).unwrap();
    a.transact(vec![put("x", 2)]).unwrap();
    a.delete("c", "x").unwrap();
    let sent = all_txns(&a);
    let b = open(to.path());
    assert_eq!(b.apply_remote(vec![sent[1].clone()]).unwrap().parked, 1);
    let report = b.apply_remote(vec![sent[0].clone()]).unwrap();
    assert_eq!((report.applied, report.unparked), (1, 1), "{report:?}");
    assert_eq!(left_out(&stored(to.path())[0].0), [true, true]);
    assert_eq!(all_txns(&b), sent[..2]);
    assert_eq!(b.get("c", "x").unwrap().unwrap()["n"], json!(2));
    assert_eq!(b.apply_remote(vec![sent[2].clone()]).unwrap().applied, 1);
    assert_eq!(
        left_out(&stored(to.path())[0].0),
        [false, true],
        "the delete gave x's change back"
    );
    b.put("c", json!({"id": "y", "n": 5})).unwrap();
    assert_eq!(b.compact(10).unwrap(), 1);
    let relayed: Vec<Txn> = all_txns(&b)
        .into_iter()
        .filter(|t| t.id.origin == sent[0].id.origin)
        .collect();
    assert_eq!(relayed, sent);
    // Two origins now: a fresh replica may park b's update until a's transactions arrive.
    let dir = tempfile::tempdir().unwrap();
    let other = open(dir.path());
    let report = other.apply_remote(all_txns(&b)).unwrap();
    assert!(report.rejected.is_empty() && report.parked == report.unparked);
    for id in ["x", "y"] {
        assert_eq!(other.get("c", id).unwrap(), b.get("c", id).unwrap(), "{id}");
    }
}

/// A received transaction may hold a document op that is never decoded (here to a deleted
/// incarnation) with no change bytes at all. Storing the transaction packed for the record it
/// creates would leave two empty changes in it, and relaying it would look for a lent change
/// of the dead op that no row has: it is stored whole and relays as received.
#[test]
fn a_received_empty_change_for_a_dead_incarnation_keeps_the_txn_relayable() {
    let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(from.path());
    a.transact(vec![put("d", 1)]).unwrap();
    a.delete("c", "d").unwrap();
    a.transact(vec![put("y", 1)]).unwrap();
    let mut sent = all_txns(&a);
    sent[2].ops.insert(
        0,
        Op::Doc {
            collection: "c".into(),
            id: "d".into(),
            incarnation: 1,
            change: Vec::new(),
        },
    );
    let b = open(to.path());
    let report = b.apply_remote(sent.clone()).unwrap();
    assert_eq!(report.applied, 3, "{report:?}");
    assert_eq!(b.get("c", "y").unwrap().unwrap()["n"], json!(1));
    assert_eq!(all_txns(&b), sent, "relayed as received");
}
