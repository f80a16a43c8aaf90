//! The SQL of the bridge's replica: record states, tombstones, stored and parked transactions,
//! the summary, conflicts, rejections, and the materialized rows.
//!
//! Every identifier spliced into SQL is an [`crate::pg::Ident`] (validated, always quoted); every
//! value is a parameter. Materialized rows are written through `jsonb_populate_record`, which
//! casts each JSON value to its column's declared type (a value the type cannot hold fails the
//! statement, and the caller refuses that transaction).

use meshlite_core::change::Incarnation;
use meshlite_core::store::record::FieldConflict;
use meshlite_core::{ReplicaId, Txn, TxnId};
use serde_json::{Map, Value, json};
use tokio_postgres::types::ToSql;

use super::db::Db;
use super::storable::pg_text;
use super::{Context, as_i64};
use crate::ddl::{EXTRA_COLUMN, ORIGIN_COLUMN, SYNCED_AT_COLUMN, TableSpec};
use crate::pg::Ident;

type Result<T> = std::result::Result<T, tokio_postgres::Error>;

pub(super) fn inc(incarnation: Incarnation) -> i32 {
    i32::try_from(incarnation).unwrap_or(i32::MAX)
}

/// The stored state of one record incarnation, locked for this transaction.
pub async fn load_state(
    tx: &Db<'_, '_>,
    ctx: &Context,
    collection: &str,
    id: &str,
    incarnation: Incarnation,
) -> Result<Option<Vec<u8>>> {
    let sql = format!(
        "SELECT state FROM {}.docs WHERE collection = $1 AND id = $2 AND incarnation = $3 \
         FOR UPDATE",
        ctx.schemas.state
    );
    let row = tx
        .query_opt(&sql, &[&collection, &id, &inc(incarnation)])
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Saves a record incarnation's merged state.
pub async fn save_state(
    tx: &Db<'_, '_>,
    ctx: &Context,
    collection: &str,
    id: &str,
    incarnation: Incarnation,
    state: &[u8],
) -> Result<()> {
    let sql = format!(
        "INSERT INTO {}.docs (collection, id, incarnation, state) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (collection, id, incarnation) \
         DO UPDATE SET state = EXCLUDED.state, chunks = 0, updated_at = now()",
        ctx.schemas.state
    );
    tx.execute(&sql, &[&collection, &id, &inc(incarnation), &state])
        .await?;
    Ok(())
}

/// Whether `incarnation` of the record is deleted (a tombstone of it or of a later one: deleting
/// incarnation k kills every incarnation up to k, as on the nodes) or superseded by a later one (its changes
/// are kept and relayed but never shown).
pub async fn is_dead(
    tx: &Db<'_, '_>,
    ctx: &Context,
    collection: &str,
    id: &str,
    incarnation: Incarnation,
) -> Result<bool> {
    let st = &ctx.schemas.state;
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {st}.tombstones \
                        WHERE collection = $1 AND id = $2 AND incarnation >= $3) \
             OR EXISTS (SELECT 1 FROM {st}.docs \
                        WHERE collection = $1 AND id = $2 AND incarnation > $3)"
    );
    let row = tx
        .query_one(&sql, &[&collection, &id, &inc(incarnation)])
        .await?;
    Ok(row.get(0))
}

/// Records a tombstone; removes the row unless a later incarnation is alive. Returns whether a
/// row was removed.
pub async fn tombstone(
    tx: &Db<'_, '_>,
    ctx: &Context,
    collection: &str,
    id: &str,
    incarnation: Incarnation,
    by: TxnId,
) -> Result<bool> {
    let st = &ctx.schemas.state;
    tx.execute(
        &format!(
            "INSERT INTO {st}.tombstones (collection, id, incarnation, origin, seq) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"
        ),
        &[
            &collection,
            &id,
            &inc(incarnation),
            &by.origin.0.as_slice(),
            &as_i64(by.seq),
        ],
    )
    .await?;
    tx.execute(
        &format!(
            "UPDATE {st}.docs SET deleted = true, updated_at = now() \
             WHERE collection = $1 AND id = $2 AND incarnation = $3"
        ),
        &[&collection, &id, &inc(incarnation)],
    )
    .await?;
    let later_alive = tx
        .query_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {st}.docs WHERE collection = $1 AND id = $2 \
                 AND incarnation > $3 AND NOT deleted)"
            ),
            &[&collection, &id, &inc(incarnation)],
        )
        .await?
        .get::<_, bool>(0);
    let Some(table) = ctx.tables.get(collection) else {
        return Ok(false);
    };
    if later_alive {
        return Ok(false);
    }
    delete_row(tx, ctx, table, id).await
}

