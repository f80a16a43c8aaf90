//! One error enum per public store operation. Every message tells the user what to do next.
//!
//! Storage failures and corruption are kept apart: `Storage` carries the SQLite error of a
//! database that is busy or failing (retry, or check the disk), `Corrupt` is only for bytes that
//! were read but do not decode (restore a backup). A busy or failing disk is never "corrupt".

use crate::schema::{NameError, SchemaError, TypeError};

/// Error opening a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The data directory could not be created or read.
    #[error("cannot use data directory {path}: {source}; check that it exists and is writable")]
    Io {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite refused to open, set up or read the database (busy, locked or failing).
    #[error("cannot open the database: {0}; {hint}", hint = storage_hint(.0))]
    Storage(#[from] rusqlite::Error),
    /// A named migration step failed; the database is left at the previous step.
    #[error("database migration {name} failed: {source}; restore a backup or report a bug")]
    Migration {
        /// The step.
        name: &'static str,
        /// Why.
        source: rusqlite::Error,
    },
    /// The database was written by a newer build: it has layout steps this build does not know,
    /// so reading it could misread (or relay wrongly) what those steps changed.
    #[error(
        "the database was written by a newer meshlite (layout steps {unknown:?} are unknown to this build); run that version or newer"
    )]
    NewerLayout {
        /// The recorded steps this build does not know.
        unknown: Vec<String>,
    },
    /// The schema given cannot replace the stored one.
    #[error(
        "{0}; fix the schema file (new fields and collections are fine) or use a new data directory"
    )]
    Schema(#[from] SchemaError),
    /// Stored bytes (metadata, the summary) were read but do not decode.
    #[error("corrupt store: {0}; restore a backup")]
    Corrupt(String),
    /// SQLite kept another journal mode: the filesystem cannot hold a WAL.
    #[error(
        "cannot enable WAL journaling (the database stays in {mode} mode); put the data directory on a local filesystem"
    )]
    NoWal {
        /// The journal mode SQLite reported.
        mode: String,
    },
    /// The writer thread could not be started.
    #[error("cannot start the writer thread: {0}")]
    Thread(std::io::Error),
    /// Another process (for example `meshlite run`) has the store open.
    #[error(
        "data directory {path} is in use by another meshlite process; stop it, or use its HTTP API, or pick another --data directory"
    )]
    Locked {
        /// The directory.
        path: String,
    },
}

/// Error of a local write ([`super::Store::transact`] and its conveniences).
///
/// A failed write leaves nothing behind: every op of the transaction is validated and applied
/// inside one SQLite savepoint that is rolled back on the first error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// Input text is not JSON (raised by callers that parse text, such as the CLI).
    #[error(
        "invalid JSON: {0}; pass one JSON object, e.g. {{\"id\":\"a\",\"status\":\"running\"}}"
    )]
    InvalidJson(String),
    /// The value is not a JSON object.
    #[error("a record of {collection} must be a JSON object, got {got}")]
    NotAnObject {
        /// The collection.
        collection: String,
        /// The JSON type received.
        got: &'static str,
    },
    /// The strict schema does not declare the collection.
    #[error(
        "collection {0:?} is not declared in the schema; add it to the schema file (or set strict = false) and reopen"
    )]
    UnknownCollection(String),
    /// A collection or field name is not a valid identifier.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The primary key value is unusable.
    #[error("invalid id for {collection}: {reason}")]
    InvalidId {
        /// The collection.
        collection: String,
        /// What is wrong.
        reason: String,
    },
    /// The operation does not fit the collection's kind.
    #[error("{op} is not allowed on {kind} collection {collection:?}: {hint}")]
    WrongKind {
        /// The collection.
        collection: String,
        /// Its kind ("document" or "log").
        kind: &'static str,
        /// The operation attempted.
        op: &'static str,
        /// What to use instead.
        hint: &'static str,
    },
    /// An append to a collection the (non-strict) schema does not declare: undeclared
    /// collections are document collections, and a log must be declared.
    #[error(
        "append needs a log collection, but {0:?} is not declared and undeclared collections are documents; declare it in a schema file (version = 1, strict = false, [collections.{0}] kind = \"log\") and install it with `meshlite init --schema FILE`"
    )]
    UndeclaredLog(String),
    /// The record was deleted; writing to it requires an explicit re-create.
    #[error(
        "record {collection}/{id} was deleted; to bring it back, put it again with recreate = true (CLI: put --recreate), which starts a new incarnation"
    )]
    Deleted {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
    },
    /// The record does not exist (or is already deleted).
    #[error("record {collection}/{id} does not exist; check the id (get/query it first)")]
    NotFound {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
    },
    /// A log row with this id already exists (log rows are immutable).
    #[error(
        "log row {collection}/{id} already exists; log rows are immutable, append a row with a new id"
    )]
    Exists {
        /// The collection.
        collection: String,
        /// The row id.
        id: String,
    },
    /// An insert ([`super::WriteOp::Insert`]) of the id of a live record.
    #[error(
        "record {collection}/{id} already exists; update it with put, or insert with another id"
    )]
    Duplicate {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
    },
    /// The value breaks the field's merge policy.
    #[error("field {field:?}: {reason}")]
    PolicyViolation {
        /// The field.
        field: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// The transaction is empty.
    #[error("empty transaction: give at least one operation")]
    Empty,
    /// An idempotency key is malformed.
    #[error("invalid idempotency key: {reason}")]
    InvalidIdempotencyKey {
        /// What is wrong.
        reason: String,
    },
    /// An idempotency key was used before for a different request.
    #[error(
        "idempotency key {key:?} was already used for a different request; use a new key for a new request"
    )]
    IdempotencyKeyReused {
        /// The key.
        key: String,
    },
    /// A field value nests deeper than the store keeps.
    #[error("field {field:?} nests deeper than {limit} levels (objects and arrays); flatten it")]
    TooDeep {
        /// The field.
        field: String,
        /// The deepest nesting kept.
        limit: usize,
    },
    /// A string (or an object key) in the value holds U+0000. Local writes refuse it: Postgres
    /// `text` and `jsonb` cannot store it, so neither the central tables nor a Supabase client
    /// could ever see the value. (Remote transactions are not checked: refusing what a peer
    /// committed would make replicas diverge; the central bridge refuses and records them.)
    #[error(
        "field {field:?} contains the character U+0000 (NUL), which Postgres text and jsonb cannot store; remove it"
    )]
    Nul {
        /// The field.
        field: String,
    },
    /// The transaction exceeds a size limit.
    #[error("transaction too large ({what}); split it into smaller transactions")]
    TooLarge {
        /// Which limit and by how much.
        what: String,
    },
    /// Stored state of a record (or the GC floor) was read but does not decode.
    #[error("corrupt record state: {0}; restore a backup or re-sync the record from a peer")]
    Corrupt(String),
    /// SQLite failed (busy, locked or failing); nothing of the write was kept.
    #[error("storage error: {0}; {hint}", hint = storage_hint(.0))]
    Storage(#[from] rusqlite::Error),
    /// The store was closed.
    #[error("the store is closed; open it again")]
    Closed,
    /// A value (or a key) does not have its field's declared type.
    #[error("{0}; write a value of the declared type (or null), or change the type in the schema")]
    Type(#[from] TypeError),
}

/// Error of a read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A collection or field name is not a valid identifier.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// A query parameter is unusable.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// Stored bytes were read but do not decode.
    #[error("corrupt store: {0}; restore a backup")]
    Corrupt(String),
    /// SQLite failed (busy, locked or failing).
    #[error("cannot read the database: {0}; {hint}", hint = storage_hint(.0))]
    Storage(#[from] rusqlite::Error),
    /// An `_async` read was dropped unrun because the async runtime is shutting down.
    #[error(
        "the read was cancelled because the async runtime is shutting down; retry in a running runtime"
    )]
    Cancelled,
}

