//! The dialer: keeps a QUIC connection to every peer the discovery sources report.
//!
//! It wakes when the peer table changes, when a connection is lost, when a dial finishes (its
//! slot is free), when a backoff expires, and on a slow tick; it dials each candidate address of
//! every peer that is not connected yet (bounded concurrency), and backs off per address on
//! failure (doubling up to [`MAX_DIAL_BACKOFF`]). Failures are written to the peer table so
//! `meshlite peers` shows why a peer is unreachable.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::discovery::table::{PeerKey, PeerRow, PeerTable};
use crate::fleet::NodeId;
use crate::net::events::NetEvent;
use crate::net::handle::{ConnectError, NetHandle};
use tokio::sync::broadcast::error::RecvError;

/// Longest wait before an address that failed is dialed again.
pub const MAX_DIAL_BACKOFF: Duration = Duration::from_secs(60);
/// How long an address that just connected is not redialed.
const SUCCESS_HOLD: Duration = Duration::from_secs(1);
/// First wait after a failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// How often the dialer looks again even without table changes.
const TICK: Duration = Duration::from_secs(5);
/// Dials in flight at once.
const MAX_INFLIGHT_DIALS: usize = 8;

/// When an address may be dialed again, and its retry delays.
#[derive(Debug, Clone, Copy)]
struct DialState {
    until: Instant,
    backoff: Backoff,
}

impl DialState {
    fn new() -> Self {
        Self {
            until: Instant::now(),
            backoff: Backoff::new(FIRST_BACKOFF, MAX_DIAL_BACKOFF),
        }
    }
}

/// The dialer actor.
#[derive(Debug)]
pub struct Dialer {
    /// The transport.
    pub net: NetHandle,
    /// Where candidates come from.
    pub table: PeerTable,
    /// Stops the actor.
    pub cancel: CancellationToken,
}

type DialResult = (SocketAddr, PeerKey, Result<NodeId, ConnectError>);

impl Dialer {
    /// Runs until cancelled.
    pub async fn run(self) {
        let mut changes = self.table.changes();
        let mut net_events = self.net.subscribe();
        let mut backoff: HashMap<SocketAddr, DialState> = HashMap::new();
        let mut inflight: JoinSet<DialResult> = JoinSet::new();
        let mut dialing: HashSet<SocketAddr> = HashSet::new();
        let mut tick = tokio::time::interval(TICK);
        loop {
            let next_retry = next_backoff_expiry(&backoff, Instant::now());
            let retry = async move {
                match next_retry {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                Some(done) = inflight.join_next() => {
                    if let Ok((addr, key, result)) = done {
                        dialing.remove(&addr);
                        self.on_dialed(addr, key, result, &mut backoff);
                    }
                    // A freed slot dials the next candidate right away.
                    self.dial_missing(&mut inflight, &mut dialing, &backoff).await;
                }
                changed = changes.changed() => {
                    if changed.is_err() { break; }
                    self.dial_missing(&mut inflight, &mut dialing, &backoff).await;
                }
                ev = net_events.recv() => {
                    // A lost connection is redialed at once (a restarted peer comes back fast).
                    if matches!(ev, Ok(NetEvent::PeerDown { .. }) | Err(RecvError::Lagged(_))) {
                        self.dial_missing(&mut inflight, &mut dialing, &backoff).await;
                    } else if matches!(ev, Err(RecvError::Closed)) {
                        break;
                    }
                }
                _ = retry => self.dial_missing(&mut inflight, &mut dialing, &backoff).await,
                _ = tick.tick() => self.dial_missing(&mut inflight, &mut dialing, &backoff).await,
            }
        }
        inflight.abort_all();
        while inflight.join_next().await.is_some() {}
    }

    async fn dial_missing(
        &self,
        inflight: &mut JoinSet<DialResult>,
        dialing: &mut HashSet<SocketAddr>,
        backoff: &HashMap<SocketAddr, DialState>,
    ) {
        let connected: HashSet<String> = self
            .net
            .peers()
            .await
            .into_iter()
            .map(|p| p.node_id.to_string())
            .collect();
        let me = self.net.node_id().to_string();
        let now = Instant::now();
        for row in self.table.snapshot() {
            if !wants_dial(&row, &me, &connected) {
                continue;
            }
            let expected = row
                .node_id
                .as_deref()
                .and_then(|id| id.parse::<NodeId>().ok());
            for addr in row.addresses.iter().copied() {
                let waiting = backoff.get(&addr).is_some_and(|b| b.until > now);
                if waiting || dialing.contains(&addr) || inflight.len() >= MAX_INFLIGHT_DIALS {
                    continue;
                }
                dialing.insert(addr);
                let (net, key) = (self.net.clone(), row_key(&row));
                inflight.spawn(async move { (addr, key, net.connect(addr, expected).await) });
                break; // one address per peer at a time
            }
        }
    }

    fn on_dialed(
        &self,
        addr: SocketAddr,
        key: PeerKey,
        result: Result<NodeId, ConnectError>,
        backoff: &mut HashMap<SocketAddr, DialState>,
    ) {
        match result {
            Ok(node) => {
                // Hold the address briefly so a connection that drops at once is not redialed
                // in a tight loop; a failure later starts the backoff from the first step.
                let state = backoff.entry(addr).or_insert_with(DialState::new);
                state.backoff.reset();
                state.until = Instant::now() + SUCCESS_HOLD;
                self.table.identify(addr, &node.to_string());
                tracing::info!(%addr, %node, "connected to peer");
            }
            Err(e) => {
                let state = backoff.entry(addr).or_insert_with(DialState::new);
                let wait = state.backoff.fail();
                state.until = Instant::now() + wait;
                tracing::debug!(%addr, error = %e, retry_in = ?wait, "dial failed");
                self.table.record_failure(&key, e);
            }
        }
    }
}

/// The earliest backoff that has not expired yet: when a waiting address may be dialed again.
fn next_backoff_expiry(backoff: &HashMap<SocketAddr, DialState>, now: Instant) -> Option<Instant> {
    backoff.values().map(|b| b.until).filter(|&u| u > now).min()
}

/// True for a peer that is not us and not connected yet.
fn wants_dial(row: &PeerRow, me: &str, connected: &HashSet<String>) -> bool {
    match row.node_id.as_deref() {
        Some(id) => id != me && !connected.contains(id),
        None => true,
    }
}

fn row_key(row: &PeerRow) -> PeerKey {
    match &row.node_id {
        Some(id) => PeerKey::Node(id.clone()),
        None => PeerKey::Addr(row.key.trim_start_matches("addr:").to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(node_id: Option<&str>) -> PeerRow {
        PeerRow {
            key: node_id.map_or("addr:10.0.0.1:1".into(), str::to_owned),
            node_id: node_id.map(str::to_owned),
            name: None,
            addresses: vec![],
            sources: vec![],
            last_seen_unix_ms: 0,
            last_seen_ago_ms: 0,
            rtt_ms: None,
            consecutive_errors: 0,
            last_error: None,
            collections: vec![],
            version: None,
        }
    }

    #[test]
    fn dials_unknown_and_unconnected_peers_only() {
        let connected: HashSet<String> = ["bb".to_owned()].into();
        assert!(wants_dial(&row(None), "aa", &connected));
        assert!(wants_dial(&row(Some("cc")), "aa", &connected));
        assert!(
            !wants_dial(&row(Some("bb")), "aa", &connected),
            "already connected"
        );
        assert!(!wants_dial(&row(Some("aa")), "aa", &connected), "ourselves");
        assert!(matches!(row_key(&row(None)), PeerKey::Addr(a) if a == "10.0.0.1:1"));
    }
}
