//! The `[discovery]` section of the node configuration.
//!
//! Every field has a documented default (`#[serde(default)]`), so an empty section is valid.
//! Durations are whole seconds in fields ending in `_secs`; accessors return [`Duration`]s.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The default mDNS port (RFC 6762).
pub const MDNS_PORT: u16 = 5353;

/// Which discovery sources run and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Announce this node and browse for peers with mDNS on the LAN. Default: `true`.
    pub mdns: bool,
    /// Interfaces mDNS uses, by name (`"eth0"`, `"lo"`) or by address (`"192.168.1.5"`).
    /// Empty means every interface. Default: `[]`.
    pub mdns_interfaces: Vec<String>,
    /// UDP port of mDNS. Default: `5353`. Only tests and isolated fleets change it; every node of
    /// a fleet must use the same port.
    pub mdns_port: u16,
    /// Peers given by hand, as `host:port` (a name or an IP address, and the peer's QUIC port).
    /// They never expire. Default: `[]`.
    pub static_peers: Vec<String>,
    /// How often static peers' names are resolved again, in seconds. Default: `60`.
    pub static_resolve_interval_secs: u64,
    /// Learn peers from `tailscale status --json`. When the CLI is absent the source is disabled
    /// with one info log. Default: `true`.
    pub tailscale: bool,
    /// The Tailscale CLI: a path, or a name looked up on `PATH`. Default: `"tailscale"`.
    pub tailscale_cli: PathBuf,
    /// How often `tailscale status --json` runs, in seconds. Default: `30`.
    pub tailscale_interval_secs: u64,
    /// QUIC port assumed for Tailscale peers. Default: unset, meaning this node's own QUIC port
    /// (a fleet normally uses one port everywhere).
    pub tailscale_port: Option<u16>,
    /// Peers not seen by any source for this many seconds are forgotten (static peers never).
    /// Default: `300`.
    pub peer_expiry_secs: u64,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            mdns: true,
            mdns_interfaces: Vec::new(),
            mdns_port: MDNS_PORT,
            static_peers: Vec::new(),
            static_resolve_interval_secs: 60,
            tailscale: true,
            tailscale_cli: PathBuf::from("tailscale"),
            tailscale_interval_secs: 30,
            tailscale_port: None,
            peer_expiry_secs: 300,
        }
    }
}

/// A `[discovery]` setting that is out of range; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryConfigError {
    /// A setting has an unusable value.
    #[error("discovery.{key}: {reason}")]
    Invalid {
        /// The key inside `[discovery]`.
        key: &'static str,
        /// Why the value is refused.
        reason: String,
    },
}

impl DiscoveryConfig {
    /// Checks every setting; the first bad one is reported by its key.
    pub fn validate(&self) -> Result<(), DiscoveryConfigError> {
        positive(
            "static_resolve_interval_secs",
            self.static_resolve_interval_secs,
        )?;
        positive("tailscale_interval_secs", self.tailscale_interval_secs)?;
        positive("peer_expiry_secs", self.peer_expiry_secs)?;
        if self.mdns_port == 0 {
            return Err(invalid("mdns_port", "must not be 0".into()));
        }
        if self.tailscale_port == Some(0) {
            return Err(invalid("tailscale_port", "must not be 0".into()));
        }
        if self.tailscale_cli.as_os_str().is_empty() {
            return Err(invalid("tailscale_cli", "must not be empty".into()));
        }
        if let Some(bad) = self.mdns_interfaces.iter().find(|i| i.trim().is_empty()) {
            return Err(invalid(
                "mdns_interfaces",
                format!("empty interface name {bad:?}"),
            ));
        }
        for peer in &self.static_peers {
            split_host_port(peer).map_err(|reason| invalid("static_peers", reason))?;
        }
        Ok(())
    }

    /// [`Self::static_resolve_interval_secs`] as a duration.
    pub fn static_resolve_interval(&self) -> Duration {
        Duration::from_secs(self.static_resolve_interval_secs)
    }

    /// [`Self::tailscale_interval_secs`] as a duration.
    pub fn tailscale_interval(&self) -> Duration {
        Duration::from_secs(self.tailscale_interval_secs)
    }

    /// [`Self::peer_expiry_secs`] as a duration.
    pub fn peer_expiry(&self) -> Duration {
        Duration::from_secs(self.peer_expiry_secs)
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6 literals); the error explains what is wrong.
pub fn split_host_port(entry: &str) -> Result<(&str, u16), String> {
    let (host, port) = entry
        .rsplit_once(':')
        .ok_or_else(|| format!("{entry:?} is not host:port"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{entry:?} has no valid host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host, p)),
        _ => Err(format!("{entry:?} has no valid port (1-65535)")),
    }
}

fn positive(key: &'static str, value: u64) -> Result<(), DiscoveryConfigError> {
    if value == 0 {
        Err(invalid(key, "must be at least 1".into()))
    } else {
        Ok(())
    }
}

fn invalid(key: &'static str, reason: String) -> DiscoveryConfigError {
    DiscoveryConfigError::Invalid { key, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_gives_documented_defaults() {
        let cfg: DiscoveryConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, DiscoveryConfig::default());
        assert!(cfg.mdns && cfg.tailscale);
        assert_eq!(cfg.mdns_port, 5353);
        assert_eq!(cfg.peer_expiry(), Duration::from_secs(300));
        cfg.validate().unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let cfg = DiscoveryConfig {
            static_peers: vec!["nohost".into()],
            ..Default::default()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.starts_with("discovery.static_peers:"), "{err}");
        let cfg = DiscoveryConfig {
            peer_expiry_secs: 0,
            ..Default::default()
        };
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .starts_with("discovery.peer_expiry_secs")
        );
        assert!(toml::from_str::<DiscoveryConfig>("mdnz = true").is_err());
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("pi5.lan:7400"), Ok(("pi5.lan", 7400)));
        assert_eq!(split_host_port("[fd00::1]:7400"), Ok(("fd00::1", 7400)));
        assert_eq!(split_host_port("10.0.0.2:1"), Ok(("10.0.0.2", 1)));
        assert!(split_host_port("10.0.0.2:0").is_err());
        assert!(split_host_port("10.0.0.2:99999").is_err());
        assert!(split_host_port(":7400").is_err());
    }
}
