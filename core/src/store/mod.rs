//! The embedded store: SQLite for durability and reads, one Automerge document per record for
//! merging.
//!
//! # How the parts fit
//! - [`Store`] is a cheap, cloneable handle. Writes become [`writer::Command`]s on a bounded
//!   channel to the single writer thread ([`writer`]), which owns the only write connection and
//!   commits queued commands in groups. Local writes ([`local`]) and remote transactions
//!   ([`remote`]) are both applied there; so are peer acknowledgements, GC and compaction
//!   ([`gc`]).
//! - Reads go to a pool of read-only connections ([`read`], [`inspect`]) and are served from
//!   materialized rows: the merged JSON of each record, kept in the same SQLite transaction as
//!   the Automerge state and the summary, so a reader sees a transaction entirely or not at all.
//! - [`doc`] encodes JSON into a record's Automerge document under the field merge policies and
//!   materializes it back; [`docs`] keeps a bounded (2Q) cache of loaded documents in front of
//!   their stored states; [`rows`] holds the SQL for rows and held ranges; [`migrations`]
//!   describes the tables; [`open`] brings a data directory up to date.
//! - [`record`] exposes one record's document (same encoding and merge rules) to replicas that
//!   keep document states elsewhere: the central bridge merges in Postgres with it.
//! - [`backup`] copies a store's database to one file while a daemon runs (SQLite online backup in
//!   one read snapshot) and restores such a file into an empty directory under a new replica id
//!   (or, on request, the backed-up one).
//! - [`template`] (feature `testkit`): the database of a new empty store, copied into each of the
//!   many fresh stores a test harness opens instead of migrating every one.
//!
//! # Durability
//! The database runs in WAL mode. With [`Synchronous::Normal`] (the default) a write is
//! acknowledged after its COMMIT reached the WAL file in the OS page cache: it survives the
//! process being killed (`kill -9`, a panic, an OOM kill) because the OS still writes it out, but a
//! power loss or kernel crash can lose the most recent acknowledged transactions (never corrupt
//! the database: it reopens at an earlier consistent state, and peers resend what is missing).
//! With [`Synchronous::Full`] every COMMIT is fsynced before it is acknowledged, so acknowledged
//! writes also survive power loss, at the cost of one fsync per group commit.
//!
//! # Blocking and async
//! The blocking methods ([`Store::transact`], [`Store::apply_remote`], the reads, the peer, GC
//! and close calls) must not be called from an async runtime's worker thread; each has an
//! `_async` variant for async code, which never blocks a worker:
//! - Writes and the other writer commands send the same `writer::Command` and await its
//!   oneshot reply instead of blocking on it.
//! - Reads ([`Store::get_async`], [`Store::query_async`], [`Store::summary_async`],
//!   [`Store::txns_for_async`], [`Store::status_async`]) run their blocking variant on Tokio's
//!   blocking pool (`spawn_blocking`), as does [`Store::close_async`] (it joins the writer
//!   thread). Chosen over a job queue served by threads of the store's own because the daemon
//!   already runs on Tokio and core already depends on it, the `read` pool already bounds how
//!   many reads touch SQLite at once (extra ones wait for a connection on a blocking thread,
//!   never on a worker), and a panic comes back to the caller with no threads of our own to own,
//!   restart or shut down. The cost: the `_async` reads must be called within a Tokio runtime
//!   (like `tokio::task::spawn_blocking`, they panic outside one), and a read cannot be
//!   cancelled once it started (dropping its future only discards the result).

pub mod backup;
mod derived;
mod doc;
mod docs;
mod error;
mod first_change;
mod gc;
pub mod idempotency;
mod inspect;
mod local;
#[cfg(any(test, feature = "testkit"))]
pub mod memory;
mod merged;
mod migrations;
mod open;
mod read;
pub mod record;
mod remote;
mod root_puts;
mod rows;
#[cfg(any(test, feature = "testkit"))]
pub mod template;
mod types;
mod writer;

use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};

