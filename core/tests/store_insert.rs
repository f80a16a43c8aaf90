//! `WriteOp::Insert` on real SQLite files: SQL's `INSERT` (refused for a live id, checked by the
//! writer inside the transaction), so racing inserts of one id have exactly one winner.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::sync::Arc;

use meshlite_core::store::{ChangeKind, OpenOptions, Store, WriteError, WriteOp};
use serde_json::{Value, json};
use tempfile::TempDir;

fn open(dir: &TempDir) -> Store {
    Store::open(dir.path(), OpenOptions::default()).unwrap()
}

fn insert(value: Value) -> WriteOp {
    WriteOp::Insert {
        collection: "tasks".into(),
        value,
    }
}

#[test]
fn insert_creates_refuses_a_live_id_and_recreates_a_deleted_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let c = s
        .transact(vec![insert(json!({"id": "a", "n": 1}))])
        .unwrap();
    assert_eq!(c.changes[0].kind, ChangeKind::Insert);

    let e = s
        .transact(vec![
            insert(json!({"id": "b"})),
            insert(json!({"id": "a", "n": 2})),
        ])
        .unwrap_err();
    assert!(
        matches!(&e, WriteError::Duplicate { collection, id } if collection == "tasks" && id == "a"),
        "{e:?}"
    );
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(s.get("tasks", "a").unwrap().unwrap()["n"], 1);
    assert_eq!(
        s.get("tasks", "b").unwrap(),
        None,
        "the refused txn wrote b"
    );

    let twice = s.transact(vec![insert(json!({"id": "c"})), insert(json!({"id": "c"}))]);
    assert!(
        matches!(twice, Err(WriteError::Duplicate { .. })),
        "{twice:?}"
    );
    assert_eq!(s.get("tasks", "c").unwrap(), None);

    s.delete("tasks", "a").unwrap();
    let again = s
        .transact(vec![insert(json!({"id": "a", "m": 3}))])
        .unwrap();
    assert_eq!(again.changes[0].kind, ChangeKind::Insert);
    assert_eq!(
        s.get("tasks", "a").unwrap().unwrap(),
        json!({"id": "a", "m": 3})
    );
}

#[test]
fn racing_inserts_of_one_id_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(&dir));
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || s.transact(vec![insert(json!({"id": "x", "by": i}))]))
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let won = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(WriteError::Duplicate { .. })))
        .count();
    assert_eq!((won, refused), (1, 15), "{results:?}");
}
