//! The daemon's configuration: a TOML file, then environment overrides, then `validate()`.
//!
//! Every field has a default, so `meshlite run` needs no file at all. Precedence, lowest first:
//! built-in defaults, the `--config` file, environment variables ([`ENV_OVERRIDES`], which
//! `meshlite run --help` prints). The seeds' names are honoured:
//!
//! | env                     | key                        | default            |
//! |-------------------------|----------------------------|--------------------|
//! | `MESHLITE_DATA`         | `node.data`                | `./meshlite-data`  |
//! | `MESHLITE_NAME`         | `node.name`                | the host name      |
//! | `MESHLITE_FLEET_DIR`    | `node.fleet_dir`           | none (standalone)  |
//! | `MESHLITE_SCHEMA`       | `node.schema`              | none (schemaless)  |
//! | `MESHLITE_HTTP_LISTEN`  | `http.listen`              | `127.0.0.1:8100`   |
//! | `SUPABASE_MODE`         | `node.mode`                | `dual-write`       |
//! | `SYNC_TABLES`           | `sync.tables`              | empty = all        |
//! | `SYNC_INTERVAL_SECONDS` | `sync.interval_seconds`    | `10`               |
//! | `SYNC_BATCH_SIZE`       | `sync.batch_size`          | `500`              |
//! | `NATS_URL`              | `nats.url`                 | none (no NATS)     |
//! | `MESHLITE_LISTEN`       | `transport.listen`         | `0.0.0.0:6374`     |
//! | `MESHLITE_STATIC_PEERS` | `discovery.static_peers`   | empty              |
//! | `MESHLITE_MDNS`         | `discovery.mdns`           | `true`             |
//! | `MESHLITE_CENTRAL_REPLICAS` | `sync.central_replicas` | empty              |
//! | `MESHLITE_REGISTRY_TTL_SECONDS` | `registry.ttl_seconds` | `60`         |
//! | `JWT_SECRET`            | `auth.jwt_secret`          | none (auth off)    |
//! | `ANON_KEY`              | `auth.anon_key`            | none               |
//! | `SERVICE_ROLE_KEY`      | `auth.service_role_key`    | none               |
//!
//! Without `JWT_SECRET` the HTTP listener must stay on loopback: [`Config::validate`] refuses a
//! non-loopback `http.listen` then, because every request would be served as `service_role`
//! (see [`AuthSection`] and `crate::auth`).
//!
//! The `[transport]`, `[discovery]` and `[nats]` sections are documented field by field on
//! [`TransportConfig`], [`DiscoveryConfig`] and [`NatsConfig`]; `deploy/meshlite.example.toml`
//! lists every key with its default.
//!
//! Modes (`SUPABASE_MODE`): `standalone` — local store and HTTP API only, no peer port, no NATS;
//! `dual-write` — local primary plus mesh gossip, NATS and (through the mesh) the central bridge;
//! `integrated` — for a node this means "central first": it keeps its local store (reads stay
//! local and writes never block on the network) but gossips only with static peers (the central
//! bridge) and NATS, with LAN discovery (mDNS, Tailscale) off.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use meshlite_core::ids::ReplicaId;
use meshlite_mesh::discovery::DiscoveryConfig;
use meshlite_mesh::http::Limits;
use meshlite_mesh::nats::NatsConfig;
use meshlite_mesh::net::TransportConfig;

pub use meshlite_mesh::config::ConfigError;
use meshlite_mesh::config::{invalid, parse_env};

/// How this node takes part in the fleet (the seeds' `SUPABASE_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Local store only.
    Standalone,
    /// Local primary plus background sync to the mesh and central.
    DualWrite,
    /// Sync with static peers (central) and NATS only.
    Integrated,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "standalone" => Ok(Mode::Standalone),
            "dual-write" | "dual_write" => Ok(Mode::DualWrite),
            "integrated" => Ok(Mode::Integrated),
            other => Err(format!(
                "unknown mode {other:?}: expected standalone, dual-write or integrated"
            )),
        }
    }
}

