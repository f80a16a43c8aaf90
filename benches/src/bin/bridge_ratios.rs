//! The central bridge's two figures as ratios against plain Postgres, in one process against
//! one throwaway Postgres (the fixtures' cluster: `fsync=off`, `full_page_writes=off`;
//! `DATABASE_URL` names another server instead).
//!
//! - `materialize_tasks`: N document changes made by real core stores on the PMOVES schema —
//!   N/4 new `tasks` rows written on store A, then three rounds of updates of every row: A,
//!   B (concurrently with A's, from the same base) and A again — applied through
//!   `PgReplica::apply_txns`, `--batch` transactions per call (the bridge's `sync.batch_size`),
//!   in an order a peer could send them (each origin's in sequence, A and B interleaved), so the
//!   bridge merges. Baseline: for each bridge call, the final merged rows of the records it
//!   touched, upserted into a `LIKE` copy of the table (same columns and indexes, no triggers)
//!   by `COPY` into a staging table and one `INSERT … SELECT … ON CONFLICT DO UPDATE`.
//!   Target ≥ 0.25× (aim 0.5×).
//! - `append_metrics`: N `device_metrics` log rows appended on a store, applied the same way,
//!   against one plain `COPY` of the same rows per call into a `LIKE` copy. Target ≥ 0.5×.
//!
//! Bridge and baseline batches alternate. Per figure: the median over rounds of the ratio of
//! batch rates (wall clock), and rates per CPU-second of this process (the bench, the bridge's
//! code, the Postgres driver) plus the Postgres server's processes (`/proc/<pid>/schedstat`).
//! After each race both tables must hold the same rows. Prints one JSON object per figure and
//! a table. The process runs on the bridge binary's allocator (mimalloc,
//! `meshlite_bridge::Allocator`), as the bridge's code does when it ships. `--shapes` adds a
//! breakdown: the log rows written per row as the bridge writes them (unprepared, then
//! prepared), in one `INSERT` per batch, and by `COPY`.
//!
//! ```sh
//! cargo run --release -p meshlite-benches --bin bridge_ratios            # N = 100k
//! cargo run --release -p meshlite-benches --bin bridge_ratios -- --quick # smoke run, N = 2000
//! ```

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use meshlite_benches::BenchError;
use meshlite_benches::measure::{
    Batch, Race, Target, emit, machine, proc_status_kib, process_cpu_time, round3,
};
use meshlite_benches::pg::{PlainTable, ServerCpu, Shape};
use meshlite_benches::workload::{
    METRICS, TASKS, append_ops, decode_all, default_doc_cache, export, export_all, metrics,
    open_store_with, put_ops, tasks,
};
use meshlite_bridge::config::{Config, SyncSection};
use meshlite_bridge::pg::PgConn;
use meshlite_bridge::replica::{Context, PgReplica};
use meshlite_bridge::{service, state};
use meshlite_core::store::Store;
use meshlite_core::{Op, Txn};
use meshlite_fixtures::postgres::PgServer;
use meshlite_fixtures::records::{RecordGen, pmoves_schema, pmoves_schema_path};
use meshlite_mesh::replica::Replica;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

/// The `meshlite-bridge` binary's allocator, so the bridge's code runs here as it ships (the
/// baseline's client side, ≈ 1.5 µs per row, runs on it too).
#[global_allocator]
static ALLOC: meshlite_bridge::Allocator = meshlite_bridge::Allocator;

