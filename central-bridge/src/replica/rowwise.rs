//! The row-by-row path of applying received transactions to Postgres (the `apply` module says
//! how a batch chooses its path), and what every path shares: the batch outcome, the origin
//! locks and held reads, `sync_status` bookkeeping and the end of a batch ([`finish`]).
//!
//! Used for what the set-based path hands back (deletes, a transaction touching a record twice,
//! a transaction parked half-way) and as the fallback that finds refused transactions:
//! 1. lock the `origins` rows of every origin in the batch, in origin order, and read which of
//!    the batch's transactions are already held (duplicates: skipped); lock the batch's records
//!    as the set-based path does (advisory locks in key order);
//! 2. each new transaction: first every op is checked against the record states it touches
//!    (read `FOR UPDATE`, the ops' reads pipelined): a change whose Automerge dependencies are
//!    missing parks the whole transaction (stored in `parked`, counted as held), so no reader
//!    ever sees half of one. Then the ops are written (pipelined): the merged state, the
//!    conflicts the merge resolved, the materialized row (or its deletion, or the log row), the
//!    encoded transaction and the summary. The batch is first tried without savepoints; if a
//!    transaction is refused on its merits (a type, a value its column cannot hold) on either
//!    path, that attempt is rolled back and the batch runs again with a savepoint per
//!    transaction, so only the refused ones are rolled back, recorded in `rejected` and
//!    reported;
//! 3. parked transactions are retried until none makes progress;
//! 4. COMMIT. Only then is the commit event broadcast.
//!
//! A deadlock or serialization failure (two bridges racing) retries the batch a few times;
//! other transient errors (the connection, the server's resources) fail it and peers resend.
//!
//! Deletes win: a tombstone of incarnation *k* makes every change to *k* (earlier or later) a
//! no-op for the table, and the row disappears unless a later incarnation is alive.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use futures_util::future::try_join_all;
use meshlite_core::change::Incarnation;
use meshlite_core::schema::{CollectionDef, CollectionKind};
use meshlite_core::store::record::{ChangeOutcome, FieldConflict, RecordDoc};
use meshlite_core::store::{ChangeKind, RecordChange, StoreEvent, check_remote_txn};
use meshlite_core::{Op, ReplicaId, Txn, TxnId};
use meshlite_mesh::replica::Applied;
use serde_json::Value;
use tokio_postgres::Client;

use super::db::{Db, Prepared};
use super::rows;
use super::sets::{self, DocKey};
use super::storable::unstorable;
use super::{Context, as_i64};
use crate::state::bridge_transaction;

/// What one batch did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Counts for the transport.
    pub applied: Applied,
    /// Transactions that became visible (including unparked ones).
    pub txns: Vec<TxnId>,
    /// The rows they changed.
    pub changes: Vec<RecordChange>,
}

impl BatchOutcome {
    /// The commit event for subscribers; `local` for the bridge's own transactions (central
    /// edits), which the gossip actor pushes to the fleet.
    pub fn event(&self, local: bool) -> StoreEvent {
        StoreEvent::Committed {
            txns: self.txns.as_slice().into(),
            local,
            changes: self.changes.as_slice().into(),
        }
    }

    /// [`BatchOutcome::event`] without copying the changes; the counts stay behind.
    pub fn into_event(self, local: bool) -> (Applied, StoreEvent) {
        let event = StoreEvent::Committed {
            txns: self.txns.into(),
            local,
            changes: self.changes.into(),
        };
        (self.applied, event)
    }
}

