//! `meshlite run`: wires the store, the QUIC transport, discovery, NATS and the HTTP listener.
//!
//! ```text
//!             ┌──────────── CancellationToken (SIGINT / SIGTERM) ────────────┐
//!   Store ◄── gossip::Gossip (push on commit, relay, anti-entropy timer)     │
//!         ◄── epidemic::EpidemicDriver instead, above sync.direct_push_max_peers (mode) │
//!     ▲   ◄── net (QUIC, mTLS; sync sessions and pushes apply into the store)│
//!     │       dialer::Dialer ◄── PeerTable ◄── discovery (mDNS, static, Tailscale)
//!     │                              ▲
//!     └── nats (events, relay) ──────┘ (announcements)
//!   cert_expiry::watch (warns daily within 30 days of the node certificate's end)
//!   http: /healthz /metrics /peers /status /v1 /rest/v1 /summary /bundle/*
//!         (its address recorded in DATA/daemon.json for the CLI: crate::endpoint)
//! ```
//!
//! With no configuration only the store and the HTTP listener run (the embedded default).
//! Without fleet files, or in `standalone` mode, no peer port is opened. Shutdown cancels every
//! part, waits for each within [`SHUTDOWN_GRACE`], and closes the store last: the writer finishes
//! queued writes before the process exits, so nothing acknowledged is lost.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use meshlite_core::Schema;
use meshlite_core::dissemination::{DisseminationConfig, Disseminator};
use meshlite_core::epidemic::EpidemicConfig;
use meshlite_core::overlay::OverlayConfig;
use meshlite_core::plumtree::TreeConfig;
use meshlite_core::store::{OpenOptions, Store, Synchronous, WriteError};
use meshlite_mesh::dialer::Dialer;
use meshlite_mesh::discovery::{Discovery, LocalNode, PeerTable};
use meshlite_mesh::epidemic::EpidemicDriver;
use meshlite_mesh::epidemic::stats::EpidemicStats;
use meshlite_mesh::fleet;
use meshlite_mesh::gossip::{Gossip, GossipStats};
use meshlite_mesh::mode::Supervisor;
use meshlite_mesh::nats::{self, NatsContext, NatsService};
use meshlite_mesh::net::handle::NetHandle;
use meshlite_mesh::net::mesh;
use meshlite_mesh::tasks::{SHUTDOWN_GRACE, Ticker};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, Role, unix_now};
use crate::cert_expiry::{self, CertExpiry};
use crate::config::{AuthSection, Config};
use crate::http;
use crate::state::AppState;

/// What `meshlite run` prints on stdout once it serves (one JSON line), for scripts and tests.
#[derive(Debug, serde::Serialize)]
pub struct Ready {
    /// Always "ready".
    pub event: &'static str,
    /// The HTTP listener.
    pub http: SocketAddr,
    /// The QUIC listener, when the mesh is on.
    pub quic: Option<SocketAddr>,
    /// This node's id (from its key), when the mesh is on.
    pub node_id: Option<String>,
    /// The store's replica id.
    pub replica: String,
}

/// The running mesh parts.
struct Mesh {
    net: NetHandle,
    discovery: Discovery,
    stats: Arc<GossipStats>,
    epidemic: Arc<EpidemicStats>,
    local: LocalNode,
    expiry: CertExpiry,
}