/// Measure the bridge's materialization and log appends against plain Postgres.
#[derive(Debug, Parser)]
#[command(name = "bridge_ratios")]
struct Args {
    /// Document changes, and log rows, per figure.
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Smoke run: 2000 changes and rows.
    #[arg(long)]
    quick: bool,
    /// Ops per transaction written on the stores.
    #[arg(long, default_value_t = 10)]
    ops_per_txn: usize,
    /// Transactions per `apply_txns` call (default: the bridge's `sync.batch_size`).
    #[arg(long, default_value_t = SyncSection::default().batch_size)]
    batch: usize,
    /// Seed of the generated rows.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Only this figure (default: both).
    #[arg(long, value_enum)]
    only: Option<Figure>,
    /// After the figures, write the log rows once more in each statement shape (per-row
    /// INSERT as the bridge issues it, the same prepared once, one INSERT per batch, COPY).
    #[arg(long)]
    shapes: bool,
    /// The bridge's document cache in MiB (`sync.doc_cache_mib`; 0 turns it off).
    #[arg(long, default_value_t = SyncSection::default().doc_cache_mib)]
    doc_cache_mib: usize,
}

/// The figures, for `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Figure {
    /// Document changes materialized into `tasks`.
    Documents,
    /// Log rows appended to `device_metrics`.
    Log,
}

/// The figures' schema for the baseline tables.
const BASELINE_SCHEMA: &str = "baseline";

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bridge_ratios: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), BenchError> {
    let n = if args.quick { 2000 } else { args.records };
    let (per_txn, batch) = (args.ops_per_txn.max(1), args.batch.max(1));
    emit(
        &json!({ "machine": machine(), "changes": n, "ops_per_txn": per_txn, "batch_txns": batch }),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let url = PgServer::shared().database("bridge_bench");
    let mut bench = rt.block_on(Bench::setup(url, args.doc_cache_mib))?;
    let temp = tempfile::tempdir()?;
    let mut results = Vec::new();
    if args.only.is_none_or(|f| f == Figure::Documents) {
        let work = documents(&temp.path().join("docs"), n, per_txn, batch, args.seed)?;
        results.push(bench.materialize(&rt, work)?);
        let counts = bench.replica.doc_cache_counts();
        emit(&json!({
            "doc_cache_mib": args.doc_cache_mib,
            "doc_cache_hits": counts.hits,
            "doc_cache_misses": counts.misses,
            "peak_rss_kib": proc_status_kib("VmHWM"),
        }));
    }
    if args.only.is_none_or(|f| f == Figure::Log) {
        let work = log_rows(&temp.path().join("log"), n, per_txn, batch, args.seed)?;
        results.push(bench.append(&rt, work)?);
    }
    for r in &results {
        emit(&r.to_json());
    }
    if args.shapes {
        emit(&bench.shapes(&rt, n, per_txn * batch, args.seed)?);
    }
    emit(&json!({ "machine_after": machine(), "server_cpu_measured": bench.server.is_some() }));
    print_table(&results);
    Ok(())
}

/// The bridge's replica over a fresh database, and a plain session for the baselines.
struct Bench {
    replica: PgReplica,
    plain: PgConn,
    server: Option<ServerCpu>,
    state_schema: String,
}

fn bridge_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Bridge(e.to_string())
}

impl Bench {
    /// Migrates the database and makes the PMOVES tables, as `meshlite-bridge run` does.
    async fn setup(url: String, doc_cache_mib: usize) -> Result<Self, BenchError> {
        let mut config = Config::default();
        config.postgres.url = Some(url);
        config.bridge.schema = Some(pmoves_schema_path());
        config.bridge.name = "bench".into();
        config.sync.doc_cache_mib = doc_cache_mib;
        let tables = service::load_tables(&config).map_err(bridge_err)?;
        let target = config.pg_target().map_err(bridge_err)?;
        let mut conn = target.connect().await.map_err(bridge_err)?;
        service::prepare(&mut conn, &config, &tables)
            .await
            .map_err(bridge_err)?;
        let schemas = config.schemas().map_err(bridge_err)?;
        let replica = state::bridge_replica_id(conn.client(), &schemas, &config.bridge.name)
            .await
            .map_err(bridge_err)?;
        let ctx = Context {
            replica,
            name: config.bridge.name.clone(),
            schema: Arc::new(service::load_schema(&config).map_err(bridge_err)?),
            tables: tables
                .iter()
                .map(|t| (t.name.as_str().to_owned(), t.clone()))
                .collect(),
            schemas: schemas.clone(),
            batch_size: config.sync.batch_size,
            doc_cache_bytes: config.sync.doc_cache_bytes(),
        };
        let server = ServerCpu::find(conn.client()).await?;
        Ok(Self {
            replica: PgReplica::new(target, ctx),
            plain: conn,
            server,
            state_schema: schemas.state.to_string(),
        })
    }

