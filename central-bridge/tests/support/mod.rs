//! Test support shared by the bridge's end-to-end tests (`fleet.rs`, `crash.rs`): in-process
//! fleet nodes (the mesh library over real SQLite stores, as `meshlite run` starts them) and
//! rows read back in the node's shape from either side.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshlite_core::Schema;
use meshlite_core::dissemination::{DisseminationConfig, Disseminator};
use meshlite_core::store::{OpenOptions, Store};
use meshlite_mesh::discovery::PeerTable;
use meshlite_mesh::fleet;
use meshlite_mesh::gossip::Gossip;
use meshlite_mesh::net::handle::NetHandle;
use meshlite_mesh::net::{TransportConfig, mesh};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The PMOVES schema.
pub fn pmoves() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/schemas/pmoves.toml")
}

/// A node: a real store served by the mesh library's transport and gossip actor.
pub struct Node {
    pub store: Store,
    pub net: NetHandle,
    pub name: String,
    bundle: PathBuf,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Issues `name` a certificate of the fleet in `fleet_dir` and serves a new store on a port
    /// of its own choosing (loopback).
    pub fn start(fleet_dir: &Path, name: &str, root: &CancellationToken) -> Node {
        let issued = fleet::issue(fleet_dir, name, 30).expect("issue");
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = OpenOptions {
            schema: Some(Schema::from_file(&pmoves()).expect("schema")),
            ..OpenOptions::default()
        };
        let store = Store::open(dir.path(), opts).expect("store");
        let cancel = root.child_token();
        let listen = "127.0.0.1:0".parse().expect("addr");
        let net = serve(&store, &issued.bundle_dir, name, listen, &cancel);
        Node {
            store,
            net,
            name: name.to_owned(),
            bundle: issued.bundle_dir,
            cancel,
            _dir: dir,
        }
    }

    /// Cuts the node off the network (transport and gossip stop; its store keeps working).
    pub async fn cut_off(&mut self) {
        self.cancel.cancel();
        self.net.shutdown().await;
    }

    /// Brings the node back on the same address (peers redial it).
    pub fn heal(&mut self, root: &CancellationToken) {
        let addr = self.net.local_addr();
        self.cancel = root.child_token();
        self.net = serve(&self.store, &self.bundle, &self.name, addr, &self.cancel);
    }

    /// Stops the transport and closes the store.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.net.shutdown().await;
        self.store.close_async().await.expect("close");
    }
}

/// The transport and gossip actor over `store`, as `meshlite run` starts them.
fn serve(
    store: &Store,
    bundle: &Path,
    name: &str,
    listen: SocketAddr,
    cancel: &CancellationToken,
) -> NetHandle {
    let identity = fleet::load_node_identity(bundle).expect("identity");
    let transport = TransportConfig {
        listen,
        ..TransportConfig::default()
    };
    let net = mesh::start(identity, transport, store.clone(), cancel.child_token()).expect("quic");
    let seed = name
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let policy = Disseminator::new(
        DisseminationConfig::with_interval(Duration::from_secs(1)),
        seed,
        Instant::now(),
    )
    .expect("policy");
    let gossip = Gossip {
        store: store.clone(),
        net: net.clone(),
        table: PeerTable::new(Duration::from_secs(300)),
        policy,
        stats: Default::default(),
        cancel: cancel.child_token(),
    };
    tokio::spawn(gossip.run());
    net
}

/// Task rows in Postgres in the node's shape (typed columns back to JSON, `_extra` merged,
/// metadata and NULLs left out, timestamps in UTC `Z` form); `Null` for a missing row.
pub async fn pg_task_rows(
    pg: &tokio_postgres::Client,
    ids: &[String],
) -> Result<Vec<Value>, String> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let row = pg
            .query_opt(
                "SELECT jsonb_strip_nulls(to_jsonb(t) - '_extra' - '_origin' - '_synced_at' || t._extra) \
                 FROM public.tasks t WHERE id::text = $1",
                &[id],
            )
            .await
            .map_err(|e| e.to_string())?;
        out.push(row.map_or(Value::Null, |r| utc_z(r.get(0))));
    }
    Ok(out)
}

/// The node's task rows; `Null` for a missing one.
pub async fn node_task_rows(store: &Store, ids: &[String]) -> Vec<Value> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let row = store.get_async("tasks", id).await.expect("read");
        out.push(row.unwrap_or(Value::Null));
    }
    out
}

/// Postgres renders a `timestamptz` as `...+00:00` (in a UTC session), nodes keep the RFC 3339
/// text they were given (`...Z`): the same instant, written two ways.
fn utc_z(row: Value) -> Value {
    match row {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) if s.ends_with("+00:00") => {
                        (k, Value::String(format!("{}Z", &s[..s.len() - 6])))
                    }
                    v => (k, v),
                })
                .collect(),
        ),
        other => other,
    }
}

/// A Postgres session in UTC, its connection driven in the background.
pub async fn connect_utc(url: &str) -> Result<tokio_postgres::Client, String> {
    let (pg, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    pg.batch_execute("SET TIME ZONE 'UTC'")
        .await
        .map_err(|e| e.to_string())?;
    Ok(pg)
}
