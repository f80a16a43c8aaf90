//! Harness of the `mesh_*` tests: real `meshlite run` processes talking over real sockets.
//!
//! - [`Fleet`]: a fleet CA in a temporary directory; issues node bundles (also certificates of
//!   another cluster signed by the same CA, for refusal tests) and hands out [`NodeConfig`]s
//!   whose data directory, config file and log live under the same temporary directory.
//! - [`NodeConfig`]: what one daemon is started with, rendered to a TOML file (the daemon's own
//!   format, so the tests also exercise it). Ports: see "Ports" below.
//! - [`NodeProc`]: one running daemon. Started from its config (optionally inside a network
//!   namespace), it is ready when it prints its `ready` line; its stderr goes to a log file that
//!   tests search and that is printed when a test fails (level `info`, or `MESHLITE_TEST_LOG`).
//!   It restarts on the same data directory and ports, stops with SIGTERM (returning the exit
//!   status), and is killed on drop. Its HTTP API has typed helpers (put, record, query, incr,
//!   txn, metrics, connected peers), each request bounded by the failure guard.
//! - Convergence helpers: [`converge`] polls `GET /v1/{collection}` on every node until all
//!   answers are identical, and panics with a per-record diff when the failure guard expires.
//!
//! Every wait is bounded by a generous failure guard; none is a timing assertion. Polling uses
//! the shared [`meshlite_fixtures::wait`] helpers.
//!
//! # Ports
//!
//! - HTTP and QUIC listen on port 0 by default: the daemon binds and reports the ports in its
//!   `ready` line, which pins them in [`NodeProc::cfg`]. Nothing can take them in between.
//! - Nodes that name each other as static peers before any of them starts (rings, full meshes)
//!   need their QUIC address up front, and the daemon can neither inherit a bound socket nor
//!   learn peers later. [`Fleet::linked_node`] / [`NodeConfig::reserve_quic`] pick a port that
//!   is free when reserved; if another process binds it before the daemon does, the daemon exits
//!   with "address in use", and [`NodeProc::start_all`] stops the whole batch, wipes its
//!   directories, moves every reserved node to a fresh port (rewriting the static peers that
//!   named the old ones) and starts again. A lost race costs a retry, never a wrong peer.
//! - [`NodeProc::restart`] binds the ports the node itself just released: its peers must find
//!   it where they knew it (after SIGKILL, its stateless resets must reach the peers' stale
//!   connections). No socket can hold a port across the gap between two processes; if another
//!   process took it, the restart fails loudly with the daemon's "address in use" in the log.

#![allow(dead_code)] // Each test binary uses a different subset.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use meshlite_core::store::{OpenOptions as StoreOptions, Query, Store};
pub use meshlite_fixtures::wait::poll_until;
use meshlite_mesh::fleet::files::FleetFile;
use meshlite_mesh::fleet::{self, CertSpec, ClusterId, FleetCa, NodeName};
use meshlite_node::httpc;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The daemon binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_meshlite");
/// Failure guard for convergence and other "soon" conditions; never a performance assertion.
pub const GUARD: Duration = Duration::from_secs(30);
/// Failure guard for a daemon to print its ready line or to exit after a signal.
pub const PROCESS_GUARD: Duration = Duration::from_secs(30);
/// Starts of a batch of nodes with reserved QUIC ports, each on fresh ports after a conflict.
const START_ATTEMPTS: usize = 3;

/// The `JWT_SECRET` of nodes whose HTTP listener is not on loopback (network-namespace tests);
/// [`NodeProc::try_request`] sends them a service_role key.
const HARNESS_JWT_SECRET: &str = "mesh-harness-secret-for-public-http-listeners";

/// Environment variables that override the config file: cleared so the host cannot leak in.
const OVERRIDES: &[&str] = &[
    "MESHLITE_DATA",
    "MESHLITE_NAME",
    "MESHLITE_FLEET_DIR",
    "MESHLITE_SCHEMA",
    "MESHLITE_HTTP_LISTEN",
    "MESHLITE_LISTEN",
    "MESHLITE_STATIC_PEERS",
    "MESHLITE_MDNS",
    "SUPABASE_MODE",
    "SYNC_TABLES",
    "SYNC_INTERVAL_SECONDS",
    "SYNC_BATCH_SIZE",
    "NATS_URL",
    "JWT_SECRET",
    "ANON_KEY",
    "SERVICE_ROLE_KEY",
];

