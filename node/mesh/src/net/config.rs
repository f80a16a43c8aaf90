//! Transport configuration: listen address, QUIC timers, and the limits that bound what one peer
//! can cost us.
//!
//! Every field has a default (the `DEFAULT_*` constants); the TOML keys are the field names, with
//! durations in milliseconds (`*_ms`). The node configuration embeds this struct.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use meshlite_core::protocol::limits::MAX_FRAME_BYTES;
use serde::{Deserialize, Serialize};

use crate::fleet::NodeId;

/// Default UDP port of the QUIC listener: 6374 ("MESH" on a phone keypad). Chosen to avoid
/// 7946 (Docker Swarm / Serf) and 7400–7500 (DDS / ROS 2), both common on this fleet's devices.
pub const DEFAULT_PORT: u16 = 6374;
/// Default listen address: every interface, [`DEFAULT_PORT`].
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DEFAULT_PORT));
/// Default QUIC keep-alive interval; well under common NAT UDP timeouts (30 s).
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(5);
/// Default idle timeout: a peer silent this long (keep-alives included) is dropped.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on dialing a peer (handshake included).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default failure guard for one anti-entropy round.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(120);
/// Default concurrent bidirectional streams a peer may open (each carries one sync session).
pub const DEFAULT_MAX_BIDI_STREAMS: u32 = 8;
/// Default largest frame accepted on any stream: the protocol's own limit.
pub const DEFAULT_MAX_FRAME_BYTES: usize = MAX_FRAME_BYTES;
/// Smallest allowed `max_frame_bytes`: one maximal transaction must fit.
pub const MIN_MAX_FRAME_BYTES: usize = meshlite_core::change::MAX_TXN_BYTES + 64 * 1024;
/// Default pushes queued per peer before new ones are dropped (anti-entropy heals the loss).
pub const DEFAULT_PER_PEER_QUEUE: usize = 256;
/// Default most simultaneous peer connections (inbound and outbound).
pub const DEFAULT_MAX_PEERS: usize = 64;
/// Default inbound handshakes one source IP may start at once.
pub const DEFAULT_HANDSHAKE_BURST_PER_IP: u32 = 16;
/// Default inbound handshakes per second one source IP may start after its burst.
pub const DEFAULT_HANDSHAKE_RATE_PER_IP: u32 = 2;

/// Why a [`TransportConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportConfigError {
    /// A field is out of its range.
    #[error("transport.{key}: {reason}")]
    OutOfRange {
        /// The configuration key.
        key: &'static str,
        /// The accepted range.
        reason: String,
    },
}

/// QUIC transport settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// UDP address to listen on. Default `0.0.0.0:6374`.
    pub listen: SocketAddr,
    /// QUIC keep-alive interval. Default 5 s.
    #[serde(rename = "keepalive_ms", with = "millis")]
    pub keepalive: Duration,
    /// Idle timeout. Default 30 s; must exceed `keepalive`.
    #[serde(rename = "idle_timeout_ms", with = "millis")]
    pub idle_timeout: Duration,
    /// Bound on dialing a peer. Default 10 s.
    #[serde(rename = "connect_timeout_ms", with = "millis")]
    pub connect_timeout: Duration,
    /// Failure guard for one anti-entropy round. Default 120 s.
    #[serde(rename = "sync_timeout_ms", with = "millis")]
    pub sync_timeout: Duration,
    /// Concurrent sync streams a peer may open. Default 8 (1–64).
    pub max_concurrent_bidi_streams: u32,
    /// Largest frame accepted; a peer sending more has its stream closed. Default 4 MiB (the
    /// protocol's limit), at least 1 MiB + 64 KiB.
    pub max_frame_bytes: usize,
    /// Pushes queued per peer before new ones are dropped. Default 256 (1–65536).
    pub per_peer_queue: usize,
    /// Most simultaneous peer connections. Default 64 (1–4096).
    pub max_peers: usize,
    /// Revoked node ids, refused at the handshake in both directions. Default empty.
    pub deny_nodes: Vec<NodeId>,
    /// Inbound handshakes one source IP may start at once; more are ignored (see
    /// [`super::admission`]). Default 16 (1–4096).
    pub handshake_burst_per_ip: u32,
    /// Inbound handshakes per second one source IP may start after its burst. Default 2
    /// (1–10000).
    pub handshake_rate_per_ip: u32,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            keepalive: DEFAULT_KEEPALIVE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            sync_timeout: DEFAULT_SYNC_TIMEOUT,
            max_concurrent_bidi_streams: DEFAULT_MAX_BIDI_STREAMS,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            per_peer_queue: DEFAULT_PER_PEER_QUEUE,
            max_peers: DEFAULT_MAX_PEERS,
            deny_nodes: Vec::new(),
            handshake_burst_per_ip: DEFAULT_HANDSHAKE_BURST_PER_IP,
            handshake_rate_per_ip: DEFAULT_HANDSHAKE_RATE_PER_IP,
        }
    }
}

