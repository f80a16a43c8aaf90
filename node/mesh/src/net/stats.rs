//! Counters of one peer connection, shared by the peer actor, its stream tasks and the mesh (a
//! leaf module: `peer` and `push` both use it).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshlite_core::ReplicaId;

use crate::fleet::NodeId;

/// Counters of one peer connection, shared by the actor, its tasks and the mesh.
#[derive(Debug)]
pub struct PeerStats {
    /// The peer.
    pub node_id: NodeId,
    /// Completed sync rounds.
    pub syncs: AtomicU64,
    /// Failed rounds, failed or refused streams.
    pub errors: AtomicU64,
    /// Push frames written.
    pub pushes_sent: AtomicU64,
    /// Push frames written that merge several queued pushes ([`super::coalesce`]).
    pub pushes_merged: AtomicU64,
    /// Push frames dropped at a full queue.
    pub pushes_dropped: AtomicU64,
    /// Push frames received.
    pub pushes_received: AtomicU64,
    /// Transactions in the push frames received.
    pub push_txns_received: AtomicU64,
    /// Push frames received that this node could not store since the last one it stored (its
    /// own storage failing, not the peer; paces the log).
    pub(crate) pushes_unstored_in_a_row: AtomicU64,
    /// Milliseconds since the Unix epoch of the last received data.
    last_seen_ms: AtomicU64,
    /// The replica the peer serves, from the first completed sync round (a connection serves
    /// one replica).
    replica: OnceLock<ReplicaId>,
}

impl PeerStats {
    pub(crate) fn new(node_id: NodeId) -> Self {
        let stats = Self {
            node_id,
            syncs: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            pushes_sent: AtomicU64::new(0),
            pushes_merged: AtomicU64::new(0),
            pushes_dropped: AtomicU64::new(0),
            pushes_received: AtomicU64::new(0),
            push_txns_received: AtomicU64::new(0),
            pushes_unstored_in_a_row: AtomicU64::new(0),
            last_seen_ms: AtomicU64::new(0),
            replica: OnceLock::new(),
        };
        stats.touch();
        stats
    }

    /// Records that data arrived from the peer now.
    pub fn touch(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_seen_ms.store(now, Ordering::Relaxed);
    }

    /// Records the replica the peer said it serves (the first one sticks).
    pub(crate) fn set_replica(&self, replica: ReplicaId) {
        let _ = self.replica.set(replica);
    }

    /// The replica the peer serves, once known.
    pub(crate) fn replica(&self) -> Option<ReplicaId> {
        self.replica.get().copied()
    }

    pub(crate) fn last_seen(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed))
    }
}
