//! Derived first changes (see `derived`): re-encoding, and stores whose records keep no state
//! relaying exactly what they committed or received, on real SQLite files.

use std::path::Path;

use automerge::transaction::{CommitOptions, Transactable};
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::{Marker, Underivable, derive, rederive};
use crate::change::{Op, Txn};
use crate::ids::{ReplicaId, TxnId};
use crate::protocol::{BundleHeader, BundleReader, BundleWriter};
use crate::schema::CollectionDef;
use crate::store::doc::{new_doc, put_fields};
use crate::store::remote::tests::all_txns;
use crate::store::{DB_FILE, OpenOptions, Store, WriteOp};

const ME: ReplicaId = ReplicaId([7; 16]);

/// The change `put_fields` writes for a new record holding `fields` under `def`.
pub(super) fn real_change(def: &CollectionDef, fields: &Value) -> Vec<u8> {
    let Value::Object(map) = fields else {
        panic!("an object")
    };
    put_fields(&mut new_doc(&ME), def, map, &ME).unwrap()
}

/// `fields` with the primary key `id` added, as the store writes the row.
fn row(id: &str, fields: &Value) -> Map<String, Value> {
    let mut map: Map<String, Value> = fields.as_object().unwrap().clone();
    map.insert("id".into(), json!(id));
    map
}

/// The marker of `fields` written under `def`, checked to re-encode from the row's text.
fn derived(def: &CollectionDef, id: &str, fields: &Value) -> Option<Marker> {
    let change = real_change(def, fields);
    let row = row(id, fields);
    let marker = derive(def, &ME, id, &row, &change)?;
    let text = Value::Object(row).to_string();
    let again = rederive(id, &marker.to_bytes(), &ME, Some(&text)).unwrap();
    assert_eq!(again, change, "{fields}");
    Some(marker)
}

/// A collection like PMOVES `tasks`: a counter, a priority, max/min timestamps and a text.
pub(super) const TASKS: &str = r#"
[collections.c.fields]
status = { merge = "priority", order = ["running", "done", "queued"] }
retry_count = { merge = "counter", type = "integer" }
created_at = { merge = "min" }
updated_at = { merge = "max" }
notes = { merge = "text" }
"#;

/// [`TASKS`]' collection.
pub(super) fn tasks() -> CollectionDef {
    let schema = crate::schema::Schema::from_toml(TASKS).unwrap();
    schema.collection("c").unwrap()
}

#[test]
fn scalar_rows_reencode_to_the_real_change() {
    let cases = [
        json!({"title": "a \"quoted\" ünïcode ✓ line\nbreak", "n": -3, "ok": true, "none": null}),
        json!({"big": u64::MAX, "f": 1.5, "whole": 2.0, "tiny": 1e-300, "zero": 0}),
        json!({"third": 0.1 + 0.2, "e": std::f64::consts::E, "neg": -1.0e-7}),
        json!({"x": ""}),
        json!({}),
    ];
    for fields in cases {
        assert!(
            derived(&CollectionDef::default(), "r1", &fields).is_some(),
            "{fields}"
        );
    }
    // An integer key is a number in the row.
    let def = CollectionDef::default();
    let change = real_change(&def, &json!({"n": 1}));
    let row = json!({"id": 42, "n": 1});
    let marker = derive(&def, &ME, "42", row.as_object().unwrap(), &change).unwrap();
    let again = rederive("42", &marker.to_bytes(), &ME, Some(&row.to_string()));
    assert_eq!(again.unwrap(), change);
}

#[test]
fn counters_and_policies_reencode_under_their_part_keys() {
    let def = tasks();
    for fields in [
        json!({"status": "queued", "retry_count": 0, "created_at": "2026-01-01", "updated_at": "2026-01-02"}),
        json!({"retry_count": 3, "a": 1, "z": "last"}),
        json!({"retry_count": -5}),
    ] {
        assert!(derived(&def, "t1", &fields).is_some(), "{fields}");
    }
    // A text field is an object of its own: never derived.
    assert_eq!(derived(&def, "t1", &json!({"notes": "x"})), None);
}

