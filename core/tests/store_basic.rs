//! Store basics on real SQLite files: CRUD, validation with nothing written on error, reopen,
//! schema upgrades.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::sync::Arc;

use meshlite_core::Schema;
use meshlite_core::store::{
    ChangeKind, OpenError, OpenOptions, Query, Store, StoreEvent, WriteError, WriteOp,
};
use serde_json::{Value, json};
use tempfile::TempDir;

const SCHEMA: &str = r#"
version = 1
[collections.tasks]
indexed = ["status"]
[collections.tasks.fields]
status = { merge = "priority", order = ["running", "failed", "done", "pending"] }
retries = { merge = "counter" }
updated_at = { merge = "max" }
created_at = { merge = "min" }
notes = { merge = "text" }
[collections.events]
kind = "log"
indexed = ["kind"]
"#;

fn open(dir: &TempDir, schema: Option<&str>) -> Store {
    let schema = schema.map(|s| Schema::from_toml(s).unwrap());
    Store::open(
        dir.path(),
        OpenOptions {
            schema,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Everything observable that a failed write must leave unchanged.
fn fingerprint(s: &Store) -> (Value, Value) {
    let status = serde_json::to_value(s.status().unwrap()).unwrap();
    let mut all = Vec::new();
    for c in ["tasks", "events"] {
        all.extend(
            s.query(
                c,
                &Query {
                    include_deleted: true,
                    ..Default::default()
                },
            )
            .unwrap(),
        );
    }
    (
        json!([
            status["collections"],
            status["origins"],
            status["stored_txns"]
        ]),
        Value::Array(all),
    )
}

#[test]
fn put_get_query_delete_recreate() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir, Some(SCHEMA));
    let v = s
        .put(
            "tasks",
            json!({"id": "a", "status": "pending", "title": "one", "retries": 1}),
        )
        .unwrap();
    assert_eq!(
        v,
        json!({"id": "a", "status": "pending", "title": "one", "retries": 1})
    );
    let v = s
        .put("tasks", json!({"id": "a", "status": "running"}))
        .unwrap();
    assert_eq!(v["title"], json!("one"), "merge-patch keeps absent fields");
    assert_eq!(s.get("tasks", "a").unwrap().unwrap(), v);
    s.put("tasks", json!({"id": 7, "status": "done"})).unwrap();
    let generated = s.put("tasks", json!({"status": "pending"})).unwrap();
    assert_eq!(generated["id"].as_str().unwrap().len(), 36, "UUIDv7 id");

    let running = s.query(
        "tasks",
        &Query {
            filters: vec![("status".into(), json!("running"))],
            ..Default::default()
        },
    );
    assert_eq!(running.unwrap(), vec![v.clone()]);
    let by_pk = s
        .query(
            "tasks",
            &Query {
                filters: vec![("id".into(), json!(7))],
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(by_pk[0]["status"], json!("done"));
    let ordered = s
        .query(
            "tasks",
            &Query {
                order: Some(("status".into(), true)),
                limit: Some(2),
                offset: 1,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        ordered
            .iter()
            .map(|r| r["status"].clone())
            .collect::<Vec<_>>(),
        vec![json!("pending"), json!("done")]
    );

    s.delete("tasks", "a").unwrap();
    assert_eq!(s.get("tasks", "a").unwrap(), None);
    assert!(matches!(
        s.delete("tasks", "a"),
        Err(WriteError::NotFound { .. })
    ));
    let err = s
        .put("tasks", json!({"id": "a", "status": "done"}))
        .unwrap_err();
    assert!(matches!(err, WriteError::Deleted { .. }), "{err}");
    assert!(
        err.to_string().contains("recreate"),
        "message tells how: {err}"
    );
    assert!(matches!(
        s.increment("tasks", "a", "retries", 1),
        Err(WriteError::Deleted { .. })
    ));
    let back = s
        .recreate("tasks", json!({"id": "a", "status": "done"}))
        .unwrap();
    assert_eq!(
        back,
        json!({"id": "a", "status": "done"}),
        "a new incarnation starts empty"
    );
    let all = s.query("tasks", &Query::default()).unwrap();
    assert_eq!(all.len(), 3);
}

#[test]
fn increments_logs_and_policies() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir, Some(SCHEMA));
    s.put(
        "tasks",
        json!({"id": "t", "retries": 2, "updated_at": "2024-01-02", "created_at": 5}),
    )
    .unwrap();
    assert_eq!(
        s.increment("tasks", "t", "retries", 3).unwrap()["retries"],
        json!(5)
    );
    assert_eq!(
        s.increment("tasks", "new", "retries", 4).unwrap()["retries"],
        json!(4),
        "increment creates"
    );
    let v = s
        .put(
            "tasks",
            json!({"id": "t", "updated_at": "2023-12-31", "created_at": 9}),
        )
        .unwrap();
    assert_eq!(
        (&v["updated_at"], &v["created_at"]),
        (&json!("2024-01-02"), &json!(5))
    );
    let v = s.put("tasks", json!({"id": "t", "notes": "abc"})).unwrap();
    assert_eq!(
        s.put("tasks", json!({"id": "t", "notes": "aXbc"})).unwrap()["notes"],
        json!("aXbc")
    );
    assert_eq!(v["notes"], json!("abc"));

    let row = s.append("events", json!({"kind": "boot", "n": 1})).unwrap();
    let id = row["id"].as_str().unwrap().to_owned();
    assert_eq!(s.get("events", &id).unwrap().unwrap(), row);
    s.append("events", json!({"id": "fixed", "kind": "x"}))
        .unwrap();
    assert!(matches!(
        s.append("events", json!({"id": "fixed"})),
        Err(WriteError::Exists { .. })
    ));
    let boots = s
        .query(
            "events",
            &Query {
                filters: vec![("kind".into(), json!("boot"))],
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(boots, vec![row]);
    assert!(matches!(
        s.put("events", json!({"id": "z"})),
        Err(WriteError::WrongKind { .. })
    ));
    assert!(matches!(
        s.append("tasks", json!({"id": "z"})),
        Err(WriteError::WrongKind { .. })
    ));
}

#[test]
fn invalid_writes_fail_whole_and_write_nothing() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir, Some(SCHEMA));
    s.put("tasks", json!({"id": "t", "updated_at": 10, "title": "x"}))
        .unwrap();
    s.append("events", json!({"id": "e1"})).unwrap();
    let before = fingerprint(&s);
    let good = || WriteOp::Put {
        collection: "tasks".into(),
        value: json!({"id": "g", "title": "ok"}),
        recreate: false,
    };
    let put = |v: Value| WriteOp::Put {
        collection: "tasks".into(),
        value: v,
        recreate: false,
    };
    type Case = (WriteOp, fn(&WriteError) -> bool);
    let cases: Vec<Case> = vec![
        (
            WriteOp::Put {
                collection: "nope".into(),
                value: json!({}),
                recreate: false,
            },
            |e| matches!(e, WriteError::UnknownCollection(_)),
        ),
        (
            WriteOp::Put {
                collection: "bad-name".into(),
                value: json!({}),
                recreate: false,
            },
            |e| matches!(e, WriteError::InvalidName(_)),
        ),
        (put(json!([1, 2])), |e| {
            matches!(e, WriteError::NotAnObject { .. })
        }),
        (put(json!({"id": "x", "bad field": 1})), |e| {
            matches!(e, WriteError::InvalidName(_))
        }),
        (put(json!({"id": {"no": 1}})), |e| {
            matches!(e, WriteError::InvalidId { .. })
        }),
        (put(json!({"id": "x", "retries": "many"})), |e| {
            matches!(e, WriteError::PolicyViolation { .. })
        }),
        (put(json!({"id": "t", "updated_at": "text"})), |e| {
            matches!(e, WriteError::PolicyViolation { .. })
        }),
        (put(json!({"id": "x", "notes": 5})), |e| {
            matches!(e, WriteError::PolicyViolation { .. })
        }),
        (
            WriteOp::Increment {
                collection: "tasks".into(),
                id: "t".into(),
                field: "title".into(),
                by: 1,
            },
            |e| matches!(e, WriteError::PolicyViolation { .. }),
        ),
        (
            WriteOp::Delete {
                collection: "tasks".into(),
                id: "missing".into(),
            },
            |e| matches!(e, WriteError::NotFound { .. }),
        ),
        (
            WriteOp::Append {
                collection: "events".into(),
                value: json!({"id": "e1"}),
            },
            |e| matches!(e, WriteError::Exists { .. }),
        ),
    ];
    for (bad, is_expected) in cases {
        // The good op runs first and is rolled back with the bad one.
        let err = s.transact(vec![good(), bad.clone()]).unwrap_err();
        assert!(is_expected(&err), "{bad:?} gave {err:?}");
        assert_eq!(fingerprint(&s), before, "{bad:?} left something behind");
    }
    assert!(matches!(s.transact(vec![]), Err(WriteError::Empty)));
    // The store is still fully usable, and the next seq follows without a gap.
    let c = s.transact(vec![good()]).unwrap();
    assert_eq!(c.txn.seq, 3);
}

#[test]
fn multi_record_transactions_commit_together_and_notify() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir, Some(SCHEMA));
    let mut events = s.subscribe();
    let ops = vec![
        WriteOp::Put {
            collection: "tasks".into(),
            value: json!({"id": "a"}),
            recreate: false,
        },
        WriteOp::Increment {
            collection: "tasks".into(),
            id: "a".into(),
            field: "retries".into(),
            by: 2,
        },
        WriteOp::Put {
            collection: "tasks".into(),
            value: json!({"id": "b"}),
            recreate: false,
        },
        WriteOp::Append {
            collection: "events".into(),
            value: json!({"id": "e", "kind": "k"}),
        },
        WriteOp::Delete {
            collection: "tasks".into(),
            id: "b".into(),
        },
    ];
    let c = s.transact(ops).unwrap();
    let kinds: Vec<ChangeKind> = c.changes.iter().map(|c| c.kind).collect();
    use ChangeKind::*;
    assert_eq!(kinds, vec![Insert, Update, Insert, Append, Delete]);
    let StoreEvent::Committed {
        txns,
        local,
        changes,
    } = events.try_recv().unwrap()
    else {
        panic!("event")
    };
    assert_eq!(
        (txns, local, changes),
        (Arc::from([c.txn]), true, Arc::from(c.changes.as_slice()))
    );
    assert_eq!(s.get("tasks", "a").unwrap().unwrap()["retries"], json!(2));
    assert_eq!(s.get("tasks", "b").unwrap(), None);
    let summary = s.summary().unwrap();
    assert_eq!(summary.txn_count(), 1);
    let batch = s
        .txns_for(&summary.missing_from(&Default::default()), 1)
        .unwrap();
    assert_eq!(batch.txns.len(), 1);
    assert_eq!(
        meshlite_core::Txn::decode(&batch.txns[0])
            .unwrap()
            .ops
            .len(),
        5
    );
}

