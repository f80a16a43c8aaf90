//! Bench support: workloads, their raw-SQLite baselines, a sync driver over real stores, and
//! result reporting.
//!
//! Every figure of the core issue is a ratio against a baseline measured in the same process, so
//! the machine and whatever else it is doing cancel out as far as possible:
//!
//! - [`baseline`]: the raw-SQLite side — a WAL database with one `(id TEXT PRIMARY KEY, json
//!   TEXT)` table, written with prepared statements, 1000 rows per transaction, at the store's
//!   synchronous level.
//! - [`workload`]: the store side — stores opened on the PMOVES schema, batches of realistic rows
//!   from [`meshlite_fixtures::records`] turned into [`meshlite_core::store::WriteOp`]s, N-document
//!   stores, transactions exported from one replica for another to apply.
//! - [`sync`]: two real [`meshlite_core::protocol::Session`]s wired back to back in memory, each
//!   hosted by a real store (`summary`, `txns_for`, `apply_remote`), counting round trips and
//!   bytes each way.
//! - [`pg`]: the bridge bench's plain-Postgres baseline (`COPY`, staged upserts) and the
//!   Postgres server's CPU time.
//! - [`typed`]: the typed-table sides of the document figures (one column per field), plain
//!   and as a cr-sqlite CRR (issue 13).
//! - [`disk`]: bytes on disk of a store and the raw table after the same rows, per table.
//! - [`daemon`]: a real `meshlite run` child process and keep-alive HTTP/1.1 connections to
//!   it (the HTTP benches).
//! - [`report`]: latency quantiles, the summary line and the async `main` of the HTTP
//!   benches.
//! - [`measure`]: interleaved timing of a subject against its baseline (median batch rates),
//!   peak RSS from `/proc/self/status`, and JSON result lines.
//!
//! The criterion benches (`benches/*.rs`) and the bench binaries (`src/bin/*.rs`) are thin
//! drivers of these modules; `README.md` lists the figures and how to reproduce them.

pub mod baseline;
pub mod daemon;
pub mod disk;
pub mod measure;
pub mod pg;
pub mod report;
pub mod sync;
pub mod typed;
pub mod workload;

/// Why a bench step failed. Benches abort on the first error: a number measured after one would
/// be meaningless.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The raw-SQLite baseline failed.
    #[error("baseline sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Opening a store failed.
    #[error("opening the store: {0}")]
    Open(#[from] meshlite_core::store::OpenError),
    /// A local write failed.
    #[error("store write: {0}")]
    Write(#[from] meshlite_core::store::WriteError),
    /// Applying remote transactions failed.
    #[error("store apply: {0}")]
    Apply(#[from] meshlite_core::store::ApplyError),
    /// A store read failed.
    #[error("store read: {0}")]
    Read(#[from] meshlite_core::store::ReadError),
    /// Closing a store failed.
    #[error("closing the store: {0}")]
    Close(#[from] meshlite_core::store::CloseError),
    /// The PMOVES schema did not load.
    #[error("schema: {0}")]
    Schema(#[from] meshlite_core::schema::SchemaError),
    /// A stored transaction did not decode.
    #[error("stored transaction: {0}")]
    Decode(#[from] meshlite_core::change::DecodeTxnError),
    /// The sync session failed or did not converge.
    #[error("sync: {0}")]
    Sync(String),
    /// The workload produced a wrong result (the bench measured something else than intended).
    #[error("check failed: {0}")]
    Check(String),
    /// Postgres refused a statement of the bridge bench (setup or baseline).
    #[error("postgres: {}", pg_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The bridge failed (setup or apply).
    #[error("bridge: {0}")]
    Bridge(String),
    /// A file or process operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Postgres' own message for an error (the driver's `Display` says only "db error").
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
