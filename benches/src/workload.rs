//! The store side of the benches: stores on the PMOVES schema, batches of generated rows as
//! write operations, N-document stores, and transactions exported for another replica.

use std::ops::{Range, RangeInclusive};
use std::path::Path;

use meshlite_core::schema::{CollectionDef, MergePolicy};
use meshlite_core::store::{OpenOptions, Store, Synchronous, WriteOp};
use meshlite_core::version::ranges_after;
use meshlite_core::{Op, ReplicaId, Schema, Seq, Summary, Txn};
use meshlite_fixtures::records::{RecordGen, pmoves_schema};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::BenchError;
use crate::baseline::row_id;

/// Rows per transaction in the write figures (the batch size).
pub const BATCH: usize = 1000;

/// The document collection the benches write (`tasks` of the PMOVES schema).
pub const TASKS: &str = "tasks";

/// The log collection the benches append to (`device_metrics` of the PMOVES schema).
pub const METRICS: &str = "device_metrics";

/// Budget of one `txns_for` call when exporting.
const EXPORT_BUDGET: usize = 4 << 20;

/// Environment variable naming a schema file to use instead of the PMOVES schema (to see what
/// indexes or policies cost; it must declare `tasks` and `device_metrics` like PMOVES does).
pub const SCHEMA_ENV: &str = "MESHLITE_BENCH_SCHEMA";

/// The schema the benches use: `$MESHLITE_BENCH_SCHEMA` if set, else the PMOVES schema.
pub fn bench_schema() -> Result<Schema, BenchError> {
    match std::env::var_os(SCHEMA_ENV) {
        Some(path) => Ok(Schema::from_file(Path::new(&path))?),
        None => Ok(pmoves_schema()?),
    }
}

/// Opens a store in `dir` on [`bench_schema`] with default durability (`Normal`) and a
/// document cache of `doc_cache` entries.
pub fn open_store(dir: &Path, doc_cache: usize) -> Result<Store, BenchError> {
    open_store_with(dir, doc_cache, bench_schema()?)
}

/// [`bench_schema`] without any declared `indexed` field.
pub fn unindexed_schema() -> Result<Schema, BenchError> {
    let mut schema = bench_schema()?;
    for def in schema.collections.values_mut() {
        def.indexed.clear();
    }
    Ok(schema)
}

/// The declared `indexed` fields of `collection` in `schema`.
pub fn indexed_fields(schema: &Schema, collection: &str) -> Vec<String> {
    schema
        .collections
        .get(collection)
        .map(|def| def.indexed.clone())
        .unwrap_or_default()
}

/// As [`open_store`], on `schema`.
pub fn open_store_with(dir: &Path, doc_cache: usize, schema: Schema) -> Result<Store, BenchError> {
    let opts = OpenOptions {
        schema: Some(schema),
        synchronous: Synchronous::Normal,
        doc_cache,
        ..OpenOptions::default()
    };
    Ok(Store::open(dir, opts)?)
}

/// The default document cache size of [`OpenOptions`].
pub fn default_doc_cache() -> usize {
    OpenOptions::default().doc_cache
}

/// One upsert per row into [`TASKS`].
pub fn put_ops(rows: &[Value]) -> Vec<WriteOp> {
    let put = |v: &Value| WriteOp::Put {
        collection: TASKS.into(),
        value: v.clone(),
        recreate: false,
    };
    rows.iter().map(put).collect()
}

/// One append per row to [`METRICS`].
pub fn append_ops(rows: &[Value]) -> Vec<WriteOp> {
    rows.iter()
        .map(|v| WriteOp::Append {
            collection: METRICS.into(),
            value: v.clone(),
        })
        .collect()
}

/// New task rows `n` for `n` in `range`.
pub fn tasks(generator: &mut RecordGen, range: Range<u64>) -> Vec<Value> {
    range.map(|n| generator.task(n)).collect()
}

/// New metric rows `n` for `n` in `range`.
pub fn metrics(generator: &mut RecordGen, range: Range<u64>) -> Vec<Value> {
    range.map(|n| generator.device_metric(n)).collect()
}

/// Writes `count` new tasks (numbers `0..count` of `generator`) in transactions of `per_txn`.
pub fn fill_tasks(
    store: &Store,
    generator: &mut RecordGen,
    count: u64,
    per_txn: u64,
) -> Result<(), BenchError> {
    let mut start = 0;
    while start < count {
        let end = (start + per_txn).min(count);
        store.transact(put_ops(&tasks(generator, start..end)))?;
        start = end;
    }
    Ok(())
}

