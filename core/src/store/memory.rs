//! In-memory stores for the test harnesses that open many stores (feature `testkit`; see
//! `crate::convergence`).
//!
//! A [`MemoryDb`] is a named SQLite database in this process's memory (the `memdb` VFS; a name
//! starting with `/` is shared by every connection of the process that opens it). It lives as
//! long as its handle, which keeps a connection open, or any store on it. [`MemoryDb::open`]
//! opens a real [`Store`] on it through the open path of [`Store::open`] (migrations, replica id,
//! schema install or upgrade, summary, read pool) and runs the writer's code unchanged (groups,
//! a savepoint per command, commits, rollbacks, in-memory state mirroring the database), with
//! three differences that cost a harness more than its commands did:
//! - the journal is an in-memory rollback journal instead of a WAL on a file: no file, no
//!   `pwrite`, no POSIX lock; readers still use their own connections and SQLite's locks;
//! - the writer runs inline, on the thread that sends a command, right after sending it,
//!   instead of on a thread of its own (one thread start per store opened and two hand-offs per
//!   command saved);
//! - a store's SQLite connections outlive it: when it is dropped (closed or not), the
//!   `MemoryDb` keeps them, and the next store opened on it starts from them instead of opening
//!   new ones, which would parse the database layout again and compile every statement again
//!   (each connection caches its prepared statements). SQLite's caches are invisible to what a
//!   store does; everything the store itself keeps in memory is rebuilt by the open.
//!
//! Closing a store and opening its `MemoryDb` again is a restart: the store reloads everything
//! it keeps in memory from the database. What these stores do not exercise is the durability
//! path (WAL, checkpoints, the directory lock, recovery after a kill): the store's own tests and
//! the fault-injection runs cover it on files.
//!
//! [`MemoryTemplate`] is [`super::template::Template`] for memory: a fresh, empty store made once
//! and copied (SQLite's online backup, page by page) into each new `MemoryDb`. A harness hands a
//! database back with [`MemoryTemplate::recycle`] once its stores are dropped: its rows are
//! replaced by the template's (same tables, same layout) and the next [`MemoryTemplate::fresh`]
//! returns it, kept connections included.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};

use super::open::{Place, REPLICA_KEY};
use super::{OpenError, OpenOptions, Store};

/// A named in-memory database (see the module docs); dropped with the last connection to it.
#[derive(Debug)]
pub struct MemoryDb {
    uri: String,
    /// Keeps the database alive between stores (across a restart), and resets it.
    keeper: Connection,
    spare: Arc<Spare>,
}

impl MemoryDb {
    /// A new, empty database under a name unique in this process.
    pub fn new() -> rusqlite::Result<MemoryDb> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let uri = format!("file:/meshlite-{}-{n}?vfs=memdb", std::process::id());
        let keeper = Connection::open(&uri)?;
        // `MemoryTemplate::reset`'s statements: two per table.
        keeper.set_prepared_statement_cache_capacity(32);
        Ok(MemoryDb {
            uri,
            keeper,
            spare: Arc::default(),
        })
    }

    /// Opens a store on this database (see the module docs); at most one at a time.
    pub fn open(&self, opts: OpenOptions) -> Result<Store, OpenError> {
        Store::open_at(Place::Memory(self), opts)
    }

    /// Another connection to the database, behind any store's back (for tests that tamper).
    pub fn connection(&self) -> rusqlite::Result<Connection> {
        Connection::open(&self.uri)
    }

    /// The name a connection opens it by (with `SQLITE_OPEN_URI`).
    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }

    /// The connections kept from the stores closed on it.
    pub(crate) fn spare(&self) -> &Arc<Spare> {
        &self.spare
    }
}

/// Connections of dropped stores, kept for the next store opened on the same [`MemoryDb`].
#[derive(Debug, Default)]
pub(crate) struct Spare(Mutex<Kept>);

#[derive(Debug, Default)]
struct Kept {
    writer: Option<Connection>,
    readers: Vec<Connection>,
}

