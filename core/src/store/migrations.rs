//! Database layout as named, idempotent migration steps.
//!
//! Each step runs in its own SQLite transaction and is recorded in `migrations`; a step that is
//! already recorded is skipped, so opening a store is safe at any version and after a crash in
//! the middle of a migration (its transaction rolled back, it runs again).
//!
//! # Tables
//! - `meta(key, value)`: `replica_id` (16-byte blob), `schema` (TOML text), `gc_floor`
//!   (postcard [`crate::Summary`] of everything garbage-collected).
//! - `held(origin, start, end)`: the [`crate::Summary`] of held transactions, one row per range;
//!   written in the same SQLite transaction as the data.
//! - `txns(origin, seq, bytes)`: every held transaction, encoded, for relaying (pruned by GC).
//! - `parked(origin, seq, bytes)`: held transactions waiting for Automerge dependencies.
//! - `docs(collection, id, incarnation, state, chunks)`: Automerge state of live incarnations:
//!   a `save()` snapshot (or the first change) followed by `chunks` appended change chunks;
//!   `Automerge::load` reads the concatenation.
//! - `records(collection, id, incarnation, deleted, json, rowversion)`: materialized document
//!   rows and tombstones (kept forever); `rowversion` is a local monotonic counter for feeds.
//! - `log_rows(collection, id, origin, seq, json, rowversion)`: log collection rows.
//! - `peer_acks(peer, summary, updated_at)`: what each known peer acknowledged holding.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::error::OpenError;

type Step = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// The steps, in order. Never edit a released step: add a new one.
const MIGRATIONS: &[(&str, Step)] = &[("0001_initial", initial)];

fn initial(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS held (
             origin BLOB NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL,
             PRIMARY KEY (origin, start)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS txns (
             origin BLOB NOT NULL, seq INTEGER NOT NULL, bytes BLOB NOT NULL,
             PRIMARY KEY (origin, seq)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS parked (
             origin BLOB NOT NULL, seq INTEGER NOT NULL, bytes BLOB NOT NULL,
             PRIMARY KEY (origin, seq)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS docs (
             collection TEXT NOT NULL, id TEXT NOT NULL, incarnation INTEGER NOT NULL,
             state BLOB NOT NULL, chunks INTEGER NOT NULL,
             PRIMARY KEY (collection, id, incarnation));
         CREATE INDEX IF NOT EXISTS docs_chunks ON docs(chunks) WHERE chunks > 1;
         CREATE TABLE IF NOT EXISTS records (
             collection TEXT NOT NULL, id TEXT NOT NULL, incarnation INTEGER NOT NULL,
             deleted INTEGER NOT NULL, json TEXT NOT NULL, rowversion INTEGER NOT NULL,
             PRIMARY KEY (collection, id));
         CREATE INDEX IF NOT EXISTS records_rowversion ON records(rowversion);
         CREATE TABLE IF NOT EXISTS log_rows (
             collection TEXT NOT NULL, id TEXT NOT NULL, origin BLOB NOT NULL,
             seq INTEGER NOT NULL, json TEXT NOT NULL, rowversion INTEGER NOT NULL,
             PRIMARY KEY (collection, id));
         CREATE INDEX IF NOT EXISTS log_rows_rowversion ON log_rows(rowversion);
         CREATE TABLE IF NOT EXISTS peer_acks (
             peer BLOB PRIMARY KEY, summary BLOB NOT NULL, updated_at INTEGER NOT NULL);",
    )
}

/// Applies every step not yet recorded.
pub(crate) fn run(conn: &mut Connection) -> Result<(), OpenError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    for (name, step) in MIGRATIONS {
        let fail = |source| OpenError::Migration { name, source };
        let tx = conn.transaction().map_err(fail)?;
        let done: Option<i64> = tx
            .query_row("SELECT 1 FROM migrations WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(fail)?;
        if done.is_none() {
            step(&tx).map_err(fail)?;
            tx.execute(
                "INSERT INTO migrations (name, applied_at) VALUES (?1, ?2)",
                params![name, super::now_ms() as i64],
            )
            .map_err(fail)?;
        }
        tx.commit().map_err(fail)?;
    }
    Ok(())
}

/// Reads a `meta` value.
pub(crate) fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

/// Writes a `meta` value.
pub(crate) fn meta_set(conn: &Connection, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("m.db")).unwrap();
        run(&mut conn).unwrap();
        meta_set(&conn, "k", b"v").unwrap();
        run(&mut conn).unwrap();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, MIGRATIONS.len() as i64);
        assert_eq!(meta_get(&conn, "k").unwrap().as_deref(), Some(&b"v"[..]));
    }
}
