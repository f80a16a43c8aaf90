//! [`Replica`] for the core store: the node's replica.
//!
//! Reads and acks are the store's own async entry points (served off the runtime's workers);
//! applying uses the writer's async command path.

use meshlite_core::store::{ApplyError, ReadError, Store, StoreEvent, WriteError};
use meshlite_core::{ReplicaId, Summary, Txn};
use tokio::sync::broadcast;

use super::{Applied, LoadedTxns, Replica, ReplicaError, TxnRanges};

impl Replica for Store {
    fn replica_id(&self) -> ReplicaId {
        Store::replica_id(self)
    }

    fn schema_version(&self) -> u32 {
        self.schema().version
    }

    async fn summary(&self) -> Result<Summary, ReplicaError> {
        self.summary_async().await.map_err(read_error)
    }

    async fn load_txns(
        &self,
        ranges: TxnRanges,
        budget_bytes: usize,
    ) -> Result<LoadedTxns, ReplicaError> {
        let batch = self
            .txns_for_async(&ranges, budget_bytes)
            .await
            .map_err(read_error)?;
        let rest = match batch.ids.last() {
            Some(last) if batch.more => meshlite_core::version::ranges_after(&ranges, *last),
            _ => Vec::new(),
        };
        Ok(LoadedTxns {
            txns: batch.txns,
            ids: batch.ids,
            rest,
        })
    }

    async fn apply_txns(&self, txns: Vec<Txn>) -> Result<Applied, ReplicaError> {
        let report = self.apply_remote_async(txns).await.map_err(apply_error)?;
        for (id, reason) in &report.rejected {
            tracing::warn!(txn = ?id, %reason, "remote transaction rejected");
        }
        Ok(Applied {
            new: report.applied + report.parked,
            duplicates: report.duplicates,
            rejected: report.rejected,
        })
    }

    async fn peer_summary(&self, peer: ReplicaId, summary: Summary) -> Result<(), ReplicaError> {
        self.record_peer_ack_async(peer, summary)
            .await
            .map_err(write_error)
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        Store::subscribe(self)
    }
}

fn read_error(e: ReadError) -> ReplicaError {
    match e {
        ReadError::Corrupt(m) => ReplicaError::Corrupt(m),
        other => ReplicaError::unavailable(other),
    }
}

fn write_error(e: WriteError) -> ReplicaError {
    match e {
        WriteError::Closed => ReplicaError::Closed,
        WriteError::Corrupt(m) => ReplicaError::Corrupt(m),
        other => ReplicaError::unavailable(other),
    }
}

fn apply_error(e: ApplyError) -> ReplicaError {
    match e {
        ApplyError::Closed => ReplicaError::Closed,
        other => ReplicaError::unavailable(other),
    }
}
