//! Dissemination policy: who to push a change to, and who to run anti-entropy with, when.
//!
//! Changes spread along two paths, as in Corrosion and every gossip system paired with
//! anti-entropy:
//!
//! - **Push** (fast, best effort). In a small fleet (*direct mode*, up to
//!   [`DisseminationConfig::direct_push_max_peers`] peers) a local transaction goes at once to
//!   every peer, and nobody relays. In a large fleet (*gossip mode*) it goes to a random fanout of
//!   peers ([`Disseminator::on_local_txn`]), and a peer receiving transactions it had not seen
//!   relays them to a fresh random fanout, excluding the sender ([`Disseminator::on_remote_txns`]);
//!   a bounded seen-set stops the relay: each node relays each transaction at most once while it
//!   is remembered. Gossip reaches most nodes in `O(log n)` hops but leaves a few percent behind
//!   (about `e^-fanout` of them: nodes no informed peer happened to pick). Either mode loses
//!   whatever the network drops.
//! - **Pull** (anti-entropy, the path that guarantees convergence): every interval, plus or minus
//!   jitter, the node compares summaries with a few peers ([`Disseminator::handle_timeout`]),
//!   preferring peers it has not synced with recently. Failing peers are deprioritized with
//!   exponential backoff ([`Disseminator::on_sync_result`]) but never starved: when no healthy
//!   peer is left they are tried anyway, and a peer whose backoff expired is ranked by how long
//!   ago it was last tried, so it comes first. After a partition heals, cross-partition rounds
//!   therefore resume within `backoff_max` plus one interval at worst (sooner when discovery
//!   reports the peer again: [`Disseminator::clear_backoff`]).
//!
//! Fleets too large for every node to know and connect to every peer run
//! [`crate::epidemic`] instead (a bounded-degree overlay and broadcast trees); it reuses this
//! policy's anti-entropy scheduling over the overlay's views.
//!
//! The policy is sans-IO and deterministic: time comes in as a parameter and randomness only from
//! a seeded RNG, so the daemon and the deterministic simulator run exactly this code. It decides
//! *whom* to contact; the host moves the bytes (sync sessions, push frames) and reports results.
//! Peers are kept sorted by id so that iteration order, and hence every decision, depends only on
//! the seed and the sequence of calls.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::ids::TxnId;
use crate::seen::SeenSet;

/// Tunables of the [`Disseminator`]. Every field has a documented default ([`Default`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisseminationConfig {
    /// Number of peers a new or newly learned transaction is pushed to in gossip mode. Default 3.
    pub push_fanout: usize,
    /// Direct mode: a node with at most this many peers pushes its own transactions to every
    /// peer and does not relay others' (their origin already sent them to everyone). One hop and
    /// `n - 1` messages per change instead of `O(log n)` hops and `fanout × n` messages, and no
    /// node left behind by an unlucky draw. Above it, gossip: random fanout plus relay.
    /// 0 = always gossip. Default 32.
    pub direct_push_max_peers: usize,
    /// Mean time between anti-entropy rounds. Default 10 s (the daemon takes it from
    /// `SYNC_INTERVAL_SECONDS`).
    pub anti_entropy_interval: Duration,
    /// Peers contacted per anti-entropy round. 0 disables the pull path (push only: lost pushes
    /// then never heal; only useful to demonstrate exactly that). Default 2.
    pub anti_entropy_peers: usize,
    /// Each round is scheduled `interval ± jitter` (uniform) after the previous one, so nodes
    /// started together drift apart instead of syncing in lockstep. Must be below the interval.
    /// Default 1 s (a tenth of the default interval).
    pub jitter: Duration,
    /// Upper bound of a failing peer's backoff; the backoff starts at one interval and doubles per
    /// consecutive failure. It bounds how long a healed partition can go unnoticed. Default 60 s.
    pub backoff_max: Duration,
    /// Number of recent transaction ids remembered to stop relaying (FIFO eviction). Default
    /// 16 384 (about 1 MiB).
    pub seen_capacity: usize,
}

impl Default for DisseminationConfig {
    fn default() -> Self {
        Self::with_interval(Duration::from_secs(10))
    }
}

