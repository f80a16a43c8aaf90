//! The bridge's replica: [`PgReplica`] implements the mesh's [`Replica`] over Postgres, so the
//! bridge is a fleet peer like any node (sync sessions, pushes, gossip, the NATS relay) whose
//! store is the central database.
//!
//! # How the parts fit
//! - [`PgReplica`] holds two connections: a *writer* (one apply at a time, like the node's single
//!   SQLite writer) and a *reader* (summaries, loading transactions for peers). Either is
//!   re-established on the next call after Postgres went away; until then every call fails with
//!   [`ReplicaError::Unavailable`], so peers keep their data and resend it later — the fleet is
//!   the buffer.
//! - [`batch`] (with its SQL in [`sets`]): the usual way a batch is applied — every record it
//!   touches loaded and locked at once, merged in memory, then one statement per table.
//! - [`rowwise`]: the row-by-row path (what the set-based path hands back, and the fallback that
//!   finds refused transactions) and what both paths share.
//! - [`apply`]: one Postgres transaction per batch of received transactions, choosing the path;
//!   the replica state
//!   (summary, stored transactions, merged Automerge state, tombstones, parked transactions) and
//!   the materialized rows it explains commit together, so a crash at any point leaves either
//!   all of a batch or none of it, and a redelivered transaction is a duplicate.
//! - [`central`]: central edits captured in the outbox become the bridge's own transactions.
//! - [`rows`]: writing materialized rows (typed columns filled by `jsonb_populate_record`),
//!   deleting them, appending log rows; every identifier comes from a validated [`TableSpec`].
//!
//! # Two bridges on one database
//! Every apply first locks the `origins` rows of the transactions it carries (in a fixed order,
//! so two bridges cannot deadlock on them), then re-reads what is held: a transaction another
//! bridge committed meanwhile is a duplicate. Then it locks the records it touches: a
//! transaction-level advisory lock per record key, in key order (so even records neither bridge
//! has a state for yet serialize), and the existing states `FOR UPDATE`; merges of one record
//! serialize, and nothing is ever overwritten with a state that lacks another bridge's changes.
//! A deadlock all the same (e.g. with a central edit) retries the batch.

pub mod apply;
pub mod audit;
pub mod batch;
pub mod cache;
pub mod central;
pub mod copy;
pub mod db;
pub mod rows;
pub mod rowwise;
pub mod sets;
pub mod storable;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use meshlite_core::store::StoreEvent;
use meshlite_core::{ReplicaId, Schema, Summary, Txn};
use meshlite_mesh::replica::{Applied, LoadedTxns, Replica, ReplicaError, TxnRanges};
use tokio::sync::{Mutex, MutexGuard, broadcast};
use tokio_postgres::types::ToSql;

use crate::ddl::TableSpec;
use crate::migrations::Schemas;
use crate::pg::{PgConn, PgTarget};

/// Capacity of the commit event channel (as the store's).
pub const EVENT_CHANNEL: usize = 1024;

/// What every apply needs to know, fixed at start-up.
#[derive(Clone, Debug)]
pub struct Context {
    /// This bridge's origin (for its own transactions: central edits).
    pub replica: ReplicaId,
    /// The bridge's name (recorded with conflicts and rejections).
    pub name: String,
    /// The schema in force.
    pub schema: Arc<Schema>,
    /// Materialized tables by collection name (collections not here are held, stored and
    /// relayed, but not materialized).
    pub tables: HashMap<String, TableSpec>,
    /// Where the state and the tables live.
    pub schemas: Schemas,
    /// Most transactions applied in one Postgres transaction (`sync.batch_size`): larger inputs
    /// (a peer's frame can carry thousands) commit in several batches, so progress survives a
    /// crash and other writers get their turn.
    pub batch_size: usize,
    /// Estimated bytes of merged documents the writer keeps across batches
    /// (`sync.doc_cache_mib`; 0: none), see [`cache`].
    pub doc_cache_bytes: usize,
}

