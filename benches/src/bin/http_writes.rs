//! Single-row HTTP writes against the store's batched cost (issue 13, "Single-row HTTP writes
//! with 8 concurrent clients"): a real `meshlite run` daemon serves keep-alive HTTP/1.1
//! clients doing what supabase-js does for one row — `POST /rest/v1/tasks` of one object and
//! `PATCH /rest/v1/tasks?id=eq.X` of `status` and `updated_at`, both with
//! `Prefer: return=representation` — and, in the same run, this process writes the same rows
//! to its own store 1000 per transaction (the baseline: `WriteOp::Insert`, and the partial
//! `WriteOp::Put` that PATCH commits).
//!
//! Per operation and run: rows/s, p50/p99 latency, the daemon's CPU time per row (all its
//! threads, `/proc/<pid>/task/*/schedstat`), the store's CPU per row in a batch, their ratio
//! (the target is at most 2), the clients' CPU per row, the daemon's commit groups per phase
//! (`meshlite_store_commit_groups_total` / `meshlite_store_commands_committed_total` from
//! `/metrics`: the requests that shared a commit), the load average and the CPU other processes
//! took meanwhile.
//!
//! ```sh
//! cargo build --release -p meshlite-node -p meshlite-benches --bin meshlite --bin http_writes
//! target/release/http_writes                           # 8 clients, 8000 rows per phase, 3 runs
//! target/release/http_writes --requests 800 --runs 1   # smoke run
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use meshlite_benches::daemon::{Conn, Daemon, drive, meshlite_binary, open_conns};
use meshlite_benches::measure::{CpuMark, emit, machine, process_cpu_time, round3};
use meshlite_benches::report::{quantile_us, run_main, summary as summary_of};
use meshlite_benches::workload::{TASKS, open_store_with};
use meshlite_core::store::{Store, WriteOp};
use meshlite_fixtures::records::{RecordGen, pmoves_schema, task_id};
use serde_json::{Value, json};

/// Measure single-row HTTP writes against the store's batched writes.
#[derive(Clone, Debug, Parser)]
#[command(name = "http_writes")]
struct Args {
    /// Rows loaded into both stores before measuring (the rows PATCH updates).
    #[arg(long, default_value_t = 20_000)]
    rows: u64,
    /// Rows written per operation kind and run (one per request on the HTTP side).
    #[arg(long, default_value_t = 8_000)]
    requests: usize,
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Rows per transaction on the store side.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Runs (each measures both operations on both sides).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seed of the generated rows.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The `meshlite` binary (default: `meshlite` next to this binary, then
    /// `target/release/meshlite`).
    #[arg(long)]
    meshlite: Option<PathBuf>,
}

/// The measured writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// `POST /rest/v1/tasks` of one new row / `WriteOp::Insert`.
    Insert,
    /// `PATCH /rest/v1/tasks?id=eq.X` of two fields / a partial `WriteOp::Put`.
    Update,
}

impl Op {
    const ALL: [Op; 2] = [Op::Insert, Op::Update];

    fn name(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
        }
    }
}

/// A `tasks` row with the fields the PMOVES schema declares (it is strict); the generator's
/// undeclared fields go into the `input` JSON column. Eight fields, about 300 bytes.
fn task_row(generator: &mut RecordGen, n: u64) -> Value {
    let t = generator.task(n);
    json!({
        "id": t["id"], "agent_id": t["agent_id"], "status": t["status"],
        "input": { "job_id": t["job_id"], "title": t["title"], "priority": t["priority"] },
        "retry_count": t["retry_count"], "notes": "",
        "created_at": t["created_at"], "updated_at": t["updated_at"],
    })
}

/// What PATCH sets: a later `status` and `updated_at`, from the generator.
fn task_patch(generator: &mut RecordGen) -> Value {
    let next = generator.task_update(&json!({ "retry_count": 0 }));
    json!({ "status": next["status"], "updated_at": next["updated_at"] })
}

/// The `n`-th of `count` preloaded ids that `client` of `clients` updates in `run`: the clients
/// take disjoint ids, and each run starts further on.
fn update_id(args: &Args, run: usize, client: usize, n: usize) -> String {
    let i = (run * args.requests + n * args.clients + client) as u64 % args.rows;
    task_id(1, i)
}

