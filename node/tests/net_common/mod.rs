//! Shared fixtures of the `net_*` tests: fleets on disk, nodes with real stores on loopback, raw
//! QUIC clients for abuse tests, and event waits bounded by generous failure guards.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshlite_core::store::{OpenOptions, Store, WriteOp};
use meshlite_fixtures::wait::next_matching;
use meshlite_mesh::fleet::{self, CertSpec, ClusterId, FleetCa, NodeIdentity, NodeName};
use meshlite_mesh::net::tls::{PeerPolicy, TlsContext};
use meshlite_mesh::net::{self, NetEvent, NetHandle, TransportConfig};
use serde_json::json;
use tempfile::TempDir;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Failure guard for anything that should happen "soon"; never a performance assertion.
pub const GUARD: Duration = Duration::from_secs(30);

pub type TestResult = anyhow::Result<()>;

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A fleet directory with its CA.
pub struct Fleet {
    pub dir: TempDir,
    pub cluster_id: ClusterId,
}

impl Fleet {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let info = fleet::init(dir.path())?;
        Ok(Self {
            dir,
            cluster_id: info.cluster_id,
        })
    }

    /// Issues `name` and loads its bundle.
    pub fn node(&self, name: &str) -> anyhow::Result<NodeIdentity> {
        let issued = fleet::issue(self.dir.path(), name, 30)?;
        Ok(fleet::load_node_identity(&issued.bundle_dir)?)
    }

    pub fn ca(&self) -> anyhow::Result<FleetCa> {
        Ok(FleetCa::load(self.dir.path())?)
    }

    /// A certificate signed by this fleet's CA as `spec` says, trusting `extra_ca_pem` too.
    pub fn custom(&self, spec: &CertSpec, extra_ca_pem: &str) -> anyhow::Result<NodeIdentity> {
        let ca = self.ca()?;
        let issued = ca.issue_cert(spec)?;
        let trust = format!("{}{extra_ca_pem}", ca.trusted_pem());
        Ok(NodeIdentity::from_pem(
            &issued.cert_pem,
            &issued.key_pem,
            &trust,
        )?)
    }

    pub fn spec(&self, name: &str) -> anyhow::Result<CertSpec> {
        Ok(CertSpec::new(&self.ca()?, NodeName::new(name)?, 30))
    }

    pub fn ca_pem(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.dir.path().join("ca.pem"))?)
    }
}

/// A running transport serving a real store.
pub struct TestNode {
    pub net: NetHandle,
    pub store: Store,
    pub events: broadcast::Receiver<NetEvent>,
    pub cancel: CancellationToken,
    _data: TempDir,
}

impl TestNode {
    pub fn start(identity: NodeIdentity) -> anyhow::Result<Self> {
        Self::start_with(identity, TransportConfig::loopback())
    }

    pub fn start_with(identity: NodeIdentity, cfg: TransportConfig) -> anyhow::Result<Self> {
        Self::start_in(identity, cfg, tempfile::tempdir()?)
    }

    /// Starts on an existing data directory (a restart).
    pub fn start_in(
        identity: NodeIdentity,
        cfg: TransportConfig,
        data: TempDir,
    ) -> anyhow::Result<Self> {
        let store = open_store(data.path())?;
        let cancel = CancellationToken::new();
        let net = net::start(identity, cfg, store.clone(), cancel.clone())?;
        let events = net.subscribe();
        Ok(Self {
            net,
            store,
            events,
            cancel,
            _data: data,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.net.local_addr()
    }

    /// Waits for an event matching `pick`, skipping others.
    pub async fn wait_for<T>(
        &mut self,
        pick: impl FnMut(&NetEvent) -> Option<T>,
    ) -> anyhow::Result<T> {
        wait_for(&mut self.events, pick).await
    }

    /// Runs `f` (a blocking store call) off the runtime threads.
    pub async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(Store) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(store)).await?)
    }

    pub async fn stop(self) {
        self.net.shutdown().await;
    }

    /// Stops the transport and closes the store, returning the data directory for a restart.
    pub async fn stop_keep_data(self) -> anyhow::Result<TempDir> {
        self.net.shutdown().await;
        let store = self.store;
        tokio::task::spawn_blocking(move || store.close()).await??;
        Ok(self._data)
    }
}

pub fn open_store(dir: &Path) -> anyhow::Result<Store> {
    Ok(Store::open(dir, OpenOptions::default())?)
}

/// Waits (bounded by [`GUARD`]) for an event matching `pick`.
pub async fn wait_for<T>(
    rx: &mut broadcast::Receiver<NetEvent>,
    pick: impl FnMut(&NetEvent) -> Option<T>,
) -> anyhow::Result<T> {
    Ok(next_matching(rx, GUARD, pick).await?)
}

/// Fails the test if `f` does not finish within [`GUARD`].
pub async fn guard<T>(f: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(GUARD, f)
        .await
        .map_err(|_| anyhow::anyhow!("not done within the {GUARD:?} failure guard"))
}

/// A bare quinn client endpoint presenting `identity`, for tests that speak raw QUIC.
pub struct RawClient {
    pub endpoint: quinn::Endpoint,
    pub config: quinn::ClientConfig,
}

impl RawClient {
    pub fn new(identity: NodeIdentity) -> anyhow::Result<Self> {
        let policy_of = identity.clone();
        Self::with_policy_of(identity, &policy_of)
    }

    /// Presents `identity` but judges the server as `policy_of` would (to get a certificate
    /// of another cluster past our own client-side checks).
    pub fn with_policy_of(
        identity: NodeIdentity,
        policy_of: &NodeIdentity,
    ) -> anyhow::Result<Self> {
        net::install_crypto_provider();
        let (events, _) = broadcast::channel(16);
        let policy = Arc::new(PeerPolicy::new(policy_of, [], events));
        let tls = TlsContext::new(identity, policy)?;
        let config = quinn::ClientConfig::new(tls.client_crypto(None)?);
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        Ok(Self { endpoint, config })
    }

    pub async fn connect(&self, addr: SocketAddr) -> anyhow::Result<quinn::Connection> {
        let connecting =
            self.endpoint
                .connect_with(self.config.clone(), addr, net::tls::SERVER_NAME)?;
        Ok(guard(connecting).await??)
    }
}

/// A time in the past, `days` ago.
pub fn days_ago(days: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(days * 86_400)
}

/// Writes one record on `writer`, syncs it to `reader`, and checks it arrived.
pub async fn assert_still_syncs(writer: &TestNode, reader: &TestNode, id: &str) -> TestResult {
    writer.net.connect(reader.addr(), None).await?;
    let op = WriteOp::Put {
        collection: "tasks".into(),
        value: json!({ "id": id }),
        recreate: false,
    };
    writer.with_store(move |s| s.transact(vec![op])).await??;
    let stats = guard(writer.net.sync_with(reader.net.node_id())).await??;
    assert_eq!(stats.txns_sent, 1, "{stats:?}");
    let id = id.to_owned();
    let row = reader.with_store(move |s| s.get("tasks", &id)).await??;
    assert!(row.is_some(), "record did not arrive");
    Ok(())
}
