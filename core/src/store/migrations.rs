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
//! - `txns(origin, seq, bytes, packed)`: every held transaction, encoded, for relaying (pruned by
//!   GC). `packed = 1` marks a local transaction stored without the rows of its appends (each
//!   `Op::Append` has an empty `row`): those rows are in `log_rows` under the same key and are put
//!   back when the transaction is read for relaying, so a log row is written once, not twice.
//!   Before such a row is replaced by one from a smaller transaction id, its transaction is
//!   stored whole again (`packed = 0`): what a transaction relays never changes. A packed
//!   transaction (local, or remote as received) also leaves out (empty `change`) each change that created a `docs` row lending
//!   it: the row's state starts with that change (see `docs`), which is put back when the
//!   transaction is relayed, and put back into the stored transaction before the state is
//!   rewritten or deleted.
//! - `parked(origin, seq, bytes)`: held transactions waiting for Automerge dependencies.
//! - `docs(collection, id, incarnation, state, chunks, lender_origin, lender_seq, lent)`:
//!   Automerge state of live incarnations: a `save()` snapshot (or the first change) followed by
//!   `chunks` appended change chunks; `Automerge::load` reads the concatenation. When the state
//!   starts with the first change and the local transaction `(lender_origin, lender_seq)` was
//!   stored without it, `lent` is that change's length (all three NULL otherwise). Such a row's
//!   `state` is a marker (first byte 0) when the change is derived from its `records` row
//!   instead (see `derived`).
//! - `records(collection, id, incarnation, deleted, json, rowversion)`: materialized document
//!   rows and tombstones (kept forever); `rowversion` is a local monotonic counter for feeds.
//! - `log_rows(rowversion, collection, id, origin, seq, json)`: log collection rows, unique by
//!   `(collection, id)`; `rowversion` is the rowid, so appends go to the end of the table and
//!   need no separate rowversion index.
//! - `peer_acks(peer, summary, updated_at)`: what each known peer acknowledged holding.
//! - `idempotency(key, fingerprint, answer, created_ms)`: idempotency keys of local writes,
//!   written in the same SQLite transaction as the write (see [`super::idempotency`]).

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::error::OpenError;

type Step = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// The steps, in order. Never edit a released step: add a new one.
const MIGRATIONS: &[(&str, Step)] = &[
    ("0001_initial", initial),
    ("0002_log_rows_by_rowversion", log_rows_by_rowversion),
    ("0003_idempotency", super::idempotency::create_table),
    ("0004_docs_lend_first_changes", docs_lend_first_changes),
    (
        "0005_docs_derived_first_changes",
        docs_derived_first_changes,
    ),
];

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

/// Rebuilds `log_rows` with `rowversion` as its rowid (one B-tree fewer per append) and adds
/// `txns.packed`. Expression indexes on `log_rows` are dropped with the old table and re-created
/// by `read::ensure_indexes` when the store opens.
fn log_rows_by_rowversion(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE log_rows_new (
             rowversion INTEGER PRIMARY KEY, collection TEXT NOT NULL, id TEXT NOT NULL,
             origin BLOB NOT NULL, seq INTEGER NOT NULL, json TEXT NOT NULL);
         INSERT INTO log_rows_new (rowversion, collection, id, origin, seq, json)
             SELECT rowversion, collection, id, origin, seq, json FROM log_rows ORDER BY rowversion;
         DROP TABLE log_rows;
         ALTER TABLE log_rows_new RENAME TO log_rows;
         CREATE UNIQUE INDEX log_rows_key ON log_rows (collection, id);
         ALTER TABLE txns ADD COLUMN packed INTEGER NOT NULL DEFAULT 0;",
    )
}

/// Lets a `docs` row lend its first change to the stored transaction that created it (see
/// `txns` and `docs` above). Existing rows lend nothing (NULL), so they read as before.
fn docs_lend_first_changes(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE docs ADD COLUMN lender_origin BLOB;
         ALTER TABLE docs ADD COLUMN lender_seq INTEGER;
         ALTER TABLE docs ADD COLUMN lent INTEGER;",
    )
}

