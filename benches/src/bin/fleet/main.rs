//! Fleet bench: N real `meshlite run` processes on loopback, W writes spread over them, and how
//! long each write takes to become visible everywhere.
//!
//! ```sh
//! cargo build --release -p meshlite-node -p meshlite-benches
//! target/release/fleet --nodes 20 --writes 1000 --rate 200
//! ```
//!
//! Phases, in order (one module each beside this file):
//! 1. [`procs`]: a fleet CA and one certificate per node in a temporary directory; every node
//!    gets all others as static peers, mDNS and Tailscale off, an ephemeral HTTP port.
//! 2. Wait until every node's `/peers` lists N-1 connections, unchanged for 3 s (full mesh: with
//!    at most 32 peers the disseminator pushes each local write directly to every peer). With
//!    `--overlay`, until every node runs overlay mode with an active neighbor, view sizes
//!    unchanged for 3 s.
//! 3. [`sse`]: subscribe to every node's `GET /v1/changes?collection=bench`.
//! 4. Open-loop writes: one `POST /v1/<collection>` every 1/rate seconds, round-robin over the
//!    nodes, each on its own task (a slow ack never delays the next write). Each write records
//!    its send and ack time and its transaction key; each stream records when it first showed
//!    the record the write created. Latencies are measured from the ack (the write is durable at its origin), and also
//!    from the send. By default every write goes to `bench` and is observed; with
//!    `--observe-every K` only every K-th write does, the others go to `load`, which no stream
//!    carries: the same load, with the observers' own cost (20 streams serializing and parsing
//!    every change) cut K-fold. With `--keep-alive` each node's writes reuse keep-alive
//!    connections ([`pool`]) instead of one new TCP connection per write.
//! 5. [`probe`]: bytes on the wire = UDP payload bytes sent on every QUIC connection of every
//!    node (`/peers`, the figure behind `meshlite_peer_bytes_total{direction="sent"}`; counted
//!    per connection so a replaced connection cannot make the sum go backwards), from before
//!    the first write to the moment the last write was visible everywhere, divided by the
//!    writes. Pushes, their QUIC acknowledgements, keep-alives and anti-entropy rounds in that
//!    window are all included; the idle phase measures the background (keep-alives,
//!    anti-entropy) on its own, and `per_write_net_of_background` subtracts it.
//!    [`probe::Metrics`] deltas show how changes travelled (push or anti-entropy).
//!    `push_frames`: push frames and the transactions in them received over the write phase
//!    (from `/peers`; more transactions than frames when senders merged queued pushes), and
//!    `busy_phase.fleet_cpu_ms_per_write`: the fleet's CPU time divided by the writes.
//! 6. Idle: `--idle-secs` with no writes; CPU time per node from `/proc/<pid>/stat` as % of one
//!    core, RSS and peak RSS from `/proc/<pid>/status`.
//! 7. SIGTERM to every node; each must exit 0.
//!
//! The bench prints one JSON object. All processes share the machine: on a 2-core host twenty
//! daemons and the bench itself compete for the same cores, which the figures include.

mod pool;
mod probe;
mod procs;
mod sse;
mod stats;
mod txn_size;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

use pool::Pool;
use probe::{Connection, Metrics};
use procs::{Fleet, FleetSpec};
use sse::{Seen, Subscription};
use stats::round1;

/// The collection of the observed writes (every write, unless `--observe-every`).
const COLLECTION: &str = "bench";
/// The collection of the writes no stream observes (`--observe-every`).
const LOAD_COLLECTION: &str = "load";
/// The latency target of the mesh issue: p99 write → visible on all nodes.
const TARGET_P99_MS: f64 = 500.0;
/// How long the full mesh must stay unchanged before the writes start.
const MESH_SETTLE: Duration = Duration::from_secs(3);

