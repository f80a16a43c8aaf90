//! Bounded-degree membership overlay (HyParView, Leitão, Pereira and Rodrigues, DSN 2007).
//!
//! In a large fleet a node cannot keep a connection to every peer. Each node keeps instead:
//!
//! - an **active view** of at most [`OverlayConfig::active_capacity`] peers (default 5): the
//!   peers it holds connections to and exchanges broadcast traffic with. Active links are
//!   symmetric: a node only adds a peer after that peer accepted (`Neighbor` → `Accept`), and
//!   removing a peer tells it (`Disconnect`) and closes the connection ([`OverlayAction::Close`]),
//!   so the other side drops the link too;
//! - a **passive view** of at most [`OverlayConfig::passive_capacity`] peers (default 30):
//!   addresses only, the candidates that replace an active peer that fails.
//!
//! How the views are filled and kept fresh:
//!
//! - **Join**: a new node sends `Join` to a contact. The contact adds it to its active view (evicting
//!   a random peer if full) and starts a random walk (`ForwardJoin`, [`OverlayConfig::active_walk`]
//!   hops) through its other active peers; the walk's end asks the joiner to become its neighbor,
//!   and the node at hop [`OverlayConfig::passive_walk`] puts the joiner in its passive view.
//! - **Discovery** ([`Overlay::add_known`]: mDNS, static lists, NATS announcements) feeds the
//!   passive view directly; a node with free active slots then connects to passive peers.
//! - **Shuffle**: every [`OverlayConfig::shuffle_interval`] a node sends a few of its active and
//!   passive peers (and itself) on a random walk; the node where it ends answers with as many of
//!   its passive peers, and both merge what they got into their passive views (random eviction).
//! - **Failure**: when an active peer fails or disconnects, the node asks a random passive peer to
//!   become its neighbor (high priority, which cannot be refused, when its active view is empty
//!   or two or more slots are free — the paper's "when the view is empty" leaves a few nodes
//!   that only have each other isolated for good); a peer that does not answer within [`OverlayConfig::neighbor_timeout`] is dropped
//!   from the passive view and another is tried. Free slots are also topped up every
//!   [`OverlayConfig::refill_interval`] (a refused low-priority request is not retried at once).
//!
//! The state machine is sans-IO and deterministic in the manner of [`crate::dissemination`]: the
//! host passes time in, feeds received messages and connection events, and drains
//! [`Overlay::poll_action`]; randomness comes from a seeded RNG and views are plain vectors in
//! insertion order, so every decision depends only on the seed and the sequence of calls. It is
//! generic over the host's peer id `P`; messages are serde types the host frames as it likes.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Tunables of the [`Overlay`]; the defaults are the paper's (timers are ours).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayConfig {
    /// Largest active view (connections kept). Default 5.
    pub active_capacity: usize,
    /// Largest passive view (replacement candidates). Default 30.
    pub passive_capacity: usize,
    /// Hops of a `ForwardJoin` walk (ARWL). Default 6.
    pub active_walk: u8,
    /// Remaining hops at which a `ForwardJoin` walk adds the joiner to a passive view (PRWL); at
    /// most `active_walk`. Default 3.
    pub passive_walk: u8,
    /// Hops of a `Shuffle` walk. Default 6.
    pub shuffle_walk: u8,
    /// Active peers sent in a shuffle. Default 3.
    pub shuffle_active: usize,
    /// Passive peers sent in a shuffle. Default 4.
    pub shuffle_passive: usize,
    /// Time between shuffles (also when free active slots are topped up). Default 30 s.
    pub shuffle_interval: Duration,
    /// A neighbor request unanswered after this long counts as a failed peer. Default 500 ms.
    pub neighbor_timeout: Duration,
    /// While the active view has free slots, a new neighbor request goes out this often (a
    /// refused low-priority request is not retried at once). Default 2 s.
    pub refill_interval: Duration,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        Self {
            active_capacity: 5,
            passive_capacity: 30,
            active_walk: 6,
            passive_walk: 3,
            shuffle_walk: 6,
            shuffle_active: 3,
            shuffle_passive: 4,
            shuffle_interval: Duration::from_secs(30),
            neighbor_timeout: Duration::from_millis(500),
            refill_interval: Duration::from_secs(2),
        }
    }
}