/// `TxnBatch::ids` are the ids of its transactions, in order, for every origin, without
/// decoding them.
#[test]
fn a_txn_batch_carries_the_ids_of_its_transactions() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (a, b) = (open(&dir_a, None), open(&dir_b, None));
    for n in 0..3 {
        a.put("tasks", json!({"id": format!("a{n}")})).unwrap();
        b.put("tasks", json!({"id": format!("b{n}")})).unwrap();
    }
    let want_b = b.summary().unwrap().missing_from(&Default::default());
    let from_b = b.txns_for(&want_b, usize::MAX).unwrap().txns;
    let txns = from_b
        .iter()
        .map(|t| meshlite_core::Txn::decode(t).unwrap());
    a.apply_remote(txns.collect()).unwrap();
    let want = a.summary().unwrap().missing_from(&Default::default());
    let all = a.txns_for(&want, usize::MAX).unwrap();
    let decoded: Vec<_> = all
        .txns
        .iter()
        .map(|t| meshlite_core::Txn::decode(t).unwrap().id)
        .collect();
    assert_eq!(all.ids, decoded);
    assert_eq!(all.ids.len(), 6);
    let one = a.txns_for(&want, 1).unwrap();
    assert!(one.more);
    assert_eq!((one.txns.len(), &one.ids[..]), (1, &all.ids[..1]));
    a.close().unwrap();
    b.close().unwrap();
}