/// One request of `op` from `client`: method, path, body.
fn request(
    op: Op,
    args: &Args,
    run: usize,
    client: usize,
    n: usize,
    generator: &mut RecordGen,
) -> (Method, String, Value) {
    match op {
        Op::Insert => (
            Method::POST,
            format!("/rest/v1/{TASKS}"),
            task_row(generator, n as u64),
        ),
        Op::Update => {
            let id = update_id(args, run, client, n);
            let path = format!("/rest/v1/{TASKS}?id=eq.{id}");
            (Method::PATCH, path, task_patch(generator))
        }
    }
}

/// The answer must be the one written row: 201 for an insert, 200 for an update.
fn check(op: Op, status: StatusCode, body: &Bytes) -> anyhow::Result<()> {
    let want = match op {
        Op::Insert => StatusCode::CREATED,
        Op::Update => StatusCode::OK,
    };
    let rows: Vec<Value> = serde_json::from_slice(body)
        .with_context(|| format!("{op:?}: {status} {}", String::from_utf8_lossy(body)))?;
    if status != want || rows.len() != 1 {
        bail!("{op:?}: {status}, {} rows (expected {want}, 1)", rows.len());
    }
    Ok(())
}

/// The daemon's commit counters: (groups, commands), from `/metrics`.
async fn commit_counters(d: &Daemon) -> anyhow::Result<(u64, u64)> {
    let mut conn = Conn::open(d.http).await?;
    let (status, body) = conn.call(Method::GET, "/metrics", "", None).await?;
    if status != StatusCode::OK {
        bail!("/metrics: {status}");
    }
    let text = String::from_utf8_lossy(&body);
    let counter = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .with_context(|| format!("/metrics has no {name}"))
    };
    Ok((
        counter("meshlite_store_commit_groups_total")?,
        counter("meshlite_store_commands_committed_total")?,
    ))
}

/// What one phase measured.
#[derive(Clone, Debug, Default)]
struct Phase {
    /// Per request (HTTP) or per row (store: a batch's time over its rows).
    latencies: Vec<Duration>,
    rows: usize,
    wall: Duration,
    /// CPU of the serving side (the daemon, or this process for the store).
    cpu: Duration,
    /// CPU of the clients (this process), HTTP only.
    client_cpu: Duration,
    /// Other processes' CPU meanwhile, in cores.
    other_cores: f64,
    /// Commit groups and commands the daemon's writer committed, HTTP only.
    groups: u64,
    commands: u64,
}

impl Phase {
    fn per_second(&self) -> f64 {
        self.rows as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn quantile_us(&self, q: f64) -> f64 {
        quantile_us(&self.latencies, q)
    }

    fn us_per_row(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.rows.max(1) as f64
    }
}

/// `args.requests` single-row writes of `op`, split over `args.clients` keep-alive connections.
async fn http_phase(d: &Daemon, op: Op, args: &Args, run: usize) -> anyhow::Result<Phase> {
    let per_client = args.requests / args.clients;
    let conns = open_conns(d.http, args.clients).await?;
    let (groups0, commands0) = commit_counters(d).await?;
    let mark = CpuMark::now();
    let (cpu0, client0, t0) = (d.cpu(), process_cpu_time(), Instant::now());
    let source = |c: usize| {
        // Inserted rows: origin 10 + run*clients + c, so no two requests insert one id.
        let mut generator = RecordGen::new(10 + (run * args.clients + c) as u32, args.seed);
        let args = args.clone();
        move |n: usize| {
            let (method, path, body) = request(op, &args, run, c, n, &mut generator);
            (method, path, Some(body))
        }
    };
    let prefer = "return=representation";
    let check = move |status: StatusCode, bytes: &Bytes| check(op, status, bytes);
    let latencies = drive(conns, per_client, prefer, source, check).await?;
    let (wall, cpu, client_cpu) = (t0.elapsed(), d.cpu() - cpu0, process_cpu_time() - client0);
    let other_cores = mark.others_since_excluding(cpu);
    let (groups1, commands1) = commit_counters(d).await?;
    Ok(Phase {
        rows: latencies.len(),
        latencies,
        wall,
        cpu,
        client_cpu,
        other_cores,
        groups: groups1 - groups0,
        commands: commands1 - commands0,
    })
}

/// How the in-process store is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreSide {
    /// `args.batch` rows per transaction, one caller (the baseline).
    Batched,
    /// One row per transaction from `args.clients` threads at once (what the daemon's writer
    /// sees, without HTTP): the cost of single-row transactions under group commit.
    Single,
}