/// `[node]`: identity and storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Data directory of the store.
    pub data: PathBuf,
    /// Human-readable node name (announcements, logs). Default: the host name.
    pub name: String,
    /// Directory with this node's fleet files (`meshlite fleet issue` output). Without it the node
    /// opens no peer port and stays standalone.
    pub fleet_dir: Option<PathBuf>,
    /// Schema file installed or upgraded at start.
    pub schema: Option<PathBuf>,
    /// Participation mode.
    pub mode: Mode,
    /// `synchronous=FULL` for SQLite: survive power loss, not only process crashes (slower).
    pub durable_fsync: bool,
    /// Loaded Automerge documents kept in memory (each costs ~7–17 KiB).
    pub doc_cache: usize,
    /// Period of the background compaction of document states (each pass rewrites up to
    /// `COMPACT_BATCH` (256) states with appended changes as one snapshot, most
    /// chunks first); 0 = never (the writer still compacts a state at its 64th change).
    pub compact_interval_seconds: u64,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            data: PathBuf::from("./meshlite-data"),
            name: default_node_name(),
            fleet_dir: None,
            schema: None,
            mode: Mode::DualWrite,
            durable_fsync: false,
            doc_cache: 1024,
            compact_interval_seconds: 300,
        }
    }
}

fn default_node_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "meshlite".to_owned())
}

/// `[sync]`: what and how often this node replicates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncSection {
    /// Collections this node replicates; empty means all. Remote transactions touching none of
    /// them are acknowledged but not kept, so a partial node is a leaf for other collections
    /// (it never relays them); its own writes to any collection still replicate.
    pub tables: Vec<String>,
    /// Anti-entropy period in seconds.
    pub interval_seconds: u64,
    /// Transactions per batch sent or applied at once.
    pub batch_size: usize,
    /// Peers pushed to at once on every new change.
    pub push_fanout: usize,
    /// Peers contacted in each anti-entropy round.
    pub anti_entropy_peers: usize,
    /// Small-fleet threshold: with at most this many peers known to discovery the node keeps
    /// a connection to every peer and pushes each change to all of them in one hop; above it,
    /// overlay mode (a bounded active view and broadcast trees). 0 = always overlay mode.
    pub direct_push_max_peers: usize,
    /// Overlay mode: connections kept (the active view).
    pub overlay_active: usize,
    /// Overlay mode: replacement candidates remembered (the passive view).
    pub overlay_passive: usize,
    /// Garbage-collect relayed history every this many seconds; 0 (default) = never. GC frees
    /// transactions every known peer acknowledged, so a node that joins *later* cannot get
    /// that history from this one (snapshot transfer is not implemented yet): enable it only
    /// on fleets whose membership is fixed, or where other nodes keep full history.
    pub gc_interval_seconds: u64,
    /// Replica ids (32 hex characters) of the central bridge(s): sync visibility reports
    /// whether they hold each record's latest change (`_synced_central`). A bridge logs its
    /// replica id at start-up (`replica=...`), and `meshlite status` lists it among the peers.
    pub central_replicas: Vec<ReplicaId>,
}

impl Default for SyncSection {
    fn default() -> Self {
        Self {
            tables: Vec::new(),
            interval_seconds: 10,
            batch_size: 500,
            push_fanout: 3,
            anti_entropy_peers: 2,
            direct_push_max_peers: 32,
            overlay_active: 5,
            overlay_passive: 30,
            gc_interval_seconds: 0,
            central_replicas: Vec::new(),
        }
    }
}

impl SyncSection {
    /// The anti-entropy period.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_seconds)
    }

    /// True when `collection` is replicated by this node.
    pub fn replicates(&self, collection: &str) -> bool {
        self.tables.is_empty() || self.tables.iter().any(|t| t == collection)
    }
}

/// `[http]`: the local HTTP listener (health, metrics, the local APIs) and its limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Listen address; keep it on loopback unless the API is authenticated.
    pub listen: SocketAddr,
    /// Connections served at once (default 256); further clients wait in the kernel's accept
    /// queue, holding no descriptor of the daemon, until one closes. Keep it well below the
    /// process's descriptor limit (`ulimit -n`, 1024 under systemd).
    pub max_connections: usize,
    /// A request's headers must arrive within this many ms (default 10000); the clock also runs
    /// while a keep-alive connection waits for its next request, so it is the keep-alive idle
    /// timeout too.
    pub header_timeout_ms: u64,
    /// A connection on which no byte moved either way for this many ms is closed (default
    /// 60000): a half-sent body, a client that stopped reading its response. The change
    /// stream's keep-alive comments are sent at a third of it, so an idle stream stays open.
    pub idle_timeout_ms: u64,
    /// Bytes of events queued for one `/v1/changes` subscriber (default 8 MiB); one that falls
    /// further behind gets a `lagged` event and its stream ends.
    pub changes_buffer_bytes: usize,
}

