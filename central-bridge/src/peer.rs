//! The bridge as a fleet peer: the mesh library's transport, discovery, dialer and gossip actor
//! serving the bridge's [`PgReplica`] — the same code the node runs over its SQLite store.
//!
//! ```text
//!   PgReplica ◄── net (QUIC + fleet mTLS: sync sessions and pushes apply into Postgres)
//!       ▲    ◄── gossip (anti-entropy timer; relays nothing of its own until central edits)
//!       │        dialer ◄── PeerTable ◄── discovery (static list, Tailscale)
//!   fleet_view ◄── connected peers + PeerTable  → <state>.nodes
//! ```
//!
//! Started only with `bridge.fleet_dir`; every part stops on the cancellation token, the
//! transport last, each within the mesh's `SHUTDOWN_GRACE`.

use std::sync::Arc;
use std::time::Instant;

use meshlite_core::dissemination::{DisseminationConfig, Disseminator};
use meshlite_mesh::dialer::Dialer;
use meshlite_mesh::discovery::{Discovery, LocalNode, PeerTable, StartDiscoveryError};
use meshlite_mesh::fleet::{self, FleetError};
use meshlite_mesh::gossip::{Gossip, GossipStats};
use meshlite_mesh::nats::{self, NatsContext, NatsService};
use meshlite_mesh::net::handle::{NetHandle, StartError};
use meshlite_mesh::net::mesh;
use meshlite_mesh::replica::Replica;
use meshlite_mesh::tasks::SHUTDOWN_GRACE;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::fleet_view;
use crate::replica::PgReplica;

/// Why the fleet peer could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The fleet files could not be loaded.
    #[error("bridge.fleet_dir: {0}")]
    Fleet(#[from] FleetError),
    /// The QUIC transport could not start.
    #[error("transport: {0}")]
    Transport(#[from] StartError),
    /// Discovery could not start.
    #[error("discovery: {0}")]
    Discovery(#[from] StartDiscoveryError),
    /// NATS could not be configured or reached.
    #[error("nats: {0}")]
    NatsConnect(#[from] nats::ConnectNatsError),
    /// The NATS service could not start.
    #[error("nats: {0}")]
    NatsStart(#[from] nats::StartNatsError),
    /// The configuration does not name a usable database (checked at load; kept typed here).
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// The dissemination policy refused its configuration.
    #[error("sync: {0}")]
    Policy(#[from] meshlite_core::dissemination::ConfigError),
}

/// The running peer.
#[derive(Debug)]
pub struct Peer {
    net: NetHandle,
    discovery: Discovery,
    actors: JoinSet<()>,
    table: PeerTable,
    local: LocalNode,
    /// Gossip counters (for `/metrics`).
    pub stats: Arc<GossipStats>,
}

impl Peer {
    /// Starts the peer when `bridge.fleet_dir` is set; `None` otherwise.
    pub fn start(
        config: &Config,
        replica: PgReplica,
        cancel: &CancellationToken,
    ) -> Result<Option<Peer>, PeerError> {
        let Some(dir) = config.bridge.fleet_dir.as_deref() else {
            tracing::info!("no bridge.fleet_dir: no fleet peer (the tables are still served)");
            return Ok(None);
        };
        let identity = fleet::load_node_identity(dir)?;
        let cluster = identity.cluster_id().to_string();
        let net = mesh::start(
            identity,
            config.transport.clone(),
            replica.clone(),
            cancel.child_token(),
        )?;
        let table = PeerTable::new(config.discovery.peer_expiry());
        let local = local_node(config, &net, cluster);
        let discovery = Discovery::start(&config.discovery, &local, &table, cancel)?;
        let peer_table = table.clone();
        let dissemination = DisseminationConfig::with_interval(std::time::Duration::from_secs(
            config.sync.interval_seconds,
        ));
        let policy = Disseminator::new(dissemination, rand::random(), Instant::now())?;
        let stats = Arc::new(GossipStats::default());
        let mut actors = JoinSet::new();
        actors.spawn(
            Gossip {
                store: replica.clone(),
                net: net.clone(),
                table: table.clone(),
                policy,
                stats: stats.clone(),
                cancel: cancel.child_token(),
            }
            .run(),
        );
        actors.spawn(fleet_view::run(
            net.clone(),
            table.clone(),
            config.pg_target()?,
            config.schemas()?.state,
            std::time::Duration::from_secs(config.sync.interval_seconds),
            cancel.child_token(),
        ));
        actors.spawn(
            Dialer {
                net: net.clone(),
                table,
                cancel: cancel.child_token(),
            }
            .run(),
        );
        tracing::info!(node_id = %net.node_id(), quic = %net.local_addr(), "fleet peer running");
        Ok(Some(Peer {
            net,
            discovery,
            actors,
            table: peer_table,
            local,
            stats,
        }))
    }

    /// The QUIC listener's address.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.net.local_addr()
    }

    /// The peer table (NATS announcements feed it too).
    pub fn table(&self) -> &PeerTable {
        &self.table
    }

    /// What this bridge announces about itself.
    pub fn local(&self) -> &LocalNode {
        &self.local
    }

    /// Stops the actors, discovery and the transport (the token was cancelled by the caller).
    pub async fn shutdown(mut self) {
        let drain = async { while self.actors.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            self.actors.abort_all();
        }
        self.discovery.shutdown(SHUTDOWN_GRACE).await;
        self.net.shutdown().await;
    }
}

fn local_node(config: &Config, net: &NetHandle, cluster: String) -> LocalNode {
    LocalNode {
        node_id: net.node_id().to_string(),
        quic_port: net.local_addr().port(),
        ..local_without_mesh(config, String::new(), cluster)
    }
}

/// What a bridge without fleet files announces: its replica id under the `local` cluster (as a
/// node without a mesh does).
pub fn local_without_mesh(config: &Config, node_id: String, cluster: String) -> LocalNode {
    LocalNode {
        node_id,
        name: config.bridge.name.clone(),
        cluster,
        quic_port: 0,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        addresses: Vec::new(),
        collections: config.sync.tables.clone(),
        capabilities: vec!["bridge".into(), "sync".into()],
    }
}

/// Starts NATS (announcements, change events, the JetStream relay) over the bridge's replica
/// when `nats.url` is set: relayed transactions are applied to Postgres and acked after commit;
/// the bridge's own transactions (central edits) are published.
pub async fn start_nats(
    config: &Config,
    replica: &PgReplica,
    peer: Option<&Peer>,
    cancel: &CancellationToken,
) -> Result<Option<NatsService>, PeerError> {
    let Some(client) = nats::connect(&config.nats, &config.bridge.name).await? else {
        return Ok(None);
    };
    let (local, table) = match peer {
        Some(p) => (p.local().clone(), p.table().clone()),
        None => (
            local_without_mesh(config, replica.replica_id().to_hex(), "local".into()),
            PeerTable::new(config.discovery.peer_expiry()),
        ),
    };
    let ctx = NatsContext {
        client,
        local,
        table,
        store: replica.clone(),
        cursor_path: config.bridge.relay_cursor.clone(),
    };
    Ok(Some(NatsService::start(&config.nats, ctx, cancel)?))
}
