//! The gossip actor: decides *when* and *to whom* changes travel, using the core's sans-IO
//! [`Disseminator`], and asks the transport to do it.
//!
//! Inputs, in `select!` order (cancellation first):
//! - store events: every local commit is pushed at once to the disseminator's targets
//!   (all peers up to `direct_push_max_peers`, else a random fanout); commits whose events
//!   queued up while the actor was busy go out together as one push (one store read, one
//!   frame per peer);
//! - transport events: peers coming and going update the policy's peer set; pushed
//!   transactions that were new here are relayed onwards (gossip mode only);
//! - the policy's timer: anti-entropy rounds with a few peers, which heal lost pushes,
//!   restarts and partitions;
//! - finished rounds: their outcome feeds the policy's backoff and the peer table's health.
//!
//! Anti-entropy rounds run as child tasks in a `JoinSet`, so a slow peer never blocks pushes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use meshlite_core::TxnId;
use meshlite_core::dissemination::Disseminator;
use meshlite_core::store::StoreEvent;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::discovery::table::{PeerKey, PeerTable};
use crate::fleet::NodeId;
use crate::net::coalesce::MERGE_MAX_BYTES;
use crate::net::events::{NetEvent, SyncStats};
use crate::net::handle::NetHandle;
use crate::net::sync::SyncError;
use crate::replica::Replica;

/// Most local transactions gathered from queued store events into one push.
pub const LOCAL_BATCH: usize = 256;

/// Counters exported on `/metrics`.
#[derive(Debug, Default)]
pub struct GossipStats {
    /// Local transactions pushed (counted once per transaction, not per peer).
    pub txns_pushed: AtomicU64,
    /// Received transactions relayed onwards.
    pub txns_relayed: AtomicU64,
    /// Transactions received in anti-entropy rounds that were new here.
    pub txns_pulled: AtomicU64,
    /// Transactions received by push.
    pub txns_push_received: AtomicU64,
    /// Completed anti-entropy rounds.
    pub syncs_ok: AtomicU64,
    /// Failed anti-entropy rounds.
    pub syncs_failed: AtomicU64,
    /// Store events lost because this actor lagged (anti-entropy recovers the data).
    pub events_lagged: AtomicU64,
}

/// Splits encoded transactions, in order, into runs of at most `max` bytes (a larger one alone).
fn split_by_bytes(txns: Vec<Vec<u8>>, max: usize) -> Vec<Vec<Vec<u8>>> {
    let mut parts: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut bytes = 0;
    for txn in txns {
        match parts.last_mut() {
            Some(part) if bytes + txn.len() <= max => {
                bytes += txn.len();
                part.push(txn);
            }
            _ => {
                bytes = txn.len();
                parts.push(vec![txn]);
            }
        }
    }
    parts
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The actor. Built by the daemon, consumed by [`Gossip::run`].
pub struct Gossip<R> {
    /// The replica whose commits are pushed.
    pub store: R,
    /// The transport.
    pub net: NetHandle,
    /// The peer table (health of sync rounds).
    pub table: PeerTable,
    /// The dissemination policy.
    pub policy: Disseminator<NodeId>,
    /// Shared counters.
    pub stats: Arc<GossipStats>,
    /// Stops the actor.
    pub cancel: CancellationToken,
}

impl<R> std::fmt::Debug for Gossip<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("peers", &self.policy.peer_count())
            .finish_non_exhaustive()
    }
}

type RoundResult = (NodeId, Result<SyncStats, SyncError>);

impl<R: Replica> Gossip<R> {
    /// Runs until cancelled; waits for in-flight rounds to stop before returning.
    pub async fn run(mut self) {
        let mut store_events = self.store.subscribe();
        let mut net_events = self.net.subscribe();
        // Peers that connected before we subscribed sent their `PeerUp` to nobody.
        for peer in self.net.peers().await {
            self.policy.add_peer(peer.node_id);
        }
        let mut rounds: JoinSet<RoundResult> = JoinSet::new();
        loop {
            let wake = self
                .policy
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let timer = async move {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                ev = store_events.recv() => self.on_store_event(ev, &mut store_events).await,
                ev = net_events.recv() => self.on_net_event(ev).await,
                Some(done) = rounds.join_next() => self.on_round_done(done),
                _ = timer => self.start_rounds(&mut rounds),
            }
        }
        rounds.abort_all();
        while rounds.join_next().await.is_some() {}
    }