/// Removes a record's materialized row; whether there was one.
pub async fn delete_row(
    tx: &Db<'_, '_>,
    ctx: &Context,
    table: &TableSpec,
    id: &str,
) -> Result<bool> {
    let sql = format!(
        "DELETE FROM {} WHERE {}::text = $1",
        Ident::qualified(&ctx.schemas.tables, &table.name),
        table.primary_key.name
    );
    Ok(tx.execute(&sql, &[&id]).await? > 0)
}

/// The row as `jsonb_populate_record` input: declared columns by name, the undeclared fields in
/// `_extra`, and the origin of this change.
pub(super) fn row_json(
    table: &TableSpec,
    id: &str,
    fields: &Map<String, Value>,
    origin: &ReplicaId,
) -> Value {
    let mut row = Map::new();
    let mut extra = Map::new();
    for (field, value) in fields {
        if table.columns.iter().any(|c| c.name.as_str() == field) {
            row.insert(field.clone(), value.clone());
        } else if field != table.primary_key.name.as_str() && field != SYNCED_AT_COLUMN {
            extra.insert(field.clone(), value.clone());
        }
    }
    row.insert(table.primary_key.name.as_str().to_owned(), json!(id));
    row.insert(EXTRA_COLUMN.to_owned(), Value::Object(extra));
    row.insert(ORIGIN_COLUMN.to_owned(), json!(origin.to_hex()));
    Value::Object(row)
}

/// The columns written for a row (without `_synced_at`, which is `now()`).
pub(super) fn columns(table: &TableSpec) -> Vec<String> {
    let mut cols = vec![table.primary_key.name.quoted()];
    cols.extend(table.columns.iter().map(|c| c.name.quoted()));
    cols.push(format!("\"{EXTRA_COLUMN}\""));
    cols.push(format!("\"{ORIGIN_COLUMN}\""));
    cols
}

/// Writes the merged row of a document record; returns true when it was inserted (not updated).
pub async fn upsert(
    tx: &Db<'_, '_>,
    ctx: &Context,
    table: &TableSpec,
    id: &str,
    fields: &Map<String, Value>,
    origin: &ReplicaId,
) -> Result<bool> {
    let qt = Ident::qualified(&ctx.schemas.tables, &table.name);
    let cols = columns(table);
    let list = cols.join(", ");
    let set: Vec<String> = cols
        .iter()
        .skip(1)
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    let sql = format!(
        "INSERT INTO {qt} AS r ({list}, \"{SYNCED_AT_COLUMN}\") \
         SELECT {list}, now() FROM jsonb_populate_record(NULL::{qt}, $1::jsonb) \
         ON CONFLICT ({pk}) DO UPDATE SET {set}, \"{SYNCED_AT_COLUMN}\" = now() \
         RETURNING (xmax = 0)",
        pk = table.primary_key.name,
        set = set.join(", "),
    );
    let row = row_json(table, id, fields, origin);
    let inserted = tx.query_one(&sql, &[&row]).await?;
    Ok(inserted.get(0))
}

/// Appends a log row (once: a redelivered row is ignored); returns whether it was new.
pub async fn append(
    tx: &Db<'_, '_>,
    ctx: &Context,
    table: &TableSpec,
    id: &str,
    value: &Value,
    origin: &ReplicaId,
) -> Result<bool> {
    let qt = Ident::qualified(&ctx.schemas.tables, &table.name);
    let list = columns(table).join(", ");
    let sql = format!(
        "INSERT INTO {qt} ({list}, \"{SYNCED_AT_COLUMN}\") \
         SELECT {list}, now() FROM jsonb_populate_record(NULL::{qt}, $1::jsonb) \
         ON CONFLICT ({pk}) DO NOTHING",
        pk = table.primary_key.name,
    );
    let fields = value.as_object().cloned().unwrap_or_default();
    let row = row_json(table, id, &fields, origin);
    Ok(tx.execute(&sql, &[&row]).await? > 0)
}

