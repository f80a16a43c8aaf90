//! Tailscale peers from `tailscale status --json`.
//!
//! Every `tailscale_interval_secs` the CLI is run (bounded by a timeout, killed if it hangs) and
//! its `Self`/`Peer` entries are parsed. Every online peer becomes a candidate, keyed by its first
//! Tailscale IP with the mesh port ([`PeerKey::Addr`]) until a QUIC handshake tells its node id; its
//! addresses are all its Tailscale IPs with that port. A device that is not running Meshlite simply
//! fails to connect and shows its error in `meshlite peers`.
//!
//! A missing CLI disables the source with one info log. A failing CLI (daemon stopped, logged
//! out) is logged when it starts and stops failing, not on every poll.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::table::{PeerTable, Sighting, Source};
use crate::tasks::Ticker;

/// Upper bound on one `tailscale status --json` run.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on the stderr excerpt kept in an error.
const STDERR_EXCERPT: usize = 512;

/// Error getting the Tailscale status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TailscaleError {
    /// The CLI does not exist at the configured path or on `PATH`.
    #[error("tailscale CLI {0:?} not found")]
    CliMissing(PathBuf),
    /// The CLI could not be started.
    #[error("starting {cli:?}: {source}")]
    Spawn {
        /// The configured CLI.
        cli: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The CLI exited unsuccessfully.
    #[error("tailscale status failed ({status}): {stderr}")]
    Failed {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The start of its stderr.
        stderr: String,
    },
    /// The CLI did not finish in time.
    #[error("tailscale status did not finish within {0:?}")]
    Timeout(Duration),
    /// The output is not the expected JSON.
    #[error("unreadable tailscale status: {0}")]
    Parse(#[from] serde_json::Error),
}

/// One device of the tailnet.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TailscaleDevice {
    /// The device's host name.
    #[serde(default)]
    pub host_name: String,
    /// Its MagicDNS name (`host.tailnet.ts.net.`).
    #[serde(rename = "DNSName", default)]
    pub dns_name: String,
    /// Its operating system (`linux`, `windows`, ...).
    #[serde(rename = "OS", default)]
    pub os: String,
    /// Whether the coordination server sees it online.
    #[serde(default)]
    pub online: bool,
    /// Its Tailscale addresses (IPv4 first).
    #[serde(rename = "TailscaleIPs", default, deserialize_with = "null_as_empty")]
    pub tailscale_ips: Vec<IpAddr>,
}

/// The parts of `tailscale status --json` discovery uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TailscaleStatus {
    /// `Running`, `Stopped`, `NeedsLogin`, ...
    #[serde(default)]
    pub backend_state: String,
    /// This device.
    #[serde(rename = "Self", default)]
    pub self_device: Option<TailscaleDevice>,
    /// The other devices, by node public key (`null` when there are none).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub peer: BTreeMap<String, TailscaleDevice>,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl TailscaleStatus {
    /// Parses the CLI's JSON output.
    pub fn parse(json: &[u8]) -> Result<Self, TailscaleError> {
        Ok(serde_json::from_slice(json)?)
    }

    /// A sighting per online peer with at least one address, QUIC port `port`. Not this device.
    pub fn sightings(&self, port: u16) -> Vec<Sighting> {
        if self.backend_state != "Running" {
            return Vec::new();
        }
        self.peer
            .values()
            .filter(|d| d.online)
            .filter_map(|d| d.sighting(port))
            .collect()
    }
}

impl TailscaleDevice {
    fn sighting(&self, port: u16) -> Option<Sighting> {
        let first = *self.tailscale_ips.first()?;
        let addrs = self
            .tailscale_ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, port));
        let label = SocketAddr::new(first, port).to_string();
        Some(
            Sighting::addr(Source::Tailscale, label)
                .with_addresses(addrs)
                .with_name(&self.host_name),
        )
    }
}

/// Runs `<cli> status --json` and parses its output.
pub async fn status(cli: &Path) -> Result<TailscaleStatus, TailscaleError> {
    let child = tokio::process::Command::new(cli)
        .args(["status", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => TailscaleError::CliMissing(cli.to_owned()),
            _ => TailscaleError::Spawn {
                cli: cli.to_owned(),
                source,
            },
        })?;
    let output = tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| TailscaleError::Timeout(CLI_TIMEOUT))?
        .map_err(|source| TailscaleError::Spawn {
            cli: cli.to_owned(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr = stderr.trim().chars().take(STDERR_EXCERPT).collect();
        return Err(TailscaleError::Failed {
            status: output.status,
            stderr,
        });
    }
    TailscaleStatus::parse(&output.stdout)
}

/// The Tailscale discovery source.
#[derive(Debug, Clone)]
pub struct TailscaleSource {
    /// The CLI, a path or a name on `PATH`.
    pub cli: PathBuf,
    /// Poll interval.
    pub interval: Duration,
    /// QUIC port assumed for every device.
    pub port: u16,
}

impl TailscaleSource {
    /// Polls the CLI until `cancel`; returns at once (after an info log) when the CLI is absent.
    pub async fn run(
        self,
        table: PeerTable,
        cancel: CancellationToken,
    ) -> Result<(), TailscaleError> {
        let mut ticker = Ticker::now_and_every(self.interval, cancel);
        let mut failing = false;
        while ticker.tick().await {
            let Some(polled) = ticker.run(self.poll_once(&table)).await else {
                break;
            };
            match polled {
                Ok(n) if failing => {
                    tracing::info!(peers = n, "tailscale status works again");
                    failing = false;
                }
                Ok(_) => {}
                Err(TailscaleError::CliMissing(cli)) => {
                    tracing::info!(
                        ?cli,
                        "tailscale CLI not found; Tailscale discovery disabled"
                    );
                    return Ok(());
                }
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "tailscale discovery failing");
                    failing = true;
                }
                Err(e) => tracing::debug!(error = %e, "tailscale discovery still failing"),
            }
        }
        Ok(())
    }

    /// Runs the CLI once and reports its peers; returns how many were reported.
    pub async fn poll_once(&self, table: &PeerTable) -> Result<usize, TailscaleError> {
        let sightings = status(&self.cli).await?.sightings(self.port);
        let n = sightings.len();
        sightings.into_iter().for_each(|s| table.observe(s));
        Ok(n)
    }
}