/// Start a fleet of `meshlite run` processes on loopback and measure write → visible-everywhere
/// latency, bytes on the wire per change, idle CPU and RSS per node.
#[derive(Debug, Parser)]
#[command(name = "fleet")]
struct Args {
    /// Number of node processes.
    #[arg(long, default_value_t = 20)]
    nodes: usize,
    /// Number of writes, round-robin over the nodes.
    #[arg(long, default_value_t = 1000)]
    writes: usize,
    /// Writes per second (open loop).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Anti-entropy interval (`sync.interval_seconds`); default: the daemon's (10 s, or
    /// `SYNC_INTERVAL_SECONDS` from the environment).
    #[arg(long)]
    interval: Option<u64>,
    /// Seconds of idle fleet over which CPU is measured.
    #[arg(long, default_value_t = 20)]
    idle_secs: u64,
    /// The `meshlite` binary (default: `target/release/meshlite` next to this binary, then in
    /// the current directory).
    #[arg(long)]
    meshlite: Option<PathBuf>,
    /// Longest wait for the full mesh, and for all writes to become visible, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// Keep the temporary directory (data, configs, `<node>.log`) and print its path.
    #[arg(long)]
    keep: bool,
    /// Overlay mode at any size (`sync.direct_push_max_peers = 0`): each node keeps its active
    /// view (5) instead of a full mesh; the bench waits for every node to have an active
    /// neighbor, view sizes unchanged for 3 s, instead of N-1 connections.
    #[arg(long)]
    overlay: bool,
    /// Observe only every K-th write (the others go to a collection no change stream carries);
    /// latencies are then figures over that sample of the same load.
    #[arg(long, default_value_t = 1)]
    observe_every: usize,
    /// Reuse keep-alive connections per node for the writes instead of one connection each.
    #[arg(long)]
    keep_alive: bool,
}

impl Args {
    fn binary(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.meshlite {
            return Ok(path.clone());
        }
        let beside = std::env::current_exe()?.with_file_name("meshlite");
        let candidates = [beside, PathBuf::from("target/release/meshlite")];
        candidates
            .into_iter()
            .find(|p| p.is_file())
            .context("no meshlite binary: build it (cargo build --release -p meshlite-node) or pass --meshlite")
    }

