//! A real `meshlite run` daemon as a child process, and keep-alive HTTP/1.1 connections to it:
//! what the HTTP benches (`rest_ratios`, `http_writes`) drive.
//!
//! [`Daemon::start`] writes a standalone configuration (the PMOVES schema, HTTP on an ephemeral
//! loopback port, discovery off), spawns the binary, and reads the HTTP address from its
//! `{"event":"ready",…}` line. [`Daemon::cpu`] is the CPU time of all the daemon's threads
//! (`/proc/<pid>/task/*/schedstat`, nanoseconds), so a bench divides a phase's daemon CPU by its
//! requests. [`Conn`] is one hyper HTTP/1.1 client connection (TCP_NODELAY, keep-alive).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use meshlite_fixtures::records::pmoves_schema_path;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// The `meshlite` binary: `explicit`, else `meshlite` next to the running bench binary, else
/// `target/release/meshlite`.
pub fn meshlite_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let beside = std::env::current_exe()?.with_file_name("meshlite");
    [beside, PathBuf::from("target/release/meshlite")]
        .into_iter()
        .find(|p| p.is_file())
        .context("no meshlite binary: cargo build --release -p meshlite-node, or pass --meshlite")
}

/// The daemon under test.
#[derive(Debug)]
pub struct Daemon {
    /// Its HTTP address.
    pub http: SocketAddr,
    /// Its process id.
    pub pid: u32,
    child: Child,
    _stdout: BufReader<ChildStdout>,
}

impl Daemon {
    /// Starts `binary` on a fresh data directory under `dir`, standalone, with the PMOVES
    /// schema; returns once it printed its ready line (its log goes to `dir/node.log`).
    pub async fn start(binary: &Path, dir: &Path) -> anyhow::Result<Daemon> {
        let config = dir.join("node.toml");
        let text = format!(
            "[node]\ndata = {data:?}\nname = \"bench\"\nschema = {schema:?}\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [discovery]\nmdns = false\ntailscale = false\n",
            data = dir.join("data"),
            schema = pmoves_schema_path(),
        );
        std::fs::write(&config, text)?;
        let log = std::fs::File::create(dir.join("node.log"))?;
        let mut child = Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("the daemon exited at once")?;
        let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(60), stdout.read_line(&mut line))
            .await
            .context("no ready line within 60 s")??;
        let ready: Value = serde_json::from_str(line.trim()).context("ready line")?;
        if ready["event"] != "ready" {
            bail!("first line is not the ready event: {line}");
        }
        let http = ready["http"].as_str().context("ready.http")?.parse()?;
        Ok(Daemon {
            http,
            pid,
            child,
            _stdout: stdout,
        })
    }

    /// CPU time of all the daemon's threads.
    pub fn cpu(&self) -> Duration {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return Duration::ZERO;
        };
        let ns = |e: std::fs::DirEntry| -> Option<u64> {
            let stat = std::fs::read_to_string(e.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse().ok()
        };
        Duration::from_nanos(tasks.filter_map(Result::ok).filter_map(ns).sum())
    }

    /// A `kB` field of the daemon's `/proc/<pid>/status`, in MiB.
    pub fn mib(&self, field: &str) -> f64 {
        let kib = crate::measure::proc_status_kib_of(&self.pid.to_string(), field).unwrap_or(0);
        kib as f64 / 1024.0
    }

    /// Stops it with SIGTERM and waits (at most 30 s) for it to exit.
    pub async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

/// One keep-alive HTTP/1.1 connection.
#[derive(Debug)]
pub struct Conn {
    send: http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Connects to `addr`.
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (send, conn) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(Conn { send })
    }

    /// One request with a JSON body (or none) and the given `Prefer` header; the answer's
    /// status and body.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        prefer: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.send.ready().await?;
        let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .header("prefer", prefer)
            .body(Full::new(bytes))?;
        let res = self.send.send_request(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// One request of a bench client: method, path and JSON body (or none).
pub type Call = (Method, String, Option<Value>);

/// Opens `clients` keep-alive connections to `addr`.
pub async fn open_conns(addr: SocketAddr, clients: usize) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(Conn::open(addr).await?);
    }
    Ok(conns)
}

/// Sends `per_client` requests on every connection, the connections concurrently (one task
/// each), and returns every request's latency. `source(c)` makes connection `c`'s requests (called
/// with the request's number); `check` judges each answer, and the first failure ends the run.
pub async fn drive<S, C>(
    conns: Vec<Conn>,
    per_client: usize,
    prefer: &'static str,
    mut source: impl FnMut(usize) -> S,
    check: C,
) -> anyhow::Result<Vec<Duration>>
where
    S: FnMut(usize) -> Call + Send + 'static,
    C: Fn(StatusCode, &Bytes) -> anyhow::Result<()> + Clone + Send + 'static,
{
    let mut tasks = Vec::with_capacity(conns.len());
    for (c, mut conn) in conns.into_iter().enumerate() {
        let mut next = source(c);
        let check = check.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for n in 0..per_client {
                let (method, path, body) = next(n);
                let start = Instant::now();
                let (status, bytes) = conn.call(method, &path, prefer, body.as_ref()).await?;
                lat.push(start.elapsed());
                check(status, &bytes)?;
            }
            anyhow::Ok(lat)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok(latencies)
}
