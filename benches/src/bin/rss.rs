//! Figure 5 of the core issue: peak RSS of a process that opens a store of 100k documents and
//! serves 10k random reads (target ≤ 128 MB).
//!
//! Without a subcommand it builds (or reuses, with `--dir`) a store of 100k `tasks` documents
//! and a raw-SQLite table of the same rows, then runs itself three times as fresh processes:
//! `read` (open the store, 10k random `Store::get`s), `read-raw` (open the raw table, the same
//! 10k reads by id) and `idle` (nothing: the floor of this binary). Each child reads its own
//! peak resident set (`VmHWM` in `/proc/self/status`) at the end and prints it as JSON; the
//! parent prints the figure with the baseline beside it.
//!
//! ```sh
//! cargo run --release -p meshlite-benches --bin rss
//! cargo run --release -p meshlite-benches --bin rss -- --dir /tmp/rss-store   # keep and reuse
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::{Parser, Subcommand};
use meshlite_benches::BenchError;
use meshlite_benches::baseline::{RAW_DB_FILE, RawTable, open_read_only};
use meshlite_benches::measure::{emit, machine, proc_status_kib, round3};
use meshlite_benches::workload::{BATCH, TASKS, default_doc_cache, open_store, put_ops, tasks};
use meshlite_core::Store;
use meshlite_core::store::{DB_FILE, Synchronous};
use meshlite_fixtures::records::{RecordGen, task_id};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// The issue's limit on the peak RSS of the reading process.
const TARGET_MIB: f64 = 128.0;

/// Peak RSS of a process serving random reads from a 100k-document store.
#[derive(Debug, Parser)]
#[command(name = "rss")]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Store directory; built when it holds no store yet (default: a temporary directory).
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    /// Documents in the store.
    #[arg(long, global = true, default_value_t = 100_000)]
    docs: u64,
    /// Random reads.
    #[arg(long, global = true, default_value_t = 10_000)]
    reads: usize,
    /// Document cache of the reading store (entries).
    #[arg(long, global = true)]
    doc_cache: Option<usize>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Open the store and serve the random reads; print peak RSS.
    Read,
    /// Open the store, serve the random reads, then update as many random documents (100 per
    /// transaction, filling the document cache); print peak RSS.
    ReadUpdate,
    /// Open the raw table and serve the same reads; print peak RSS.
    ReadRaw,
    /// Do nothing; print peak RSS.
    Idle,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match (&args.mode, &args.dir) {
        (None, _) => parent(&args),
        (Some(Mode::Idle), _) => {
            peak("idle", json!({}));
            Ok(())
        }
        (Some(_), None) => Err(BenchError::Check("child modes need --dir".into())),
        (Some(Mode::Read), Some(dir)) => read_store(&args, dir, false),
        (Some(Mode::ReadUpdate), Some(dir)) => read_store(&args, dir, true),
        (Some(Mode::ReadRaw), Some(dir)) => read_raw(&args, dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rss: {e}");
            ExitCode::FAILURE
        }
    }
}

fn doc_cache(args: &Args) -> usize {
    args.doc_cache.unwrap_or_else(default_doc_cache)
}

/// Builds what is missing, runs the three children, prints the figure.
fn parent(args: &Args) -> Result<(), BenchError> {
    let temp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    emit(&json!({ "machine": machine() }));
    build(args, &dir)?;
    let store = child(args, &dir, "read")?;
    let raw = child(args, &dir, "read-raw")?;
    let idle = child(args, &dir, "idle")?;
    let updating = child(args, &dir, "read-update")?;
    let mib = |v: &Value| v["peak_rss_kib"].as_f64().unwrap_or(f64::NAN) / 1024.0;
    emit(&json!({
        "figure": "peak_rss_100k_docs_10k_reads_then_10k_updates",
        "store_peak_mib": round3(mib(&updating)),
        "target_mib": TARGET_MIB,
        "met": mib(&updating) <= TARGET_MIB,
        "doc_cache": doc_cache(args),
        "updates": args.reads,
    }));
    emit(&json!({
        "figure": "peak_rss_100k_docs_10k_reads",
        "store_peak_mib": round3(mib(&store)),
        "raw_sqlite_peak_mib": round3(mib(&raw)),
        "idle_process_peak_mib": round3(mib(&idle)),
        "ratio_store_vs_raw": round3(mib(&store) / mib(&raw)),
        "target_mib": TARGET_MIB,
        "met": mib(&store) <= TARGET_MIB,
        "doc_cache": doc_cache(args),
        "docs": args.docs,
        "reads": args.reads,
    }));
    Ok(())
}

