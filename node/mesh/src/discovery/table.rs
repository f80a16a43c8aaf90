//! The peer table: every discovery source reports [`Sighting`]s into one [`PeerTable`].
//!
//! A peer is keyed by its node id once any source knows it ([`PeerKey::Node`]); sources that only
//! know an address (static entries, Tailscale devices) key it by a stable label
//! ([`PeerKey::Addr`]). When a node id shows up for an address-keyed peer — a sighting with a node
//! id that shares an address, or [`PeerTable::identify`] after a QUIC handshake — the entries are
//! merged and the label becomes an alias of the node id, so later sightings by label land on the
//! merged peer.
//!
//! Each peer remembers when each source last saw it and when each address was last reported.
//! [`PeerTable::expire_at`] drops sources and addresses older than the expiry; a peer with no
//! source left is forgotten. Static sightings are never expired and pin their addresses.
//! Health (RTT, consecutive errors, last error) is fed by the transport through
//! [`PeerTable::record_success`] and [`PeerTable::record_failure`].
//!
//! The table is a cheap-to-clone handle around one mutex; every method holds it briefly and never
//! across an `.await`. [`PeerTable::changes`] wakes whoever dials peers when a new peer or address
//! appears.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Display, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Where a peer was learned from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The `discovery.static_peers` list. Never expires.
    Static,
    /// mDNS on the LAN.
    Mdns,
    /// `tailscale status --json`.
    Tailscale,
    /// Announcements on NATS `mesh.node.announce.v1`.
    Nats,
    /// A successful QUIC exchange with the peer (either direction).
    Quic,
}

impl Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Static => "static",
            Source::Mdns => "mdns",
            Source::Tailscale => "tailscale",
            Source::Nats => "nats",
            Source::Quic => "quic",
        })
    }
}

/// How a peer is keyed in the table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerKey {
    /// By node id (hex), once known.
    Node(String),
    /// By a source's stable label for an address, before the node id is known: the configured
    /// `host:port` of a static peer, `ip:port` of a Tailscale device.
    Addr(String),
}

impl Display for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerKey::Node(id) => f.write_str(id),
            PeerKey::Addr(label) => write!(f, "addr:{label}"),
        }
    }
}

/// One report of a peer by one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// Who saw it.
    pub source: Source,
    /// Its node id if the source knows it, else the source's label for it.
    pub key: PeerKey,
    /// Human name (host name, node name), if known.
    pub name: Option<String>,
    /// Addresses at which its QUIC endpoint may be reached.
    pub addresses: Vec<SocketAddr>,
    /// Collections it replicates, if announced.
    pub collections: Option<Vec<String>>,
    /// Its Meshlite version, if announced.
    pub version: Option<String>,
}

impl Sighting {
    /// A sighting of a peer with a known node id.
    pub fn node(source: Source, node_id: impl Into<String>) -> Self {
        Self::new(source, PeerKey::Node(node_id.into()))
    }

    /// A sighting of a peer known only by an address label.
    pub fn addr(source: Source, label: impl Into<String>) -> Self {
        Self::new(source, PeerKey::Addr(label.into()))
    }

    fn new(source: Source, key: PeerKey) -> Self {
        Self {
            source,
            key,
            name: None,
            addresses: Vec::new(),
            collections: None,
            version: None,
        }
    }

    /// With these addresses.
    pub fn with_addresses(mut self, addresses: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.addresses = addresses.into_iter().collect();
        self
    }

    /// With a human name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// With announced collections.
    pub fn with_collections(mut self, collections: Vec<String>) -> Self {
        self.collections = Some(collections);
        self
    }

    /// With an announced version.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }
}

