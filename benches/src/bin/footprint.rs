//! The node's footprint on the machine it runs on: start-up time of `meshlite run` to its ready
//! line and its resident memory once idle, with an empty data directory and with a store of
//! `--docs` (100k) documents.
//!
//! For each store it starts the real `meshlite` binary `--runs` times as a fresh process
//! (standalone mode, HTTP on an ephemeral loopback port, mDNS off, environment cleared), times
//! spawn → the `{"event":"ready",…}` line on stdout, waits `--idle-seconds`, reads the process's
//! `VmRSS`, `VmHWM` and thread count from `/proc/<pid>/status`, then stops it with SIGTERM and
//! times the clean exit. It prints one JSON line per run and one summary per store (median and
//! worst start-up). The page cache is warm after the first run (the store was just written or
//! read); the first run's figure is printed as well.
//!
//! ```sh
//! cargo build --release -p meshlite-node -p meshlite-benches --bin footprint
//! target/release/footprint                       # uses target/release/meshlite
//! target/release/footprint --dir /tmp/fp --runs 5 --meshlite /usr/local/bin/meshlite
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use meshlite_benches::BenchError;
use meshlite_benches::measure::{emit, machine, median, proc_status_kib_of, round3};
use meshlite_benches::workload::{BATCH, default_doc_cache, open_store, put_ops, tasks};
use meshlite_core::store::DB_FILE;
use meshlite_fixtures::records::{RecordGen, pmoves_schema_path};
use serde_json::{Value, json};

/// The issue's bound on start-up with a 100k-document store (on x86 here).
const TARGET_START_S: f64 = 1.0;

/// How long a start or a stop may take before the bench gives up.
const PROCESS_DEADLINE: Duration = Duration::from_secs(120);

/// Start-up time and idle memory of `meshlite run`.
#[derive(Debug, Parser)]
#[command(name = "footprint")]
struct Args {
    /// The node binary (default: `meshlite` beside this binary).
    #[arg(long)]
    meshlite: Option<PathBuf>,
    /// Directory for the data directories; the large store is built once and reused.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Documents in the large store.
    #[arg(long, default_value_t = 100_000)]
    docs: u64,
    /// Starts per store.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seconds to wait after the ready line before reading the resident set.
    #[arg(long, default_value_t = 2.0)]
    idle_seconds: f64,
}

/// What one start of the node measured.
struct Start {
    ready: Duration,
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    stop: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("footprint: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), BenchError> {
    let node = node_binary(args)?;
    let temp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    emit(&json!({ "machine": machine(), "arch": std::env::consts::ARCH, "meshlite": node }));
    let empty = dir.join("empty");
    if empty.exists() {
        std::fs::remove_dir_all(&empty)?;
    }
    measure_store(args, &node, &empty, "empty", 0)?;
    let large = dir.join(format!("store-{}", args.docs));
    build_store(&large, args.docs)?;
    measure_store(args, &node, &large, "large", args.docs)
}

/// `--meshlite`, else `meshlite` in this binary's directory.
fn node_binary(args: &Args) -> Result<PathBuf, BenchError> {
    let path = match &args.meshlite {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("meshlite"),
    };
    match path.is_file() {
        true => Ok(path),
        false => Err(BenchError::Check(format!(
            "no node binary at {}: build it (cargo build --release -p meshlite-node) or pass --meshlite",
            path.display()
        ))),
    }
}

/// Writes `docs` PMOVES tasks into a store in `data` unless one is there.
fn build_store(data: &Path, docs: u64) -> Result<(), BenchError> {
    if data.join(DB_FILE).exists() {
        emit(&json!({ "step": "build", "reused": data }));
        return Ok(());
    }
    let started = Instant::now();
    let store = open_store(data, default_doc_cache())?;
    let mut generator = RecordGen::new(0, 1);
    let mut next = 0;
    while next < docs {
        let end = (next + BATCH as u64).min(docs);
        store.transact(put_ops(&tasks(&mut generator, next..end)))?;
        next = end;
    }
    let db_bytes = store.status()?.db_bytes;
    store.close()?;
    let seconds = round3(started.elapsed().as_secs_f64());
    emit(&json!({ "step": "build", "docs": docs, "seconds": seconds, "db_bytes": db_bytes }));
    Ok(())
}

/// Starts the node `args.runs` times on `data` and prints each run and the summary.
fn measure_store(
    args: &Args,
    node: &Path,
    data: &Path,
    name: &str,
    docs: u64,
) -> Result<(), BenchError> {
    let mut starts = Vec::with_capacity(args.runs);
    for run in 0..args.runs {
        let start = start_once(node, data, Duration::from_secs_f64(args.idle_seconds))?;
        emit(&json!({
            "store": name, "run": run, "ready_ms": ms(start.ready), "idle_rss_kib": start.rss_kib,
            "peak_rss_kib": start.hwm_kib, "threads": start.threads, "stop_ms": ms(start.stop),
        }));
        starts.push(start);
    }
    let ready_ms: Vec<f64> = starts.iter().map(|s| ms(s.ready)).collect();
    let kib = |f: fn(&Start) -> u64| median(starts.iter().map(|s| f(s) as f64).collect());
    let mut summary = json!({
        "figure": format!("node_start_{name}"),
        "docs": docs,
        "runs": args.runs,
        "ready_ms_median": round3(median(ready_ms.clone())),
        "ready_ms_max": round3(ready_ms.iter().copied().fold(0.0, f64::max)),
        "ready_ms_first": ready_ms.first().copied().map(round3),
        "idle_rss_mib_median": round3(kib(|s| s.rss_kib) / 1024.0),
        "peak_rss_mib_median": round3(kib(|s| s.hwm_kib) / 1024.0),
        "threads": starts.first().map(|s| s.threads),
        "stop_ms_median": round3(median(starts.iter().map(|s| ms(s.stop)).collect())),
    });
    if docs > 0 {
        summary["target_s"] = json!(TARGET_START_S);
        summary["met"] = json!(median(ready_ms) / 1000.0 <= TARGET_START_S);
    }
    emit(&summary);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1000.0)
}

