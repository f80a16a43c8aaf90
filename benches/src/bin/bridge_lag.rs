//! End-to-end lag of the central bridge: from a node's acknowledged write to the row visible in
//! Postgres (committed), at a steady write rate spread over several in-process fleet nodes
//! (`meshlite_mesh::testkit`: real stores, real QUIC) and a real `meshlite-bridge run` process
//! over a private Postgres cluster, all on loopback. Also the bridge process's CPU and peak RSS.
//!
//! Visibility is observed exactly at commit: a trigger on `public.tasks` sends `NOTIFY` with the
//! row id, delivered to a `LISTEN`ing session only when the bridge's transaction commits.
//!
//! ```sh
//! cargo build --release -p meshlite-bridge
//! cargo run --release -p meshlite-benches --bin bridge_lag -- --rate 200 --seconds 20 --nodes 3
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use meshlite_core::Schema;
use meshlite_core::store::WriteOp;
use meshlite_fixtures::postgres::PgCluster;
use meshlite_mesh::fleet;
use meshlite_mesh::testkit::Node;
use serde_json::json;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

/// Measure write-to-Postgres lag through the bridge.
#[derive(Debug, Parser)]
#[command(name = "bridge_lag")]
struct Args {
    /// Writes per second, all nodes together.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// How long to write.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Fleet nodes writing.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
}

/// Acknowledged writes not yet seen in Postgres, by id, and the lags measured.
#[derive(Debug, Default)]
struct Book {
    acked: HashMap<String, Instant>,
    early: HashMap<String, Instant>,
    lags: Vec<Duration>,
}

impl Book {
    fn acked(&mut self, id: String, at: Instant) {
        match self.early.remove(&id) {
            Some(seen) => self.lags.push(seen.saturating_duration_since(at)),
            None => {
                self.acked.insert(id, at);
            }
        }
    }

    fn seen(&mut self, id: String, at: Instant) {
        match self.acked.remove(&id) {
            Some(acked) => self.lags.push(at - acked),
            None => {
                self.early.insert(id, at);
            }
        }
    }
}

fn pmoves() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/schemas/pmoves.toml")
}

/// The `meshlite-bridge` binary built beside this one.
fn bridge_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.with_file_name("meshlite-bridge");
    path.exists().then_some(path.clone()).ok_or(format!(
        "{} not found: build it first (cargo build --release -p meshlite-bridge)",
        path.display()
    ))
}

/// CPU seconds (user + system) and peak RSS (KiB) of a process, from /proc.
fn cpu_and_peak_rss(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((ticks / 100.0, hwm))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

struct Bridge(Child);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bridge_lag: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let bridge_bin = bridge_binary()?;
    let cluster = tokio::task::spawn_blocking(PgCluster::start)
        .await
        .map_err(|e| e.to_string())?;
    let url = cluster.url();
    let root = CancellationToken::new();
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let fleet_dir = work.path().join("fleet");
    fleet::init(&fleet_dir).map_err(|e| e.to_string())?;
    let schema = Schema::from_file(&pmoves()).map_err(|e| e.to_string())?;
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        let data = work.path().join(format!("node-{i}"));
        let name = format!("node-{i}");
        nodes.push(Node::start(&fleet_dir, &name, &data, schema.clone(), &root));
    }
    let issued = fleet::issue(&fleet_dir, "bridge", 30).map_err(|e| e.to_string())?;
    let peers: Vec<String> = nodes
        .iter()
        .map(|n| n.net.local_addr().to_string())
        .collect();
    let child = Command::new(&bridge_bin)
        .arg("run")
        .current_dir(work.path())
        .env("DATABASE_URL", &url)
        .env("MESHLITE_SCHEMA", pmoves())
        .env("MESHLITE_NAME", "bench-bridge")
        .env("MESHLITE_FLEET_DIR", &issued.bundle_dir)
        .env("MESHLITE_STATIC_PEERS", peers.join(","))
        .env("MESHLITE_LISTEN", "127.0.0.1:0")
        .env("MESHLITE_HTTP_LISTEN", "127.0.0.1:0")
        .env("SYNC_INTERVAL_SECONDS", "1")
        .env("MESHLITE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bridge_bin.display()))?;
    let bridge = Bridge(child);
    let pid = bridge.0.id();

    let book = Arc::new(Mutex::new(Book::default()));
    listen_for_rows(&url, book.clone()).await?;
    let connected = wait_connected(&url, args.nodes).await;
    if !connected {
        return Err("the bridge did not connect to every node within 30 s".into());
    }
    let before = cpu_and_peak_rss(pid).ok_or("bridge process gone")?;
    let started = Instant::now();
    let writers: Vec<_> = nodes
        .iter()
        .map(|n| {
            let per_node = f64::from(args.rate) / args.nodes as f64;
            write_steadily(n.store.clone(), per_node, args.seconds, book.clone())
        })
        .collect();
    let written: usize = futures_util::future::join_all(writers)
        .await
        .into_iter()
        .sum();
    let wall = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    while book.lock().map_or(0, |b| b.acked.len()) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = cpu_and_peak_rss(pid).ok_or("bridge process gone")?;
    report(&args, written, wall, &book, before, after);
    root.cancel();
    drop(bridge);
    for n in nodes {
        n.stop().await;
    }
    Ok(())
}