/// A peer as printed by `meshlite peers` (one JSON object per line) and exported as metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerRow {
    /// The table key: the node id, or `addr:<label>` while the node id is unknown.
    pub key: String,
    /// The node id, when known.
    pub node_id: Option<String>,
    /// Human name, when known.
    pub name: Option<String>,
    /// Candidate addresses, sorted.
    pub addresses: Vec<SocketAddr>,
    /// Sources that currently report the peer, sorted.
    pub sources: Vec<Source>,
    /// Wall-clock time of the latest sighting, milliseconds since the Unix epoch.
    pub last_seen_unix_ms: u64,
    /// Milliseconds since the latest sighting.
    pub last_seen_ago_ms: u64,
    /// Latest measured round-trip time in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Failed contacts since the last success.
    pub consecutive_errors: u32,
    /// The latest contact error.
    pub last_error: Option<String>,
    /// Collections the peer announced.
    pub collections: Vec<String>,
    /// The peer's announced Meshlite version.
    pub version: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct AddrSeen {
    last_seen: Instant,
    /// Reported by the static source: kept regardless of age.
    pinned: bool,
}

#[derive(Debug, Clone)]
struct Peer {
    name: Option<String>,
    addresses: BTreeMap<SocketAddr, AddrSeen>,
    sources: BTreeMap<Source, Instant>,
    last_seen: Instant,
    rtt: Option<Duration>,
    consecutive_errors: u32,
    last_error: Option<String>,
    collections: Vec<String>,
    version: Option<String>,
}

impl Peer {
    fn new(now: Instant) -> Self {
        Self {
            name: None,
            addresses: BTreeMap::new(),
            sources: BTreeMap::new(),
            last_seen: now,
            rtt: None,
            consecutive_errors: 0,
            last_error: None,
            collections: Vec::new(),
            version: None,
        }
    }

    /// Applies a sighting; returns whether an address was new.
    fn apply(&mut self, s: Sighting, now: Instant) -> bool {
        let pin = s.source == Source::Static;
        if pin {
            self.addresses.values_mut().for_each(|a| a.pinned = false);
        }
        let mut new_address = false;
        for addr in s.addresses {
            let seen = self.addresses.entry(addr).or_insert_with(|| {
                new_address = true;
                AddrSeen {
                    last_seen: now,
                    pinned: false,
                }
            });
            seen.last_seen = seen.last_seen.max(now);
            seen.pinned |= pin;
        }
        self.sources.insert(s.source, now);
        self.last_seen = self.last_seen.max(now);
        self.name = s.name.or(self.name.take());
        self.collections = s
            .collections
            .unwrap_or(std::mem::take(&mut self.collections));
        self.version = s.version.or(self.version.take());
        new_address
    }

    /// Folds another entry for the same peer into this one.
    fn absorb(&mut self, other: Peer) {
        for (addr, seen) in other.addresses {
            let e = self.addresses.entry(addr).or_insert(seen);
            e.last_seen = e.last_seen.max(seen.last_seen);
            e.pinned |= seen.pinned;
        }
        for (source, at) in other.sources {
            let e = self.sources.entry(source).or_insert(at);
            *e = (*e).max(at);
        }
        self.last_seen = self.last_seen.max(other.last_seen);
        self.name = self.name.take().or(other.name);
        self.rtt = self.rtt.or(other.rtt);
        self.last_error = self.last_error.take().or(other.last_error);
        if self.collections.is_empty() {
            self.collections = other.collections;
        }
        self.version = self.version.take().or(other.version);
    }

    /// Drops stale sources and addresses; returns whether any source is left.
    fn expire(&mut self, now: Instant, expiry: Duration) -> bool {
        let fresh = |at: Instant| now.saturating_duration_since(at) <= expiry;
        self.sources
            .retain(|source, at| *source == Source::Static || fresh(*at));
        self.addresses.retain(|_, a| a.pinned || fresh(a.last_seen));
        !self.sources.is_empty()
    }

