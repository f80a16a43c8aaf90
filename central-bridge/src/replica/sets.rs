//! The set-based SQL of a batch (the `batch` module): one statement per table per batch, each
//! taking whole columns as array parameters (`unnest`), the rows by `COPY` ([`copy`]) or, after
//! a `COPY` collided, as one JSON array (`jsonb_populate_recordset`), so a batch costs a handful
//! of round trips however many transactions it carries. Statement texts depend only on the schemas and the table, so the
//! connection prepares each once ([`Db`]).
//!
//! Locking: [`lock_records`] takes a transaction-level advisory lock per record key, in key
//! order, before anything about those records is read, so two bridges merging the same records
//! serialize on them even when neither has a `docs` row yet (a row lock cannot lock what does
//! not exist); the `docs` rows that exist are then read `FOR UPDATE`, in key order, so a bridge
//! still on the row-by-row path (or a central edit) serializes with this one too. The locked
//! rows stay where they are until the transaction ends, so [`save_states`] updates them by the
//! `ctid` [`load`] returned instead of looking each key up again.

use std::collections::HashSet;

use futures_util::future::try_join_all;

use meshlite_core::change::Incarnation;
use meshlite_core::store::record::FieldConflict;
use meshlite_core::{Txn, TxnId};
use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::copy::{self, RowRef, Via};
use super::db::Db;
use super::rows::{columns, inc, row_json};
use super::{Context, as_i64};
use crate::ddl::{SYNCED_AT_COLUMN, TableSpec};
use crate::pg::Ident;

type Result<T> = std::result::Result<T, tokio_postgres::Error>;

/// Advisory-lock class of record keys (the first of the two-key form; "ML").
const RECORD_LOCK_CLASS: i32 = 0x4d4c;

/// One record incarnation: the key of a `docs` row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocKey {
    /// Collection name.
    pub collection: String,
    /// Record id.
    pub id: String,
    /// Incarnation.
    pub incarnation: Incarnation,
}

/// What `docs` and `tombstones` hold about one record incarnation.
#[derive(Debug, Default)]
pub struct Stored {
    /// Its row, when one exists.
    pub row: Option<StoredRow>,
    /// Tombstoned, or a later incarnation of the record has a state.
    pub dead: bool,
}

/// A `docs` row as [`load`] read it.
#[derive(Debug)]
pub struct StoredRow {
    /// Where the row version is (`ctid` as text): [`save_states`] updates it there, without
    /// looking the key up again. Stable until this transaction ends: the row is locked.
    pub ctid: String,
    /// The state; `None` when the version offered for this key is still the row's (the cached
    /// document is current: see the `cache` module).
    pub state: Option<Vec<u8>>,
    /// Appended change chunks.
    pub chunks: i32,
    /// The state's length in bytes.
    pub len: i64,
}

/// The `docs` row version a cached document was made from (see the `cache` module): its state is
/// not sent when the row still has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// The row's `xmin` (as a number).
    pub xmin: i64,
    /// The row's `chunks`.
    pub chunks: i32,
    /// `octet_length` of the row's `state`.
    pub len: i64,
}