#[test]
fn reopen_keeps_data_and_schema_and_refuses_incompatible_upgrade() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir, Some(SCHEMA));
    let replica = s.replica_id();
    s.put("tasks", json!({"id": "a", "status": "running", "extra": 1}))
        .unwrap();
    s.close().unwrap();

    let s = open(&dir, None);
    assert_eq!(s.replica_id(), replica);
    assert_eq!(s.schema().version, 1);
    assert!(matches!(
        s.put("undeclared", json!({})),
        Err(WriteError::UnknownCollection(_))
    ));
    assert_eq!(
        s.get("tasks", "a").unwrap().unwrap()["status"],
        json!("running")
    );
    let c = s.put("tasks", json!({"id": "b"})).unwrap();
    assert_eq!(c["id"], json!("b"));
    assert_eq!(s.summary().unwrap().txn_count(), 2);
    s.close().unwrap();

    let incompatible = SCHEMA.replace(
        "retries = { merge = \"counter\" }",
        "retries = { merge = \"max\" }",
    );
    let err = Store::open(
        dir.path(),
        OpenOptions {
            schema: Some(Schema::from_toml(&incompatible).unwrap()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, OpenError::Schema(_)), "{err}");

    // A compatible upgrade re-materializes: `extra` becomes a counter held at its lww base.
    let upgraded = SCHEMA.replace("version = 1", "version = 2").replace(
        "[collections.events]",
        "extra = { merge = \"counter\" }\n[collections.events_unused]\nkind = \"log\"\n[collections.events]",
    );
    let s = open(&dir, Some(&upgraded));
    assert_eq!(s.schema().version, 2);
    assert_eq!(
        s.increment("tasks", "a", "extra", 2).unwrap()["extra"],
        json!(3)
    );
    s.close().unwrap();
    let s = open(&dir, None);
    assert_eq!(s.schema().version, 2);
}