impl Spare {
    fn kept(&self) -> MutexGuard<'_, Kept> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps a dropped store's write connection, unless it was left inside a transaction (a
    /// panic in the middle of a command): that one is closed.
    pub(crate) fn keep_writer(&self, conn: Connection) {
        if conn.is_autocommit() {
            self.kept().writer = Some(conn);
        }
    }

    /// Keeps a dropped store's read connections.
    pub(crate) fn keep_readers(&self, conns: Vec<Connection>) {
        self.kept().readers.extend(conns);
    }

    pub(crate) fn take_writer(&self) -> Option<Connection> {
        self.kept().writer.take()
    }

    pub(crate) fn take_readers(&self) -> Vec<Connection> {
        std::mem::take(&mut self.kept().readers)
    }
}

/// The database of a new, empty store, copied into each new [`MemoryDb`], and the databases
/// handed back for reuse (see the module docs).
#[derive(Debug)]
pub struct MemoryTemplate {
    db: Mutex<MemoryDb>,
    /// Every table's rows in the template, in `sqlite_master` order.
    rows: Vec<(String, Vec<Vec<Value>>)>,
    /// The template's `sqlite_master`: a database with another layout is not reused.
    layout: String,
    pool: Mutex<Vec<MemoryDb>>,
}

/// Databases kept for reuse, at most (a harness holds at most this many at once).
const POOL_MAX: usize = 16;

impl MemoryTemplate {
    /// Opens a store with `opts` on a new database, closes it and removes its replica id.
    pub fn new(opts: OpenOptions) -> Result<MemoryTemplate, OpenError> {
        let db = MemoryDb::new()?;
        db.open(opts)?
            .close()
            .map_err(|e| OpenError::Corrupt(format!("template store did not close: {e}")))?;
        db.keeper
            .execute("DELETE FROM meta WHERE key = ?1", [REPLICA_KEY])?;
        Ok(MemoryTemplate {
            rows: table_rows(&db.keeper)?,
            layout: layout(&db.keeper)?,
            db: Mutex::new(db),
            pool: Mutex::default(),
        })
    }

    /// A database holding the template (a reused one if any was handed back);
    /// [`MemoryDb::open`] gives it a new random replica id.
    pub fn fresh(&self) -> rusqlite::Result<MemoryDb> {
        if let Some(db) = self.pooled().pop() {
            return Ok(db);
        }
        let mut fresh = MemoryDb::new()?;
        let template = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        // Every page in one step (-1): nothing else writes the template.
        let step = Backup::new(&template.keeper, &mut fresh.keeper)?.step(-1)?;
        drop(template);
        if step != StepResult::Done {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some(format!("template copy did not finish: {step:?}")),
            ));
        }
        Ok(fresh)
    }

    /// Takes back a database whose stores are all dropped: its rows become the template's and
    /// the next [`Self::fresh`] returns it. One that cannot be reset (another layout, an error)
    /// is dropped instead. Never panics (harnesses call it while unwinding).
    pub fn recycle(&self, db: MemoryDb) {
        if self.pooled().len() < POOL_MAX && matches!(self.reset(&db), Ok(true)) {
            self.pooled().push(db);
        }
    }

    fn pooled(&self) -> MutexGuard<'_, Vec<MemoryDb>> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces every row of `db` by the template's, in one transaction; false when its layout
    /// is not the template's.
    fn reset(&self, db: &MemoryDb) -> rusqlite::Result<bool> {
        let conn = &db.keeper;
        if !conn.is_autocommit() || layout(conn)? != self.layout {
            return Ok(false);
        }
        let tx = conn.unchecked_transaction()?;
        for (table, rows) in &self.rows {
            tx.prepare_cached(&format!("DELETE FROM \"{table}\""))?
                .execute([])?;
            let Some(first) = rows.first() else { continue };
            let marks = vec!["?"; first.len()].join(", ");
            let mut insert =
                tx.prepare_cached(&format!("INSERT INTO \"{table}\" VALUES ({marks})"))?;
            for row in rows {
                insert.execute(params_from_iter(row))?;
            }
        }
        tx.commit()?;
        Ok(true)
    }
}