/// Write `n` of the store side of `op` (the same shapes the HTTP requests commit).
fn store_write(op: Op, args: &Args, run: usize, n: usize, generator: &mut RecordGen) -> WriteOp {
    match op {
        Op::Insert => WriteOp::Insert {
            collection: TASKS.into(),
            value: task_row(generator, n as u64),
        },
        Op::Update => {
            let mut value = task_patch(generator);
            // Row n of the phase is what client n % clients sends as its (n / clients)-th.
            value["id"] = json!(update_id(args, run, n % args.clients, n / args.clients));
            WriteOp::Put {
                collection: TASKS.into(),
                value,
                recreate: false,
            }
        }
    }
}

/// The same rows on the in-process store, batched or one per transaction (`side`). The
/// single-row side updates rows the batched side of this run does not (`run + runs`).
fn store_phase(
    store: &Store,
    op: Op,
    side: StoreSide,
    args: &Args,
    run: usize,
) -> anyhow::Result<Phase> {
    let rows = args.requests / args.clients * args.clients;
    let (size, callers, run_of_ids) = match side {
        StoreSide::Batched => (args.batch.max(1), 1, run),
        StoreSide::Single => (1, args.clients, run + args.runs),
    };
    let mark = CpuMark::now();
    let (cpu0, t0) = (process_cpu_time(), Instant::now());
    let latencies = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..callers)
            .map(|c| {
                sc.spawn(move || -> anyhow::Result<Vec<Duration>> {
                    let origin = 1000 + (run_of_ids * args.clients + c) as u32;
                    let mut generator = RecordGen::new(origin, args.seed);
                    let mine: Vec<usize> = (c..rows).step_by(callers).collect();
                    let mut lat = Vec::with_capacity(mine.len());
                    for chunk in mine.chunks(size) {
                        let ops: Vec<WriteOp> = chunk
                            .iter()
                            .map(|&n| store_write(op, args, run_of_ids, n, &mut generator))
                            .collect();
                        let began = Instant::now();
                        let committed = store.transact(ops)?;
                        if committed.changes.len() != chunk.len() {
                            bail!("store {op:?}: {} changes", committed.changes.len());
                        }
                        let per_row = began.elapsed() / chunk.len() as u32;
                        lat.extend(std::iter::repeat_n(per_row, chunk.len()));
                    }
                    Ok(lat)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            let lat = h
                .join()
                .map_err(|_| anyhow::anyhow!("a store caller panicked"))??;
            all.extend(lat);
        }
        anyhow::Ok(all)
    })?;
    let (wall, cpu) = (t0.elapsed(), process_cpu_time() - cpu0);
    Ok(Phase {
        latencies,
        rows,
        wall,
        cpu,
        other_cores: mark.others_since_excluding(Duration::ZERO),
        ..Phase::default()
    })
}

/// Loads the same rows into the daemon (1000 per request) and the store.
async fn load(d: &Daemon, store: &Store, args: &Args) -> anyhow::Result<()> {
    let mut generator = RecordGen::new(1, args.seed);
    let all: Vec<Value> = (0..args.rows)
        .map(|n| task_row(&mut generator, n))
        .collect();
    let mut conn = Conn::open(d.http).await?;
    for chunk in all.chunks(1000) {
        let path = format!("/rest/v1/{TASKS}");
        let (status, body) = conn
            .call(Method::POST, &path, "return=minimal", Some(&json!(chunk)))
            .await?;
        if status != StatusCode::CREATED {
            bail!("loading: {status} {}", String::from_utf8_lossy(&body));
        }
        let ops = chunk.iter().map(|v| WriteOp::Insert {
            collection: TASKS.into(),
            value: v.clone(),
        });
        store.transact_async(ops.collect()).await?;
    }
    Ok(())
}

