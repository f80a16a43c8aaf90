//! Criterion benches of local writes against raw SQLite, 1000 rows per transaction:
//! document upserts (new records, updates with the document cached, updates loading it from its
//! stored state) and log appends. The ratios of the core issue come from the `store_ratios`
//! binary, which alternates store and baseline batches; these benches give criterion's
//! distributions of the same operations.
//!
//! ```sh
//! cargo bench -p meshlite-benches --bench store_writes -- --quick
//! ```

use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime,
};
use meshlite_benches::baseline::RawTable;
use meshlite_benches::workload::{BATCH, append_ops, default_doc_cache, open_store, put_ops};
use meshlite_core::Store;
use meshlite_core::store::Synchronous;
use meshlite_fixtures::records::RecordGen;
use serde_json::Value;
use tempfile::TempDir;

/// Records behind the cache-miss benches: far more than the document cache holds. Small when
/// criterion runs the benches once as tests (`cargo test --benches`).
fn cold_records() -> u64 {
    if std::env::args().any(|a| a == "--bench") {
        20_000
    } else {
        2_000
    }
}

/// A store and a raw table side by side, with the rows each was given.
struct Pair {
    _dir: TempDir,
    store: Store,
    raw: RawTable,
    generator: RecordGen,
    next: u64,
}

impl Pair {
    fn new() -> Self {
        let dir = TempDir::new().expect("temp dir");
        let store = open_store(&dir.path().join("store"), default_doc_cache()).expect("store");
        let raw = RawTable::open(&dir.path().join("raw"), Synchronous::Normal).expect("raw table");
        Self {
            _dir: dir,
            store,
            raw,
            generator: RecordGen::new(3, 1),
            next: 0,
        }
    }

    /// `n` new task rows (a multiple of 1000), written to both sides (untimed setup).
    fn seed_tasks(&mut self, n: u64) -> Vec<Value> {
        let mut all = Vec::new();
        while all.len() < n as usize {
            let rows = next_batch(&mut self.generator, &mut self.next, RecordGen::task);
            self.store.transact(put_ops(&rows)).expect("seed store");
            self.raw.insert(&rows).expect("seed raw");
            all.extend(rows);
        }
        all
    }
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g
}

/// Times `write` over `iters` batches made by `make` (untimed).
fn timed<T>(iters: u64, mut make: impl FnMut() -> T, mut write: impl FnMut(T)) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let input = make();
        let start = Instant::now();
        write(input);
        total += start.elapsed();
    }
    total
}

fn doc_inserts(c: &mut Criterion) {
    let mut p = Pair::new();
    let (mut store_gen, mut raw_gen) = (RecordGen::new(1, 1), RecordGen::new(1, 1));
    let (mut store_next, mut raw_next) = (0u64, 0u64);
    let mut g = group(c, "doc_insert_1000");
    g.bench_function("store_transact_put", |b| {
        b.iter_custom(|iters| {
            let make = || {
                put_ops(&next_batch(
                    &mut store_gen,
                    &mut store_next,
                    RecordGen::task,
                ))
            };
            timed(iters, make, |ops| {
                drop(p.store.transact(ops).expect("transact"))
            })
        })
    });
    g.bench_function("raw_sqlite_insert", |b| {
        b.iter_custom(|iters| {
            let make = || next_batch(&mut raw_gen, &mut raw_next, RecordGen::task);
            timed(iters, make, |rows| p.raw.insert(&rows).expect("insert"))
        })
    });
}

/// The next 1000 rows of `generator` made by `row` (numbers continue from `next`).
fn next_batch(
    generator: &mut RecordGen,
    next: &mut u64,
    row: fn(&mut RecordGen, u64) -> Value,
) -> Vec<Value> {
    let rows = (*next..*next + BATCH as u64)
        .map(|n| row(generator, n))
        .collect();
    *next += BATCH as u64;
    rows
}

fn doc_updates(c: &mut Criterion) {
    let mut p = Pair::new();
    let cold = p.seed_tasks(cold_records());
    let mut hot = p.seed_tasks(BATCH as u64);
    let mut cold_store = cold.clone();
    let mut cold_raw = cold;
    let (mut at_store, mut at_raw) = (0usize, 0usize);
    let mut g = group(c, "doc_update_1000");
    let mut generator = RecordGen::new(9, 9);
    g.bench_function("store_cache_hit", |b| {
        b.iter_custom(|iters| {
            let make = || {
                hot = hot.iter().map(|r| generator.task_update(r)).collect();
                put_ops(&hot)
            };
            timed(iters, make, |ops| {
                drop(p.store.transact(ops).expect("transact"))
            })
        })
    });
    g.bench_function("raw_sqlite_upsert_hot", |b| {
        b.iter_custom(|iters| {
            let make = || {
                hot = hot.iter().map(|r| generator.task_update(r)).collect();
                hot.clone()
            };
            timed(iters, make, |rows| p.raw.upsert(&rows).expect("upsert"))
        })
    });
    g.bench_function("store_cache_miss", |b| {
        b.iter_custom(|iters| {
            let make = || put_ops(&next_cold(&mut cold_store, &mut at_store, &mut generator));
            timed(iters, make, |ops| {
                drop(p.store.transact(ops).expect("transact"))
            })
        })
    });
    g.bench_function("raw_sqlite_upsert_cold", |b| {
        b.iter_custom(|iters| {
            let make = || next_cold(&mut cold_raw, &mut at_raw, &mut generator);
            timed(iters, make, |rows| p.raw.upsert(&rows).expect("upsert"))
        })
    });
}

/// Updated versions of the next 1000 cold records, cycling through all of them in order so the
/// document cache (1024 entries) never holds the one being written.
fn next_cold(cold: &mut [Value], at: &mut usize, generator: &mut RecordGen) -> Vec<Value> {
    let start = *at % cold.len();
    let end = (start + BATCH).min(cold.len());
    *at = end;
    for row in &mut cold[start..end] {
        *row = generator.task_update(row);
    }
    cold[start..end].to_vec()
}

fn log_appends(c: &mut Criterion) {
    let mut p = Pair::new();
    let (mut store_gen, mut raw_gen) = (RecordGen::new(2, 1), RecordGen::new(2, 1));
    let (mut store_next, mut raw_next) = (0u64, 0u64);
    let mut g = group(c, "log_append_1000");
    g.bench_function("store_transact_append", |b| {
        b.iter_custom(|iters| {
            let make = || {
                append_ops(&next_batch(
                    &mut store_gen,
                    &mut store_next,
                    RecordGen::device_metric,
                ))
            };
            timed(iters, make, |ops| {
                drop(p.store.transact(ops).expect("transact"))
            })
        })
    });
    g.bench_function("raw_sqlite_insert", |b| {
        b.iter_custom(|iters| {
            let make = || next_batch(&mut raw_gen, &mut raw_next, RecordGen::device_metric);
            timed(iters, make, |rows| p.raw.insert(&rows).expect("insert"))
        })
    });
}

criterion_group!(benches, doc_inserts, doc_updates, log_appends);
criterion_main!(benches);
