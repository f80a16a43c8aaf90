//! Dissemination for large fleets: the [`Overlay`] (who is connected to whom), the [`Plumtree`]
//! (how a transaction travels over those connections) and the anti-entropy scheduler of
//! [`Disseminator`] (whom to pull from), wired together as one sans-IO state machine.
//!
//! Small fleets do not need it: up to [`DisseminationConfig::direct_push_max_peers`] peers (32 by
//! default) every node keeps a connection to every peer and pushes its own transactions to all of
//! them in one hop ([`crate::dissemination`]). Above that threshold a host runs [`Epidemic`]
//! instead: a handful of connections per node (the active view), a change costs about one eager
//! send per node plus batched announcements, and the per-node idle cost stays flat as the fleet
//! grows.
//!
//! The wiring:
//!
//! - overlay neighbors ([`crate::overlay::OverlayAction::NeighborUp`] / `NeighborDown`) become
//!   the tree's links;
//! - anti-entropy runs with the members of both views (at most active + passive capacity peers,
//!   35 by default): the active view alone would never bridge two overlay components, while the
//!   passive view, refreshed by shuffles and discovery ([`Epidemic::add_known`]), does. Pulled
//!   transactions are forwarded along the tree ([`Epidemic::on_pulled`]), so a healed partition
//!   spreads the other side's writes at push speed;
//! - the host moves bytes: it frames [`EpidemicMessage`]s, turns [`EpidemicAction::Push`] into
//!   the protocol's push frame with the transactions from its store, runs a sync session for
//!   [`EpidemicAction::Sync`] and reports its end with [`Epidemic::on_sync_result`].
//!
//! The push-fanout fields of the [`DisseminationConfig`] are not used here; its anti-entropy
//! fields are.

use std::collections::VecDeque;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::dissemination::{ConfigError, DisseminationConfig, Disseminator};
use crate::ids::TxnId;
use crate::overlay::{Overlay, OverlayAction, OverlayConfig, OverlayConfigError, OverlayMessage};
use crate::plumtree::{Plumtree, TreeAction, TreeConfig, TreeConfigError, TreeMessage};

/// Tunables of an [`Epidemic`] node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpidemicConfig {
    /// Membership overlay.
    pub overlay: OverlayConfig,
    /// Broadcast tree.
    pub tree: TreeConfig,
    /// Anti-entropy scheduling (interval, peers per round, jitter, backoff).
    pub anti_entropy: DisseminationConfig,
}

/// Error from [`Epidemic::new`]: which part refused its configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EpidemicConfigError {
    /// The overlay configuration is invalid.
    #[error("overlay config: {0}")]
    Overlay(#[from] OverlayConfigError),
    /// The tree configuration is invalid.
    #[error("tree config: {0}")]
    Tree(#[from] TreeConfigError),
    /// The anti-entropy configuration is invalid.
    #[error("anti-entropy config: {0}")]
    AntiEntropy(#[from] ConfigError),
}

/// A control message between peers (transactions travel in the protocol's push frames).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EpidemicMessage<P> {
    /// Membership.
    Overlay(OverlayMessage<P>),
    /// Broadcast tree.
    Tree(TreeMessage),
}

/// What the host must do; drained with [`Epidemic::poll_action`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EpidemicAction<P> {
    /// Send a control message (connecting first if needed).
    Send {
        /// Recipient.
        to: P,
        /// The message.
        message: EpidemicMessage<P>,
    },
    /// Push these transactions (those the host holds) to `to` in one push frame.
    Push {
        /// Recipient.
        to: P,
        /// The transactions, in order.
        txns: Vec<TxnId>,
    },
    /// The connection to this peer is no longer needed.
    Close(P),
    /// Run an anti-entropy session with this peer and report it with
    /// [`Epidemic::on_sync_result`].
    Sync(P),
}

/// One node's dissemination state in overlay mode.
#[derive(Debug)]
pub struct Epidemic<P> {
    overlay: Overlay<P>,
    tree: Plumtree<P>,
    pull: Disseminator<P>,
    actions: VecDeque<EpidemicAction<P>>,
}

impl<P: Ord + Clone> Epidemic<P> {
    /// A node with empty views; `seed` drives every random choice.
    pub fn new(
        me: P,
        config: EpidemicConfig,
        seed: u64,
        now: Instant,
    ) -> Result<Self, EpidemicConfigError> {
        let overlay = Overlay::new(me, config.overlay, seed, now)?;
        let tree = Plumtree::new(config.tree)?;
        let pull = Disseminator::new(config.anti_entropy, seed ^ 0x7075_6c6c, now)?;
        Ok(Self {
            overlay,
            tree,
            pull,
            actions: VecDeque::new(),
        })
    }

    /// The membership overlay (views, for status pages and tests).
    pub fn overlay(&self) -> &Overlay<P> {
        &self.overlay
    }