/// One start: spawn → ready line, idle wait, memory, SIGTERM → exit.
fn start_once(node: &Path, data: &Path, idle: Duration) -> Result<Start, BenchError> {
    let mut cmd = Command::new(node);
    cmd.arg("run")
        .env_clear()
        .env("MESHLITE_DATA", data)
        .env("MESHLITE_SCHEMA", pmoves_schema_path())
        .env("SUPABASE_MODE", "standalone")
        .env("MESHLITE_HTTP_LISTEN", "127.0.0.1:0")
        .env("MESHLITE_MDNS", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let ready = match wait_ready(&mut child) {
        Ok(()) => started.elapsed(),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    std::thread::sleep(idle);
    let pid = child.id().to_string();
    let field = |name: &str| proc_status_kib_of(&pid, name).unwrap_or(0);
    let (rss_kib, hwm_kib, threads) = (field("VmRSS"), field("VmHWM"), field("Threads"));
    let stop = stop(&mut child)?;
    Ok(Start {
        ready,
        rss_kib,
        hwm_kib,
        threads,
        stop,
    })
}

/// Reads the child's stdout until the ready line (on a helper thread, so a silent child cannot
/// hang the bench past [`PROCESS_DEADLINE`]); the rest of its output is drained and dropped.
fn wait_ready(child: &mut Child) -> Result<(), BenchError> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Check("no stdout pipe".into()))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut said = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let ready = serde_json::from_str::<Value>(&line).is_ok_and(|v| v["event"] == "ready");
            if ready && !said {
                said = true;
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(PROCESS_DEADLINE).map_err(|_| {
        BenchError::Check(format!(
            "meshlite run printed no ready line within {PROCESS_DEADLINE:?}"
        ))
    })
}

/// Sends SIGTERM and waits for a clean exit.
fn stop(child: &mut Child) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()?;
    if !status.success() {
        return Err(BenchError::Check("kill -TERM failed".into()));
    }
    while started.elapsed() < PROCESS_DEADLINE {
        if let Some(exit) = child.try_wait()? {
            return match exit.success() {
                true => Ok(started.elapsed()),
                false => Err(BenchError::Check(format!(
                    "meshlite run exited with {exit}"
                ))),
            };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    Err(BenchError::Check(
        "meshlite run did not stop on SIGTERM".into(),
    ))
}