/// Runs the daemon until `shutdown` completes (or a part fails), then stops everything.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    meshlite_mesh::net::tls::install_crypto_provider();
    check_ports(&config)?;
    let auth = auth_of(&config.auth)?;
    let store = open_store(&config).await?;
    let cancel = CancellationToken::new();
    let table = PeerTable::new(config.discovery.peer_expiry());
    let mut actors: JoinSet<()> = JoinSet::new();
    let mesh = match config.mesh_enabled() {
        true => Some(start_mesh(&config, &store, &table, &cancel, &mut actors)?),
        false => None,
    };
    let nats = start_nats(&config, &store, &table, mesh.as_ref(), &cancel).await?;
    let maintenance = [
        (config.sync.gc_interval_seconds, Maintenance::Gc),
        (config.node.compact_interval_seconds, Maintenance::Compact),
    ];
    for (seconds, job) in maintenance.into_iter().filter(|(s, _)| *s > 0) {
        let every = Duration::from_secs(seconds);
        actors.spawn(maintain(store.clone(), every, job, cancel.child_token()));
    }
    let state = AppState {
        store: store.clone(),
        net: mesh.as_ref().map(|m| m.net.clone()),
        table: table.clone(),
        gossip: mesh.as_ref().map(|m| m.stats.clone()),
        epidemic: mesh.as_ref().map(|m| m.epidemic.clone()),
        nats: nats.as_ref().map(|n| n.stats().clone()),
        node_name: config.node.name.clone(),
        cert: mesh.as_ref().map(|m| m.expiry),
        started: Instant::now(),
        http: config.http.clone(),
        registry: config.registry.clone(),
        sync: config.sync.clone(),
        shutdown: cancel.clone(),
        auth: Arc::new(auth),
    };
    let (http_addr, http_task) = http::serve(state, cancel.clone())
        .await
        .with_context(|| format!("cannot listen on http.listen = {}", config.http.listen))?;
    if let Err(e) = crate::endpoint::write(&config.node.data, http_addr) {
        tracing::warn!(error = %e, "cannot record the HTTP address in the data directory; CLI bundle commands will not find this daemon");
    }
    announce_ready(http_addr, mesh.as_ref(), &store);
    wait_for_stop(shutdown, &mut actors, &cancel).await;
    stop_all(store, mesh, nats, actors, http_task, cancel).await
}

/// The HTTP listener's auth from `[auth]`: configured keys must fit the secret and their role.
fn auth_of(section: &AuthSection) -> anyhow::Result<Auth> {
    let Some(secret) = &section.jwt_secret else {
        tracing::info!(
            "auth off (no JWT_SECRET): the loopback listener serves every request as service_role"
        );
        return Ok(Auth::off());
    };
    let mut auth = Auth::with_secret(secret.expose()).trust_loopback(section.trust_loopback);
    let now = unix_now();
    let keys = [
        ("ANON_KEY", Role::Anon, &section.anon_key),
        (
            "SERVICE_ROLE_KEY",
            Role::ServiceRole,
            &section.service_role_key,
        ),
    ];
    for (env, role, key) in keys {
        if let Some(key) = key {
            auth.add_key(env, role, key.expose(), now)?;
        }
    }
    tracing::info!(
        trust_loopback = section.trust_loopback,
        "auth on: JWT_SECRET checks apikey and bearer tokens"
    );
    Ok(auth)
}

/// Checks that the listen ports are free before the store is opened, so a run that cannot listen
/// creates no store. A probe: the sockets are closed at once and bound again by their owners.
fn check_ports(config: &Config) -> anyhow::Result<()> {
    let http = config.http.listen;
    std::net::TcpListener::bind(http)
        .with_context(|| format!("cannot listen on http.listen = {http}"))?;
    if config.mesh_enabled() {
        let quic = config.transport.listen;
        std::net::UdpSocket::bind(quic)
            .with_context(|| format!("cannot start QUIC on transport.listen = {quic}"))?;
    }
    Ok(())
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let schema = config
        .node
        .schema
        .as_deref()
        .map(Schema::from_file)
        .transpose()?
        .map(crate::registry::declare);
    let opts = OpenOptions {
        schema,
        synchronous: if config.node.durable_fsync {
            Synchronous::Full
        } else {
            Synchronous::Normal
        },
        doc_cache: config.node.doc_cache,
        replicate: (!config.sync.tables.is_empty())
            .then(|| config.sync.tables.iter().cloned().collect()),
        ..OpenOptions::default()
    };
    let dir = config.node.data.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, opts)).await??;
    tracing::info!(replica = %store.replica_id(), data = %config.node.data.display(), "store open");
    Ok(store)
}

