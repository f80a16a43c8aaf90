//! Opening a store: the database file, migrations, replica id, schema upgrade with
//! re-materialization of affected collections and a check of stored data against new types, and
//! indexes.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, params};

use super::doc::{load_doc, materialize};
use super::docs::materialize_derived;
use super::error::OpenError;
use super::migrations::{self, meta_get, meta_set};
use super::read::ensure_indexes;
use super::rows::{max_rowversion, with_pk};
use super::{OpenOptions, Synchronous};
use crate::ids::ReplicaId;
use crate::schema::{CollectionKind, FieldType, Schema, SchemaError};

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "meshlite.db";

pub(crate) const REPLICA_KEY: &str = "replica_id";
const SCHEMA_KEY: &str = "schema";
/// The lock file inside the data directory.
pub const LOCK_FILE: &str = "LOCK";

/// Where a store's database lives.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Place<'a> {
    /// [`DB_FILE`] in a data directory, in WAL mode, the directory locked by [`LOCK_FILE`]: every
    /// store a daemon or a tool opens.
    Dir(&'a Path),
    /// A named in-memory database of this process (`store::memory`, feature `testkit`) with an
    /// in-memory rollback journal: no file, no directory lock (SQLite's own locks still apply).
    #[cfg(any(test, feature = "testkit"))]
    Memory(&'a super::memory::MemoryDb),
}

impl Place<'_> {
    /// The name to open the database by, and the flag a connection needs for it besides its own.
    pub(crate) fn db(self) -> (PathBuf, OpenFlags) {
        match self {
            Place::Dir(dir) => (dir.join(DB_FILE), OpenFlags::empty()),
            #[cfg(any(test, feature = "testkit"))]
            Place::Memory(db) => (PathBuf::from(db.uri()), OpenFlags::SQLITE_OPEN_URI),
        }
    }

    /// The write connection of the last store closed here, if it is kept (in memory only).
    fn spare_writer(self) -> Option<Connection> {
        match self {
            Place::Dir(_) => None,
            #[cfg(any(test, feature = "testkit"))]
            Place::Memory(db) => db.spare().take_writer(),
        }
    }

    /// The read connections of the last store closed here, if they are kept (in memory only).
    pub(crate) fn spare_readers(self) -> Vec<Connection> {
        match self {
            Place::Dir(_) => Vec::new(),
            #[cfg(any(test, feature = "testkit"))]
            Place::Memory(db) => db.spare().take_readers(),
        }
    }

    /// The directory a store reports ([`super::Store::dir`]): the data directory, or the name
    /// of an in-memory database.
    pub(crate) fn dir(self) -> PathBuf {
        match self {
            Place::Dir(dir) => dir.to_owned(),
            #[cfg(any(test, feature = "testkit"))]
            Place::Memory(db) => PathBuf::from(db.uri()),
        }
    }
}

/// Opens (creating if needed) the write connection and brings the database up to date; returns
/// the directory's lock too (none in memory).
pub(crate) fn open_db(
    place: Place<'_>,
    opts: &OpenOptions,
) -> Result<(Connection, ReplicaId, Schema, Option<File>), OpenError> {
    let lock = match place {
        Place::Dir(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::Io {
                path: dir.display().to_string(),
                source,
            })?;
            Some(lock_dir(dir)?)
        }
        #[cfg(any(test, feature = "testkit"))]
        Place::Memory(_) => None,
    };
    let mut conn = match place.spare_writer() {
        Some(conn) => conn,
        None => {
            let (db, flags) = place.db();
            Connection::open_with_flags(db, OpenFlags::default() | flags)?
        }
    };
    configure(&conn, opts, place)?;
    migrations::run(&mut conn)?;
    let replica = replica_id(&conn)?;
    let schema = resolve_schema(&mut conn, opts.schema.clone(), &replica)?;
    ensure_indexes(&conn, &schema)?;
    Ok((conn, replica, schema, lock))
}

/// Takes the exclusive lock on `dir/LOCK`: one process at a time owns a store, because the
/// writer keeps state (next sequence number, document cache) that a second writer would break.
/// The OS releases the lock when the process dies, so a crash never leaves a stale lock.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, OpenError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| OpenError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(OpenError::Locked {
            path: dir.display().to_string(),
        }),
        Err(TryLockError::Error(e)) => Err(io(e)),
    }
}

