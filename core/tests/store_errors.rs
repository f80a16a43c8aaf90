//! Storage failures and corruption on real SQLite files: a database locked by another connection
//! is reported as a storage (busy) error, to retry; bytes that were read but do not decode are
//! reported as corruption, to restore. A busy disk is never called corrupt. (Reads and loads that
//! meet a lock while the store runs are tested in `store/error_tests.rs`: with the store open,
//! its own connections' shared locks keep any other connection from taking an exclusive one.)
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::time::Duration;

use meshlite_core::Txn;
use meshlite_core::store::{
    ApplyError, DB_FILE, OpenError, OpenOptions, ReadError, Store, WriteError,
};
use rusqlite::{Connection, ErrorCode};
use serde_json::json;
use tempfile::TempDir;

/// Opens the store with a short busy timeout, so a read that meets a lock fails fast.
fn open(dir: &TempDir) -> Result<Store, OpenError> {
    let opts = OpenOptions {
        busy_timeout: Duration::from_millis(50),
        ..Default::default()
    };
    Store::open(dir.path(), opts)
}

/// A second connection to the store's database.
fn raw(dir: &TempDir) -> Connection {
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// A second connection holding an exclusive lock on the database (of a closed store) until it is
/// dropped: in WAL mode only `locking_mode = EXCLUSIVE` plus a write keeps readers out.
fn exclusive_lock(dir: &TempDir) -> Connection {
    let conn = raw(dir);
    conn.execute_batch(
        "PRAGMA locking_mode = EXCLUSIVE;
         BEGIN EXCLUSIVE; INSERT INTO meta (key, value) VALUES ('lock_probe', x'00')
             ON CONFLICT (key) DO UPDATE SET value = excluded.value; COMMIT;",
    )
    .unwrap();
    conn
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

#[test]
fn opening_a_locked_database_is_a_storage_error_not_corruption() {
    let dir = TempDir::new().unwrap();
    open(&dir).unwrap().close().unwrap();
    let lock = exclusive_lock(&dir);
    match open(&dir) {
        Err(OpenError::Storage(e)) if is_busy(&e) => {
            let message = OpenError::Storage(e).to_string();
            assert!(message.contains("retry"), "{message}");
        }
        other => panic!("expected a busy storage error, got {other:?}"),
    }
    drop(lock);
    open(&dir).unwrap().close().unwrap();
}

#[test]
fn a_summary_row_that_does_not_decode_is_corruption() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).unwrap();
    store.put("tasks", json!({"id": "a"})).unwrap();
    // A replica id is 16 bytes; one byte cannot be decoded.
    raw(&dir)
        .execute_batch("UPDATE held SET origin = x'00'")
        .unwrap();
    assert!(matches!(store.summary(), Err(ReadError::Corrupt(_))));
    assert!(matches!(store.status(), Err(ReadError::Corrupt(_))));
    store.close().unwrap();
    let err = open(&dir).unwrap_err();
    assert!(matches!(err, OpenError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("restore a backup"), "{err}");
}

#[test]
fn a_gc_floor_that_does_not_decode_is_corruption() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).unwrap();
    store.put("tasks", json!({"id": "a"})).unwrap();
    raw(&dir)
        .execute_batch("INSERT INTO meta (key, value) VALUES ('gc_floor', x'ffffffffffffffffff')")
        .unwrap();
    assert!(matches!(store.status(), Err(ReadError::Corrupt(_))));
    store.close().unwrap();
}

#[test]
fn a_document_state_that_does_not_decode_is_corruption() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).unwrap();
    store.put("tasks", json!({"id": "a", "n": 1})).unwrap();
    store.close().unwrap();
    raw(&dir)
        .execute_batch("UPDATE docs SET state = x'00112233445566778899'")
        .unwrap();
    // Reopened, the writer has no cached document and loads the garbage state.
    let store = open(&dir).unwrap();
    let err = store.put("tasks", json!({"id": "a", "n": 2})).unwrap_err();
    assert!(matches!(err, WriteError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("tasks/a"), "{err}");
    // The materialized row is still readable, and nothing of the failed write was kept.
    assert_eq!(store.get("tasks", "a").unwrap().unwrap()["n"], 1);
    store.close().unwrap();
}

/// A SQLite failure while loading a document for a remote transaction is not the transaction's
/// fault: the batch fails as a storage error (nothing kept, safe to retry) instead of rejecting
/// the transaction for good. (The docs table is dropped to make the load fail: a lock cannot,
/// because the writer takes its lock before it loads anything.)
#[test]
fn a_failed_document_load_fails_a_remote_batch_instead_of_rejecting_it() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let a = open(&dir_a).unwrap();
    let b = open(&dir_b).unwrap();
    let ship = |from: &Store, to: &Store| {
        let want = from.summary().unwrap().missing_from(&to.summary().unwrap());
        let batch = from.txns_for(&want, usize::MAX).unwrap();
        let txns = batch.txns.iter().map(|t| Txn::decode(t).unwrap()).collect();
        to.apply_remote(txns)
    };
    a.put("tasks", json!({"id": "x", "n": 1})).unwrap();
    assert_eq!(ship(&a, &b).unwrap().applied, 1);
    a.put("tasks", json!({"id": "x", "n": 2})).unwrap();
    // Reopened, b has no cached document and must load x's state to check the next change.
    b.close().unwrap();
    let b = open(&dir_b).unwrap();
    raw(&dir_b).execute_batch("DROP TABLE docs").unwrap();
    match ship(&a, &b) {
        Err(ApplyError::Storage(_)) => {}
        other => panic!("expected a storage error, got {other:?}"),
    }
    assert_eq!(
        b.summary().unwrap().txn_count(),
        1,
        "nothing of the batch kept"
    );
    a.close().unwrap();
    b.close().unwrap();
}