/// Stores an encoded transaction (for relaying) and marks it held.
pub async fn store_txn(tx: &Db<'_, '_>, ctx: &Context, txn: &Txn) -> Result<()> {
    let st = &ctx.schemas.state;
    let (origin, seq) = (txn.id.origin.0.as_slice(), as_i64(txn.id.seq));
    let (store, hold) = (
        format!(
            "INSERT INTO {st}.txns (origin, seq, bytes) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING"
        ),
        format!(
            "INSERT INTO {st}.origins AS o (origin, held, last_txn_at) \
             VALUES ($1, int8multirange(int8range($2::int8, $2::int8 + 1)), now()) \
             ON CONFLICT (origin) DO UPDATE SET held = o.held + EXCLUDED.held, last_txn_at = now()"
        ),
    );
    let bytes = txn.encode();
    let store_params: [&(dyn ToSql + Sync); 3] = [&origin, &seq, &bytes];
    let hold_params: [&(dyn ToSql + Sync); 2] = [&origin, &seq];
    // Pipelined: both statements go out before either answer is awaited.
    tokio::try_join!(
        tx.execute(&store, &store_params),
        tx.execute(&hold, &hold_params),
    )?;
    Ok(())
}

/// Parks a transaction until its dependencies arrive.
pub async fn park(tx: &Db<'_, '_>, ctx: &Context, txn: &Txn) -> Result<()> {
    let sql = format!(
        "INSERT INTO {}.parked (origin, seq, bytes) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        ctx.schemas.state
    );
    tx.execute(
        &sql,
        &[
            &txn.id.origin.0.as_slice(),
            &as_i64(txn.id.seq),
            &txn.encode(),
        ],
    )
    .await?;
    Ok(())
}

/// Most parked transactions retried per pass.
const UNPARK_BATCH: i64 = 1000;

/// Parked transactions, oldest origins and seqs first. Undecodable rows are skipped (logged).
pub async fn parked(tx: &Db<'_, '_>, ctx: &Context) -> Result<Vec<Txn>> {
    let sql = format!(
        "SELECT bytes FROM {}.parked ORDER BY origin, seq LIMIT $1",
        ctx.schemas.state
    );
    let rows = tx.query(&sql, &[&UNPARK_BATCH]).await?;
    Ok(rows
        .iter()
        .filter_map(|r| match Txn::decode(r.get(0)) {
            Ok(txn) => Some(txn),
            Err(e) => {
                tracing::error!(error = %e, "a parked transaction does not decode");
                None
            }
        })
        .collect())
}

/// Removes a transaction from `parked` once applied.
pub async fn unpark(tx: &Db<'_, '_>, ctx: &Context, id: TxnId) -> Result<()> {
    let sql = format!(
        "DELETE FROM {}.parked WHERE origin = $1 AND seq = $2",
        ctx.schemas.state
    );
    tx.execute(&sql, &[&id.origin.0.as_slice(), &as_i64(id.seq)])
        .await?;
    Ok(())
}