/// The PMOVES schema (tasks.status is a priority field, tasks.retry_count a counter).
pub fn pmoves_schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/schemas/pmoves.toml")
}

/// A UDP port free on `ip` when reserved, for a daemon that must be named before it starts
/// (see "Ports" in the module doc: only [`NodeProc::start_all`]'s retry makes this safe).
fn reserve_udp_port(ip: Ipv4Addr) -> u16 {
    UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fleet CA (and a workspace for its nodes) in a temporary directory.
pub struct Fleet {
    root: TempDir,
    dir: PathBuf,
    /// The fleet's cluster id.
    pub cluster_id: ClusterId,
}

impl Fleet {
    /// `meshlite fleet init` in a new temporary directory.
    pub fn new() -> Self {
        let root = tempfile::Builder::new()
            .prefix("meshlite-mesh-")
            .tempdir()
            .unwrap();
        let dir = root.path().join("fleet");
        let info = fleet::init(&dir).unwrap();
        Self {
            root,
            dir,
            cluster_id: info.cluster_id,
        }
    }

    /// The temporary directory holding the CA, bundles and nodes.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// `meshlite fleet issue`: the node bundle directory.
    pub fn issue(&self, name: &str) -> PathBuf {
        fleet::issue(&self.dir, name, 30).unwrap().bundle_dir
    }

    /// A bundle for `name` whose certificate ends at `not_after` (signed by this fleet's CA with
    /// rcgen, like `fleet issue`, but with an exact end of validity).
    pub fn issue_until(&self, name: &str, not_after: std::time::SystemTime) -> PathBuf {
        let ca = FleetCa::load(&self.dir).unwrap();
        let mut spec = CertSpec::new(&ca, NodeName::new(name).unwrap(), 1);
        spec.not_after = not_after;
        let issued = ca.issue_cert(&spec).unwrap();
        let ours = FleetFile::read(&self.dir.join("fleet.toml")).unwrap();
        let bundle = self.root().join("bundles").join(name);
        std::fs::create_dir_all(&bundle).unwrap();
        let file = FleetFile {
            cluster_id: self.cluster_id,
            ca_fingerprint: ours.ca_fingerprint,
            node_name: Some(issued.node_name.clone()),
            node_id: Some(issued.node_id),
            not_after_unix: None,
        };
        write_private(&bundle.join("node.key"), &issued.key_pem);
        std::fs::write(bundle.join("node.pem"), &issued.cert_pem).unwrap();
        std::fs::write(bundle.join("ca.pem"), ca.trusted_pem()).unwrap();
        std::fs::write(bundle.join("fleet.toml"), file.render().unwrap()).unwrap();
        bundle
    }

    /// A bundle signed by this fleet's CA whose certificate names another cluster (what a node
    /// of a sibling fleet sharing the CA would hold).
    pub fn issue_other_cluster(&self, name: &str, cluster: ClusterId) -> PathBuf {
        let ca = FleetCa::load(&self.dir).unwrap();
        let mut spec = CertSpec::new(&ca, NodeName::new(name).unwrap(), 30);
        spec.cluster_id = cluster;
        let issued = ca.issue_cert(&spec).unwrap();
        let ours = FleetFile::read(&self.dir.join("fleet.toml")).unwrap();
        let bundle = self.root().join("other-cluster").join(name);
        std::fs::create_dir_all(&bundle).unwrap();
        let file = FleetFile {
            cluster_id: cluster,
            ca_fingerprint: ours.ca_fingerprint,
            node_name: Some(issued.node_name.clone()),
            node_id: Some(issued.node_id),
            not_after_unix: None,
        };
        write_private(&bundle.join("node.key"), &issued.key_pem);
        std::fs::write(bundle.join("node.pem"), &issued.cert_pem).unwrap();
        std::fs::write(bundle.join("ca.pem"), ca.trusted_pem()).unwrap();
        std::fs::write(bundle.join("fleet.toml"), file.render().unwrap()).unwrap();
        bundle
    }

    /// Issues `name` and returns a loopback config for it: pmoves schema, 1 s anti-entropy,
    /// ports chosen by the daemon, no discovery but the static peers the caller adds.
    pub fn node(&self, name: &str) -> NodeConfig {
        let bundle = self.issue(name);
        NodeConfig::loopback(name, self.root().join("nodes").join(name), Some(bundle))
    }

    /// [`Self::node`] with a reserved QUIC port, for nodes listed as static peers by nodes that
    /// start with them.
    pub fn linked_node(&self, name: &str) -> NodeConfig {
        let mut cfg = self.node(name);
        cfg.reserve_quic();
        cfg
    }
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// mDNS settings of a node.
#[derive(Debug, Clone)]
pub struct Mdns {
    /// Interfaces (`["lo"]` on loopback).
    pub interfaces: Vec<String>,
    /// A private mDNS port shared by the test's nodes.
    pub port: u16,
}

/// What one daemon is started with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `node.name`.
    pub name: String,
    /// The node's own directory: `config.toml`, `data/`, `node.log`.
    pub dir: PathBuf,
    /// `node.fleet_dir` (None: no mesh).
    pub fleet_dir: Option<PathBuf>,
    /// `node.schema`.
    pub schema: Option<PathBuf>,
    /// `http.listen` (port 0 on the first start; pinned to the bound port afterwards).
    pub http: SocketAddr,
    /// `transport.listen` (port 0 unless reserved; pinned to the bound port after the start).
    pub quic: SocketAddr,
    /// Whether `quic` is a reserved port that others name (moved on a start conflict).
    pub reserved_quic: bool,
    /// `discovery.static_peers`.
    pub static_peers: Vec<String>,
    /// `sync.interval_seconds`.
    pub interval_seconds: u64,
    /// `discovery.mdns` (None: off).
    pub mdns: Option<Mdns>,
    /// Extra `[transport]` keys (timers for partition tests).
    pub transport: toml::Table,
    /// Extra `[http]` keys (listener limits).
    pub http_limits: toml::Table,
    /// Extra `[sync]` keys (dissemination thresholds).
    pub sync: toml::Table,
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    /// Extra environment variables of the process.
    pub env: Vec<(String, String)>,
}

impl NodeConfig {
    /// A node on 127.0.0.1; the daemon picks its ports.
    pub fn loopback(name: &str, dir: PathBuf, fleet_dir: Option<PathBuf>) -> Self {
        let ip = Ipv4Addr::LOCALHOST;
        Self {
            name: name.to_owned(),
            dir,
            fleet_dir,
            schema: Some(pmoves_schema()),
            http: SocketAddr::from((ip, 0)),
            quic: SocketAddr::from((ip, 0)),
            reserved_quic: false,
            static_peers: Vec::new(),
            interval_seconds: 1,
            mdns: None,
            transport: toml::Table::new(),
            http_limits: toml::Table::new(),
            sync: toml::Table::new(),
            netns: None,
            env: Vec::new(),
        }
    }

    /// Reserves a QUIC port now, so that nodes starting together can name this one.
    pub fn reserve_quic(&mut self) {
        let Self { quic, .. } = self;
        let SocketAddr::V4(v4) = quic else {
            panic!("{}: only IPv4 QUIC addresses are reserved", self.name)
        };
        *quic = SocketAddr::from((*v4.ip(), reserve_udp_port(*v4.ip())));
        self.reserved_quic = true;
    }

    /// The peer address other nodes list to reach this one (known once it started, or
    /// reserved with [`Self::reserve_quic`]).
    pub fn peer_addr(&self) -> String {
        assert_ne!(
            self.quic.port(),
            0,
            "{} has no QUIC port before it starts: reserve one (Fleet::linked_node) to name it",
            self.name
        );
        self.quic.to_string()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// The daemon's TOML configuration.
    pub fn render(&self) -> String {
        let path = |p: &Path| toml::Value::String(p.display().to_string());
        let mut node = toml::Table::new();
        node.insert("name".into(), self.name.clone().into());
        node.insert("data".into(), path(&self.data_dir()));
        if let Some(f) = &self.fleet_dir {
            node.insert("fleet_dir".into(), path(f));
        }
        if let Some(s) = &self.schema {
            node.insert("schema".into(), path(s));
        }
        let mut discovery = toml::Table::new();
        discovery.insert("mdns".into(), self.mdns.is_some().into());
        discovery.insert("tailscale".into(), false.into());
        discovery.insert("static_peers".into(), self.static_peers.clone().into());
        if let Some(m) = &self.mdns {
            discovery.insert("mdns_interfaces".into(), m.interfaces.clone().into());
            discovery.insert("mdns_port".into(), i64::from(m.port).into());
        }
        let mut transport = self.transport.clone();
        transport.insert("listen".into(), self.quic.to_string().into());
        let mut http = self.http_limits.clone();
        http.insert("listen".into(), self.http.to_string().into());
        let section = |k: &str, v: toml::Value| (k.to_owned(), v);
        let mut sync = self.sync.clone();
        sync.insert(
            "interval_seconds".into(),
            (self.interval_seconds as i64).into(),
        );
        let mut table: toml::Table = [
            ("node".to_owned(), node.into()),
            ("sync".to_owned(), sync.into()),
            ("http".to_owned(), http.into()),
            ("transport".to_owned(), transport.into()),
            ("discovery".to_owned(), discovery.into()),
        ]
        .into_iter()
        .collect();
        if !self.http.ip().is_loopback() {
            // A public listener needs a secret; the harness presents the service key.
            let secret = section("jwt_secret", HARNESS_JWT_SECRET.into());
            table.insert("auth".into(), self::table([secret]));
        }
        toml::to_string(&table).unwrap()
    }
}

fn table(entries: impl IntoIterator<Item = (String, toml::Value)>) -> toml::Value {
    toml::Value::Table(entries.into_iter().collect())
}

/// The daemon's `ready` line.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Ready {
    pub http: SocketAddr,
    pub quic: Option<SocketAddr>,
    pub node_id: Option<String>,
    pub replica: String,
}

/// A running `meshlite run` process (killed on drop).
pub struct NodeProc {
    /// Its configuration (the HTTP port is pinned after the first start).
    pub cfg: NodeConfig,
    /// What it printed when it became ready.
    pub ready: Ready,
    child: Option<Child>,
    /// Kept open so the daemon never writes to a closed pipe.
    _stdout: Option<Lines<BufReader<ChildStdout>>>,
}

impl std::fmt::Debug for NodeProc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeProc")
            .field("name", &self.cfg.name)
            .field("ready", &self.ready)
            .finish()
    }
}

