//! Remote apply: the panic/error boundary, parking, dead incarnations, log-row ties and
//! undeclared collections.

use serde_json::{Value, json};

use crate::change::{Op, Txn};
use crate::schema::Schema;
use crate::store::{OpenOptions, Store};

struct Two {
    _dirs: [tempfile::TempDir; 2],
    a: Store,
    b: Store,
}

fn two(schema_b: Option<&str>) -> Two {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = Store::open(dirs[0].path(), OpenOptions::default()).unwrap();
    let schema = schema_b.map(|s| Schema::from_toml(s).unwrap());
    let b = Store::open(
        dirs[1].path(),
        OpenOptions {
            schema,
            doc_cache: 2,
            ..Default::default()
        },
    )
    .unwrap();
    Two { _dirs: dirs, a, b }
}

/// Every transaction `from` holds, decoded, in (origin, seq) order.
pub(in crate::store) fn all_txns(from: &Store) -> Vec<Txn> {
    let want = from.summary().unwrap().missing_from(&Default::default());
    from.txns_for(&want, usize::MAX)
        .unwrap()
        .txns
        .iter()
        .map(|b| Txn::decode(b).unwrap())
        .collect()
}

fn with_change(txn: &Txn, f: impl Fn(&[u8]) -> Vec<u8>) -> Txn {
    let mut t = txn.clone();
    for op in &mut t.ops {
        if let Op::Doc { change, .. } = op {
            *change = f(change);
        }
    }
    t
}

#[test]
fn garbage_and_truncated_changes_are_rejected_and_the_store_stays_usable() {
    let t = two(None);
    t.a.put("c", json!({"id": "x", "v": 1})).unwrap();
    let good = all_txns(&t.a).remove(0);
    let mut bad = vec![with_change(&good, |_| {
        vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3]
    })];
    for n in [0, 1, 8, good_len(&good) / 2, good_len(&good) - 1] {
        bad.push(with_change(&good, |c| c[..n].to_vec()));
    }
    for txn in bad {
        let report = t.b.apply_remote(vec![txn]).unwrap();
        assert_eq!(report.rejected.len(), 1, "{report:?}");
        assert_eq!(report.applied, 0);
        assert_eq!(
            t.b.summary().unwrap().txn_count(),
            0,
            "a rejected txn is not held"
        );
        assert_eq!(t.b.get("c", "x").unwrap(), None);
    }
    let report = t.b.apply_remote(vec![good]).unwrap();
    assert_eq!(report.applied, 1);
    assert_eq!(
        t.b.put("c", json!({"id": "x", "w": 2})).unwrap(),
        json!({"id": "x", "v": 1, "w": 2})
    );
}

fn good_len(txn: &Txn) -> usize {
    match &txn.ops[0] {
        Op::Doc { change, .. } => change.len(),
        _ => 0,
    }
}

#[test]
fn a_change_that_fails_to_apply_rolls_back_its_whole_txn() {
    let t = two(None);
    t.a.put("c", json!({"id": "x", "v": 1})).unwrap();
    t.a.put("c", json!({"id": "x", "v": 2})).unwrap();
    let txns = all_txns(&t.a);
    assert_eq!(t.b.apply_remote(vec![txns[0].clone()]).unwrap().applied, 1);
    // A different change with the same actor and seq as txn 1's: it decodes and its (empty)
    // deps are present, but Automerge refuses it once the document is loaded.
    let def = crate::schema::CollectionDef::default();
    let mut doc = super::doc::new_doc(&t.a.replica_id());
    let fields = json!({"v": 99}).as_object().unwrap().clone();
    let dup = super::doc::put_fields(&mut doc, &def, &fields, &t.a.replica_id()).unwrap();
    let mut other = super::doc::new_doc(&t.a.replica_id());
    let fresh = super::doc::put_fields(&mut other, &def, &fields, &t.a.replica_id()).unwrap();
    let forged = Txn {
        ops: vec![
            Op::Doc {
                collection: "c".into(),
                id: "y".into(),
                incarnation: 1,
                change: fresh,
            },
            Op::Doc {
                collection: "c".into(),
                id: "x".into(),
                incarnation: 1,
                change: dup,
            },
        ],
        ..txns[1].clone()
    };
    let report = t.b.apply_remote(vec![forged]).unwrap();
    assert_eq!(
        (report.applied, report.rejected.len()),
        (0, 1),
        "{report:?}"
    );
    assert_eq!(
        t.b.get("c", "y").unwrap(),
        None,
        "the first op was rolled back"
    );
    assert_eq!(t.b.get("c", "x").unwrap().unwrap()["v"], json!(1));
    // The genuine txn still applies, and local writes work on the (reloaded) document.
    assert_eq!(t.b.apply_remote(vec![txns[1].clone()]).unwrap().applied, 1);
    assert_eq!(t.b.get("c", "x").unwrap().unwrap()["v"], json!(2));
    assert_eq!(
        t.b.put("c", json!({"id": "x", "v": 3})).unwrap()["v"],
        json!(3)
    );
}