    fn interval_s(&self) -> u64 {
        let env = std::env::var("SYNC_INTERVAL_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok());
        self.interval.or(env).unwrap_or(10)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.nodes < 2 || self.writes == 0 || !self.rate.is_finite() || self.rate <= 0.0 {
            bail!("need --nodes >= 2, --writes >= 1 and --rate > 0");
        }
        if self.observe_every == 0 {
            bail!("need --observe-every >= 1");
        }
        Ok(())
    }

    /// Whether write `i` is one the change streams observe.
    fn observed(&self, i: usize) -> bool {
        i.is_multiple_of(self.observe_every)
    }

    /// How many of the writes are observed.
    fn observed_writes(&self) -> usize {
        self.writes.div_ceil(self.observe_every)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(run(&args)),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fleet bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<Value> {
    args.validate()?;
    let spec = FleetSpec {
        binary: args.binary()?,
        nodes: args.nodes,
        interval: args.interval,
        keep: args.keep,
        overlay: args.overlay,
    };
    let sample: Vec<Value> = (0..args.writes.min(200))
        .map(|i| row(i, &format!("n{}", i % args.nodes)))
        .collect();
    let txn_bytes =
        tokio::task::spawn_blocking(move || txn_size::mean_encoded_bytes(COLLECTION, &sample))
            .await??;
    let loadavg_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let started = Instant::now();
    let fleet = Fleet::start(&spec).await?;
    let ready_s = started.elapsed().as_secs_f64();
    let timeout = Duration::from_secs(args.timeout_secs);
    if args.overlay {
        wait_overlay(&fleet, timeout).await?;
    } else {
        wait_full_mesh(&fleet, timeout).await?;
    }
    let mesh_s = started.elapsed().as_secs_f64();
    let measured = measure(args, &fleet, timeout).await?;
    let dir = fleet.dir().to_path_buf();
    let codes = fleet.stop().await?;
    let clean = codes.iter().all(|c| *c == Some(0));
    let mut report = measured;
    report["bytes"]["encoded_txn_bytes"] = json!(round1(txn_bytes));
    let per_receiver = report["bytes"]["per_write_per_receiver"]
        .as_f64()
        .unwrap_or(f64::NAN);
    report["bytes"]["per_receiver_over_txn"] = json!(stats::round2(per_receiver / txn_bytes));
    report["setup"] = json!({
        "all_ready_s": round1(ready_s),
        "full_mesh_s": round1(mesh_s),
    });
    report["machine"] = machine(loadavg_before.trim());
    report["clean_stop"] = json!(clean);
    if args.keep {
        report["kept_dir"] = json!(dir);
    }
    if !clean {
        bail!("not every node exited 0 after SIGTERM: {codes:?}; report: {report}");
    }
    Ok(report)
}

fn machine(loadavg_before: &str) -> Value {
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "loadavg_before": loadavg_before,
        "loadavg_after": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    })
}

/// Polls every node's `/peers` until each has N-1 connections and none changed for
/// [`MESH_SETTLE`] (at start-up both sides of a pair may dial; the duplicate is closed about a
/// second later, after the first dial backoff).
async fn wait_full_mesh(fleet: &Fleet, timeout: Duration) -> anyhow::Result<()> {
    let want = fleet.nodes.len() - 1;
    let deadline = Instant::now() + timeout;
    let mut last: Vec<Vec<String>> = Vec::new();
    let mut stable_since = Instant::now();
    loop {
        let keys: Vec<Vec<String>> = connections_all(fleet)
            .await?
            .iter()
            .map(|c| c.iter().map(Connection::key).collect())
            .collect();
        if keys != last {
            stable_since = Instant::now();
        }
        let full = keys.iter().all(|k| k.len() == want);
        if full && stable_since.elapsed() >= MESH_SETTLE {
            return Ok(());
        }
        if Instant::now() > deadline {
            let counts: Vec<usize> = keys.iter().map(Vec::len).collect();
            bail!("mesh not fully connected and stable after {timeout:?}: connections {counts:?}");
        }
        last = keys;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls every node's `/metrics` until each runs overlay mode with an active neighbor and no
/// active view size changed for [`MESH_SETTLE`] (a view need not be full: HyParView leaves a
/// few nodes a slot short).
async fn wait_overlay(fleet: &Fleet, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last: Vec<f64> = Vec::new();
    let mut stable_since = Instant::now();
    loop {
        let views: Vec<f64> = scrape_all(fleet)
            .await?
            .iter()
            .map(|m| {
                m.sum("meshlite_overlay_active_view", &[]) * m.sum("meshlite_overlay_mode", &[])
            })
            .collect();
        if views != last {
            stable_since = Instant::now();
        }
        let joined = views.iter().all(|v| *v >= 1.0);
        if joined && stable_since.elapsed() >= MESH_SETTLE {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("overlay not full and stable after {timeout:?}: active views {views:?}");
        }
        last = views;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn connections_all(fleet: &Fleet) -> anyhow::Result<Vec<Vec<Connection>>> {
    let mut out = Vec::with_capacity(fleet.nodes.len());
    for node in &fleet.nodes {
        let conns = probe::connections(node.http).await;
        out.push(conns.with_context(|| format!("node {}", node.name))?);
    }
    Ok(out)
}

async fn scrape_all(fleet: &Fleet) -> anyhow::Result<Vec<Metrics>> {
    let mut out = Vec::with_capacity(fleet.nodes.len());
    for node in &fleet.nodes {
        out.push(
            Metrics::scrape(node.http)
                .await
                .with_context(|| format!("node {}", node.name))?,
        );
    }
    Ok(out)
}

/// CPU ticks of every node, this process, and the whole machine (all cores, busy only).
#[derive(Debug)]
struct CpuSnapshot {
    at: Instant,
    nodes: Vec<u64>,
    bench: u64,
    machine: u64,
}

impl CpuSnapshot {
    fn take(fleet: &Fleet) -> anyhow::Result<CpuSnapshot> {
        let nodes = fleet
            .nodes
            .iter()
            .map(|n| probe::cpu_ticks(n.pid))
            .collect::<Result<_, _>>()?;
        Ok(CpuSnapshot {
            at: Instant::now(),
            nodes,
            bench: probe::cpu_ticks(std::process::id())?,
            machine: probe::machine_busy_ticks()?,
        })
    }

    /// CPU used since `before`, in % of one core: nodes, the bench, and the rest of the machine.
    fn since(&self, before: &CpuSnapshot, tck: u64) -> Value {
        let secs = self.at.duration_since(before.at).as_secs_f64();
        let pct = |a: u64, b: u64| a.saturating_sub(b) as f64 * 100.0 / (tck as f64 * secs);
        let nodes: Vec<f64> = self
            .nodes
            .iter()
            .zip(&before.nodes)
            .map(|(a, b)| pct(*a, *b))
            .collect();
        let fleet: f64 = nodes.iter().sum();
        let bench = pct(self.bench, before.bench);
        let machine = pct(self.machine, before.machine);
        json!({
            "secs": round1(secs),
            "node_cpu_pct": stats::across_nodes(nodes),
            "fleet_cpu_cores": round1(fleet / 100.0),
            "bench_cpu_pct": round1(bench),
            "other_processes_cpu_cores": round1((machine - fleet - bench).max(0.0) / 100.0),
        })
    }
}

/// Everything between the full mesh and the stop.
async fn measure(args: &Args, fleet: &Fleet, timeout: Duration) -> anyhow::Result<Value> {
    let n = fleet.nodes.len();
    let tck = probe::clock_ticks_per_second();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut streams = JoinSet::new();
    for (i, node) in fleet.nodes.iter().enumerate() {
        let sub = Subscription::open(node.http, COLLECTION).await?;
        let stop = stop_rx.clone();
        let writes = args.observed_writes();
        streams.spawn(async move { (i, sub.collect(writes, stop).await) });
    }
    let before = scrape_all(fleet).await?;
    let conns0 = connections_all(fleet).await?;
    let cpu0 = CpuSnapshot::take(fleet)?;
    let t0 = Instant::now();
    let (writes, pooled) = write_all(args, fleet).await;
    let seen = collect_streams(streams, n, timeout, &stop_tx).await;
    let busy_s = t0.elapsed().as_secs_f64();
    let cpu1 = CpuSnapshot::take(fleet)?;
    let after = scrape_all(fleet).await?;
    let conns1 = connections_all(fleet).await?;
    let idle = idle_phase(args, fleet, tck).await?;
    let mut report = latency_report(args, &writes, &seen);
    let sent = probe::bytes_sent_between(&conns0, &conns1);
    report["bytes"] = bytes_report(&writes, n - 1, sent, busy_s, idle.bytes_per_s);
    report["counters"] = counters(&before, &after);
    report["busy_phase"] = cpu1.since(&cpu0, tck);
    let cores = report["busy_phase"]["fleet_cpu_cores"]
        .as_f64()
        .unwrap_or(0.0);
    report["busy_phase"]["fleet_cpu_ms_per_write"] =
        json!(stats::round2(cores * busy_s * 1000.0 / args.writes as f64));
    let (frames, txns) = probe::pushes_received_between(&conns0, &conns1);
    report["push_frames"] = json!({
        "received": frames,
        "txns_received": txns,
        "txns_per_frame": stats::round2(txns as f64 / frames.max(1) as f64),
    });
    report["idle"] = idle.report;
    report["client"] = json!({
        "observe_every": args.observe_every,
        "observed_writes": args.observed_writes(),
        "keep_alive": args.keep_alive,
        "keep_alive_connections_per_node": (!pooled.is_empty())
            .then(|| stats::across_nodes(pooled.iter().map(|&c| c as f64).collect())),
    });
    let conns: Vec<usize> = connections_all(fleet).await?.iter().map(Vec::len).collect();
    report["connections_after"] = json!(stats::across_nodes(
        conns.iter().map(|&c| c as f64).collect()
    ));
    Ok(report)
}

/// One write's timeline at the client.
#[derive(Debug)]
struct Write {
    node: usize,
    /// The record it creates.
    id: String,
    /// Written to the observed collection.
    observed: bool,
    sent: Instant,
    acked: Instant,
    /// The transaction key from the ack, or why the write failed.
    txn: Result<String, String>,
    body_bytes: usize,
}

/// The row written by write `i` (about 200 bytes of JSON).
fn row(i: usize, node: &str) -> Value {
    json!({
        "id": format!("w{i:06}"),
        "origin": node,
        "seq": i,
        "temperature": 20.0 + (i % 100) as f64 / 10.0,
        "status": if i.is_multiple_of(7) { "alert" } else { "ok" },
        "tags": ["fleet", "bench"],
        "note": "reading from the fleet bench; the text pads the row to a realistic size",
    })
}

/// Issues every write at the configured rate, each on its own task; returns them in order,
/// and the keep-alive connections each node's writes used (empty without `--keep-alive`).
async fn write_all(args: &Args, fleet: &Fleet) -> (Vec<Write>, Vec<usize>) {
    let pools: Vec<Arc<Pool>> = fleet
        .nodes
        .iter()
        .map(|n| Arc::new(Pool::new(n.http)))
        .collect();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = JoinSet::new();
    for i in 0..args.writes {
        ticker.tick().await;
        let node = i % fleet.nodes.len();
        let target = match args.keep_alive {
            true => Target::Pool(pools[node].clone()),
            false => Target::Fresh(fleet.nodes[node].http),
        };
        let body = row(i, &fleet.nodes[node].name);
        let observed = args.observed(i);
        tasks.spawn(async move { (i, write_one(node, target, body, observed).await) });
    }
    let mut out: Vec<(usize, Write)> = tasks.join_all().await;
    out.sort_by_key(|(i, _)| *i);
    let pooled = match args.keep_alive {
        true => pools.iter().map(|p| p.size()).collect(),
        false => Vec::new(),
    };
    (out.into_iter().map(|(_, w)| w).collect(), pooled)
}

/// Where a write is sent.
enum Target {
    /// A new connection to this address.
    Fresh(SocketAddr),
    /// A keep-alive connection of the node's pool.
    Pool(Arc<Pool>),
}

async fn write_one(node: usize, target: Target, body: Value, observed: bool) -> Write {
    let body_bytes = body.to_string().len();
    let id = body["id"].as_str().unwrap_or_default().to_owned();
    let collection = if observed {
        COLLECTION
    } else {
        LOAD_COLLECTION
    };
    let path = format!("/v1/{collection}");
    let sent = Instant::now();
    let res = match target {
        Target::Fresh(addr) => meshlite_node::httpc::post_json(addr, &path, &body)
            .await
            .map_err(anyhow::Error::from),
        Target::Pool(pool) => pool.post(&path, &body).await,
    };
    let acked = Instant::now();
    let txn = match res {
        Ok((status, bytes)) if status.is_success() => txn_key(&bytes),
        Ok((status, bytes)) => Err(format!("{status}: {}", String::from_utf8_lossy(&bytes))),
        Err(e) => Err(format!("{e:#}")),
    };
    Write {
        node,
        id,
        observed,
        sent,
        acked,
        txn,
        body_bytes,
    }
}

fn txn_key(body: &[u8]) -> Result<String, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    v["txn"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no txn in ack {v}"))
}

/// Waits for every stream to see every write; at the timeout, stops the streams still waiting
/// (they return what they saw).
async fn collect_streams(
    mut streams: JoinSet<(usize, Seen)>,
    n: usize,
    timeout: Duration,
    stop: &watch::Sender<bool>,
) -> Vec<Seen> {
    let mut seen: Vec<Seen> = (0..n).map(|_| Seen::default()).collect();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = match tokio::time::timeout_at(deadline, streams.join_next()).await {
            Ok(next) => next,
            Err(_) => {
                let _ = stop.send(true);
                streams.join_next().await
            }
        };
        match next {
            Some(Ok((i, s))) => seen[i] = s,
            Some(Err(e)) => eprintln!("a stream task failed: {e}"),
            None => return seen,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// When the writes became visible, from the streams.
#[derive(Debug, Default)]
struct Visibility {
    /// Per complete write: ack → visible on the last node, in ms.
    all_from_ack: Vec<f64>,
    /// Per complete write: send → visible on the last node, in ms.
    all_from_send: Vec<f64>,
    /// Per node: ack → visible there, for every write from another node, in ms.
    per_node: Vec<Vec<f64>>,
    /// `all_from_ack` by the second (since the first write) in which the write was sent.
    by_second: Vec<Vec<f64>>,
    /// Acknowledged writes some node never showed.
    incomplete: usize,
}

fn visibility(writes: &[Write], seen: &[Seen]) -> Visibility {
    let mut v = Visibility {
        per_node: vec![Vec::new(); seen.len()],
        ..Visibility::default()
    };
    let Some(start) = writes.first().map(|w| w.sent) else {
        return v;
    };
    for w in writes.iter().filter(|w| w.observed) {
        if w.txn.is_err() {
            continue;
        }
        let times: Vec<Option<Instant>> =
            seen.iter().map(|s| s.first.get(&w.id).copied()).collect();
        for (j, t) in times.iter().enumerate().filter(|(j, _)| *j != w.node) {
            if let Some(t) = t {
                v.per_node[j].push(ms(t.saturating_duration_since(w.acked)));
            }
        }
        let Some(last) = times
            .iter()
            .copied()
            .collect::<Option<Vec<_>>>()
            .and_then(|t| t.into_iter().max())
        else {
            v.incomplete += 1;
            continue;
        };
        let from_ack = ms(last.saturating_duration_since(w.acked));
        v.all_from_ack.push(from_ack);
        v.all_from_send
            .push(ms(last.saturating_duration_since(w.sent)));
        let second = w.sent.duration_since(start).as_secs() as usize;
        if v.by_second.len() <= second {
            v.by_second.resize(second + 1, Vec::new());
        }
        v.by_second[second].push(from_ack);
    }
    v
}

/// Latency figures: write → visible on all nodes, and write → visible on each other node.
fn latency_report(args: &Args, writes: &[Write], seen: &[Seen]) -> Value {
    let v = visibility(writes, seen);
    let failed: Vec<&String> = writes.iter().filter_map(|w| w.txn.as_ref().err()).collect();
    let span = match (writes.first(), writes.last()) {
        (Some(a), Some(b)) => b.sent.duration_since(a.sent).as_secs_f64(),
        _ => 0.0,
    };
    let rate = if span > 0.0 {
        (writes.len() - 1) as f64 / span
    } else {
        0.0
    };
    let node_p99: Vec<f64> = v.per_node.iter().map(|l| stats::p99(l.clone())).collect();
    let by_second: Vec<f64> = v
        .by_second
        .iter()
        .map(|l| round1(stats::p99(l.clone())))
        .collect();
    let p99_all = stats::p99(v.all_from_ack.clone());
    json!({
        "nodes": seen.len(),
        "writes": writes.len(),
        "rate_target_per_s": args.rate,
        "rate_achieved_per_s": round1(rate),
        "interval_s": args.interval_s(),
        "failed_writes": failed.len(),
        "first_failure": failed.first(),
        "incomplete_writes": v.incomplete,
        "lagged_events": seen.iter().map(|s| s.lagged).sum::<u64>(),
        "stream_errors": seen.iter().filter_map(|s| s.error.as_deref()).collect::<Vec<_>>(),
        "ack_ms": stats::latency(writes.iter().map(|w| ms(w.acked - w.sent)).collect()),
        "visible_all_from_ack_ms": stats::latency(v.all_from_ack),
        "visible_all_from_send_ms": stats::latency(v.all_from_send),
        "visible_all_p99_by_second_ms": by_second,
        "visible_per_node_from_ack_ms": stats::latency(v.per_node.concat()),
        "per_node_p99_ms": stats::across_nodes(node_p99),
        "target_p99_ms": TARGET_P99_MS,
        "target_met": v.incomplete == 0 && failed.is_empty() && p99_all <= TARGET_P99_MS,
    })
}

/// Bytes sent on the wire by all nodes during the busy phase, per write.
/// `receivers` = N-1: every write must reach every other node.
fn bytes_report(
    writes: &[Write],
    receivers: usize,
    sent: (u64, usize),
    busy_s: f64,
    idle_bytes_per_s: f64,
) -> Value {
    let (total, churn) = (sent.0 as f64, sent.1);
    let w = writes.len() as f64;
    let net = (total - idle_bytes_per_s * busy_s) / w;
    let row = writes.iter().map(|w| w.body_bytes).sum::<usize>() as f64 / w;
    json!({
        "sent_total": total,
        "connections_changed": churn,
        "per_write": round1(total / w),
        "per_write_net_of_background": round1(net),
        "per_write_per_receiver": round1(net / receivers as f64),
        "json_row_bytes": round1(row),
        "per_receiver_over_row": stats::round2(net / receivers as f64 / row),
    })
}

/// Fleet-wide deltas of the gossip counters: how changes travelled.
fn counters(before: &[Metrics], after: &[Metrics]) -> Value {
    let delta = |name: &str, labels: &[(&str, &str)]| {
        probe::fleet_sum(after, name, labels) - probe::fleet_sum(before, name, labels)
    };
    json!({
        "received_push": delta("meshlite_changes_received_total", &[("path", "push")]),
        "received_anti_entropy": delta("meshlite_changes_received_total", &[("path", "anti_entropy")]),
        "sent_local": delta("meshlite_changes_sent_total", &[("kind", "local")]),
        "sent_relayed": delta("meshlite_changes_sent_total", &[("kind", "relayed")]),
        "sync_rounds_ok": delta("meshlite_sync_rounds_total", &[("result", "ok")]),
        "sync_rounds_failed": delta("meshlite_sync_rounds_total", &[("result", "failed")]),
        "pushes_dropped": delta("meshlite_peer_pushes_dropped_total", &[]),
        "store_events_lagged": delta("meshlite_store_events_lagged_total", &[]),
        "push_apply_batches": delta("meshlite_push_apply_batches_total", &[]),
        "push_apply_txns": delta("meshlite_push_apply_txns_total", &[]),
    })
}

/// The idle phase's results.
struct Idle {
    report: Value,
    bytes_per_s: f64,
}

/// Leaves the fleet alone for `--idle-secs`; CPU, memory and background bytes per node.
async fn idle_phase(args: &Args, fleet: &Fleet, tck: u64) -> anyhow::Result<Idle> {
    let secs = args.idle_secs.max(1) as f64;
    let conns0 = connections_all(fleet).await?;
    let cpu0 = CpuSnapshot::take(fleet)?;
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let cpu1 = CpuSnapshot::take(fleet)?;
    let conns1 = connections_all(fleet).await?;
    let (sent, churn) = probe::bytes_sent_between(&conns0, &conns1);
    let bytes_per_s = sent as f64 / secs;
    let mem: Vec<(u64, u64)> = fleet
        .nodes
        .iter()
        .map(|n| probe::memory_kib(n.pid))
        .collect::<anyhow::Result<_>>()?;
    let mib = |f: fn(&(u64, u64)) -> u64| mem.iter().map(|m| f(m) as f64 / 1024.0).collect();
    let mut report = cpu1.since(&cpu0, tck);
    report["rss_mib"] = stats::across_nodes(mib(|m| m.0));
    report["peak_rss_mib"] = stats::across_nodes(mib(|m| m.1));
    report["fleet_bytes_sent_per_s"] = json!(round1(bytes_per_s));
    report["connections_changed"] = json!(churn);
    Ok(Idle {
        report,
        bytes_per_s,
    })
}