fn configure(conn: &Connection, opts: &OpenOptions, place: Place<'_>) -> Result<(), OpenError> {
    conn.busy_timeout(opts.busy_timeout)?;
    // The write path prepares more distinct statements than rusqlite's default cache of 16
    // holds, so a single-row transaction re-parsed several of them every time.
    conn.set_prepared_statement_cache_capacity(64);
    let journal = match place {
        Place::Dir(_) => "wal",
        // An in-memory database has no WAL; its rollback journal stays in memory (never `off`:
        // the writer rolls back savepoints).
        #[cfg(any(test, feature = "testkit"))]
        Place::Memory(_) => "memory",
    };
    let mode: String = conn.query_row(&format!("PRAGMA journal_mode = {journal}"), [], |r| {
        r.get(0)
    })?;
    if !mode.eq_ignore_ascii_case(journal) {
        return Err(OpenError::NoWal { mode });
    }
    let level = match opts.synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    // temp_store = MEMORY keeps the savepoint sub-journal (the writer runs every command in a
    // SAVEPOINT) in memory: by default it spills to a temporary file past 64 KiB, and a batch of
    // 1000 rows paid for opening that file and writing its pages. It holds a copy of each page a
    // command changes, so it is bounded by the size of one command; it never affects durability.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {level}; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -8192;"
    ))?;
    // Setting a flag pragma expires every statement the connection prepared, so foreign keys
    // are turned off only where they are on (SQLite's default is off): a kept in-memory
    // connection (`store::memory`) would otherwise compile its whole statement cache again.
    let foreign_keys: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    if foreign_keys {
        conn.execute_batch("PRAGMA foreign_keys = OFF")?;
    }
    Ok(())
}

/// The replica id, created at random on first open.
fn replica_id(conn: &Connection) -> Result<ReplicaId, OpenError> {
    if let Some(bytes) = meta_get(conn, REPLICA_KEY)? {
        return ReplicaId::from_slice(&bytes)
            .ok_or_else(|| OpenError::Corrupt("stored replica id has the wrong length".into()));
    }
    let id = ReplicaId::random();
    meta_set(conn, REPLICA_KEY, &id.0)?;
    Ok(id)
}

/// Picks the schema in force. A new schema must be a compatible upgrade of the stored one (no
/// stored schema counts as schemaless); it is stored, the rows of every collection whose
/// definition changed are re-materialized, and the rows are checked against the types it adds
/// or changes, all in one transaction (refused, nothing changes).
fn resolve_schema(
    conn: &mut Connection,
    given: Option<Schema>,
    replica: &ReplicaId,
) -> Result<Schema, OpenError> {
    let stored_bytes = meta_get(conn, SCHEMA_KEY)?;
    let given = match given {
        // The stored text is what installing this schema stored: nothing to parse, compare or
        // upgrade (a schema reads back equal from its own text).
        Some(new) if stored_bytes.as_deref() == Some(new.to_toml().as_bytes()) => {
            new.validate()?;
            return Ok(new);
        }
        other => other,
    };
    let stored = match stored_bytes {
        Some(bytes) => {
            let text = String::from_utf8(bytes)
                .map_err(|_| OpenError::Corrupt("stored schema is not UTF-8".into()))?;
            Schema::from_toml(&text)
                .map_err(|e| OpenError::Corrupt(format!("stored schema: {e}")))?
        }
        None => Schema::schemaless(),
    };
    let Some(new) = given else { return Ok(stored) };
    new.validate()?;
    if new == stored {
        return Ok(stored);
    }
    stored.check_upgrade(&new)?;
    let tx = conn.transaction()?;
    meta_set(&tx, SCHEMA_KEY, new.to_toml().as_bytes())?;
    for name in changed_collections(&stored, &new) {
        rematerialize(&tx, &new, &name, replica)?;
        check_stored_types(&tx, &stored, &new, &name)?;
    }
    tx.commit()?;
    Ok(new)
}

/// Collections whose effective definition differs between two schemas.
fn changed_collections(old: &Schema, new: &Schema) -> Vec<String> {
    let names: std::collections::BTreeSet<&String> = old
        .collections
        .keys()
        .chain(new.collections.keys())
        .collect();
    names
        .into_iter()
        .filter(|n| old.collection_or_default(n) != new.collection_or_default(n))
        .cloned()
        .collect()
}