    /// The broadcast tree (eager and lazy links).
    pub fn tree(&self) -> &Plumtree<P> {
        &self.tree
    }

    /// The anti-entropy scheduler (peers and their health).
    pub fn anti_entropy(&self) -> &Disseminator<P> {
        &self.pull
    }

    /// The next action for the host, in order.
    pub fn poll_action(&mut self) -> Option<EpidemicAction<P>> {
        self.actions.pop_front()
    }

    /// Joins the overlay through `contact`.
    pub fn join(&mut self, contact: P, now: Instant) {
        self.overlay.join(contact, now);
        self.route();
    }

    /// Discovery reported `peer`.
    pub fn add_known(&mut self, peer: P, now: Instant) {
        self.overlay.add_known(peer, now);
        self.route();
    }

    /// Leaves gracefully (before shutdown).
    pub fn leave(&mut self) {
        self.overlay.leave();
        self.route();
    }

    /// A transaction committed locally.
    pub fn broadcast(&mut self, txn: TxnId, now: Instant) {
        self.tree.broadcast(txn, now);
        self.route();
    }

    /// Transactions pushed by `from`; returns those new to this node (see
    /// [`Plumtree::on_push`]).
    pub fn on_push(&mut self, from: &P, txns: &[TxnId], now: Instant) -> Vec<TxnId> {
        let fresh = self.tree.on_push(from, txns, now);
        self.route();
        fresh
    }

    /// Transactions pulled from `from` by anti-entropy; returns those new to this node.
    pub fn on_pulled(&mut self, from: &P, txns: &[TxnId], now: Instant) -> Vec<TxnId> {
        let fresh = self.tree.on_pulled(from, txns, now);
        self.route();
        fresh
    }

    /// A control message from `from`.
    pub fn on_message(&mut self, from: P, message: EpidemicMessage<P>, now: Instant) {
        match message {
            EpidemicMessage::Overlay(m) => self.overlay.on_message(from, m, now),
            EpidemicMessage::Tree(m) => self.tree.on_message(&from, m, now),
        }
        self.route();
    }

    /// The connection to `peer` closed or timed out.
    pub fn on_connection_closed(&mut self, peer: &P, now: Instant) {
        self.overlay.on_connection_closed(peer, now);
        self.route();
    }

    /// `peer` could not be reached at all.
    pub fn on_peer_failed(&mut self, peer: &P, now: Instant) {
        self.overlay.on_peer_failed(peer, now);
        self.route();
    }

    /// An anti-entropy session with `peer` ended (see [`Disseminator::on_sync_result`]).
    pub fn on_sync_result(&mut self, peer: &P, ok: bool, now: Instant) {
        self.pull.on_sync_result(peer, ok, now);
    }

    /// When [`Self::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Instant {
        let mut at = self.overlay.poll_timeout();
        if let Some(t) = self.tree.poll_timeout() {
            at = at.min(t);
        }
        if let Some(t) = self.pull.poll_timeout() {
            at = at.min(t);
        }
        at
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.overlay.poll_timeout() <= now {
            self.overlay.handle_timeout(now);
        }
        if self.tree.poll_timeout().is_some_and(|t| t <= now) {
            self.tree.handle_timeout(now);
        }
        self.route();
        for peer in self.pull.handle_timeout(now) {
            self.actions.push_back(EpidemicAction::Sync(peer));
        }
    }

    /// Moves the parts' actions to the host's queue, feeding overlay neighbor changes to the
    /// tree, and keeps the anti-entropy peers equal to the union of both views.
    fn route(&mut self) {
        while let Some(action) = self.overlay.poll_action() {
            match action {
                OverlayAction::Send { to, message } => {
                    let message = EpidemicMessage::Overlay(message);
                    self.actions.push_back(EpidemicAction::Send { to, message });
                }
                OverlayAction::NeighborUp(p) => self.tree.neighbor_up(p),
                OverlayAction::NeighborDown(p) => self.tree.neighbor_down(&p),
                OverlayAction::Close(p) => self.actions.push_back(EpidemicAction::Close(p)),
            }
        }
        while let Some(action) = self.tree.poll_action() {
            self.actions.push_back(match action {
                TreeAction::Push { to, txns } => EpidemicAction::Push { to, txns },
                TreeAction::Send { to, message } => EpidemicAction::Send {
                    to,
                    message: EpidemicMessage::Tree(message),
                },
            });
        }
        self.sync_pull_peers();
    }

    fn sync_pull_peers(&mut self) {
        let views = || {
            let o = &self.overlay;
            o.active().iter().chain(o.passive())
        };
        let stale: Vec<P> = self
            .pull
            .peers()
            .filter(|p| !views().any(|v| v == *p))
            .cloned()
            .collect();
        let new: Vec<P> = views().cloned().collect();
        for p in stale {
            self.pull.remove_peer(&p);
        }
        for p in new {
            self.pull.add_peer(p);
        }
    }
}

#[cfg(test)]
mod tests;
