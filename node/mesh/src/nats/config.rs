//! The `[nats]` section of the node configuration (`NATS_URL` sets `url`).
//!
//! NATS is optional: with no `url` nothing connects. Every field has a documented default
//! (`#[serde(default)]`); durations are whole seconds in fields ending in `_secs`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How this node uses NATS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated (`nats://host:4222`, `tls://...`); user and password or a
    /// token go in the URL (`nats://user:pass@host:4222`). Unset: NATS is off.
    /// Default: unset. Env: `NATS_URL`.
    pub url: Option<String>,
    /// Client name shown by the server. Default: unset, meaning `meshlite-<node name>`.
    pub client_name: Option<String>,
    /// Extra root CA (PEM) to verify a `tls://` server. Default: unset (system roots).
    pub tls_ca_file: Option<PathBuf>,
    /// Announce this node on `mesh.node.announce.v1` and learn peers from others' announcements.
    /// Default: `true`.
    pub announce: bool,
    /// Seconds between announcements. Default: `10`.
    pub announce_interval_secs: u64,
    /// Publish every committed change on `supabase.sync.<collection>.<op>`. Default: `true`.
    pub events: bool,
    /// Relay transactions through a JetStream stream so nodes with no QUIC path converge.
    /// Needs a server started with JetStream (`-js`). Default: `false`.
    pub relay: bool,
    /// JetStream stream of the relay. Default: `"MESHLITE_TXNS"`.
    pub stream: String,
    /// Relayed transactions older than this many seconds are dropped by the server; a node
    /// offline for longer catches up over QUIC instead. Default: `604800` (7 days).
    pub stream_max_age_secs: u64,
    /// Transactions fetched from the relay per batch (applied in one store transaction).
    /// Default: `256`.
    pub relay_batch: usize,
    /// Seconds to wait for the server's ack of a relayed transaction or a JetStream request.
    /// Default: `5`.
    pub request_timeout_secs: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: None,
            client_name: None,
            tls_ca_file: None,
            announce: true,
            announce_interval_secs: 10,
            events: true,
            relay: false,
            stream: "MESHLITE_TXNS".into(),
            stream_max_age_secs: 7 * 24 * 3600,
            relay_batch: 256,
            request_timeout_secs: 5,
        }
    }
}

/// Largest accepted [`NatsConfig::relay_batch`].
pub const MAX_RELAY_BATCH: usize = 10_000;

/// A `[nats]` setting that is out of range; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NatsConfigError {
    /// A setting has an unusable value.
    #[error("nats.{key}: {reason}")]
    Invalid {
        /// The key inside `[nats]`.
        key: &'static str,
        /// Why the value is refused.
        reason: String,
    },
}

impl NatsConfig {
    /// Checks every setting; the first bad one is reported by its key.
    pub fn validate(&self) -> Result<(), NatsConfigError> {
        if let Some(url) = &self.url {
            for server in url.split(',') {
                async_nats::ServerAddr::from_str(server.trim())
                    .map_err(|e| invalid("url", format!("{server:?}: {e}")))?;
            }
        }
        positive("announce_interval_secs", self.announce_interval_secs)?;
        positive("stream_max_age_secs", self.stream_max_age_secs)?;
        positive("request_timeout_secs", self.request_timeout_secs)?;
        if !(1..=MAX_RELAY_BATCH).contains(&self.relay_batch) {
            return Err(invalid(
                "relay_batch",
                format!("must be 1..={MAX_RELAY_BATCH}"),
            ));
        }
        if !is_name_token(&self.stream) {
            return Err(invalid(
                "stream",
                "letters, digits, '-' and '_' only".into(),
            ));
        }
        Ok(())
    }

    /// Whether NATS is configured at all.
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }

    /// [`Self::announce_interval_secs`] as a duration.
    pub fn announce_interval(&self) -> Duration {
        Duration::from_secs(self.announce_interval_secs)
    }

    /// [`Self::stream_max_age_secs`] as a duration.
    pub fn stream_max_age(&self) -> Duration {
        Duration::from_secs(self.stream_max_age_secs)
    }

    /// [`Self::request_timeout_secs`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

/// A JetStream name or subject token we generate from ids: non-empty, `[A-Za-z0-9_-]`.
pub fn is_name_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn positive(key: &'static str, value: u64) -> Result<(), NatsConfigError> {
    if value == 0 {
        Err(invalid(key, "must be at least 1".into()))
    } else {
        Ok(())
    }
}

fn invalid(key: &'static str, reason: String) -> NatsConfigError {
    NatsConfigError::Invalid { key, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_is_off_with_documented_defaults() {
        let cfg: NatsConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, NatsConfig::default());
        assert!(!cfg.enabled() && cfg.announce && cfg.events && !cfg.relay);
        assert_eq!(cfg.stream, "MESHLITE_TXNS");
        cfg.validate().unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                NatsConfig {
                    url: Some("nats://h:notaport".into()),
                    ..Default::default()
                },
                "nats.url",
            ),
            (
                NatsConfig {
                    stream: "a.b".into(),
                    ..Default::default()
                },
                "nats.stream",
            ),
            (
                NatsConfig {
                    relay_batch: 0,
                    ..Default::default()
                },
                "nats.relay_batch",
            ),
            (
                NatsConfig {
                    announce_interval_secs: 0,
                    ..Default::default()
                },
                "nats.announce_interval_secs",
            ),
        ];
        for (cfg, key) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.starts_with(&format!("{key}:")), "{err}");
        }
        let ok = NatsConfig {
            url: Some("nats://127.0.0.1:4222, tls://n2:4222".into()),
            ..Default::default()
        };
        ok.validate().unwrap();
    }
}