impl Default for HttpSection {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8100)),
            max_connections: limits.max_connections,
            header_timeout_ms: limits.header_timeout_ms,
            idle_timeout_ms: limits.idle_timeout_ms,
            changes_buffer_bytes: 8 << 20,
        }
    }
}

impl HttpSection {
    /// The listener's limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            header_timeout_ms: self.header_timeout_ms,
            idle_timeout_ms: self.idle_timeout_ms,
        }
    }

    /// The no-progress timeout of a connection.
    pub fn idle_timeout(&self) -> Duration {
        self.limits().idle_timeout()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.limits().validate()?;
        if self.changes_buffer_bytes < 64 << 10 {
            return Err(invalid(
                "http.changes_buffer_bytes",
                "must be at least 65536 (one large transaction must fit)",
            ));
        }
        Ok(())
    }
}

/// A secret read from the configuration: never printed (`Debug` and `--print-config` show
/// `<redacted>`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret's text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// `[auth]`: the Supabase-style keys that guard `/rest/v1` and the native API (`crate::auth`).
///
/// Without `jwt_secret` auth is off (the embedded default): the listener must be on loopback
/// and every request is `service_role`. With it, requests carry an `apikey` header and/or
/// `Authorization: Bearer <JWT>` signed with the secret (HS256); the token's `role` claim
/// (`anon`, `authenticated`, `service_role`) decides what it may do, per collection, as the
/// schema's `access` tables say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// HS256 secret shared with the apps' key generator (`JWT_SECRET`, at least 32 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<Secret>,
    /// The anon key apps present (`ANON_KEY`): a JWT signed with `jwt_secret` whose role is
    /// `anon` (checked at start-up), or an opaque key of at least 32 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anon_key: Option<Secret>,
    /// The service key (`SERVICE_ROLE_KEY`), as `anon_key` with role `service_role`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_role_key: Option<Secret>,
    /// Serve requests from 127.0.0.1 / ::1 that carry no key as `service_role` (default true,
    /// so local tools need no key). Turn it off on hosts where other local users or a local
    /// reverse proxy forwarding outside traffic must not get that role.
    pub trust_loopback: bool,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            anon_key: None,
            service_role_key: None,
            trust_loopback: true,
        }
    }
}

impl AuthSection {
    /// Refuses keys without a secret and a short secret.
    fn validate(&self) -> Result<(), ConfigError> {
        match &self.jwt_secret {
            Some(s) if s.expose().len() < crate::auth::MIN_SECRET_LEN => Err(invalid(
                "auth.jwt_secret",
                format!(
                    "JWT_SECRET has {} characters; use at least {} (e.g. `openssl rand -base64 48`)",
                    s.expose().len(),
                    crate::auth::MIN_SECRET_LEN
                ),
            )),
            None if self.anon_key.is_some() || self.service_role_key.is_some() => Err(invalid(
                "auth.jwt_secret",
                "ANON_KEY or SERVICE_ROLE_KEY is set but JWT_SECRET is not: keys are checked with the secret",
            )),
            _ => Ok(()),
        }
    }
}

/// `[registry]`: the service registry of seed 003 (`/api/services`) on the HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySection {
    /// A service whose last registration (its heartbeat) is older than this many seconds is
    /// reported with `health_status = "unhealthy"` (default 60; 1 to 86400). Services re-register
    /// to heartbeat, so pick a TTL a few times their period and above the fleet's clock skew.
    pub ttl_seconds: u64,
}

impl Default for RegistrySection {
    fn default() -> Self {
        Self { ttl_seconds: 60 }
    }
}

