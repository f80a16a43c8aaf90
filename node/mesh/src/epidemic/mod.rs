//! Overlay mode: the driver task that runs the core's sans-IO [`Epidemic`] state machine
//! (HyParView overlay + Plumtree + anti-entropy scheduler) over the QUIC transport. Used above
//! `direct_push_max_peers` known peers ([`crate::mode`] switches to it); small fleets keep the
//! full mesh of [`crate::dialer`] and the one-hop push of [`crate::gossip`].
//!
//! # How the parts fit
//!
//! ```text
//!   store events (local commits) ─┐
//!   net events (Control, PushReceived, PeerUp/Down) ─┤
//!   peer table changes (static, mDNS, NATS) ─────────┼─► EpidemicDriver ─► Epidemic<OverlayPeer>
//!   Epidemic's timer, 1 s reaper tick ───────────────┤        │ actions
//!   finished dials and sync rounds (JoinSet) ────────┘        ▼
//!      Send → NetHandle::send_control (dialing first)   Push → NetHandle::push_to (bytes from the
//!      Sync → NetHandle::sync_with (dialing first)             push just received, else the store)
//!      Close → left to the reaper
//! ```
//!
//! **Connections.** The overlay decides whom to be connected to; the driver dials a peer when a
//! message must reach it (bookkeeping in [`links`]), and a reaper closes connections to peers
//! outside the active view once they are [`SPARE_GRACE`] old and quiet, and no dial, queued
//! message or sync round needs them. So a node keeps its active view (5 by default) plus
//! short-lived connections for neighbor requests, shuffles and anti-entropy with passive peers.
//!
//! **Discovery.** Every identified row of the peer table feeds [`Epidemic::add_known`] (the first
//! one is joined through); rows known only by address are dialed once to learn their node id.
//!
//! **Peers.** The overlay's peer type is [`OverlayPeer`] (node id plus a dialable address):
//! peers learned from a shuffle or a join walk come with the address they were reached at, and
//! the table's addresses, when known, are preferred.
//!
//! Transactions pulled by anti-entropy are not forwarded along the tree (a sync round reports
//! counts, not ids): they reach the rest of the fleet through the others' own rounds.

mod links;
pub mod stats;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshlite_core::TxnId;
use meshlite_core::epidemic::{
    Epidemic, EpidemicAction, EpidemicConfig, EpidemicConfigError, EpidemicMessage,
};
use meshlite_core::plumtree::TreeMessage;
use meshlite_core::store::StoreEvent;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::discovery::table::{PeerKey, PeerTable};
use crate::fleet::NodeId;
use crate::net::control::{ControlMessage, OverlayPeer};
use crate::net::events::NetEvent;
use crate::net::handle::NetHandle;
use crate::replica::Replica;
use links::{Links, Task, TaskDone};
use stats::{EpidemicStats, bump};

/// A connection to a peer outside the active view is closed once it is this old, nothing of
/// ours uses it, and it has been quiet for [`SPARE_QUIET`]. Not "quiet for the whole grace":
/// an under-full node asks passive peers to become neighbors every `refill_interval`, and the
/// refusals would keep such a connection open for good.
pub const SPARE_GRACE: Duration = Duration::from_secs(2);
/// See [`SPARE_GRACE`]: a message that just arrived is left time to be answered.
pub const SPARE_QUIET: Duration = Duration::from_millis(500);
/// How often spare connections are looked for.
const REAP_INTERVAL: Duration = Duration::from_secs(1);

/// The driver. Built with [`EpidemicDriver::new`], consumed by [`EpidemicDriver::run`].
pub struct EpidemicDriver<R> {
    store: R,
    net: NetHandle,
    table: PeerTable,
    state: Epidemic<OverlayPeer>,
    links: Links,
    joined: bool,
    known: HashSet<NodeId>,
    stats: Arc<EpidemicStats>,
    cancel: CancellationToken,
}

impl<R> std::fmt::Debug for EpidemicDriver<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpidemicDriver")
            .field("active", &self.state.overlay().active().len())
            .field("passive", &self.state.overlay().passive().len())
            .finish_non_exhaustive()
    }
}