/// Records the conflicts a merge resolved (those not already recorded for this state).
pub async fn record_conflicts(
    tx: &Db<'_, '_>,
    ctx: &Context,
    collection: &str,
    id: &str,
    incarnation: Incarnation,
    conflicts: &[&FieldConflict],
) -> Result<()> {
    if conflicts.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO {}.conflicts \
         (collection, record_id, incarnation, field, policy, candidates, winner, origins, recorded_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        ctx.schemas.state
    );
    for c in conflicts {
        let candidates = super::audit::candidates(c);
        let origins = super::audit::origins(c);
        tx.execute(
            &sql,
            &[
                &collection,
                &id,
                &inc(incarnation),
                &c.field,
                &c.policy.name(),
                &candidates,
                &c.winner,
                &origins,
                &ctx.name,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Records a refused peer transaction where an operator sees it.
pub async fn record_rejected(
    tx: &Db<'_, '_>,
    ctx: &Context,
    txn: &Txn,
    reason: &str,
) -> Result<()> {
    let first = txn.ops.first();
    let sql = format!(
        "INSERT INTO {}.rejected (source, collection, record_id, op, origin, seq, reason) \
         VALUES ('peer', $1, $2, $3, $4, $5, $6)",
        ctx.schemas.state
    );
    let op = first.map(|op| match op {
        meshlite_core::Op::Doc { .. } => "doc",
        meshlite_core::Op::Delete { .. } => "delete",
        _ => "append",
    });
    tx.execute(
        &sql,
        &[
            &first.map(|o| pg_text(o.collection())),
            &first.map(|o| pg_text(op_id(o))),
            &op,
            &txn.id.origin.0.as_slice(),
            &as_i64(txn.id.seq),
            &pg_text(reason),
        ],
    )
    .await?;
    Ok(())
}

fn op_id(op: &meshlite_core::Op) -> &str {
    match op {
        meshlite_core::Op::Doc { id, .. }
        | meshlite_core::Op::Delete { id, .. }
        | meshlite_core::Op::Append { id, .. } => id,
    }
}

/// Per (origin, collection) counts of one batch.
#[derive(Debug, Default)]
pub struct StatusEntry {
    /// Transactions applied (or parked).
    pub applied: u32,
    /// Transactions refused.
    pub failed: u32,
    /// The last refusal's reason.
    pub last_error: Option<String>,
}

/// Keeps seed 002's `sync_status` current: one row per node (`service_name` = the node's name
/// as the fleet knows it, `<state>.service_name(origin)`: its certificate name, else its node
/// id, else — until the bridge has met it — the origin's replica id in hex) and table; `pending_records` counts that origin's parked transactions,
/// `failed_records` accumulates refusals.
pub async fn record_sync_status(
    tx: &Db<'_, '_>,
    ctx: &Context,
    origin: &ReplicaId,
    collection: &str,
    entry: &StatusEntry,
) -> Result<()> {
    let (t, st) = (&ctx.schemas.tables, &ctx.schemas.state);
    let status = if entry.failed > 0 {
        "failed"
    } else {
        "success"
    };
    let failed = i32::try_from(entry.failed).unwrap_or(i32::MAX);
    let sql = format!(
        "INSERT INTO {t}.sync_status AS s (service_name, table_name, last_sync_at, last_sync_status, \
                                          pending_records, failed_records, last_error, updated_at) \
         VALUES ({st}.service_name($1), $2, now(), $3, \
                 (SELECT count(*)::int FROM {st}.parked WHERE origin = $4), $5, $6, now()) \
         ON CONFLICT (service_name, table_name) DO UPDATE SET \
             last_sync_at = now(), last_sync_status = EXCLUDED.last_sync_status, \
             pending_records = EXCLUDED.pending_records, \
             failed_records = coalesce(s.failed_records, 0) + EXCLUDED.failed_records, \
             last_error = coalesce(EXCLUDED.last_error, s.last_error), updated_at = now()"
    );
    tx.execute(
        &sql,
        &[
            &origin.0.as_slice(),
            &pg_text(collection),
            &status,
            &origin.0.as_slice(),
            &failed,
            &entry.last_error.as_deref().map(pg_text),
        ],
    )
    .await?;
    Ok(())
}

/// A completed session with `peer`: its rows are fresh even when it had nothing new. Rows kept
/// under the peer's hex id before the bridge learned its name are moved to the name first
/// (counts added up), so one node never shows under two names.
pub async fn touch_sync_status(
    client: &tokio_postgres::Client,
    ctx: &Context,
    peer: &ReplicaId,
) -> Result<()> {
    let (t, st) = (&ctx.schemas.tables, &ctx.schemas.state);
    let rename = format!(
        "WITH old AS ( \
             DELETE FROM {t}.sync_status \
             WHERE service_name = encode($1, 'hex') AND {st}.service_name($1) <> encode($1, 'hex') \
             RETURNING * ) \
         INSERT INTO {t}.sync_status AS s (service_name, table_name, last_sync_at, last_sync_status, \
                                           pending_records, failed_records, last_error, updated_at) \
         SELECT {st}.service_name($1), table_name, last_sync_at, last_sync_status, \
                pending_records, failed_records, last_error, now() FROM old \
         ON CONFLICT (service_name, table_name) DO UPDATE SET \
             failed_records = coalesce(s.failed_records, 0) + coalesce(EXCLUDED.failed_records, 0), \
             last_error = coalesce(s.last_error, EXCLUDED.last_error)"
    );
    client.execute(&rename, &[&peer.0.as_slice()]).await?;
    let touch = format!(
        "UPDATE {t}.sync_status SET last_sync_at = now(), updated_at = now() \
         WHERE service_name = {st}.service_name($1)"
    );
    client.execute(&touch, &[&peer.0.as_slice()]).await?;
    Ok(())
}
