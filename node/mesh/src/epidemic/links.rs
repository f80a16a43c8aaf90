//! The driver's connection bookkeeping: which peers are connected, dials in flight with the
//! control messages waiting for them, sync rounds running, address probes; and the tasks that
//! dial, probe and sync ([`Task`]), whose outcomes come back as [`TaskDone`].

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::fleet::NodeId;
use crate::net::control::{ControlMessage, OverlayPeer};
use crate::net::events::SyncStats;
use crate::net::handle::{ConnectError, NetHandle};
use crate::net::sync::SyncError;

/// Most control messages held for one peer while it is being dialed.
const MAX_QUEUED_PER_PEER: usize = 64;
/// An address known only by address is dialed (to learn its node id) at most this often.
const PROBE_INTERVAL: Duration = Duration::from_secs(30);

/// Something to do off the driver's loop.
#[derive(Debug)]
pub(super) enum Task {
    /// Connect to a peer (queued control messages follow).
    Dial { peer: OverlayPeer, addr: SocketAddr },
    /// Connect to an address to learn its node id.
    Probe { addr: SocketAddr },
    /// One anti-entropy round, connecting first if needed.
    Sync { peer: OverlayPeer, addr: SocketAddr },
}

/// What a [`Task`] produced.
#[derive(Debug)]
pub(super) enum TaskDone {
    /// A dial ended.
    Dialed {
        peer: OverlayPeer,
        result: Result<NodeId, ConnectError>,
    },
    /// A probe ended.
    Probed {
        addr: SocketAddr,
        result: Result<NodeId, ConnectError>,
    },
    /// A sync round ended.
    Synced {
        peer: OverlayPeer,
        result: Result<SyncStats, SyncError>,
    },
}

impl Task {
    /// Runs the task on the transport.
    pub(super) async fn run(self, net: NetHandle) -> TaskDone {
        match self {
            Task::Dial { peer, addr } => TaskDone::Dialed {
                peer,
                result: net.connect(addr, Some(peer.id)).await,
            },
            Task::Probe { addr } => TaskDone::Probed {
                addr,
                result: net.connect(addr, None).await,
            },
            Task::Sync { peer, addr } => {
                let result = match net.connect(addr, Some(peer.id)).await {
                    Ok(_) => net.sync_with(peer.id).await,
                    Err(e) => {
                        tracing::debug!(peer = %peer.id, error = %e, "cannot reach sync peer");
                        Err(SyncError::NotConnected(peer.id))
                    }
                };
                TaskDone::Synced { peer, result }
            }
        }
    }
}

/// Connection state as the driver sees it.
#[derive(Debug, Default)]
pub(super) struct Links {
    connected: HashSet<NodeId>,
    addrs: HashMap<NodeId, SocketAddr>,
    queued: HashMap<NodeId, Vec<ControlMessage>>,
    syncing: HashSet<NodeId>,
    probed: HashMap<SocketAddr, Instant>,
}

impl Links {
    /// A connection to `id` at `addr` is up.
    pub(super) fn up(&mut self, id: NodeId, addr: SocketAddr) {
        self.connected.insert(id);
        self.addrs.insert(id, addr);
    }

    /// The connection to `id` is gone.
    pub(super) fn down(&mut self, id: &NodeId) {
        self.connected.remove(id);
    }

    /// `id` was reached at, or announced with, `addr`.
    pub(super) fn seen_at(&mut self, id: NodeId, addr: SocketAddr) {
        self.addrs.insert(id, addr);
    }

    /// Whether a connection to `id` is up.
    pub(super) fn is_connected(&self, id: &NodeId) -> bool {
        self.connected.contains(id)
    }

    /// Where `id` was last reached or announced, if anywhere.
    pub(super) fn addr(&self, id: &NodeId) -> Option<SocketAddr> {
        self.addrs.get(id).copied()
    }

