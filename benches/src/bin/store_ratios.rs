//! Figures 1–3 of the core issue as ratios against raw SQLite measured in the same process.
//!
//! - `doc_insert`: `Store::transact` of 1000 `Put`s of new `tasks` rows vs 1000 raw INSERTs of
//!   the same JSON rows in one transaction (target ≥ 0.10×).
//! - `doc_update_cache_hit` / `doc_update_cache_miss`: the same full rows with a later status and
//!   `updated_at`, for records whose Automerge document is in the writer's cache (the 1000 newest
//!   records, after one untimed round of updates: the cache protects a document from its second
//!   use) or not (records written long ago: each is loaded from its stored state), vs raw upserts
//!   of the same rows.
//! - `doc_update_hot`: `--hot-updates` successive updates of one record, 50 per transaction, vs
//!   the same upserts; `hot_flatness` is the store's CPU rate over the last quarter of the
//!   batches over the first quarter (a hot record must not slow down as its history grows).
//! - `log_append`: 1000 `Append`s of `device_metrics` rows per transaction vs raw INSERTs
//!   (target ≥ 0.5×).
//! - `remote_apply_mixed`: transactions written on replica A (10 task upserts each, a quarter
//!   of them updates of a random earlier task), decoded and applied into a fresh replica B with
//!   `apply_remote` 100 transactions (1000 changes) per call, vs raw upserts of the resulting
//!   rows, 1000 per transaction (target ≥ 15k changes/s). `remote_apply_inserts`: the same with
//!   new tasks only; `remote_apply_inserts_nested`: new tasks with a nested `input` (a map
//!   holding a list and a map, `workload::RowShape::Nested`).
//! - `disk_bytes` (only with `--only disk`): file sizes of a store and the raw JSON table after
//!   `--disk-records` new tasks (and `--disk-updates` rounds updating each, then
//!   `--disk-updated` of them once more), with the store's bytes per table and index, and with
//!   `--disk-gc` after GC and VACUUM (see `meshlite_benches::disk`).
//!
//! Store and baseline batches alternate; a side's rate is the median of its batch rates, the
//! ratio the median over rounds of store batch rate / baseline batch rate.
//! Prints one JSON object per figure.
//!
//! ```sh
//! cargo run --release -p meshlite-benches --bin store_ratios
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use meshlite_benches::BenchError;
use meshlite_benches::baseline::{RawTable, row_id};
use meshlite_benches::disk::{DiskPlan, disk_figure};
use meshlite_benches::measure::{Extra, Race, Target, emit, machine};
use meshlite_benches::typed::{CrSqlite, Flavor, TypedTable, columns_of};
use meshlite_benches::workload::{
    BATCH, METRICS, RowShape, TASKS, append_ops, bench_schema, check_rows, decode_all,
    default_doc_cache, indexed_fields, metrics, open_store, open_store_with, put_ops,
    remote_workload_shaped, tasks, unindexed_schema,
};
use meshlite_core::store::{Store, Synchronous, WriteOp};
use meshlite_fixtures::records::RecordGen;
use serde_json::{Value, json};

/// Measure document upserts, log appends and remote apply against raw SQLite.
#[derive(Debug, Parser)]
#[command(name = "store_ratios")]
struct Args {
    /// Batches of 1000 rows per side for inserts and appends.
    #[arg(long, default_value_t = 30)]
    rounds: usize,
    /// Batches of 1000 rows per side for each update figure.
    #[arg(long, default_value_t = 10)]
    update_rounds: usize,
    /// Successive updates of one record for `doc_update_hot` (50 per transaction).
    #[arg(long, default_value_t = 1000)]
    hot_updates: usize,
    /// Remote transactions of 10 changes each to apply (multiple of 100).
    #[arg(long, default_value_t = 3000)]
    remote_txns: usize,
    /// Directory for the databases (default: a fresh temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seed of the generated rows.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Records written for `--only disk`.
    #[arg(long, default_value_t = 100_000)]
    disk_records: u64,
    /// Rounds updating every record for `--only disk` (after the inserts).
    #[arg(long, default_value_t = 0)]
    disk_updates: usize,
    /// Records (the first ones) updated once more for `--only disk`, after the rounds.
    #[arg(long, default_value_t = 0)]
    disk_updated: u64,
    /// Also measure the store after GC and VACUUM for `--only disk`.
    #[arg(long)]
    disk_gc: bool,
    /// Only these groups of figures (default: all but `disk`).
    #[arg(long, value_enum)]
    only: Vec<Group>,
}