pub use error::{ApplyError, CloseError, OpenError, ReadError, WriteError};
pub use idempotency::{IdempotencyKey, Once};
pub use local::MAX_ID_LEN;
pub use open::DB_FILE;
pub use remote::check_remote_txn;
pub use types::{
    ApplyReport, ChangeKind, CollectionStatus, Committed, GcReport, OriginStatus, PeerAck,
    PeerAcks, PeerLag, Query, RecordChange, Status, StoreEvent, TxnBatch, WriteOp,
};
pub use writer::{COMMAND_QUEUE, CommitStats};

use crate::change::Txn;
use crate::ids::{ReplicaId, Seq};
use crate::schema::Schema;
use crate::version::Summary;
use open::Place;
use read::ReadPool;
use writer::{Command, Writer};

/// Capacity of the [`Store::subscribe`] channel; a slower subscriber sees `Lagged` and should
/// re-read from the store.
pub const EVENT_CHANNEL: usize = 1024;

/// Most ops sent to the writer in one apply command; larger [`Store::apply_remote`] calls are
/// split so the writer can interleave other work.
pub const APPLY_CHUNK_OPS: usize = 4096;

/// How durable an acknowledged write is (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// Survives a killed process; a power loss can lose the latest acknowledged writes.
    #[default]
    Normal,
    /// Also survives power loss (one fsync per group commit).
    Full,
}

/// Options for [`Store::open`].
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Schema to install or upgrade to; `None` uses the stored one (schemaless if none).
    pub schema: Option<Schema>,
    /// Durability of acknowledged writes. Default [`Synchronous::Normal`].
    pub synchronous: Synchronous,
    /// Loaded Automerge documents kept in memory (each costs several KiB). Default 1024. Documents
    /// used once wait in a probation segment of 8 more (see `store::docs`).
    pub doc_cache: usize,
    /// Read-only connections for concurrent reads. Default 4.
    pub read_connections: usize,
    /// Partial replication (`SYNC_TABLES`): keep only remote transactions that touch one of
    /// these collections; others are recorded as held (so peers do not resend them) but neither
    /// stored nor shown, which makes this replica a leaf for the other collections: it never
    /// relays them. `None` (default) keeps everything. Local writes are not restricted.
    pub replicate: Option<std::collections::BTreeSet<String>>,
    /// How long a SQLite call waits on a lock held by another connection (a checkpoint, another
    /// process) before failing with a storage (busy) error. Default 5 s.
    pub busy_timeout: Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            schema: None,
            synchronous: Synchronous::Normal,
            doc_cache: 1024,
            read_connections: 4,
            replicate: None,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// A handle to an open store. Cloning is cheap; all clones share one writer thread.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    replica: ReplicaId,
    schema: Arc<Schema>,
    dir: PathBuf,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<StoreEvent>,
    readers: ReadPool,
    runner: Runner,
    commits: Arc<writer::CommitCounters>,
}

/// An inline writer and its command queue (`None` once it closed).
#[cfg(any(test, feature = "testkit"))]
type InlineWriter = Box<(Writer, mpsc::Receiver<Command>)>;

/// Where the writer runs.
enum Runner {
    /// On its own thread (every store on a data directory), joined by [`Store::close`].
    Thread(Mutex<Option<JoinHandle<()>>>),
    /// On the thread of whoever sends a command, right after sending it ([`memory`] stores,
    /// feature `testkit`): the same groups, savepoints and commits, without a thread hand-off
    /// per command, which cost the test harnesses more than an in-memory command. The store's
    /// connections go back to `spare` when it closes.
    #[cfg(any(test, feature = "testkit"))]
    Inline {
        writer: Mutex<Option<InlineWriter>>,
        spare: Arc<memory::Spare>,
    },
}

impl Runner {
    /// Starts the writer thread.
    fn spawn(writer: Writer, rx: mpsc::Receiver<Command>) -> Result<Runner, OpenError> {
        let thread = std::thread::Builder::new()
            .name(format!("meshlite-writer-{}", writer.replica.short()))
            .spawn(move || writer.run(rx))
            .map_err(OpenError::Thread)?;
        Ok(Runner::Thread(Mutex::new(Some(thread))))
    }

