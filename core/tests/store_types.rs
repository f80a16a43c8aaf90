//! Declared field and key types (see `meshlite_core::schema`, "Types"): every write path checks
//! them, integer keys stay numbers, defaults fill new records only, and a type that stored data
//! does not satisfy is refused.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use meshlite_core::protocol::{BundleHeader, BundleReader, BundleWriter};
use meshlite_core::schema::{FieldType, SchemaError};
use meshlite_core::store::{
    ApplyReport, OpenError, OpenOptions, Query, Store, WriteError, WriteOp,
};
use meshlite_core::{Schema, Txn};
use proptest::prelude::*;
use serde_json::{Value, json};
use tempfile::TempDir;

const TYPED: &str = r#"
version = 2
[collections.tasks]
key_type = "uuid"
[collections.tasks.fields]
status = { merge = "priority", order = ["running", "pending"], type = "text", default = "pending" }
title = { type = "text" }
priority = { type = "integer" }
score = { type = "float" }
done = { type = "boolean" }
due_at = { merge = "max", type = "timestamp" }
agent_id = { type = "uuid" }
input = { type = "json" }
retry_count = { merge = "counter", type = "integer", default = 0 }
[collections.counts]
key_type = "integer"
[collections.counts.fields]
n = { merge = "counter", type = "integer" }
label = { type = "text", default = "none" }
[collections.events]
kind = "log"
key_type = "integer"
[collections.events.fields]
level = { type = "integer", default = 1 }
"#;

/// The same collections without types or defaults: a peer on an older schema.
const UNTYPED: &str = r#"
version = 1
strict = false
[collections.tasks]
[collections.tasks.fields]
status = { merge = "priority", order = ["running", "pending"] }
due_at = { merge = "max" }
retry_count = { merge = "counter" }
[collections.counts]
[collections.counts.fields]
n = { merge = "counter" }
[collections.events]
kind = "log"
"#;

const A: &str = "0190b6a2-7c1e-7d3a-9f00-0000000000aa";
const B: &str = "0190b6a2-7c1e-7d3a-9f00-0000000000bb";
const C: &str = "0190b6a2-7c1e-7d3a-9f00-0000000000cc";

fn try_open(dir: &TempDir, schema: &str) -> Result<Store, OpenError> {
    let opts = OpenOptions {
        schema: Some(Schema::from_toml(schema).unwrap()),
        ..Default::default()
    };
    Store::open(dir.path(), opts)
}

fn open(dir: &TempDir, schema: &str) -> Store {
    try_open(dir, schema).unwrap()
}

/// Applies everything `from` holds that `to` lacks.
fn push_report(from: &Store, to: &Store) -> ApplyReport {
    let want = from.summary().unwrap().missing_from(&to.summary().unwrap());
    let batch = from.txns_for(&want, usize::MAX).unwrap();
    let txns = batch.txns.iter().map(|t| Txn::decode(t).unwrap()).collect();
    to.apply_remote(txns).unwrap()
}

/// Applies everything `from` holds that `to` lacks; returns the rejections.
fn push(from: &Store, to: &Store) -> Vec<String> {
    let report = push_report(from, to);
    report.rejected.into_iter().map(|(_, r)| r).collect()
}

fn type_error(e: WriteError) -> String {
    match e {
        WriteError::Type(t) => t.to_string(),
        other => panic!("expected a type error, got {other:?}"),
    }
}

