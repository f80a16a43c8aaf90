//! [`SyncBackend`] for the core store.
//!
//! The store's reads and acks are blocking calls served by its own connection pool and writer
//! thread; they run under `spawn_blocking` so a runtime worker never waits on SQLite. Applying
//! uses the store's async entry point.

use meshlite_core::store::{ApplyReport, Store};
use meshlite_core::{ReplicaId, Summary, Txn, TxnId};

use super::backend::{Applied, BackendError, LoadedTxns, LocalState, SyncBackend, TxnRanges};

impl SyncBackend for Store {
    async fn local_state(&self) -> Result<LocalState, BackendError> {
        let store = self.clone();
        let summary = blocking(move || store.summary()).await?;
        Ok(LocalState {
            replica: self.replica_id(),
            schema_version: self.schema().version,
            summary,
        })
    }

    async fn load_txns(
        &self,
        ranges: TxnRanges,
        budget_bytes: usize,
    ) -> Result<LoadedTxns, BackendError> {
        let store = self.clone();
        let (batch, ranges) = blocking(move || {
            let batch = store.txns_for(&ranges, budget_bytes);
            batch.map(|b| (b, ranges))
        })
        .await?;
        let rest = match batch.txns.last() {
            Some(last) if batch.more => {
                let last = Txn::decode(last).map_err(BackendError::new)?.id;
                meshlite_core::version::ranges_after(&ranges, last)
            }
            _ => Vec::new(),
        };
        Ok(LoadedTxns {
            txns: batch.txns,
            rest,
        })
    }

    async fn apply_txns(&self, txns: Vec<Txn>) -> Result<Applied, BackendError> {
        let report: ApplyReport = self
            .apply_remote_async(txns)
            .await
            .map_err(BackendError::new)?;
        for (id, reason) in &report.rejected {
            tracing::warn!(txn = ?id, %reason, "remote transaction rejected");
        }
        Ok(Applied {
            new: report.applied + report.parked,
            duplicates: report.duplicates,
            rejected: report.rejected.len(),
        })
    }

    async fn peer_summary(&self, peer: ReplicaId, summary: Summary) -> Result<(), BackendError> {
        let store = self.clone();
        blocking(move || store.record_peer_ack(peer, summary)).await
    }
}

/// The encoded bytes of committed transactions (for example those of a
/// `StoreEvent::Committed`), ready for [`super::NetHandle::push`]. Transactions no longer stored
/// (garbage-collected) are skipped.
pub async fn encoded_txns(store: &Store, ids: &[TxnId]) -> Result<Vec<Vec<u8>>, BackendError> {
    let ranges: TxnRanges = ids.iter().map(|id| (id.origin, id.seq..=id.seq)).collect();
    let store = store.clone();
    let batch = blocking(move || store.txns_for(&ranges, usize::MAX)).await?;
    Ok(batch.txns)
}

/// Runs a blocking store call on the blocking pool.
async fn blocking<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, BackendError>
where
    T: Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(BackendError::new)?
        .map_err(BackendError::new)
}