    /// Figure 1: the bridge's `apply_txns` against staged upserts of the final rows.
    fn materialize(&mut self, rt: &Runtime, work: Work) -> Result<Outcome, BenchError> {
        let table = rt.block_on(PlainTable::create_like(
            self.plain.client(),
            "public.tasks",
            BASELINE_SCHEMA,
            TASKS,
            "id",
        ))?;
        let mut outcome = self.race(rt, "materialize_tasks", 0.25, work, |plain, rows| {
            rt.block_on(table.staged_upsert(plain.client_mut(), rows))
        })?;
        outcome.conflicts = rt.block_on(self.count(&format!(
            "SELECT count(*) FROM {}.conflicts",
            self.state_schema
        )))?;
        Ok(outcome)
    }

    /// Figure 2: the bridge's `apply_txns` of appends against `COPY` of the same rows.
    fn append(&mut self, rt: &Runtime, work: Work) -> Result<Outcome, BenchError> {
        let table = rt.block_on(PlainTable::create_like(
            self.plain.client(),
            "public.device_metrics",
            BASELINE_SCHEMA,
            METRICS,
            "id",
        ))?;
        self.race(rt, "append_metrics", 0.5, work, |plain, rows| {
            rt.block_on(table.copy_append(plain.client(), rows))
        })
    }

    /// The log rows written by each [`Shape`] into a fresh table of its own, the shapes
    /// alternating batch by batch; rates and ratios against `COPY`.
    fn shapes(
        &mut self,
        rt: &Runtime,
        n: usize,
        per_batch: usize,
        seed: u64,
    ) -> Result<Value, BenchError> {
        let rows = metrics(&mut RecordGen::new(3, seed), 0..n as u64);
        let mut tables = Vec::new();
        for shape in Shape::ALL {
            let name = format!("metrics_{}", shape.name());
            let source = "public.device_metrics";
            let fresh =
                PlainTable::create_like(self.plain.client(), source, BASELINE_SCHEMA, &name, "id");
            tables.push((shape, rt.block_on(fresh)?, Timed::default()));
        }
        for chunk in rows.chunks(per_batch.max(1)) {
            for (shape, table, timed) in &mut tables {
                let (plain, batch, shape) = (&mut self.plain, chunk.to_vec(), *shape);
                timed.time(self.server, || {
                    rt.block_on(table.append_shaped(plain.client_mut(), batch, shape))
                })?;
            }
        }
        let copy = &tables[0].2;
        let mut out = serde_json::Map::new();
        for (shape, _, timed) in &tables {
            let (wall, cpu) = (
                race_of("", 0.0, timed, copy, false),
                race_of("", 0.0, timed, copy, true),
            );
            out.insert(
                shape.name().into(),
                json!({
                    "per_s": wall.subject.rate().round(),
                    "per_cpu_s": cpu.subject.cpu_rate().round(),
                    "ratio_vs_copy": round3(wall.ratio()),
                    "cpu_ratio_vs_copy": round3(cpu.cpu_ratio()),
                }),
            );
        }
        Ok(
            json!({ "figure": "log_statement_shapes", "rows": n, "rows_per_batch": per_batch, "shapes": out }),
        )
    }

