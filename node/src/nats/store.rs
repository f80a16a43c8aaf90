//! [`NatsStore`] for the core store. Reads run on the blocking pool: the store's read connections
//! are synchronous SQLite and must not stall the async workers.

use meshlite_core::store::{ApplyError, ChangeKind, ReadError, StoreEvent};
use meshlite_core::{ReplicaId, Seq, Store, Txn, TxnId};
use tokio::sync::broadcast;

use super::{ChangeView, LocalTxns, NatsStore, Operation};

/// Error of a store operation made for NATS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreAccessError {
    /// Reading the summary or transactions failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Applying relayed transactions failed as a whole.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// A stored transaction of ours did not decode.
    #[error("stored transaction unreadable: {0}")]
    Corrupt(#[from] meshlite_core::change::DecodeTxnError),
    /// The blocking task running the read panicked or was cancelled.
    #[error("store read task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

fn operation(kind: ChangeKind) -> Operation {
    match kind {
        ChangeKind::Insert => Operation::Insert,
        ChangeKind::Update => Operation::Update,
        ChangeKind::Delete => Operation::Delete,
        ChangeKind::Append => Operation::Append,
    }
}

impl NatsStore for Store {
    type Event = StoreEvent;
    type Error = StoreAccessError;

    fn replica_id(&self) -> ReplicaId {
        Store::replica_id(self)
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        Store::subscribe(self)
    }

    fn changes(event: &StoreEvent) -> (bool, Vec<ChangeView<'_>>) {
        match event {
            StoreEvent::Committed { local, changes, .. } => {
                let views = changes.iter().map(|c| ChangeView {
                    collection: &c.collection,
                    id: &c.id,
                    op: operation(c.kind),
                    value: c.value.as_ref(),
                });
                (*local, views.collect())
            }
            #[allow(unreachable_patterns)]
            _ => (false, Vec::new()),
        }
    }

    async fn local_head(&self) -> Result<Seq, StoreAccessError> {
        let store = self.clone();
        let summary = tokio::task::spawn_blocking(move || store.summary()).await??;
        Ok(summary.get(&self.replica_id()).map_or(0, |set| set.max()))
    }

    async fn local_txns(
        &self,
        from: Seq,
        to: Seq,
        budget: usize,
    ) -> Result<LocalTxns, StoreAccessError> {
        let store = self.clone();
        let want = [(self.replica_id(), from..=to)];
        let batch = tokio::task::spawn_blocking(move || store.txns_for(&want, budget)).await??;
        let txns = batch
            .txns
            .into_iter()
            .map(|bytes| Ok::<(TxnId, Vec<u8>), StoreAccessError>((Txn::decode(&bytes)?.id, bytes)))
            .collect::<Result<_, _>>()?;
        Ok(LocalTxns {
            txns,
            more: batch.more,
        })
    }

    async fn apply(&self, txns: Vec<Txn>) -> Result<Vec<(TxnId, String)>, StoreAccessError> {
        Ok(self.apply_remote_async(txns).await?.rejected)
    }
}