    /// Runs the queued commands now if the writer runs inline (then drops it once closed).
    fn run_queued(&self) {
        #[cfg(any(test, feature = "testkit"))]
        if let Runner::Inline { writer, spare } = self {
            let mut slot = writer.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(running) = slot.as_mut()
                && let (writer, rx) = &mut **running
                && writer.run_queued(rx)
                && let Some(done) = slot.take()
            {
                spare.keep_writer(done.0.conn);
            }
        }
    }

    /// Waits for the writer thread to end (after a close request).
    fn join(&self) -> Result<(), CloseError> {
        match self {
            Runner::Thread(thread) => {
                let thread = thread.lock().unwrap_or_else(PoisonError::into_inner).take();
                match thread {
                    Some(t) => t.join().map_err(|_| CloseError::WriterDied),
                    None => Ok(()),
                }
            }
            #[cfg(any(test, feature = "testkit"))]
            Runner::Inline { .. } => Ok(()),
        }
    }
}

/// An in-memory store's connections outlive it: the next store opened on its database starts
/// from them (see [`memory`]).
#[cfg(any(test, feature = "testkit"))]
impl Drop for Inner {
    fn drop(&mut self) {
        if let Runner::Inline { writer, spare } = &self.runner {
            let slot = writer.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(done) = slot {
                spare.keep_writer(done.0.conn);
            }
            spare.keep_readers(self.readers.take_all());
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("replica", &self.inner.replica)
            .field("dir", &self.inner.dir)
            .finish()
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| d.as_millis() as u64)
}

impl Store {
    /// Opens the store in `dir`, creating the directory and database if missing.
    pub fn open(dir: &Path, opts: OpenOptions) -> Result<Store, OpenError> {
        Store::open_at(Place::Dir(dir), opts)
    }

    /// Opens the store at `place`; its writer runs on a thread of its own for a data directory,
    /// inline for an in-memory database.
    fn open_at(place: Place<'_>, opts: OpenOptions) -> Result<Store, OpenError> {
        let (conn, replica, schema, dir_lock) = open::open_db(place, &opts)?;
        let schema = Arc::new(schema);
        let summary = rows::load_summary(&conn)?;
        let rowversion = rows::max_rowversion(&conn)?;
        let parked: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM parked")?
            .query_row([], |r| r.get(0))?;
        let (db, flags) = place.db();
        let kept = place.spare_readers();
        let readers =
            ReadPool::open_with(&db, flags, kept, opts.read_connections, opts.busy_timeout)?;
        let (events, _) = broadcast::channel(EVENT_CHANNEL);
        let commits = Arc::new(writer::CommitCounters::default());
        let writer = Writer {
            conn,
            replica,
            schema: schema.clone(),
            summary,
            docs: docs::DocCache::new(opts.doc_cache, replica),
            rowversion,
            parked: parked as u64,
            events: events.clone(),
            dir_lock,
            replicate: opts.replicate.clone(),
            commits: commits.clone(),
        };
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let runner = match place {
            Place::Dir(_) => Runner::spawn(writer, rx)?,
            #[cfg(any(test, feature = "testkit"))]
            Place::Memory(db) => Runner::Inline {
                writer: Mutex::new(Some(Box::new((writer, rx)))),
                spare: db.spare().clone(),
            },
        };
        let inner = Inner {
            replica,
            schema,
            dir: place.dir(),
            commands,
            events,
            readers,
            runner,
            commits,
        };
        Ok(Store {
            inner: Arc::new(inner),
        })
    }

    /// This replica's id.
    pub fn replica_id(&self) -> ReplicaId {
        self.inner.replica
    }

    /// Groups (SQLite transactions) and commands the writer committed since the store opened:
    /// commands per group is how many callers shared each commit (group commit).
    pub fn commit_stats(&self) -> CommitStats {
        self.inner.commits.snapshot()
    }

    /// Commands waiting in the writer's queue (not yet taken into a group).
    pub fn queued_commands(&self) -> usize {
        COMMAND_QUEUE - self.inner.commands.capacity()
    }

    /// The schema in force.
    pub fn schema(&self) -> Arc<Schema> {
        self.inner.schema.clone()
    }