/// Why a daemon did not become ready.
#[derive(Debug)]
struct StartFailure {
    /// What happened, with the daemon's log.
    report: String,
    /// The daemon could not bind a port another process holds.
    addr_in_use: bool,
}

impl NodeProc {
    /// Writes the config, starts the daemon and waits for its ready line.
    pub async fn start(cfg: NodeConfig) -> Self {
        Self::start_all(vec![cfg]).await.pop().unwrap()
    }

    /// Starts every config at once (in parallel: each start waits for its ready line). If a
    /// reserved QUIC port was taken by another process, the batch starts again from empty node
    /// directories on fresh ports (see "Ports" in the module doc).
    pub async fn start_all(mut cfgs: Vec<NodeConfig>) -> Vec<NodeProc> {
        let mut attempt = 1;
        loop {
            let failure = match Self::try_start_all(&cfgs).await {
                Ok(nodes) => return nodes,
                Err(failure) => failure,
            };
            let retry = failure.addr_in_use && cfgs.iter().any(|c| c.reserved_quic);
            if !retry || attempt == START_ATTEMPTS {
                panic!("{}", failure.report);
            }
            eprintln!(
                "start attempt {attempt}: a port was taken; starting again on fresh ports\n{}",
                failure.report
            );
            move_reserved_ports(&mut cfgs);
            attempt += 1;
        }
    }