impl RegistrySection {
    /// The heartbeat TTL.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_seconds)
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[node]`
    pub node: NodeSection,
    /// `[sync]`
    pub sync: SyncSection,
    /// `[http]`
    pub http: HttpSection,
    /// `[transport]`: QUIC listener and limits (see [`TransportConfig`]).
    pub transport: TransportConfig,
    /// `[discovery]`: mDNS, static peers, Tailscale (see [`DiscoveryConfig`]).
    pub discovery: DiscoveryConfig,
    /// `[nats]`: announcements, change events, JetStream relay (see [`NatsConfig`]).
    pub nats: NatsConfig,
    /// `[auth]`: JWT secret and keys (see [`AuthSection`]).
    pub auth: AuthSection,
    /// `[registry]`
    pub registry: RegistrySection,
}

impl Config {
    /// Defaults, then the file (if any), then `env`, then validation.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        meshlite_mesh::config::from_toml_file(path)
    }

    /// Applies environment overrides ([`ENV_OVERRIDES`]; empty values are ignored).
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for o in ENV_OVERRIDES {
            if let Some(v) = env(o.name).filter(|v| !v.trim().is_empty()) {
                (o.apply)(self, o.name, v)?;
            }
        }
        Ok(())
    }

    /// Checks ranges and names; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node.name.trim().is_empty() {
            return Err(invalid("node.name", "must not be empty"));
        }
        if self.node.doc_cache == 0 {
            return Err(invalid("node.doc_cache", "must be at least 1"));
        }
        for t in &self.sync.tables {
            meshlite_core::schema::validate_name("collection", t)
                .map_err(|e| invalid("sync.tables", e.to_string()))?;
        }
        if !(1..=86_400).contains(&self.sync.interval_seconds) {
            return Err(invalid(
                "sync.interval_seconds",
                "must be between 1 and 86400",
            ));
        }
        if !(1..=100_000).contains(&self.sync.batch_size) {
            return Err(invalid("sync.batch_size", "must be between 1 and 100000"));
        }
        if self.sync.push_fanout > 64 || self.sync.anti_entropy_peers > 64 {
            return Err(invalid(
                "sync.push_fanout",
                "fanout and anti_entropy_peers must be at most 64",
            ));
        }
        if self.sync.direct_push_max_peers > 4096 {
            return Err(invalid(
                "sync.direct_push_max_peers",
                "must be at most 4096",
            ));
        }
        if !(1..=64).contains(&self.sync.overlay_active) {
            return Err(invalid("sync.overlay_active", "must be between 1 and 64"));
        }
        if !(1..=1024).contains(&self.sync.overlay_passive) {
            return Err(invalid(
                "sync.overlay_passive",
                "must be between 1 and 1024",
            ));
        }
        if !(1..=86_400).contains(&self.registry.ttl_seconds) {
            return Err(invalid(
                "registry.ttl_seconds",
                "must be between 1 and 86400",
            ));
        }
        self.http.validate()?;
        self.auth.validate()?;
        let listen = self.http.listen;
        if !listen.ip().is_loopback() && self.auth.jwt_secret.is_none() {
            return Err(invalid(
                "http.listen",
                format!(
                    "{listen} is not a loopback address and JWT_SECRET (auth.jwt_secret) is not set: \
                     anyone who can reach it could read and write every collection. Set JWT_SECRET \
                     (at least 32 characters; `meshlite keys --secret ...` prints matching anon and \
                     service_role keys) or listen on 127.0.0.1"
                ),
            ));
        }
        self.transport
            .validate()
            .map_err(|e| invalid("transport", e.to_string()))?;
        self.discovery
            .validate()
            .map_err(|e| invalid("discovery", e.to_string()))?;
        self.nats
            .validate()
            .map_err(|e| invalid("nats", e.to_string()))?;
        Ok(())
    }

    /// True when this node takes part in the mesh (has fleet files and is not standalone).
    pub fn mesh_enabled(&self) -> bool {
        self.node.mode != Mode::Standalone && self.node.fleet_dir.is_some()
    }

    /// True when NATS is configured and the mode allows it.
    pub fn nats_enabled(&self) -> bool {
        self.node.mode != Mode::Standalone && self.nats.url.is_some()
    }

    /// The discovery settings after the mode is applied (`integrated`: no LAN discovery).
    pub fn effective_discovery(&self) -> DiscoveryConfig {
        let mut d = self.discovery.clone();
        if self.node.mode == Mode::Integrated {
            d.mdns = false;
            d.tailscale = false;
        }
        d
    }
}

/// One environment variable that overrides a configuration key.
#[derive(Clone, Copy)]
pub struct EnvOverride {
    /// The variable.
    pub name: &'static str,
    /// The key it sets.
    pub key: &'static str,
    /// Sets the key from the (non-empty) value; the error names the variable.
    apply: fn(&mut Config, &str, String) -> Result<(), ConfigError>,
}

impl std::fmt::Debug for EnvOverride {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvOverride")
            .field("name", &self.name)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Every environment override of `meshlite run`, in the order they apply. The one list:
/// [`Config::apply_env`] applies it and `meshlite run --help` prints it ([`env_help`]).
pub static ENV_OVERRIDES: &[EnvOverride] = &[
    EnvOverride {
        name: "MESHLITE_DATA",
        key: "node.data",
        apply: |c, _, v| {
            c.node.data = v.into();
            Ok(())
        },
    },
    EnvOverride {
        name: "MESHLITE_NAME",
        key: "node.name",
        apply: |c, _, v| {
            c.node.name = v;
            Ok(())
        },
    },
    EnvOverride {
        name: "MESHLITE_FLEET_DIR",
        key: "node.fleet_dir",
        apply: |c, _, v| {
            c.node.fleet_dir = Some(v.into());
            Ok(())
        },
    },
    EnvOverride {
        name: "MESHLITE_SCHEMA",
        key: "node.schema",
        apply: |c, _, v| {
            c.node.schema = Some(v.into());
            Ok(())
        },
    },
    EnvOverride {
        name: "SUPABASE_MODE",
        key: "node.mode",
        apply: |c, n, v| {
            c.node.mode = v.trim().parse().map_err(|e| invalid(n, e))?;
            Ok(())
        },
    },
    EnvOverride {
        name: "MESHLITE_HTTP_LISTEN",
        key: "http.listen",
        apply: |c, n, v| {
            c.http.listen = parse_env(n, &v)?;
            Ok(())
        },
    },
    EnvOverride {
        name: "SYNC_TABLES",
        key: "sync.tables",
        apply: |c, _, v| {
            c.sync.tables = comma_list(&v);
            Ok(())
        },
    },
    EnvOverride {
        name: "SYNC_INTERVAL_SECONDS",
        key: "sync.interval_seconds",
        apply: |c, n, v| {
            c.sync.interval_seconds = parse_env(n, &v)?;
            Ok(())
        },
    },
    EnvOverride {
        name: "SYNC_BATCH_SIZE",
        key: "sync.batch_size",
        apply: |c, n, v| {
            c.sync.batch_size = parse_env(n, &v)?;
            Ok(())
        },
    },
    EnvOverride {
        name: "NATS_URL",
        key: "nats.url",
        apply: |c, _, v| {
            c.nats.url = Some(v);
            Ok(())
        },
    },
    EnvOverride {
        name: "MESHLITE_LISTEN",
        key: "transport.listen",
        apply: |c, n, v| {
            c.transport.listen = parse_env(n, &v)?;
            Ok(())
        },
    },
    EnvOverride {
        name: "MESHLITE_STATIC_PEERS",
        key: "discovery.static_peers",
        apply: |c, _, v| {
            c.discovery.static_peers = comma_list(&v);
            Ok(())
        },
    },
    EnvOverride {
        name: "MESHLITE_MDNS",
        key: "discovery.mdns",
        apply: |c, n, v| {
            c.discovery.mdns = parse_env(n, &v)?;
            Ok(())
        },
    },
    EnvOverride {
        name: "JWT_SECRET",
        key: "auth.jwt_secret",
        apply: |c, _, v| {
            c.auth.jwt_secret = Some(Secret(v));
            Ok(())
        },
    },
    EnvOverride {
        name: "ANON_KEY",
        key: "auth.anon_key",
        apply: |c, _, v| {
            c.auth.anon_key = Some(Secret(v.trim().to_owned()));
            Ok(())
        },
    },
    EnvOverride {
        name: "SERVICE_ROLE_KEY",
        key: "auth.service_role_key",
        apply: |c, _, v| {
            c.auth.service_role_key = Some(Secret(v.trim().to_owned()));
            Ok(())
        },
    },
    EnvOverride {
        name: "MESHLITE_CENTRAL_REPLICAS",
        key: "sync.central_replicas",
        apply: |c, n, v| {
            c.sync.central_replicas = comma_list(&v)
                .iter()
                .map(|s| parse_env(n, s))
                .collect::<Result<_, _>>()?;
            Ok(())
        },
    },
    EnvOverride {
        name: "MESHLITE_REGISTRY_TTL_SECONDS",
        key: "registry.ttl_seconds",
        apply: |c, n, v| {
            c.registry.ttl_seconds = parse_env(n, &v)?;
            Ok(())
        },
    },
];

/// Variables read outside the configuration (by the command line itself).
pub const PROCESS_ENV: &[(&str, &str)] = &[
    ("MESHLITE_CONFIG", "the --config file"),
    (
        "MESHLITE_LOG",
        "log filter, e.g. `debug` or `info,meshlite_mesh=debug` (default `info`)",
    ),
    ("MESHLITE_LOG_FORMAT", "--log-format: `human` or `json`"),
];

/// The environment section of `meshlite run --help`: every variable and what it sets.
pub fn env_help() -> String {
    let mut out =
        String::from("Environment (overrides the --config file; empty values are ignored):\n");
    for o in ENV_OVERRIDES {
        out.push_str(&format!("  {:<24} {}\n", o.name, o.key));
    }
    for (name, what) in PROCESS_ENV {
        out.push_str(&format!("  {name:<24} {what}\n"));
    }
    out
}

fn comma_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.http.listen.port(), 8100);
        assert!(c.http.listen.ip().is_loopback());
        assert!(!c.mesh_enabled());
        assert!(c.sync.replicates("anything"));
    }

    #[test]
    fn env_overrides_and_seed_names() {
        let c = Config::load(
            None,
            env(&[
                ("SUPABASE_MODE", "standalone"),
                ("SYNC_TABLES", "jobs, tasks"),
                ("SYNC_INTERVAL_SECONDS", "30"),
            ]),
        )
        .unwrap();
        assert_eq!(c.node.mode, Mode::Standalone);
        assert_eq!(c.sync.tables, ["jobs", "tasks"]);
        assert!(c.sync.replicates("jobs") && !c.sync.replicates("agents"));
        assert_eq!(c.sync.interval_seconds, 30);
    }

    #[test]
    fn shipped_example_is_the_defaults() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/meshlite.example.toml"
        ));
        let example = Config::load(Some(path), env(&[])).unwrap();
        let defaults = Config::load(None, env(&[])).unwrap();
        let render = |c: &Config| {
            let mut c = c.clone();
            c.node.name = String::new();
            toml::to_string(&c).unwrap()
        };
        assert_eq!(render(&example), render(&defaults));
    }

    #[test]
    fn a_public_listener_needs_a_jwt_secret() {
        let public = [("MESHLITE_HTTP_LISTEN", "0.0.0.0:8100")];
        let e = Config::load(None, env(&public)).unwrap_err().to_string();
        assert!(e.contains("http.listen") && e.contains("JWT_SECRET"), "{e}");
        let secret = "s".repeat(32);
        let with = [public[0], ("JWT_SECRET", secret.as_str())];
        let c = Config::load(None, env(&with)).unwrap();
        assert_eq!(
            c.auth.jwt_secret.as_ref().map(Secret::expose),
            Some(secret.as_str())
        );
        let printed = toml::to_string(&c).unwrap();
        assert!(
            !printed.contains(&secret) && printed.contains("<redacted>"),
            "{printed}"
        );
        assert!(!format!("{c:?}").contains(&secret));
        let short = [public[0], ("JWT_SECRET", "short")];
        let e = Config::load(None, env(&short)).unwrap_err().to_string();
        assert!(e.contains("at least 32"), "{e}");
        let e = Config::load(None, env(&[("ANON_KEY", "k")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("JWT_SECRET is not"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::load(None, env(&[("SYNC_INTERVAL_SECONDS", "soon")])).unwrap_err();
        assert!(e.to_string().contains("SYNC_INTERVAL_SECONDS"), "{e}");
        let e = Config::load(None, env(&[("SUPABASE_MODE", "hybrid")])).unwrap_err();
        assert!(e.to_string().contains("SUPABASE_MODE"), "{e}");
        let e = Config::load(None, env(&[("MESHLITE_LISTEN", "nowhere")])).unwrap_err();
        assert!(e.to_string().contains("MESHLITE_LISTEN"), "{e}");
        let e = Config::load(None, env(&[("SYNC_TABLES", "jobs,bad-name")])).unwrap_err();
        assert!(e.to_string().contains("sync.tables"), "{e}");
        let e = Config::load(None, env(&[("MESHLITE_CENTRAL_REPLICAS", "abc")])).unwrap_err();
        assert!(e.to_string().contains("MESHLITE_CENTRAL_REPLICAS"), "{e}");
        let e = Config::load(None, env(&[("MESHLITE_REGISTRY_TTL_SECONDS", "0")])).unwrap_err();
        assert!(e.to_string().contains("registry.ttl_seconds"), "{e}");
        let e = Config::load(None, env(&[("SYNC_TABLES", "jobs,bad-name")])).unwrap_err();
        assert!(e.to_string().contains("sync.tables"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[sync]\ninterval_secondz = 3\n").unwrap();
        let e = Config::load(Some(&p), env(&[])).unwrap_err();
        assert!(e.to_string().contains("interval_secondz"), "{e}");
        std::fs::write(&p, "[sync]\nbatch_size = 0\n").unwrap();
        let e = Config::load(Some(&p), env(&[])).unwrap_err();
        assert!(e.to_string().contains("sync.batch_size"), "{e}");
    }
}