/// One lazily (re)connected Postgres connection, with the statements prepared on it.
#[derive(Debug)]
struct Conn {
    target: PgTarget,
    conn: Mutex<Option<PgConn>>,
    prepared: db::Prepared,
    /// Merged documents written on this connection (emptied with it: see [`cache`]).
    docs: cache::DocCache,
}

impl Conn {
    /// The connection, reconnecting if it was never made or has closed.
    async fn get(&self) -> Result<MutexGuard<'_, Option<PgConn>>, ReplicaError> {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_none_or(|c| c.client().is_closed()) {
            *guard = None;
            self.prepared.clear();
            self.docs.clear();
            let conn = self
                .target
                .connect()
                .await
                .map_err(ReplicaError::unavailable)?;
            *guard = Some(conn);
        }
        Ok(guard)
    }
}

/// Counters of the replica, exported on `/metrics`.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    /// Batches of received transactions committed.
    pub batches: AtomicU64,
    /// Time spent applying committed batches, in microseconds.
    pub batch_micros: AtomicU64,
    /// Transactions in the last committed batch.
    pub last_batch_txns: AtomicU64,
    /// Transactions applied (or parked) from peers.
    pub txns_applied: AtomicU64,
    /// Transactions received that were already held.
    pub txns_duplicate: AtomicU64,
    /// Transactions refused (recorded in `rejected`).
    pub txns_rejected: AtomicU64,
    /// Materialized rows written or deleted.
    pub rows_written: AtomicU64,
    /// Central edits turned into the bridge's own transactions.
    pub central_edits: AtomicU64,
    /// Replica operations that failed because Postgres failed (peers resend).
    pub postgres_errors: AtomicU64,
    /// Records whose cached document was current ([`cache`]).
    pub doc_cache_hits: AtomicU64,
    /// Cached documents found stale and loaded again.
    pub doc_cache_misses: AtomicU64,
    /// Batches that failed since the last one that committed (for the log's backoff).
    failing_batches: AtomicU64,
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

/// The bridge's replica over Postgres. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgReplica {
    stats: Arc<ReplicaStats>,
    ctx: Arc<Context>,
    writer: Arc<Conn>,
    reader: Arc<Conn>,
    events: broadcast::Sender<StoreEvent>,
}

impl PgReplica {
    /// A replica over the database at `target` (connections are made on first use).
    pub fn new(target: PgTarget, ctx: Context) -> Self {
        let conn = |target, cache_bytes| {
            Arc::new(Conn {
                target,
                conn: Mutex::new(None),
                prepared: db::Prepared::default(),
                docs: cache::DocCache::new(cache_bytes),
            })
        };
        Self {
            stats: Arc::default(),
            writer: conn(target.clone(), ctx.doc_cache_bytes),
            reader: conn(target, 0),
            ctx: Arc::new(ctx),
            events: broadcast::channel(EVENT_CHANNEL).0,
        }
    }

    /// The replica's counters.
    pub fn stats(&self) -> Arc<ReplicaStats> {
        self.stats.clone()
    }

    /// The start-up context.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Turns up to `limit` captured central edits into the bridge's own transactions (see
    /// [`central`]); they are announced as local commits, so gossip pushes them to the fleet.
    /// Returns how many transactions were made.
    pub async fn consume_outbox(&self, limit: i64) -> Result<usize, ReplicaError> {
        let mut guard = self.writer.get().await?;
        let conn = guard.as_mut().ok_or(ReplicaError::Closed)?;
        let outcome = central::consume(conn.client_mut(), &self.writer.prepared, &self.ctx, limit)
            .await
            .map_err(|e| {
                add(&self.stats.postgres_errors, 1);
                pg(e)
            })?;
        add(&self.stats.central_edits, outcome.txns.len());
        add(&self.stats.rows_written, outcome.changes.len());
        if !outcome.txns.is_empty() {
            let _ = self.events.send(outcome.event(true));
        }
        Ok(outcome.txns.len())
    }

