//! Bytes on disk (issue 13): a store and the raw JSON table after the same `tasks` rows, with
//! the store's bytes split per table and index, and what its tables hold.
//!
//! Both databases get the same rows, 1000 per transaction, the same declared indexes; the store
//! is closed (its WAL checkpointed and truncated) and the raw table checkpointed before the files
//! are measured. The split comes from SQLite's `dbstat` virtual table (pages of each B-tree,
//! overflow pages included); the payloads are the summed lengths of the columns that carry
//! record data (`records.json`, `docs.state`, `txns.bytes`), so a reader can tell where each
//! copy of a change lives.

use std::path::Path;

use meshlite_core::store::{DB_FILE, Synchronous};
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use crate::BenchError;
use crate::baseline::{RAW_DB_FILE, RawTable};
use crate::workload::{
    BATCH, TASKS, bench_schema, default_doc_cache, indexed_fields, open_store_with, put_ops,
};
use meshlite_fixtures::records::RecordGen;

/// What [`disk_figure`] writes.
#[derive(Clone, Copy, Debug)]
pub struct DiskPlan {
    /// New tasks.
    pub records: u64,
    /// Rounds updating every task, after the inserts.
    pub rounds: usize,
    /// Tasks (the first ones) updated once more after the rounds (the history mix:
    /// 100k inserts and 20k updates).
    pub updated: u64,
    /// Also measure the store after GC (every transaction acknowledged by a peer) and `VACUUM`.
    pub gc: bool,
}

/// Writes `plan`'s tasks and updates into a store and the raw table under `dir`, and returns
/// one JSON line with their sizes.
pub fn disk_figure(dir: &Path, plan: DiskPlan, seed: u64) -> Result<Value, BenchError> {
    let schema = bench_schema()?;
    let fields = indexed_fields(&schema, TASKS);
    let store = open_store_with(&dir.join("store"), default_doc_cache(), schema.clone())?;
    let mut raw = RawTable::open_indexed(&dir.join("raw"), Synchronous::Normal, &fields)?;
    let mut generator = RecordGen::new(1, seed);
    let mut start = 0;
    let mut rows: Vec<Value> = Vec::with_capacity(plan.records as usize);
    while start < plan.records {
        let end = (start + BATCH as u64).min(plan.records);
        let batch: Vec<Value> = (start..end).map(|n| generator.task(n)).collect();
        store.transact(put_ops(&batch))?;
        raw.upsert(&batch)?;
        rows.extend(batch);
        start = end;
    }
    let updated = (plan.updated as usize).min(rows.len());
    let total = rows.len();
    let rounds = (0..plan.rounds).map(|_| total).chain([updated]);
    for count in rounds {
        for chunk in rows[..count].chunks_mut(BATCH) {
            let next: Vec<Value> = chunk.iter().map(|r| generator.task_update(r)).collect();
            store.transact(put_ops(&next))?;
            raw.upsert(&next)?;
            chunk.clone_from_slice(&next);
        }
    }
    store.close()?;
    drop(raw);
    let raw_path = dir.join("raw").join(RAW_DB_FILE);
    checkpoint(&raw_path)?;
    let store_path = dir.join("store").join(DB_FILE);
    let store_bytes = std::fs::metadata(&store_path)?.len();
    let raw_bytes = std::fs::metadata(&raw_path)?.len();
    let conn = Connection::open(&store_path)?;
    let mut figure = json!({
        "figure": "disk_bytes",
        "records": plan.records,
        "update_rounds": plan.rounds,
        "updated_once_more": updated,
        "store_bytes": store_bytes,
        "raw_json_bytes": raw_bytes,
        "ratio": crate::measure::round3(store_bytes as f64 / raw_bytes.max(1) as f64),
        "target": "<= 1.84x raw JSON (cr-sqlite)",
        "store_btrees": btree_bytes(&conn)?,
        "store_payloads": payloads(&conn)?,
        "raw_btrees": btree_bytes(&Connection::open(&raw_path)?)?,
    });
    drop(conn);
    if plan.gc {
        let after = after_gc(&dir.join("store"), schema)?;
        figure["after_gc"] = json!({
            "store_bytes": after,
            "ratio": crate::measure::round3(after as f64 / raw_bytes.max(1) as f64),
            "target": "<= 1.3x raw JSON",
            "store_btrees": btree_bytes(&Connection::open(&store_path)?)?,
        });
    }
    Ok(figure)
}

/// Collects every transaction (a peer acknowledged all of them), closes the store and
/// `VACUUM`s its file (GC frees pages; the file shrinks only then); returns its size.
fn after_gc(dir: &Path, schema: meshlite_core::Schema) -> Result<u64, BenchError> {
    let store = open_store_with(dir, default_doc_cache(), schema)?;
    store.record_peer_ack(meshlite_core::ReplicaId([0xEE; 16]), store.summary()?)?;
    store.gc()?;
    store.close()?;
    let path = dir.join(DB_FILE);
    Connection::open(&path)?.execute_batch("VACUUM")?;
    Ok(std::fs::metadata(&path)?.len())
}

/// Checkpoints and truncates a database's WAL.
fn checkpoint(path: &Path) -> Result<(), BenchError> {
    let conn = Connection::open(path)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

/// Bytes of each table and index (its pages, overflow pages included), largest first.
fn btree_bytes(conn: &Connection) -> Result<Value, BenchError> {
    let mut stmt = conn.prepare(
        "SELECT name, SUM(pgsize) AS bytes FROM dbstat GROUP BY name ORDER BY bytes DESC",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = Map::new();
    for row in rows {
        let (name, bytes) = row?;
        out.insert(name, json!(bytes));
    }
    Ok(Value::Object(out))
}

/// Summed lengths of the columns that hold record data, and row counts.
fn payloads(conn: &Connection) -> Result<Value, BenchError> {
    let sum = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
    Ok(json!({
        "records_json": sum("SELECT COALESCE(SUM(length(json)), 0) FROM records")?,
        "docs_state": sum("SELECT COALESCE(SUM(length(state)), 0) FROM docs")?,
        "docs_rows": sum("SELECT COUNT(*) FROM docs")?,
        "txns_bytes": sum("SELECT COALESCE(SUM(length(bytes)), 0) FROM txns")?,
        "txns_rows": sum("SELECT COUNT(*) FROM txns")?,
    }))
}
