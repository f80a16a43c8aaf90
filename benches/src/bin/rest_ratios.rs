//! `/rest/v1` against the core store (issue 9, "Benchmark"): requests per second and p50/p99
//! latency of point reads (`id=eq.X`), filtered queries (`status=eq.running&limit=50`) and
//! single-row inserts served by a real `meshlite run` daemon to keep-alive HTTP clients, beside
//! the same operations on a core store in this process (the baseline: `Store::get`,
//! `Store::query` with the equality filter and limit, `Store::transact` of one put), on the same
//! rows (the PMOVES `tasks` collection, `status` declared `indexed`, one row in ten `running`).
//!
//! Per operation and run: the daemon's CPU time per request (all its threads,
//! `/proc/<pid>/task/*/schedstat`) and the clients' (this process), the baseline's CPU time per
//! operation, and their ratio — store operations per CPU-second over REST requests per daemon
//! CPU-second, so 10× means a request costs the daemon ten store operations' CPU. The daemon's
//! resident set (`VmRSS`, peak `VmHWM`) is read after each phase. Runs alternate REST and
//! store phases; the summary gives each figure's range over the runs, and the load average.
//!
//! ```sh
//! cargo build --release -p meshlite-node -p meshlite-benches
//! target/release/rest_ratios                    # 20k rows, 4 clients, 2 runs
//! target/release/rest_ratios --rows 2000 --requests 500 --runs 1   # smoke run
//! target/release/rest_ratios --scan --requests 1000   # reads without the pushdown
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use meshlite_benches::daemon::{Conn, Daemon, drive, meshlite_binary, open_conns};
use meshlite_benches::measure::{emit, machine, process_cpu_time, round3};
use meshlite_benches::report::{quantile_us, run_main, summary as summary_of};
use meshlite_benches::workload::{TASKS, open_store_with};
use meshlite_core::store::{Query, Store, WriteOp};
use meshlite_fixtures::records::{RecordGen, pmoves_schema, task_id};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// The `Prefer` header of every request (inserts answer 201 without a body).
const MINIMAL: &str = "return=minimal";

/// Measure `/rest/v1` against the core store in this process.
#[derive(Debug, Parser)]
#[command(name = "rest_ratios")]
struct Args {
    /// Rows loaded into both stores before measuring.
    #[arg(long, default_value_t = 20_000)]
    rows: u64,
    /// Requests (and store operations) per operation kind and run.
    #[arg(long, default_value_t = 4_000)]
    requests: usize,
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Runs (each measures every operation on both sides).
    #[arg(long, default_value_t = 2)]
    runs: usize,
    /// Seed of the rows and of the ids read.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Phrase the read filters as `or=(...)` groups, which the daemon evaluates over every row
    /// (no pushdown): the cost of the reads without `rest::pushdown`.
    #[arg(long)]
    scan: bool,
    /// The `meshlite` binary (default: `meshlite` next to this binary, then
    /// `target/release/meshlite`).
    #[arg(long)]
    meshlite: Option<PathBuf>,
}

impl Args {
    fn binary(&self) -> anyhow::Result<PathBuf> {
        meshlite_binary(self.meshlite.as_deref())
    }
}

/// The measured operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// `GET /rest/v1/tasks?id=eq.X` / `Store::get`.
    PointRead,
    /// `GET /rest/v1/tasks?status=eq.running&limit=50` / `Store::query`.
    Filtered,
    /// `POST /rest/v1/tasks` of one row / `Store::transact` of one put.
    Insert,
}

impl Op {
    const ALL: [Op; 3] = [Op::PointRead, Op::Filtered, Op::Insert];

    fn name(self) -> &'static str {
        match self {
            Op::PointRead => "point_read",
            Op::Filtered => "filtered_query",
            Op::Insert => "insert",
        }
    }
}

/// Rows of the generator with the fields the schema declares (the REST side refuses others in
/// a strict schema); one in ten `running`.
struct Rows {
    generator: RecordGen,
}

impl Rows {
    /// Row `n` (the generator is sequential: call in order per side).
    fn row(&mut self, n: u64) -> Value {
        let t = self.generator.task(n);
        let status = if n.is_multiple_of(10) {
            "running"
        } else {
            t["status"].as_str().unwrap_or("queued")
        };
        json!({
            "id": t["id"], "agent_id": t["agent_id"], "status": status,
            "created_at": t["created_at"], "updated_at": t["updated_at"],
        })
    }
}

/// What one phase measured.
#[derive(Clone, Debug, Default)]
struct Phase {
    latencies: Vec<Duration>,
    wall: Duration,
    /// CPU of the serving side (the daemon, or this process for the store).
    cpu: Duration,
    /// CPU of the clients (this process), REST only.
    client_cpu: Duration,
}

