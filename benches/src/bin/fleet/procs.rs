//! The fleet's processes: fleet files, one config per node, start, the ready line, stop.
//!
//! Every node gets its own data directory and fleet bundle under one temporary directory, an
//! HTTP listener on an ephemeral loopback port (read back from the ready line), a QUIC listener
//! on a loopback port reserved beforehand (the others need it for their static peer lists),
//! mDNS and Tailscale off. Children are killed (SIGKILL) if the [`Fleet`] is dropped without
//! [`Fleet::stop`], so an error never leaves daemons behind.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// How long a node may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to exit after SIGTERM (the daemon's own grace is 5 s per part).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// What to start.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// The `meshlite` binary.
    pub binary: PathBuf,
    /// Number of nodes.
    pub nodes: usize,
    /// `sync.interval_seconds`, when not the daemon's default.
    pub interval: Option<u64>,
    /// Keep the temporary directory (data, configs, logs) after the run.
    pub keep: bool,
    /// Overlay mode at any size (`sync.direct_push_max_peers = 0`).
    pub overlay: bool,
}

/// One running node.
#[derive(Debug)]
pub struct Node {
    /// Its name (`n0`, `n1`, ...).
    pub name: String,
    /// Its HTTP listener.
    pub http: SocketAddr,
    /// Its process id.
    pub pid: u32,
    child: Child,
    /// Kept open so the daemon never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

/// The running fleet. Field order matters: the children are killed before the directory goes.
#[derive(Debug)]
pub struct Fleet {
    /// The nodes, in start order.
    pub nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

/// The daemon's ready line (the fields the bench uses).
#[derive(Debug, serde::Deserialize)]
struct Ready {
    event: String,
    http: SocketAddr,
}

impl Fleet {
    /// Creates the fleet files and starts every node; returns once all printed their ready line.
    pub async fn start(spec: &FleetSpec) -> anyhow::Result<Fleet> {
        let dir = tempfile::Builder::new()
            .prefix("meshlite-fleet-bench")
            .disable_cleanup(spec.keep)
            .tempdir()?;
        let fleet_dir = dir.path().join("fleet");
        meshlite(&spec.binary, &["fleet", "init"], &[fleet_dir.as_os_str()]).await?;
        let ports = reserve_udp_ports(spec.nodes)?;
        let mut children = Vec::with_capacity(spec.nodes);
        for (i, port) in ports.iter().enumerate() {
            let name = format!("n{i}");
            let name_os = std::ffi::OsStr::new(&name);
            meshlite(
                &spec.binary,
                &["fleet", "issue"],
                &[fleet_dir.as_os_str(), name_os],
            )
            .await?;
            let config = write_config(dir.path(), &name, *port, &ports, spec)?;
            children.push((
                name.clone(),
                spawn(&spec.binary, dir.path(), &name, &config)?,
            ));
        }
        let mut nodes = Vec::with_capacity(children.len());
        for (name, child) in children {
            nodes.push(await_ready(name, child).await?);
        }
        Ok(Fleet { nodes, dir })
    }

    /// Where the nodes' logs are (`<name>.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends SIGTERM to every node, then waits for each; returns the exit codes in node order
    /// (None: killed by a signal or did not stop in time).
    pub async fn stop(mut self) -> anyhow::Result<Vec<Option<i32>>> {
        for node in &self.nodes {
            let status = std::process::Command::new("kill")
                .args(["-TERM", &node.pid.to_string()])
                .status()
                .context("running kill")?;
            if !status.success() {
                bail!("kill -TERM {} ({}) failed: {status}", node.pid, node.name);
            }
        }
        let mut codes = Vec::with_capacity(self.nodes.len());
        for node in &mut self.nodes {
            let code = match tokio::time::timeout(STOP_TIMEOUT, node.child.wait()).await {
                Ok(status) => status?.code(),
                Err(_) => None,
            };
            codes.push(code);
        }
        Ok(codes)
    }
}

/// Runs one `meshlite` command to completion.
async fn meshlite(binary: &Path, args: &[&str], more: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
    let out = Command::new(binary)
        .args(args)
        .args(more)
        .output()
        .await
        .with_context(|| format!("running {}", binary.display()))?;
    if !out.status.success() {
        bail!(
            "meshlite {args:?} {more:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Loopback UDP ports that were free a moment ago: all bound at once (so they differ), then
/// released for the daemons to take.
fn reserve_udp_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let sockets = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    sockets.iter().map(|s| Ok(s.local_addr()?.port())).collect()
}

/// Writes `<name>.toml`: every other node is a static peer.
fn write_config(
    dir: &Path,
    name: &str,
    port: u16,
    ports: &[u16],
    spec: &FleetSpec,
) -> anyhow::Result<PathBuf> {
    let peers: Vec<String> = ports
        .iter()
        .filter(|&&p| p != port)
        .map(|p| format!("\"127.0.0.1:{p}\""))
        .collect();
    let mut sync = String::from("[sync]\n");
    if let Some(s) = spec.interval {
        sync.push_str(&format!("interval_seconds = {s}\n"));
    }
    // Overlay mode: every node dials from 127.0.0.1, so the per-source handshake limit (meant
    // for one peer per address) is raised.
    let transport = if spec.overlay {
        sync.push_str("direct_push_max_peers = 0\n");
        "handshake_burst_per_ip = 4096\nhandshake_rate_per_ip = 4096\n"
    } else {
        ""
    };
    let text = format!(
        "[node]\ndata = {data:?}\nname = \"{name}\"\nfleet_dir = {fleet:?}\n{sync}\
         [http]\nlisten = \"127.0.0.1:0\"\n\
         [transport]\nlisten = \"127.0.0.1:{port}\"\n{transport}\
         [discovery]\nmdns = false\ntailscale = false\nstatic_peers = [{peers}]\n",
        data = dir.join(format!("{name}-data")),
        fleet = dir.join("fleet").join("nodes").join(name),
        peers = peers.join(", "),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

fn spawn(binary: &Path, dir: &Path, name: &str, config: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    Command::new(binary)
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting node {name}"))
}

async fn await_ready(name: String, mut child: Child) -> anyhow::Result<Node> {
    let pid = child.id().context("node exited at once")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    tokio::time::timeout(READY_TIMEOUT, stdout.read_line(&mut line))
        .await
        .with_context(|| format!("node {name} printed no ready line"))??;
    let ready: Ready = serde_json::from_str(line.trim())
        .with_context(|| format!("node {name}: unexpected first line {line:?}"))?;
    if ready.event != "ready" {
        bail!("node {name}: first event is {:?}, not ready", ready.event);
    }
    Ok(Node {
        name,
        http: ready.http,
        pid,
        child,
        _stdout: stdout,
    })
}