#[test]
fn schemaless_accepts_any_valid_collection() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir, None);
    s.put("anything", json!({"id": "x", "v": [1, {"a": null}]}))
        .unwrap();
    assert_eq!(
        s.get("anything", "x").unwrap().unwrap(),
        json!({"id": "x", "v": [1, {"a": null}]})
    );
    assert!(matches!(
        s.put("no such", json!({})),
        Err(WriteError::InvalidName(_))
    ));
    assert!(matches!(
        s.increment("anything", "x", "v", 1),
        Err(WriteError::PolicyViolation { .. })
    ));
}

#[test]
fn indexed_queries_use_the_partial_index() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir, Some(SCHEMA));
    s.put("tasks", json!({"id": "a", "status": "running"}))
        .unwrap();
    s.close().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(meshlite_core::store::DB_FILE)).unwrap();
    let q = Query {
        filters: vec![("status".into(), json!("running"))],
        ..Default::default()
    };
    let def = Schema::from_toml(SCHEMA)
        .unwrap()
        .collection("tasks")
        .unwrap();
    let (sql, params) = meshlite_core::store::query_sql("tasks", &def, &q).unwrap();
    let plan: Vec<String> = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map(rusqlite::params_from_iter(params), |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        plan.iter().any(|p| p.contains("ix_records_tasks_status")),
        "{plan:?}"
    );
}

