//! What the transport needs from the replica it serves.
//!
//! The transport drives sync sessions and pushes; the data lives elsewhere. [`SyncBackend`] is
//! the narrow interface between them: the node implements it for the core store
//! (`meshlite_core::store::Store`, in [`super::store_backend`]); the central bridge can implement
//! it over Postgres and reuse the whole transport. Every method is async and must not block the
//! calling runtime thread (a SQLite-backed implementation hands work to its own threads).

use std::future::Future;
use std::ops::RangeInclusive;

use meshlite_core::{ReplicaId, Seq, Summary, Txn};

/// Ranges of transactions per origin, as the protocol's `NeedTxns` event lists them.
pub type TxnRanges = Vec<(ReplicaId, RangeInclusive<Seq>)>;

/// A storage failure, reported to the peer as an internal error and logged.
#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct BackendError(#[from] pub Box<dyn std::error::Error + Send + Sync>);

impl BackendError {
    /// Wraps any error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(e))
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

/// One batch of stored transactions for a peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedTxns {
    /// Encoded transactions, in (origin, seq) order.
    pub txns: Vec<Vec<u8>>,
    /// What is left to load (the byte budget stopped the batch); empty when done. Ranges that
    /// were garbage-collected are not in it: they can never be sent.
    pub rest: TxnRanges,
}

/// What applying received transactions did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// New to this replica (applied, or parked until their dependencies arrive).
    pub new: usize,
    /// Already held.
    pub duplicates: usize,
    /// Refused as malformed or unappliable.
    pub rejected: usize,
}

/// The replica a transport serves. Cheap to clone (a handle).
pub trait SyncBackend: Clone + Send + Sync + 'static {
    /// Our identity and summary, for a session's `Hello` and for acks.
    fn local_state(&self) -> impl Future<Output = Result<LocalState, BackendError>> + Send;

    /// Loads up to about `budget_bytes` of the transactions in `ranges`.
    fn load_txns(
        &self,
        ranges: TxnRanges,
        budget_bytes: usize,
    ) -> impl Future<Output = Result<LoadedTxns, BackendError>> + Send;

    /// Applies received transactions (idempotent, any order).
    fn apply_txns(
        &self,
        txns: Vec<Txn>,
    ) -> impl Future<Output = Result<Applied, BackendError>> + Send;

    /// Records what a peer replica reported holding (feeds garbage-collection horizons).
    fn peer_summary(
        &self,
        peer: ReplicaId,
        summary: Summary,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
}