/// Recomputes the materialized rows of one document collection under `schema`.
fn rematerialize(
    conn: &Connection,
    schema: &Schema,
    collection: &str,
    replica: &ReplicaId,
) -> Result<(), OpenError> {
    let def = schema.collection_or_default(collection);
    if def.kind == CollectionKind::Log {
        return Ok(());
    }
    // Re-materializing may rewrite a row's JSON: derived states are written out first.
    materialize_derived(conn, collection)?;
    let mut rowversion = max_rowversion(conn)?;
    let mut select = conn.prepare(
        "SELECT d.id, d.incarnation, d.state FROM docs d JOIN records r
             ON r.collection = d.collection AND r.id = d.id AND r.incarnation = d.incarnation
         WHERE d.collection = ?1 AND r.deleted = 0",
    )?;
    let mut update = conn.prepare(
        "UPDATE records SET json = ?3, rowversion = ?4 WHERE collection = ?1 AND id = ?2",
    )?;
    let mut rows = select.query([collection])?;
    while let Some(row) = rows.next()? {
        let (id, state): (String, Vec<u8>) = (row.get(0)?, row.get(2)?);
        let doc = load_doc(&state, replica)
            .map_err(|e| OpenError::Corrupt(format!("{collection}/{id}: {e}")))?;
        rowversion += 1;
        let json = with_pk(materialize(&doc, &def), &def, &id);
        update.execute(params![collection, id, json.to_string(), rowversion])?;
    }
    Ok(())
}

/// Checks the live rows of `collection` against the field and key types that `new` declares and
/// `old` did not (after re-materialization, so values are those shown under `new`). Integer keys
/// can only be added to a collection without rows: stored rows and tombstones show the key as a
/// string.
fn check_stored_types(
    conn: &Connection,
    old: &Schema,
    new: &Schema,
    collection: &str,
) -> Result<(), OpenError> {
    let (before, def) = (
        old.collection_or_default(collection),
        new.collection_or_default(collection),
    );
    let fields: Vec<&String> = def
        .fields
        .iter()
        .filter(|(f, d)| d.field_type.is_some() && d.field_type != before.field_type(f))
        .map(|(f, _)| f)
        .collect();
    let key = def.key_type.filter(|_| before.key_type != def.key_type);
    if fields.is_empty() && key.is_none() {
        return Ok(());
    }
    let refuse = |what: String| Err(OpenError::Schema(SchemaError::Incompatible(what)));
    if key == Some(FieldType::Integer) && has_rows(conn, collection)? {
        return refuse(format!(
            "collection {collection:?} gets key_type integer but already holds rows (keyed by strings); declare it before writing, or use text"
        ));
    }
    let sql = match def.kind {
        CollectionKind::Document => {
            "SELECT id, json FROM records WHERE collection = ?1 AND deleted = 0"
        }
        CollectionKind::Log => "SELECT id, json FROM log_rows WHERE collection = ?1",
    };
    let mut select = conn.prepare(sql)?;
    let mut rows = select.query([collection])?;
    while let Some(row) = rows.next()? {
        let (id, json): (String, String) = (row.get(0)?, row.get(1)?);
        let value: serde_json::Value = serde_json::from_str(&json)
            .map_err(|e| OpenError::Corrupt(format!("{collection}/{id}: {e}")))?;
        let checked = key
            .map_or(Ok(()), |_| def.check_key(collection, &id))
            .and_then(|()| {
                fields.iter().try_for_each(|f| match value.get(f.as_str()) {
                    Some(v) => def.check_value(collection, f, v),
                    None => Ok(()),
                })
            });
        if let Err(e) = checked {
            return refuse(format!(
                "{e} in stored row {collection}/{id}; the new type does not fit stored data: fix the data first or keep the old type"
            ));
        }
    }
    Ok(())
}

/// True when `collection` has any row, live or deleted, document or log.
fn has_rows(conn: &Connection, collection: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM records WHERE collection = ?1)
             OR EXISTS (SELECT 1 FROM log_rows WHERE collection = ?1)",
        [collection],
        |r| r.get(0),
    )
}
