//! Static peers: `host:port` entries from `discovery.static_peers`.
//!
//! Each entry is a peer keyed by its text ([`PeerKey::Addr`]) until a handshake tells its node id.
//! Names are resolved with the system resolver at start and every `static_resolve_interval_secs`
//! so that DHCP or DNS changes are followed; a failed resolution is recorded as the peer's last
//! error and the previous addresses stay until the next success. Static peers never expire.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::table::{PeerKey, PeerTable, Sighting, Source};
use crate::tasks::Ticker;

/// Upper bound on one name resolution.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Error resolving one static entry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The resolver failed.
    #[error("resolving {entry}: {source}")]
    Lookup {
        /// The configured entry.
        entry: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The name resolved to no address.
    #[error("resolving {0}: no addresses")]
    NoAddresses(String),
    /// The resolver did not answer in time.
    #[error("resolving {0}: timed out")]
    Timeout(String),
}

/// Resolves `entry` (`host:port`) to its socket addresses, sorted and deduplicated.
pub async fn resolve(entry: &str) -> Result<Vec<SocketAddr>, ResolveError> {
    let lookup = tokio::net::lookup_host(entry);
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
        .await
        .map_err(|_| ResolveError::Timeout(entry.to_owned()))?
        .map_err(|source| ResolveError::Lookup {
            entry: entry.to_owned(),
            source,
        })?;
    let mut addrs: Vec<SocketAddr> = found.collect();
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(ResolveError::NoAddresses(entry.to_owned()));
    }
    Ok(addrs)
}

/// Resolves every entry once and reports it into `table`; failures become the peer's last error.
pub async fn resolve_all(entries: &[String], table: &PeerTable) {
    for entry in entries {
        match resolve(entry).await {
            Ok(addrs) => table.observe(Sighting::addr(Source::Static, entry).with_addresses(addrs)),
            Err(e) => {
                tracing::warn!(error = %e, "static peer not resolved");
                // Keep the entry visible in `meshlite peers` even before its first resolution.
                table.observe(Sighting::addr(Source::Static, entry));
                table.record_failure(&PeerKey::Addr(entry.clone()), &e);
            }
        }
    }
}

/// Resolves `entries` now and every `interval` until `cancel`.
pub async fn run(
    entries: Vec<String>,
    interval: Duration,
    table: PeerTable,
    cancel: CancellationToken,
) -> Result<(), Infallible> {
    let mut ticker = Ticker::now_and_every(interval, cancel);
    while ticker.tick().await {
        if ticker.run(resolve_all(&entries, &table)).await.is_none() {
            break;
        }
    }
    Ok(())
}