    /// Alternates one bridge call and one baseline batch per round, then checks that both
    /// tables hold the same rows.
    fn race(
        &mut self,
        rt: &Runtime,
        name: &str,
        target: f64,
        work: Work,
        mut baseline: impl FnMut(&mut PgConn, Vec<Value>) -> Result<usize, BenchError>,
    ) -> Result<Outcome, BenchError> {
        let mut out = Outcome::new(name, target, &work);
        let (records, collection) = (work.records, work.collection);
        for (txns, rows) in work.batches.into_iter().zip(work.rows) {
            let replica = &self.replica;
            let bridge = || {
                let (count, changes) = (txns.len(), ops(&txns));
                let applied = rt.block_on(replica.apply_txns(txns)).map_err(bridge_err)?;
                if applied.new != count || !applied.rejected.is_empty() {
                    return Err(BenchError::Check(format!("apply: {applied:?}")));
                }
                Ok(changes)
            };
            out.bridge.time(self.server, bridge)?;
            let plain = &mut self.plain;
            out.baseline.time(self.server, || baseline(plain, rows))?;
        }
        rt.block_on(self.same_rows(collection, records))?;
        Ok(out)
    }

    /// Fails unless the bridge's table and the baseline's hold the same `records` rows (every
    /// column but `_origin` and `_synced_at`).
    async fn same_rows(&self, table: &str, records: usize) -> Result<(), BenchError> {
        let strip = "- '_origin' - '_synced_at'";
        let differ = self
            .count(&format!(
                "SELECT count(*) FROM public.{table} t FULL JOIN {BASELINE_SCHEMA}.{table} b \
                 ON t.id = b.id WHERE (to_jsonb(t) {strip}) IS DISTINCT FROM (to_jsonb(b) {strip})"
            ))
            .await?;
        let rows = self
            .count(&format!("SELECT count(*) FROM public.{table}"))
            .await?;
        if differ != 0 || rows != records as i64 {
            return Err(BenchError::Check(format!(
                "{table}: {rows} rows (want {records}), {differ} differ from the baseline's"
            )));
        }
        Ok(())
    }

    async fn count(&self, sql: &str) -> Result<i64, BenchError> {
        Ok(self.plain.client().query_one(sql, &[]).await?.get(0))
    }
}

/// Document changes in `txns`.
fn ops(txns: &[Txn]) -> usize {
    txns.iter().map(|t| t.ops.len()).sum()
}

/// What one figure feeds both sides: per round, the bridge's transactions and the baseline's
/// rows.
struct Work {
    collection: &'static str,
    batches: Vec<Vec<Txn>>,
    rows: Vec<Vec<Value>>,
    /// Distinct rows at the end.
    records: usize,
    changes: usize,
}

/// Builds the document workload on stores A and B (see the module doc).
fn documents(
    dir: &Path,
    changes: usize,
    per_txn: usize,
    batch: usize,
    seed: u64,
) -> Result<Work, BenchError> {
    let open = |name: &str| open_store_with(&dir.join(name), default_doc_cache(), pmoves_schema()?);
    let (a, b) = (open("a")?, open("b")?);
    let records = (changes / 4).max(1) as u64;
    let (mut gen_a, mut gen_b) = (RecordGen::new(1, seed), RecordGen::new(2, seed));
    let inserted = tasks(&mut gen_a, 0..records);
    commit(&a, &inserted, per_txn, put_ops)?;
    b.apply_remote(decode_all(&export_all(&a)?)?)?;
    let a1 = updated(&mut gen_a, &inserted);
    commit(&a, &a1, per_txn, put_ops)?;
    commit(&b, &updated(&mut gen_b, &inserted), per_txn, put_ops)?;
    commit(&a, &updated(&mut gen_a, &a1), per_txn, put_ops)?;

    let (from_a, from_b) = (decode_all(&own_txns(&a)?)?, own_txns(&b)?);
    a.apply_remote(decode_all(&from_b)?)?;
    let from_b = decode_all(&from_b)?;
    let first = inserted.len().div_ceil(per_txn);
    let mut order: Vec<Txn> = from_a[..first].to_vec();
    order.extend(interleave(from_a[first..].to_vec(), from_b));

    let mut finals = HashMap::new();
    for row in &inserted {
        let id = meshlite_benches::baseline::row_id(row)?;
        let merged = a
            .get(TASKS, id)?
            .ok_or_else(|| BenchError::Check(format!("{id} missing after the merge")))?;
        finals.insert(id.to_owned(), merged);
    }
    a.close()?;
    b.close()?;
    let batches: Vec<Vec<Txn>> = order.chunks(batch).map(<[Txn]>::to_vec).collect();
    let rows = batches
        .iter()
        .map(|txns| {
            let ids: BTreeSet<&str> = txns.iter().flat_map(|t| t.ops.iter().map(op_id)).collect();
            ids.into_iter()
                .filter_map(|id| finals.get(id).cloned())
                .collect()
        })
        .collect();
    Ok(Work {
        collection: TASKS,
        changes: order.iter().map(|t| t.ops.len()).sum(),
        batches,
        rows,
        records: inserted.len(),
    })
}