    /// The overlay peer for `id`, at its last known address.
    pub(super) fn peer(&self, id: NodeId) -> OverlayPeer {
        let unknown = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        let addr = self.addrs.get(&id).copied().unwrap_or(unknown);
        OverlayPeer { id, addr }
    }

    /// Holds `message` until `to` is connected; returns the dial to start, if none is running.
    pub(super) fn queue(
        &mut self,
        to: OverlayPeer,
        addr: SocketAddr,
        message: ControlMessage,
    ) -> Option<Task> {
        let first = !self.queued.contains_key(&to.id);
        let queue = self.queued.entry(to.id).or_default();
        if queue.len() < MAX_QUEUED_PER_PEER {
            queue.push(message);
        }
        first.then_some(Task::Dial { peer: to, addr })
    }

    /// The messages held for `id` (its dial ended).
    pub(super) fn take_queued(&mut self, id: &NodeId) -> Vec<ControlMessage> {
        self.queued.remove(id).unwrap_or_default()
    }

    /// A sync round with `peer` starts.
    pub(super) fn sync(&mut self, peer: OverlayPeer, addr: SocketAddr) -> Task {
        self.syncing.insert(peer.id);
        Task::Sync { peer, addr }
    }

    /// The sync round with `id` ended.
    pub(super) fn sync_done(&mut self, id: &NodeId) {
        self.syncing.remove(id);
    }

    /// A probe of `addr`, unless one ran recently.
    pub(super) fn probe(&mut self, addr: SocketAddr) -> Option<Task> {
        let now = Instant::now();
        let recent = self
            .probed
            .get(&addr)
            .is_some_and(|at| now.duration_since(*at) < PROBE_INTERVAL);
        if recent {
            return None;
        }
        self.probed.insert(addr, now);
        Some(Task::Probe { addr })
    }

    /// Whether nothing of ours is using the connection to `id` (no dial, message or sync).
    pub(super) fn is_idle(&self, id: &NodeId) -> bool {
        !self.queued.contains_key(id) && !self.syncing.contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshlite_core::epidemic::EpidemicMessage;
    use meshlite_core::plumtree::TreeMessage;

    fn peer(b: u8) -> OverlayPeer {
        OverlayPeer {
            id: NodeId::from_bytes([b; 16]),
            addr: SocketAddr::from(([127, 0, 0, 1], 4000 + u16::from(b))),
        }
    }

    #[test]
    fn messages_to_an_unconnected_peer_wait_for_one_dial() {
        let mut links = Links::default();
        let (p, prune) = (peer(1), EpidemicMessage::Tree(TreeMessage::Prune));
        assert!(matches!(
            links.queue(p, p.addr, prune.clone()),
            Some(Task::Dial { .. })
        ));
        assert!(
            links.queue(p, p.addr, prune.clone()).is_none(),
            "one dial per peer"
        );
        assert!(
            !links.is_idle(&p.id),
            "a dial in flight uses the connection"
        );
        assert_eq!(links.take_queued(&p.id), vec![prune.clone(), prune]);
        assert!(links.is_idle(&p.id));
    }

    #[test]
    fn syncs_hold_the_connection_and_probes_are_rate_limited() {
        let mut links = Links::default();
        let p = peer(2);
        links.sync(p, p.addr);
        assert!(!links.is_idle(&p.id));
        links.sync_done(&p.id);
        assert!(links.is_idle(&p.id));
        assert!(links.probe(p.addr).is_some());
        assert!(links.probe(p.addr).is_none(), "probed again too soon");
    }

    #[test]
    fn a_peer_is_named_by_its_last_address() {
        let mut links = Links::default();
        let p = peer(3);
        assert!(links.peer(p.id).addr.ip().is_unspecified());
        links.up(p.id, p.addr);
        assert!(links.is_connected(&p.id));
        assert_eq!(links.peer(p.id).addr, p.addr);
        links.down(&p.id);
        assert!(!links.is_connected(&p.id));
    }
}
