//! What the HTTP handlers share ([`AppState`]): a leaf, so the listener (`http`) and the
//! record API (`api`) both depend on it and not on each other.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::FromRef;
use meshlite_core::store::Store;
use meshlite_mesh::discovery::table::PeerTable;
use meshlite_mesh::epidemic::stats::EpidemicStats;
use meshlite_mesh::gossip::GossipStats;
use meshlite_mesh::nats::NatsStats;
use meshlite_mesh::net::handle::NetHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::cert_expiry::CertExpiry;
use crate::config::{HttpSection, RegistrySection, SyncSection};

/// What the handlers read.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// The transport, when the mesh is on.
    pub net: Option<NetHandle>,
    /// The discovery peer table.
    pub table: PeerTable,
    /// Gossip counters, when the mesh is on.
    pub gossip: Option<Arc<GossipStats>>,
    /// Overlay-mode counters, when the mesh is on.
    pub epidemic: Option<Arc<EpidemicStats>>,
    /// NATS counters, when NATS is on.
    pub nats: Option<NatsStats>,
    /// This node's name.
    pub node_name: String,
    /// When the node certificate expires, when the mesh is on.
    pub cert: Option<CertExpiry>,
    /// When the daemon started.
    pub started: Instant,
    /// The listener's limits (the change stream reads its buffer budget and idle timeout).
    pub http: HttpSection,
    /// The service registry's settings (heartbeat TTL).
    pub registry: RegistrySection,
    /// What this node replicates and which peers are the central bridge (sync visibility).
    pub sync: SyncSection,
    /// Fires when the daemon stops: long-lived responses (the change stream) end at once.
    pub shutdown: CancellationToken,
    /// Who may call (the `crate::auth::Caller` extractor reads it).
    pub auth: Arc<Auth>,
}

impl FromRef<AppState> for Arc<Auth> {
    fn from_ref(s: &AppState) -> Self {
        s.auth.clone()
    }
}