/// The id of the current transaction (assigning one: the batch writes anyway).
pub async fn current_xid(db: &Db<'_, '_>) -> Result<u64> {
    let row = db
        .query_one("SELECT pg_current_xact_id()::text::int8", &[])
        .await?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// Locks the records of `keys` (any incarnation) for this transaction, in a fixed order.
pub async fn lock_records(db: &Db<'_, '_>, keys: &[&DocKey]) -> Result<()> {
    let (collections, ids) = key_columns(keys);
    db.query(
        &format!(
            "SELECT count(pg_advisory_xact_lock({RECORD_LOCK_CLASS}, h)) FROM \
             (SELECT DISTINCT hashtext(c || chr(31) || i) AS h \
              FROM unnest($1::text[], $2::text[]) AS k(c, i) ORDER BY 1) s"
        ),
        &[&collections, &ids],
    )
    .await?;
    Ok(())
}

/// The stored state and liveness of every key (locked `FOR UPDATE` where a row exists), in the
/// order of `keys`; `offered` holds, per key, the version of a cached document (see
/// the `cache` module): when the row is still that version its state is not sent. Both queries
/// are sent before either answer is awaited.
pub async fn load(
    db: &Db<'_, '_>,
    ctx: &Context,
    keys: &[&DocKey],
    offered: &[Option<Expected>],
) -> Result<Vec<Stored>> {
    let st = &ctx.schemas.state;
    let (collections, ids) = key_columns(keys);
    let incs: Vec<i32> = keys.iter().map(|k| inc(k.incarnation)).collect();
    let xmins: Vec<i64> = offered.iter().map(|o| o.map_or(-1, |v| v.xmin)).collect();
    let chunks: Vec<i32> = offered.iter().map(|o| o.map_or(-1, |v| v.chunks)).collect();
    let lens: Vec<i64> = offered.iter().map(|o| o.map_or(-1, |v| v.len)).collect();
    let key_params: [&(dyn ToSql + Sync); 3] = [&collections, &ids, &incs];
    let params: [&(dyn ToSql + Sync); 6] = [&collections, &ids, &incs, &xmins, &chunks, &lens];
    // One probe of the `docs` key per record: its row and the rows of its later incarnations
    // (which make it dead), all locked; a later incarnation's state is not sent.
    let states = format!(
        "SELECT k.n, d.incarnation = k.v, d.ctid::text, \
           CASE WHEN d.incarnation <> k.v OR (d.xmin::text::int8 = k.x AND d.chunks = k.ch \
                     AND octet_length(d.state) = k.l) \
                THEN NULL ELSE d.state END, \
           d.chunks, octet_length(d.state)::int8 \
         FROM {st}.docs d \
         JOIN unnest($1::text[], $2::text[], $3::int4[], $4::int8[], $5::int4[], $6::int8[]) \
           WITH ORDINALITY AS k(c, i, v, x, ch, l, n) \
           ON d.collection = k.c AND d.id = k.i AND d.incarnation >= k.v \
         ORDER BY d.collection, d.id, d.incarnation FOR UPDATE OF d"
    );
    let dead = format!(
        "SELECT k.n FROM unnest($1::text[], $2::text[], $3::int4[]) WITH ORDINALITY AS k(c, i, v, n) \
         WHERE EXISTS (SELECT 1 FROM {st}.tombstones t \
                       WHERE t.collection = k.c AND t.id = k.i AND t.incarnation >= k.v)"
    );
    let (states, dead) =
        tokio::try_join!(db.query(&states, &params), db.query(&dead, &key_params))?;
    let mut out: Vec<Stored> = keys.iter().map(|_| Stored::default()).collect();
    let slot = |n: i64| usize::try_from(n - 1).ok();
    for row in states {
        let Some(s) = slot(row.get(0)).and_then(|i| out.get_mut(i)) else {
            continue;
        };
        if !row.get::<_, bool>(1) {
            s.dead = true; // a later incarnation has a state
            continue;
        }
        s.row = Some(StoredRow {
            ctid: row.get(2),
            state: row.get(3),
            chunks: row.get(4),
            len: row.get(5),
        });
    }
    for row in dead {
        if let Some(s) = slot(row.get(0)).and_then(|i| out.get_mut(i)) {
            s.dead = true;
        }
    }
    Ok(out)
}

fn key_columns<'k>(keys: &[&'k DocKey]) -> (Vec<&'k str>, Vec<&'k str>) {
    keys.iter()
        .map(|k| (k.collection.as_str(), k.id.as_str()))
        .unzip()
}

/// How a record's stored state changes.
#[derive(Debug)]
pub enum StateWrite {
    /// Append these change chunks (`n` of them) to the stored state, or start the row with them.
    Append(Vec<u8>, i32),
    /// Replace the state with this snapshot (compaction).
    Snapshot(Vec<u8>),
}

/// One record's state write: the row to update where [`load`] found it (its `ctid`), else a new
/// row.
#[derive(Debug)]
pub struct StateSave {
    /// The record incarnation.
    pub key: DocKey,
    /// What to write.
    pub write: StateWrite,
    /// The locked row's `ctid` from [`load`]; `None`: the record has no row yet.
    pub ctid: Option<String>,
}

impl StateSave {
    fn bytes_and_chunks(&self) -> (&[u8], i32) {
        match &self.write {
            StateWrite::Append(b, n) => (b.as_slice(), *n),
            StateWrite::Snapshot(b) => (b.as_slice(), 0),
        }
    }
}