/// Groups of figures, for `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Group {
    /// Document inserts and updates.
    Documents,
    /// Log appends.
    Log,
    /// Remote apply.
    Remote,
    /// Bytes on disk after `--disk-records` records (only when asked for).
    Disk,
}

impl Args {
    fn wants(&self, group: Group) -> bool {
        (self.only.is_empty() && group != Group::Disk) || self.only.contains(&group)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("store_ratios: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), BenchError> {
    let temp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    let crsqlite = match CrSqlite::locate() {
        CrSqlite::At(lib) => lib.display().to_string(),
        CrSqlite::Unavailable(why) => format!("cr-sqlite unavailable: {why}"),
    };
    emit(&json!({
        "machine": machine(),
        "doc_cache": default_doc_cache(),
        "batch": BATCH,
        "crsqlite": crsqlite,
    }));
    for indexes in [Indexes::Declared, Indexes::None] {
        let dir = dir.join(indexes.suffix().trim_start_matches('_'));
        if args.wants(Group::Documents) {
            documents(args, &dir.join("documents"), indexes)?;
        }
        if args.wants(Group::Log) {
            emit(&log_append(args, &dir.join("log"), indexes)?.to_json());
        }
    }
    if args.wants(Group::Remote) {
        let mixed = remote_apply(args, &dir.join("remote_mixed"), "remote_apply_mixed", 0.25)?;
        emit(&mixed.to_json());
        let inserts = remote_apply(
            args,
            &dir.join("remote_inserts"),
            "remote_apply_inserts",
            0.0,
        )?;
        emit(&inserts.to_json());
        let nested = remote_apply_shaped(
            args,
            &dir.join("remote_nested"),
            "remote_apply_inserts_nested",
            0.0,
            RowShape::Nested,
        )?;
        emit(&nested.to_json());
    }
    if args.wants(Group::Disk) {
        let plan = DiskPlan {
            records: args.disk_records,
            rounds: args.disk_updates,
            updated: args.disk_updated,
            gc: args.disk_gc,
        };
        let figure = disk_figure(&dir.join("disk"), plan, args.seed);
        emit(&figure?);
    }
    emit(&json!({ "machine_after": machine() }));
    Ok(())
}

/// The indexes both sides maintain. The store creates an expression index for each field a
/// collection declares `indexed`; the baseline table gets the same indexes, so a ratio measures
/// the store's own cost, not the user's choice of indexes.
#[derive(Clone, Copy, Debug)]
enum Indexes {
    /// The PMOVES schema's declared indexes (tasks: status, agent_id; device_metrics: device_id).
    Declared,
    /// No declared indexes (the schema with every `indexed` list emptied).
    None,
}

impl Indexes {
    /// Suffix of the figure names.
    fn suffix(self) -> &'static str {
        match self {
            Indexes::Declared => "",
            Indexes::None => "_unindexed",
        }
    }

    /// The store and the baseline table for `collection`, both indexed alike.
    fn open(self, dir: &Path, collection: &str) -> Result<(Store, RawTable), BenchError> {
        let fields = indexed_fields(&self.schema()?, collection);
        let store = open_store_with(&dir.join("store"), default_doc_cache(), self.schema()?)?;
        let raw = RawTable::open_indexed(&dir.join("raw"), Synchronous::Normal, &fields)?;
        Ok((store, raw))
    }

    fn schema(self) -> Result<meshlite_core::Schema, BenchError> {
        match self {
            Indexes::Declared => bench_schema(),
            Indexes::None => unindexed_schema(),
        }
    }

    /// The typed tables for rows shaped like `sample` with the same indexes (as plain column
    /// indexes): plain SQLite, and cr-sqlite when its library is there (else why not).
    fn open_typed(self, dir: &Path, sample: &Value) -> Result<Typed, BenchError> {
        let fields = indexed_fields(&self.schema()?, TASKS);
        let columns = columns_of(sample);
        let open = |name: &str, flavor: &Flavor| {
            TypedTable::open(
                &dir.join(name),
                Synchronous::Normal,
                &columns,
                &fields,
                flavor,
            )
        };
        let plain = open("typed", &Flavor::Plain)?;
        let crsqlite = match CrSqlite::locate() {
            CrSqlite::At(lib) => match open("crsqlite", &Flavor::CrSqlite(lib.clone())) {
                Ok(t) => Ok(t),
                Err(e) => Err(format!("{} failed to open a CRR table: {e}", lib.display())),
            },
            CrSqlite::Unavailable(why) => Err(why),
        };
        Ok(Typed { plain, crsqlite })
    }
}

/// The typed sides of the document figures.
struct Typed {
    /// One typed column per field, plain SQLite.
    plain: TypedTable,
    /// The same table as a cr-sqlite CRR, or why it is unavailable.
    crsqlite: Result<TypedTable, String>,
}

/// The document figures share one store (and one baseline table) that grows through them.
fn documents(args: &Args, dir: &Path, indexes: Indexes) -> Result<(), BenchError> {
    let (store, mut raw) = indexes.open(dir, TASKS)?;
    let name = |figure: &str| format!("{figure}{}", indexes.suffix());
    let mut generator = RecordGen::new(1, args.seed);
    let inserted: Vec<Vec<Value>> = (0..args.rounds as u64)
        .map(|r| tasks(&mut generator, r * BATCH as u64..(r + 1) * BATCH as u64))
        .collect();
    let sample = inserted.first().and_then(|b| b.first()).cloned();
    let mut typed = indexes.open_typed(dir, &sample.unwrap_or_default())?;
    let typed = &mut typed;
    let race = Race::new(&name("doc_insert"), Target::Ratio(0.10));
    emit(&race_upserts(race, &store, &mut raw, typed, &inserted, Write::Insert)?.to_json());

    let newest = inserted.last().cloned().unwrap_or_default();
    let mut hits = successive_updates(&mut generator, &newest, args.update_rounds + 1);
    let warm_up = hits.remove(0);
    store.transact(put_ops(&warm_up))?;
    typed.plain.upsert(&warm_up)?;
    if let Ok(c) = &mut typed.crsqlite {
        c.upsert(&warm_up)?;
    }
    raw.upsert(warm_up)?;
    let race = Race::new(&name("doc_update_cache_hit"), Target::Ratio(0.10));
    emit(&race_upserts(race, &store, &mut raw, typed, &hits, Write::Upsert)?.to_json());

    let cold = inserted
        .iter()
        .take(args.update_rounds.min(inserted.len().saturating_sub(2)));
    let misses: Vec<Vec<Value>> = cold
        .map(|rows| rows.iter().map(|r| generator.task_update(r)).collect())
        .collect();
    let race = Race::new(&name("doc_update_cache_miss"), Target::Ratio(0.10));
    emit(&race_upserts(race, &store, &mut raw, typed, &misses, Write::Upsert)?.to_json());

    let hot = newest.first().cloned().into_iter().collect::<Vec<_>>();
    let hot = successive_updates(&mut generator, &hot, args.hot_updates);
    let batches: Vec<Vec<Value>> = hot.chunks(HOT_PER_TXN).map(|c| c.concat()).collect();
    let race = Race::new(&name("doc_update_hot"), Target::Ratio(0.10));
    let race = race_upserts(race, &store, &mut raw, typed, &batches, Write::Upsert)?;
    emit(&with_flatness(race.to_json(), &race));
    store.close()?;
    Ok(())
}

/// Updates of the hot record per transaction in `doc_update_hot`.
const HOT_PER_TXN: usize = 50;

/// Adds how the store's cost per update moved as the hot record's history grew: its CPU rate
/// over the last quarter of the batches against the first quarter (1.0 = flat).
fn with_flatness(mut line: Value, race: &Race) -> Value {
    let quarter = (race.subject.batches.len() / 4).max(1);
    let first = race.subject.cpu_rate_of(..quarter);
    let last = race
        .subject
        .cpu_rate_of(race.subject.batches.len() - quarter..);
    line["store_first_quarter_per_cpu_s"] = json!(first.round());
    line["store_last_quarter_per_cpu_s"] = json!(last.round());
    line["hot_flatness"] = json!(meshlite_benches::measure::round3(match first > 0.0 {
        true => last / first,
        false => 0.0,
    }));
    line
}

/// How the baseline writes a batch.
#[derive(Clone, Copy)]
enum Write {
    Insert,
    Upsert,
}

/// Races `Store::transact` of one batch of puts against the baseline and the typed tables,
/// then checks the rows.
fn race_upserts(
    race: Race,
    store: &Store,
    raw: &mut RawTable,
    typed: &mut Typed,
    batches: &[Vec<Value>],
    write: Write,
) -> Result<Race, BenchError> {
    let Typed { plain, crsqlite } = typed;
    let mut sides = vec![("typed", plain)];
    let race = match crsqlite {
        Ok(c) => {
            sides.push(("crsqlite", c));
            race
        }
        Err(why) => race.unavailable("crsqlite", why),
    };
    let extras = sides
        .into_iter()
        .map(|(name, table)| typed_side(name, table, batches, write))
        .collect();
    let race = race_by_value(race, store, raw, batches, put_ops, write, extras)?;
    check_latest(store, &batches.concat())?;
    Ok(race)
}

/// A typed table writing the same batches as the baseline, given its own copy by value.
fn typed_side<'a>(
    name: &'static str,
    table: &'a mut TypedTable,
    batches: &[Vec<Value>],
    write: Write,
) -> Extra<'a> {
    let mut rows: Vec<Option<Vec<Value>>> = batches.iter().map(|b| Some(b.clone())).collect();
    let run = move |r: usize| {
        let rows = take(&mut rows, r)?;
        let n = rows.len();
        match write {
            Write::Insert => table.insert(rows)?,
            Write::Upsert => table.upsert(rows)?,
        }
        Ok(n)
    };
    Extra {
        name,
        run: Box::new(run),
    }
}