/// Writes the store and the raw table of `args.docs` tasks unless the store exists.
fn build(args: &Args, dir: &Path) -> Result<(), BenchError> {
    if dir.join("store").join(DB_FILE).exists() && dir.join("raw").join(RAW_DB_FILE).exists() {
        emit(&json!({ "step": "build", "reused": dir }));
        return Ok(());
    }
    let started = Instant::now();
    let store = open_store(&dir.join("store"), default_doc_cache())?;
    let mut raw = RawTable::open(&dir.join("raw"), Synchronous::Normal)?;
    let mut generator = RecordGen::new(0, 1);
    let mut next = 0;
    while next < args.docs {
        let end = (next + BATCH as u64).min(args.docs);
        let rows = tasks(&mut generator, next..end);
        store.transact(put_ops(&rows))?;
        raw.insert(&rows)?;
        next = end;
    }
    let db_bytes = store.status()?.db_bytes;
    store.close()?;
    emit(
        &json!({ "step": "build", "seconds": round3(started.elapsed().as_secs_f64()), "db_bytes": db_bytes }),
    );
    Ok(())
}

/// Runs this binary in `mode` as a fresh process and returns its JSON line.
fn child(args: &Args, dir: &Path, mode: &str) -> Result<Value, BenchError> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg(mode)
        .arg("--dir")
        .arg(dir)
        .arg("--docs")
        .arg(args.docs.to_string());
    cmd.arg("--reads")
        .arg(args.reads.to_string())
        .arg("--doc-cache")
        .arg(doc_cache(args).to_string());
    let out = cmd.output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(BenchError::Check(format!("child {mode} failed: {err}")));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let value: Value = serde_json::from_str(text.trim())
        .map_err(|e| BenchError::Check(format!("child {mode} printed {text:?}: {e}")))?;
    emit(&value);
    Ok(value)
}

/// The ids of `reads` random tasks of the store.
fn random_ids(args: &Args) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(42);
    (0..args.reads)
        .map(|_| task_id(0, rng.random_range(0..args.docs)))
        .collect()
}

fn read_store(args: &Args, dir: &Path, update: bool) -> Result<(), BenchError> {
    let ids = random_ids(args);
    let started = Instant::now();
    let store = open_store(&dir.join("store"), doc_cache(args))?;
    let mut found = 0;
    for id in &ids {
        found += usize::from(store.get(TASKS, id)?.is_some());
    }
    check_found(found, ids.len())?;
    if update {
        update_all(&store, &ids)?;
    }
    let ms = started.elapsed().as_millis() as u64;
    let mode = if update { "read-update" } else { "read" };
    peak(
        mode,
        json!({ "reads": ids.len(), "updates": if update { ids.len() } else { 0 }, "ms": ms, "doc_cache": doc_cache(args) }),
    );
    store.close()?;
    Ok(())
}

/// Updates every record of `ids` (status and `updated_at`), 100 per transaction.
fn update_all(store: &Store, ids: &[String]) -> Result<(), BenchError> {
    let mut generator = RecordGen::new(0, 2);
    for group in ids.chunks(100) {
        let mut rows = Vec::with_capacity(group.len());
        for id in group {
            let row = store
                .get(TASKS, id)?
                .ok_or_else(|| BenchError::Check(format!("{id} missing")))?;
            rows.push(generator.task_update(&row));
        }
        store.transact(put_ops(&rows))?;
    }
    Ok(())
}

fn read_raw(args: &Args, dir: &Path) -> Result<(), BenchError> {
    let ids = random_ids(args);
    let started = Instant::now();
    let conn = open_read_only(&dir.join("raw").join(RAW_DB_FILE))?;
    let mut stmt = conn.prepare("SELECT json FROM rows WHERE id = ?1")?;
    let mut found = 0;
    for id in &ids {
        let json: Option<String> =
            rusqlite::OptionalExtension::optional(stmt.query_row([id], |r| r.get(0)))?;
        let parsed = json.map(|j| serde_json::from_str::<Value>(&j)).transpose();
        found += usize::from(
            parsed
                .map_err(|e| BenchError::Check(e.to_string()))?
                .is_some(),
        );
    }
    let elapsed = started.elapsed();
    check_found(found, ids.len())?;
    peak(
        "read-raw",
        json!({ "reads": ids.len(), "ms": elapsed.as_millis() as u64 }),
    );
    Ok(())
}

fn check_found(found: usize, wanted: usize) -> Result<(), BenchError> {
    if found == wanted {
        return Ok(());
    }
    Err(BenchError::Check(format!(
        "{found} of {wanted} reads found their record"
    )))
}

/// Prints `extra` with this process's peak and current RSS.
fn peak(mode: &str, mut extra: Value) {
    extra["mode"] = json!(mode);
    extra["peak_rss_kib"] = json!(proc_status_kib("VmHWM"));
    extra["rss_kib"] = json!(proc_status_kib("VmRSS"));
    emit(&extra);
}