#[test]
fn a_txn_failing_to_apply_in_a_batch_is_rolled_back_alone() {
    let t = two(None);
    t.a.put("c", json!({"id": "x", "v": 1})).unwrap();
    t.a.put("c", json!({"id": "x", "v": 2})).unwrap();
    t.a.put("c", json!({"id": "z", "v": 3})).unwrap();
    let txns = all_txns(&t.a);
    assert_eq!(t.b.apply_remote(vec![txns[0].clone()]).unwrap().applied, 1);
    // As above: a first op that applies, then a change Automerge refuses once loaded.
    let def = crate::schema::CollectionDef::default();
    let fields = json!({"v": 99}).as_object().unwrap().clone();
    let change = || {
        let mut doc = super::doc::new_doc(&t.a.replica_id());
        super::doc::put_fields(&mut doc, &def, &fields, &t.a.replica_id()).unwrap()
    };
    let doc_op = |id: &str, change: Vec<u8>| Op::Doc {
        collection: "c".into(),
        id: id.into(),
        incarnation: 1,
        change,
    };
    let forged = Txn {
        ops: vec![doc_op("y", change()), doc_op("x", change())],
        ..txns[1].clone()
    };
    let report = t.b.apply_remote(vec![txns[2].clone(), forged]).unwrap();
    assert_eq!(
        (report.applied, report.rejected.len()),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(report.rejected[0].0, txns[1].id);
    assert_eq!(
        t.b.get("c", "y").unwrap(),
        None,
        "the forged txn wrote nothing"
    );
    assert_eq!(t.b.get("c", "z").unwrap().unwrap()["v"], json!(3));
    let held = t.b.summary().unwrap();
    assert!(held.contains(&txns[2].id) && !held.contains(&txns[1].id));
    assert_eq!(t.b.apply_remote(vec![txns[1].clone()]).unwrap().applied, 1);
    assert_eq!(t.b.get("c", "x").unwrap().unwrap()["v"], json!(2));
}

#[test]
fn out_of_order_txns_park_until_their_dependencies_arrive() {
    let t = two(None);
    t.a.put("c", json!({"id": "x", "v": 1})).unwrap();
    t.a.put("c", json!({"id": "x", "w": 2})).unwrap();
    t.a.put("c", json!({"id": "x", "v": 3})).unwrap();
    let txns = all_txns(&t.a);
    let report = t.b.apply_remote(vec![txns[2].clone()]).unwrap();
    assert_eq!((report.applied, report.parked), (0, 1));
    assert_eq!(
        t.b.get("c", "x").unwrap(),
        None,
        "a parked txn is invisible"
    );
    assert!(t.b.summary().unwrap().contains(&txns[2].id), "but held");
    assert_eq!(
        t.b.apply_remote(vec![txns[2].clone()]).unwrap().duplicates,
        1
    );
    let report = t.b.apply_remote(vec![txns[1].clone()]).unwrap();
    assert_eq!(report.parked, 1);
    let report = t.b.apply_remote(vec![txns[0].clone()]).unwrap();
    assert_eq!((report.applied, report.unparked), (1, 2));
    assert_eq!(
        t.b.get("c", "x").unwrap().unwrap(),
        json!({"id": "x", "v": 3, "w": 2})
    );
    assert_eq!(t.b.status().unwrap().parked, 0);
}

#[test]
fn changes_to_a_deleted_incarnation_are_held_not_shown() {
    let t = two(None);
    t.a.put("c", json!({"id": "x", "v": 1})).unwrap();
    t.b.apply_remote(all_txns(&t.a)).unwrap();
    t.b.delete("c", "x").unwrap();
    t.a.put("c", json!({"id": "x", "v": 2})).unwrap();
    let late = all_txns(&t.a).remove(1);
    assert_eq!(t.b.apply_remote(vec![late.clone()]).unwrap().applied, 1);
    assert_eq!(t.b.get("c", "x").unwrap(), None);
    assert!(t.b.summary().unwrap().contains(&late.id));
}

#[test]
fn log_id_collisions_keep_the_smallest_txn_id_in_any_order() {
    use crate::ids::{ReplicaId, TxnId};
    let row = |origin: u8, seq, n: u8| Txn {
        id: TxnId {
            origin: ReplicaId([origin; 16]),
            seq,
        },
        timestamp_ms: 0,
        schema_version: 0,
        ops: vec![Op::Append {
            collection: "l".into(),
            id: "same".into(),
            row: json!({"id": "same", "n": n}).to_string(),
        }],
    };
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
        let t = two(None);
        let rows = [row(2, 1, 1), row(1, 9, 2), row(1, 10, 3)];
        for i in order {
            t.b.apply_remote(vec![rows[i].clone()]).unwrap();
        }
        assert_eq!(
            t.b.get("l", "same").unwrap().unwrap()["n"],
            json!(2),
            "order {order:?}"
        );
    }
}