#[test]
fn local_writes_check_each_type_and_name_the_value() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir, TYPED);
    let good = json!({
        "id": A, "title": "t", "priority": 3, "score": 0.5, "done": false,
        "due_at": "2024-05-01T12:00:00Z", "agent_id": B, "input": {"any": [1, "x"]},
        "retry_count": 2,
    });
    s.put("tasks", good).unwrap();
    // null fits every type.
    let nulls = json!({"id": A, "title": null, "priority": null, "score": null, "done": null,
        "agent_id": null, "input": null});
    s.put("tasks", nulls).unwrap();
    let bad = [
        ("title", json!(7), "tasks.title: expected text, got 7"),
        (
            "priority",
            json!("three"),
            "tasks.priority: expected integer, got \"three\"",
        ),
        (
            "priority",
            json!(3.0),
            "tasks.priority: expected integer, got 3.0",
        ),
        (
            "score",
            json!("0.5"),
            "tasks.score: expected float, got \"0.5\"",
        ),
        ("done", json!(1), "tasks.done: expected boolean, got 1"),
        (
            "due_at",
            json!("2024-05-01"),
            "tasks.due_at: expected timestamp, got \"2024-05-01\"",
        ),
        (
            "agent_id",
            json!("a1"),
            "tasks.agent_id: expected uuid, got \"a1\"",
        ),
    ];
    for (field, value, message) in bad {
        let mut record = json!({"id": A});
        record[field] = value;
        let err = type_error(s.put("tasks", record).unwrap_err());
        assert_eq!(err, message);
    }
    // A failed write leaves nothing behind: the record is as the null put left it.
    assert_eq!(s.get("tasks", A).unwrap().unwrap()["title"], Value::Null);
    // The whole transaction fails on one bad op.
    let ops = vec![
        WriteOp::Put {
            collection: "tasks".into(),
            value: json!({"id": B, "title": "fine"}),
            recreate: false,
        },
        WriteOp::Append {
            collection: "events".into(),
            value: json!({"id": 1, "level": "high"}),
        },
    ];
    let err = type_error(s.transact(ops).unwrap_err());
    assert_eq!(err, "events.level: expected integer, got \"high\"");
    assert_eq!(s.get("tasks", B).unwrap(), None);
    // Undeclared fields stay schemaless.
    s.put("tasks", json!({"id": A, "extra": [1, {"x": true}]}))
        .unwrap();
}

#[test]
fn the_full_error_says_what_to_do() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir, TYPED);
    let err = s
        .put("counts", json!({"id": 1, "label": 5}))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("counts.label: expected text, got 5; write a value of the declared type"),
        "{err}"
    );
}

#[test]
fn integer_keys_stay_numbers_end_to_end() {
    let (da, db) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (a, b) = (open(&da, TYPED), open(&db, TYPED));
    let written = a.put("counts", json!({"id": 42, "n": 1})).unwrap();
    assert_eq!(written, json!({"id": 42, "n": 1, "label": "none"}));
    assert_eq!(a.get("counts", "42").unwrap().unwrap()["id"], json!(42));
    let q = Query {
        filters: vec![("id".into(), json!(42))],
        ..Default::default()
    };
    assert_eq!(a.query("counts", &q).unwrap()[0]["id"], json!(42));
    assert_eq!(
        a.increment("counts", "42", "n", 2).unwrap()["id"],
        json!(42)
    );
    assert_eq!(
        a.append("events", json!({"id": 7})).unwrap()["id"],
        json!(7)
    );
    a.put("counts", json!({"id": -5})).unwrap();
    assert!(push(&a, &b).is_empty());
    for s in [&a, &b] {
        let rows = s.query("counts", &Query::default()).unwrap();
        let ids: Vec<&Value> = rows.iter().map(|r| &r["id"]).collect();
        assert!(
            ids.contains(&&json!(42)) && ids.contains(&&json!(-5)),
            "{rows:?}"
        );
        assert_eq!(s.get("counts", "42").unwrap().unwrap()["n"], json!(3));
        assert_eq!(
            s.get("events", "7").unwrap().unwrap(),
            json!({"id": 7, "level": 1})
        );
    }
    a.delete("counts", "42").unwrap();
    assert!(push(&a, &b).is_empty());
    assert_eq!(b.get("counts", "42").unwrap(), None);
    let deleted = Query {
        include_deleted: true,
        filters: vec![("id".into(), json!(42))],
        ..Default::default()
    };
    assert_eq!(b.query("counts", &deleted).unwrap()[0]["id"], json!(42));
}

#[test]
fn integer_keys_order_as_numbers() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir, TYPED);
    for id in [10, -5, 9, 100, 42] {
        s.put("counts", json!({"id": id, "n": id})).unwrap();
    }
    let ids = |q: &Query| -> Vec<Value> {
        let rows = s.query("counts", q).unwrap();
        rows.iter().map(|r| r["id"].clone()).collect()
    };
    assert_eq!(ids(&Query::default()), [-5, 9, 10, 42, 100]);
    let desc = Query {
        order: Some(("id".into(), true)),
        limit: Some(2),
        ..Default::default()
    };
    assert_eq!(ids(&desc), [100, 42]);
    let by_n = Query {
        order: Some(("n".into(), false)),
        offset: 1,
        ..Default::default()
    };
    assert_eq!(ids(&by_n), [9, 10, 42, 100]);
}

