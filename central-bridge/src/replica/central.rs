//! Central edits flow back: rows inserted, updated or deleted in the materialized tables by
//! anyone but the bridge (plain SQL, PostgREST, supabase-js against the central Supabase) were
//! captured by trigger into `<state>.outbox` in the editor's own transaction; here each becomes
//! a CRDT change from the bridge's own origin, merged under the collection's policies exactly as
//! a peer's change would be, and announced as a local commit so the gossip actor pushes it to
//! the fleet.
//!
//! One outbox row → one transaction `(bridge replica, next seq)`:
//! - INSERT/UPDATE: the new row (typed columns, `_extra` unpacked, metadata dropped) is put into
//!   the record's live document. Only fields whose value differs from the merged state produce
//!   operations, so an `UPDATE ... SET status = 'running'` does not overwrite concurrent edits of
//!   other fields; a counter set from 5 to 6 adds 1 to the bridge's own part, so it merges with
//!   increments made offline. A deleted id that is inserted again is re-created (a new
//!   incarnation), as `put --recreate` does on a node.
//! - DELETE: a tombstone of the live incarnation (delete wins).
//! - INSERT into a log table: an append of the row (its `id` as given, or the table's generated
//!   default), so central telemetry reaches the fleet like a device's; the row is marked as the
//!   bridge's (`_origin`). UPDATE/DELETE of a log row never happened (the table's trigger kept
//!   the row and only captured the attempt): it is recorded in `rejected` as refused.
//!
//! A row that breaks the schema (a value its declared type refuses, a counter that is not an
//! integer) is not dropped silently: it is recorded in `<state>.rejected` (source `central`) with
//! the reason, and the table row is put back to the merged state. Rows are consumed by deleting
//! them in the same transaction that stores the resulting change, so a crash in between retries
//! the row, and the transaction id allocation (`bridges.next_seq`) rolls back with it.

use std::time::{SystemTime, UNIX_EPOCH};

use meshlite_core::change::Incarnation;
use meshlite_core::schema::CollectionDef;
use meshlite_core::store::record::RecordDoc;
use meshlite_core::store::{ChangeKind, RecordChange};
use meshlite_core::{Op, Txn, TxnId};
use serde_json::{Map, Value};
use tokio_postgres::Client;

use super::db::{Db, Prepared};
use super::rowwise::{BatchOutcome, apply_own, pg_reason};
use super::{Context, rows};
use crate::ddl::{EXTRA_COLUMN, ORIGIN_COLUMN, SYNCED_AT_COLUMN, TableKind, TableSpec};
use crate::pg::Ident;
use crate::state::bridge_transaction;

/// One captured edit.
#[derive(Debug)]
struct Edit {
    id: i64,
    table: String,
    pk: Option<String>,
    op: String,
    new_row: Option<Value>,
}

