//! Derived first changes of counter records (PMOVES-like `tasks`) on real SQLite files through
//! every path: insert, update after derive, delete, GC, schema change, relay to a fresh replica,
//! bundle, reopen; and a re-encoding that no longer matches its hash refused on each of them.

use std::path::Path;

use rusqlite::Connection;
use serde_json::{Value, json};

use super::tests::{TASKS, derived_ids, put, real_change, same_rows, tasks};
use crate::ids::ReplicaId;
use crate::schema::Schema;
use crate::store::remote::tests::all_txns;
use crate::store::{DB_FILE, OpenOptions, ReadError, Store, WriteOp};

fn open_with(dir: &Path, schema: &str) -> Store {
    let opts = OpenOptions {
        doc_cache: 1,
        schema: Some(Schema::from_toml(schema).unwrap()),
        ..Default::default()
    };
    Store::open(dir, opts).unwrap()
}

fn task(n: i64) -> Value {
    json!({"status": "queued", "retry_count": n, "created_at": "2026-12-02T00:00:00Z",
           "updated_at": "2026-12-02T00:00:00Z", "agent_id": "7d5e", "done": false})
}

/// A fresh replica with the same schema applying everything `from` relays has `from`'s rows,
/// and derives the received first changes in turn; returns it.
fn converged(from: &Store, ids: &[&str], dir: &Path) -> Store {
    let other = open_with(dir, TASKS);
    let report = other.apply_remote(all_txns(from)).unwrap();
    assert!(
        report.rejected.is_empty() && report.parked == report.unparked,
        "{report:?}"
    );
    same_rows(&other, from, ids);
    assert_eq!(all_txns(&other), all_txns(from));
    other
}

fn increment(id: &str, by: i64) -> WriteOp {
    WriteOp::Increment {
        collection: "c".into(),
        id: id.into(),
        field: "retry_count".into(),
        by,
    }
}

/// Counter records are derived; an increment and a put after derive, a delete while the
/// transaction is stored, GC, a delete after GC, a schema change and a reopen all work, and
/// what is relayed never changes.
#[test]
fn counter_records_are_derived_through_every_path() {
    let (dir, fresh) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = open_with(dir.path(), TASKS);
    let ids = ["a", "b", "c", "d", "e"];
    s.transact(ids.iter().map(|id| put(id, task(1))).collect())
        .unwrap();
    assert_eq!(derived_ids(dir.path()), ids);
    let first = all_txns(&s);
    let b = converged(&s, &ids, fresh.path());
    assert_eq!(derived_ids(fresh.path()), ids, "received and derived");
    drop(b);

    s.transact(vec![increment("a", 2)]).unwrap();
    s.put("c", json!({"id": "b", "status": "running"})).unwrap();
    assert_eq!(s.get("c", "a").unwrap().unwrap()["retry_count"], json!(3));
    s.delete("c", "c").unwrap();
    assert_eq!(derived_ids(dir.path()), ["d", "e"]);
    assert_eq!(all_txns(&s)[0], first[0], "given back as committed");

    // Everything acknowledged: GC drops the transactions; a delete needs no re-encoding.
    s.record_peer_ack(ReplicaId([9; 16]), s.summary().unwrap())
        .unwrap();
    assert!(s.gc().unwrap().txns_deleted > 0);
    s.delete("c", "d").unwrap();
    s.transact(vec![increment("e", 1)]).unwrap();
    s.put("c", put_value("f", task(0))).unwrap();
    assert_eq!(derived_ids(dir.path()), ["f"]);
    assert_eq!(s.get("c", "e").unwrap().unwrap()["retry_count"], json!(2));
    s.close().unwrap();

    // A schema change (a new declared field) re-materializes: derived rows are written out first.
    let wider = format!("{TASKS}title = {{ merge = \"lww\" }}\n");
    let s = open_with(dir.path(), &wider);
    assert!(derived_ids(dir.path()).is_empty());
    assert_eq!(s.get("c", "f").unwrap().unwrap()["retry_count"], json!(0));
    let relayed = all_txns(&s);
    s.put("c", put_value("g", task(4))).unwrap();
    s.close().unwrap();
    let s = open_with(dir.path(), &wider);
    assert_eq!(derived_ids(dir.path()), ["g"]);
    assert_eq!(all_txns(&s)[..relayed.len()], relayed[..]);
}

fn put_value(id: &str, mut value: Value) -> Value {
    value["id"] = json!(id);
    value
}

/// Replaces every derived row's hash prefix, as a build that encodes differently would see it.
fn tamper(dir: &Path) {
    let conn = Connection::open(dir.join(DB_FILE)).unwrap();
    conn.execute(
        "UPDATE docs SET state = CAST(x'00' || zeroblob(8) || substr(state, 10) AS BLOB)
         WHERE substr(state, 1, 1) = x'00'",
        [],
    )
    .unwrap();
}