/// Races `Store::transact` of each batch (as the ops `ops` makes of it) against the baseline
/// writing the same rows, both sides given their input by value ([`by_value`]).
fn race_by_value(
    race: Race,
    store: &Store,
    raw: &mut RawTable,
    batches: &[Vec<Value>],
    ops: fn(&[Value]) -> Vec<WriteOp>,
    write: Write,
    extras: Vec<Extra<'_>>,
) -> Result<Race, BenchError> {
    let (mut ops, mut rows) = by_value(batches, ops);
    race.run_with(
        batches.len(),
        |r| {
            store
                .transact(take(&mut ops, r)?)
                .map(|c| c.changes.len())
                .map_err(BenchError::from)
        },
        |r| {
            let rows = take(&mut rows, r)?;
            let n = rows.len();
            match write {
                Write::Insert => raw.insert(rows)?,
                Write::Upsert => raw.upsert(rows)?,
            }
            Ok(n)
        },
        extras,
    )
}

/// Every batch twice by value, made before timing: the store's ops and the baseline's rows. Both
/// sides receive their input the way an application hands it over (owned) and consume it, so
/// neither pays for copying it and both pay for dropping it.
type ByValue = (Vec<Option<Vec<WriteOp>>>, Vec<Option<Vec<Value>>>);

