//! Figure 4 of the core issue: what the sync protocol costs between two real stores holding
//! 100k documents from 10 origins.
//!
//! Ten origin stores each write 10k `tasks` documents (1000 per transaction). Replicas X and Y
//! are origins 0 and 1; each applies the other eight origins' transactions with `apply_remote`,
//! then X and Y sync with real `Session`s (see `meshlite_benches::sync`): a catch-up (each lacks
//! the other's 10k documents), then an idle exchange, then two divergences in which X updated
//! 1% of the 100k documents (1000 random ones, status and `updated_at`), first one document per
//! transaction, then 100 per transaction. For each sync it prints round trips, bytes each way,
//! and the ratio of the bytes sent (both directions) to the raw size of the missing changes: the
//! Automerge change bytes alone (`ratio_vs_changes`, the issue's target ≤ 2×) and the encoded
//! transactions with their ids and envelopes (`ratio_vs_txns`).
//!
//! ```sh
//! cargo run --release -p meshlite-benches --bin sync_cost
//! ```

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use meshlite_benches::BenchError;
use meshlite_benches::measure::{emit, machine, round3};
use meshlite_benches::sync::{SyncCosts, sync_stores};
use meshlite_benches::workload::{
    TASKS, change_bytes, decode_all, default_doc_cache, export, export_all, fill_tasks, open_store,
    put_ops,
};
use meshlite_core::Store;
use meshlite_fixtures::records::{RecordGen, task_id};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Measure sync round trips and bytes between two stores of 100k documents from 10 origins.
#[derive(Debug, Parser)]
#[command(name = "sync_cost")]
struct Args {
    /// Origin stores (X and Y are two of them).
    #[arg(long, default_value_t = 10)]
    origins: u32,
    /// Documents in all, spread evenly over the origins.
    #[arg(long, default_value_t = 100_000)]
    docs: u64,
    /// Documents per transaction while building the origins.
    #[arg(long, default_value_t = 1000)]
    build_per_txn: u64,
    /// Documents X updates in each divergence (1% of 100k).
    #[arg(long, default_value_t = 1000)]
    changed: usize,
    /// Directory for the stores (default: a fresh temporary directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Seed of the generated rows and of the choice of updated documents.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sync_cost: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), BenchError> {
    if args.origins < 2 {
        return Err(BenchError::Check(
            "need at least two origins (X and Y)".into(),
        ));
    }
    let temp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    emit(&json!({ "machine": machine(), "origins": args.origins, "docs": args.docs }));
    let (x, y) = build(args, &dir)?;
    let docs = args.docs / u64::from(args.origins) * u64::from(args.origins);
    measured_sync("catch_up", &x, &y)?;
    check_converged(&x, &y, docs, &[task_id(0, 0), task_id(1, 0)])?;
    measured_sync("idle", &x, &y)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut generator = RecordGen::new(u32::MAX, args.seed);
    for per_txn in [1, 100] {
        let ids = diverge(args, &x, &mut rng, &mut generator, per_txn)?;
        measured_sync(&format!("divergence_1pct_{per_txn}_per_txn"), &x, &y)?;
        check_converged(&x, &y, docs, &ids)?;
    }
    measured_sync("idle_after", &x, &y)?;
    x.close()?;
    y.close()?;
    emit(&json!({ "machine_after": machine() }));
    Ok(())
}