/// Error applying remote transactions as a whole. Individual bad transactions do not fail the
/// call: they are listed in [`super::ApplyReport::rejected`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// SQLite failed; nothing of the failed batch was kept, so it is safe to retry.
    #[error(
        "storage error while applying remote changes: {0}; retry after fixing disk space or permissions"
    )]
    Storage(#[from] rusqlite::Error),
    /// The store was closed.
    #[error("the store is closed; open it again")]
    Closed,
}

/// Error closing a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloseError {
    /// The final WAL checkpoint failed. Committed data is safe in the WAL and is checkpointed on
    /// the next open.
    #[error("final checkpoint failed: {0}; data is safe and will be checkpointed on next open")]
    Storage(#[from] rusqlite::Error),
    /// The writer thread stopped abnormally.
    #[error("the writer thread stopped abnormally; committed data is safe, reopen the store")]
    WriterDied,
    /// [`super::Store::close_async`] was dropped unrun because the async runtime is shutting
    /// down; the store closes when its last handle is dropped.
    #[error(
        "close was cancelled because the async runtime is shutting down; committed data is safe and is checkpointed on the next open"
    )]
    Cancelled,
}

/// Loading stored state (the summary, the GC floor, a document) failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    /// SQLite could not read it.
    #[error(transparent)]
    Storage(#[from] rusqlite::Error),
    /// It was read but does not decode.
    #[error("{0}")]
    Corrupt(String),
}

impl From<LoadError> for ReadError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Storage(e) => Self::Storage(e),
            LoadError::Corrupt(m) => Self::Corrupt(m),
        }
    }
}

impl From<LoadError> for WriteError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Storage(e) => Self::Storage(e),
            LoadError::Corrupt(m) => Self::Corrupt(m),
        }
    }
}

impl From<LoadError> for OpenError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Storage(e) => Self::Storage(e),
            LoadError::Corrupt(m) => Self::Corrupt(m),
        }
    }
}

/// What to do about a SQLite failure: a busy or locked database is worth a retry, anything else
/// points at the disk.
fn storage_hint(e: &rusqlite::Error) -> &'static str {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked, DiskFull};
    match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked) => {
            "the database is busy (another connection holds a lock); retry shortly"
        }
        Some(DiskFull) => {
            "the disk holding the data directory is full; nothing of this write was kept, free space and retry"
        }
        _ => "check free disk space, permissions and the disk's health",
    }
}

impl WriteError {
    /// Whether the write failed because the disk is full (SQLite's `SQLITE_FULL`): the caller
    /// may retry once space is freed; nothing of the write was kept.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::Storage(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull))
    }
}

/// Copies a SQLite error (they are not `Clone`) to report one failed COMMIT to every waiter.
pub(crate) fn copy_sql_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, msg) => {
            rusqlite::Error::SqliteFailure(*code, msg.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