impl DisseminationConfig {
    /// The defaults with the given anti-entropy interval and a jitter of a tenth of it.
    pub fn with_interval(interval: Duration) -> Self {
        Self {
            push_fanout: 3,
            direct_push_max_peers: 32,
            anti_entropy_interval: interval,
            anti_entropy_peers: 2,
            jitter: interval / 10,
            backoff_max: Duration::from_secs(60),
            seen_capacity: 16_384,
        }
    }

    /// Checks the invariants the scheduler relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.anti_entropy_interval.is_zero() {
            return Err(ConfigError::ZeroInterval);
        }
        if self.jitter >= self.anti_entropy_interval {
            return Err(ConfigError::JitterTooLarge {
                jitter: self.jitter,
                interval: self.anti_entropy_interval,
            });
        }
        if self.seen_capacity == 0 {
            return Err(ConfigError::ZeroSeenCapacity);
        }
        Ok(())
    }
}

/// Error from [`DisseminationConfig::validate`] and [`Disseminator::new`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `anti_entropy_interval` is zero.
    #[error("anti_entropy_interval must be greater than zero")]
    ZeroInterval,
    /// `jitter` is not below `anti_entropy_interval`.
    #[error("jitter ({jitter:?}) must be below anti_entropy_interval ({interval:?})")]
    JitterTooLarge {
        /// The configured jitter.
        jitter: Duration,
        /// The configured interval.
        interval: Duration,
    },
    /// `seen_capacity` is zero.
    #[error("seen_capacity must be greater than zero")]
    ZeroSeenCapacity,
}

/// Transactions to relay and the peers to relay them to; see [`Disseminator::on_remote_txns`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relay<P> {
    /// The subset of the received ids this node had not seen before, in input order.
    pub txns: Vec<TxnId>,
    /// Where to push them (never the sender). Empty when `txns` is.
    pub targets: Vec<P>,
}

/// A peer's standing with the policy; see [`Disseminator::health`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerHealth {
    /// Consecutive failed syncs; 0 = healthy.
    pub failures: u32,
    /// While failing: the peer is ranked last for anti-entropy until this time.
    pub retry_at: Option<Instant>,
    /// When a round with the peer last started or ended.
    pub last_round: Option<Instant>,
    /// A round the policy asked for has not been reported yet.
    pub in_flight: bool,
}

/// What the policy knows about one peer.
#[derive(Clone, Debug, Default)]
struct PeerState {
    /// Consecutive failed syncs; 0 = healthy.
    failures: u32,
    /// While failing: not preferred for anti-entropy before this time.
    retry_at: Option<Instant>,
    /// Last time a round with this peer started or ended.
    last_round: Option<Instant>,
    /// A round this policy asked for has not been reported yet.
    in_flight: bool,
}

/// The dissemination policy of one node, generic over the host's peer id type `P`.
///
/// Contract with the host: push each transaction returned with [`Relay`] or by
/// [`Self::on_local_txn`] to the returned peers; call [`Self::handle_timeout`] when
/// [`Self::poll_timeout`] is due and run a sync session with each returned peer; report the end
/// of every session (either direction) with [`Self::on_sync_result`].
#[derive(Debug)]
pub struct Disseminator<P> {
    config: DisseminationConfig,
    rng: StdRng,
    /// Sorted by peer id: deterministic iteration, binary-search lookup, index sampling.
    peers: Vec<(P, PeerState)>,
    seen: SeenSet,
    next_round: Instant,
}