/// Builds the log workload: `n` metric rows appended on one store.
fn log_rows(
    dir: &Path,
    n: usize,
    per_txn: usize,
    batch: usize,
    seed: u64,
) -> Result<Work, BenchError> {
    let store = open_store_with(&dir.join("c"), default_doc_cache(), pmoves_schema()?)?;
    let mut generator = RecordGen::new(3, seed);
    let rows = metrics(&mut generator, 0..n as u64);
    commit(&store, &rows, per_txn, append_ops)?;
    let txns = decode_all(&own_txns(&store)?)?;
    store.close()?;
    let batches: Vec<Vec<Txn>> = txns.chunks(batch).map(<[Txn]>::to_vec).collect();
    let per_batch: Vec<Vec<Value>> = {
        let mut rest = rows.into_iter();
        batches
            .iter()
            .map(|b| rest.by_ref().take(ops(b)).collect())
            .collect()
    };
    Ok(Work {
        collection: METRICS,
        changes: n,
        batches,
        rows: per_batch,
        records: n,
    })
}

/// Writes `rows` in transactions of `per_txn` ops.
fn commit(
    store: &Store,
    rows: &[Value],
    per_txn: usize,
    ops: fn(&[Value]) -> Vec<meshlite_core::store::WriteOp>,
) -> Result<(), BenchError> {
    for chunk in rows.chunks(per_txn) {
        store.transact(ops(chunk))?;
    }
    Ok(())
}

/// Each row after a worker touched it.
fn updated(generator: &mut RecordGen, rows: &[Value]) -> Vec<Value> {
    rows.iter().map(|r| generator.task_update(r)).collect()
}

/// The transactions `store` wrote itself, in sequence.
fn own_txns(store: &Store) -> Result<Vec<Vec<u8>>, BenchError> {
    let me = store.replica_id();
    let max = store.summary()?.get(&me).map_or(0, |s| s.max());
    export(store, vec![(me, 1..=max)], 4 << 20)
}

/// `a[0], b[0], a[1], b[1], …`, then the rest of the longer one.
fn interleave(a: Vec<Txn>, b: Vec<Txn>) -> Vec<Txn> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter(), b.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

fn op_id(op: &Op) -> &str {
    match op {
        Op::Doc { id, .. } | Op::Delete { id, .. } | Op::Append { id, .. } => id,
    }
}

/// One side's batches, with and without the server's CPU time.
#[derive(Default)]
struct Timed {
    /// CPU = this process only.
    client: Vec<Batch>,
    /// CPU = this process + the Postgres server.
    total: Vec<Batch>,
}

impl Timed {
    fn time(
        &mut self,
        server: Option<ServerCpu>,
        f: impl FnOnce() -> Result<usize, BenchError>,
    ) -> Result<(), BenchError> {
        let server_before = server.map(|s| s.snapshot());
        let cpu = process_cpu_time();
        let start = Instant::now();
        let items = f()?;
        let wall = start.elapsed();
        let cpu = process_cpu_time().saturating_sub(cpu);
        let server_cpu = match (server, server_before) {
            (Some(s), Some(before)) => ServerCpu::between(&before, &s.snapshot()),
            _ => Duration::ZERO,
        };
        self.client.push(Batch { wall, cpu, items });
        let cpu = cpu + server_cpu;
        self.total.push(Batch { wall, cpu, items });
        Ok(())
    }
}