    /// Starts every config; on any failure stops those that started.
    async fn try_start_all(cfgs: &[NodeConfig]) -> Result<Vec<NodeProc>, StartFailure> {
        let tasks: Vec<_> = cfgs
            .iter()
            .map(|c| tokio::spawn(NodeProc::try_start(c.clone())))
            .collect();
        let (mut nodes, mut failure) = (Vec::new(), None);
        for t in tasks {
            match t.await.unwrap() {
                Ok(node) => nodes.push(node),
                // Report a port conflict (retried) over any other failure.
                Err(f)
                    if failure
                        .as_ref()
                        .is_none_or(|p: &StartFailure| !p.addr_in_use) =>
                {
                    failure = Some(f)
                }
                Err(_) => {}
            }
        }
        let Some(failure) = failure else {
            return Ok(nodes);
        };
        for node in &mut nodes {
            node.kill().await;
        }
        Err(failure)
    }

    /// Starts one daemon and pins the ports it reports.
    async fn try_start(mut cfg: NodeConfig) -> Result<Self, StartFailure> {
        std::fs::create_dir_all(&cfg.dir).unwrap();
        let (child, stdout, ready) = spawn(&cfg).await?;
        cfg.http = ready.http;
        if let Some(quic) = ready.quic {
            cfg.quic = quic;
        }
        Ok(Self {
            cfg,
            ready,
            child: Some(child),
            _stdout: Some(stdout),
        })
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn http(&self) -> SocketAddr {
        self.ready.http
    }

    pub fn node_id(&self) -> &str {
        self.ready.node_id.as_deref().unwrap_or("")
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("the node is running")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends a signal (`TERM`, `KILL`, `STOP`, `CONT`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} {} failed", self.name());
    }

    /// SIGTERM, then waits for the exit; returns the exit status.
    pub async fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit().await
    }