#[test]
fn typed_keys_refuse_other_forms() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir, TYPED);
    let err = type_error(s.put("counts", json!({"id": "42"})).unwrap_err());
    assert_eq!(
        err,
        "counts.id: expected integer key in canonical form, got \"42\""
    );
    assert!(matches!(
        s.put("counts", json!({"n": 1})),
        Err(WriteError::InvalidId { .. })
    ));
    for id in ["042", "+1", "x"] {
        let e = s.increment("counts", id, "n", 1).unwrap_err();
        assert!(matches!(e, WriteError::Type(_)), "{id}: {e}");
    }
    let err = type_error(s.put("tasks", json!({"id": "t1"})).unwrap_err());
    assert_eq!(
        err,
        "tasks.id: expected uuid key in canonical form, got \"t1\""
    );
    assert!(s.put("tasks", json!({"id": A.to_uppercase()})).is_err());
    assert!(s.put("tasks", json!({"id": 7})).is_err());
    // A generated id is a canonical uuid.
    let generated = s.put("tasks", json!({"title": "x"})).unwrap();
    let id = generated["id"].as_str().unwrap();
    assert!(FieldType::Uuid.accepts_key(id), "{id}");
}

#[test]
fn defaults_fill_new_records_only() {
    let (da, db) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (old, s) = (open(&da, UNTYPED), open(&db, TYPED));
    let created = s.put("tasks", json!({"id": A, "title": "x"})).unwrap();
    assert_eq!(created["status"], "pending");
    assert_eq!(created["retry_count"], 0);
    // Given values win over defaults, null included.
    let given = s
        .put(
            "tasks",
            json!({"id": B, "status": "running", "retry_count": null}),
        )
        .unwrap_err();
    assert!(
        matches!(given, WriteError::PolicyViolation { .. }),
        "{given}"
    );
    let given = s
        .put("tasks", json!({"id": B, "status": null, "retry_count": 4}))
        .unwrap();
    assert_eq!(
        (&given["status"], &given["retry_count"]),
        (&json!(null), &json!(4))
    );
    // An increment that creates a record gets the defaults (its counter starts from its own).
    let counted = s.increment("tasks", C, "retry_count", 2).unwrap();
    assert_eq!(
        (&counted["status"], &counted["retry_count"]),
        (&json!("pending"), &json!(2))
    );
    assert_eq!(
        s.increment("counts", "9", "n", 5).unwrap(),
        json!({"id": 9, "n": 5, "label": "none"})
    );
    // An update never adds them: a record created by a replica without defaults stays without.
    let remote = "0190b6a2-7c1e-7d3a-9f00-0000000000dd";
    old.put("tasks", json!({"id": remote, "title": "from afar"}))
        .unwrap();
    assert!(push(&old, &s).is_empty());
    let updated = s
        .put("tasks", json!({"id": remote, "title": "edited"}))
        .unwrap();
    assert_eq!(updated, json!({"id": remote, "title": "edited"}));
    // A re-created record is new again.
    s.delete("tasks", remote).unwrap();
    let back = s.recreate("tasks", json!({"id": remote})).unwrap();
    assert_eq!(back["status"], "pending");
}

