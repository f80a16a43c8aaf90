//! A database locked by another connection makes the store's loads fail with a storage (busy)
//! error, never with corruption. With the store open its own connections hold shared locks, so
//! no other connection can take an exclusive one; these tests lock the database of a closed
//! store and run the store's read pool and writer-side loads against it.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};
use serde_json::json;
use tempfile::TempDir;

use super::*;
use crate::ids::ReplicaId;
use crate::schema::Schema;
use crate::store::docs::{DocCache, DocKey};
use crate::store::gc::load_floor;
use crate::store::read::ReadPool;
use crate::store::rows::load_summary;
use crate::store::{DB_FILE, OpenOptions, Store, inspect, read};

const SHORT: Duration = Duration::from_millis(50);

/// A store with one record, closed, and a second connection holding an exclusive lock on its
/// database (in WAL mode only `locking_mode = EXCLUSIVE` plus a write keeps readers out).
fn locked_store() -> (TempDir, PathBuf, Connection) {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path(), OpenOptions::default()).unwrap();
    store.put("tasks", json!({"id": "a", "n": 1})).unwrap();
    store.close().unwrap();
    let path = dir.path().join(DB_FILE);
    let lock = Connection::open(&path).unwrap();
    lock.execute_batch(
        "PRAGMA locking_mode = EXCLUSIVE;
         BEGIN EXCLUSIVE; INSERT INTO meta (key, value) VALUES ('lock_probe', x'00'); COMMIT;",
    )
    .unwrap();
    (dir, path, lock)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// The read failed with the storage variant, busy, and its message says to retry.
fn assert_busy_read<T: std::fmt::Debug>(what: &str, result: Result<T, ReadError>) {
    match &result {
        Err(ReadError::Storage(e)) if is_busy(e) => {}
        other => panic!("{what}: expected a busy storage error, got {other:?}"),
    }
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("busy") && message.contains("retry"),
        "{what}: {message}"
    );
    assert!(!message.contains("corrupt"), "{what}: {message}");
}

#[test]
fn reads_that_meet_a_lock_report_a_busy_storage_error() {
    let (_dir, path, _lock) = locked_store();
    let pool = ReadPool::open(&path, 1, SHORT).unwrap();
    let schema = Schema::schemaless();
    assert_busy_read("summary", pool.with(inspect::summary));
    assert_busy_read(
        "status",
        pool.with(|c| inspect::status(c, &schema, ReplicaId([1; 16]))),
    );
    assert_busy_read("get", pool.with(|c| read::get(c, &schema, "tasks", "a")));
    assert_busy_read("txns_for", pool.with(|c| inspect::txns_for(c, &[], 1)));
}

#[test]
fn writer_loads_that_meet_a_lock_report_a_busy_storage_error() {
    let (_dir, path, _lock) = locked_store();
    let conn = Connection::open(&path).unwrap();
    conn.busy_timeout(SHORT).unwrap();
    let busy = |what: &str, e: LoadError| match e {
        LoadError::Storage(e) if is_busy(&e) => {
            let message = WriteError::from(LoadError::Storage(e)).to_string();
            assert!(message.contains("retry"), "{what}: {message}");
        }
        other => panic!("{what}: expected a busy storage error, got {other:?}"),
    };
    busy("summary", load_summary(&conn).unwrap_err());
    busy("gc floor", load_floor(&conn).unwrap_err());
    let key = DocKey {
        collection: "tasks".into(),
        id: "a".into(),
        incarnation: 1,
    };
    let mut cache = DocCache::new(4, ReplicaId([1; 16]));
    busy(
        "document",
        cache.entry_or_new(&conn, &key, false).unwrap_err(),
    );
}

#[test]
fn the_lock_is_what_failed_them() {
    let (_dir, path, lock) = locked_store();
    drop(lock);
    let pool = ReadPool::open(&path, 1, SHORT).unwrap();
    assert_eq!(pool.with(inspect::summary).unwrap().txn_count(), 1);
    let conn = Connection::open(&path).unwrap();
    assert_eq!(load_summary(&conn).unwrap().txn_count(), 1);
}