    fn row(&self, key: &PeerKey, now: Instant, wall: SystemTime) -> PeerRow {
        let ago = now.saturating_duration_since(self.last_seen);
        let seen_wall = wall.checked_sub(ago).unwrap_or(UNIX_EPOCH);
        PeerRow {
            key: key.to_string(),
            node_id: match key {
                PeerKey::Node(id) => Some(id.clone()),
                PeerKey::Addr(_) => None,
            },
            name: self.name.clone(),
            addresses: self.addresses.keys().copied().collect(),
            sources: self.sources.keys().copied().collect(),
            last_seen_unix_ms: millis(seen_wall.duration_since(UNIX_EPOCH).unwrap_or_default()),
            last_seen_ago_ms: millis(ago),
            rtt_ms: self.rtt.map(|r| r.as_secs_f64() * 1000.0),
            consecutive_errors: self.consecutive_errors,
            last_error: self.last_error.clone(),
            collections: self.collections.clone(),
            version: self.version.clone(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug)]
struct Inner {
    peers: BTreeMap<PeerKey, Peer>,
    /// Address labels whose peer turned out to have this node id.
    aliases: HashMap<String, String>,
    expiry: Duration,
}

impl Inner {
    fn resolve(&self, key: &PeerKey) -> PeerKey {
        match key {
            PeerKey::Addr(label) => match self.aliases.get(label) {
                Some(id) => PeerKey::Node(id.clone()),
                None => key.clone(),
            },
            PeerKey::Node(_) => key.clone(),
        }
    }

    /// Address-keyed peers that share an address with `addresses`.
    fn addr_peers_with(&self, addresses: &[SocketAddr]) -> Vec<PeerKey> {
        self.peers
            .iter()
            .filter(|(k, p)| {
                matches!(k, PeerKey::Addr(_))
                    && addresses.iter().any(|a| p.addresses.contains_key(a))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The node-keyed peer that already lists one of `addresses`, if any.
    fn node_with_any(&self, addresses: &[SocketAddr]) -> Option<PeerKey> {
        self.peers
            .iter()
            .find(|(k, p)| {
                matches!(k, PeerKey::Node(_))
                    && addresses.iter().any(|a| p.addresses.contains_key(a))
            })
            .map(|(k, _)| k.clone())
    }

    /// Merges the address-keyed peers `from` into the node-keyed peer `node_id`.
    fn merge_into(&mut self, node_id: &str, from: Vec<PeerKey>, now: Instant) {
        for key in from {
            let (PeerKey::Addr(label), Some(peer)) = (&key, self.peers.remove(&key)) else {
                continue;
            };
            self.aliases.insert(label.clone(), node_id.to_owned());
            let target = PeerKey::Node(node_id.to_owned());
            self.peers
                .entry(target)
                .or_insert_with(|| Peer::new(now))
                .absorb(peer);
        }
    }

    /// Applies a sighting; returns whether the peer or one of its addresses is new.
    fn observe(&mut self, mut s: Sighting, now: Instant) -> bool {
        s.key = self.resolve(&s.key);
        if let PeerKey::Addr(label) = &s.key
            && let Some(PeerKey::Node(id)) = self.node_with_any(&s.addresses)
        {
            self.aliases.insert(label.clone(), id.clone());
            s.key = PeerKey::Node(id);
        }
        if let PeerKey::Node(id) = &s.key {
            let absorbed = self.addr_peers_with(&s.addresses);
            let id = id.clone();
            self.merge_into(&id, absorbed, now);
        }
        let is_new = !self.peers.contains_key(&s.key);
        let peer = self
            .peers
            .entry(s.key.clone())
            .or_insert_with(|| Peer::new(now));
        peer.apply(s, now) || is_new
    }
}

/// The shared peer table. Clones are handles to the same table.
#[derive(Debug, Clone)]
pub struct PeerTable {
    inner: Arc<Mutex<Inner>>,
    changes: Arc<watch::Sender<u64>>,
}

impl PeerTable {
    /// An empty table forgetting non-static peers unseen for `expiry`.
    pub fn new(expiry: Duration) -> Self {
        let inner = Inner {
            peers: BTreeMap::new(),
            aliases: HashMap::new(),
            expiry,
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
            changes: Arc::new(watch::Sender::new(0)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the table consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a sighting now.
    pub fn observe(&self, sighting: Sighting) {
        self.observe_at(sighting, Instant::now());
    }

    /// Records a sighting at `now`.
    pub fn observe_at(&self, sighting: Sighting, now: Instant) {
        if self.lock().observe(sighting, now) {
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// The transport learned that `addr` belongs to `node_id` (after a handshake): every
    /// address-keyed peer listing `addr` is merged into that node's entry.
    pub fn identify(&self, addr: SocketAddr, node_id: &str) {
        let now = Instant::now();
        let mut inner = self.lock();
        let from = inner.addr_peers_with(&[addr]);
        inner.merge_into(node_id, from, now);
    }

    /// A successful exchange with the peer; `rtt` if measured. Counts as a [`Source::Quic`]
    /// sighting of the peer if it is in the table.
    pub fn record_success(&self, key: &PeerKey, rtt: Option<Duration>) {
        let now = Instant::now();
        let mut inner = self.lock();
        let key = inner.resolve(key);
        if let Some(peer) = inner.peers.get_mut(&key) {
            peer.consecutive_errors = 0;
            peer.rtt = rtt.or(peer.rtt);
            peer.sources.insert(Source::Quic, now);
            peer.last_seen = now;
        }
    }

    /// A failed contact (resolution, connect, protocol error) with the peer, if in the table.
    pub fn record_failure(&self, key: &PeerKey, error: impl Display) {
        let mut inner = self.lock();
        let key = inner.resolve(key);
        if let Some(peer) = inner.peers.get_mut(&key) {
            peer.consecutive_errors = peer.consecutive_errors.saturating_add(1);
            peer.last_error = Some(error.to_string());
        }
    }

    /// `source` no longer reports the peer (mDNS goodbye); the peer goes when no source is left.
    pub fn remove_source(&self, key: &PeerKey, source: Source) {
        let mut inner = self.lock();
        let key = inner.resolve(key);
        let now_empty = inner.peers.get_mut(&key).is_some_and(|p| {
            p.sources.remove(&source);
            p.sources.is_empty()
        });
        if now_empty {
            inner.peers.remove(&key);
        }
    }

    /// Forgets stale sources, addresses and peers as of `now`; returns how many peers went.
    pub fn expire_at(&self, now: Instant) -> usize {
        let mut inner = self.lock();
        let expiry = inner.expiry;
        let before = inner.peers.len();
        let Inner { peers, aliases, .. } = &mut *inner;
        peers.retain(|_, p| p.expire(now, expiry));
        aliases.retain(|_, id| peers.contains_key(&PeerKey::Node(id.clone())));
        before - peers.len()
    }

    /// One row per peer, sorted by key.
    pub fn snapshot(&self) -> Vec<PeerRow> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        self.lock()
            .peers
            .iter()
            .map(|(k, p)| p.row(k, now, wall))
            .collect()
    }

    /// The row of one peer (address labels resolve through aliases).
    pub fn get(&self, key: &PeerKey) -> Option<PeerRow> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let inner = self.lock();
        let key = inner.resolve(key);
        inner.peers.get(&key).map(|p| p.row(&key, now, wall))
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.lock().peers.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A receiver whose value changes whenever a new peer or a new address appears.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// Prometheus text exposition of peer rows: peer count per source and per-peer health gauges.
pub fn prometheus_text(rows: &[PeerRow]) -> String {
    let mut by_source: BTreeMap<Source, usize> = BTreeMap::new();
    rows.iter()
        .flat_map(|r| &r.sources)
        .for_each(|s| *by_source.entry(*s).or_default() += 1);
    let mut out = String::new();
    gauge_header(&mut out, "meshlite_peers", "Known peers.");
    let _ = writeln!(out, "meshlite_peers {}", rows.len());
    gauge_header(
        &mut out,
        "meshlite_peers_by_source",
        "Known peers by discovery source.",
    );
    for (source, n) in by_source {
        let _ = writeln!(out, "meshlite_peers_by_source{{source=\"{source}\"}} {n}");
    }
    per_peer(
        &mut out,
        rows,
        "meshlite_peer_rtt_seconds",
        "Latest RTT.",
        |r| r.rtt_ms.map(|ms| ms / 1000.0),
    );
    per_peer(
        &mut out,
        rows,
        "meshlite_peer_consecutive_errors",
        "Failures since success.",
        |r| Some(f64::from(r.consecutive_errors)),
    );
    per_peer(
        &mut out,
        rows,
        "meshlite_peer_last_seen_age_seconds",
        "Since last sighting.",
        |r| Some(r.last_seen_ago_ms as f64 / 1000.0),
    );
    out
}

fn gauge_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

fn per_peer(
    out: &mut String,
    rows: &[PeerRow],
    name: &str,
    help: &str,
    value: impl Fn(&PeerRow) -> Option<f64>,
) {
    gauge_header(out, name, help);
    for row in rows {
        if let Some(v) = value(row) {
            let _ = writeln!(out, "{name}{{peer=\"{}\"}} {v}", escape_label(&row.key));
        }
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const EXPIRY: Duration = Duration::from_secs(60);

    #[test]
    fn sources_accumulate_on_one_node_entry() {
        let t = PeerTable::new(EXPIRY);
        t.observe(Sighting::node(Source::Mdns, "aa").with_addresses([addr("10.0.0.2:7400")]));
        t.observe(
            Sighting::node(Source::Nats, "aa")
                .with_addresses([addr("192.168.1.2:7400")])
                .with_collections(vec!["jobs".into()])
                .with_version("0.1.0"),
        );
        let rows = t.snapshot();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.node_id.as_deref(), Some("aa"));
        assert_eq!(row.sources, vec![Source::Mdns, Source::Nats]);
        assert_eq!(
            row.addresses,
            vec![addr("10.0.0.2:7400"), addr("192.168.1.2:7400")]
        );
        assert_eq!(row.collections, vec!["jobs".to_owned()]);
        assert_eq!(row.version.as_deref(), Some("0.1.0"));
    }

    #[test]
    fn non_static_peers_expire_static_ones_stay() {
        let t = PeerTable::new(EXPIRY);
        let t0 = Instant::now();
        t.observe_at(
            Sighting::node(Source::Mdns, "aa").with_addresses([addr("10.0.0.2:1")]),
            t0,
        );
        t.observe_at(
            Sighting::addr(Source::Static, "pi:7400").with_addresses([addr("10.0.0.3:7400")]),
            t0,
        );
        assert_eq!(t.expire_at(t0 + EXPIRY), 0, "not yet stale");
        assert_eq!(t.expire_at(t0 + EXPIRY + Duration::from_secs(1)), 1);
        let rows = t.snapshot();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].key, "addr:pi:7400");
        assert_eq!(
            rows[0].addresses,
            vec![addr("10.0.0.3:7400")],
            "pinned address kept"
        );
    }

    #[test]
    fn stale_source_goes_but_fresh_source_keeps_the_peer() {
        let t = PeerTable::new(EXPIRY);
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(50);
        t.observe_at(
            Sighting::node(Source::Mdns, "aa").with_addresses([addr("10.0.0.2:1")]),
            t0,
        );
        t.observe_at(
            Sighting::node(Source::Nats, "aa").with_addresses([addr("10.0.0.9:1")]),
            later,
        );
        t.expire_at(t0 + Duration::from_secs(100));
        let row = t.get(&PeerKey::Node("aa".into())).unwrap();
        assert_eq!(row.sources, vec![Source::Nats]);
        assert_eq!(
            row.addresses,
            vec![addr("10.0.0.9:1")],
            "stale address dropped"
        );
    }

    #[test]
    fn static_entry_merges_into_node_when_identified() {
        let t = PeerTable::new(EXPIRY);
        let a = addr("10.0.0.3:7400");
        t.observe(Sighting::addr(Source::Static, "pi:7400").with_addresses([a]));
        t.record_failure(&PeerKey::Addr("pi:7400".into()), "connection refused");
        t.identify(a, "bb");
        let row = t
            .get(&PeerKey::Addr("pi:7400".into()))
            .expect("alias resolves");
        assert_eq!(row.node_id.as_deref(), Some("bb"));
        assert_eq!(row.last_error.as_deref(), Some("connection refused"));
        // Re-resolution by label lands on the merged entry and keeps the address pinned.
        t.observe(Sighting::addr(Source::Static, "pi:7400").with_addresses([a]));
        assert_eq!(t.len(), 1);
        assert_eq!(t.expire_at(Instant::now() + EXPIRY * 10), 0);
        assert_eq!(t.snapshot()[0].addresses, vec![a]);
    }

    #[test]
    fn sighting_with_id_absorbs_address_keyed_entry_and_vice_versa() {
        let t = PeerTable::new(EXPIRY);
        let a = addr("100.64.0.7:7400");
        t.observe(Sighting::addr(Source::Tailscale, "100.64.0.7:7400").with_addresses([a]));
        t.observe(Sighting::node(Source::Nats, "cc").with_addresses([a]));
        assert_eq!(t.len(), 1);
        let row = &t.snapshot()[0];
        assert_eq!(row.sources, vec![Source::Tailscale, Source::Nats]);
        // A later address-only sighting of a known address lands on the node too.
        t.observe(Sighting::addr(Source::Tailscale, "other").with_addresses([a]));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn health_is_recorded_and_reset() {
        let t = PeerTable::new(EXPIRY);
        let key = PeerKey::Node("aa".into());
        t.observe(Sighting::node(Source::Mdns, "aa"));
        t.record_failure(&key, "timeout");
        t.record_failure(&key, "refused");
        let row = t.get(&key).unwrap();
        assert_eq!(
            (row.consecutive_errors, row.last_error.as_deref()),
            (2, Some("refused"))
        );
        t.record_success(&key, Some(Duration::from_millis(3)));
        let row = t.get(&key).unwrap();
        assert_eq!(row.consecutive_errors, 0);
        assert_eq!(row.rtt_ms, Some(3.0));
        assert!(row.sources.contains(&Source::Quic));
        // Unknown peers are not created by health reports.
        t.record_failure(&PeerKey::Node("zz".into()), "x");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn removing_last_source_forgets_peer() {
        let t = PeerTable::new(EXPIRY);
        t.observe(Sighting::node(Source::Mdns, "aa"));
        t.remove_source(&PeerKey::Node("aa".into()), Source::Mdns);
        assert!(t.is_empty());
    }

    #[test]
    fn changes_signal_new_peers_and_addresses_only() {
        let t = PeerTable::new(EXPIRY);
        let mut rx = t.changes();
        let s = Sighting::node(Source::Mdns, "aa").with_addresses([addr("10.0.0.2:1")]);
        t.observe(s.clone());
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        t.observe(s);
        assert!(!rx.has_changed().unwrap(), "a repeat sighting is not news");
        t.observe(Sighting::node(Source::Mdns, "aa").with_addresses([addr("10.0.0.3:1")]));
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn rows_serialize_as_json_lines_and_metrics() {
        let t = PeerTable::new(EXPIRY);
        t.observe(Sighting::node(Source::Mdns, "a\"b").with_name("pi5"));
        t.record_success(
            &PeerKey::Node("a\"b".into()),
            Some(Duration::from_millis(5)),
        );
        let rows = t.snapshot();
        let line = serde_json::to_string(&rows[0]).unwrap();
        assert!(!line.contains('\n'));
        let back: PeerRow = serde_json::from_str(&line).unwrap();
        assert_eq!(back, rows[0]);
        assert!(line.contains(r#""sources":["mdns","quic"]"#), "{line}");
        let text = prometheus_text(&rows);
        assert!(text.contains("meshlite_peers 1\n"), "{text}");
        assert!(
            text.contains("meshlite_peers_by_source{source=\"mdns\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("meshlite_peer_rtt_seconds{peer=\"a\\\"b\"} 0.005\n"),
            "{text}"
        );
    }
}