impl TransportConfig {
    /// Defaults, listening on an ephemeral loopback port (tests, benches).
    pub fn loopback() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ..Self::default()
        }
    }

    /// The per-source handshake limit.
    pub fn handshake_limit(&self) -> super::admission::HandshakeLimit {
        super::admission::HandshakeLimit {
            burst: self.handshake_burst_per_ip,
            per_second: self.handshake_rate_per_ip,
        }
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), TransportConfigError> {
        let bad = |key, reason: String| Err(TransportConfigError::OutOfRange { key, reason });
        if self.keepalive.is_zero() || self.idle_timeout <= self.keepalive {
            return bad("idle_timeout_ms", "must exceed keepalive_ms > 0".into());
        }
        if self.connect_timeout.is_zero() || self.sync_timeout.is_zero() {
            return bad("connect_timeout_ms", "timeouts must be positive".into());
        }
        if !(1..=64).contains(&self.max_concurrent_bidi_streams) {
            return bad("max_concurrent_bidi_streams", "must be in 1..=64".into());
        }
        if !(MIN_MAX_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&self.max_frame_bytes) {
            let range = format!("must be in {MIN_MAX_FRAME_BYTES}..={MAX_FRAME_BYTES}");
            return bad("max_frame_bytes", range);
        }
        if !(1..=65_536).contains(&self.per_peer_queue) {
            return bad("per_peer_queue", "must be in 1..=65536".into());
        }
        if !(1..=4096).contains(&self.max_peers) {
            return bad("max_peers", "must be in 1..=4096".into());
        }
        if !(1..=4096).contains(&self.handshake_burst_per_ip) {
            return bad("handshake_burst_per_ip", "must be in 1..=4096".into());
        }
        if !(1..=10_000).contains(&self.handshake_rate_per_ip) {
            return bad("handshake_rate_per_ip", "must be in 1..=10000".into());
        }
        Ok(())
    }
}

/// Serde of a [`Duration`] as integer milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_toml() {
        let cfg = TransportConfig::default();
        assert_eq!(cfg.validate(), Ok(()));
        let text = toml::to_string(&cfg).expect("serialize");
        assert!(text.contains("keepalive_ms = 5000"), "{text}");
        assert_eq!(
            toml::from_str::<TransportConfig>(&text).expect("parse"),
            cfg
        );
    }

    #[test]
    fn partial_toml_takes_defaults_and_bad_values_are_named() {
        let cfg: TransportConfig =
            toml::from_str("listen = \"127.0.0.1:9000\"\nmax_frame_bytes = 10\n").expect("parse");
        assert_eq!(cfg.keepalive, DEFAULT_KEEPALIVE);
        let err = cfg.validate().expect_err("too small");
        assert!(
            err.to_string().contains("transport.max_frame_bytes"),
            "{err}"
        );
        assert!(toml::from_str::<TransportConfig>("nope = 1").is_err());
    }
}