impl<P: Ord + Clone> Disseminator<P> {
    /// A policy with no peers. The first anti-entropy round is due at a uniformly random time
    /// within one interval of `now`, so nodes started together do not sync in lockstep.
    pub fn new(config: DisseminationConfig, seed: u64, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let phase = rng.random_range(Duration::ZERO..=config.anti_entropy_interval);
        let seen = SeenSet::new(config.seen_capacity);
        Ok(Self {
            config,
            rng,
            peers: Vec::new(),
            seen,
            next_round: now + phase,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &DisseminationConfig {
        &self.config
    }

    /// Adds a peer (healthy, never synced); false if it was already known.
    pub fn add_peer(&mut self, peer: P) -> bool {
        match self.find(&peer) {
            Ok(_) => false,
            Err(i) => {
                self.peers.insert(i, (peer, PeerState::default()));
                true
            }
        }
    }

    /// Forgets a peer; false if it was unknown.
    pub fn remove_peer(&mut self, peer: &P) -> bool {
        self.find(peer).map(|i| self.peers.remove(i)).is_ok()
    }

    /// The known peers, sorted.
    pub fn peers(&self) -> impl Iterator<Item = &P> {
        self.peers.iter().map(|(p, _)| p)
    }

    /// Number of known peers.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// True while the node has few enough peers to push to all of them
    /// ([`DisseminationConfig::direct_push_max_peers`]).
    pub fn is_direct(&self) -> bool {
        self.peers.len() <= self.config.direct_push_max_peers
    }

    /// A transaction was committed locally: the peers to push it to. In direct mode every peer;
    /// otherwise a random fanout, healthy peers preferred.
    pub fn on_local_txn(&mut self, txn: TxnId) -> Vec<P> {
        self.seen.insert(txn);
        if self.is_direct() {
            return self.peers.iter().map(|(p, _)| p.clone()).collect();
        }
        self.fanout(None)
    }

    /// Transactions arrived from `from`. Returns those not seen before and, in gossip mode, a
    /// fanout of peers other than `from` to relay them to (push-on-relay); in direct mode no
    /// targets (the origin pushed to everyone). Each node relays a given transaction at most once
    /// while it stays in the bounded seen-set.
    ///
    /// Call it for pushed transactions and for transactions pulled by anti-entropy: relaying
    /// pulled ones costs at most one relay per node and transaction (the seen-set), and after a
    /// partition heals it spreads the other side's writes at push speed rather than one
    /// anti-entropy round at a time (see the simulator in `meshlite-fixtures`).
    pub fn on_remote_txns(&mut self, from: &P, txns: &[TxnId]) -> Relay<P> {
        let fresh: Vec<TxnId> = txns
            .iter()
            .copied()
            .filter(|t| self.seen.insert(*t))
            .collect();
        let targets = if fresh.is_empty() || self.is_direct() {
            Vec::new()
        } else {
            self.fanout(Some(from))
        };
        Relay {
            txns: fresh,
            targets,
        }
    }

    /// True if `txn` is in the seen-set (recently pushed, relayed or received).
    pub fn has_seen(&self, txn: &TxnId) -> bool {
        self.seen.contains(txn)
    }

    /// When [`Self::handle_timeout`] is next due; `None` when the pull path is disabled.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.config.anti_entropy_peers > 0).then_some(self.next_round)
    }

    /// Runs the anti-entropy timer: if a round is due at `now`, returns the peers to sync with and
    /// schedules the next round; otherwise (early or spurious wake-up) returns nothing.
    ///
    /// Peers are ranked: healthy (or backoff expired) before backing off, then least recently
    /// synced first, ties broken at random. Peers with a round in flight are skipped.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<P> {
        if self.config.anti_entropy_peers == 0 || now < self.next_round {
            return Vec::new();
        }
        self.schedule_next(now);
        let chosen = self.rank_for_round(now);
        for &i in &chosen {
            let state = &mut self.peers[i].1;
            state.in_flight = true;
            state.last_round = Some(now);
        }
        chosen
            .into_iter()
            .map(|i| self.peers[i].0.clone())
            .collect()
    }

    /// A sync session with `peer` ended at `now`, successfully or not (either direction).
    /// Success makes the peer healthy; failure backs it off for `interval × 2^(failures-1)`,
    /// capped at `backoff_max`. Unknown peers are ignored.
    pub fn on_sync_result(&mut self, peer: &P, ok: bool, now: Instant) {
        let Ok(i) = self.find(peer) else { return };
        let interval = self.config.anti_entropy_interval;
        let max = self.config.backoff_max;
        let state = &mut self.peers[i].1;
        state.in_flight = false;
        state.last_round = Some(now);
        if ok {
            state.failures = 0;
            state.retry_at = None;
        } else {
            state.failures = state.failures.saturating_add(1);
            let factor = 1u32 << (state.failures - 1).min(16);
            state.retry_at = Some(now + interval.saturating_mul(factor).min(max));
        }
    }

    /// Discovery saw `peer` again (an mDNS or NATS announcement, a new connection): forget its
    /// failures so the next round may pick it at once. Unknown peers are ignored.
    pub fn clear_backoff(&mut self, peer: &P) {
        if let Ok(i) = self.find(peer) {
            let state = &mut self.peers[i].1;
            state.failures = 0;
            state.retry_at = None;
        }
    }

    /// What the policy knows about `peer`; `None` if unknown. For the host's peer table.
    pub fn health(&self, peer: &P) -> Option<PeerHealth> {
        let state = &self.peers[self.find(peer).ok()?].1;
        Some(PeerHealth {
            failures: state.failures,
            retry_at: state.retry_at,
            last_round: state.last_round,
            in_flight: state.in_flight,
        })
    }

    fn find(&self, peer: &P) -> Result<usize, usize> {
        self.peers.binary_search_by(|(p, _)| p.cmp(peer))
    }

    fn schedule_next(&mut self, now: Instant) {
        let interval = self.config.anti_entropy_interval;
        let jitter = self.config.jitter;
        let offset = self.rng.random_range(Duration::ZERO..=jitter * 2);
        // interval - jitter + U[0, 2·jitter]: never zero because jitter < interval.
        self.next_round = now + (interval - jitter) + offset;
    }

    /// Up to `push_fanout` random peers other than `exclude`, healthy ones first: one pass with
    /// two reservoirs (Algorithm R), so the cost is linear in the peers and allocation-free beyond
    /// the result.
    fn fanout(&mut self, exclude: Option<&P>) -> Vec<P> {
        let k = self.config.push_fanout;
        let (mut healthy, mut failing) = (Reservoir::new(k), Reservoir::new(k));
        for (i, (p, state)) in self.peers.iter().enumerate() {
            if exclude == Some(p) {
                continue;
            }
            let pool = if state.failures == 0 {
                &mut healthy
            } else {
                &mut failing
            };
            pool.offer(i, &mut self.rng);
        }
        let mut picked = healthy.into_items();
        let missing = k.saturating_sub(picked.len());
        picked.extend(failing.into_items().into_iter().take(missing));
        picked
            .into_iter()
            .map(|i| self.peers[i].0.clone())
            .collect()
    }

    /// Indices of the `anti_entropy_peers` best-ranked peers for a round at `now`.
    fn rank_for_round(&mut self, now: Instant) -> Vec<usize> {
        let k = self.config.anti_entropy_peers;
        // (backing off, last round, random tiebreak, index); keep the k smallest.
        let mut best: Vec<(bool, Option<Instant>, u64, usize)> = Vec::with_capacity(k + 1);
        for (i, (_, state)) in self.peers.iter().enumerate() {
            if state.in_flight {
                continue;
            }
            let backing_off = state.retry_at.is_some_and(|t| t > now);
            let key = (backing_off, state.last_round, self.rng.random::<u64>(), i);
            if best.len() == k && best.last().is_some_and(|worst| key >= *worst) {
                continue;
            }
            let at = best.partition_point(|b| *b < key);
            best.insert(at, key);
            best.truncate(k);
        }
        best.into_iter().map(|(.., i)| i).collect()
    }
}

/// A uniform random sample of at most `k` items from a stream (Algorithm R).
struct Reservoir {
    k: usize,
    seen: usize,
    items: Vec<usize>,
}

impl Reservoir {
    fn new(k: usize) -> Self {
        Self {
            k,
            seen: 0,
            items: Vec::with_capacity(k),
        }
    }

    fn offer(&mut self, item: usize, rng: &mut StdRng) {
        self.seen += 1;
        if self.items.len() < self.k {
            self.items.push(item);
        } else {
            let j = rng.random_range(0..self.seen);
            if j < self.k {
                self.items[j] = item;
            }
        }
    }

    fn into_items(self) -> Vec<usize> {
        self.items
    }
}

#[cfg(test)]
mod tests;