/// Writes the states of a batch (in key order): rows [`load`] found and locked are updated where
/// they are (by `ctid`: no second lookup of the key), new ones inserted. Both statements are sent
/// together. An update that does not find every row (impossible while the rows are locked, but
/// checked) fails the statement, so the batch is replayed rather than a state lost.
pub async fn save_states(db: &Db<'_, '_>, ctx: &Context, states: &[StateSave]) -> Result<()> {
    let (found, new): (Vec<&StateSave>, Vec<&StateSave>) =
        states.iter().partition(|s| s.ctid.is_some());
    let (updated, inserted) =
        tokio::join!(update_states(db, ctx, &found), insert_states(db, ctx, &new));
    match copy::settle(
        [updated.err(), inserted.err()]
            .into_iter()
            .flatten()
            .collect(),
    ) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Updates the located rows of `states` (see [`save_states`]).
async fn update_states(db: &Db<'_, '_>, ctx: &Context, states: &[&StateSave]) -> Result<()> {
    if states.is_empty() {
        return Ok(());
    }
    let ctids: Vec<&str> = states.iter().filter_map(|s| s.ctid.as_deref()).collect();
    let (bytes, chunks): (Vec<&[u8]>, Vec<i32>) =
        states.iter().map(|s| s.bytes_and_chunks()).unzip();
    let expected = i64::try_from(ctids.len()).unwrap_or(i64::MAX);
    // The ELSE arm fails the statement (a data error: the batch is replayed row by row); it
    // depends on the count, so it is not evaluated while planning.
    let sql = format!(
        "WITH u AS (UPDATE {}.docs AS d SET \
           state = CASE WHEN u.n = 0 THEN u.s ELSE d.state || u.s END, \
           chunks = CASE WHEN u.n = 0 THEN 0 ELSE d.chunks + u.n END, \
           updated_at = now() \
         FROM unnest($1::text[]::tid[], $2::bytea[], $3::int4[]) AS u(t, s, n) \
         WHERE d.ctid = u.t RETURNING 1) \
         SELECT CASE WHEN count(*) = $4 THEN 0 \
           ELSE ('docs: ' || count(*) || ' of ' || $4 || ' locked rows found')::int END FROM u",
        ctx.schemas.state
    );
    db.query_one(&sql, &[&ctids, &bytes, &chunks, &expected])
        .await?;
    Ok(())
}

/// Inserts the states of records that had no row (see [`save_states`]); a row another writer
/// made meanwhile (a central edit takes no record lock) gets the append instead.
async fn insert_states(db: &Db<'_, '_>, ctx: &Context, states: &[&StateSave]) -> Result<()> {
    if states.is_empty() {
        return Ok(());
    }
    let keys: Vec<&DocKey> = states.iter().map(|s| &s.key).collect();
    let (collections, ids) = key_columns(&keys);
    let incs: Vec<i32> = keys.iter().map(|k| inc(k.incarnation)).collect();
    let (bytes, chunks): (Vec<&[u8]>, Vec<i32>) =
        states.iter().map(|s| s.bytes_and_chunks()).unzip();
    let sql = format!(
        "INSERT INTO {}.docs AS d (collection, id, incarnation, state, chunks) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::bytea[], $5::int4[]) \
         ON CONFLICT (collection, id, incarnation) DO UPDATE SET \
           state = CASE WHEN EXCLUDED.chunks = 0 THEN EXCLUDED.state ELSE d.state || EXCLUDED.state END, \
           chunks = CASE WHEN EXCLUDED.chunks = 0 THEN 0 ELSE d.chunks + EXCLUDED.chunks END, \
           updated_at = now()",
        ctx.schemas.state
    );
    db.execute(&sql, &[&collections, &ids, &incs, &bytes, &chunks])
        .await?;
    Ok(())
}

/// One audit row: a field a merge left with concurrent values.
#[derive(Debug)]
pub struct AuditRow<'a> {
    /// The record incarnation.
    pub key: &'a DocKey,
    /// The field, its candidates and winner.
    pub conflict: &'a FieldConflict,
}

/// Records the conflicts of a batch's merges, by `COPY` (the audit table has no key a batch
/// could collide on).
pub async fn record_conflicts(
    db: &Db<'_, '_>,
    ctx: &Context,
    audit: &[AuditRow<'_>],
) -> Result<()> {
    if audit.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "COPY {}.conflicts \
         (collection, record_id, incarnation, field, policy, candidates, winner, origins, recorded_by) \
         FROM STDIN",
        ctx.schemas.state
    );
    let rows = audit.iter().map(|a| copy::AuditCells {
        collection: &a.key.collection,
        record_id: &a.key.id,
        incarnation: inc(a.key.incarnation),
        conflict: a.conflict,
    });
    db.copy_in(&sql, copy::audit_text(rows, &ctx.name)).await?;
    Ok(())
}