    /// SIGKILL, then waits for the exit.
    pub async fn kill(&mut self) -> ExitStatus {
        self.signal("KILL");
        self.wait_exit().await
    }

    /// Waits for the process to exit (after a signal sent with [`Self::signal`]).
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the node is running");
        let status = match tokio::time::timeout(PROCESS_GUARD, child.wait()).await {
            Ok(s) => s.unwrap(),
            Err(_) => panic!(
                "{} did not exit within {PROCESS_GUARD:?}\n{}",
                self.name(),
                self.log_tail(40)
            ),
        };
        self._stdout = None;
        status
    }

    /// Starts the daemon again on the same data directory, ports and config (rebinding the
    /// ports it released; see "Ports" in the module doc).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running node");
        let (child, stdout, ready) = match spawn(&self.cfg).await {
            Ok(started) => started,
            Err(failure) => panic!("restart: {}", failure.report),
        };
        assert_eq!(
            ready.http, self.ready.http,
            "restarted on another HTTP port"
        );
        self.ready = ready;
        self.child = Some(child);
        self._stdout = Some(stdout);
    }

    /// Reads `collection` straight from the stopped node's data directory (what survived on
    /// disk, before any peer can hand it back).
    pub fn offline_query(&self, collection: &str) -> Vec<Value> {
        assert!(self.child.is_none(), "offline read of a running node");
        // The store blocks (Tokio forbids that on a runtime thread): use a plain thread.
        std::thread::scope(|s| {
            s.spawn(|| {
                let store = Store::open(&self.cfg.data_dir(), StoreOptions::default()).unwrap();
                let rows = store.query(collection, &Query::default()).unwrap();
                store.close().unwrap();
                rows
            })
            .join()
            .unwrap()
        })
    }

    /// Everything the daemon logged (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.cfg.log_path()).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "--- last log lines of {} ---\n{}",
            self.name(),
            all[start..].join("\n")
        )
    }

    // ---- HTTP API ----

    /// One request, bounded by [`GUARD`] (a stuck daemon fails the test instead of hanging it);
    /// the body parsed as JSON (a non-JSON body becomes a JSON string).
    pub async fn try_request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), String> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let http = self.http();
        let key = (!http.ip().is_loopback()).then(|| {
            let now = meshlite_node::auth::unix_now();
            let role = meshlite_node::auth::Role::ServiceRole;
            meshlite_node::auth::jwt::sign_key(HARNESS_JWT_SECRET, role, now, 3600).unwrap()
        });
        let headers: Vec<(&str, &str)> = key.iter().map(|k| ("apikey", k.as_str())).collect();
        let request = httpc::request_with(http, method, path, &headers, bytes);
        let (status, _, body) = match tokio::time::timeout(GUARD, request).await {
            Ok(answer) => answer
                .map(httpc::Answer::into_parts)
                .map_err(|e| e.to_string())?,
            Err(_) => return Err(format!("no answer within the {GUARD:?} failure guard")),
        };
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        Ok((status, value))
    }

    /// [`Self::try_request`] that must reach the daemon.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        match self.try_request(method.clone(), path, body).await {
            Ok(r) => r,
            Err(e) => panic!(
                "{method} {path} on {}: {e}\n{}",
                self.name(),
                self.log_tail(30)
            ),
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, Some(body)).await
    }

    /// `POST /v1/{collection}` that must succeed; returns the response (`txn`, `rows`).
    pub async fn put(&self, collection: &str, value: Value) -> Value {
        let (status, body) = self.post(&format!("/v1/{collection}"), &value).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "put {collection} {value} on {}: {body}",
            self.name()
        );
        body
    }

    /// `GET /v1/{collection}/{id}`: None on 404.
    pub async fn record(&self, collection: &str, id: &str) -> Option<Value> {
        let (status, body) = self.get(&format!("/v1/{collection}/{id}")).await;
        match status {
            StatusCode::OK => Some(body),
            StatusCode::NOT_FOUND => None,
            other => panic!("get {collection}/{id} on {}: {other} {body}", self.name()),
        }
    }

    /// `GET /v1/{collection}`: every live record, ordered by id (paged: the API returns at most
    /// 1,000 rows per request).
    pub async fn query(&self, collection: &str) -> Vec<Value> {
        const PAGE: usize = 1000;
        let mut all = Vec::new();
        loop {
            let path = format!("/v1/{collection}?limit={PAGE}&offset={}", all.len());
            let (status, body) = self.get(&path).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "query {collection} on {}: {body}",
                self.name()
            );
            let rows = match body {
                Value::Array(rows) => rows,
                other => panic!("query {collection} on {} returned {other}", self.name()),
            };
            let last = rows.len() < PAGE;
            all.extend(rows);
            if last {
                return all;
            }
        }
    }

    /// `DELETE /v1/{collection}/{id}`.
    pub async fn delete(&self, collection: &str, id: &str) -> (StatusCode, Value) {
        self.request(Method::DELETE, &format!("/v1/{collection}/{id}"), None)
            .await
    }

    /// `POST /v1/{collection}/{id}/incr` that must succeed.
    pub async fn incr(&self, collection: &str, id: &str, field: &str, by: i64) {
        let (status, body) = self
            .post(
                &format!("/v1/{collection}/{id}/incr"),
                &json!({ "field": field, "by": by }),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "incr {collection}/{id}.{field} on {}: {body}",
            self.name()
        );
    }

    /// `POST /v1/txn`.
    pub async fn txn(&self, ops: &Value) -> (StatusCode, Value) {
        self.post("/v1/txn", ops).await
    }

    /// `GET /healthz`.
    pub async fn healthz(&self) -> (StatusCode, Value) {
        self.get("/healthz").await
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        match self.get("/metrics").await {
            (StatusCode::OK, Value::String(text)) => text,
            (status, body) => panic!("/metrics on {}: {status} {body}", self.name()),
        }
    }

    /// One sample of `/metrics`, e.g. `meshlite_sync_rounds_total{result="ok"}`; 0 if absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics().await, sample)
    }

    /// Completed anti-entropy rounds.
    pub async fn sync_rounds_ok(&self) -> f64 {
        self.metric("meshlite_sync_rounds_total{result=\"ok\"}")
            .await
    }

    /// Node ids of the connected QUIC peers (`GET /peers`).
    pub async fn connected(&self) -> Vec<String> {
        let (status, body) = self.get("/peers").await;
        assert_eq!(status, StatusCode::OK, "/peers on {}: {body}", self.name());
        let mut ids: Vec<String> = body["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["node_id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    }

    /// `GET /peers` as JSON.
    pub async fn peers(&self) -> Value {
        self.get("/peers").await.1
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // SIGKILL also ends a SIGSTOPped process.
            let _ = child.start_kill();
            if std::thread::panicking() {
                eprintln!("{}", self.log_tail(40));
            }
        }
    }
}