impl OverlayConfig {
    /// Checks the invariants the state machine relies on.
    pub fn validate(&self) -> Result<(), OverlayConfigError> {
        if self.active_capacity == 0 || self.passive_capacity == 0 {
            return Err(OverlayConfigError::ZeroCapacity);
        }
        if self.passive_walk > self.active_walk {
            return Err(OverlayConfigError::PassiveWalk);
        }
        let timers = [
            self.shuffle_interval,
            self.neighbor_timeout,
            self.refill_interval,
        ];
        if timers.iter().any(Duration::is_zero) {
            return Err(OverlayConfigError::ZeroTimer);
        }
        Ok(())
    }
}

/// Error from [`OverlayConfig::validate`] and [`Overlay::new`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverlayConfigError {
    /// A view capacity is zero.
    #[error("active_capacity and passive_capacity must be greater than zero")]
    ZeroCapacity,
    /// `passive_walk > active_walk`: no walk would ever reach the passive hop.
    #[error("passive_walk must not exceed active_walk")]
    PassiveWalk,
    /// `shuffle_interval`, `neighbor_timeout` or `refill_interval` is zero.
    #[error("shuffle_interval, neighbor_timeout and refill_interval must be greater than zero")]
    ZeroTimer,
}

/// How hard a neighbor request insists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Priority {
    /// The sender has no active peer (or is answering a join walk): always accepted, evicting a
    /// random active peer if needed.
    High,
    /// Accepted only into a free slot.
    Low,
}

/// A message between overlay peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OverlayMessage<P> {
    /// "Take me in": sent by a new node to its contact.
    Join,
    /// A random walk announcing `joiner`; `ttl` hops remain.
    ForwardJoin {
        /// The new node.
        joiner: P,
        /// Remaining hops.
        ttl: u8,
    },
    /// "Make me an active neighbor."
    Neighbor {
        /// Whether the receiver may refuse.
        priority: Priority,
    },
    /// Answer to `Join` or `Neighbor`: the sender added the receiver to its active view.
    Accept,
    /// The sender removed the receiver from its active view (or refused its request). `alive`:
    /// the sender is still up and may be kept as a passive peer.
    Disconnect {
        /// The sender stays up.
        alive: bool,
    },
    /// A random walk carrying a sample of `origin`'s views; `ttl` hops remain.
    Shuffle {
        /// The node that started the walk, where the reply goes.
        origin: P,
        /// Its sample (itself included).
        peers: Vec<P>,
        /// Remaining hops.
        ttl: u8,
    },
    /// Answer to a `Shuffle`: a sample of the receiver's passive view.
    ShuffleReply {
        /// The sample.
        peers: Vec<P>,
    },
}

/// What the host must do; drained with [`Overlay::poll_action`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OverlayAction<P> {
    /// Send `message` to `to` (connecting first if needed).
    Send {
        /// Recipient.
        to: P,
        /// The message.
        message: OverlayMessage<P>,
    },
    /// `P` joined the active view: broadcast traffic may flow to it.
    NeighborUp(P),
    /// `P` left the active view.
    NeighborDown(P),
    /// The overlay no longer needs a connection to `P` (after sending what is queued for it).
    Close(P),
}

/// The overlay state of one node, generic over the host's peer id `P`.
///
/// Contract with the host: feed every received [`OverlayMessage`] to [`Self::on_message`], report
/// a connection that closed or could not be made with [`Self::on_connection_closed`] /
/// [`Self::on_peer_failed`], call [`Self::handle_timeout`] when [`Self::poll_timeout`] is due,
/// and carry out every action from [`Self::poll_action`] in order.
#[derive(Debug)]
pub struct Overlay<P> {
    me: P,
    config: OverlayConfig,
    rng: StdRng,
    active: Vec<P>,
    passive: Vec<P>,
    /// Neighbor requests (and the join) awaiting an answer, with their deadlines.
    pending: BTreeMap<P, Instant>,
    next_shuffle: Instant,
    next_refill: Instant,
    actions: VecDeque<OverlayAction<P>>,
}

