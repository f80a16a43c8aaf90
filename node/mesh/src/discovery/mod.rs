//! Peer discovery: mDNS, static peers and Tailscale, all feeding one [`PeerTable`].
//!
//! # How the parts fit
//!
//! ```text
//!  mdns.rs ───────┐
//!  static_peers.rs┤  Sighting    ┌───────────┐  snapshot()  → `meshlite peers`, /metrics
//!  tailscale.rs ──┼────────────► │ PeerTable │  changes()   → the transport dials new peers
//!  nats::announce ┘              └───────────┘  record_success/failure ← the transport
//! ```
//!
//! - [`table`]: the peer table and its rows; the only state shared between sources.
//! - [`mdns`]: announces `_meshlite._udp.local.` with node id, cluster and QUIC port in TXT records,
//!   and browses for other nodes of the same cluster.
//! - [`static_peers`]: `host:port` entries from the configuration, re-resolved periodically.
//! - [`tailscale`]: devices of the tailnet from `tailscale status --json`.
//! - The sources run in one [`TaskGroup`] (one cancellation token, bounded shutdown).
//! - mDNS is built with the crate feature `mdns` (the node has it; the bridge does not).
//!
//! [`Discovery::start`] runs every enabled source plus the expiry sweep as tasks of one group.
//! Sources never fail the node: resolution and CLI errors are logged and recorded in the table.

pub mod config;
#[cfg(feature = "mdns")]
pub mod mdns;
pub mod static_peers;
pub mod table;
pub mod tailscale;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::tasks::{ShutdownReport, TaskExit, TaskGroup, Ticker};

pub use config::{DiscoveryConfig, DiscoveryConfigError};
pub use table::{PeerKey, PeerRow, PeerTable, Sighting, Source};

/// What this node tells others about itself (mDNS TXT records, NATS announcements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    /// Node id, hex (derived from the node key by the fleet module).
    pub node_id: String,
    /// Human name (the certificate's node name, or the host name).
    pub name: String,
    /// Cluster id; peers of other clusters are ignored.
    pub cluster: String,
    /// UDP port of the QUIC endpoint.
    pub quic_port: u16,
    /// Meshlite version.
    pub version: String,
    /// Addresses to advertise; empty means every non-loopback interface address.
    pub addresses: Vec<SocketAddr>,
    /// Collections this node replicates (empty: all).
    pub collections: Vec<String>,
    /// Free-form capability tags (seed 003's service registry vocabulary).
    pub capabilities: Vec<String>,
}

impl LocalNode {
    /// The advertised addresses: the configured ones, else every up, non-loopback interface
    /// address with the QUIC port.
    pub fn advertised_addresses(&self) -> Vec<SocketAddr> {
        if !self.addresses.is_empty() {
            return self.addresses.clone();
        }
        let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
            .map(|ifs| {
                ifs.into_iter()
                    .filter(|i| !i.is_loopback())
                    .map(|i| i.ip())
                    .collect()
            })
            .unwrap_or_default();
        ips.retain(|ip| dialable(*ip));
        ips.sort();
        ips.dedup();
        ips.into_iter()
            .map(|ip| SocketAddr::new(ip, self.quic_port))
            .collect()
    }
}

/// Whether an address can be dialed as it stands: not unspecified, not multicast, and not an
/// IPv6 link-local address (useless without its interface scope, which a `SocketAddr` drops).
pub fn dialable(ip: IpAddr) -> bool {
    let v6_link_local = matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
    !ip.is_unspecified() && !ip.is_multicast() && !v6_link_local
}

/// Error starting discovery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartDiscoveryError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] DiscoveryConfigError),
    /// The mDNS responder could not start.
    #[cfg(feature = "mdns")]
    #[error(transparent)]
    Mdns(#[from] mdns::MdnsError),
    /// `mdns = true` in a binary built without mDNS.
    #[error("discovery.mdns = true, but this binary is built without mDNS discovery")]
    MdnsUnavailable,
}

/// The running discovery sources.
#[derive(Debug)]
pub struct Discovery {
    tasks: TaskGroup,
}

/// How often the expiry sweep runs at most.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

impl Discovery {
    /// Starts every enabled source, feeding `table`, as tasks cancelled with `cancel`.
    pub fn start(
        cfg: &DiscoveryConfig,
        local: &LocalNode,
        table: &PeerTable,
        cancel: &CancellationToken,
    ) -> Result<Self, StartDiscoveryError> {
        cfg.validate()?;
        let mut tasks = TaskGroup::new("discovery", cancel);
        if cfg.mdns {
            start_mdns(cfg, local, table, &mut tasks)?;
        }
        if !cfg.static_peers.is_empty() {
            let run = static_peers::run(
                cfg.static_peers.clone(),
                cfg.static_resolve_interval(),
                table.clone(),
                tasks.token(),
            );
            tasks.spawn("static", run);
        }
        if cfg.tailscale {
            let source = tailscale::TailscaleSource {
                cli: cfg.tailscale_cli.clone(),
                interval: cfg.tailscale_interval(),
                port: cfg.tailscale_port.unwrap_or(local.quic_port),
            };
            tasks.spawn("tailscale", source.run(table.clone(), tasks.token()));
        }
        let sweep = (cfg.peer_expiry() / 4).clamp(Duration::from_secs(1), MAX_SWEEP_INTERVAL);
        tasks.spawn("expiry", expire_loop(table.clone(), sweep, tasks.token()));
        Ok(Self { tasks })
    }

    /// Waits for the next source task to end (normally only at shutdown). Cancel-safe.
    pub async fn next_exit(&mut self) -> Option<TaskExit> {
        self.tasks.next_exit().await
    }

    /// Stops every source, waiting at most `timeout`.
    pub async fn shutdown(self, timeout: Duration) -> ShutdownReport {
        self.tasks.shutdown(timeout).await
    }
}

#[cfg(feature = "mdns")]
fn start_mdns(
    cfg: &DiscoveryConfig,
    local: &LocalNode,
    table: &PeerTable,
    tasks: &mut TaskGroup,
) -> Result<(), StartDiscoveryError> {
    let responder = mdns::MdnsResponder::start(cfg, local)?;
    tasks.spawn("mdns", responder.run(table.clone(), tasks.token()));
    Ok(())
}

#[cfg(not(feature = "mdns"))]
fn start_mdns(
    _: &DiscoveryConfig,
    _: &LocalNode,
    _: &PeerTable,
    _: &mut TaskGroup,
) -> Result<(), StartDiscoveryError> {
    Err(StartDiscoveryError::MdnsUnavailable)
}

async fn expire_loop(
    table: PeerTable,
    every: Duration,
    cancel: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let mut ticker = Ticker::now_and_every(every, cancel);
    while ticker.tick().await {
        let gone = table.expire_at(std::time::Instant::now());
        if gone > 0 {
            tracing::info!(gone, "forgot peers not seen recently");
        }
    }
    Ok(())
}