/// A received log row shows its op's id as its key, whatever key its body names (a hostile
/// peer's body naming another row; the bridge keys it by the op's id too).
#[test]
fn a_received_log_row_shows_its_ops_id_as_its_key() {
    use crate::ids::{ReplicaId, TxnId};
    let dir = tempfile::tempdir().unwrap();
    let store = log_store(dir.path());
    let txn = |seq, id: &str, row: Value| Txn {
        id: TxnId {
            origin: ReplicaId([7; 16]),
            seq,
        },
        timestamp_ms: 0,
        schema_version: 0,
        ops: vec![Op::Append {
            collection: "l".into(),
            id: id.into(),
            row: row.to_string(),
        }],
    };
    let sent = vec![
        txn(1, "r0", json!({"id": 5, "n": 1})),
        txn(2, "r1", json!({"n": 2})),
        txn(3, "r2", json!({"id": "r2", "n": 3})),
    ];
    assert_eq!(store.apply_remote(sent).unwrap().applied, 3);
    for (id, n) in [("r0", 1), ("r1", 2), ("r2", 3)] {
        assert_eq!(
            store.get("l", id).unwrap().unwrap(),
            json!({"id": id, "n": n})
        );
    }
    assert_eq!(store.get("l", "5").unwrap(), None);
}

#[test]
fn undeclared_collections_are_applied_but_refused_locally() {
    let t = two(Some("[collections.known]\n"));
    t.a.put("other", json!({"id": "x", "v": 1})).unwrap();
    let report = t.b.apply_remote(all_txns(&t.a)).unwrap();
    assert_eq!(report.applied, 1);
    assert_eq!(
        t.b.get("other", "x").unwrap().unwrap(),
        json!({"id": "x", "v": 1})
    );
    assert!(t.b.put("other", json!({"id": "x"})).is_err());
    assert_eq!(
        t.b.status()
            .unwrap()
            .collections
            .iter()
            .filter(|c| !c.declared)
            .count(),
        1
    );
}

/// A store whose schema declares one log collection, `l`.
fn log_store(dir: &std::path::Path) -> Store {
    let opts = OpenOptions {
        schema: Some(Schema::from_toml("[collections.l]\nkind = \"log\"\n").unwrap()),
        ..Default::default()
    };
    Store::open(dir, opts).unwrap()
}