fn start_mesh(
    config: &Config,
    store: &Store,
    table: &PeerTable,
    cancel: &CancellationToken,
    actors: &mut JoinSet<()>,
) -> anyhow::Result<Mesh> {
    let fleet_dir = config
        .node
        .fleet_dir
        .as_deref()
        .context("node.fleet_dir is required for the mesh")?;
    let identity = fleet::load_node_identity(fleet_dir).with_context(|| {
        format!(
            "cannot load fleet files from node.fleet_dir = {}",
            fleet_dir.display()
        )
    })?;
    let cluster = identity.cluster_id().to_string();
    let expiry = CertExpiry::new(identity.not_after());
    expiry.warn_if_soon(std::time::SystemTime::now());
    actors.spawn(cert_expiry::watch(expiry, cancel.child_token()));
    let transport = config.transport.clone();
    let net = mesh::start(identity, transport, store.clone(), cancel.child_token()).with_context(
        || {
            format!(
                "cannot start QUIC on transport.listen = {}",
                config.transport.listen
            )
        },
    )?;
    let local = local_node(
        config,
        net.node_id().to_string(),
        cluster,
        net.local_addr().port(),
    );
    let discovery = Discovery::start(&config.effective_discovery(), &local, table, cancel)?;
    let stats = Arc::new(GossipStats::default());
    let epidemic = Arc::new(EpidemicStats::default());
    let supervisor = supervisor(config, store, &net, table, &stats, &epidemic, cancel)?;
    actors.spawn(supervisor.run());
    Ok(Mesh {
        net,
        discovery,
        stats,
        epidemic,
        local,
        expiry,
    })
}

/// Small-fleet mode (gossip + dialer) and overlay mode, switched by fleet size
/// ([`meshlite_mesh::mode`]).
fn supervisor(
    config: &Config,
    store: &Store,
    net: &NetHandle,
    table: &PeerTable,
    stats: &Arc<GossipStats>,
    epidemic: &Arc<EpidemicStats>,
    cancel: &CancellationToken,
) -> anyhow::Result<Supervisor<Store>> {
    let direct = cancel.child_token();
    let policy = Disseminator::new(dissemination_config(config), rand::random(), Instant::now())?;
    let gossip = Gossip {
        store: store.clone(),
        net: net.clone(),
        table: table.clone(),
        policy,
        stats: stats.clone(),
        cancel: direct.clone(),
    };
    let dialer = Dialer {
        net: net.clone(),
        table: table.clone(),
        cancel: direct.clone(),
    };
    let overlay = EpidemicDriver::new(
        store.clone(),
        net.clone(),
        table.clone(),
        epidemic_config(config),
        rand::random(),
        epidemic.clone(),
        cancel.child_token(),
    )?;
    Ok(Supervisor {
        gossip,
        dialer,
        direct,
        overlay,
        table: table.clone(),
        me: net.node_id(),
        threshold: config.sync.direct_push_max_peers,
        cancel: cancel.child_token(),
    })
}

fn dissemination_config(config: &Config) -> DisseminationConfig {
    DisseminationConfig {
        push_fanout: config.sync.push_fanout,
        anti_entropy_peers: config.sync.anti_entropy_peers,
        direct_push_max_peers: config.sync.direct_push_max_peers,
        ..DisseminationConfig::with_interval(config.sync.interval())
    }
}

fn epidemic_config(config: &Config) -> EpidemicConfig {
    EpidemicConfig {
        overlay: OverlayConfig {
            active_capacity: config.sync.overlay_active,
            passive_capacity: config.sync.overlay_passive,
            ..OverlayConfig::default()
        },
        tree: TreeConfig::default(),
        anti_entropy: dissemination_config(config),
    }
}

fn local_node(config: &Config, node_id: String, cluster: String, quic_port: u16) -> LocalNode {
    LocalNode {
        node_id,
        name: config.node.name.clone(),
        cluster,
        quic_port,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        addresses: Vec::new(),
        collections: config.sync.tables.clone(),
        capabilities: vec!["store".into(), "sync".into()],
    }
}

