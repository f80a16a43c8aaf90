//! Epidemic broadcast trees (Plumtree, Leitão, Pereira and Rodrigues, SRDS 2007) over the
//! neighbors of an [`crate::overlay::Overlay`].
//!
//! Each neighbor link is either **eager** or **lazy**:
//!
//! - a transaction new to this node is pushed at once, in full, to every eager neighbor except the
//!   one it came from ([`TreeAction::Push`]), and announced by id to every lazy neighbor in
//!   batches sent every [`TreeConfig::lazy_delay`] (`IHave`);
//! - links start eager. A node that receives, over an eager link, only transactions it already
//!   had answers `Prune`, and both ends make the link lazy: duplicates carve the flood into a
//!   spanning tree, after which each change costs about one eager send per node. Unlike classic
//!   Plumtree a node keeps at least [`TreeConfig::min_eager`] eager links (default 4): with many
//!   concurrent writers, pruning down to one tree cuts it into pieces faster than grafts mend
//!   it (in the simulator at N = 1000: p50 730 ms with a single tree; see benches/README.md
//!   "Simulation");
//! - a node that hears `IHave` for a transaction it does not have waits
//!   [`TreeConfig::graft_timeout`] for the eager copy, then sends `Graft` to the first announcer,
//!   which makes that link eager again and sends the transaction; if it still does not arrive
//!   within [`TreeConfig::graft_retry`] the next announcer is asked. Lost eager pushes and
//!   departed tree parents are therefore repaired by the lazy links, and the tree re-forms around
//!   them.
//!
//! Message ids are transaction ids ([`TxnId`]), and the tree keeps no payload cache: the host's
//! store holds every transaction, so answering a graft is "push these ids if you have them".
//! Anti-entropy stays the path that guarantees convergence: a transaction whose announcers all
//! failed is simply left to it, and transactions pulled by anti-entropy are forwarded along the
//! tree ([`Plumtree::on_pulled`]) so a healed partition spreads at push speed.
//!
//! Sans-IO and deterministic: time is passed in, neighbors are kept in ordered sets, actions are
//! drained with [`Plumtree::poll_action`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::ids::TxnId;
use crate::seen::SeenSet;

/// Tunables of the [`Plumtree`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeConfig {
    /// How long an announced transaction may stay missing before it is grafted from the first
    /// announcer. Longer than the usual difference between the tree path and a lazy path, or
    /// grafts fire for transactions already on their way. Default 80 ms (iroh-gossip's value).
    pub graft_timeout: Duration,
    /// After a graft, how long before the next announcer is asked. About one round trip. Default
    /// 100 ms.
    pub graft_retry: Duration,
    /// `IHave` announcements are collected this long and sent as one message per lazy peer.
    /// Default 25 ms.
    pub lazy_delay: Duration,
    /// Most ids in one `IHave` or `Graft`; longer lists are split. Default 1024.
    pub max_ids_per_message: usize,
    /// Transaction ids remembered to detect duplicates (FIFO eviction). Default 16 384.
    pub seen_capacity: usize,
    /// A node does not prune its eager links below this many. 1 is classic Plumtree (one
    /// spanning tree); more keeps a few redundant eager paths: each change costs up to about
    /// `min_eager` eager sends per node instead of one, but concurrent writes from many origins
    /// no longer cut the tree into pieces that must be grafted back (each graft costs
    /// `graft_timeout`), and a lost push rarely needs a graft at all. Default 4 (with an active
    /// view of 5: each node drops at most one of its links to lazy).
    pub min_eager: usize,
}

impl Default for TreeConfig {
    fn default() -> Self {
        Self {
            graft_timeout: Duration::from_millis(80),
            graft_retry: Duration::from_millis(100),
            lazy_delay: Duration::from_millis(25),
            max_ids_per_message: 1024,
            seen_capacity: 16_384,
            min_eager: 4,
        }
    }
}

impl TreeConfig {
    /// Checks the invariants the state machine relies on.
    pub fn validate(&self) -> Result<(), TreeConfigError> {
        if self.graft_timeout.is_zero() || self.graft_retry.is_zero() {
            return Err(TreeConfigError::ZeroGraftTimer);
        }
        if self.max_ids_per_message == 0 || self.seen_capacity == 0 {
            return Err(TreeConfigError::ZeroCapacity);
        }
        Ok(())
    }
}

/// Error from [`TreeConfig::validate`] and [`Plumtree::new`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TreeConfigError {
    /// `graft_timeout` or `graft_retry` is zero.
    #[error("graft_timeout and graft_retry must be greater than zero")]
    ZeroGraftTimer,
    /// `max_ids_per_message` or `seen_capacity` is zero.
    #[error("max_ids_per_message and seen_capacity must be greater than zero")]
    ZeroCapacity,
}

/// A control message of the tree (the transactions themselves travel as the host's push frames).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreeMessage {
    /// The sender has these transactions.
    IHave(Vec<TxnId>),
    /// Send me these transactions, and make our link eager.
    Graft(Vec<TxnId>),
    /// Make our link lazy: I received what you pushed from someone else first.
    Prune,
}