/// Local log transactions are stored without their rows (packed) and relayed whole; before a
/// row is replaced by a smaller transaction id, its own transaction is stored whole, so it is
/// relayed unchanged; everything converges.
#[test]
fn packed_log_txns_relay_their_rows_and_converge_after_a_replacement() {
    use crate::ids::{ReplicaId, TxnId};
    use crate::store::WriteOp;
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let (a, b, c) = (
        log_store(dirs[0].path()),
        log_store(dirs[1].path()),
        log_store(dirs[2].path()),
    );
    let append = |id: &str, n: i64| WriteOp::Append {
        collection: "l".into(),
        value: json!({"id": id, "n": n, "tags": {"k": "v"}}),
    };
    a.transact(vec![append("x", 1), append("same", 2)]).unwrap();
    let local = all_txns(&a).remove(0);
    let rows: Vec<&str> = local
        .ops
        .iter()
        .map(|op| match op {
            Op::Append { row, .. } => row.as_str(),
            other => panic!("unexpected op {other:?}"),
        })
        .collect();
    assert_eq!(
        rows,
        [
            r#"{"id":"x","n":1,"tags":{"k":"v"}}"#,
            r#"{"id":"same","n":2,"tags":{"k":"v"}}"#
        ]
    );

    let winner = Txn {
        id: TxnId {
            origin: ReplicaId([0; 16]),
            seq: 1,
        },
        timestamp_ms: 0,
        schema_version: 0,
        ops: vec![Op::Append {
            collection: "l".into(),
            id: "same".into(),
            row: json!({"id": "same", "n": 99}).to_string(),
        }],
    };
    assert!(winner.id < local.id);
    // c got the local txn before the replacement, b gets everything after it.
    c.apply_remote(vec![local.clone()]).unwrap();
    a.apply_remote(vec![winner.clone()]).unwrap();
    assert_eq!(a.get("l", "same").unwrap().unwrap()["n"], json!(99));
    let relayed = all_txns(&a).into_iter().find(|t| t.id == local.id).unwrap();
    assert_eq!(
        relayed, local,
        "a replaced row does not change what its txn relays"
    );
    b.apply_remote(all_txns(&a)).unwrap();
    c.apply_remote(vec![winner]).unwrap();
    for store in [&a, &b, &c] {
        assert_eq!(store.get("l", "same").unwrap().unwrap()["n"], json!(99));
        assert_eq!(store.get("l", "x").unwrap().unwrap()["n"], json!(1));
        assert_eq!(store.summary().unwrap(), a.summary().unwrap());
    }
}

/// The size limit counts the rows a packed transaction leaves out.
#[test]
fn packed_log_txns_keep_the_size_limit() {
    use crate::change::MAX_TXN_BYTES;
    use crate::store::{WriteError, WriteOp};
    let dir = tempfile::tempdir().unwrap();
    let store = log_store(dir.path());
    let big = "x".repeat(MAX_TXN_BYTES / 4);
    let ops = |ids: std::ops::Range<u32>| {
        ids.map(|i| WriteOp::Append {
            collection: "l".into(),
            value: json!({"id": i.to_string(), "blob": big}),
        })
        .collect::<Vec<_>>()
    };
    match store.transact(ops(0..5)) {
        Err(WriteError::TooLarge { what }) => assert!(what.contains("bytes encoded"), "{what}"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(store.get("l", "0").unwrap(), None, "nothing written");
    store.transact(ops(10..13)).unwrap();
    let want = store.summary().unwrap().missing_from(&Default::default());
    let relayed = store.txns_for(&want, usize::MAX).unwrap().txns;
    assert!(relayed[0].len() > 3 * MAX_TXN_BYTES / 4, "rows put back");
}

/// A packed transaction near the size limit stays within it when one of its rows is replaced
/// by a bigger row from a smaller transaction id (it is relayed with its own rows).
#[test]
fn a_replaced_row_never_grows_a_packed_txn_past_the_limit() {
    use crate::change::MAX_TXN_BYTES;
    use crate::ids::{ReplicaId, TxnId};
    use crate::store::WriteOp;
    let dir = tempfile::tempdir().unwrap();
    let store = log_store(dir.path());
    let filler = "x".repeat(MAX_TXN_BYTES - 4096);
    store
        .transact(vec![
            WriteOp::Append {
                collection: "l".into(),
                value: json!({"id": "a", "v": 1}),
            },
            WriteOp::Append {
                collection: "l".into(),
                value: json!({"id": "big", "blob": filler}),
            },
        ])
        .unwrap();
    let winner = Txn {
        id: TxnId {
            origin: ReplicaId([0; 16]),
            seq: 1,
        },
        timestamp_ms: 0,
        schema_version: 0,
        ops: vec![Op::Append {
            collection: "l".into(),
            id: "a".into(),
            row: json!({"id": "a", "pad": "y".repeat(10_000)}).to_string(),
        }],
    };
    assert_eq!(store.apply_remote(vec![winner]).unwrap().applied, 1);
    let want = store.summary().unwrap().missing_from(&Default::default());
    for bytes in store.txns_for(&want, usize::MAX).unwrap().txns {
        assert!(bytes.len() <= MAX_TXN_BYTES, "{} bytes", bytes.len());
        Txn::decode(&bytes).unwrap();
    }
}