/// Checks that the store serves exactly `expected` for every `step`th row.
///
/// One known store quirk is tolerated: a counter field written as 0 on a new record is absent
/// from the materialized row (the store writes no counter part for a zero delta).
pub fn check_rows(
    store: &Store,
    collection: &str,
    expected: &[Value],
    step: usize,
) -> Result<(), BenchError> {
    let schema = store.schema();
    let def = schema.collection_or_default(collection);
    for row in expected.iter().step_by(step.max(1)) {
        let got = store.get(collection, row_id(row)?)?;
        let same = got.as_ref().is_some_and(|got| same_row(&def, row, got));
        if !same {
            return Err(BenchError::Check(format!(
                "{collection}: expected {row}, store has {got:?}"
            )));
        }
    }
    Ok(())
}

/// `got` equals `expected`, except that zero-valued counter fields may be missing from `got`.
fn same_row(def: &CollectionDef, expected: &Value, got: &Value) -> bool {
    let (Some(want), Some(have)) = (expected.as_object(), got.as_object()) else {
        return expected == got;
    };
    let zero_counter =
        |k: &String, v: &Value| *def.policy(k) == MergePolicy::Counter && v.as_i64() == Some(0);
    let absent_ok = |(k, v): (&String, &Value)| have.contains_key(k) || zero_counter(k, v);
    want.iter().all(absent_ok) && have.iter().all(|(k, v)| want.get(k) == Some(v))
}

/// The encoded transactions `store` holds in `want`, in (origin, seq) order, read `budget` bytes
/// at a time.
pub fn export(
    store: &Store,
    mut want: Vec<(ReplicaId, RangeInclusive<Seq>)>,
    budget: usize,
) -> Result<Vec<Vec<u8>>, BenchError> {
    let mut out = Vec::new();
    while !want.is_empty() {
        let batch = store.txns_for(&want, budget)?;
        want = match (batch.more, batch.txns.last()) {
            (true, Some(last)) => {
                let id = Txn::decode(last)?.id;
                ranges_after(&want, id)
            }
            _ => Vec::new(),
        };
        out.extend(batch.txns);
    }
    Ok(out)
}

/// Every transaction `store` holds.
pub fn export_all(store: &Store) -> Result<Vec<Vec<u8>>, BenchError> {
    export(
        store,
        store.summary()?.missing_from(&Summary::new()),
        EXPORT_BUDGET,
    )
}

/// Decodes encoded transactions (as a receiving session does).
pub fn decode_all(encoded: &[Vec<u8>]) -> Result<Vec<Txn>, BenchError> {
    encoded.iter().map(|b| Ok(Txn::decode(b)?)).collect()
}

/// Bytes of the raw Automerge changes in `txns` (document ops only) and of the encoded
/// transactions.
pub fn change_bytes(encoded: &[Vec<u8>]) -> Result<(u64, u64), BenchError> {
    let mut changes = 0u64;
    for txn in decode_all(encoded)? {
        for op in &txn.ops {
            if let Op::Doc { change, .. } = op {
                changes += change.len() as u64;
            }
        }
    }
    Ok((changes, encoded.iter().map(|b| b.len() as u64).sum()))
}

/// Transactions generated on one replica for another to apply.
#[derive(Debug)]
pub struct RemoteWorkload {
    /// Encoded transactions in commit order.
    pub txns: Vec<Vec<u8>>,
    /// The merged row after each op, in op order (what the baseline upserts).
    pub rows: Vec<Value>,
    /// Document changes in all transactions (one per op).
    pub changes: usize,
}

/// Writes `txns` transactions of `ops_per_txn` task upserts each on a new store in `dir`: a
/// share `update_share` of the ops update a random task created by an earlier transaction (a
/// worker moving it on), the rest create new tasks. Returns them encoded, as a peer would
/// receive them.
pub fn remote_workload(
    dir: &Path,
    txns: usize,
    ops_per_txn: usize,
    update_share: f64,
    seed: u64,
) -> Result<RemoteWorkload, BenchError> {
    remote_workload_shaped(dir, txns, ops_per_txn, update_share, seed, RowShape::Flat)
}

/// The rows of a workload: the generator's flat task rows, or the same with a nested `input`
/// (a `json` field: a map holding a list and a map, as apps store job parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowShape {
    Flat,
    Nested,
}

impl RowShape {
    /// `task` in this shape (task `n`).
    fn shape(self, mut task: Value, n: u64) -> Value {
        if self == RowShape::Nested {
            task["input"] = serde_json::json!({
                "segment": n % 97,
                "formats": ["h264", "opus"],
                "source": {"bucket": "media", "bytes": 1_000_000 + n},
            });
        }
        task
    }
}