/// A page query (limit and offset) run again stays compiled: SQLite re-prepared a statement
/// with a bound LIMIT or OFFSET on every run. (A bound value compared with an indexed field
/// still re-plans each run: SQLite plans expression indexes for the value.)
#[test]
fn a_repeated_page_query_is_compiled_once() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir, Some(SCHEMA));
    for id in ["a", "b", "c", "d"] {
        s.put(
            "tasks",
            json!({"id": id, "status": "running", "notes": "x"}),
        )
        .unwrap();
    }
    s.close().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(meshlite_core::store::DB_FILE)).unwrap();
    let def = Schema::from_toml(SCHEMA)
        .unwrap()
        .collection("tasks")
        .unwrap();
    let q = Query {
        filters: vec![("notes".into(), json!("x"))],
        limit: Some(2),
        offset: 1,
        ..Default::default()
    };
    let (sql, params) = meshlite_core::store::query_sql("tasks", &def, &q).unwrap();
    for run in 1..=3 {
        let mut stmt = conn.prepare_cached(&sql).unwrap();
        let ids: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(params.clone()), |r| {
                r.get::<_, String>(0)
            })
            .unwrap()
            .map(|j| {
                serde_json::from_str::<serde_json::Value>(&j.unwrap()).unwrap()["id"].to_string()
            })
            .collect();
        assert_eq!(ids, ["\"b\"", "\"c\""], "run {run}");
        let reprepared = stmt.get_status(rusqlite::StatementStatus::RePrepare);
        assert_eq!(reprepared, 0, "run {run}: {sql}");
    }
}

#[test]
fn a_data_dir_has_one_owner_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), OpenOptions::default()).unwrap();
    let err = Store::open(dir.path(), OpenOptions::default()).unwrap_err();
    assert!(
        matches!(err, meshlite_core::store::OpenError::Locked { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("in use"), "{err}");
    store.close().unwrap();
    let again = Store::open(dir.path(), OpenOptions::default()).unwrap();
    again.close().unwrap();
}

#[test]
fn schemaless_fields_become_counters_on_increment() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), OpenOptions::default()).unwrap();
    s.put("jobs", json!({"id": "j", "tries": 1, "name": "n"}))
        .unwrap();
    assert_eq!(s.increment("jobs", "j", "tries", 2).unwrap()["tries"], 3);
    assert_eq!(s.increment("jobs", "j", "fresh", 5).unwrap()["fresh"], 5);
    // A put of a counter field sets its total (as a delta), it does not add to it.
    assert_eq!(
        s.put("jobs", json!({"id": "j", "tries": 10})).unwrap()["tries"],
        10
    );
    assert!(matches!(
        s.increment("jobs", "j", "name", 1),
        Err(WriteError::PolicyViolation { .. })
    ));
    assert_eq!(s.get("jobs", "j").unwrap().unwrap()["name"], "n");
    s.close().unwrap();
}

/// A new record's row is built from the fields written (no read-back); debug builds check it
/// against the materialized document, so this exercises every policy with edge values.
#[test]
fn new_records_show_exactly_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let schema = r#"
[collections.t]
[collections.t.fields]
n = { merge = "counter" }
hi = { merge = "max" }
lo = { merge = "min" }
st = { merge = "priority", order = ["a", "b"] }
tx = { merge = "text" }
"#;
    let s = open(&dir, Some(schema));
    let rows = [
        json!({"id": "a", "n": 0, "hi": 1.5, "lo": "x", "st": "zz", "tx": "", "o": {}, "l": [], "z": null}),
        json!({"id": "b", "n": -7, "hi": u64::MAX, "lo": -1, "st": "a", "tx": "héllo", "o": {"k": [1, {"m": null}]}}),
    ];
    for row in rows {
        let written = s.put("t", row.clone()).unwrap();
        assert_eq!(written, row);
        assert_eq!(
            s.get("t", row["id"].as_str().unwrap()).unwrap().unwrap(),
            row
        );
    }
    assert_eq!(
        s.increment("t", "c", "n", 4).unwrap(),
        json!({"id": "c", "n": 4})
    );
    s.close().unwrap();
}

/// A schemaless store keeps every undeclared collection a document collection (the kind is not
/// replicated state, so a first append cannot decide it); the refusal says what to declare.
#[test]
fn append_to_an_undeclared_collection_says_what_to_declare() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir, None);
    let err = s
        .append("sensor_data", json!({"t": 1}))
        .unwrap_err()
        .to_string();
    for part in [
        "[collections.sensor_data]",
        "kind = \"log\"",
        "init --schema",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
}