/// Encoded transactions at hand (from the push being forwarded), by id.
type AtHand<'a> = HashMap<TxnId, &'a Vec<u8>>;

impl<R: Replica> EpidemicDriver<R> {
    /// A driver for the node behind `net`; `seed` drives the overlay's random choices.
    pub fn new(
        store: R,
        net: NetHandle,
        table: PeerTable,
        config: EpidemicConfig,
        seed: u64,
        stats: Arc<EpidemicStats>,
        cancel: CancellationToken,
    ) -> Result<Self, EpidemicConfigError> {
        let me = OverlayPeer {
            id: net.node_id(),
            addr: net.local_addr(),
        };
        let state = Epidemic::new(me, config, seed, Instant::now())?;
        Ok(Self {
            store,
            net,
            table,
            state,
            links: Links::default(),
            joined: false,
            known: HashSet::new(),
            stats,
            cancel,
        })
    }

    /// Runs until cancelled; leaves the overlay (telling the active view) before returning.
    pub async fn run(mut self) {
        self.stats
            .overlay_mode
            .store(1, std::sync::atomic::Ordering::Relaxed);
        let mut store_events = self.store.subscribe();
        let mut net_events = self.net.subscribe();
        let mut changes = self.table.changes();
        let mut tasks: JoinSet<TaskDone> = JoinSet::new();
        let mut reap = tokio::time::interval(REAP_INTERVAL);
        for peer in self.net.peers().await {
            self.links.up(peer.node_id, peer.addr);
        }
        self.feed_discovery(&mut tasks);
        self.drain(&mut tasks, &AtHand::new()).await;
        loop {
            let wake = tokio::time::Instant::from_std(self.state.poll_timeout());
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                ev = store_events.recv() => self.on_store_event(ev),
                ev = net_events.recv() => {
                    self.on_net_event(ev, &mut tasks).await;
                    continue; // on_net_event drains with the bytes at hand
                }
                Some(done) = tasks.join_next() => self.on_task_done(done).await,
                changed = changes.changed() => match changed {
                    Ok(()) => self.feed_discovery(&mut tasks),
                    Err(_) => break,
                },
                _ = reap.tick() => self.reap().await,
                () = tokio::time::sleep_until(wake) => self.state.handle_timeout(Instant::now()),
            }
            self.drain(&mut tasks, &AtHand::new()).await;
        }
        self.state.leave();
        self.drain(&mut tasks, &AtHand::new()).await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }

    fn on_store_event(&mut self, ev: Result<StoreEvent, RecvError>) {
        match ev {
            Ok(StoreEvent::Committed {
                txns, local: true, ..
            }) => {
                let now = Instant::now();
                for &txn in txns.iter() {
                    self.state.broadcast(txn, now);
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    lost = n,
                    "overlay driver lagged behind the store; anti-entropy will catch up"
                );
            }
            Err(RecvError::Closed) => self.cancel.cancel(),
        }
    }

    async fn on_net_event(
        &mut self,
        ev: Result<NetEvent, RecvError>,
        tasks: &mut JoinSet<TaskDone>,
    ) {
        let now = Instant::now();
        match ev {
            Ok(NetEvent::Control { from, message }) => {
                self.links.seen_at(from.id, from.addr);
                self.state.on_message(from, message, now);
            }
            Ok(NetEvent::PushReceived {
                from,
                txns,
                encoded,
                ..
            }) => {
                let from = self.links.peer(from);
                self.state.on_push(&from, &txns, now);
                let at_hand: AtHand<'_> = txns.iter().copied().zip(encoded.iter()).collect();
                self.drain(tasks, &at_hand).await;
                return;
            }
            Ok(NetEvent::PeerUp { node_id, addr, .. }) => {
                self.links.up(node_id, addr);
                self.table.identify(addr, node_id);
            }
            Ok(NetEvent::PeerDown { node_id, .. }) => {
                self.links.down(&node_id);
                let peer = self.links.peer(node_id);
                self.state.on_connection_closed(&peer, now);
            }
            Ok(NetEvent::PeerError {
                from,
                code,
                message,
            }) => {
                bump(&self.stats.control_refused, 1);
                tracing::warn!(peer = %from, ?code, %message, "peer refused a control message");
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(lost = n, "overlay driver lagged behind transport events")
            }
            Err(RecvError::Closed) => self.cancel.cancel(),
        }
        self.drain(tasks, &AtHand::new()).await;
    }

    /// Feeds identified peers of the table to the overlay; probes address-only rows.
    fn feed_discovery(&mut self, tasks: &mut JoinSet<TaskDone>) {
        let now = Instant::now();
        for row in self.table.snapshot() {
            let Some(addr) = row.addresses.first().copied() else {
                continue;
            };
            match row.node_id {
                Some(id) => self.learn(OverlayPeer { id, addr }, now),
                None => {
                    if let Some(task) = self.links.probe(addr) {
                        self.spawn(task, tasks);
                    }
                }
            }
        }
    }

    /// A peer discovery reported (or a probe identified): the first is joined through, the
    /// others go to the passive view.
    fn learn(&mut self, peer: OverlayPeer, now: Instant) {
        if peer.id == self.net.node_id() || !self.known.insert(peer.id) {
            return;
        }
        self.links.seen_at(peer.id, peer.addr);
        if self.joined {
            self.state.add_known(peer, now);
        } else {
            self.joined = true;
            self.state.join(peer, now);
        }
    }

    /// Carries out every pending action of the state machine.
    async fn drain(&mut self, tasks: &mut JoinSet<TaskDone>, at_hand: &AtHand<'_>) {
        while let Some(action) = self.state.poll_action() {
            match action {
                EpidemicAction::Send { to, message } => self.send(to, message, tasks).await,
                EpidemicAction::Push { to, txns } => self.push(to, &txns, at_hand).await,
                EpidemicAction::Sync(peer) => {
                    let addr = self.dial_addr(&peer);
                    let task = self.links.sync(peer, addr);
                    self.spawn(task, tasks);
                }
                // The reaper closes it once it is quiet (a Disconnect may still be queued).
                EpidemicAction::Close(_) => {}
            }
        }
        self.update_gauges();
    }

    async fn send(
        &mut self,
        to: OverlayPeer,
        message: ControlMessage,
        tasks: &mut JoinSet<TaskDone>,
    ) {
        self.count_sent(&message);
        if !self.links.is_connected(&to.id) {
            let addr = self.dial_addr(&to);
            if let Some(task) = self.links.queue(to, addr, message) {
                self.spawn(task, tasks);
            }
            return;
        }
        match self.net.send_control(to.id, &message).await {
            Ok(true) => {}
            Ok(false) => bump(&self.stats.control_dropped, 1),
            Err(e) => {
                bump(&self.stats.control_dropped, 1);
                tracing::warn!(peer = %to.id, error = %e, "cannot send a control message");
            }
        }
    }

    fn count_sent(&self, message: &ControlMessage) {
        let s = &self.stats;
        let counter = match message {
            EpidemicMessage::Tree(TreeMessage::IHave(_)) => &s.lazy_announcements,
            EpidemicMessage::Tree(TreeMessage::Graft(_)) => &s.grafts,
            EpidemicMessage::Tree(TreeMessage::Prune) => &s.prunes,
            EpidemicMessage::Overlay(_) => &s.overlay_messages,
        };
        bump(counter, 1);
    }

    async fn push(&mut self, to: OverlayPeer, txns: &[TxnId], at_hand: &AtHand<'_>) {
        let encoded = match txns
            .iter()
            .map(|id| at_hand.get(id).map(|b| (*b).clone()))
            .collect()
        {
            Some(encoded) => encoded,
            None => match self.store.encoded(txns).await {
                Ok(loaded) => loaded.txns,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load transactions to push");
                    return;
                }
            },
        };
        if encoded.is_empty() {
            return;
        }
        let n = encoded.len() as u64;
        match self.net.push_to(vec![to.id], encoded).await {
            Ok(report) if !report.queued.is_empty() => {
                bump(&self.stats.eager_pushes, 1);
                bump(&self.stats.eager_txns, n);
            }
            Ok(_) => tracing::debug!(peer = %to.id, "push not queued; anti-entropy will deliver"),
            Err(e) => {
                tracing::debug!(peer = %to.id, error = %e, "push failed; anti-entropy will deliver")
            }
        }
    }

    fn spawn(&self, task: Task, tasks: &mut JoinSet<TaskDone>) {
        let net = self.net.clone();
        tasks.spawn(task.run(net));
    }

    async fn on_task_done(&mut self, done: Result<TaskDone, tokio::task::JoinError>) {
        let Ok(done) = done else {
            tracing::error!("an overlay task panicked");
            return;
        };
        let now = Instant::now();
        match done {
            TaskDone::Dialed { peer, result } => match result {
                Ok(id) => {
                    self.links.up(id, peer.addr);
                    for message in self.links.take_queued(&id) {
                        if let Err(e) = self.net.send_control(id, &message).await {
                            tracing::warn!(peer = %id, error = %e, "cannot send a control message");
                        }
                    }
                }
                Err(e) => {
                    let dropped = self.links.take_queued(&peer.id).len();
                    bump(&self.stats.control_dropped, dropped as u64);
                    tracing::debug!(peer = %peer.id, error = %e, "overlay peer unreachable");
                    self.state.on_peer_failed(&peer, now);
                }
            },
            TaskDone::Probed { addr, result } => {
                // `identify` does not signal a table change: learn the peer here.
                if let Ok(id) = result {
                    self.table.identify(addr, id);
                    self.learn(OverlayPeer { id, addr }, now);
                }
            }
            TaskDone::Synced { peer, result } => {
                self.links.sync_done(&peer.id);
                let key = PeerKey::Node(peer.id);
                self.state.on_sync_result(&peer, result.is_ok(), now);
                match result {
                    Ok(stats) => {
                        bump(&self.stats.syncs_ok, 1);
                        self.table.record_success(&key, Some(stats.rtt));
                    }
                    Err(e) => {
                        bump(&self.stats.syncs_failed, 1);
                        tracing::debug!(peer = %peer.id, error = %e, "anti-entropy round failed");
                        self.table.record_failure(&key, e);
                    }
                }
            }
        }
    }

    /// Closes quiet connections to peers outside the active view.
    async fn reap(&mut self) {
        let active: HashSet<NodeId> = self.state.overlay().active().iter().map(|p| p.id).collect();
        for peer in self.net.peers().await {
            let id = peer.node_id;
            let older = |t: std::time::SystemTime, d| t.elapsed().is_ok_and(|e| e >= d);
            let spare = !active.contains(&id)
                && self.links.is_idle(&id)
                && older(peer.connected_since, SPARE_GRACE)
                && older(peer.last_seen, SPARE_QUIET);
            if spare && self.net.disconnect(id).await {
                bump(&self.stats.spare_closed, 1);
            }
        }
    }

    /// Where to dial `peer`: discovery's first address, else where a connection from it came
    /// from, else the hint it was named with (a node listening on `0.0.0.0` names itself so in
    /// a shuffle; such a dial reaches no one and the overlay drops the peer).
    fn dial_addr(&self, peer: &OverlayPeer) -> SocketAddr {
        self.table
            .get(&PeerKey::Node(peer.id))
            .and_then(|row| row.addresses.first().copied())
            .or_else(|| self.links.addr(&peer.id))
            .unwrap_or(peer.addr)
    }

    fn update_gauges(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let o = self.state.overlay();
        self.stats
            .active_view
            .store(o.active().len() as u64, Relaxed);
        self.stats
            .passive_view
            .store(o.passive().len() as u64, Relaxed);
        let eager = self.state.tree().eager_peers().count();
        self.stats.eager_links.store(eager as u64, Relaxed);
    }
}