/// One figure of one run.
fn figure(op: Op, run: usize, http: &Phase, base: &Phase, single: &Phase, d: &Daemon) -> Value {
    let daemon_us = http.us_per_row(http.cpu);
    let store_us = base.us_per_row(base.cpu);
    json!({
        "figure": op.name(), "run": run,
        "http": {
            "rows_per_s": round3(http.per_second()),
            "p50_us": round3(http.quantile_us(0.5)), "p99_us": round3(http.quantile_us(0.99)),
            "daemon_cpu_us_per_row": round3(daemon_us),
            "client_cpu_us_per_row": round3(http.us_per_row(http.client_cpu)),
            "commit_groups": http.groups,
            "commands_per_group": round3(http.commands as f64 / http.groups.max(1) as f64),
            "other_cores": round3(http.other_cores),
        },
        "store_batched": {
            "rows_per_s": round3(base.per_second()),
            "cpu_us_per_row": round3(store_us),
            "other_cores": round3(base.other_cores),
        },
        "store_single_row_txns": {
            "rows_per_s": round3(single.per_second()),
            "p50_us": round3(single.quantile_us(0.5)), "p99_us": round3(single.quantile_us(0.99)),
            "cpu_us_per_row": round3(single.us_per_row(single.cpu)),
        },
        "cpu_ratio_http_over_batched": round3(daemon_us / store_us.max(1e-9)),
        "cpu_ratio_single_row_txns_over_batched":
            round3(single.us_per_row(single.cpu) / store_us.max(1e-9)),
        "target_ratio": 2.0,
        "met": daemon_us <= 2.0 * store_us,
        "daemon_rss_mib": round3(d.mib("VmRSS")),
        "machine": machine(),
    })
}

fn summary(figures: &[Value]) -> Value {
    let keys = [
        ("http_rows_per_s", "/http/rows_per_s"),
        ("http_p50_us", "/http/p50_us"),
        ("http_p99_us", "/http/p99_us"),
        ("daemon_cpu_us_per_row", "/http/daemon_cpu_us_per_row"),
        (
            "store_batched_cpu_us_per_row",
            "/store_batched/cpu_us_per_row",
        ),
        (
            "cpu_ratio_http_over_batched",
            "/cpu_ratio_http_over_batched",
        ),
        (
            "store_single_row_txns_cpu_us_per_row",
            "/store_single_row_txns/cpu_us_per_row",
        ),
        ("commands_per_group", "/http/commands_per_group"),
        ("other_cores", "/http/other_cores"),
    ];
    let names: Vec<&str> = Op::ALL.iter().map(|op| op.name()).collect();
    summary_of(figures, &names, &keys)
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    let binary = meshlite_binary(args.meshlite.as_deref())?;
    let tmp = tempfile::Builder::new()
        .prefix("meshlite-http-writes")
        .tempdir()?;
    std::fs::create_dir_all(tmp.path().join("store"))?;
    let daemon = Daemon::start(&binary, tmp.path()).await?;
    let store = open_store_with(&tmp.path().join("store"), 1024, pmoves_schema()?)?;
    load(&daemon, &store, args).await?;
    emit(&json!({
        "machine": machine(), "rows": args.rows, "requests": args.requests,
        "clients": args.clients, "batch": args.batch, "daemon_pid": daemon.pid,
    }));
    let mut figures = Vec::new();
    for run in 0..args.runs {
        for op in Op::ALL {
            let http = http_phase(&daemon, op, args, run).await?;
            // The store's blocking calls must not run on a runtime thread.
            let (base, single) = tokio::task::block_in_place(|| {
                let base = store_phase(&store, op, StoreSide::Batched, args, run)?;
                let single = store_phase(&store, op, StoreSide::Single, args, run)?;
                anyhow::Ok((base, single))
            })?;
            let f = figure(op, run, &http, &base, &single, &daemon);
            emit(&f);
            figures.push(f);
        }
    }
    emit(&summary(&figures));
    daemon.stop().await;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    run_main("http_writes", bench(&args))
}
