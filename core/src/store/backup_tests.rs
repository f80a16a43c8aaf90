#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use serde_json::json;

use super::*;
use crate::store::Query;

fn store_with(dir: &Path, n: usize) -> Store {
    let store = Store::open(dir, OpenOptions::default()).unwrap();
    for i in 0..n {
        store
            .put("tasks", json!({ "id": format!("t{i}"), "n": i }))
            .unwrap();
    }
    store
}

fn rows(dir: &Path) -> Vec<serde_json::Value> {
    let store = Store::open(dir, OpenOptions::default()).unwrap();
    let rows = store.query("tasks", &Query::default()).unwrap();
    store.close().unwrap();
    rows
}

#[test]
fn backup_of_an_open_store_restores_under_a_new_origin() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, file, b) = (
        tmp.path().join("a"),
        tmp.path().join("a.bak"),
        tmp.path().join("b"),
    );
    let store = store_with(&a, 50);
    let original = store.replica_id();
    let mut last = None;
    let report = backup(&a, &file, &mut |p| last = Some(p)).unwrap();
    assert_eq!(report.replica_id, original);
    let last = last.unwrap();
    assert_eq!(last.done, last.total);
    store.close().unwrap();

    let restored = restore(&file, &b, OriginChoice::New, &mut |_| {}).unwrap();
    assert_eq!(restored.backed_up_replica_id, original);
    assert_ne!(restored.replica_id, original);
    assert_eq!(rows(&b), rows(&a));
    let store = Store::open(&b, OpenOptions::default()).unwrap();
    assert_eq!(store.replica_id(), restored.replica_id);
    store.close().unwrap();
}

#[test]
fn same_origin_keeps_the_replica_id() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, file, b) = (
        tmp.path().join("a"),
        tmp.path().join("a.bak"),
        tmp.path().join("b"),
    );
    let store = store_with(&a, 3);
    let original = store.replica_id();
    backup(&a, &file, &mut |_| {}).unwrap();
    store.close().unwrap();
    let restored = restore(&file, &b, OriginChoice::Same, &mut |_| {}).unwrap();
    assert_eq!(restored.replica_id, original);
}

#[test]
fn refusals_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, file) = (tmp.path().join("a"), tmp.path().join("a.bak"));
    // No store yet.
    let e = backup(&a, &file, &mut |_| {}).unwrap_err();
    assert!(matches!(e, BackupError::NoStore(_)), "{e}");
    assert!(!file.exists());
    store_with(&a, 1).close().unwrap();
    // An existing file is never overwritten.
    fs::write(&file, b"keep").unwrap();
    let e = backup(&a, &file, &mut |_| {}).unwrap_err();
    assert!(matches!(e, BackupError::Exists(_)), "{e}");
    assert_eq!(fs::read(&file).unwrap(), b"keep");
    // Not a backup: the target stays empty (at most the lock file).
    let target = tmp.path().join("t");
    let e = restore(&file, &target, OriginChoice::New, &mut |_| {}).unwrap_err();
    assert!(matches!(e, RestoreError::Invalid { .. }), "{e}");
    let left: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from(LOCK_FILE)]);
    // A non-empty target is refused.
    fs::remove_file(&file).unwrap();
    backup(&a, &file, &mut |_| {}).unwrap();
    let e = restore(&file, &a, OriginChoice::New, &mut |_| {}).unwrap_err();
    assert!(matches!(e, RestoreError::NotEmpty(_)), "{e}");
}