    /// Applies one batch in one Postgres transaction.
    async fn apply_batch(&self, txns: Vec<Txn>) -> Result<Applied, ReplicaError> {
        let mut guard = self.writer.get().await?;
        let conn = guard.as_mut().ok_or(ReplicaError::Closed)?;
        let (started, n) = (Instant::now(), txns.len());
        let (prepared, docs) = (&self.writer.prepared, &self.writer.docs);
        let outcome = apply::apply_batch(conn.client_mut(), prepared, &self.ctx, txns, docs).await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                add(&self.stats.postgres_errors, 1);
                // Peers resend at push speed while Postgres fails (a full disk, an outage):
                // log failures 1, 2, 4, 8, … of a run, not every attempt.
                let run = self.stats.failing_batches.fetch_add(1, Ordering::Relaxed) + 1;
                if run.is_power_of_two() {
                    tracing::warn!(error = %rowwise::pg_reason(&e), failures = run, "applying to Postgres failed; peers will resend");
                }
                return Err(pg(e));
            }
        };
        let failed = self.stats.failing_batches.swap(0, Ordering::Relaxed);
        if failed > 0 {
            tracing::info!(failures = failed, "applying to Postgres works again");
        }
        let s = &self.stats;
        add(&s.batches, 1);
        add(&s.batch_micros, started.elapsed().as_micros() as usize);
        s.last_batch_txns.store(n as u64, Ordering::Relaxed);
        add(&s.txns_applied, outcome.applied.new);
        add(&s.txns_duplicate, outcome.applied.duplicates);
        add(&s.txns_rejected, outcome.applied.rejected.len());
        add(&s.rows_written, outcome.changes.len());
        let cached = self.writer.docs.counts();
        s.doc_cache_hits.store(cached.hits, Ordering::Relaxed);
        s.doc_cache_misses.store(cached.misses, Ordering::Relaxed);
        let visible = !outcome.txns.is_empty();
        let (applied, event) = outcome.into_event(false);
        if visible {
            // No subscriber is fine: the data is committed either way.
            let _ = self.events.send(event);
        }
        Ok(applied)
    }

    /// How often the writer's document cache was current (see [`cache`]).
    pub fn doc_cache_counts(&self) -> cache::CacheCounts {
        self.writer.docs.counts()
    }

    /// Whether the writer can reach Postgres now (for `/healthz`).
    pub async fn healthy(&self) -> bool {
        self.writer.get().await.is_ok()
    }
}

fn pg(e: tokio_postgres::Error) -> ReplicaError {
    ReplicaError::unavailable(PgFailure(e))
}

/// A Postgres error shown with the server's message and SQLSTATE: tokio-postgres' own `Display`
/// of a server error is only "db error", which is what peers logged as the reason a push was
/// refused (`replica storage unavailable (retry later): db error`).
#[derive(Debug)]
struct PgFailure(tokio_postgres::Error);

impl std::fmt::Display for PgFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&rowwise::pg_reason(&self.0))
    }
}

impl std::error::Error for PgFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

fn client<'a>(
    guard: &'a MutexGuard<'_, Option<PgConn>>,
) -> Result<&'a tokio_postgres::Client, ReplicaError> {
    guard
        .as_ref()
        .map(PgConn::client)
        .ok_or(ReplicaError::Closed)
}

impl Replica for PgReplica {
    fn replica_id(&self) -> ReplicaId {
        self.ctx.replica
    }

    fn schema_version(&self) -> u32 {
        self.ctx.schema.version
    }

    async fn summary(&self) -> Result<Summary, ReplicaError> {
        let guard = self.reader.get().await?;
        let sql = format!(
            "SELECT o.origin, lower(r), upper(r) FROM {}.origins o, unnest(o.held) r \
             ORDER BY o.origin, lower(r)",
            self.ctx.schemas.state
        );
        let rows = client(&guard)?.query(&sql, &[]).await.map_err(pg)?;
        let mut summary = Summary::new();
        for row in rows {
            let origin = origin_of(row.get(0))?;
            let (lo, hi): (i64, i64) = (row.get(1), row.get(2));
            let (lo, hi) = (seq_of(lo)?, seq_of(hi - 1)?);
            let mut set = summary.get(&origin).cloned().unwrap_or_default();
            set.insert_range(lo, hi);
            summary.set(origin, set);
        }
        Ok(summary)
    }