/// Moves every reserved QUIC port of `cfgs` to a fresh one, rewrites the static peers naming
/// the old ones, and empties every node directory for a clean start.
fn move_reserved_ports(cfgs: &mut [NodeConfig]) {
    let mut moved = BTreeMap::new();
    for cfg in cfgs.iter_mut().filter(|c| c.reserved_quic) {
        let old = cfg.quic.to_string();
        cfg.reserve_quic();
        moved.insert(old, cfg.quic.to_string());
    }
    for cfg in cfgs.iter_mut() {
        for peer in &mut cfg.static_peers {
            if let Some(new) = moved.get(peer.as_str()) {
                peer.clone_from(new);
            }
        }
        let _ = std::fs::remove_dir_all(&cfg.dir);
    }
}

/// Spawns the daemon for `cfg` and waits for its ready line.
async fn spawn(
    cfg: &NodeConfig,
) -> Result<(Child, Lines<BufReader<ChildStdout>>, Ready), StartFailure> {
    std::fs::write(cfg.config_path(), cfg.render()).unwrap();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(cfg.log_path())
        .unwrap();
    let mut cmd = match &cfg.netns {
        Some(ns) => {
            let mut c = Command::new(ip_command());
            c.args(["netns", "exec", ns]).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    cmd.arg("run").arg("--config").arg(cfg.config_path());
    for k in OVERRIDES {
        cmd.env_remove(k);
    }
    cmd.env(
        "MESHLITE_LOG",
        // At least info: tests look for info lines; MESHLITE_TEST_LOG=debug helps debugging.
        std::env::var("MESHLITE_TEST_LOG").unwrap_or_else(|_| "info".into()),
    );
    cmd.envs(cfg.env.iter().map(|(k, v)| (k, v)));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Ok(r) = serde_json::from_str::<Ready>(&line) {
                return Some(r);
            }
        }
        None
    };
    let tail = || {
        let log = std::fs::read_to_string(cfg.log_path()).unwrap_or_default();
        format!("--- log of {} ---\n{log}", cfg.name)
    };
    match tokio::time::timeout(PROCESS_GUARD, ready).await {
        Ok(Some(r)) => Ok((child, lines, r)),
        Ok(None) => {
            let status = child.wait().await;
            let log = tail();
            Err(StartFailure {
                addr_in_use: log.contains("Address already in use"),
                report: format!("{} exited before it was ready: {status:?}\n{log}", cfg.name),
            })
        }
        Err(_) => Err(StartFailure {
            addr_in_use: false,
            report: format!(
                "{} was not ready within {PROCESS_GUARD:?}\n{}",
                cfg.name,
                tail()
            ),
        }),
    }
}