/// Why one transaction could not be applied.
#[derive(Debug, thiserror::Error)]
enum TxnError {
    /// Refused on its merits (recorded in `rejected`).
    #[error("{0}")]
    Invalid(String),
    /// Postgres refused a statement (e.g. a value its typed column cannot hold).
    #[error("{}", pg_reason(.0))]
    Postgres(#[from] tokio_postgres::Error),
}

/// Postgres' own message for an error (the driver's `Display` says only "db error").
pub fn pg_reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// Whether a Postgres error says nothing about the transaction itself: the connection, the
/// server's resources or concurrency (deadlock, serialization, lock or statement timeout,
/// shutdown) — retry later rather than refuse.
pub(super) fn transient(e: &tokio_postgres::Error) -> bool {
    let Some(db) = e.as_db_error() else {
        return true; // I/O, closed connection
    };
    let code = db.code().code();
    ["08", "40", "53", "55P03", "57"]
        .iter()
        .any(|class| code.starts_with(class))
}

/// What became of one transaction.
enum Done {
    Visible(Vec<RecordChange>),
    Parked,
}

/// One attempt at a batch; `None` when `careful` is false and a transaction was refused (the
/// attempt was rolled back). With `careful` it always finishes.
pub(super) async fn attempt(
    client: &mut Client,
    prepared: &Prepared,
    ctx: &Context,
    txns: &[Txn],
    careful: bool,
) -> Result<Option<BatchOutcome>, tokio_postgres::Error> {
    let mut tx = bridge_transaction(client).await?;
    let held = lock_and_read_held(&Db::new(&tx, prepared), ctx, txns).await?;
    lock_records(&Db::new(&tx, prepared), txns).await?;
    let mut out = BatchOutcome::default();
    let mut seen = HashSet::new();
    let mut status = SyncStatus::default();
    for txn in txns {
        if held.contains(&txn.id) || !seen.insert(txn.id) {
            out.applied.duplicates += 1;
            continue;
        }
        let result = match (careful, unstorable(txn)) {
            (_, Some(reason)) => Err(TxnError::Invalid(reason)),
            (false, None) => apply_new(&Db::new(&tx, prepared), ctx, txn).await,
            (true, None) => {
                let sp = tx.savepoint("txn").await?;
                let result = apply_new(&Db::new(&sp, prepared), ctx, txn).await;
                match &result {
                    Ok(_) => sp.commit().await?,
                    Err(TxnError::Postgres(e)) if transient(e) => {}
                    Err(_) => sp.rollback().await?,
                }
                result
            }
        };
        match result {
            Ok(done) => {
                out.applied.new += 1;
                status.record(txn, None);
                if let Done::Visible(changes) = done {
                    out.txns.push(txn.id);
                    out.changes.extend(changes);
                }
            }
            Err(TxnError::Postgres(e)) if transient(&e) => {
                // Not the transaction's fault: the whole batch fails and peers resend it.
                return Err(e);
            }
            Err(_) if !careful => {
                tx.rollback().await?;
                return Ok(None);
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(txn = ?txn.id, %reason, "transaction refused");
                rows::record_rejected(&Db::new(&tx, prepared), ctx, txn, &reason).await?;
                status.record(txn, Some(&reason));
                out.applied.rejected.push((txn.id, reason));
            }
        }
    }
    finish(&mut tx, prepared, ctx, &mut out, &status).await?;
    tx.commit().await?;
    Ok(Some(out))
}

/// The end of every batch before its commit: parked transactions retried, `sync_status` kept.
pub(super) async fn finish(
    tx: &mut tokio_postgres::Transaction<'_>,
    prepared: &Prepared,
    ctx: &Context,
    out: &mut BatchOutcome,
    status: &SyncStatus,
) -> Result<(), tokio_postgres::Error> {
    unpark(tx, prepared, ctx, out).await?;
    let db = Db::new(tx, prepared);
    try_join_all(status.0.iter().map(|((origin, collection), entry)| {
        rows::record_sync_status(&db, ctx, origin, collection, entry)
    }))
    .await?;
    Ok(())
}

/// What one batch did per (origin, collection), for seed 002's `sync_status`.
#[derive(Debug, Default)]
pub(super) struct SyncStatus(BTreeMap<(ReplicaId, String), rows::StatusEntry>);

impl SyncStatus {
    pub(super) fn record(&mut self, txn: &Txn, refused: Option<&str>) {
        let collections: BTreeSet<&str> = txn.ops.iter().map(Op::collection).collect();
        for c in collections {
            let e = self.0.entry((txn.id.origin, c.to_owned())).or_default();
            match refused {
                Some(reason) => {
                    e.failed += 1;
                    e.last_error = Some(reason.to_owned());
                }
                None => e.applied += 1,
            }
        }
    }
}

/// Locks the batch's origin rows (creating missing ones) in origin order and returns which of
/// the batch's transactions are held.
pub(super) async fn lock_and_read_held(
    tx: &Db<'_, '_>,
    ctx: &Context,
    txns: &[Txn],
) -> Result<HashSet<TxnId>, tokio_postgres::Error> {
    let st = &ctx.schemas.state;
    let origins: BTreeSet<[u8; 16]> = txns.iter().map(|t| t.id.origin.0).collect();
    let origins: Vec<&[u8]> = origins.iter().map(|o| o.as_slice()).collect();
    tx.execute(
        &format!(
            "INSERT INTO {st}.origins (origin) SELECT unnest($1::bytea[]) ORDER BY 1 \
             ON CONFLICT (origin) DO NOTHING"
        ),
        &[&origins],
    )
    .await?;
    tx.query(
        &format!(
            "SELECT origin FROM {st}.origins WHERE origin = ANY($1) ORDER BY origin FOR UPDATE"
        ),
        &[&origins],
    )
    .await?;
    let ids: Vec<&[u8]> = txns.iter().map(|t| t.id.origin.0.as_slice()).collect();
    let seqs: Vec<i64> = txns.iter().map(|t| as_i64(t.id.seq)).collect();
    let rows = tx
        .query(
            &format!(
                "SELECT t.n FROM unnest($1::bytea[], $2::int8[]) WITH ORDINALITY AS t(o, s, n) \
                 JOIN {st}.origins g ON g.origin = t.o WHERE g.held @> t.s"
            ),
            &[&ids, &seqs],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| usize::try_from(r.get::<_, i64>(0) - 1).ok())
        .filter_map(|i| txns.get(i).map(|t| t.id))
        .collect())
}