fn by_value(batches: &[Vec<Value>], ops: fn(&[Value]) -> Vec<WriteOp>) -> ByValue {
    let store = batches.iter().map(|b| Some(ops(b))).collect();
    let raw = batches.iter().map(|b| Some(b.clone())).collect();
    (store, raw)
}

fn take<T>(batches: &mut [Option<T>], round: usize) -> Result<T, BenchError> {
    batches
        .get_mut(round)
        .and_then(Option::take)
        .ok_or_else(|| BenchError::Check(format!("batch {round} used twice")))
}

/// `rounds` successive updates of the same rows (each round updates the previous round's).
fn successive_updates(generator: &mut RecordGen, rows: &[Value], rounds: usize) -> Vec<Vec<Value>> {
    let mut out: Vec<Vec<Value>> = Vec::with_capacity(rounds);
    let mut current = rows.to_vec();
    for _ in 0..rounds {
        current = current.iter().map(|r| generator.task_update(r)).collect();
        out.push(current.clone());
    }
    out
}

fn log_append(args: &Args, dir: &Path, indexes: Indexes) -> Result<Race, BenchError> {
    let (store, mut raw) = indexes.open(dir, METRICS)?;
    let mut generator = RecordGen::new(2, args.seed);
    let batches: Vec<Vec<Value>> = (0..args.rounds as u64)
        .map(|r| metrics(&mut generator, r * BATCH as u64..(r + 1) * BATCH as u64))
        .collect();
    let name = format!("log_append{}", indexes.suffix());
    let race = Race::new(&name, Target::Ratio(0.5));
    let race = race_by_value(
        race,
        &store,
        &mut raw,
        &batches,
        append_ops,
        Write::Insert,
        Vec::new(),
    )?;
    for batch in &batches {
        check_rows(&store, METRICS, batch, 97)?;
    }
    store.close()?;
    Ok(race)
}

