//! Which dissemination a fleet node runs, by fleet size.
//!
//! Up to `direct_push_max_peers` peers known to discovery, a node runs today's small-fleet
//! mode: [`crate::dialer::Dialer`] keeps a connection to every peer and [`crate::gossip::Gossip`]
//! pushes each local commit to all of them in one hop. Once the peer table holds more peers than
//! that, the supervisor stops both and runs [`crate::epidemic::EpidemicDriver`] instead (a
//! bounded active view, broadcast trees, anti-entropy over both views). The switch is one-way
//! for the life of the process: the overlay works at any size, and flapping between modes
//! around the threshold would cost more than it saves.

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::dialer::Dialer;
use crate::discovery::table::PeerTable;
use crate::epidemic::EpidemicDriver;
use crate::fleet::NodeId;
use crate::gossip::Gossip;
use crate::replica::Replica;

/// The two modes and when to leave the first.
pub struct Supervisor<R> {
    /// Small-fleet push; must be cancelled by `direct`.
    pub gossip: Gossip<R>,
    /// Small-fleet full mesh; must be cancelled by `direct`.
    pub dialer: Dialer,
    /// Cancels `gossip` and `dialer` (a child of `cancel`).
    pub direct: CancellationToken,
    /// Overlay mode, started above the threshold.
    pub overlay: EpidemicDriver<R>,
    /// Where fleet size is read.
    pub table: PeerTable,
    /// This node (not counted).
    pub me: NodeId,
    /// Overlay mode above this many known peers (`direct_push_max_peers`).
    pub threshold: usize,
    /// Stops everything.
    pub cancel: CancellationToken,
}

impl<R> std::fmt::Debug for Supervisor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

/// Peers in `table` other than `me` (rows known only by address count too).
pub fn fleet_size(table: &PeerTable, me: NodeId) -> usize {
    table
        .snapshot()
        .iter()
        .filter(|row| row.node_id != Some(me))
        .count()
}

impl<R: Replica> Supervisor<R> {
    /// Runs the small-fleet mode until the fleet outgrows it, then overlay mode, until cancelled.
    pub async fn run(self) {
        let Supervisor {
            gossip,
            dialer,
            direct,
            overlay,
            table,
            me,
            threshold,
            cancel,
        } = self;
        let mut changes = table.changes();
        let mut direct_tasks = JoinSet::new();
        direct_tasks.spawn(gossip.run());
        direct_tasks.spawn(dialer.run());
        while fleet_size(&table, me) <= threshold {
            tokio::select! {
                () = cancel.cancelled() => break,
                changed = changes.changed() => if changed.is_err() { break },
            }
        }
        direct.cancel();
        while direct_tasks.join_next().await.is_some() {}
        if cancel.is_cancelled() {
            return;
        }
        tracing::info!(
            peers = fleet_size(&table, me),
            threshold,
            "fleet above direct_push_max_peers: switching to overlay dissemination"
        );
        overlay.run().await;
    }
}