/// Starts NATS when configured. Without a mesh the node announces itself under its replica id
/// and the `local` cluster, and the relay still carries its transactions.
async fn start_nats(
    config: &Config,
    store: &Store,
    table: &PeerTable,
    mesh: Option<&Mesh>,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<NatsService>> {
    if !config.nats_enabled() {
        return Ok(None);
    }
    let Some(client) = nats::connect(&config.nats, &config.node.name).await? else {
        return Ok(None);
    };
    let local = match mesh {
        Some(m) => m.local.clone(),
        None => local_node(config, store.replica_id().to_hex(), "local".into(), 0),
    };
    let ctx = NatsContext {
        client,
        local,
        table: table.clone(),
        store: store.clone(),
        cursor_path: config.node.data.join("nats-relay.cursor"),
    };
    Ok(Some(NatsService::start(&config.nats, ctx, cancel)?))
}

/// Document states rewritten per background compaction pass (one writer command: ~256 loads
/// and saves of small documents, a few tens of milliseconds).
pub const COMPACT_BATCH: usize = 256;

/// A periodic store maintenance job.
#[derive(Debug, Clone, Copy)]
enum Maintenance {
    /// Frees history every known peer acknowledged.
    Gc,
    /// Rewrites document states with appended changes as snapshots (loads get cheaper).
    Compact,
}

impl Maintenance {
    /// Runs the job once; what it did worth a log line, if anything.
    async fn run(self, store: &Store) -> Result<Option<String>, WriteError> {
        Ok(match self {
            Maintenance::Gc => {
                let r = store.gc_async().await?;
                Some(format!(
                    "gc: {} transactions and {} document states freed",
                    r.txns_deleted, r.docs_freed
                ))
            }
            Maintenance::Compact => {
                let n = store.compact_async(COMPACT_BATCH).await?;
                (n > 0).then(|| format!("compaction: {n} document states rewritten as snapshots"))
            }
        })
    }
}

/// Runs `job` every `every` (first after one period) until `cancel`.
async fn maintain(store: Store, every: Duration, job: Maintenance, cancel: CancellationToken) {
    let mut ticker = Ticker::every(every, cancel);
    while ticker.tick().await {
        match job.run(&store).await {
            Ok(Some(done)) => tracing::info!("{done}"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, ?job, "store maintenance failed"),
        }
    }
}

fn announce_ready(http: SocketAddr, mesh: Option<&Mesh>, store: &Store) {
    let ready = Ready {
        event: "ready",
        http,
        quic: mesh.map(|m| m.net.local_addr()),
        node_id: mesh.map(|m| m.net.node_id().to_string()),
        replica: store.replica_id().to_hex(),
    };
    tracing::info!(%http, quic = ?ready.quic, "meshlite running");
    if let Ok(line) = serde_json::to_string(&ready) {
        println!("{line}");
    }
}

/// Waits for the shutdown signal, or for an actor to end on its own (a bug: logged, and the
/// daemon stops rather than limp on without it).
async fn wait_for_stop(
    shutdown: impl Future<Output = ()>,
    actors: &mut JoinSet<()>,
    cancel: &CancellationToken,
) {
    tokio::select! {
        _ = shutdown => tracing::info!("shutting down"),
        Some(done) = actors.join_next() => {
            tracing::error!(result = ?done, "a daemon task ended unexpectedly; shutting down");
        }
    }
    cancel.cancel();
}

async fn stop_all(
    store: Store,
    mesh: Option<Mesh>,
    nats: Option<NatsService>,
    mut actors: JoinSet<()>,
    http_task: tokio::task::JoinHandle<std::io::Result<()>>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    cancel.cancel();
    if tokio::time::timeout(SHUTDOWN_GRACE, async {
        while actors.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        actors.abort_all();
    }
    if let Some(n) = nats {
        n.shutdown(SHUTDOWN_GRACE).await;
    }
    if let Some(m) = mesh {
        m.discovery.shutdown(SHUTDOWN_GRACE).await;
        m.net.shutdown().await;
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, http_task).await;
    crate::endpoint::remove(store.dir());
    store.close_async().await?;
    tracing::info!("stopped; store closed cleanly");
    Ok(())
}
