//! NATS: node announcements, change events and the JetStream relay.
//!
//! # How the parts fit
//!
//! ```text
//!                 ┌─ announce::run_announcer ──► mesh.node.announce.v1
//!                 ├─ announce::run_listener  ◄── mesh.node.announce.v1 ──► PeerTable
//!  NatsService ───┤
//!                 ├─ events::run_commit_feed ◄── store.subscribe()
//!                 │        │ every change ──► supabase.sync.<collection>.<op>
//!                 │        └ local commit ──► wakes the relay publisher
//!                 ├─ relay::Relay::run_publisher ── local txns from the cursor ──► JetStream
//!                 └─ relay::Relay::run_consumer  ◄── durable pull consumer ──► store.apply
//! ```
//!
//! - [`config`]: the `[nats]` section; [`connlog`]: connection trouble as log lines naming the
//!   URL and the cause, with repeats backed off.
//! - [`announce`], [`events`], [`relay`]: one task (or two) each, all in one [`TaskGroup`].
//! - The store is any [`crate::replica::Replica`]: the node's SQLite store or the bridge's
//!   Postgres.
//!
//! The connection ([`connect`]) retries the initial connect and reconnects forever, so the node
//! starts and keeps working while the server is down. Announcements and events are best effort
//! (core NATS). The relay loses nothing: it publishes from a persisted cursor of the last local
//! seq the server acknowledged, so transactions committed while NATS was away go out after
//! reconnecting; `Nats-Msg-Id` dedup and idempotent apply make over-publishing and redelivery
//! harmless.

pub mod announce;
pub mod config;
pub mod connlog;
pub mod events;
pub mod relay;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::discovery::{LocalNode, PeerTable};
use crate::replica::Replica;
use crate::tasks::{ShutdownReport, TaskExit, TaskGroup};

pub use config::{NatsConfig, NatsConfigError};
pub use events::{ChangeEvent, EventStats};
pub use relay::{Relay, RelayStats};

/// Longest pause between reconnect attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// The kind of a changed row, as used in event subjects (`insert|update|delete|append`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A record appeared.
    Insert,
    /// A record changed.
    Update,
    /// A record was deleted.
    Delete,
    /// A log row was appended.
    Append,
}

impl Operation {
    /// The subject token and JSON `operation` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Append => "append",
        }
    }
}

/// One changed row of a committed store transaction, borrowed from the store's event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChangeView<'a> {
    /// Collection name.
    pub collection: &'a str,
    /// Record id.
    pub id: &'a str,
    /// What happened.
    pub op: Operation,
    /// The merged row after the change; `None` for deletes.
    pub value: Option<&'a serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectNatsError {
    /// The `[nats]` section is invalid.
    #[error(transparent)]
    Config(#[from] NatsConfigError),
    /// The client refused the options.
    #[error("connecting to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
}

/// Installs ring as the process-wide rustls provider (async-nats builds TLS configs with the
/// default provider; with none installed it panics). Already installed is fine.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Connects to `cfg.url`; `Ok(None)` when NATS is not configured. Returns at once even when the
/// server is down: the client keeps retrying in the background and reconnects forever.
pub async fn connect(
    cfg: &NatsConfig,
    node_name: &str,
) -> Result<Option<async_nats::Client>, ConnectNatsError> {
    cfg.validate()?;
    let Some(url) = cfg.url.as_deref() else {
        return Ok(None);
    };
    install_crypto_provider();
    let mut options = async_nats::ConnectOptions::new();
    if let Some(ca) = &cfg.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    let name = cfg
        .client_name
        .clone()
        .unwrap_or_else(|| format!("meshlite-{node_name}"));
    let servers: Vec<async_nats::ServerAddr> = url
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let log = Arc::new(connlog::ConnLog::new(servers.clone()));
    tracing::info!(servers = %log.servers(), "connecting to NATS");
    let client = options
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .request_timeout(Some(cfg.request_timeout()))
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            let log = log.clone();
            async move { log.event(event).await }
        })
        .connect(servers)
        .await?;
    Ok(Some(client))
}