#[test]
fn remote_apply_rejects_only_the_mistyped_transactions() {
    let (da, db) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (old, s) = (open(&da, UNTYPED), open(&db, TYPED));
    old.put("tasks", json!({"id": A, "priority": 1})).unwrap();
    old.put("tasks", json!({"id": B, "priority": "three"}))
        .unwrap();
    old.put("tasks", json!({"id": C, "due_at": "soon"}))
        .unwrap();
    old.put("tasks", json!({"id": "t1", "title": "bad key"}))
        .unwrap();
    old.put("counts", json!({"id": "abc"})).unwrap();
    old.append("events", json!({"id": "8", "level": 2}))
        .unwrap();
    old.append("events", json!({"id": "9", "level": "loud"}))
        .unwrap();
    old.put("tasks", json!({"id": A, "priority": 2})).unwrap();
    let mut rejected = push(&old, &s);
    rejected.sort();
    assert_eq!(
        rejected,
        [
            "counts.id: expected integer key in canonical form, got \"abc\"",
            "events.level: expected integer, got \"loud\"",
            "tasks.due_at: expected timestamp, got \"soon\"",
            "tasks.id: expected uuid key in canonical form, got \"t1\"",
            "tasks.priority: expected integer, got \"three\"",
        ]
    );
    assert_eq!(s.get("tasks", A).unwrap().unwrap()["priority"], 2);
    assert_eq!(s.get("tasks", B).unwrap(), None);
    assert_eq!(s.get("tasks", C).unwrap(), None);
    // The log row written with a string key by the untyped replica shows the typed key.
    assert_eq!(
        s.get("events", "8").unwrap().unwrap(),
        json!({"id": 8, "level": 2})
    );
    assert_eq!(s.get("events", "9").unwrap(), None);
    // The writer's later change to the rejected record depends on it: it waits, parked.
    old.put("tasks", json!({"id": B, "priority": 4})).unwrap();
    let report = push_report(&old, &s);
    assert_eq!((report.applied, report.parked), (0, 1), "{report:?}");
    assert_eq!(s.get("tasks", B).unwrap(), None);
}

#[test]
fn a_rejected_change_leaves_no_trace_in_the_record() {
    let (da, db) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (old, s) = (open(&da, UNTYPED), open(&db, TYPED));
    old.put("tasks", json!({"id": A, "priority": 1})).unwrap();
    assert!(push(&old, &s).is_empty());
    // The bad change touches a record whose document is loaded (and cached) on `s`.
    old.put("tasks", json!({"id": A, "priority": "three"}))
        .unwrap();
    old.put("tasks", json!({"id": B, "priority": 2})).unwrap();
    assert_eq!(push(&old, &s).len(), 1);
    let row = s.put("tasks", json!({"id": A, "title": "local"})).unwrap();
    assert_eq!(row["priority"], 1, "{row}");
    assert_eq!(s.get("tasks", A).unwrap().unwrap()["priority"], 1);
    assert_eq!(s.get("tasks", B).unwrap().unwrap()["priority"], 2);
    // The local change does not depend on the rejected one: the old replica applies it.
    let back = push_report(&s, &old);
    assert_eq!((back.applied, back.parked), (1, 0), "{back:?}");
}

/// JSON values of every kind, including strings shaped like timestamps and UUIDs.
fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        "[a-z0-9 :.-]{0,12}".prop_map(Value::from),
        "20[0-9]{2}-(0[1-9]|1[0-2])-[0-3][0-9][T ][0-2][0-9]:[0-5][0-9]:[0-6][0-9](\\.[0-9]{1,6})?(Z|[+-][01][0-9]:[0-5][0-9])"
            .prop_map(Value::from),
        any::<[u8; 16]>().prop_map(|b| Value::from(uuid::Uuid::from_bytes(b).to_string())),
        prop::collection::vec(any::<i32>(), 0..3).prop_map(|v| json!(v)),
        Just(json!({"nested": [1, "x"]})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A local write of any value to a typed lww field succeeds exactly when the type accepts it.
    #[test]
    fn local_writes_accept_exactly_what_the_type_accepts(value in any_value()) {
        let dir = TempDir::new().unwrap();
        let s = open(&dir, TYPED);
        let fields = [
            ("title", FieldType::Text),
            ("priority", FieldType::Integer),
            ("score", FieldType::Float),
            ("done", FieldType::Boolean),
            ("agent_id", FieldType::Uuid),
            ("input", FieldType::Json),
        ];
        for (field, ty) in fields {
            let mut record = json!({"id": A});
            record[field] = value.clone();
            let result = s.put("tasks", record);
            prop_assert_eq!(result.is_ok(), ty.accepts(&value), "{} = {}: {:?}", field, value, result);
            if let Ok(row) = result {
                prop_assert_eq!(&row[field], &value);
            }
        }
        // A `max` field also needs its policy's number or string: null is refused there.
        let mut record = json!({"id": A});
        record["due_at"] = value.clone();
        prop_assert_eq!(
            s.put("tasks", record).is_ok(),
            value.is_string() && FieldType::Timestamp.accepts(&value)
        );
    }
}