/// Locks every record the batch's ops touch, as the set-based path does, so the two paths serialize
/// with each other on records that have no `docs` row yet.
async fn lock_records(db: &Db<'_, '_>, txns: &[Txn]) -> Result<(), tokio_postgres::Error> {
    let mut keys: Vec<DocKey> = txns
        .iter()
        .filter(|t| unstorable(t).is_none())
        .flat_map(|t| &t.ops)
        .map(|op| DocKey {
            collection: op.collection().to_owned(),
            id: op.record_id().to_owned(),
            incarnation: 1,
        })
        .collect();
    keys.sort();
    keys.dedup();
    let refs: Vec<&DocKey> = keys.iter().collect();
    match refs.is_empty() {
        true => Ok(()),
        false => sets::lock_records(db, &refs).await,
    }
}

/// Applies a transaction of the bridge's own (a central edit: its dependencies are the state it
/// was made from), stores it and marks it held; the rows it changed.
pub(super) async fn apply_own(
    tx: &Db<'_, '_>,
    ctx: &Context,
    txn: &Txn,
) -> Result<Vec<RecordChange>, String> {
    match apply_new(tx, ctx, txn).await.map_err(|e| e.to_string())? {
        Done::Visible(changes) => Ok(changes),
        Done::Parked => Err("own change lacks its dependencies".into()),
    }
}

/// Applies (or parks) a transaction not held yet, then stores it and marks it held.
async fn apply_new(tx: &Db<'_, '_>, ctx: &Context, txn: &Txn) -> Result<Done, TxnError> {
    check_remote_txn(txn).map_err(TxnError::Invalid)?;
    let (done, ()) = tokio::try_join!(apply_ops(tx, ctx, txn), async {
        Ok(rows::store_txn(tx, ctx, txn).await?)
    })?;
    if matches!(done, Done::Parked) {
        rows::park(tx, ctx, txn).await?;
    }
    Ok(done)
}

/// One record op checked against the record's current state.
enum Checked {
    Doc {
        collection: String,
        id: String,
        incarnation: Incarnation,
        doc: Box<RecordDoc>,
        before: Vec<FieldConflict>,
    },
    Delete {
        collection: String,
        id: String,
        incarnation: Incarnation,
    },
    Append {
        collection: String,
        id: String,
        row: String,
    },
    /// Held and relayed, never decoded nor materialized: a document change for a log
    /// collection, or for a dead incarnation.
    Ignored,
}

/// Checks every op, then writes them all; parks the transaction if any change lacks its
/// dependencies (nothing written).
async fn apply_ops(tx: &Db<'_, '_>, ctx: &Context, txn: &Txn) -> Result<Done, TxnError> {
    if !one_op_per_record(txn) {
        return apply_ops_in_order(tx, ctx, txn).await;
    }
    // Ops touch distinct records: their reads, then their writes, are pipelined.
    let checked = try_join_all(txn.ops.iter().map(|op| check(tx, ctx, txn.id.origin, op))).await?;
    let Some(checked) = checked.into_iter().collect::<Option<Vec<Checked>>>() else {
        return Ok(Done::Parked);
    };
    let written = try_join_all(checked.into_iter().map(|c| write(tx, ctx, txn.id, c))).await?;
    Ok(Done::Visible(written.into_iter().flatten().collect()))
}