/// From here on a lending `docs` row's `state` may be a marker (see `derived`): its first change
/// is derived from its `records` row (see `docs`, "Derived first changes"). No column changes:
/// the change's other header fields are fixed (sequence 1, start op 1, time 0, no message, no
/// dependencies) and its actor is the lender's origin. Recorded so that a build that would read
/// a marker as a document refuses the database ([`OpenError::NewerLayout`]).
fn docs_derived_first_changes(_tx: &Transaction<'_>) -> rusqlite::Result<()> {
    Ok(())
}

/// Applies every step not yet recorded.
pub(crate) fn run(conn: &mut Connection) -> Result<(), OpenError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    let recorded = refuse_newer(conn)?;
    // Steps already recorded are skipped without a transaction each: reopening an up-to-date
    // store costs one read of `migrations`.
    let pending = MIGRATIONS
        .iter()
        .filter(|(name, _)| !recorded.iter().any(|r| r == name));
    for (name, step) in pending {
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

/// Refuses a database with recorded steps this build does not know (written by a newer build);
/// returns the recorded steps.
fn refuse_newer(conn: &Connection) -> Result<Vec<String>, OpenError> {
    let recorded: Vec<String> = conn
        .prepare("SELECT name FROM migrations ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let unknown: Vec<String> = recorded
        .iter()
        .filter(|name| !MIGRATIONS.iter().any(|(known, _)| known == name))
        .cloned()
        .collect();
    if unknown.is_empty() {
        Ok(recorded)
    } else {
        Err(OpenError::NewerLayout { unknown })
    }
}

/// Reads a `meta` value.
pub(crate) fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()
}

/// Writes a `meta` value.
pub(crate) fn meta_set(conn: &Connection, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
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

    /// A database with a step this build does not know was written by a newer build: opening it
    /// is refused (an older build could misread it) and nothing in it changes.
    #[test]
    fn a_database_from_a_newer_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("m.db")).unwrap();
        run(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO migrations VALUES ('9999_from_the_future', 0)",
            [],
        )
        .unwrap();
        let err = run(&mut conn).unwrap_err();
        assert!(
            matches!(&err, OpenError::NewerLayout { unknown } if unknown == &["9999_from_the_future"]),
            "{err}"
        );
        assert!(err.to_string().contains("newer meshlite"), "{err}");
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, MIGRATIONS.len() as i64 + 1);
    }

    /// A database written by the first layout keeps its log rows (and their rowversions) across
    /// the rebuild of `log_rows`, and its stored transactions read as unpacked.
    #[test]
    fn log_rows_survive_the_rowversion_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("m.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .unwrap();
        let tx = conn.transaction().unwrap();
        initial(&tx).unwrap();
        tx.execute("INSERT INTO migrations VALUES ('0001_initial', 0)", [])
            .unwrap();
        tx.execute_batch(
            "INSERT INTO log_rows VALUES ('m', 'a', x'01', 1, '{\"id\":\"a\"}', 7);
             INSERT INTO log_rows VALUES ('m', 'b', x'01', 2, '{\"id\":\"b\"}', 9);
             INSERT INTO txns VALUES (x'01', 1, x'00');",
        )
        .unwrap();
        tx.commit().unwrap();

        run(&mut conn).unwrap();
        let rows: Vec<(i64, String, String)> = conn
            .prepare("SELECT rowversion, id, json FROM log_rows ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (7, "a".to_owned(), r#"{"id":"a"}"#.to_owned()),
                (9, "b".to_owned(), r#"{"id":"b"}"#.to_owned())
            ]
        );
        let packed: i64 = conn
            .query_row("SELECT packed FROM txns", [], |r| r.get(0))
            .unwrap();
        assert_eq!(packed, 0);
        let dup = conn.execute(
            "INSERT INTO log_rows (rowversion, collection, id, origin, seq, json)
             VALUES (10, 'm', 'a', x'01', 3, '{}')",
            [],
        );
        assert!(dup.is_err(), "(collection, id) stays unique");
    }
}