impl Phase {
    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn quantile_us(&self, q: f64) -> f64 {
        quantile_us(&self.latencies, q)
    }

    fn cpu_us_per_op(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.latencies.len().max(1) as f64
    }
}

/// The method, path and body of the next request of `op` (`scan`: filters as `or=(...)`).
fn request(
    op: Op,
    scan: bool,
    ids: &[String],
    rng: &mut StdRng,
    rows: &mut Rows,
    next: &mut u64,
) -> (Method, String, Option<Value>) {
    let filter = |column: &str, value: &str| match scan {
        true => format!("or=({column}.eq.{value})"),
        false => format!("{column}=eq.{value}"),
    };
    match op {
        Op::PointRead => {
            let id = &ids[rng.random_range(0..ids.len())];
            let path = format!("/rest/v1/{TASKS}?{}", filter("id", id));
            (Method::GET, path, None)
        }
        Op::Filtered => {
            let path = format!("/rest/v1/{TASKS}?{}&limit=50", filter("status", "running"));
            (Method::GET, path, None)
        }
        Op::Insert => {
            *next += 1;
            (
                Method::POST,
                format!("/rest/v1/{TASKS}"),
                Some(rows.row(*next)),
            )
        }
    }
}

/// Checks an answer: a read returns rows (one for a point read, 50 for the filter), an insert 201.
fn check(op: Op, status: StatusCode, body: &Bytes) -> anyhow::Result<()> {
    let want = match op {
        Op::Insert => {
            return match status {
                StatusCode::CREATED => Ok(()),
                s => bail!("insert: {s} {}", String::from_utf8_lossy(body)),
            };
        }
        Op::PointRead => 1,
        Op::Filtered => 50,
    };
    let rows: Vec<Value> =
        serde_json::from_slice(body).with_context(|| format!("{op:?}: {status}"))?;
    if status != StatusCode::OK || rows.len() != want {
        bail!("{op:?}: {status}, {} rows (expected {want})", rows.len());
    }
    Ok(())
}

/// `requests` of `op` over `/rest/v1`, split over `clients` keep-alive connections.
async fn rest_phase(
    d: &Daemon,
    op: Op,
    args: &Args,
    ids: &[String],
    run: usize,
) -> anyhow::Result<Phase> {
    let per_client = args.requests / args.clients;
    let conns = open_conns(d.http, args.clients).await?;
    let (cpu0, client0, t0) = (d.cpu(), process_cpu_time(), Instant::now());
    let source = |c: usize| {
        let ids = ids.to_vec();
        // Inserted rows: origin 10 + run*clients + c, so no two requests insert one id.
        let origin = 10 + (run * args.clients + c) as u32;
        let seed = args.seed + c as u64;
        let scan = args.scan;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut rows = Rows {
            generator: RecordGen::new(origin, seed),
        };
        let mut next = 0u64;
        move |_: usize| request(op, scan, &ids, &mut rng, &mut rows, &mut next)
    };
    let check = move |status: StatusCode, bytes: &Bytes| check(op, status, bytes);
    let latencies = drive(conns, per_client, MINIMAL, source, check).await?;
    Ok(Phase {
        latencies,
        wall: t0.elapsed(),
        cpu: d.cpu() - cpu0,
        client_cpu: process_cpu_time() - client0,
    })
}

/// The same operations on the in-process store, one after another.
fn store_phase(
    store: &Store,
    op: Op,
    args: &Args,
    ids: &[String],
    run: usize,
) -> anyhow::Result<Phase> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let origin = 1000 + run as u32;
    let mut rows = Rows {
        generator: RecordGen::new(origin, args.seed),
    };
    let filtered = Query {
        filters: vec![("status".into(), json!("running"))],
        limit: Some(50),
        insertion_order: true,
        ..Query::default()
    };
    let mut latencies = Vec::with_capacity(args.requests);
    let (cpu0, t0) = (process_cpu_time(), Instant::now());
    for n in 0..args.requests as u64 {
        let start = Instant::now();
        let found = match op {
            Op::PointRead => usize::from(
                store
                    .get(TASKS, &ids[rng.random_range(0..ids.len())])?
                    .is_some(),
            ),
            Op::Filtered => store.query(TASKS, &filtered)?.len(),
            Op::Insert => {
                let op = WriteOp::Put {
                    collection: TASKS.into(),
                    value: rows.row(n + 1),
                    recreate: false,
                };
                store.transact(vec![op])?;
                1
            }
        };
        latencies.push(start.elapsed());
        let want = if op == Op::Filtered { 50 } else { 1 };
        if found != want {
            bail!("store {op:?}: {found} rows (expected {want})");
        }
    }
    let wall = t0.elapsed();
    Ok(Phase {
        latencies,
        wall,
        cpu: process_cpu_time() - cpu0,
        client_cpu: Duration::ZERO,
    })
}

