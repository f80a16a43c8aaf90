//! The bridge's configuration: a TOML file, then environment overrides, then `validate()` — the
//! same precedence and error style as the node's (`node/src/config.rs`).
//!
//! Every field has a default except the Postgres URL, which `run` and `migrate` require.
//! `deploy/meshlite-bridge.example.toml` lists every key with its default.
//!
//! | env                     | key                       | default                   |
//! |-------------------------|---------------------------|---------------------------|
//! | `DATABASE_URL`          | `postgres.url`            | none (required to run)    |
//! | `MESHLITE_STATE_SCHEMA` | `postgres.state_schema`   | `meshlite`                |
//! | `MESHLITE_TABLE_SCHEMA` | `postgres.table_schema`   | `public`                  |
//! | `MESHLITE_NAME`         | `bridge.name`             | the host name             |
//! | `MESHLITE_FLEET_DIR`    | `bridge.fleet_dir`        | none                      |
//! | `MESHLITE_SCHEMA`       | `bridge.schema`           | none (no tables)          |
//! | `MESHLITE_HTTP_LISTEN`  | `http.listen`             | `127.0.0.1:8200`          |
//! | `SYNC_TABLES`           | `sync.tables`             | empty = every collection  |
//! | `SYNC_INTERVAL_SECONDS` | `sync.interval_seconds`   | `10`                      |
//! | `SYNC_BATCH_SIZE`       | `sync.batch_size`         | `500`                     |
//! | `SYNC_DOC_CACHE_MIB`    | `sync.doc_cache_mib`      | `0` (off)                 |
//! | `NATS_URL`              | `nats.url`                | none (no NATS)            |
//! | `MESHLITE_LISTEN`       | `transport.listen`        | `0.0.0.0:6374`            |
//! | `MESHLITE_STATIC_PEERS` | `discovery.static_peers`  | empty                     |
//!
//! `[transport]`, `[discovery]` and `[nats]` are the mesh's own sections, the same keys as the node's
//! (`deploy/meshlite.example.toml`); the bridge is built without mDNS, so `discovery.mdns`
//! defaults to false here, and `nats.relay` to true. Without `bridge.fleet_dir` the bridge opens
//! no peer port.
//!
//! `DATABASE_URL` accepts `postgres://` and `postgresql://` (the form Supabase prints) and libpq's
//! `sslmode` (`disable`, `prefer` (default), `require`, `verify-ca`, `verify-full`) and
//! `sslrootcert=<pem file>`; TLS is rustls (see [`crate::pg::tls`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use meshlite_mesh::discovery::DiscoveryConfig;
use meshlite_mesh::http::Limits;
use meshlite_mesh::nats::NatsConfig;
use meshlite_mesh::net::TransportConfig;

use crate::ddl::Grants;
use crate::migrations::Schemas;
use crate::pg::{Ident, PgTarget};

pub use meshlite_mesh::config::ConfigError;
use meshlite_mesh::config::{invalid, parse_env};

/// `[postgres]`: the central database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresSection {
    /// Connection URL (`DATABASE_URL`).
    pub url: Option<String>,
    /// Schema of the bridge's own state (replica state, outbox, conflicts, nodes).
    pub state_schema: String,
    /// Schema of the materialized tables, `sync_status` and `sync_health`.
    pub table_schema: String,
    /// Seconds to wait for a connection.
    pub connect_timeout_seconds: u64,
    /// Roles granted `SELECT` on the tables when they exist (Supabase's API roles).
    pub read_roles: Vec<String>,
    /// Roles granted `ALL` on the tables when they exist.
    pub all_roles: Vec<String>,
    /// Publication the tables join when it exists (Supabase Realtime); empty = none.
    pub publication: String,
}

impl Default for PostgresSection {
    fn default() -> Self {
        Self {
            url: None,
            state_schema: "meshlite".into(),
            table_schema: "public".into(),
            connect_timeout_seconds: 10,
            read_roles: vec!["anon".into(), "authenticated".into()],
            all_roles: vec!["service_role".into()],
            publication: "supabase_realtime".into(),
        }
    }
}

/// `[bridge]`: identity and inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeSection {
    /// This bridge's name (logs, `sync_status.service_name`, its row in `<state>.bridges`).
    pub name: String,
    /// Directory with the bridge's fleet files (`meshlite fleet issue` output).
    pub fleet_dir: Option<PathBuf>,
    /// Schema file whose collections become tables.
    pub schema: Option<PathBuf>,
    /// Where the NATS relay remembers the last of the bridge's own transactions it published.
    /// Disposable: without it the bridge republishes them, which is harmless (deduplicated
    /// and idempotent).
    pub relay_cursor: PathBuf,
}