    /// The data directory (of an in-memory store: its database's name).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Sends a command and waits for its reply (blocking).
    fn call<T, E>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, E>>) -> Command,
        closed: E,
    ) -> Result<T, E> {
        let (tx, rx) = oneshot::channel();
        if self.inner.commands.blocking_send(make(tx)).is_err() {
            return Err(closed);
        }
        self.inner.runner.run_queued();
        rx.blocking_recv().unwrap_or(Err(closed))
    }

    /// Sends a command and awaits its reply.
    async fn call_async<T, E>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, E>>) -> Command,
        closed: E,
    ) -> Result<T, E> {
        let (tx, rx) = oneshot::channel();
        if self.inner.commands.send(make(tx)).await.is_err() {
            return Err(closed);
        }
        // Blocks this task while an inline writer runs (in-memory test stores only).
        self.inner.runner.run_queued();
        rx.await.unwrap_or(Err(closed))
    }

    /// Runs the blocking read `f` on Tokio's blocking pool (see "Blocking and async").
    async fn read_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, ReadError> + Send + 'static,
    ) -> Result<T, ReadError> {
        let store = self.clone();
        off_worker(move || f(&store), ReadError::Cancelled).await
    }

    /// Commits `ops` atomically as one transaction (blocking until durable).
    pub fn transact(&self, ops: Vec<WriteOp>) -> Result<Committed, WriteError> {
        self.call(|reply| Command::Transact { ops, reply }, WriteError::Closed)
    }

    /// Commits `ops` atomically as one transaction.
    pub async fn transact_async(&self, ops: Vec<WriteOp>) -> Result<Committed, WriteError> {
        self.call_async(|reply| Command::Transact { ops, reply }, WriteError::Closed)
            .await
    }

    /// Commits `ops` once per idempotency key: a retry with the same key and fingerprint applies
    /// nothing and gets the first answer (see [`idempotency`]).
    pub fn transact_once(
        &self,
        ops: Vec<WriteOp>,
        key: IdempotencyKey,
    ) -> Result<Once, WriteError> {
        self.call(
            |reply| Command::TransactOnce { ops, key, reply },
            WriteError::Closed,
        )
    }

    /// [`Store::transact_once`] for async callers.
    pub async fn transact_once_async(
        &self,
        ops: Vec<WriteOp>,
        key: IdempotencyKey,
    ) -> Result<Once, WriteError> {
        self.call_async(
            |reply| Command::TransactOnce { ops, key, reply },
            WriteError::Closed,
        )
        .await
    }

    /// Upserts one document record (merge-patch); returns the merged record.
    pub fn put(&self, collection: &str, value: Value) -> Result<Value, WriteError> {
        self.single(WriteOp::Put {
            collection: collection.to_owned(),
            value,
            recreate: false,
        })
    }

    /// Re-creates a deleted record (or upserts a live one); returns the merged record.
    pub fn recreate(&self, collection: &str, value: Value) -> Result<Value, WriteError> {
        self.single(WriteOp::Put {
            collection: collection.to_owned(),
            value,
            recreate: true,
        })
    }

    /// Deletes one document record.
    pub fn delete(&self, collection: &str, id: &str) -> Result<(), WriteError> {
        self.single(WriteOp::Delete {
            collection: collection.to_owned(),
            id: id.to_owned(),
        })
        .map(drop)
    }

    /// Adds `by` to a counter field; returns the merged record.
    pub fn increment(
        &self,
        collection: &str,
        id: &str,
        field: &str,
        by: i64,
    ) -> Result<Value, WriteError> {
        let op = WriteOp::Increment {
            collection: collection.to_owned(),
            id: id.to_owned(),
            field: field.to_owned(),
            by,
        };
        self.single(op)
    }

    /// Appends one log row; returns it with its id.
    pub fn append(&self, collection: &str, value: Value) -> Result<Value, WriteError> {
        self.single(WriteOp::Append {
            collection: collection.to_owned(),
            value,
        })
    }

    fn single(&self, op: WriteOp) -> Result<Value, WriteError> {
        let committed = self.transact(vec![op])?;
        Ok(committed
            .changes
            .into_iter()
            .next()
            .and_then(|c| c.value)
            .unwrap_or(Value::Null))
    }

    /// One live record (or log row); `None` when missing or deleted.
    pub fn get(&self, collection: &str, id: &str) -> Result<Option<Value>, ReadError> {
        self.inner
            .readers
            .with(|c| read::get(c, &self.inner.schema, collection, id))
    }

    /// [`Store::get`] for async callers.
    pub async fn get_async(&self, collection: &str, id: &str) -> Result<Option<Value>, ReadError> {
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.read_async(move |s| s.get(&collection, &id)).await
    }

    /// Rows of a document or log collection matching `q`.
    pub fn query(&self, collection: &str, q: &Query) -> Result<Vec<Value>, ReadError> {
        self.inner
            .readers
            .with(|c| read::query(c, &self.inner.schema, collection, q))
    }

    /// [`Store::query`] for async callers.
    pub async fn query_async(&self, collection: &str, q: &Query) -> Result<Vec<Value>, ReadError> {
        let (collection, q) = (collection.to_owned(), q.clone());
        self.read_async(move |s| s.query(&collection, &q)).await
    }

    /// What this replica holds.
    pub fn summary(&self) -> Result<Summary, ReadError> {
        self.inner.readers.with(inspect::summary)
    }

    /// [`Store::summary`] for async callers.
    pub async fn summary_async(&self) -> Result<Summary, ReadError> {
        self.read_async(Store::summary).await
    }

    /// Stored transactions in the wanted ranges, in (origin, seq) order, up to `byte_budget`
    /// bytes (a budget always admits at least one).
    pub fn txns_for(
        &self,
        want: &[(ReplicaId, RangeInclusive<Seq>)],
        byte_budget: usize,
    ) -> Result<TxnBatch, ReadError> {
        self.inner
            .readers
            .with(|c| inspect::txns_for(c, want, byte_budget))
    }

    /// [`Store::txns_for`] for async callers.
    pub async fn txns_for_async(
        &self,
        want: &[(ReplicaId, RangeInclusive<Seq>)],
        byte_budget: usize,
    ) -> Result<TxnBatch, ReadError> {
        let want = want.to_vec();
        self.read_async(move |s| s.txns_for(&want, byte_budget))
            .await
    }

    /// Applies remote transactions (blocking). Large inputs are split into commands of at most
    /// [`APPLY_CHUNK_OPS`] ops; each transaction is still applied atomically.
    pub fn apply_remote(&self, txns: Vec<Txn>) -> Result<ApplyReport, ApplyError> {
        let mut report = ApplyReport::default();
        for chunk in chunks(txns) {
            report.absorb(self.call(
                |reply| Command::Apply { txns: chunk, reply },
                ApplyError::Closed,
            )?);
        }
        Ok(report)
    }

    /// Applies remote transactions.
    pub async fn apply_remote_async(&self, txns: Vec<Txn>) -> Result<ApplyReport, ApplyError> {
        let mut report = ApplyReport::default();
        for chunk in chunks(txns) {
            report.absorb(
                self.call_async(
                    |reply| Command::Apply { txns: chunk, reply },
                    ApplyError::Closed,
                )
                .await?,
            );
        }
        Ok(report)
    }

    /// Events sent after each commit.
    pub fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.events.subscribe()
    }

    /// A snapshot for `meshlite status`.
    pub fn status(&self) -> Result<Status, ReadError> {
        self.inner
            .readers
            .with(|c| inspect::status(c, &self.inner.schema, self.inner.replica))
    }

    /// [`Store::status`] for async callers.
    pub async fn status_async(&self) -> Result<Status, ReadError> {
        self.read_async(Store::status).await
    }

    /// This replica's summary and what every known peer last acknowledged holding, read at one
    /// instant: what each peer lacks of this replica's history (sync visibility).
    pub fn peer_acks(&self) -> Result<PeerAcks, ReadError> {
        self.inner.readers.with(inspect::peer_acks)
    }

    /// [`Store::peer_acks`] for async callers.
    pub async fn peer_acks_async(&self) -> Result<PeerAcks, ReadError> {
        self.read_async(Store::peer_acks).await
    }

    /// Records what `peer` acknowledged holding (feeds the GC horizon; persisted).
    pub fn record_peer_ack(&self, peer: ReplicaId, held: Summary) -> Result<(), WriteError> {
        self.call(
            |reply| Command::PeerAck { peer, held, reply },
            WriteError::Closed,
        )
    }

    /// [`Store::record_peer_ack`] for async callers.
    pub async fn record_peer_ack_async(
        &self,
        peer: ReplicaId,
        held: Summary,
    ) -> Result<(), WriteError> {
        self.call_async(
            |reply| Command::PeerAck { peer, held, reply },
            WriteError::Closed,
        )
        .await
    }

    /// Removes a peer from the GC horizon.
    pub fn forget_peer(&self, peer: ReplicaId) -> Result<(), WriteError> {
        self.call(
            |reply| Command::ForgetPeer { peer, reply },
            WriteError::Closed,
        )
    }

    /// [`Store::forget_peer`] for async callers.
    pub async fn forget_peer_async(&self, peer: ReplicaId) -> Result<(), WriteError> {
        self.call_async(
            |reply| Command::ForgetPeer { peer, reply },
            WriteError::Closed,
        )
        .await
    }

    /// Deletes stored transactions that every known peer holds (see [`gc`]).
    pub fn gc(&self) -> Result<GcReport, WriteError> {
        self.call(|reply| Command::Gc { reply }, WriteError::Closed)
    }

    /// [`Store::gc`] for async callers.
    pub async fn gc_async(&self) -> Result<GcReport, WriteError> {
        self.call_async(|reply| Command::Gc { reply }, WriteError::Closed)
            .await
    }

    /// Rewrites up to `max_docs` document states with appended chunks as one snapshot each.
    pub fn compact(&self, max_docs: usize) -> Result<usize, WriteError> {
        self.call(
            |reply| Command::Compact { max_docs, reply },
            WriteError::Closed,
        )
    }

    /// [`Store::compact`] for async callers.
    pub async fn compact_async(&self, max_docs: usize) -> Result<usize, WriteError> {
        self.call_async(
            |reply| Command::Compact { max_docs, reply },
            WriteError::Closed,
        )
        .await
    }

    /// Finishes queued writes, stops the writer thread and checkpoints the WAL. Other clones of
    /// this handle get [`WriteError::Closed`] afterwards.
    pub fn close(self) -> Result<(), CloseError> {
        let result = self.call(|reply| Command::Close { reply }, CloseError::WriterDied);
        self.inner.runner.join()?;
        result
    }

    /// [`Store::close`] for async callers: it waits for queued writes and joins the writer
    /// thread on Tokio's blocking pool.
    pub async fn close_async(self) -> Result<(), CloseError> {
        off_worker(move || self.close(), CloseError::Cancelled).await
    }
}

