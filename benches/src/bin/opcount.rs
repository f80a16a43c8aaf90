//! Per-operation cost of store operations in a form that compares across architectures: the
//! instructions a run executes, measured by `benches/insn-count.sh` (a QEMU TCG plugin, or
//! `perf stat` on real hardware) around this binary.
//!
//! One run sets up a store (a temporary directory, the PMOVES schema, `--preload` tasks) and
//! prepares the inputs of `--n` operations of one kind, then performs them unless `--dry` is
//! given, and closes the store. A dry run does exactly the same set-up, so the cost of one
//! operation is `(instructions(full) − instructions(dry)) / n`, start-up, set-up and input
//! generation cancelling out. The operations:
//!
//! - `insert`: new `tasks` documents, `--batch` per transaction;
//! - `update`: updates (a later `status`, `updated_at`) of random preloaded tasks, `--batch` per
//!   transaction (with the default 2000 preloaded and a document cache of 1024, a mix of cached
//!   documents and documents loaded from their stored state);
//! - `read`: `Store::get` of random preloaded tasks;
//! - `remote-apply`: transactions of 10 task upserts written on another replica (a quarter
//!   update an earlier task of theirs), applied 100 transactions per `apply_remote` call.
//!
//! It also prints the wall-clock and CPU time (all threads) of the operations phase, which are
//! meaningful only when the binary runs natively (never under emulation); on a machine shared
//! with other work the CPU time is the cost, the wall time also measures the scheduler.
//!
//! ```sh
//! cargo run --release -p meshlite-benches --bin opcount -- --op insert --n 2000
//! benches/insn-count.sh      # both architectures, every operation, one JSON line each
//! ```

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use meshlite_benches::BenchError;
use meshlite_benches::measure::{emit, process_cpu_time};
use meshlite_benches::workload::{
    BATCH, TASKS, decode_all, default_doc_cache, open_store, put_ops, remote_workload, tasks,
};
use meshlite_core::Txn;
use meshlite_core::store::{Store, WriteOp};
use meshlite_fixtures::records::{RecordGen, task_id};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Transactions per `apply_remote` call.
const APPLY_TXNS: usize = 100;

/// Changes per remote transaction.
const REMOTE_OPS_PER_TXN: usize = 10;

/// Runs N store operations of one kind after a fixed set-up (or only the set-up, `--dry`).
#[derive(Debug, Parser)]
#[command(name = "opcount")]
struct Args {
    /// The operation.
    #[arg(long, value_enum)]
    op: OpKind,
    /// Operations (for `remote-apply`: changes, a multiple of 10).
    #[arg(long, default_value_t = 2000)]
    n: usize,
    /// Tasks written before the operations (1000 per transaction).
    #[arg(long, default_value_t = 2000)]
    preload: u64,
    /// Operations per transaction for `insert` and `update`.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Set up and prepare the inputs, but perform no operation.
    #[arg(long)]
    dry: bool,
    /// Random seed of the update and read targets.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// A store operation whose cost is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OpKind {
    Insert,
    Update,
    Read,
    RemoteApply,
}

impl OpKind {
    fn name(self) -> &'static str {
        match self {
            OpKind::Insert => "insert",
            OpKind::Update => "update",
            OpKind::Read => "read",
            OpKind::RemoteApply => "remote_apply",
        }
    }
}