impl Default for BridgeSection {
    fn default() -> Self {
        Self {
            name: default_name(),
            fleet_dir: None,
            schema: None,
            relay_cursor: PathBuf::from("meshlite-bridge-relay.cursor"),
        }
    }
}

fn default_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "meshlite-bridge".to_owned())
}

/// `[sync]`: what and how often the bridge materializes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncSection {
    /// Collections materialized; empty means every collection of the schema.
    pub tables: Vec<String>,
    /// Anti-entropy period in seconds.
    pub interval_seconds: u64,
    /// Most transactions applied in one Postgres transaction (a peer's frame can carry
    /// thousands; larger inputs commit in several batches); also the outbox batch.
    pub batch_size: usize,
    /// Estimated memory (MiB) of merged documents kept across batches so records that come back
    /// are not loaded again (`replica::cache`; 0, the default, turns it off: on the bridge
    /// bench's small documents it saved nothing, see benches/README.md).
    pub doc_cache_mib: usize,
}

impl SyncSection {
    /// [`SyncSection::doc_cache_mib`] in bytes.
    pub fn doc_cache_bytes(&self) -> usize {
        self.doc_cache_mib.saturating_mul(1 << 20)
    }
}

impl Default for SyncSection {
    fn default() -> Self {
        Self {
            tables: Vec::new(),
            interval_seconds: 10,
            batch_size: 500,
            doc_cache_mib: 0,
        }
    }
}

/// The bridge's NATS defaults: the mesh's, with the JetStream relay on (the bridge is the
/// fleet's durable consumer of the relay stream when NATS is configured).
fn default_nats() -> NatsConfig {
    NatsConfig {
        relay: true,
        ..NatsConfig::default()
    }
}

/// `[http]`: health and metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Listen address for `/healthz` and `/metrics`.
    pub listen: SocketAddr,
    /// Connections served at once (default 256); further clients wait in the kernel's accept
    /// queue, holding no descriptor of the bridge, until one closes.
    pub max_connections: usize,
    /// A request's headers must arrive within this many ms (default 10000); also the keep-alive
    /// idle timeout.
    pub header_timeout_ms: u64,
    /// A connection on which no byte moved either way for this many ms is closed (default
    /// 60000).
    pub idle_timeout_ms: u64,
}

impl Default for HttpSection {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8200)),
            max_connections: limits.max_connections,
            header_timeout_ms: limits.header_timeout_ms,
            idle_timeout_ms: limits.idle_timeout_ms,
        }
    }
}

impl HttpSection {
    /// The listener's limits (the node's keys and ranges: the mesh's shared listener).
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            header_timeout_ms: self.header_timeout_ms,
            idle_timeout_ms: self.idle_timeout_ms,
        }
    }
}