/// The `ip` tool (iproute2).
pub fn ip_command() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("ip")
}

/// The value of one sample line of a Prometheus exposition; 0 if absent.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Each node's answer to `GET /v1/{collection}` for every collection.
pub type Snapshot = BTreeMap<String, Vec<Value>>;

pub async fn snapshot(node: &NodeProc, collections: &[&str]) -> Snapshot {
    let mut out = Snapshot::new();
    for c in collections {
        out.insert((*c).to_owned(), node.query(c).await);
    }
    out
}

/// Waits until every node answers every `GET /v1/{collection}` identically; returns the common
/// snapshot and how long it took. On expiry of [`GUARD`] panics with a per-record diff.
pub async fn converge(nodes: &[&NodeProc], collections: &[&str]) -> (Snapshot, Duration) {
    converge_within(nodes, collections, GUARD).await
}

/// [`converge`] with another failure guard.
pub async fn converge_within(
    nodes: &[&NodeProc],
    collections: &[&str],
    guard: Duration,
) -> (Snapshot, Duration) {
    let start = Instant::now();
    let snap = poll_until("convergence", guard, || async {
        let mut snaps = Vec::new();
        for n in nodes {
            snaps.push(snapshot(n, collections).await);
        }
        match snaps.iter().all(|s| *s == snaps[0]) {
            true => Ok(snaps.swap_remove(0)),
            false => Err(diff(nodes, &snaps)),
        }
    })
    .await;
    (snap, start.elapsed())
}