/// The prepared inputs of the operations, made before any of them runs.
enum Inputs {
    Writes(Vec<Vec<WriteOp>>),
    Reads(Vec<String>),
    Remote(Vec<Vec<Txn>>),
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opcount: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), BenchError> {
    if args.op == OpKind::RemoteApply && !args.n.is_multiple_of(REMOTE_OPS_PER_TXN) {
        return Err(BenchError::Check(format!(
            "--n must be a multiple of {REMOTE_OPS_PER_TXN} for remote-apply"
        )));
    }
    let temp = tempfile::tempdir()?;
    let mut generator = RecordGen::new(0, 1);
    let store = open_store(&temp.path().join("store"), default_doc_cache())?;
    let preloaded = preload(&store, &mut generator, args.preload)?;
    let inputs = prepare(args, &temp.path().join("origin"), &preloaded, generator)?;
    drop(preloaded);
    let cpu = process_cpu_time();
    let started = Instant::now();
    let done = if args.dry {
        0
    } else {
        perform(&store, inputs)?
    };
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = process_cpu_time().saturating_sub(cpu).as_secs_f64();
    store.close()?;
    if !args.dry && done != args.n {
        return Err(BenchError::Check(format!(
            "{} of {} {} operations took effect",
            done,
            args.n,
            args.op.name()
        )));
    }
    emit(&json!({
        "op": args.op.name(),
        "n": args.n,
        "performed": done,
        "dry": args.dry,
        "preload": args.preload,
        "batch": args.batch,
        "native_ops_seconds": seconds,
        "native_ops_cpu_seconds": cpu_seconds,
    }));
    Ok(())
}

/// Writes `count` tasks, `BATCH` per transaction, and returns them.
fn preload(store: &Store, generator: &mut RecordGen, count: u64) -> Result<Vec<Value>, BenchError> {
    let mut all = Vec::with_capacity(count as usize);
    let mut start = 0;
    while start < count {
        let end = (start + BATCH as u64).min(count);
        let rows = tasks(generator, start..end);
        store.transact(put_ops(&rows))?;
        all.extend(rows);
        start = end;
    }
    Ok(all)
}

/// The inputs of `args.n` operations of `args.op`.
fn prepare(
    args: &Args,
    origin_dir: &Path,
    preloaded: &[Value],
    mut generator: RecordGen,
) -> Result<Inputs, BenchError> {
    let batch = args.batch.max(1);
    let mut rng = StdRng::seed_from_u64(args.seed);
    let targets = |rng: &mut StdRng| -> Result<Vec<usize>, BenchError> {
        if preloaded.is_empty() {
            return Err(BenchError::Check(format!(
                "--op {} needs --preload > 0",
                args.op.name()
            )));
        }
        Ok((0..args.n)
            .map(|_| rng.random_range(0..preloaded.len()))
            .collect())
    };
    Ok(match args.op {
        OpKind::Insert => {
            let first = args.preload;
            let rows = tasks(&mut generator, first..first + args.n as u64);
            Inputs::Writes(rows.chunks(batch).map(put_ops).collect())
        }
        OpKind::Update => {
            let rows: Vec<Value> = targets(&mut rng)?
                .into_iter()
                .map(|i| generator.task_update(&preloaded[i]))
                .collect();
            Inputs::Writes(rows.chunks(batch).map(put_ops).collect())
        }
        OpKind::Read => Inputs::Reads(
            targets(&mut rng)?
                .into_iter()
                .map(|i| task_id(0, i as u64))
                .collect(),
        ),
        OpKind::RemoteApply => {
            let txns = args.n / REMOTE_OPS_PER_TXN;
            let work = remote_workload(origin_dir, txns, REMOTE_OPS_PER_TXN, 0.25, args.seed)?;
            let groups = work
                .txns
                .chunks(APPLY_TXNS)
                .map(decode_all)
                .collect::<Result<Vec<_>, _>>()?;
            Inputs::Remote(groups)
        }
    })
}

/// Performs the operations; returns how many ran (reads that found their record, changes
/// applied, rows written).
fn perform(store: &Store, inputs: Inputs) -> Result<usize, BenchError> {
    let mut done = 0;
    match inputs {
        Inputs::Writes(batches) => {
            for ops in batches {
                done += store.transact(ops)?.changes.len();
            }
        }
        Inputs::Reads(ids) => {
            for id in &ids {
                done += usize::from(store.get(TASKS, id)?.is_some());
            }
        }
        Inputs::Remote(groups) => {
            for txns in groups {
                let sent = txns.len();
                let changes: usize = txns.iter().map(|t| t.ops.len()).sum();
                let report = store.apply_remote(txns)?;
                if report.applied != sent {
                    return Err(BenchError::Check(format!("apply: {report:?}")));
                }
                done += changes;
            }
        }
    }
    Ok(done)
}