impl<P: Ord + Clone> Overlay<P> {
    /// An overlay with empty views. The first shuffle is due at a random time within one interval,
    /// so nodes started together do not shuffle in lockstep.
    pub fn new(
        me: P,
        config: OverlayConfig,
        seed: u64,
        now: Instant,
    ) -> Result<Self, OverlayConfigError> {
        config.validate()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let phase = rng.random_range(Duration::ZERO..=config.shuffle_interval);
        let refill = config.refill_interval;
        Ok(Self {
            me,
            config,
            rng,
            active: Vec::new(),
            passive: Vec::new(),
            pending: BTreeMap::new(),
            next_shuffle: now + phase,
            next_refill: now + refill,
            actions: VecDeque::new(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &OverlayConfig {
        &self.config
    }

    /// This node's id.
    pub fn me(&self) -> &P {
        &self.me
    }

    /// The active view, in the order peers joined it.
    pub fn active(&self) -> &[P] {
        &self.active
    }

    /// The passive view.
    pub fn passive(&self) -> &[P] {
        &self.passive
    }

    /// True if `peer` is in the active view.
    pub fn is_active(&self, peer: &P) -> bool {
        self.active.contains(peer)
    }

    /// Neighbor requests awaiting an answer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The next action for the host, in order.
    pub fn poll_action(&mut self) -> Option<OverlayAction<P>> {
        self.actions.pop_front()
    }

    /// Joins the overlay through `contact` (any member).
    pub fn join(&mut self, contact: P, now: Instant) {
        if contact == self.me || self.active.contains(&contact) {
            return;
        }
        self.pending
            .insert(contact.clone(), now + self.config.neighbor_timeout);
        self.send(contact, OverlayMessage::Join);
    }

    /// Discovery reported `peer`: keep it as a passive candidate, and connect if slots are free.
    pub fn add_known(&mut self, peer: P, now: Instant) {
        self.add_passive(peer);
        self.refill(now);
    }

    /// Leaves gracefully: tells every active peer, which then drop this node from both views.
    pub fn leave(&mut self) {
        for peer in std::mem::take(&mut self.active) {
            self.actions
                .push_back(OverlayAction::NeighborDown(peer.clone()));
            self.send(peer.clone(), OverlayMessage::Disconnect { alive: false });
            self.actions.push_back(OverlayAction::Close(peer));
        }
        self.pending.clear();
    }

    /// A message from `from`.
    pub fn on_message(&mut self, from: P, message: OverlayMessage<P>, now: Instant) {
        if from == self.me {
            return;
        }
        match message {
            OverlayMessage::Join => self.on_join(from, now),
            OverlayMessage::ForwardJoin { joiner, ttl } => {
                self.on_forward_join(from, joiner, ttl, now)
            }
            OverlayMessage::Neighbor { priority } => self.on_neighbor(from, priority),
            OverlayMessage::Accept => self.on_accept(from),
            OverlayMessage::Disconnect { alive } => self.on_disconnect(from, alive, now),
            OverlayMessage::Shuffle { origin, peers, ttl } => {
                self.on_shuffle(from, origin, peers, ttl)
            }
            OverlayMessage::ShuffleReply { peers } => self.on_shuffle_reply(peers, now),
        }
    }

    /// The connection to `peer` closed (the peer closed it, or it timed out). The peer stays a
    /// passive candidate: if it is really gone, a later neighbor request to it times out.
    pub fn on_connection_closed(&mut self, peer: &P, now: Instant) {
        self.pending.remove(peer);
        if self.remove_active(peer) {
            self.add_passive(peer.clone());
            self.refill(now);
        }
    }

    /// `peer` could not be reached at all (dial failed): forget it and replace it.
    pub fn on_peer_failed(&mut self, peer: &P, now: Instant) {
        self.pending.remove(peer);
        self.remove_active(peer);
        self.passive.retain(|p| p != peer);
        self.refill(now);
    }

    /// When [`Self::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Instant {
        let first_pending = self.pending.values().min().copied();
        let periodic = self.next_shuffle.min(self.next_refill);
        first_pending.map_or(periodic, |p| p.min(periodic))
    }

    /// Runs the timers due at `now`: unanswered neighbor requests fail, and the shuffle (with a
    /// top-up of free active slots) runs when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<P> = self
            .pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for peer in expired {
            self.on_peer_failed(&peer, now);
            if !self.active.contains(&peer) {
                self.actions.push_back(OverlayAction::Close(peer));
            }
        }
        if now >= self.next_refill {
            self.next_refill = now + self.config.refill_interval;
            self.refill(now);
        }
        if now >= self.next_shuffle {
            self.next_shuffle = now + self.config.shuffle_interval;
            self.refill(now);
            self.start_shuffle();
        }
    }

    fn on_join(&mut self, joiner: P, now: Instant) {
        self.pending.remove(&joiner);
        self.add_active(joiner.clone());
        self.send(joiner.clone(), OverlayMessage::Accept);
        let ttl = self.config.active_walk;
        let others: Vec<P> = self
            .active
            .iter()
            .filter(|p| **p != joiner)
            .cloned()
            .collect();
        for peer in others {
            let message = OverlayMessage::ForwardJoin {
                joiner: joiner.clone(),
                ttl,
            };
            self.send(peer, message);
        }
        self.refill(now);
    }

    fn on_forward_join(&mut self, from: P, joiner: P, ttl: u8, now: Instant) {
        if joiner == self.me || self.active.contains(&joiner) || self.pending.contains_key(&joiner)
        {
            return;
        }
        if ttl == 0 || self.active.len() <= 1 {
            self.request_neighbor(joiner, Priority::High, now);
            return;
        }
        if ttl == self.config.passive_walk {
            self.add_passive(joiner.clone());
        }
        match self.random_active_except(&[&from, &joiner]) {
            Some(next) => {
                let message = OverlayMessage::ForwardJoin {
                    joiner,
                    ttl: ttl - 1,
                };
                self.send(next, message);
            }
            None => self.request_neighbor(joiner, Priority::High, now),
        }
    }

    fn on_neighbor(&mut self, from: P, priority: Priority) {
        self.pending.remove(&from);
        let free = self.active.len() < self.config.active_capacity;
        if self.active.contains(&from) || free || priority == Priority::High {
            self.add_active(from.clone());
            self.send(from, OverlayMessage::Accept);
        } else {
            self.send(from.clone(), OverlayMessage::Disconnect { alive: true });
            self.add_passive(from.clone());
            self.actions.push_back(OverlayAction::Close(from));
        }
    }

    fn on_accept(&mut self, from: P) {
        if self.pending.remove(&from).is_some() {
            self.add_active(from);
        } else if !self.active.contains(&from) {
            // A late answer to a request that already timed out: undo the peer's side.
            self.send(from.clone(), OverlayMessage::Disconnect { alive: true });
            self.actions.push_back(OverlayAction::Close(from));
        }
    }

    fn on_disconnect(&mut self, from: P, alive: bool, now: Instant) {
        self.pending.remove(&from);
        let was_active = self.remove_active(&from);
        if alive {
            self.add_passive(from);
        } else {
            self.passive.retain(|p| *p != from);
        }
        if was_active {
            self.refill(now);
        }
    }

    fn on_shuffle(&mut self, from: P, origin: P, mut peers: Vec<P>, ttl: u8) {
        if origin == self.me {
            return;
        }
        peers.truncate(self.shuffle_len());
        if ttl > 0
            && self.active.len() > 1
            && let Some(next) = self.random_active_except(&[&from, &origin])
        {
            let message = OverlayMessage::Shuffle {
                origin,
                peers,
                ttl: ttl - 1,
            };
            self.send(next, message);
            return;
        }
        let reply = self.sample_for_reply(peers.len(), &origin);
        self.send(origin, OverlayMessage::ShuffleReply { peers: reply });
        for peer in peers {
            self.add_passive(peer);
        }
    }

    fn on_shuffle_reply(&mut self, mut peers: Vec<P>, now: Instant) {
        peers.truncate(self.shuffle_len());
        for peer in peers {
            self.add_passive(peer);
        }
        self.refill(now);
    }

    /// The most peers a well-behaved shuffle carries; longer lists from the network are cut.
    fn shuffle_len(&self) -> usize {
        1 + self.config.shuffle_active + self.config.shuffle_passive
    }

    /// Sends a sample of both views (and this node) on a random walk from a random active peer.
    fn start_shuffle(&mut self) {
        let Some(first) = self.random_active_except(&[]) else {
            return;
        };
        let mut peers = vec![self.me.clone()];
        let active = sample(
            &self.active,
            self.config.shuffle_active,
            &first,
            &mut self.rng,
        );
        let passive = sample(
            &self.passive,
            self.config.shuffle_passive,
            &first,
            &mut self.rng,
        );
        peers.extend(active);
        peers.extend(passive);
        let message = OverlayMessage::Shuffle {
            origin: self.me.clone(),
            peers,
            ttl: self.config.shuffle_walk,
        };
        self.send(first, message);
    }

    /// `len` passive peers (topped up with active ones when the passive view is short), never
    /// `exclude`.
    fn sample_for_reply(&mut self, len: usize, exclude: &P) -> Vec<P> {
        let mut out = sample(&self.passive, len, exclude, &mut self.rng);
        if out.len() < len {
            let more = sample(&self.active, len - out.len(), exclude, &mut self.rng);
            out.extend(more);
        }
        out
    }

    /// Asks random passive peers to fill every free active slot not already being filled.
    fn refill(&mut self, now: Instant) {
        while self.active.len() + self.pending.len() < self.config.active_capacity {
            let candidates: Vec<usize> = (0..self.passive.len())
                .filter(|&i| !self.pending.contains_key(&self.passive[i]))
                .collect();
            if candidates.is_empty() {
                return;
            }
            let pick = candidates[self.rng.random_range(0..candidates.len())];
            let peer = self.passive[pick].clone();
            let priority = if self.is_short() {
                Priority::High
            } else {
                Priority::Low
            };
            self.request_neighbor(peer, priority, now);
        }
    }

    /// True when the active view is empty or has at least two free slots: then neighbor requests
    /// go out with high priority. The paper asks with high priority only when the view is
    /// empty; then a few late joiners that lose their other links to evictions (a pair, a
    /// triangle, a square of nodes that only have each other) ask full nodes with low priority,
    /// are refused at every refill, and stay an island for good: their shuffles walk only their
    /// own links. Asking with high priority while two slots are free joins such an island back.
    /// It cannot cascade: the peer a full node evicts for it keeps all but one of its slots and
    /// asks with low priority, and each eviction raises a node short by two or more by one, so
    /// the evictions stop once no node is.
    fn is_short(&self) -> bool {
        self.active.is_empty() || self.active.len() + 2 <= self.config.active_capacity
    }

    fn request_neighbor(&mut self, peer: P, priority: Priority, now: Instant) {
        self.pending
            .insert(peer.clone(), now + self.config.neighbor_timeout);
        self.send(peer, OverlayMessage::Neighbor { priority });
    }

    /// Adds `peer` to the active view, evicting a random member if it is full.
    fn add_active(&mut self, peer: P) {
        if peer == self.me || self.active.contains(&peer) {
            return;
        }
        if self.active.len() >= self.config.active_capacity {
            let victim = self.active[self.rng.random_range(0..self.active.len())].clone();
            self.remove_active(&victim);
            self.send(victim.clone(), OverlayMessage::Disconnect { alive: true });
            self.add_passive(victim.clone());
            self.actions.push_back(OverlayAction::Close(victim));
        }
        self.passive.retain(|p| *p != peer);
        self.active.push(peer.clone());
        self.actions.push_back(OverlayAction::NeighborUp(peer));
    }

    /// Removes `peer` from the active view; true if it was there.
    fn remove_active(&mut self, peer: &P) -> bool {
        let Some(i) = self.active.iter().position(|p| p == peer) else {
            return false;
        };
        self.active.remove(i);
        self.actions
            .push_back(OverlayAction::NeighborDown(peer.clone()));
        true
    }

    /// Adds `peer` to the passive view (random eviction when full), unless it is this node or
    /// already in a view.
    fn add_passive(&mut self, peer: P) {
        if peer == self.me || self.active.contains(&peer) || self.passive.contains(&peer) {
            return;
        }
        if self.passive.len() >= self.config.passive_capacity {
            let victim = self.rng.random_range(0..self.passive.len());
            self.passive.swap_remove(victim);
        }
        self.passive.push(peer);
    }

    fn random_active_except(&mut self, except: &[&P]) -> Option<P> {
        let candidates: Vec<&P> = self.active.iter().filter(|p| !except.contains(p)).collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.rng.random_range(0..candidates.len())].clone())
    }

    fn send(&mut self, to: P, message: OverlayMessage<P>) {
        self.actions.push_back(OverlayAction::Send { to, message });
    }
}

/// Up to `k` distinct members of `view` other than `exclude`, in random order.
fn sample<P: Clone + PartialEq>(view: &[P], k: usize, exclude: &P, rng: &mut StdRng) -> Vec<P> {
    let mut pool: Vec<&P> = view.iter().filter(|p| *p != exclude).collect();
    let k = k.min(pool.len());
    for i in 0..k {
        let j = rng.random_range(i..pool.len());
        pool.swap(i, j);
    }
    pool.into_iter().take(k).cloned().collect()
}

#[cfg(test)]
mod tests;