/// Loads the same rows into the daemon (batches over `/rest/v1`) and the store.
async fn load(d: &Daemon, store: &Store, args: &Args) -> anyhow::Result<Vec<String>> {
    let mut rows = Rows {
        generator: RecordGen::new(1, args.seed),
    };
    let all: Vec<Value> = (0..args.rows).map(|n| rows.row(n)).collect();
    let mut conn = Conn::open(d.http).await?;
    for chunk in all.chunks(1000) {
        let (status, body) = conn
            .call(
                Method::POST,
                &format!("/rest/v1/{TASKS}"),
                MINIMAL,
                Some(&json!(chunk)),
            )
            .await?;
        if status != StatusCode::CREATED {
            bail!("loading: {status} {}", String::from_utf8_lossy(&body));
        }
        let ops = chunk.iter().map(|v| WriteOp::Put {
            collection: TASKS.into(),
            value: v.clone(),
            recreate: false,
        });
        store.transact_async(ops.collect()).await?;
    }
    Ok((0..args.rows).map(|n| task_id(1, n)).collect())
}

/// One figure of one run.
fn figure(op: Op, run: usize, rest: &Phase, base: &Phase, d: &Daemon) -> Value {
    let daemon_us = rest.cpu_us_per_op(rest.cpu);
    let store_us = base.cpu_us_per_op(base.cpu);
    json!({
        "figure": op.name(), "run": run,
        "rest": {
            "requests_per_s": round3(rest.per_second()),
            "p50_us": round3(rest.quantile_us(0.5)), "p99_us": round3(rest.quantile_us(0.99)),
            "daemon_cpu_us_per_request": round3(daemon_us),
            "client_cpu_us_per_request": round3(rest.cpu_us_per_op(rest.client_cpu)),
        },
        "store": {
            "ops_per_s": round3(base.per_second()),
            "p50_us": round3(base.quantile_us(0.5)), "p99_us": round3(base.quantile_us(0.99)),
            "cpu_us_per_op": round3(store_us),
        },
        "cpu_ratio_rest_over_store": round3(daemon_us / store_us.max(1e-9)),
        "rate_ratio_store_over_rest": round3(base.per_second() / rest.per_second().max(1e-9)),
        "daemon_rss_mib": round3(d.mib("VmRSS")), "daemon_peak_rss_mib": round3(d.mib("VmHWM")),
    })
}

fn summary(figures: &[Value]) -> Value {
    let keys = [
        ("rest_requests_per_s", "/rest/requests_per_s"),
        ("rest_p50_us", "/rest/p50_us"),
        ("rest_p99_us", "/rest/p99_us"),
        ("store_ops_per_s", "/store/ops_per_s"),
        ("store_p50_us", "/store/p50_us"),
        ("store_p99_us", "/store/p99_us"),
        (
            "daemon_cpu_us_per_request",
            "/rest/daemon_cpu_us_per_request",
        ),
        ("store_cpu_us_per_op", "/store/cpu_us_per_op"),
        ("cpu_ratio_rest_over_store", "/cpu_ratio_rest_over_store"),
        ("daemon_rss_mib", "/daemon_rss_mib"),
    ];
    let names: Vec<&str> = Op::ALL.iter().map(|op| op.name()).collect();
    summary_of(figures, &names, &keys)
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    let binary = args.binary()?;
    let tmp = tempfile::Builder::new()
        .prefix("meshlite-rest-bench")
        .tempdir()?;
    std::fs::create_dir_all(tmp.path().join("store"))?;
    let daemon = Daemon::start(&binary, tmp.path()).await?;
    let store = open_store_with(&tmp.path().join("store"), 1024, pmoves_schema()?)?;
    let ids = load(&daemon, &store, args).await?;
    emit(
        &json!({ "machine": machine(), "rows": args.rows, "requests": args.requests, "clients": args.clients, "daemon_pid": daemon.pid }),
    );
    let mut figures = Vec::new();
    for run in 0..args.runs {
        for op in Op::ALL {
            let rest = rest_phase(&daemon, op, args, &ids, run).await?;
            // The store's blocking calls must not run on a runtime thread.
            let base = std::thread::scope(|sc| {
                sc.spawn(|| store_phase(&store, op, args, &ids, run))
                    .join()
                    .map_err(|_| anyhow::anyhow!("the store phase panicked"))
            })??;
            let f = figure(op, run, &rest, &base, &daemon);
            emit(&f);
            figures.push(f);
        }
    }
    emit(&summary(&figures));
    emit(&json!({ "machine_after": machine() }));
    daemon.stop().await;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    run_main("rest_ratios", bench(&args))
}
