//! [`Replica`] for the core store: the node's replica.
//!
//! Reads and acks are the store's own async entry points (served by its reader connections and
//! writer thread, never on a runtime worker); applying uses the writer's async command path.

use meshlite_core::store::{ApplyError, ReadError, Store, StoreEvent, WriteError};
use meshlite_core::{ReplicaId, Summary, Txn, TxnId};
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
        let store = self.clone();
        blocking(move || store.summary().map_err(read_error)).await
    }

    async fn load_txns(
        &self,
        ranges: TxnRanges,
        budget_bytes: usize,
    ) -> Result<LoadedTxns, ReplicaError> {
        let store = self.clone();
        let (batch, ranges) = blocking(move || {
            let batch = store.txns_for(&ranges, budget_bytes).map_err(read_error)?;
            Ok((batch, ranges))
        })
        .await?;
        let ids = batch
            .txns
            .iter()
            .map(|bytes| Txn::decode(bytes).map(|t| t.id))
            .collect::<Result<Vec<TxnId>, _>>()
            .map_err(|e| ReplicaError::Corrupt(format!("stored transaction: {e}")))?;
        let rest = match ids.last() {
            Some(last) if batch.more => meshlite_core::version::ranges_after(&ranges, *last),
            _ => Vec::new(),
        };
        Ok(LoadedTxns {
            txns: batch.txns,
            ids,
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
        let store = self.clone();
        blocking(move || store.record_peer_ack(peer, summary).map_err(write_error)).await
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

/// Runs a blocking store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReplicaError> + Send + 'static,
) -> Result<T, ReplicaError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ReplicaError::unavailable)?
}