/// Runs the blocking call `f` on Tokio's blocking pool and awaits it. A panic in `f` resumes in
/// the caller; `cancelled` is returned when the runtime shut down before `f` ran.
async fn off_worker<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
    cancelled: E,
) -> Result<T, E>
where
    T: Send + 'static,
    E: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => Err(cancelled),
        },
    }
}

/// The SQL and parameters [`Store::query`] runs for `q` on a collection defined by `def`; for
/// `EXPLAIN QUERY PLAN` and debugging.
pub fn query_sql(
    collection: &str,
    def: &crate::schema::CollectionDef,
    q: &Query,
) -> Result<(String, Vec<rusqlite::types::Value>), ReadError> {
    crate::schema::validate_name("collection", collection)?;
    read::build_query(def.kind, collection, def, q)
}

/// Splits transactions into groups of at most [`APPLY_CHUNK_OPS`] ops (at least one txn each).
fn chunks(txns: Vec<Txn>) -> Vec<Vec<Txn>> {
    let mut out: Vec<Vec<Txn>> = Vec::new();
    let mut ops = 0;
    for txn in txns {
        let n = txn.ops.len();
        match out.last_mut() {
            Some(last) if ops + n <= APPLY_CHUNK_OPS => last.push(txn),
            _ => {
                out.push(vec![txn]);
                ops = 0;
            }
        }
        ops += n;
    }
    out
}

#[cfg(test)]
#[path = "async_tests.rs"]
mod async_tests;