/// Consumes up to `limit` outbox rows in one Postgres transaction.
pub async fn consume(
    client: &mut Client,
    prepared: &Prepared,
    ctx: &Context,
    limit: i64,
) -> Result<BatchOutcome, tokio_postgres::Error> {
    let mut tx = bridge_transaction(client).await?;
    let st = &ctx.schemas.state;
    let rows = tx
        .query(
            &format!(
                "SELECT id, table_name, pk, op, new_row FROM {st}.outbox \
                 WHERE table_schema = $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED"
            ),
            &[&ctx.schemas.tables.as_str(), &limit],
        )
        .await?;
    let mut out = BatchOutcome::default();
    for row in rows {
        let edit = Edit {
            id: row.get(0),
            table: row.get(1),
            pk: row.get(2),
            op: row.get(3),
            new_row: row.get(4),
        };
        let sp = tx.savepoint("edit").await?;
        match turn_into_txn(&Db::new(&sp, prepared), ctx, &edit).await {
            Ok(Some((txn, changes))) => {
                sp.commit().await?;
                out.applied.new += 1;
                out.txns.push(txn);
                out.changes.extend(changes);
            }
            Ok(None) => sp.commit().await?,
            Err(reason) => {
                sp.rollback().await?;
                tracing::warn!(table = %edit.table, pk = ?edit.pk, %reason, "central edit refused");
                refuse(&Db::new(&tx, prepared), ctx, &edit, &reason).await?;
            }
        }
        tx.execute(
            &format!("DELETE FROM {st}.outbox WHERE id = $1"),
            &[&edit.id],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(out)
}

type Turned = Option<(TxnId, Vec<RecordChange>)>;

/// The edit as a transaction of the bridge, applied; `None` when it changes nothing.
async fn turn_into_txn(tx: &Db<'_, '_>, ctx: &Context, edit: &Edit) -> Result<Turned, String> {
    let (Some(table), Some(id)) = (ctx.tables.get(&edit.table), edit.pk.as_deref()) else {
        return Err(format!("{} is not a materialized collection", edit.table));
    };
    if table.kind == TableKind::Log {
        return log_append(tx, ctx, edit, table, id).await;
    }
    let def = def_of(ctx, &edit.table);
    def.check_key(&edit.table, id).map_err(|e| e.to_string())?;
    let live = live_incarnation(tx, ctx, &edit.table, id)
        .await
        .map_err(|e| pg_reason(&e))?;
    let op = match (edit.op.as_str(), live) {
        ("DELETE", Some((incarnation, _))) => Op::Delete {
            collection: edit.table.clone(),
            id: id.to_owned(),
            incarnation,
        },
        ("DELETE", None) => return Ok(None),
        (_, live) => {
            let fields = record_fields(edit, table.primary_key.name.as_str())?;
            def.check_row(&edit.table, &fields)
                .map_err(|e| e.to_string())?;
            let Some(op) = put_op(tx, ctx, &def, &edit.table, id, live, &fields).await? else {
                return Ok(None);
            };
            op
        }
    };
    let txn = own_txn(tx, ctx, op).await?;
    let changes = apply_own(tx, ctx, &txn).await?;
    Ok(Some((txn.id, changes)))
}

/// A central INSERT into a log table as an append of the bridge; any other log edit refused.
async fn log_append(
    tx: &Db<'_, '_>,
    ctx: &Context,
    edit: &Edit,
    table: &TableSpec,
    id: &str,
) -> Result<Turned, String> {
    if edit.op != "INSERT" {
        return Err(format!(
            "log rows are immutable: {} of {}/{id} refused (append a new row instead)",
            edit.op, edit.table
        ));
    }
    let def = def_of(ctx, &edit.table);
    def.check_key(&edit.table, id).map_err(|e| e.to_string())?;
    let fields = record_fields(edit, table.primary_key.name.as_str())?;
    def.check_row(&edit.table, &fields)
        .map_err(|e| e.to_string())?;
    let row = Value::Object(fields);
    let append = Op::Append {
        collection: edit.table.clone(),
        id: id.to_owned(),
        row: row.to_string(),
    };
    let txn = own_txn(tx, ctx, append).await?;
    // The row is in the table already (the editor inserted it): this stores and holds the
    // transaction; then the row is marked as the bridge's like every row it appends.
    apply_own(tx, ctx, &txn).await?;
    mark_own(tx, ctx, table, id)
        .await
        .map_err(|e| pg_reason(&e))?;
    let change = RecordChange {
        collection: edit.table.clone(),
        id: id.to_owned(),
        kind: ChangeKind::Append,
        value: Some(row),
    };
    Ok(Some((txn.id, vec![change])))
}

/// A transaction of the bridge holding `op`, with the next seq of its origin.
async fn own_txn(tx: &Db<'_, '_>, ctx: &Context, op: Op) -> Result<Txn, String> {
    let seq = next_seq(tx, ctx).await.map_err(|e| pg_reason(&e))?;
    Ok(Txn {
        id: TxnId {
            origin: ctx.replica,
            seq,
        },
        timestamp_ms: now_ms(),
        schema_version: ctx.schema.version,
        ops: vec![op],
    })
}

/// The collection's definition (the default, schemaless one when the schema lacks it).
fn def_of(ctx: &Context, collection: &str) -> CollectionDef {
    ctx.schema
        .collections
        .get(collection)
        .cloned()
        .unwrap_or_default()
}

/// Sets the metadata columns of a centrally inserted row: the bridge is its origin.
async fn mark_own(
    tx: &Db<'_, '_>,
    ctx: &Context,
    table: &TableSpec,
    id: &str,
) -> Result<u64, tokio_postgres::Error> {
    let sql = format!(
        "UPDATE {} SET \"{ORIGIN_COLUMN}\" = $1, \"{SYNCED_AT_COLUMN}\" = now() WHERE {}::text = $2",
        Ident::qualified(&ctx.schemas.tables, &table.name),
        table.primary_key.name
    );
    tx.execute(&sql, &[&ctx.replica.to_hex(), &id]).await
}

/// The Doc op that writes `fields` into the record's live document (a new incarnation when the
/// record was deleted or never existed); `None` when nothing differs.
async fn put_op(
    tx: &Db<'_, '_>,
    ctx: &Context,
    def: &CollectionDef,
    collection: &str,
    id: &str,
    live: Option<(Incarnation, Vec<u8>)>,
    fields: &Map<String, Value>,
) -> Result<Option<Op>, String> {
    let (incarnation, mut doc) = match live {
        Some((inc, state)) => (
            inc,
            RecordDoc::load(&state, &ctx.replica).map_err(|e| e.to_string())?,
        ),
        None => {
            let last = last_incarnation(tx, ctx, collection, id)
                .await
                .map_err(|e| pg_reason(&e))?;
            (last + 1, RecordDoc::new(&ctx.replica))
        }
    };
    if doc.materialize(def) == *fields {
        return Ok(None); // e.g. an UPDATE that set the values the row already had
    }
    let change = doc.put(def, fields).map_err(|e| e.to_string())?;
    Ok(Some(Op::Doc {
        collection: collection.to_owned(),
        id: id.to_owned(),
        incarnation,
        change,
    }))
}

/// The record's fields from a captured row: typed columns and `_extra`, without the key and
/// the bridge's metadata columns; SQL NULLs are absent fields.
fn record_fields(edit: &Edit, pk: &str) -> Result<Map<String, Value>, String> {
    let Some(Value::Object(row)) = &edit.new_row else {
        return Err("captured row is not an object".into());
    };
    let mut fields = Map::new();
    for (k, v) in row {
        match k.as_str() {
            k if k == pk || k == ORIGIN_COLUMN || k == SYNCED_AT_COLUMN => {}
            EXTRA_COLUMN => {
                if let Value::Object(extra) = v {
                    fields.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
            _ if v.is_null() => {}
            _ => {
                fields.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(fields)
}

/// The highest incarnation of the record that is alive, with its state.
async fn live_incarnation(
    tx: &Db<'_, '_>,
    ctx: &Context,
    collection: &str,
    id: &str,
) -> Result<Option<(Incarnation, Vec<u8>)>, tokio_postgres::Error> {
    let st = &ctx.schemas.state;
    let row = tx
        .query_opt(
            &format!(
                "SELECT d.incarnation, d.state FROM {st}.docs d \
                 WHERE d.collection = $1 AND d.id = $2 AND NOT d.deleted \
                 AND NOT EXISTS (SELECT 1 FROM {st}.tombstones t WHERE t.collection = d.collection \
                                 AND t.id = d.id AND t.incarnation >= d.incarnation) \
                 ORDER BY d.incarnation DESC LIMIT 1 FOR UPDATE"
            ),
            &[&collection, &id],
        )
        .await?;
    Ok(row.map(|r| (r.get::<_, i32>(0).unsigned_abs(), r.get(1))))
}

/// The highest incarnation ever seen for the record (0 when none).
async fn last_incarnation(
    tx: &Db<'_, '_>,
    ctx: &Context,
    collection: &str,
    id: &str,
) -> Result<Incarnation, tokio_postgres::Error> {
    let st = &ctx.schemas.state;
    let row = tx
        .query_one(
            &format!(
                "SELECT greatest( \
                   (SELECT max(incarnation) FROM {st}.docs WHERE collection = $1 AND id = $2), \
                   (SELECT max(incarnation) FROM {st}.tombstones WHERE collection = $1 AND id = $2), 0)"
            ),
            &[&collection, &id],
        )
        .await?;
    Ok(row.get::<_, i32>(0).unsigned_abs())
}

/// Allocates the bridge's next transaction seq (rolls back with the transaction).
async fn next_seq(tx: &Db<'_, '_>, ctx: &Context) -> Result<u64, tokio_postgres::Error> {
    let row = tx
        .query_one(
            &format!(
                "UPDATE {}.bridges SET next_seq = next_seq + 1 WHERE replica_id = $1 \
                 RETURNING next_seq - 1",
                ctx.schemas.state
            ),
            &[&ctx.replica.0.as_slice()],
        )
        .await?;
    Ok(row.get::<_, i64>(0).unsigned_abs())
}

/// Records a refused edit and puts the table row back to the merged state.
async fn refuse(
    tx: &Db<'_, '_>,
    ctx: &Context,
    edit: &Edit,
    reason: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        &format!(
            "INSERT INTO {}.rejected (source, collection, record_id, op, payload, reason) \
             VALUES ('central', $1, $2, $3, $4, $5)",
            ctx.schemas.state
        ),
        &[&edit.table, &edit.pk, &edit.op, &edit.new_row, &reason],
    )
    .await?;
    let (Some(table), Some(id)) = (ctx.tables.get(&edit.table), edit.pk.as_deref()) else {
        return Ok(());
    };
    if table.kind == TableKind::Log {
        // A refused insert leaves nothing behind: the row never reaches the fleet, so it must
        // not stay in the table either. Refused updates and deletes changed nothing.
        if edit.op == "INSERT" {
            rows::delete_row(tx, ctx, table, id).await?;
        }
        return Ok(());
    }
    let def = def_of(ctx, &edit.table);
    match live_incarnation(tx, ctx, &edit.table, id).await? {
        Some((_, state)) => match RecordDoc::load(&state, &ctx.replica) {
            Ok(doc) => {
                rows::upsert(tx, ctx, table, id, &doc.materialize(&def), &ctx.replica).await?;
            }
            Err(e) => tracing::error!(error = %e, "stored state unreadable while restoring a row"),
        },
        None => {
            rows::delete_row(tx, ctx, table, id).await?;
        }
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