/// What the host must do; drained with [`Plumtree::poll_action`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeAction<P> {
    /// Push these transactions (those the host holds) to `to` in one push frame.
    Push {
        /// Recipient.
        to: P,
        /// The transactions, in order.
        txns: Vec<TxnId>,
    },
    /// Send a control message.
    Send {
        /// Recipient.
        to: P,
        /// The message.
        message: TreeMessage,
    },
}

/// A transaction announced but not received yet.
#[derive(Debug)]
struct Missing<P> {
    /// Lazy peers that announced it, in order; the next graft goes to the first.
    announcers: VecDeque<P>,
}

/// The broadcast-tree state of one node.
///
/// Contract with the host: report neighbors from the overlay ([`Self::neighbor_up`],
/// [`Self::neighbor_down`]), local transactions ([`Self::broadcast`]), pushed ones
/// ([`Self::on_push`]), pulled ones ([`Self::on_pulled`]) and control messages
/// ([`Self::on_message`]); call [`Self::handle_timeout`] when [`Self::poll_timeout`] is due; carry
/// out every action from [`Self::poll_action`] in order.
#[derive(Debug)]
pub struct Plumtree<P> {
    config: TreeConfig,
    eager: BTreeSet<P>,
    lazy: BTreeSet<P>,
    seen: SeenSet,
    missing: BTreeMap<TxnId, Missing<P>>,
    /// Graft deadlines; entries whose transaction arrived meanwhile are skipped when they fire.
    graft_timers: BTreeSet<(Instant, TxnId)>,
    /// Announcements waiting for the next lazy flush, per peer.
    lazy_queue: BTreeMap<P, Vec<TxnId>>,
    lazy_flush_at: Option<Instant>,
    actions: VecDeque<TreeAction<P>>,
}