/// Creates the session's staging tables of `tables` unless they exist (see [`copy`]).
pub async fn create_stages(db: &Db<'_, '_>, ctx: &Context, tables: &[&TableSpec]) -> Result<()> {
    try_join_all(tables.iter().map(|table| {
        let sql = format!(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
            copy::stage_name(table),
            Ident::qualified(&ctx.schemas.tables, &table.name),
        );
        async move { db.batch_execute(&sql).await }
    }))
    .await?;
    Ok(())
}

/// Copies document rows into the session's staging table of `table` (its [`create_stages`]
/// done earlier in the transaction), for [`upsert_rows`] with [`Via::Copy`].
pub async fn stage_rows(db: &Db<'_, '_>, table: &TableSpec, rows: &[RowRef<'_>]) -> Result<()> {
    let list = columns(table).join(", ");
    let sql = format!(
        "COPY pg_temp.{} ({list}) FROM STDIN",
        copy::stage_name(table)
    );
    db.copy_in(&sql, copy::rows_text(table, rows.iter().copied()))
        .await?;
    Ok(())
}

/// Copies log rows straight into their table (an existing id fails the statement:
/// [`copy::is_collision`]).
pub async fn copy_log_rows(
    db: &Db<'_, '_>,
    ctx: &Context,
    table: &TableSpec,
    rows: &[RowRef<'_>],
) -> Result<()> {
    let qt = Ident::qualified(&ctx.schemas.tables, &table.name);
    let list = columns(table).join(", ");
    let sql = format!("COPY {qt} ({list}) FROM STDIN");
    db.copy_in(&sql, copy::rows_text(table, rows.iter().copied()))
        .await?;
    Ok(())
}

/// Copies the transactions' bytes into `txns` (binary; an existing one fails the statement).
pub async fn copy_txns(db: &Db<'_, '_>, ctx: &Context, txns: &[&Txn]) -> Result<()> {
    if txns.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "COPY {}.txns (origin, seq, bytes) FROM STDIN (FORMAT binary)",
        ctx.schemas.state
    );
    db.copy_in(&sql, copy::txns_binary(txns.iter().copied()))
        .await?;
    Ok(())
}

/// Upserts merged document rows into one table (each id at most once); the ids that were
/// inserted rather than updated. With [`Via::Copy`] the rows are read from the staging table
/// ([`stage_rows`] done before).
pub async fn upsert_rows(
    db: &Db<'_, '_>,
    ctx: &Context,
    table: &TableSpec,
    rows: &[RowRef<'_>],
    via: Via,
) -> Result<HashSet<String>> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let qt = Ident::qualified(&ctx.schemas.tables, &table.name);
    let cols = columns(table);
    let list = cols.join(", ");
    let set: Vec<String> = cols
        .iter()
        .skip(1)
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    let source = match via {
        Via::Copy => format!("pg_temp.{}", copy::stage_name(table)),
        Via::Statements => format!("jsonb_populate_recordset(NULL::{qt}, $1::jsonb)"),
    };
    let sql = format!(
        "INSERT INTO {qt} AS r ({list}, \"{SYNCED_AT_COLUMN}\") \
         SELECT {list}, now() FROM {source} \
         ON CONFLICT ({pk}) DO UPDATE SET {set}, \"{SYNCED_AT_COLUMN}\" = now() \
         RETURNING {pk}::text, (xmax = 0)",
        pk = table.primary_key.name,
        set = set.join(", "),
    );
    let returned = match via {
        Via::Copy => db.query(&sql, &[]).await?,
        Via::Statements => db.query(&sql, &[&json_rows(table, rows)]).await?,
    };
    Ok(returned
        .iter()
        .filter(|r| r.get::<_, bool>(1))
        .map(|r| r.get(0))
        .collect())
}

/// The ids of the log rows an append wrote.
#[derive(Debug)]
pub enum NewIds {
    /// Every row (a `COPY` that succeeded: the table's key makes each id unique).
    All,
    /// These ids.
    Some(HashSet<String>),
}

impl NewIds {
    /// Whether `id` is new and not taken before.
    pub fn take(&mut self, id: &str) -> bool {
        match self {
            NewIds::All => true,
            NewIds::Some(ids) => ids.remove(id),
        }
    }
}

/// Appends log rows to one table, ignoring a row whose id exists; the ids that were new (the
/// [`Via::Statements`] way; [`copy_log_rows`] is the other).
pub async fn append_rows(
    db: &Db<'_, '_>,
    ctx: &Context,
    table: &TableSpec,
    rows: &[RowRef<'_>],
) -> Result<NewIds> {
    if rows.is_empty() {
        return Ok(NewIds::Some(HashSet::new()));
    }
    let qt = Ident::qualified(&ctx.schemas.tables, &table.name);
    let list = columns(table).join(", ");
    let sql = format!(
        "INSERT INTO {qt} ({list}, \"{SYNCED_AT_COLUMN}\") \
         SELECT {list}, now() FROM jsonb_populate_recordset(NULL::{qt}, $1::jsonb) \
         ON CONFLICT ({pk}) DO NOTHING RETURNING {pk}::text",
        pk = table.primary_key.name,
    );
    let returned = db.query(&sql, &[&json_rows(table, rows)]).await?;
    Ok(NewIds::Some(returned.iter().map(|r| r.get(0)).collect()))
}

/// The rows as one `jsonb_populate_recordset` input.
fn json_rows(table: &TableSpec, rows: &[RowRef<'_>]) -> Value {
    let rows = rows
        .iter()
        .map(|r| row_json(table, r.id, r.fields, r.origin));
    Value::Array(rows.collect())
}

/// Stores the batch's new transactions (for relaying; with [`Via::Copy`], [`copy_txns`] did),
/// parks those waiting for dependencies, and marks all of them held: one statement each, sent
/// together.
pub async fn store_txns(
    db: &Db<'_, '_>,
    ctx: &Context,
    txns: &[&Txn],
    parked: &[&Txn],
    via: Via,
) -> Result<()> {
    if txns.is_empty() {
        return Ok(());
    }
    let st = &ctx.schemas.state;
    let (origins, seqs) = id_columns(txns.iter().map(|t| t.id));
    let hold = format!(
        "UPDATE {st}.origins o SET held = o.held + v.r, last_txn_at = now() \
         FROM (SELECT u.o, range_agg(int8range(u.s, u.s + 1)) AS r \
               FROM unnest($1::bytea[], $2::int8[]) AS u(o, s) GROUP BY u.o) v \
         WHERE o.origin = v.o"
    );
    let park = format!(
        "INSERT INTO {st}.parked (origin, seq, bytes) \
         SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[]) ON CONFLICT DO NOTHING"
    );
    let parked_bytes: Vec<Vec<u8>> = parked.iter().map(|t| t.encode()).collect();
    let (p_origins, p_seqs) = id_columns(parked.iter().map(|t| t.id));
    let hold_params: [&(dyn ToSql + Sync); 2] = [&origins, &seqs];
    let park_params: [&(dyn ToSql + Sync); 3] = [&p_origins, &p_seqs, &parked_bytes];
    let parks = async {
        match parked.is_empty() {
            true => Ok(0),
            false => db.execute(&park, &park_params).await,
        }
    };
    let (stored, held, parked) = tokio::join!(
        store_txn_bytes(db, ctx, txns, via),
        db.execute(&hold, &hold_params),
        parks,
    );
    let errors = [stored.err(), held.err(), parked.err()];
    match copy::settle(errors.into_iter().flatten().collect()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Stores the transactions' bytes (for relaying) with an `INSERT` that skips those stored
/// already, unless [`copy_txns`] did.
async fn store_txn_bytes(db: &Db<'_, '_>, ctx: &Context, txns: &[&Txn], via: Via) -> Result<u64> {
    let st = &ctx.schemas.state;
    if via == Via::Copy {
        return Ok(0);
    }
    let encoded: Vec<Vec<u8>> = txns.iter().map(|t| t.encode()).collect();
    let (origins, seqs) = id_columns(txns.iter().map(|t| t.id));
    let store = format!(
        "INSERT INTO {st}.txns (origin, seq, bytes) \
         SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[]) ON CONFLICT DO NOTHING"
    );
    db.execute(&store, &[&origins, &seqs, &encoded]).await
}

fn id_columns(ids: impl Iterator<Item = TxnId>) -> (Vec<Vec<u8>>, Vec<i64>) {
    ids.map(|id| (id.origin.0.to_vec(), as_i64(id.seq))).unzip()
}