/// [`remote_workload`] with rows of `shape`.
pub fn remote_workload_shaped(
    dir: &Path,
    txns: usize,
    ops_per_txn: usize,
    update_share: f64,
    seed: u64,
    shape: RowShape,
) -> Result<RemoteWorkload, BenchError> {
    let store = open_store(dir, default_doc_cache())?;
    let mut generator = RecordGen::new(7, seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut latest: Vec<Value> = Vec::new();
    let mut rows = Vec::with_capacity(txns * ops_per_txn);
    for _ in 0..txns {
        let earlier = latest.len();
        let mut batch = Vec::with_capacity(ops_per_txn);
        for _ in 0..ops_per_txn {
            if earlier > 0 && rng.random_bool(update_share) {
                batch.push(generator.task_update(&latest[rng.random_range(0..earlier)]));
            } else {
                let n = latest.len() as u64;
                batch.push(shape.shape(generator.task(n), n));
                latest.push(Value::Null);
            }
        }
        let committed = store.transact(put_ops(&batch))?;
        for change in committed.changes {
            let row = change
                .value
                .ok_or_else(|| BenchError::Check("a put returned no row".into()))?;
            let n = task_number(row_id(&row)?)?;
            latest[n] = row.clone();
            rows.push(row);
        }
    }
    let encoded = export_all(&store)?;
    store.close()?;
    Ok(RemoteWorkload {
        txns: encoded,
        changes: rows.len(),
        rows,
    })
}

/// The task number `n` encoded in the last 12 hex digits of a generated task id.
fn task_number(id: &str) -> Result<usize, BenchError> {
    let hex = id.rsplit('-').next().unwrap_or_default();
    usize::from_str_radix(hex, 16)
        .map_err(|_| BenchError::Check(format!("not a generated task id: {id}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshlite_fixtures::records::task_id;

    #[test]
    fn remote_workload_applies_into_a_fresh_replica_with_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let w = remote_workload(&dir.path().join("a"), 20, 5, 0.3, 1).unwrap();
        assert_eq!((w.txns.len(), w.changes), (20, 100));
        let b = open_store(&dir.path().join("b"), 16).unwrap();
        let report = b.apply_remote(decode_all(&w.txns).unwrap()).unwrap();
        assert_eq!((report.applied, report.parked), (20, 0));
        let mut last = std::collections::BTreeMap::new();
        for row in &w.rows {
            last.insert(row_id(row).unwrap().to_owned(), row.clone());
        }
        check_rows(&b, TASKS, &last.into_values().collect::<Vec<_>>(), 1).unwrap();
        let (changes, encoded) = change_bytes(&w.txns).unwrap();
        assert!(changes > 0 && encoded > changes);
    }

    #[test]
    fn row_check_tolerates_only_missing_zero_counters() {
        let schema = pmoves_schema().unwrap();
        let def = schema.collection("tasks").unwrap();
        let want = serde_json::json!({"id": "a", "title": "t", "retry_count": 0});
        assert!(same_row(
            &def,
            &want,
            &serde_json::json!({"id": "a", "title": "t"})
        ));
        assert!(same_row(&def, &want, &want));
        assert!(!same_row(
            &def,
            &want,
            &serde_json::json!({"id": "a", "retry_count": 0})
        ));
        assert!(!same_row(
            &def,
            &want,
            &serde_json::json!({"id": "a", "title": "t", "x": 1})
        ));
        let one = serde_json::json!({"id": "a", "title": "t", "retry_count": 1});
        assert!(!same_row(
            &def,
            &one,
            &serde_json::json!({"id": "a", "title": "t"})
        ));
    }

    #[test]
    fn export_pages_through_small_budgets() {
        let dir = tempfile::tempdir().unwrap();
        let s = open_store(dir.path(), 16).unwrap();
        fill_tasks(&s, &mut RecordGen::new(1, 1), 30, 1).unwrap();
        let want = s.summary().unwrap().missing_from(&Summary::new());
        let one = s.txns_for(&want, 1).unwrap();
        assert!(one.more && one.txns.len() == 1);
        let paged = export(&s, want, 1000).unwrap();
        assert_eq!(paged, export_all(&s).unwrap());
        assert_eq!(
            decode_all(&paged)
                .unwrap()
                .iter()
                .map(|t| t.id.seq)
                .collect::<Vec<_>>(),
            (1..=30).collect::<Vec<_>>()
        );
        assert_eq!(task_number(&task_id(1, 29)).unwrap(), 29);
    }
}
