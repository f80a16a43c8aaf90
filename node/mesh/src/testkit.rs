//! Test and bench support (feature `testkit`): a fleet node in process — a real store served by
//! this crate's transport and gossip actor, started as `meshlite run` starts them (minus HTTP) —
//! that can be cut off the network and healed on the same address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshlite_core::Schema;
use meshlite_core::dissemination::{DisseminationConfig, Disseminator};
use meshlite_core::store::{OpenOptions, Store};
use tokio_util::sync::CancellationToken;

use crate::discovery::PeerTable;
use crate::fleet;
use crate::gossip::Gossip;
use crate::net::handle::NetHandle;
use crate::net::{TransportConfig, mesh};

/// Anti-entropy period of in-process nodes (short, so tests converge quickly).
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// A node in process. Must be started inside a tokio runtime.
#[derive(Debug)]
pub struct Node {
    /// Its store.
    pub store: Store,
    /// Its transport.
    pub net: NetHandle,
    /// Its certificate name.
    pub name: String,
    bundle: PathBuf,
    cancel: CancellationToken,
}

impl Node {
    /// Issues `name` a certificate of the fleet in `fleet_dir` and serves a store in `data`
    /// (opened with `schema`) on a loopback port of its own choosing.
    pub fn start(
        fleet_dir: &Path,
        name: &str,
        data: &Path,
        schema: Schema,
        root: &CancellationToken,
    ) -> Node {
        let issued = fleet::issue(fleet_dir, name, 30).expect("issue a node certificate");
        let opts = OpenOptions {
            schema: Some(schema),
            ..OpenOptions::default()
        };
        let store = Store::open(data, opts).expect("open the node's store");
        let cancel = root.child_token();
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let net = serve(&store, &issued.bundle_dir, name, listen, &cancel);
        Node {
            store,
            net,
            name: name.to_owned(),
            bundle: issued.bundle_dir,
            cancel,
        }
    }

    /// Cuts the node off the network (transport and gossip stop; its store keeps working).
    pub async fn cut_off(&mut self) {
        self.cancel.cancel();
        self.net.shutdown().await;
    }

    /// Brings the node back on the same address (peers redial it). The old endpoint's socket
    /// is released when its driver task ends, which may be a moment after `shutdown` returned:
    /// binding is retried for up to 5 s.
    pub async fn heal(&mut self, root: &CancellationToken) {
        let addr = self.net.local_addr();
        self.cancel = root.child_token();
        for attempt in 0.. {
            match try_serve(&self.store, &self.bundle, &self.name, addr, &self.cancel) {
                Ok(net) => {
                    self.net = net;
                    return;
                }
                Err(e) if attempt < 100 => {
                    tracing::debug!(error = %e, "rebinding {addr}; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot serve on {addr} again: {e}"),
            }
        }
    }

    /// Stops the transport and closes the store.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.net.shutdown().await;
        self.store
            .close_async()
            .await
            .expect("close the node's store");
    }
}

/// The transport and gossip actor over `store`.
fn serve(
    store: &Store,
    bundle: &Path,
    name: &str,
    listen: SocketAddr,
    cancel: &CancellationToken,
) -> NetHandle {
    try_serve(store, bundle, name, listen, cancel).expect("start the transport")
}

/// [`serve`], or why the transport did not start.
fn try_serve(
    store: &Store,
    bundle: &Path,
    name: &str,
    listen: SocketAddr,
    cancel: &CancellationToken,
) -> Result<NetHandle, crate::net::StartError> {
    let identity = fleet::load_node_identity(bundle).expect("load the node identity");
    let transport = TransportConfig {
        listen,
        ..TransportConfig::default()
    };
    let net = mesh::start(identity, transport, store.clone(), cancel.child_token())?;
    let seed = name
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let policy = Disseminator::new(
        DisseminationConfig::with_interval(SYNC_INTERVAL),
        seed,
        Instant::now(),
    )
    .expect("dissemination policy");
    let gossip = Gossip {
        store: store.clone(),
        net: net.clone(),
        table: PeerTable::new(Duration::from_secs(300)),
        policy,
        stats: Default::default(),
        cancel: cancel.child_token(),
    };
    tokio::spawn(gossip.run());
    Ok(net)
}