/// Per collection and record id, what each node holds where they disagree.
pub fn diff(nodes: &[&NodeProc], snaps: &[Snapshot]) -> String {
    let mut out = String::new();
    let Some(first) = snaps.first() else {
        return out;
    };
    for collection in first.keys() {
        let mut by_id: BTreeMap<String, Vec<Option<&Value>>> = BTreeMap::new();
        for (i, s) in snaps.iter().enumerate() {
            for row in s.get(collection).into_iter().flatten() {
                let id = row["id"]
                    .as_str()
                    .map_or_else(|| row["id"].to_string(), str::to_owned);
                by_id.entry(id).or_insert_with(|| vec![None; snaps.len()])[i] = Some(row);
            }
        }
        for (id, rows) in by_id {
            if rows.iter().all(|r| *r == rows[0]) {
                continue;
            }
            out.push_str(&format!("{collection}/{id}:\n"));
            for (n, row) in nodes.iter().zip(rows) {
                let shown = row.map_or_else(|| "(absent)".to_owned(), Value::to_string);
                out.push_str(&format!("  {:>8}: {shown}\n", n.name()));
            }
        }
    }
    out
}

/// Waits until `node` is connected to exactly the nodes `peers` (by node id).
pub async fn wait_connected(node: &NodeProc, peers: &[&NodeProc]) {
    let mut want: Vec<String> = peers.iter().map(|p| p.node_id().to_owned()).collect();
    want.sort();
    poll_until(
        &format!("{} connected to {:?}", node.name(), want),
        GUARD,
        || async {
            let have = node.connected().await;
            if have == want {
                Ok(())
            } else {
                Err(format!("connected: {have:?}"))
            }
        },
    )
    .await;
}

/// Waits until every node has completed `rounds` more anti-entropy rounds than it had now.
pub async fn wait_sync_rounds(nodes: &[&NodeProc], rounds: f64) {
    let mut base = Vec::new();
    for n in nodes {
        base.push(n.sync_rounds_ok().await);
    }
    for (n, b) in nodes.iter().zip(base) {
        poll_until(
            &format!("{} to complete {rounds} sync rounds", n.name()),
            GUARD,
            || async {
                let now = n.sync_rounds_ok().await;
                if now >= b + rounds {
                    Ok(())
                } else {
                    Err(format!("rounds ok: {b} -> {now}"))
                }
            },
        )
        .await;
    }
}

/// Waits until every node is connected to every other.
pub async fn wait_full_mesh(nodes: &[NodeProc]) {
    for (i, n) in nodes.iter().enumerate() {
        let others: Vec<&NodeProc> = nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, o)| o)
            .collect();
        wait_connected(n, &others).await;
    }
}

/// Nodes named `names`, each listing the others as static peers, started together and connected
/// to each other; `configure` adjusts each config (by index) before the start.
pub async fn full_mesh(
    fleet: &Fleet,
    names: &[&str],
    configure: impl FnMut(usize, &mut NodeConfig),
) -> Vec<NodeProc> {
    let nodes = all_listed(fleet, names, configure).await;
    wait_full_mesh(&nodes).await;
    nodes
}

/// Nodes named `names`, each listing the others as static peers, started together (without
/// waiting for connections); `configure` adjusts each config (by index) before the start.
pub async fn all_listed(
    fleet: &Fleet,
    names: &[&str],
    mut configure: impl FnMut(usize, &mut NodeConfig),
) -> Vec<NodeProc> {
    let mut cfgs: Vec<_> = names.iter().map(|n| fleet.linked_node(n)).collect();
    let addrs: Vec<String> = cfgs.iter().map(NodeConfig::peer_addr).collect();
    for (i, c) in cfgs.iter_mut().enumerate() {
        c.static_peers = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| a.clone())
            .collect();
        configure(i, c);
    }
    NodeProc::start_all(cfgs).await
}

/// The `id` of every row.
pub fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The integer `field` of the row whose id is `id` (0 when absent).
pub fn int_field(rows: &[Value], id: &str, field: &str) -> i64 {
    rows.iter()
        .find(|r| r["id"] == id)
        .and_then(|r| r[field].as_i64())
        .unwrap_or(0)
}