#[test]
fn rows_that_cannot_be_one_plain_change_are_not_derived() {
    let def = CollectionDef::default();
    for fields in [
        json!({"o": {"x": 1}}),
        json!({"l": [1, 2]}),
        json!({"parent": "r"}),
    ] {
        let change = real_change(&def, &fields);
        assert_eq!(
            derive(&def, &ME, "r", &row("r", &fields), &change),
            None,
            "{fields}"
        );
    }
    // Another actor's change, or a row without its key.
    let fields = json!({"n": 1});
    let change = real_change(&def, &fields);
    let other = ReplicaId([8; 16]);
    assert_eq!(derive(&def, &other, "r", &row("r", &fields), &change), None);
    let no_key = fields.as_object().unwrap();
    assert_eq!(derive(&def, &ME, "r", no_key, &change), None);
}

/// A re-encoding is refused when the row or the hash does not match the marker.
#[test]
fn a_reencoding_that_does_not_match_its_marker_is_refused() {
    let fields = json!({"n": 1, "s": "x"});
    let marker = derived(&CollectionDef::default(), "r", &fields).unwrap();
    let mut bytes = marker.to_bytes();
    bytes[1] ^= 1;
    let text = Value::Object(row("r", &fields)).to_string();
    let refused = rederive("r", &bytes, &ME, Some(&text));
    assert!(
        matches!(refused, Err(Underivable::Mismatch(..))),
        "{refused:?}"
    );
    // The same marker with another row (what an encoder change looks like from here).
    let other = Value::Object(row("r", &json!({"n": 2, "s": "x"}))).to_string();
    let refused = rederive("r", &marker.to_bytes(), &ME, Some(&other));
    assert!(
        matches!(refused, Err(Underivable::Mismatch(..))),
        "{refused:?}"
    );
    for json in [None, Some("[1]"), Some(r#"{"n":1}"#)] {
        let refused = rederive("r", &marker.to_bytes(), &ME, json);
        assert!(matches!(refused, Err(Underivable::NoRow(_))), "{json:?}");
    }
}

pub(super) fn open(dir: &Path) -> Store {
    let opts = OpenOptions {
        doc_cache: 1,
        ..Default::default()
    };
    Store::open(dir, opts).unwrap()
}

pub(super) fn put(id: &str, value: Value) -> WriteOp {
    let mut value = value;
    value["id"] = json!(id);
    WriteOp::Put {
        collection: "c".into(),
        value,
        recreate: false,
    }
}

/// Ids of the `docs` rows stored derived (a marker state), sorted.
pub(super) fn derived_ids(dir: &Path) -> Vec<String> {
    let conn = Connection::open(dir.join(DB_FILE)).unwrap();
    let mut stmt = conn
        .prepare("SELECT id FROM docs WHERE substr(state, 1, 1) = x'00' ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A fresh replica applying everything `from` relays ends up with `from`'s rows.
fn check_converges(from: &Store, ids: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let other = open(dir.path());
    let report = other.apply_remote(all_txns(from)).unwrap();
    assert!(
        report.rejected.is_empty() && report.parked == report.unparked,
        "{report:?}"
    );
    same_rows(&other, from, ids);
    assert_eq!(other.summary().unwrap(), from.summary().unwrap());
}

pub(super) fn same_rows(a: &Store, b: &Store, ids: &[&str]) {
    for id in ids {
        assert_eq!(a.get("c", id).unwrap(), b.get("c", id).unwrap(), "{id}");
    }
}

/// Records created by one plain change keep no state; what their transaction relays is the
/// same through an update (which materializes the state), a delete (which gives the change
/// back), a re-creation (derived again) and a reopen, and a fresh replica converges each time.
#[test]
fn derived_records_relay_unchanged_through_update_delete_recreate_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let fields = json!({"title": "t", "n": 1, "f": 0.25, "done": false});
    s.transact(vec![
        put("a", fields.clone()),
        put("b", json!({"n": 2})),
        put("c", json!({"n": 3})),
    ])
    .unwrap();
    assert_eq!(derived_ids(dir.path()), ["a", "b", "c"]);
    let first = all_txns(&s).remove(0);
    let Op::Doc { change, .. } = &first.ops[0] else {
        panic!("a doc op")
    };
    let mut want = fields.as_object().unwrap().clone();
    want.remove("id");
    let real = put_fields(
        &mut new_doc(&s.replica_id()),
        &CollectionDef::default(),
        &want,
        &s.replica_id(),
    )
    .unwrap();
    assert_eq!(*change, real, "relayed as committed");
    check_converges(&s, &["a", "b", "c"]);

    s.put("c", json!({"id": "a", "n": 5})).unwrap();
    s.delete("c", "b").unwrap();
    assert_eq!(derived_ids(dir.path()), ["c"], "a materialized, b freed");
    s.transact(vec![WriteOp::Put {
        collection: "c".into(),
        value: json!({"id": "b", "n": 6}),
        recreate: true,
    }])
    .unwrap();
    assert_eq!(derived_ids(dir.path()), ["b", "c"]);
    assert_eq!(s.compact(10).unwrap(), 1, "a has an appended chunk");
    let relayed = all_txns(&s);
    assert_eq!(relayed[0], first, "never changed");
    check_converges(&s, &["a", "b", "c"]);
    s.close().unwrap();

    let s = open(dir.path());
    assert_eq!(all_txns(&s), relayed);
    s.put("c", json!({"id": "c", "n": 7})).unwrap();
    s.delete("c", "b").unwrap();
    assert!(derived_ids(dir.path()).is_empty());
    assert_eq!(all_txns(&s)[..relayed.len()], relayed[..]);
    check_converges(&s, &["a", "b", "c"]);
}

/// A fresh replica converges from a derived store's bundle, and its own received first changes
/// are derived in turn.
#[test]
fn a_fresh_replica_converges_from_a_bundle() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(da.path());
    let ids: Vec<String> = (0..50).map(|n| format!("r{n}")).collect();
    a.transact(ids.iter().map(|id| put(id, json!({"n": 1}))).collect())
        .unwrap();
    a.put("c", json!({"id": "r3", "n": 2})).unwrap();
    let header = BundleHeader {
        cluster: "c".into(),
        exporter: a.replica_id(),
        schema_version: 1,
        summary: a.summary().unwrap(),
        cut_for: None,
    };
    let mut writer = BundleWriter::new(Vec::new(), &header).unwrap();
    let want = a.summary().unwrap().missing_from(&Default::default());
    writer
        .write_txns(&a.txns_for(&want, usize::MAX).unwrap().txns)
        .unwrap();
    let bytes = writer.finish().unwrap();
    let b = open(db.path());
    let mut reader = BundleReader::new(&bytes[..]).unwrap();
    while let Some(batch) = reader.next_batch().unwrap() {
        let txns = batch.iter().map(|t| Txn::decode(t).unwrap()).collect();
        let report = b.apply_remote(txns).unwrap();
        assert!(
            report.rejected.is_empty() && report.parked == 0,
            "{report:?}"
        );
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    same_rows(&a, &b, &ids);
    assert_eq!(derived_ids(db.path()).len(), 49, "all but r3");
    assert_eq!(all_txns(&b), all_txns(&a));
}

/// A received first change is stored derived; the receiver relays it as received, also after
/// its own update of the record and a reopen.
#[test]
fn a_received_first_change_is_derived_and_relays_unchanged() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(da.path());
    a.transact(vec![
        put("x", json!({"n": 1, "s": "é"})),
        put("y", json!({"n": 2})),
    ])
    .unwrap();
    let sent = all_txns(&a);
    let b = open(db.path());
    assert_eq!(b.apply_remote(sent.clone()).unwrap().applied, 1);
    assert_eq!(derived_ids(db.path()), ["x", "y"]);
    assert_eq!(all_txns(&b), sent, "relayed as received");
    b.put("c", json!({"id": "x", "n": 3})).unwrap();
    assert_eq!(derived_ids(db.path()), ["y"]);
    b.close().unwrap();
    let b = open(db.path());
    let relayed: Vec<Txn> = all_txns(&b)
        .into_iter()
        .filter(|t| t.id.origin == sent[0].id.origin)
        .collect();
    assert_eq!(relayed, sent);
    check_converges(&b, &["x", "y"]);
}

/// A first change that its row does not re-encode to is stored as before: nested values, a
/// counter, a field holding the id, and a received change with a commit time.
#[test]
fn a_record_whose_reencoding_differs_is_stored_normally() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(da.path());
    a.transact(vec![
        put("nested", json!({"o": {"x": 1}})),
        put("list", json!({"l": [1]})),
        put("self", json!({"same": "self"})),
        put("plain", json!({"n": 1})),
        WriteOp::Increment {
            collection: "c".into(),
            id: "count".into(),
            field: "n".into(),
            by: 2,
        },
    ])
    .unwrap();
    assert_eq!(derived_ids(da.path()), ["plain"]);
    // A change committed with a time (another implementation's) by a's actor.
    let mut doc = new_doc(&a.replica_id());
    let mut tx = doc.transaction();
    tx.put(automerge::ROOT, "n", 1_i64).unwrap();
    tx.commit_with(CommitOptions::default().with_time(1_700_000_000));
    let timed = doc.get_last_local_change().unwrap().raw_bytes().to_vec();
    let id = TxnId {
        origin: a.replica_id(),
        seq: 2,
    };
    let txn = Txn {
        id,
        timestamp_ms: 0,
        schema_version: 0,
        ops: vec![Op::Doc {
            collection: "c".into(),
            id: "timed".into(),
            incarnation: 1,
            change: timed,
        }],
    };
    let mut sent = all_txns(&a);
    sent.push(txn);
    let b = open(db.path());
    assert_eq!(b.apply_remote(sent.clone()).unwrap().applied, 2);
    assert_eq!(derived_ids(db.path()), ["plain"]);
    assert_eq!(b.get("c", "timed").unwrap().unwrap()["n"], json!(1));
    assert_eq!(all_txns(&b), sent);
    check_converges(&b, &["nested", "list", "self", "plain", "count", "timed"]);
}