    /// Handles `ev` and every store event already queued behind it: the local commits among
    /// them (up to [`LOCAL_BATCH`] transactions) go out as one push.
    async fn on_store_event(
        &mut self,
        ev: Result<StoreEvent, RecvError>,
        rx: &mut broadcast::Receiver<StoreEvent>,
    ) {
        let mut local = Vec::new();
        let mut next = Some(ev);
        while let Some(ev) = next.take() {
            match ev {
                Ok(StoreEvent::Committed {
                    txns, local: true, ..
                }) => local.extend(txns.iter().copied()),
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    bump(&self.stats.events_lagged, n);
                    tracing::warn!(
                        lost = n,
                        "gossip lagged behind the store; anti-entropy will catch up"
                    );
                }
                Err(RecvError::Closed) => self.cancel.cancel(),
            }
            if local.len() < LOCAL_BATCH {
                next = match rx.try_recv() {
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                    Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
                    Ok(ev) => Some(Ok(ev)),
                };
            }
        }
        self.push_local(local).await;
    }

    /// Pushes local transactions: one store read, then pushes of at most
    /// [`MERGE_MAX_BYTES`] each, to the targets chosen for the first of them.
    async fn push_local(&mut self, txns: Vec<TxnId>) {
        let Some(first) = txns.first() else { return };
        let targets = self.policy.on_local_txn(*first);
        for id in &txns[1..] {
            self.policy.on_local_txn(*id); // Marks it seen; the batch shares the first's targets.
        }
        if targets.is_empty() {
            return;
        }
        let encoded = match self.store.encoded(&txns).await {
            Ok(loaded) => loaded.txns,
            Err(e) => {
                tracing::warn!(error = %e, "cannot load local transactions to push");
                return;
            }
        };
        bump(&self.stats.txns_pushed, encoded.len() as u64);
        for part in split_by_bytes(encoded, MERGE_MAX_BYTES) {
            if let Err(e) = self.net.push_to(targets.clone(), part).await {
                tracing::debug!(error = %e, "push failed; anti-entropy will deliver");
            }
        }
    }

    async fn on_net_event(&mut self, ev: Result<NetEvent, RecvError>) {
        match ev {
            Ok(NetEvent::PeerUp { node_id, addr, .. }) => {
                self.policy.add_peer(node_id);
                self.policy.clear_backoff(&node_id);
                self.table.identify(addr, node_id);
            }
            Ok(NetEvent::PeerDown { node_id, .. }) => {
                self.policy.remove_peer(&node_id);
            }
            Ok(NetEvent::PushReceived {
                from,
                txns,
                encoded,
                applied,
            }) => {
                bump(&self.stats.txns_push_received, applied as u64);
                self.relay(from, &txns, &encoded).await;
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => tracing::debug!(lost = n, "transport events lagged"),
            Err(RecvError::Closed) => self.cancel.cancel(),
        }
    }

    async fn relay(&mut self, from: NodeId, ids: &[TxnId], encoded: &[Vec<u8>]) {
        let relay = self.policy.on_remote_txns(&from, ids);
        if relay.targets.is_empty() || relay.txns.is_empty() {
            return;
        }
        let fresh: Vec<Vec<u8>> = ids
            .iter()
            .zip(encoded)
            .filter(|(id, _)| relay.txns.contains(id))
            .map(|(_, bytes)| bytes.clone())
            .collect();
        bump(&self.stats.txns_relayed, fresh.len() as u64);
        if let Err(e) = self.net.push_to(relay.targets, fresh).await {
            tracing::debug!(error = %e, "relay failed; anti-entropy will deliver");
        }
    }

    fn start_rounds(&mut self, rounds: &mut JoinSet<RoundResult>) {
        for peer in self.policy.handle_timeout(Instant::now()) {
            let net = self.net.clone();
            rounds.spawn(async move { (peer, net.sync_with(peer).await) });
        }
    }

    fn on_round_done(&mut self, done: Result<RoundResult, tokio::task::JoinError>) {
        let Ok((peer, result)) = done else {
            tracing::error!("an anti-entropy task panicked");
            return;
        };
        let key = PeerKey::Node(peer);
        let ok = result.is_ok();
        self.policy.on_sync_result(&peer, ok, Instant::now());
        match result {
            Ok(stats) => {
                bump(&self.stats.syncs_ok, 1);
                bump(&self.stats.txns_pulled, stats.txns_applied);
                self.table.record_success(&key, Some(stats.rtt));
                tracing::debug!(%peer, sent = stats.txns_sent, received = stats.txns_received, "anti-entropy round");
            }
            Err(e) => {
                bump(&self.stats.syncs_failed, 1);
                tracing::debug!(%peer, error = %e, "anti-entropy round failed");
                self.table.record_failure(&key, e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_by_bytes;

    #[test]
    fn splits_keep_order_and_bound_each_part() {
        let txns = vec![vec![1; 4], vec![2; 4], vec![3; 9], vec![4; 1]];
        let parts = split_by_bytes(txns, 8);
        assert_eq!(
            parts,
            vec![
                vec![vec![1; 4], vec![2; 4]],
                vec![vec![3; 9]],
                vec![vec![4; 1]]
            ]
        );
        assert!(split_by_bytes(Vec::new(), 8).is_empty());
    }
}