/// [`apply_ops`] one op after the other, for a transaction that touches a record twice (never
/// written by a node; kept in order so the statements on that record do not race): every op is
/// checked before any is written, so a parked transaction writes nothing.
async fn apply_ops_in_order(tx: &Db<'_, '_>, ctx: &Context, txn: &Txn) -> Result<Done, TxnError> {
    let mut checked = Vec::with_capacity(txn.ops.len());
    for op in &txn.ops {
        let Some(c) = check(tx, ctx, txn.id.origin, op).await? else {
            return Ok(Done::Parked);
        };
        checked.push(c);
    }
    let mut changes = Vec::with_capacity(checked.len());
    for c in checked {
        changes.extend(write(tx, ctx, txn.id, c).await?);
    }
    Ok(Done::Visible(changes))
}

/// Whether every op of `txn` touches a different record (as local writes always do).
fn one_op_per_record(txn: &Txn) -> bool {
    let mut seen = HashSet::with_capacity(txn.ops.len());
    txn.ops
        .iter()
        .all(|op| seen.insert((op.collection(), op.record_id())))
}

/// `None` when a change's dependencies are missing.
async fn check(
    tx: &Db<'_, '_>,
    ctx: &Context,
    origin: ReplicaId,
    op: &Op,
) -> Result<Option<Checked>, TxnError> {
    Ok(Some(match op {
        Op::Doc {
            collection,
            id,
            incarnation,
            change,
        } => {
            let def = def_of(ctx, collection);
            def.check_key(collection, id)
                .map_err(|e| TxnError::Invalid(e.to_string()))?;
            if is_log(ctx, collection) {
                // As on every node: held and relayed, never decoded nor shown.
                tracing::warn!(%collection, %id, "document change for a log collection: held, not materialized");
                return Ok(Some(Checked::Ignored));
            }
            // Pipelined: both queries go out before either answer is awaited.
            let (stored, dead) = tokio::try_join!(
                rows::load_state(tx, ctx, collection, id, *incarnation),
                rows::is_dead(tx, ctx, collection, id, *incarnation),
            )?;
            if dead {
                // As on every node: a change to a deleted or superseded incarnation is held and
                // relayed without being decoded, so what a replica accepts does not depend on
                // whether the delete came first (found by the `bridge_txn` fuzz target: the
                // bridge refused a corrupt change a node held, and they never converged).
                return Ok(Some(Checked::Ignored));
            }
            let mut doc = match stored {
                Some(bytes) => RecordDoc::load(&bytes, &ctx.replica)
                    .map_err(|e| TxnError::Invalid(format!("{collection}/{id}: {e}")))?,
                None => RecordDoc::new(&ctx.replica),
            };
            let before = doc.conflicts(&def);
            let outcome = doc
                .apply(origin, change)
                .map_err(|e| TxnError::Invalid(format!("{collection}/{id}: {e}")))?;
            if outcome == ChangeOutcome::MissingDeps {
                return Ok(None);
            }
            // Every live row satisfies the declared types (as on every node): a change that
            // would break one is refused before anything is written.
            def.check_row(collection, &doc.materialize(&def))
                .map_err(|e| TxnError::Invalid(e.to_string()))?;
            Checked::Doc {
                collection: collection.clone(),
                id: id.clone(),
                incarnation: *incarnation,
                doc: Box::new(doc),
                before,
            }
        }
        Op::Delete {
            collection,
            id,
            incarnation,
        } => Checked::Delete {
            collection: collection.clone(),
            id: id.clone(),
            incarnation: *incarnation,
        },
        Op::Append {
            collection,
            id,
            row,
        } => Checked::Append {
            collection: collection.clone(),
            id: id.clone(),
            row: row.clone(),
        },
        #[allow(unreachable_patterns)]
        _ => return Err(TxnError::Invalid("unknown op kind".into())),
    }))
}