/// Builds the origins and returns X and Y, each holding everything but the other's documents.
fn build(args: &Args, dir: &Path) -> Result<(Store, Store), BenchError> {
    let started = Instant::now();
    let per_origin = args.docs / u64::from(args.origins);
    let origin = |i: u32| -> Result<Store, BenchError> {
        let store = open_store(&dir.join(format!("origin{i}")), default_doc_cache())?;
        fill_tasks(
            &store,
            &mut RecordGen::new(i, args.seed),
            per_origin,
            args.build_per_txn,
        )?;
        Ok(store)
    };
    let (x, y) = (origin(0)?, origin(1)?);
    for i in 2..args.origins {
        let other = origin(i)?;
        let txns = export_all(&other)?;
        other.close()?;
        for replica in [&x, &y] {
            replica.apply_remote(decode_all(&txns)?)?;
        }
    }
    let held = |s: &Store| s.summary().map(|m| m.txn_count());
    emit(&json!({
        "step": "build",
        "seconds": round3(started.elapsed().as_secs_f64()),
        "x_txns": held(&x)?,
        "y_txns": held(&y)?,
        "db_bytes_x": x.status()?.db_bytes,
    }));
    Ok((x, y))
}

/// X updates `args.changed` random documents, `per_txn` per transaction; returns their ids.
fn diverge(
    args: &Args,
    x: &Store,
    rng: &mut StdRng,
    generator: &mut RecordGen,
    per_txn: usize,
) -> Result<Vec<String>, BenchError> {
    let per_origin = args.docs / u64::from(args.origins);
    let mut chosen = std::collections::BTreeSet::new();
    while chosen.len() < args.changed {
        chosen.insert(task_id(
            rng.random_range(0..args.origins),
            rng.random_range(0..per_origin),
        ));
    }
    let ids: Vec<String> = chosen.into_iter().collect();
    for group in ids.chunks(per_txn) {
        let rows = group
            .iter()
            .map(|id| updated(x, id, generator))
            .collect::<Result<Vec<_>, _>>()?;
        x.transact(put_ops(&rows))?;
    }
    Ok(ids)
}

/// The stored row of `id` with a later status and `updated_at`.
fn updated(store: &Store, id: &str, generator: &mut RecordGen) -> Result<Value, BenchError> {
    let row = store
        .get(TASKS, id)?
        .ok_or_else(|| BenchError::Check(format!("{id} missing")))?;
    Ok(generator.task_update(&row))
}

/// Syncs X and Y and prints the costs beside the raw size of what each lacked.
fn measured_sync(name: &str, x: &Store, y: &Store) -> Result<SyncCosts, BenchError> {
    let (sx, sy) = (x.summary()?, y.summary()?);
    let mut missing = export(x, sx.missing_from(&sy), 4 << 20)?;
    missing.extend(export(y, sy.missing_from(&sx), 4 << 20)?);
    let (changes, txn_bytes) = change_bytes(&missing)?;
    let costs = sync_stores(x, y)?;
    let ratio = |raw: u64| (raw > 0).then(|| round3(costs.total_bytes() as f64 / raw as f64));
    let mut out = json!({
        "sync": name,
        "missing_txns": missing.len(),
        "raw_change_bytes": changes,
        "raw_txn_bytes": txn_bytes,
        "ratio_vs_changes": ratio(changes),
        "ratio_vs_txns": ratio(txn_bytes),
        "target_ratio_vs_changes": 2.0,
    });
    if let (Value::Object(o), Value::Object(c)) = (&mut out, costs.to_json()) {
        o.extend(c);
    }
    emit(&out);
    Ok(costs)
}

/// Both replicas hold the same transactions, `docs` live tasks, and the same rows for `ids`.
fn check_converged(x: &Store, y: &Store, docs: u64, ids: &[String]) -> Result<(), BenchError> {
    if x.summary()? != y.summary()? {
        return Err(BenchError::Check("summaries differ after sync".into()));
    }
    for store in [x, y] {
        let live: u64 = store
            .status()?
            .collections
            .iter()
            .filter(|c| c.name == TASKS)
            .map(|c| c.live)
            .sum();
        if live != docs {
            return Err(BenchError::Check(format!(
                "{live} live tasks, expected {docs}"
            )));
        }
    }
    for id in ids {
        if x.get(TASKS, id)? != y.get(TASKS, id)? {
            return Err(BenchError::Check(format!("{id} differs after sync")));
        }
    }
    Ok(())
}