fn refused<T: std::fmt::Debug, E: std::fmt::Display>(r: Result<T, E>) {
    match r {
        Ok(v) => panic!("accepted: {v:?}"),
        Err(e) => assert!(e.to_string().contains("re-encodes"), "{e}"),
    }
}

/// A re-encoding whose hash is not the stored one is refused with a clear error on relay,
/// update and delete (while its transaction is stored), and never relayed; reads of the row and
/// other records work.
#[test]
fn a_hash_mismatch_is_refused_never_relayed() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_with(dir.path(), TASKS);
    s.transact(vec![put("a", task(1)), put("b", task(2))])
        .unwrap();
    s.transact(vec![put("x", json!({"o": {"nested": 1}}))])
        .unwrap();
    s.close().unwrap();
    tamper(dir.path());
    let s = open_with(dir.path(), TASKS);
    let want = s.summary().unwrap().missing_from(&Default::default());
    let relay = s.txns_for(&want, usize::MAX);
    assert!(matches!(relay, Err(ReadError::Corrupt(_))), "{relay:?}");
    refused(relay);
    refused(s.transact(vec![increment("a", 1)]));
    refused(s.delete("c", "b"));
    assert_eq!(s.get("c", "a").unwrap().unwrap()["retry_count"], json!(1));
    s.put("c", json!({"id": "x", "o": {"nested": 2}})).unwrap();
    assert_eq!(derived_ids(dir.path()), ["a", "b"]);
}

/// The committed bytes of a fixed row: a change of Automerge's encoding, of `put_fields` or of
/// serde_json's parsing fails here before a replica would refuse its own derived records.
#[test]
fn a_fixed_row_reencodes_to_its_golden_bytes() {
    let me = ReplicaId([7; 16]);
    let fields = json!({"status": "queued", "retry_count": 2, "title": "golden ✓",
                        "f": 0.1, "n": -7, "big": u64::MAX, "ok": true, "none": null});
    let change = real_change(&tasks(), &fields);
    assert_eq!(hex::encode(&change), GOLDEN_CHANGE, "put_fields' bytes");
    let row = json!({"id": "t1", "status": "queued", "retry_count": 2, "title": "golden ✓",
                     "f": 0.1, "n": -7, "big": u64::MAX, "ok": true, "none": null});
    let ours = super::derive(&tasks(), &me, "t1", row.as_object().unwrap(), &change).unwrap();
    assert_eq!(
        hex::encode(ours.to_bytes()),
        GOLDEN_MARKER,
        "hash prefix, counters"
    );
    let marker = hex::decode(GOLDEN_MARKER).unwrap();
    let again = super::rederive("t1", &marker, &me, Some(&row.to_string())).unwrap();
    assert_eq!(hex::encode(again), GOLDEN_CHANGE, "re-encoded bytes");
}

const GOLDEN_CHANGE: &str = "856f4a83641c8c5201a401001007070707070707070707070707070707010100000006154b34014202560c5724700278036269670166016e046e6f6e65026f6b2c72657472795f636f756e747e303730373037303730373037303730373037303730373037303730373037303706737461747573057469746c6508080178a30185011400021466a601ffffffffffffffffff019a9999999999b93f7902717565756564676f6c64656e20e29c930800";
const GOLDEN_MARKER: &str = "00641c8c528523d2bd20";

/// A record derived and then updated, deleted or re-created by the very transaction that
/// created it relays as committed, and a fresh replica converges.
#[test]
fn a_record_changed_by_its_own_transaction_relays_as_committed() {
    let (dir, fresh) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = open_with(dir.path(), TASKS);
    s.transact(vec![
        put("a", task(1)),
        increment("a", 1),
        put("b", task(2)),
        WriteOp::Delete {
            collection: "c".into(),
            id: "b".into(),
        },
        put("c", task(3)),
        WriteOp::Delete {
            collection: "c".into(),
            id: "c".into(),
        },
        WriteOp::Put {
            collection: "c".into(),
            value: put_value("c", task(5)),
            recreate: true,
        },
        put("d", task(4)),
    ])
    .unwrap();
    s.transact(vec![put("d", json!({"status": "done"}))])
        .unwrap();
    assert_eq!(derived_ids(dir.path()), ["c"]);
    let relayed = all_txns(&s);
    converged(&s, &["a", "b", "c", "d"], fresh.path());
    s.close().unwrap();
    let s = open_with(dir.path(), TASKS);
    assert_eq!(all_txns(&s), relayed);
    assert_eq!(s.get("c", "a").unwrap().unwrap()["retry_count"], json!(2));
    assert_eq!(s.get("c", "b").unwrap(), None);
    assert_eq!(s.get("c", "c").unwrap().unwrap()["retry_count"], json!(5));
}