async fn write(
    tx: &Db<'_, '_>,
    ctx: &Context,
    txn: TxnId,
    checked: Checked,
) -> Result<Option<RecordChange>, TxnError> {
    match checked {
        Checked::Doc {
            collection,
            id,
            incarnation,
            mut doc,
            before,
        } => {
            let def = def_of(ctx, &collection);
            let state = doc.save();
            let after = doc.conflicts(&def);
            let new: Vec<&FieldConflict> = after.iter().filter(|c| !before.contains(c)).collect();
            let table = ctx.tables.get(&collection);
            let fields = doc.materialize(&def);
            let upsert = async {
                match table {
                    Some(t) => rows::upsert(tx, ctx, t, &id, &fields, &txn.origin)
                        .await
                        .map(Some),
                    None => Ok(None),
                }
            };
            // Pipelined: the state, the audit rows and the table row go out together.
            let (_, _, inserted) = tokio::try_join!(
                rows::save_state(tx, ctx, &collection, &id, incarnation, &state),
                rows::record_conflicts(tx, ctx, &collection, &id, incarnation, &new),
                upsert,
            )?;
            let (Some(table), Some(inserted)) = (table, inserted) else {
                return Ok(None);
            };
            let mut value = Value::Object(fields);
            value[&table.primary_key.name.as_str().to_owned()] = def.key_value(&id);
            Ok(Some(RecordChange {
                collection,
                id,
                kind: if inserted {
                    ChangeKind::Insert
                } else {
                    ChangeKind::Update
                },
                value: Some(value),
            }))
        }
        Checked::Delete {
            collection,
            id,
            incarnation,
        } => {
            let removed = rows::tombstone(tx, ctx, &collection, &id, incarnation, txn).await?;
            Ok(removed.then_some(RecordChange {
                collection,
                id,
                kind: ChangeKind::Delete,
                value: None,
            }))
        }
        Checked::Ignored => Ok(None),
        Checked::Append {
            collection,
            id,
            row,
        } => {
            let value: Value = serde_json::from_str(&row)
                .map_err(|e| TxnError::Invalid(format!("{collection}/{id}: log row: {e}")))?;
            let def = def_of(ctx, &collection);
            def.check_key(&collection, &id)
                .map_err(|e| TxnError::Invalid(e.to_string()))?;
            let Some(fields) = value.as_object() else {
                let reason = format!("log row {collection}/{id} is not a JSON object");
                return Err(TxnError::Invalid(reason));
            };
            // As on every node: a log row for a document collection is held and relayed, never
            // shown (nodes do not materialize it either).
            if def.kind == CollectionKind::Document
                && ctx.schema.collections.contains_key(&collection)
            {
                tracing::warn!(%collection, %id, "log row for a document collection: held, not materialized");
                return Ok(None);
            }
            def.check_row(&collection, fields)
                .map_err(|e| TxnError::Invalid(e.to_string()))?;
            let Some(table) = ctx.tables.get(&collection) else {
                return Ok(None);
            };
            let appended = rows::append(tx, ctx, table, &id, &value, &txn.origin).await?;
            Ok(appended.then_some(RecordChange {
                collection,
                id,
                kind: ChangeKind::Append,
                value: Some(value),
            }))
        }
    }
}

/// Retries parked transactions until none makes progress.
async fn unpark(
    tx: &mut tokio_postgres::Transaction<'_>,
    prepared: &Prepared,
    ctx: &Context,
    out: &mut BatchOutcome,
) -> Result<(), tokio_postgres::Error> {
    loop {
        let mut progress = false;
        for txn in rows::parked(&Db::new(tx, prepared), ctx).await? {
            let id = txn.id;
            let sp = tx.savepoint("unpark").await?;
            let db = Db::new(&sp, prepared);
            match apply_ops(&db, ctx, &txn).await {
                Ok(Done::Visible(changes)) => {
                    rows::unpark(&db, ctx, id).await?;
                    sp.commit().await?;
                    out.txns.push(id);
                    out.changes.extend(changes);
                    progress = true;
                }
                Ok(Done::Parked) => sp.rollback().await?,
                Err(e) => {
                    // Held and stored already; it stays parked and is reported once here.
                    sp.rollback().await?;
                    tracing::warn!(txn = ?id, error = %e, "parked transaction cannot be applied");
                }
            }
        }
        if !progress {
            return Ok(());
        }
    }
}

/// Whether `collection` is declared as a log collection.
pub(super) fn is_log(ctx: &Context, collection: &str) -> bool {
    ctx.schema
        .collections
        .get(collection)
        .is_some_and(|d| d.kind == CollectionKind::Log)
}

pub(super) fn def_of(ctx: &Context, collection: &str) -> CollectionDef {
    ctx.schema
        .collections
        .get(collection)
        .cloned()
        .unwrap_or_default()
}