    async fn load_txns(
        &self,
        ranges: TxnRanges,
        budget_bytes: usize,
    ) -> Result<LoadedTxns, ReplicaError> {
        let guard = self.reader.get().await?;
        let sql = format!(
            "SELECT seq, bytes FROM {}.txns WHERE origin = $1 AND seq BETWEEN $2 AND $3 \
             ORDER BY seq",
            self.ctx.schemas.state
        );
        let mut out = LoadedTxns::default();
        let mut bytes_out = 0usize;
        for (origin, range) in &ranges {
            let (lo, hi) = (as_i64(*range.start()), as_i64(*range.end()));
            let params: [&(dyn ToSql + Sync); 3] = [&origin.0.as_slice(), &lo, &hi];
            let rows = client(&guard)?.query(&sql, &params).await.map_err(pg)?;
            for row in rows {
                if bytes_out >= budget_bytes && !out.txns.is_empty() {
                    let last = *out.ids.last().ok_or(ReplicaError::Closed)?;
                    out.rest = meshlite_core::version::ranges_after(&ranges, last);
                    return Ok(out);
                }
                let bytes: Vec<u8> = row.get(1);
                bytes_out += bytes.len();
                out.ids.push(meshlite_core::TxnId {
                    origin: *origin,
                    seq: seq_of(row.get(0))?,
                });
                out.txns.push(bytes);
            }
        }
        Ok(out)
    }

    async fn apply_txns(&self, mut txns: Vec<Txn>) -> Result<Applied, ReplicaError> {
        let mut total = Applied::default();
        while !txns.is_empty() {
            let rest = txns.split_off(txns.len().min(self.ctx.batch_size.max(1)));
            let applied = self.apply_batch(std::mem::replace(&mut txns, rest)).await?;
            total.new += applied.new;
            total.duplicates += applied.duplicates;
            total.rejected.extend(applied.rejected);
        }
        Ok(total)
    }

    async fn peer_summary(&self, peer: ReplicaId, summary: Summary) -> Result<(), ReplicaError> {
        let bytes = postcard::to_stdvec(&summary)
            .map_err(|e| ReplicaError::Corrupt(format!("cannot encode summary: {e}")))?;
        let guard = self.reader.get().await?;
        let sql = format!(
            "INSERT INTO {}.peer_acks (peer, summary, updated_at) VALUES ($1, $2, now()) \
             ON CONFLICT (peer) DO UPDATE SET summary = EXCLUDED.summary, updated_at = now()",
            self.ctx.schemas.state
        );
        client(&guard)?
            .execute(&sql, &[&peer.0.as_slice(), &bytes.as_slice()])
            .await
            .map_err(pg)?;
        rows::touch_sync_status(client(&guard)?, &self.ctx, &peer)
            .await
            .map_err(pg)?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }
}

/// A stored origin column as a replica id.
pub(crate) fn origin_of(bytes: &[u8]) -> Result<ReplicaId, ReplicaError> {
    ReplicaId::from_slice(bytes)
        .ok_or_else(|| ReplicaError::Corrupt(format!("origin of {} bytes", bytes.len())))
}

/// A stored seq as a core seq.
pub(crate) fn seq_of(v: i64) -> Result<meshlite_core::Seq, ReplicaError> {
    u64::try_from(v).map_err(|_| ReplicaError::Corrupt(format!("negative seq {v}")))
}

/// A core seq as a Postgres bigint (core caps seqs at `i64::MAX`).
pub(crate) fn as_i64(seq: meshlite_core::Seq) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}
