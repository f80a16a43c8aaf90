//! The replica a process serves: the one seam between the mesh and the data.
//!
//! Sync sessions (`net::sync`), pushes (`net::push`), the gossip actor and the NATS relay and
//! event feed all reach the data through [`Replica`] and nothing else. The node implements it for
//! the core store (`meshlite_core::store::Store`, in [`store`]); the central bridge implements it
//! over Postgres and reuses the whole mesh. Every method is async and must not block the calling
//! runtime thread (a SQLite-backed implementation hands the work to its own threads).
//!
//! Errors are a [`ReplicaError`]: the mesh tells a storage that is busy or unreachable (retry
//! later; peers keep their data and resend) from data that is corrupt (log loudly) and from a
//! replica that is shutting down.

pub mod store;

use std::future::Future;
use std::ops::RangeInclusive;

use meshlite_core::store::StoreEvent;
use meshlite_core::{ReplicaId, Seq, Summary, Txn, TxnId};
use tokio::sync::broadcast;

/// Ranges of transactions per origin, as the protocol's `NeedTxns` event lists them.
pub type TxnRanges = Vec<(ReplicaId, RangeInclusive<Seq>)>;

/// Why a replica operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// The storage is busy, failing or unreachable (a locked SQLite file, an I/O error, Postgres
    /// down). Nothing was lost: retry later; peers keep what they have and resend it.
    #[error("replica storage unavailable (retry later): {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Stored data was read but does not decode. Needs an operator (restore, or resync).
    #[error("replica data corrupt: {0}")]
    Corrupt(String),
    /// The replica is shutting down.
    #[error("replica closed")]
    Closed,
}

impl ReplicaError {
    /// A storage failure (see [`ReplicaError::Unavailable`]).
    pub fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unavailable(Box::new(e))
    }
}

/// What goes into our `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalState {
    /// This replica's id.
    pub replica: ReplicaId,
    /// The schema version in force.
    pub schema_version: u32,
    /// Everything this replica holds.
    pub summary: Summary,
}

/// One batch of stored transactions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedTxns {
    /// Encoded transactions, in (origin, seq) order, exactly as stored.
    pub txns: Vec<Vec<u8>>,
    /// Their ids, parallel to `txns`.
    pub ids: Vec<TxnId>,
    /// What is left to load (the byte budget stopped the batch); empty when done. Ranges that
    /// were garbage-collected are not in it: they can never be sent.
    pub rest: TxnRanges,
}

/// What applying received transactions did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// New to this replica (applied, or parked until their dependencies arrive).
    pub new: usize,
    /// Already held.
    pub duplicates: usize,
    /// Refused as malformed or unappliable, with the reason (already logged by the replica).
    pub rejected: Vec<(TxnId, String)>,
}

/// The replica a process serves. Cheap to clone (a handle).
pub trait Replica: Clone + Send + Sync + 'static {
    /// The origin of this replica's own transactions.
    fn replica_id(&self) -> ReplicaId;

    /// The schema version in force.
    fn schema_version(&self) -> u32;

    /// Everything this replica holds.
    fn summary(&self) -> impl Future<Output = Result<Summary, ReplicaError>> + Send;

    /// Loads up to about `budget_bytes` of the transactions in `ranges` (at least one).
    fn load_txns(
        &self,
        ranges: TxnRanges,
        budget_bytes: usize,
    ) -> impl Future<Output = Result<LoadedTxns, ReplicaError>> + Send;

    /// Applies received transactions (idempotent, any order).
    fn apply_txns(
        &self,
        txns: Vec<Txn>,
    ) -> impl Future<Output = Result<Applied, ReplicaError>> + Send;

    /// Records what a peer replica reported holding (feeds garbage-collection horizons).
    fn peer_summary(
        &self,
        peer: ReplicaId,
        summary: Summary,
    ) -> impl Future<Output = Result<(), ReplicaError>> + Send;

    /// Events sent after each commit (local writes and applied remote transactions).
    fn subscribe(&self) -> broadcast::Receiver<StoreEvent>;

    /// Our identity and summary, for a session's `Hello` and for acks.
    fn local_state(&self) -> impl Future<Output = Result<LocalState, ReplicaError>> + Send {
        async move {
            Ok(LocalState {
                replica: self.replica_id(),
                schema_version: self.schema_version(),
                summary: self.summary().await?,
            })
        }
    }

    /// The highest seq of our own transactions (0 when none).
    fn local_head(&self) -> impl Future<Output = Result<Seq, ReplicaError>> + Send {
        async move {
            let summary = self.summary().await?;
            Ok(summary.get(&self.replica_id()).map_or(0, |set| set.max()))
        }
    }

    /// The stored transactions `ids` (e.g. those of a commit event), for pushing; ones no longer
    /// stored (garbage-collected) are skipped.
    fn encoded(
        &self,
        ids: &[TxnId],
    ) -> impl Future<Output = Result<LoadedTxns, ReplicaError>> + Send {
        let ranges: TxnRanges = ids.iter().map(|id| (id.origin, id.seq..=id.seq)).collect();
        self.load_txns(ranges, usize::MAX)
    }
}