/// The bridge's discovery defaults: the mesh's, without mDNS (not built in).
fn default_discovery() -> DiscoveryConfig {
    DiscoveryConfig {
        mdns: false,
        ..DiscoveryConfig::default()
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[postgres]`
    pub postgres: PostgresSection,
    /// `[bridge]`
    pub bridge: BridgeSection,
    /// `[sync]`
    pub sync: SyncSection,
    /// `[nats]`: the mesh's NATS section (announcements, change events, the relay).
    #[serde(default = "default_nats")]
    pub nats: NatsConfig,
    /// `[http]`
    pub http: HttpSection,
    /// `[transport]`: the QUIC listener and limits (the mesh's `TransportConfig`).
    pub transport: TransportConfig,
    /// `[discovery]`: static peers and Tailscale (the mesh's `DiscoveryConfig`).
    #[serde(default = "default_discovery")]
    pub discovery: DiscoveryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            postgres: PostgresSection::default(),
            bridge: BridgeSection::default(),
            sync: SyncSection::default(),
            nats: default_nats(),
            http: HttpSection::default(),
            transport: TransportConfig::default(),
            discovery: default_discovery(),
        }
    }
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

    /// Applies environment overrides (see the module doc for the names).
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("DATABASE_URL") {
            PgTarget::parse(v.trim(), Duration::from_secs(1))
                .map_err(|e| invalid("DATABASE_URL", e.to_string()))?;
            self.postgres.url = Some(v.trim().to_owned());
        }
        if let Some(v) = get("MESHLITE_STATE_SCHEMA") {
            Ident::new(v.trim(), "MESHLITE_STATE_SCHEMA")
                .map_err(|e| invalid("MESHLITE_STATE_SCHEMA", e.to_string()))?;
            self.postgres.state_schema = v.trim().to_owned();
        }
        if let Some(v) = get("MESHLITE_TABLE_SCHEMA") {
            Ident::new(v.trim(), "MESHLITE_TABLE_SCHEMA")
                .map_err(|e| invalid("MESHLITE_TABLE_SCHEMA", e.to_string()))?;
            self.postgres.table_schema = v.trim().to_owned();
        }
        if let Some(v) = get("MESHLITE_NAME") {
            self.bridge.name = v;
        }
        if let Some(v) = get("MESHLITE_FLEET_DIR") {
            self.bridge.fleet_dir = Some(v.into());
        }
        if let Some(v) = get("MESHLITE_SCHEMA") {
            self.bridge.schema = Some(v.into());
        }
        if let Some(v) = get("MESHLITE_HTTP_LISTEN") {
            self.http.listen = parse_env("MESHLITE_HTTP_LISTEN", &v)?;
        }
        if let Some(v) = get("SYNC_TABLES") {
            let tables: Vec<String> = v
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            for t in &tables {
                Ident::new(t, "SYNC_TABLES").map_err(|e| invalid("SYNC_TABLES", e.to_string()))?;
            }
            self.sync.tables = tables;
        }
        if let Some(v) = get("SYNC_INTERVAL_SECONDS") {
            self.sync.interval_seconds = parse_env("SYNC_INTERVAL_SECONDS", &v)?;
        }
        if let Some(v) = get("SYNC_BATCH_SIZE") {
            self.sync.batch_size = parse_env("SYNC_BATCH_SIZE", &v)?;
        }
        if let Some(v) = get("SYNC_DOC_CACHE_MIB") {
            self.sync.doc_cache_mib = parse_env("SYNC_DOC_CACHE_MIB", &v)?;
        }
        if let Some(v) = get("NATS_URL") {
            self.nats.url = Some(v);
        }
        if let Some(v) = get("MESHLITE_LISTEN") {
            self.transport.listen = parse_env("MESHLITE_LISTEN", &v)?;
        }
        if let Some(v) = get("MESHLITE_STATIC_PEERS") {
            self.discovery.static_peers = v
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
        Ok(())
    }

    /// Checks ranges and names; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.postgres.url {
            self.pg_target_of(url)?;
        }
        self.schemas()?;
        self.grants()?;
        if !(1..=300).contains(&self.postgres.connect_timeout_seconds) {
            return Err(invalid(
                "postgres.connect_timeout_seconds",
                "must be between 1 and 300",
            ));
        }
        if self.bridge.name.trim().is_empty() {
            return Err(invalid("bridge.name", "must not be empty"));
        }
        for t in &self.sync.tables {
            Ident::new(t, "sync.tables").map_err(|e| invalid("sync.tables", e.to_string()))?;
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
        if self.sync.doc_cache_mib > 1 << 20 {
            return Err(invalid("sync.doc_cache_mib", "must be at most 1048576"));
        }
        self.http.limits().validate()?;
        self.transport
            .validate()
            .map_err(|e| invalid("transport", e.to_string()))?;
        self.discovery
            .validate()
            .map_err(|e| invalid("discovery", e.to_string()))?;
        if self.discovery.mdns {
            return Err(invalid(
                "discovery.mdns",
                "the bridge is built without mDNS; use discovery.static_peers or Tailscale",
            ));
        }
        if let Some(url) = &self.nats.url
            && !(url.starts_with("nats://") || url.starts_with("tls://"))
        {
            return Err(invalid(
                "nats.url",
                format!("{url:?}: expected nats://host:port"),
            ));
        }
        self.nats
            .validate()
            .map_err(|e| invalid("nats", e.to_string()))?;
        Ok(())
    }

    /// The validated state and table schema names.
    pub fn schemas(&self) -> Result<Schemas, ConfigError> {
        let id = |key: &str, v: &str| Ident::new(v, key).map_err(|e| invalid(key, e.to_string()));
        let schemas = Schemas {
            state: id("postgres.state_schema", &self.postgres.state_schema)?,
            tables: id("postgres.table_schema", &self.postgres.table_schema)?,
        };
        if schemas.state == schemas.tables {
            return Err(invalid(
                "postgres.state_schema",
                "must differ from postgres.table_schema (the state is not for API clients)",
            ));
        }
        Ok(schemas)
    }

    /// The validated grants.
    pub fn grants(&self) -> Result<Grants, ConfigError> {
        let ids = |key: &str, names: &[String]| {
            names
                .iter()
                .map(|n| Ident::new(n, key).map_err(|e| invalid(key, e.to_string())))
                .collect::<Result<Vec<_>, _>>()
        };
        let publication = match self.postgres.publication.trim() {
            "" => None,
            p => Some(
                Ident::new(p, "postgres.publication")
                    .map_err(|e| invalid("postgres.publication", e.to_string()))?,
            ),
        };
        Ok(Grants {
            read: ids("postgres.read_roles", &self.postgres.read_roles)?,
            all: ids("postgres.all_roles", &self.postgres.all_roles)?,
            publication,
        })
    }

    /// The parsed database URL; an error names the key when it is missing.
    pub fn pg_target(&self) -> Result<PgTarget, ConfigError> {
        match &self.postgres.url {
            Some(url) => self.pg_target_of(url),
            None => Err(invalid(
                "postgres.url",
                "no database: set DATABASE_URL or [postgres] url (postgres://user:pass@host:5432/db)",
            )),
        }
    }

    fn pg_target_of(&self, url: &str) -> Result<PgTarget, ConfigError> {
        PgTarget::parse(
            url,
            Duration::from_secs(self.postgres.connect_timeout_seconds),
        )
        .map_err(|e| invalid("postgres.url", e.to_string()))
    }

    /// The configuration as TOML with the database password hidden (`--print-config`).
    pub fn to_toml_redacted(&self) -> Result<String, toml::ser::Error> {
        let mut shown = self.clone();
        shown.postgres.url = shown.postgres.url.as_deref().map(crate::pg::redact);
        toml::to_string(&shown)
    }
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
    fn defaults_need_no_file_but_run_needs_a_url() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:8200".parse().unwrap());
        assert_eq!(c.postgres.state_schema, "meshlite");
        let e = c.pg_target().unwrap_err();
        assert!(e.to_string().contains("postgres.url"), "{e}");
    }

    #[test]
    fn env_overrides_use_the_seed_names() {
        let c = Config::load(
            None,
            env(&[
                (
                    "DATABASE_URL",
                    "postgresql://u:pw@db:5432/postgres?sslmode=require",
                ),
                ("SYNC_TABLES", "jobs, tasks"),
                ("SYNC_BATCH_SIZE", "100"),
                ("SYNC_INTERVAL_SECONDS", "30"),
                ("NATS_URL", "nats://127.0.0.1:4222"),
            ]),
        )
        .unwrap();
        assert_eq!(c.sync.tables, ["jobs", "tasks"]);
        assert_eq!((c.sync.batch_size, c.sync.interval_seconds), (100, 30));
        assert_eq!(
            c.pg_target().unwrap().ssl_mode(),
            crate::pg::SslMode::Require
        );
        let shown = c.to_toml_redacted().unwrap();
        assert!(
            shown.contains("u:****@db") && !shown.contains("pw"),
            "{shown}"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("SYNC_INTERVAL_SECONDS", "soon")],
                "SYNC_INTERVAL_SECONDS",
            ),
            (&[("SYNC_BATCH_SIZE", "0")], "sync.batch_size"),
            (&[("SYNC_TABLES", "jobs,bad-name")], "SYNC_TABLES"),
            (&[("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
            (
                &[("DATABASE_URL", "postgres://h/db?sslmode=maybe")],
                "DATABASE_URL",
            ),
            (
                &[("MESHLITE_STATE_SCHEMA", "x;drop")],
                "MESHLITE_STATE_SCHEMA",
            ),
            (
                &[("MESHLITE_HTTP_LISTEN", "nowhere")],
                "MESHLITE_HTTP_LISTEN",
            ),
            (&[("NATS_URL", "http://x")], "nats.url"),
        ];
        for (pairs, key) in cases {
            let e = Config::load(None, env(pairs)).unwrap_err();
            assert!(e.to_string().contains(key), "{key}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        for (text, key) in [
            ("[postgres]\nstate_schemaa = \"x\"\n", "state_schemaa"),
            (
                "[postgres]\ntable_schema = \"Public\"\n",
                "postgres.table_schema",
            ),
            (
                "[postgres]\nstate_schema = \"public\"\n",
                "postgres.state_schema",
            ),
            (
                "[postgres]\nread_roles = [\"anon; drop\"]\n",
                "postgres.read_roles",
            ),
            ("[sync]\ninterval_seconds = 0\n", "sync.interval_seconds"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = Config::load(Some(&p), env(&[])).unwrap_err();
            assert!(e.to_string().contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn shipped_example_is_the_defaults() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/meshlite-bridge.example.toml"
        ));
        let mut example = Config::load(Some(path), env(&[])).unwrap();
        let mut defaults = Config::load(None, env(&[])).unwrap();
        example.bridge.name.clear();
        defaults.bridge.name.clear();
        assert_eq!(example, defaults);
    }
}
