//! Replicas on different schema versions never corrupt each other.
//!
//! The rule (ARCHITECTURE.md, "Data model"): the replicated state — Automerge changes, tombstones,
//! log rows — does not depend on the schema. A replica stores, applies and relays changes to
//! collections and fields its schema does not know, and shows them with default (`lww`) rules;
//! once it upgrades to the same schema, it materializes exactly what the other replica shows.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use meshlite_core::store::{OpenOptions, Query, Store};
use meshlite_core::{Schema, Txn};
use serde_json::json;
use tempfile::TempDir;

const V1: &str = r#"
version = 1
[collections.tasks]
[collections.tasks.fields]
status = { merge = "priority", order = ["running", "failed", "done"] }
"#;

const V2: &str = r#"
version = 2
[collections.tasks]
[collections.tasks.fields]
status = { merge = "priority", order = ["running", "failed", "done", "archived"] }
score = { merge = "max" }
[collections.leases]
[collections.leases.fields]
renewals = { merge = "counter" }
"#;

fn open(dir: &TempDir, schema: &str) -> Store {
    let opts = OpenOptions {
        schema: Some(Schema::from_toml(schema).unwrap()),
        ..Default::default()
    };
    Store::open(dir.path(), opts).unwrap()
}

fn push(from: &Store, to: &Store) {
    let want = from.summary().unwrap().missing_from(&to.summary().unwrap());
    let batch = from.txns_for(&want, usize::MAX).unwrap();
    let txns = batch.txns.iter().map(|t| Txn::decode(t).unwrap()).collect();
    let report = to.apply_remote(txns).unwrap();
    assert!(report.rejected.is_empty(), "{report:?}");
}

fn rows(s: &Store, collection: &str) -> Vec<serde_json::Value> {
    s.query(collection, &Query::default()).unwrap()
}

#[test]
fn older_and_newer_schemas_converge_once_upgraded() {
    let (da, db) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (a, b) = (open(&da, V1), open(&db, V2));
    a.put("tasks", json!({"id": "t", "status": "done"}))
        .unwrap();
    push(&a, &b);
    // Concurrent edits: B uses fields and a collection A's schema does not declare.
    a.put("tasks", json!({"id": "t", "status": "running", "score": 3}))
        .unwrap();
    b.put(
        "tasks",
        json!({"id": "t", "status": "archived", "score": 7}),
    )
    .unwrap();
    b.put("leases", json!({"id": "l", "holder": "b"})).unwrap();
    b.increment("leases", "l", "renewals", 2).unwrap();
    // A refuses local writes to the undeclared collection, but keeps B's data for it.
    assert!(a.put("leases", json!({"id": "x"})).is_err());
    push(&a, &b);
    push(&b, &a);
    assert_eq!(
        a.summary().unwrap(),
        b.summary().unwrap(),
        "both hold every transaction"
    );
    // Counters are self-describing: A shows B's counter correctly before it knows the field.
    assert_eq!(a.get("leases", "l").unwrap().unwrap()["renewals"], 2);
    assert_eq!(
        b.get("tasks", "t").unwrap().unwrap()["score"],
        7,
        "max on the newer schema"
    );
    assert_eq!(a.get("tasks", "t").unwrap().unwrap()["status"], "running");
    // A upgrades: same schema, same rows, with nothing resent.
    a.close().unwrap();
    let a = open(&da, V2);
    for collection in ["tasks", "leases"] {
        assert_eq!(rows(&a, collection), rows(&b, collection), "{collection}");
    }
    assert_eq!(a.get("tasks", "t").unwrap().unwrap()["score"], 7);
    // And they keep converging afterwards.
    a.increment("leases", "l", "renewals", 1).unwrap();
    push(&a, &b);
    assert_eq!(b.get("leases", "l").unwrap().unwrap()["renewals"], 3);
    a.close().unwrap();
    b.close().unwrap();
}
