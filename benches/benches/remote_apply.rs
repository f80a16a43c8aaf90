//! Criterion bench of applying remote transactions into a fresh replica, beside raw SQLite
//! upserts of the same rows. The workload (transactions of 10 task upserts, a quarter of them
//! updates) is written once on replica A; every iteration applies all of it into a new replica B,
//! 100 transactions (1000 changes) per `apply_remote` call, decoding included. The changes/s
//! figure of the core issue comes from the `store_ratios` binary.
//!
//! ```sh
//! cargo bench -p meshlite-benches --bench remote_apply -- --quick
//! ```

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meshlite_benches::baseline::RawTable;
use meshlite_benches::workload::{
    RemoteWorkload, decode_all, default_doc_cache, open_store, remote_workload,
};
use meshlite_core::store::Synchronous;
use tempfile::TempDir;

/// Transactions per `apply_remote` call.
const APPLY_TXNS: usize = 100;

/// Transactions in the workload; small when criterion runs the bench once as a test.
fn workload_txns() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        1000
    } else {
        100
    }
}

/// Applies the whole workload into a fresh store; returns the time spent in decode + apply.
fn apply_all(work: &RemoteWorkload) -> Duration {
    let dir = TempDir::new().expect("temp dir");
    let store = open_store(dir.path(), default_doc_cache()).expect("store");
    let start = Instant::now();
    for chunk in work.txns.chunks(APPLY_TXNS) {
        let report = store
            .apply_remote(decode_all(chunk).expect("decode"))
            .expect("apply");
        assert_eq!(
            report.applied,
            chunk.len(),
            "every transaction applies: {report:?}"
        );
    }
    let elapsed = start.elapsed();
    store.close().expect("close");
    elapsed
}

/// Upserts the workload's rows into a fresh raw table, 1000 per transaction.
fn upsert_all(work: &RemoteWorkload) -> Duration {
    let dir = TempDir::new().expect("temp dir");
    let mut raw = RawTable::open(dir.path(), Synchronous::Normal).expect("raw table");
    let start = Instant::now();
    for rows in work.rows.chunks(APPLY_TXNS * 10) {
        raw.upsert(rows).expect("upsert");
    }
    start.elapsed()
}

fn remote_apply(c: &mut Criterion) {
    let dir = TempDir::new().expect("temp dir");
    let work = remote_workload(dir.path(), workload_txns(), 10, 0.25, 1).expect("workload");
    let mut g = c.benchmark_group("remote_apply");
    g.throughput(Throughput::Elements(work.changes as u64));
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("store_apply_remote", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| apply_all(&work)).sum())
    });
    g.bench_function("raw_sqlite_upsert", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| upsert_all(&work)).sum())
    });
}

criterion_group!(benches, remote_apply);
criterion_main!(benches);