/// `subject` against `baseline`, with CPU of this process only (`total = false`) or with the
/// server's.
fn race_of(name: &str, target: f64, subject: &Timed, baseline: &Timed, total: bool) -> Race {
    let pick = |t: &Timed| {
        if total {
            t.total.clone()
        } else {
            t.client.clone()
        }
    };
    let mut race = Race::new(name, Target::Ratio(target));
    race.subject.batches = pick(subject);
    race.baseline.batches = pick(baseline);
    race
}

/// One figure's result.
struct Outcome {
    name: String,
    target: f64,
    changes: usize,
    records: usize,
    bridge: Timed,
    baseline: Timed,
    conflicts: i64,
}

impl Outcome {
    fn new(name: &str, target: f64, work: &Work) -> Self {
        Self {
            name: name.to_owned(),
            target,
            changes: work.changes,
            records: work.records,
            bridge: Timed::default(),
            baseline: Timed::default(),
            conflicts: 0,
        }
    }

    /// The race with CPU of this process only (`total = false`) or with the server's.
    fn race(&self, total: bool) -> Race {
        let pick = |t: &Timed| {
            if total {
                t.total.clone()
            } else {
                t.client.clone()
            }
        };
        let mut race = Race::new(&self.name, Target::Ratio(self.target));
        race.subject.batches = pick(&self.bridge);
        race.baseline.batches = pick(&self.baseline);
        race
    }

    fn to_json(&self) -> Value {
        let (client, total) = (self.race(false), self.race(true));
        let server_share = |t: &Timed| {
            let all: Duration = t.total.iter().map(|b| b.cpu).sum();
            let own: Duration = t.client.iter().map(|b| b.cpu).sum();
            round3(1.0 - own.as_secs_f64() / all.as_secs_f64().max(1e-9))
        };
        json!({
            "figure": self.name,
            "changes": self.changes,
            "rows_at_end": self.records,
            "rounds": self.bridge.client.len(),
            "bridge_per_s": client.subject.rate().round(),
            "baseline_per_s": client.baseline.rate().round(),
            "ratio": round3(client.ratio()),
            "bridge_mean_per_s": client.subject.mean_rate().round(),
            "baseline_mean_per_s": client.baseline.mean_rate().round(),
            "bridge_per_cpu_s": total.subject.cpu_rate().round(),
            "baseline_per_cpu_s": total.baseline.cpu_rate().round(),
            "cpu_ratio": round3(total.cpu_ratio()),
            "bridge_per_client_cpu_s": client.subject.cpu_rate().round(),
            "baseline_per_client_cpu_s": client.baseline.cpu_rate().round(),
            "client_cpu_ratio": round3(client.cpu_ratio()),
            "bridge_server_cpu_share": server_share(&self.bridge),
            "baseline_server_cpu_share": server_share(&self.baseline),
            "conflicts_recorded": self.conflicts,
            "target_ratio": self.target,
            "met": client.met(),
        })
    }
}

fn print_table(results: &[Outcome]) {
    println!(
        "\n{:<18} {:>12} {:>12} {:>7} {:>12} {:>12} {:>7} {:>7}",
        "figure", "bridge/s", "plain/s", "wall", "bridge/cpu-s", "plain/cpu-s", "cpu", "target"
    );
    for r in results {
        let (client, total) = (r.race(false), r.race(true));
        println!(
            "{:<18} {:>12.0} {:>12.0} {:>7.3} {:>12.0} {:>12.0} {:>7.3} {:>7}",
            r.name,
            client.subject.rate(),
            client.baseline.rate(),
            client.ratio(),
            total.subject.cpu_rate(),
            total.baseline.cpu_rate(),
            total.cpu_ratio(),
            format!("{}{}", r.target, if client.met() { " ok" } else { " MISS" }),
        );
    }
}