/// A copy of the files taken while the store runs (as after a crash: WAL not checkpointed)
/// opens with every committed derived record, relays the same bytes and takes changes.
#[test]
fn a_crash_like_reopen_keeps_everything() {
    let (dir, copy) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = open(dir.path());
    s.transact(vec![put("a", json!({"n": 1})), put("b", json!({"n": 2}))])
        .unwrap();
    s.put("c", json!({"id": "a", "n": 3})).unwrap();
    s.transact(vec![put("d", json!({"n": 4}))]).unwrap();
    for name in [DB_FILE.to_owned(), format!("{DB_FILE}-wal")] {
        let from = dir.path().join(&name);
        if from.exists() {
            std::fs::copy(from, copy.path().join(&name)).unwrap();
        }
    }
    let relayed = all_txns(&s);
    let r = open(copy.path());
    assert_eq!(all_txns(&r), relayed);
    same_rows(&r, &s, &["a", "b", "d"]);
    assert_eq!(derived_ids(copy.path()), ["b", "d"]);
    r.put("c", json!({"id": "b", "n": 5})).unwrap();
    r.delete("c", "d").unwrap();
    assert_eq!(all_txns(&r)[..relayed.len()], relayed[..]);
    check_converges(&r, &["a", "b", "d"]);
}