/// Transactions per `apply_remote` call (1000 changes).
const APPLY_TXNS: usize = 100;

/// Applies `args.remote_txns` transactions of 10 upserts, a share `updates` of them updates.
fn remote_apply(args: &Args, dir: &Path, name: &str, updates: f64) -> Result<Race, BenchError> {
    remote_apply_shaped(args, dir, name, updates, RowShape::Flat)
}

/// [`remote_apply`] with rows of `shape`.
fn remote_apply_shaped(
    args: &Args,
    dir: &Path,
    name: &str,
    updates: f64,
    shape: RowShape,
) -> Result<Race, BenchError> {
    let work = remote_workload_shaped(
        &dir.join("a"),
        args.remote_txns,
        10,
        updates,
        args.seed,
        shape,
    )?;
    let b = open_store(&dir.join("b"), default_doc_cache())?;
    let mut raw = RawTable::open(&dir.join("raw"), Synchronous::Normal)?;
    let rounds = work.txns.len().div_ceil(APPLY_TXNS);
    let per_round = work.changes.div_ceil(rounds.max(1));
    let race = Race::new(name, Target::PerSecond(15_000.0)).run(
        rounds,
        |r| {
            let encoded = &work.txns[r * APPLY_TXNS..((r + 1) * APPLY_TXNS).min(work.txns.len())];
            let txns = decode_all(encoded)?;
            let changes = txns.iter().map(|t| t.ops.len()).sum();
            let report = b.apply_remote(txns)?;
            if report.applied != encoded.len() {
                return Err(BenchError::Check(format!("apply: {report:?}")));
            }
            Ok(changes)
        },
        |r| {
            let rows = &work.rows[r * per_round..((r + 1) * per_round).min(work.rows.len())];
            raw.upsert(rows).map(|()| rows.len())
        },
    )?;
    check_latest(&b, &work.rows)?;
    b.close()?;
    Ok(race)
}

/// Checks that the store serves the last version of every generated row (a sample).
fn check_latest(store: &Store, rows: &[Value]) -> Result<(), BenchError> {
    let mut latest = std::collections::BTreeMap::new();
    for row in rows {
        latest.insert(row_id(row)?, row);
    }
    let latest: Vec<Value> = latest.into_values().cloned().collect();
    check_rows(store, TASKS, &latest, 31)
}