#[test]
fn bundle_import_rejects_the_mistyped_transactions() {
    let (da, db) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (old, s) = (open(&da, UNTYPED), open(&db, TYPED));
    old.put("tasks", json!({"id": A, "priority": 1})).unwrap();
    old.put("tasks", json!({"id": B, "done": "yes"})).unwrap();
    old.put("tasks", json!({"id": C, "score": 2.5})).unwrap();
    let header = BundleHeader {
        cluster: "c".into(),
        exporter: old.replica_id(),
        schema_version: 1,
        summary: old.summary().unwrap(),
        cut_for: None,
    };
    let mut writer = BundleWriter::new(Vec::new(), &header).unwrap();
    let want = old.summary().unwrap().missing_from(&s.summary().unwrap());
    writer
        .write_txns(&old.txns_for(&want, usize::MAX).unwrap().txns)
        .unwrap();
    let bytes = writer.finish().unwrap();
    // As `meshlite bundle import`: each batch of the file goes to `apply_remote`.
    let mut reader = BundleReader::new(&bytes[..]).unwrap();
    let (mut applied, mut rejected) = (0, Vec::new());
    while let Some(batch) = reader.next_batch().unwrap() {
        let txns = batch.iter().map(|t| Txn::decode(t).unwrap()).collect();
        let report = s.apply_remote(txns).unwrap();
        applied += report.applied;
        rejected.extend(report.rejected.into_iter().map(|(_, why)| why));
    }
    assert_eq!(applied, 2);
    assert_eq!(rejected, ["tasks.done: expected boolean, got \"yes\""]);
    assert_eq!(s.get("tasks", C).unwrap().unwrap()["score"], 2.5);
    assert_eq!(s.get("tasks", B).unwrap(), None);
}

#[test]
fn a_type_that_stored_data_breaks_is_refused() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir, UNTYPED);
    s.put(
        "tasks",
        json!({"id": "t1", "priority": "three", "title": "x"}),
    )
    .unwrap();
    s.append("events", json!({"id": "e", "level": 3})).unwrap();
    s.put("other", json!({"id": "o", "size": 1})).unwrap();
    s.close().unwrap();
    let refused = |schema: &str, needle: &str| {
        let err = try_open(&dir, schema).unwrap_err();
        assert!(
            matches!(err, OpenError::Schema(SchemaError::Incompatible(_))),
            "{err}"
        );
        assert!(err.to_string().contains(needle), "{err}");
    };
    refused(
        &UNTYPED.replace(
            "due_at = { merge = \"max\" }",
            "due_at = { merge = \"max\" }\npriority = { type = \"integer\" }",
        ),
        "tasks.priority: expected integer, got \"three\" in stored row tasks/t1",
    );
    refused(
        &UNTYPED.replace(
            "[collections.tasks]",
            "[collections.tasks]\nkey_type = \"uuid\"",
        ),
        "tasks.id: expected uuid key",
    );
    refused(
        &UNTYPED.replace("kind = \"log\"", "kind = \"log\"\nkey_type = \"integer\""),
        "already holds rows",
    );
    refused(
        &format!("{UNTYPED}[collections.other.fields]\nsize = {{ type = \"text\" }}\n"),
        "other.size: expected text, got 1",
    );
    // Types the data satisfies are accepted, and the store then enforces them.
    let fits = UNTYPED
        .replace("version = 1", "version = 2")
        .replace(
            "due_at = { merge = \"max\" }",
            "due_at = { merge = \"max\" }\npriority = { type = \"json\" }\ntitle = { type = \"text\" }",
        )
        .replace("kind = \"log\"", "kind = \"log\"\nkey_type = \"text\"")
        + "[collections.other.fields]\nsize = { type = \"float\" }\n";
    let s = open(&dir, &fits);
    assert!(s.put("tasks", json!({"id": "t1", "title": 1})).is_err());
    s.close().unwrap();
    // A declared key type cannot change, even to one the data fits.
    refused(
        &fits
            .replace("version = 2", "version = 3")
            .replace("key_type = \"text\"", "key_type = \"uuid\""),
        "changes its key type",
    );
    // Removing a type is always allowed.
    let s = open(
        &dir,
        &fits.replace("title = { type = \"text\" }", "title = {}"),
    );
    s.put("tasks", json!({"id": "t1", "title": 1})).unwrap();
}