/// Every table's rows (names come from `sqlite_master`, so quoting them is enough).
fn table_rows(conn: &Connection) -> rusqlite::Result<Vec<(String, Vec<Vec<Value>>)>> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    tables
        .into_iter()
        .map(|table| {
            let mut select = conn.prepare(&format!("SELECT * FROM \"{table}\""))?;
            let width = select.column_count();
            let rows = select
                .query_map([], |r| {
                    (0..width)
                        .map(|i| r.get::<_, Value>(i))
                        .collect::<rusqlite::Result<Vec<Value>>>()
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok((table, rows))
        })
        .collect()
}

/// The database's layout: every table and index with its SQL.
fn layout(conn: &Connection) -> rusqlite::Result<String> {
    conn.prepare_cached(
        "SELECT group_concat(type || ' ' || name || ' ' || coalesce(sql, ''), ';')
         FROM (SELECT * FROM sqlite_master ORDER BY type, name)",
    )?
    .query_row([], |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::WriteOp;

    fn put(store: &Store, id: &str) {
        store
            .transact(vec![WriteOp::Put {
                collection: "c".into(),
                value: serde_json::json!({ "id": id }),
                recreate: false,
            }])
            .expect("write");
    }

    #[test]
    fn a_memory_store_keeps_its_data_across_a_restart() {
        let db = MemoryDb::new().expect("db");
        let store = db.open(OpenOptions::default()).expect("open");
        put(&store, "x");
        let id = store.replica_id();
        store.close().expect("close");
        let again = db.open(OpenOptions::default()).expect("reopen");
        assert_eq!(again.replica_id(), id, "the same replica");
        assert!(again.get("c", "x").expect("get").is_some());
        assert_eq!(again.summary().expect("summary").txn_count(), 1);
        let raw = db.connection().expect("raw");
        let rows: i64 = raw
            .query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 1, "the same database behind the store");
    }

    #[test]
    fn stores_from_one_memory_template_are_distinct_empty_replicas() {
        let template = MemoryTemplate::new(OpenOptions::default()).expect("template");
        let (a, b) = (template.fresh().expect("a"), template.fresh().expect("b"));
        let sa = a.open(OpenOptions::default()).expect("open a");
        let sb = b.open(OpenOptions::default()).expect("open b");
        assert_ne!(sa.replica_id(), sb.replica_id());
        put(&sa, "x");
        assert_eq!(sa.summary().expect("summary").txn_count(), 1);
        assert_eq!(sb.summary().expect("summary").txn_count(), 0, "not shared");
        assert!(sb.get("c", "x").expect("get").is_none());
        let fresh = template.fresh().expect("c");
        let sc = fresh.open(OpenOptions::default()).expect("open c");
        assert_eq!(
            sc.summary().expect("summary").txn_count(),
            0,
            "template unchanged"
        );
    }

    #[test]
    fn a_recycled_database_is_a_new_empty_replica() {
        let template = MemoryTemplate::new(OpenOptions::default()).expect("template");
        let db = template.fresh().expect("db");
        let store = db.open(OpenOptions::default()).expect("open");
        put(&store, "x");
        let first = store.replica_id();
        drop(store);
        assert!(
            db.spare().kept().writer.is_some(),
            "a dropped store's connection is kept"
        );
        template.recycle(db);
        let again = template.fresh().expect("reused");
        assert!(
            again.spare().kept().writer.is_some(),
            "the reused database keeps its connections"
        );
        let store = again.open(OpenOptions::default()).expect("reopen");
        assert_ne!(store.replica_id(), first, "a new replica id");
        assert_eq!(store.summary().expect("summary").txn_count(), 0);
        assert!(store.get("c", "x").expect("get").is_none());
        put(&store, "y");
        assert!(store.get("c", "y").expect("get").is_some());
    }

    #[test]
    fn a_database_with_another_layout_is_not_reused() {
        let template = MemoryTemplate::new(OpenOptions::default()).expect("template");
        let db = template.fresh().expect("db");
        db.connection()
            .expect("raw")
            .execute_batch("CREATE TABLE extra (x)")
            .expect("ddl");
        template.recycle(db);
        assert!(template.pooled().is_empty());
    }
}
