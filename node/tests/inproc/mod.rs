//! The node's HTTP listener in the test's own process, over a fresh store: shared by the API
//! tests that need real HTTP but no daemon process (`api_native.rs`, `rest_model.rs`,
//! `rest_auth.rs`).

#![allow(dead_code)] // Each test binary uses a different subset.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshlite_core::schema::Schema;
use meshlite_core::store::{OpenOptions, Store};
use meshlite_mesh::discovery::table::PeerTable;
use meshlite_node::auth::Auth;
use meshlite_node::config::{HttpSection, RegistrySection, SyncSection};
use meshlite_node::state::AppState;
use tokio_util::sync::CancellationToken;

/// A listener on a fresh store; the guard holds the directory and stops the server when dropped.
pub struct Server {
    pub addr: SocketAddr,
    /// The served store (the same handle the handlers use).
    pub store: Store,
    dir: tempfile::TempDir,
    cancel: CancellationToken,
}

impl Server {
    /// The data directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Serves a store opened with `schema` (schemaless when `None`) on a loopback port, auth off
/// (the embedded default).
pub async fn serve(schema: Option<Schema>, node_name: &str) -> Server {
    serve_with(schema, node_name, Auth::off()).await
}

/// As [`serve`], with `auth`.
pub async fn serve_with(schema: Option<Schema>, node_name: &str, auth: Auth) -> Server {
    let opts = OpenOptions {
        schema,
        ..OpenOptions::default()
    };
    serve_opts(opts, node_name, auth).await
}

/// As [`serve_with`], the store opened with `opts`.
pub async fn serve_opts(opts: OpenOptions, node_name: &str, auth: Auth) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_owned();
    let store = tokio::task::spawn_blocking(move || Store::open(&path, opts))
        .await
        .expect("join")
        .expect("open the store");
    let cancel = CancellationToken::new();
    let state = AppState {
        store: store.clone(),
        net: None,
        table: PeerTable::new(Duration::from_secs(60)),
        gossip: None,
        epidemic: None,
        nats: None,
        node_name: node_name.into(),
        cert: None,
        started: Instant::now(),
        http: HttpSection {
            listen: ([127, 0, 0, 1], 0).into(),
            ..HttpSection::default()
        },
        registry: RegistrySection::default(),
        sync: SyncSection::default(),
        shutdown: cancel.clone(),
        auth: std::sync::Arc::new(auth),
    };
    let (addr, _task) = meshlite_node::http::serve(state, cancel.clone())
        .await
        .expect("serve");
    Server {
        addr,
        store,
        dir,
        cancel,
    }
}