impl<P: Ord + Clone> Plumtree<P> {
    /// A tree with no neighbors.
    pub fn new(config: TreeConfig) -> Result<Self, TreeConfigError> {
        config.validate()?;
        let seen = SeenSet::new(config.seen_capacity);
        Ok(Self {
            config,
            eager: BTreeSet::new(),
            lazy: BTreeSet::new(),
            seen,
            missing: BTreeMap::new(),
            graft_timers: BTreeSet::new(),
            lazy_queue: BTreeMap::new(),
            lazy_flush_at: None,
            actions: VecDeque::new(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &TreeConfig {
        &self.config
    }

    /// Neighbors receiving full pushes.
    pub fn eager_peers(&self) -> impl Iterator<Item = &P> {
        self.eager.iter()
    }

    /// Neighbors receiving announcements only.
    pub fn lazy_peers(&self) -> impl Iterator<Item = &P> {
        self.lazy.iter()
    }

    /// True if `txn` was broadcast, pushed or pulled here recently (the bounded seen-set).
    pub fn has_seen(&self, txn: &TxnId) -> bool {
        self.seen.contains(txn)
    }

    /// Transactions announced to this node and not received yet.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }

    /// The next action for the host, in order.
    pub fn poll_action(&mut self) -> Option<TreeAction<P>> {
        self.actions.pop_front()
    }

    /// A new overlay neighbor: its link starts eager.
    pub fn neighbor_up(&mut self, peer: P) {
        self.lazy.remove(&peer);
        self.eager.insert(peer);
    }

    /// An overlay neighbor left: forget its link, its queued announcements and its
    /// announcements of missing transactions.
    pub fn neighbor_down(&mut self, peer: &P) {
        self.eager.remove(peer);
        self.lazy.remove(peer);
        self.lazy_queue.remove(peer);
        for missing in self.missing.values_mut() {
            missing.announcers.retain(|p| p != peer);
        }
    }

    /// A transaction committed locally: push it along the tree.
    pub fn broadcast(&mut self, txn: TxnId, now: Instant) {
        if self.seen.insert(txn) {
            self.forward(&[txn], None, now);
        }
    }

    /// Transactions pushed by `from` (an eager push or the answer to a graft). Returns those new
    /// to this node, in input order; they are forwarded along the tree. A push carrying nothing
    /// new prunes the link.
    pub fn on_push(&mut self, from: &P, txns: &[TxnId], now: Instant) -> Vec<TxnId> {
        let fresh = self.take_fresh(txns);
        let neighbor = self.eager.contains(from) || self.lazy.contains(from);
        if fresh.is_empty() {
            let redundant = self.eager.len() > self.config.min_eager;
            if redundant && self.eager.contains(from) && !txns.is_empty() {
                self.make_lazy(from);
                self.send(from.clone(), TreeMessage::Prune);
            }
            return fresh;
        }
        if neighbor {
            self.make_eager(from);
        }
        self.forward(&fresh, Some(from), now);
        fresh
    }

    /// Transactions pulled from `from` by anti-entropy. Returns those new to this node; they are
    /// forwarded along the tree like pushed ones, but the link to `from` is left as it is (a
    /// sync session says nothing about the tree).
    pub fn on_pulled(&mut self, from: &P, txns: &[TxnId], now: Instant) -> Vec<TxnId> {
        let fresh = self.take_fresh(txns);
        if !fresh.is_empty() {
            self.forward(&fresh, Some(from), now);
        }
        fresh
    }

    /// A control message from `from`.
    pub fn on_message(&mut self, from: &P, message: TreeMessage, now: Instant) {
        match message {
            TreeMessage::IHave(ids) => self.on_ihave(from, &ids, now),
            TreeMessage::Graft(ids) => {
                if self.eager.contains(from) || self.lazy.contains(from) {
                    self.make_eager(from);
                }
                if !ids.is_empty() {
                    let to = from.clone();
                    self.actions.push_back(TreeAction::Push { to, txns: ids });
                }
            }
            TreeMessage::Prune => {
                if self.eager.contains(from) {
                    self.make_lazy(from);
                }
            }
        }
    }

    /// When [`Self::handle_timeout`] is next due; `None` when nothing is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let graft = self.graft_timers.first().map(|(at, _)| *at);
        match (graft, self.lazy_flush_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sends the announcements due and grafts the transactions still missing at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.lazy_flush_at.is_some_and(|at| at <= now) {
            self.flush_lazy();
        }
        let mut grafts: BTreeMap<P, Vec<TxnId>> = BTreeMap::new();
        while let Some(&(at, id)) = self.graft_timers.first() {
            if at > now {
                break;
            }
            self.graft_timers.pop_first();
            if let Some(peer) = self.next_announcer(&id, now) {
                grafts.entry(peer).or_default().push(id);
            }
        }
        for (peer, ids) in grafts {
            self.make_eager(&peer);
            for chunk in ids.chunks(self.config.max_ids_per_message) {
                self.send(peer.clone(), TreeMessage::Graft(chunk.to_vec()));
            }
        }
    }

    fn on_ihave(&mut self, from: &P, ids: &[TxnId], now: Instant) {
        for id in ids {
            if self.seen.contains(id) {
                continue;
            }
            if !self.missing.contains_key(id) {
                // One timer per missing transaction; it re-arms itself per announcer asked.
                self.graft_timers
                    .insert((now + self.config.graft_timeout, *id));
            }
            let missing = self.missing.entry(*id).or_insert_with(|| Missing {
                announcers: VecDeque::new(),
            });
            if !missing.announcers.contains(from) {
                missing.announcers.push_back(from.clone());
            }
        }
    }

    /// The announcer to graft `id` from, rescheduling the retry; `None` (and the transaction is
    /// left to anti-entropy) once it arrived or every announcer was asked.
    fn next_announcer(&mut self, id: &TxnId, now: Instant) -> Option<P> {
        if self.seen.contains(id) {
            self.missing.remove(id);
            return None;
        }
        let missing = self.missing.get_mut(id)?;
        let Some(peer) = missing.announcers.pop_front() else {
            self.missing.remove(id);
            return None;
        };
        self.graft_timers
            .insert((now + self.config.graft_retry, *id));
        Some(peer)
    }

    /// Marks `txns` seen; returns those that were not, and stops waiting for them.
    fn take_fresh(&mut self, txns: &[TxnId]) -> Vec<TxnId> {
        let fresh: Vec<TxnId> = txns
            .iter()
            .copied()
            .filter(|t| self.seen.insert(*t))
            .collect();
        for id in &fresh {
            self.missing.remove(id);
        }
        fresh
    }

    /// Pushes `txns` to every eager neighbor and queues announcements to every lazy one, except
    /// `from`.
    fn forward(&mut self, txns: &[TxnId], from: Option<&P>, now: Instant) {
        let not_from = |p: &&P| Some(*p) != from;
        for peer in self.eager.iter().filter(not_from) {
            self.actions.push_back(TreeAction::Push {
                to: peer.clone(),
                txns: txns.to_vec(),
            });
        }
        let lazy: Vec<P> = self.lazy.iter().filter(not_from).cloned().collect();
        for peer in lazy {
            self.lazy_queue.entry(peer).or_default().extend(txns);
        }
        if !self.lazy_queue.is_empty() && self.lazy_flush_at.is_none() {
            self.lazy_flush_at = Some(now + self.config.lazy_delay);
        }
    }

    fn flush_lazy(&mut self) {
        self.lazy_flush_at = None;
        for (peer, ids) in std::mem::take(&mut self.lazy_queue) {
            for chunk in ids.chunks(self.config.max_ids_per_message) {
                self.send(peer.clone(), TreeMessage::IHave(chunk.to_vec()));
            }
        }
    }

    fn make_eager(&mut self, peer: &P) {
        self.lazy.remove(peer);
        self.eager.insert(peer.clone());
    }

    fn make_lazy(&mut self, peer: &P) {
        self.eager.remove(peer);
        self.lazy.insert(peer.clone());
    }

    fn send(&mut self, to: P, message: TreeMessage) {
        self.actions.push_back(TreeAction::Send { to, message });
    }
}

#[cfg(test)]
mod tests;