/// A session that records when each task row becomes visible (committed).
async fn listen_for_rows(url: &str, book: Arc<Mutex<Book>>) -> Result<(), String> {
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if let Ok(mut b) = book.lock() {
                        b.seen(n.payload().to_owned(), Instant::now());
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
            if let Some(tx) = ready.take() {
                let _ = tx.send(());
            }
        }
    });
    // The bridge creates the table at start; wait for it, then add the notifying trigger.
    for _ in 0..300 {
        let exists: bool = client
            .query_one("SELECT to_regclass('public.tasks') IS NOT NULL", &[])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if exists {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .batch_execute(
            "CREATE OR REPLACE FUNCTION public.bench_notify() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_notify('bench_lag', NEW.id::text); RETURN NEW; END $$; \
             CREATE TRIGGER bench_lag AFTER INSERT OR UPDATE ON public.tasks \
             FOR EACH ROW EXECUTE FUNCTION public.bench_notify(); \
             LISTEN bench_lag; SELECT pg_notify('bench_lag', 'ready');",
        )
        .await
        .map_err(|e| e.to_string())?;
    let _ = tokio::time::timeout(Duration::from_secs(5), ready_rx).await;
    // Keep the session (and so the LISTEN) alive for the whole run.
    std::mem::forget(client);
    Ok(())
}

/// Whether the bridge has recorded a session with every node (its `nodes` table).
async fn wait_connected(url: &str, n: usize) -> bool {
    let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await else {
        return false;
    };
    tokio::spawn(connection);
    for _ in 0..300 {
        let count = client
            .query_one("SELECT count(*) FROM meshlite.nodes", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
        if count as usize >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Writes one new task every `1 / rate` seconds for `seconds`; returns how many.
async fn write_steadily(
    store: meshlite_core::Store,
    rate: f64,
    seconds: u64,
    book: Arc<Mutex<Book>>,
) -> usize {
    let every = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut n = 0;
    while Instant::now() < end {
        tick.tick().await;
        let id = uuid_v4();
        let op = WriteOp::Put {
            collection: "tasks".into(),
            value: json!({"id": id, "status": "queued", "title": "lag probe"}),
            recreate: false,
        };
        if store.transact_async(vec![op]).await.is_ok() {
            if let Ok(mut b) = book.lock() {
                b.acked(id, Instant::now());
            }
            n += 1;
        }
    }
    n
}

fn uuid_v4() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        u16::from_be_bytes([b[8], b[9]]) & 0x0fff,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]]),
    )
}

fn report(
    args: &Args,
    written: usize,
    wall: Duration,
    book: &Mutex<Book>,
    before: (f64, u64),
    after: (f64, u64),
) {
    let Ok(b) = book.lock() else { return };
    let mut lags = b.lags.clone();
    lags.sort();
    let cpu = (after.0 - before.0) / wall.as_secs_f64() * 100.0;
    let line = json!({
        "bench": "bridge_lag",
        "nodes": args.nodes,
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "written": written,
        "seen": lags.len(),
        "missing": b.acked.len(),
        "p50_ms": percentile(&lags, 0.50),
        "p90_ms": percentile(&lags, 0.90),
        "p99_ms": percentile(&lags, 0.99),
        "max_ms": percentile(&lags, 1.0),
        "bridge_cpu_percent": cpu,
        "bridge_peak_rss_mib": after.1 as f64 / 1024.0,
    });
    println!(
        "{} writes/s from {} nodes for {} s: {} written, {} seen in Postgres, {} missing\n\
         lag p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; bridge CPU {:.1}% of a core, peak RSS {:.1} MiB",
        args.rate,
        args.nodes,
        args.seconds,
        written,
        lags.len(),
        b.acked.len(),
        percentile(&lags, 0.50),
        percentile(&lags, 0.90),
        percentile(&lags, 0.99),
        percentile(&lags, 1.0),
        cpu,
        after.1 as f64 / 1024.0
    );
    println!("{line}");
}