fn reconnect_delay(attempts: usize) -> Duration {
    let ms = 100u64.saturating_mul(1 << attempts.min(6) as u32);
    Duration::from_millis(ms).min(MAX_RECONNECT_DELAY)
}

/// The current time as RFC 3339 UTC with milliseconds (`2025-01-14T10:21:37.660Z`).
pub fn rfc3339_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now
        .replace_nanosecond(now.millisecond() as u32 * 1_000_000)
        .unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Error starting the NATS service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartNatsError {
    /// The `[nats]` section is invalid.
    #[error(transparent)]
    Config(#[from] NatsConfigError),
    /// The cluster id cannot be used in a subject.
    #[error("cluster id {0:?} is not usable as a NATS subject token")]
    Cluster(String),
}

/// Counters of the running NATS service, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct NatsStats {
    /// Change events.
    pub events: Arc<EventStats>,
    /// Relay traffic.
    pub relay: Arc<RelayStats>,
}

/// The running NATS tasks.
#[derive(Debug)]
pub struct NatsService {
    tasks: TaskGroup,
    stats: NatsStats,
}

/// What the NATS service works with.
#[derive(Debug)]
pub struct NatsContext<S> {
    /// The connected client.
    pub client: async_nats::Client,
    /// This node.
    pub local: LocalNode,
    /// The peer table announcements feed.
    pub table: PeerTable,
    /// The store.
    pub store: S,
    /// File holding the relay's cursor (last local seq the stream acknowledged).
    pub cursor_path: PathBuf,
}

impl NatsService {
    /// Starts the enabled parts as tasks cancelled with `cancel`.
    pub fn start<S: Replica>(
        cfg: &NatsConfig,
        ctx: NatsContext<S>,
        cancel: &CancellationToken,
    ) -> Result<Self, StartNatsError> {
        cfg.validate()?;
        if !config::is_name_token(&ctx.local.cluster) {
            return Err(StartNatsError::Cluster(ctx.local.cluster.clone()));
        }
        let mut tasks = TaskGroup::new("nats", cancel);
        let stats = NatsStats::default();
        if cfg.announce {
            let (c, l, t) = (ctx.client.clone(), ctx.local.clone(), ctx.table.clone());
            let every = cfg.announce_interval();
            tasks.spawn(
                "announce",
                announce::run_announcer(c.clone(), l.clone(), every, tasks.token()),
            );
            tasks.spawn(
                "announce-listen",
                announce::run_listener(c, l, t, tasks.token()),
            );
        }
        let wake = Arc::new(Notify::new());
        if cfg.relay {
            let relay = Arc::new(Relay::new(cfg, &ctx, stats.relay.clone()));
            tasks.spawn(
                "relay-publish",
                relay.clone().run_publisher(wake.clone(), tasks.token()),
            );
            tasks.spawn("relay-consume", relay.run_consumer(tasks.token()));
        }
        if cfg.events || cfg.relay {
            let feed = events::CommitFeed {
                client: cfg.events.then(|| ctx.client.clone()),
                source: ctx.local.name.clone(),
                relay_wake: cfg.relay.then_some(wake),
                stats: stats.events.clone(),
            };
            tasks.spawn("events", feed.run(ctx.store.subscribe(), tasks.token()));
        }
        Ok(Self { tasks, stats })
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> &NatsStats {
        &self.stats
    }

    /// Waits for the next task to end (normally only at shutdown). Cancel-safe.
    pub async fn next_exit(&mut self) -> Option<TaskExit> {
        self.tasks.next_exit().await
    }

    /// Stops every task, waiting at most `timeout`.
    pub async fn shutdown(self, timeout: Duration) -> ShutdownReport {
        self.tasks.shutdown(timeout).await
    }
}