/// A store written before first changes could be derived (every state stored, `0005` not
/// recorded) opens and relays as before, and derives its new records.
#[test]
fn a_store_from_before_derived_rows_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.transact(vec![
        put("old", json!({"n": 1})),
        put("older", json!({"n": 2})),
    ])
    .unwrap();
    let first = all_txns(&s).remove(0);
    s.close().unwrap();
    // Back to the layout before `0005_docs_derived_first_changes`: real states.
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    for op in &first.ops {
        let Op::Doc { id, change, .. } = op else {
            continue;
        };
        conn.execute(
            "UPDATE docs SET state = ?2 WHERE id = ?1",
            rusqlite::params![id, change],
        )
        .unwrap();
    }
    conn.execute(
        "DELETE FROM migrations WHERE name = '0005_docs_derived_first_changes'",
        [],
    )
    .unwrap();
    drop(conn);
    assert!(derived_ids(dir.path()).is_empty());

    let s = open(dir.path());
    assert_eq!(all_txns(&s)[0], first);
    s.put("c", json!({"id": "old", "n": 3})).unwrap();
    s.delete("c", "older").unwrap();
    s.put("c", json!({"id": "new", "n": 4})).unwrap();
    assert_eq!(derived_ids(dir.path()), ["new"]);
    assert_eq!(all_txns(&s)[0], first);
    check_converges(&s, &["old", "older", "new"]);
}
