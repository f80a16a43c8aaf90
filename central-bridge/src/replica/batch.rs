//! Set-based batches: a whole batch of received transactions merged in memory and written with
//! one statement per table ([`super::sets`]), instead of a few statements per op.
//!
//! 1. Lock the batch's origins and read which transactions are held (as the row-by-row path);
//!    the rest are checked (`Txn::validate`, keys, log rows' types) before any SQL about records.
//! 2. Lock every record the batch touches (advisory locks in key order, then the `docs` rows
//!    `FOR UPDATE`) and load their states and liveness: one probe of the `docs` key per record
//!    finds its row and any later incarnation's, one of `tombstones` the rest.
//! 3. Merge in memory, transaction by transaction, in order: each record's state is parsed
//!    once, when the batch first changes it, and every change of the batch is applied to it;
//!    a change's new conflicts are looked for only when it was concurrent with the record, and
//!    only in the fields it wrote (see [`RecordDoc::apply_noting_concurrency`]), and every row
//!    a change produces is type-checked as on the row-by-row path. No Automerge document is
//!    built while a record's history is flat — puts of scalars on root keys — and the change
//!    keeps it so: the state is parsed as a [`FlatRecord`], which merges as the document
//!    would. A new record's first change is materialized without a document when it is a
//!    tree of puts ([`RecordDoc::first`]). Anything else loads the document (and a state
//!    about to be compacted, or a record the cache takes, gets one). A transaction whose first
//!    change lacks its dependencies is parked whole.
//! 4. Write: the states (the batch's change chunks appended to each stored state, as the core
//!    store does, or a fresh snapshot every [`COMPACT_CHUNKS`] chunks; a loaded row is updated at
//!    the `ctid` step 2 locked, new records inserted), the audit rows, each
//!    table's rows, the transactions' bytes, the parked ones and `origins.held`: one statement
//!    each. The `COPY`s (audit rows; with [`Via::Copy`] also the transactions, log rows and the
//!    staged document rows, see [`copy`]) go first, one after another; the other statements are
//!    then sent together.
//!
//! A record's row is written once per batch, with its final merged value, and reported as one
//! change. What this path does not take on it hands back as [`Attempt::Unsuited`] before
//! writing (deletes, a transaction touching a record twice, a transaction parked after another
//! of its ops already merged): the caller then runs the row-by-row path. A transaction refused
//! on its merits — or any statement failing on data — gives [`Attempt::Refused`]: the caller
//! replays the batch transaction by transaction with savepoints, which finds and records the
//! culprits. Transient errors fail the batch.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use futures_util::future::join_all;
use meshlite_core::change::Incarnation;

use meshlite_core::schema::{CollectionDef, CollectionKind};
use meshlite_core::store::record::{
    ChangeOutcome, FieldConflict, First, FlatApplied, FlatRecord, RecordDoc,
};
use meshlite_core::store::{ChangeKind, RecordChange, check_remote_txn};
use meshlite_core::{Op, ReplicaId, Txn};
use serde_json::{Map, Value};
use tokio_postgres::Client;

use super::Context;
use super::cache::{Cached, DocCache, RowVersion};
use super::copy::{self, RowRef, Via};
use super::db::{Db, Prepared};
use super::rowwise::{BatchOutcome, SyncStatus, finish, is_log, lock_and_read_held, transient};
use super::sets::{self, AuditRow, DocKey, Expected, NewIds, StateSave, StateWrite, Stored};
use crate::ddl::TableSpec;
use crate::state::bridge_transaction;

/// Appended change chunks after which a state is rewritten as one snapshot.
pub const COMPACT_CHUNKS: i32 = 32;

/// How a set-based attempt ended.
#[derive(Debug)]
pub enum Attempt {
    /// Committed.
    Done(BatchOutcome),
    /// A transaction was refused or a statement failed on data: nothing was written.
    Refused,
    /// The batch needs the row-by-row path: nothing was written.
    Unsuited,
    /// A key `COPY` took for new exists ([`copy::is_collision`]): nothing was written; the
    /// batch can go again with [`Via::Statements`].
    Collided,
}

/// Whether the batch's shape suits this path (it may still turn out [`Attempt::Unsuited`]).
pub fn suited(txns: &[Txn]) -> bool {
    txns.iter().all(|t| {
        let mut seen = HashSet::with_capacity(t.ops.len());
        t.ops.iter().all(|op| {
            !matches!(op, Op::Delete { .. }) && seen.insert((op.collection(), op.record_id()))
        })
    })
}

/// Applies `txns` in one Postgres transaction with set-based statements.
pub async fn apply(
    client: &mut Client,
    prepared: &Prepared,
    ctx: &Context,
    txns: &[Txn],
    via: Via,
    cache: &DocCache,
) -> Result<Attempt, tokio_postgres::Error> {
    let mut tx = bridge_transaction(client).await?;
    let db = Db::new(&tx, prepared);
    let held = lock_and_read_held(&db, ctx, txns).await?;
    let mut out = BatchOutcome::default();
    let mut seen = HashSet::new();
    let mut fresh = Vec::new();
    for txn in txns {
        if held.contains(&txn.id) || !seen.insert(txn.id) {
            out.applied.duplicates += 1;
        } else {
            fresh.push(txn);
        }
    }
    let mut merged = match Merge::run(&db, ctx, &fresh, via, cache).await? {
        Ok(merged) => merged,
        Err(attempt) => {
            tx.rollback().await?;
            return Ok(attempt);
        }
    };
    if let Err(e) = merged.write(&db, ctx, &mut out).await {
        if transient(&e) {
            return Err(e);
        }
        if via == Via::Copy && copy::is_collision(&e) {
            tracing::info!(error = %super::rowwise::pg_reason(&e), "a key copied as new exists; applying the batch again without COPY");
            tx.rollback().await?;
            return Ok(Attempt::Collided);
        }
        tracing::info!(error = %super::rowwise::pg_reason(&e), "set-based batch refused; replaying it transaction by transaction");
        tx.rollback().await?;
        return Ok(Attempt::Refused);
    }
    let mut status = SyncStatus::default();
    for txn in &fresh {
        status.record(txn, None);
    }
    out.applied.new += fresh.len();
    finish(&mut tx, prepared, ctx, &mut out, &status).await?;
    tx.commit().await?;
    cache.put(merged.into_cached(ctx.replica));
    Ok(Attempt::Done(out))
}

/// How a [`Record`]'s merged state is held.
enum Form {
    /// Not parsed: the state is `stored` then `appended` (both empty for a record new to the
    /// bridge; a new record's first change materialized without a document, see
    /// [`RecordDoc::first`], is only in `appended`).
    Bytes,
    /// Parsed as a flat history ([`FlatRecord`]): no document built.
    Flat(FlatRecord),
    /// An Automerge document.
    Doc(Box<RecordDoc>),
}

/// One record incarnation during a batch.
struct Record {
    /// The merged state: parsed when the batch first changes the record (as a flat history
    /// when it is one, else as a document), or the cached document.
    form: Form,
    /// The stored state as read, while no document holds it.
    stored: Vec<u8>,
    /// Chunks the stored state has (`None`: no row yet).
    stored_chunks: Option<i32>,
    /// Where the locked row is (`None`: no row yet).
    ctid: Option<String>,
    /// Bytes the stored state has (0: no row yet).
    stored_len: i64,
    /// The row's version when the document came from the cache (and is still current).
    cached: Option<RowVersion>,
    /// The row's chunks and length once the batch's state write is done.
    written: Option<(i32, i64)>,
    /// The batch's applied changes, concatenated.
    appended: Vec<u8>,
    appended_n: i32,
    /// Dead before the batch (tombstoned or superseded in the database).
    dead: bool,
    /// The last materialization (the row) and the origin of the transaction that made it.
    fields: Option<(Map<String, Value>, ReplicaId)>,
}

/// What applying one change to a [`Record`] did.
enum Applied {
    /// Its dependencies are missing: nothing was applied.
    MissingDeps,
    /// Applied (or a duplicate): the record's row now, and the conflicts the change added.
    Merged {
        outcome: ChangeOutcome,
        fields: Map<String, Value>,
        conflicts: Vec<FieldConflict>,
    },
}

impl Record {
    /// Applies `change` (from `origin`) to the record: a new record's first change without a
    /// document when it can be; else to the flat history when the record's is one and the
    /// change keeps it one; else to the document (loaded first if the record has none).
    fn apply(
        &mut self,
        ctx: &Context,
        def: &CollectionDef,
        origin: ReplicaId,
        change: &[u8],
    ) -> Result<Applied, Attempt> {
        if let Form::Bytes = self.form {
            if self.stored_chunks.is_none() && self.appended_n == 0 {
                return self.first(ctx, def, origin, change);
            }
            let flat = match self.appended.is_empty() {
                true => FlatRecord::load(&self.stored),
                false => FlatRecord::load(&self.state()),
            };
            self.form = match flat {
                Some(flat) => Form::Flat(flat),
                None => Form::Doc(Box::new(self.load_doc(ctx)?)),
            };
        }
        if let Form::Flat(flat) = &mut self.form {
            let applied = flat.apply(origin, change, def);
            if let Some(applied) = applied.map_err(|_| Attempt::Refused)? {
                return Ok(flat_merged(flat, def, applied));
            }
            self.form = Form::Doc(Box::new(self.load_doc(ctx)?));
        }
        match &mut self.form {
            Form::Doc(doc) => doc_merged(doc, def, origin, change),
            // Not reached: the form is a document by now.
            Form::Bytes | Form::Flat(_) => Err(Attempt::Refused),
        }
    }

    /// A new record's first change: its row without a document when it is a tree of puts.
    fn first(
        &mut self,
        ctx: &Context,
        def: &CollectionDef,
        origin: ReplicaId,
        change: &[u8],
    ) -> Result<Applied, Attempt> {
        match RecordDoc::first(&ctx.replica, origin, change, def) {
            Ok(First::Row(fields)) => Ok(Applied::Merged {
                outcome: ChangeOutcome::Applied,
                fields,
                conflicts: Vec::new(),
            }),
            Ok(First::Doc(doc, outcome)) => {
                let fields = doc.materialize(def);
                self.form = Form::Doc(doc);
                Ok(match outcome {
                    ChangeOutcome::MissingDeps => Applied::MissingDeps,
                    outcome => Applied::Merged {
                        outcome,
                        fields,
                        conflicts: Vec::new(),
                    },
                })
            }
            Err(_) => Err(Attempt::Refused),
        }
    }

    /// The record's state so far: the stored one, then the batch's changes.
    fn state(&self) -> Vec<u8> {
        [self.stored.as_slice(), &self.appended].concat()
    }

    /// The record's state as a document.
    fn load_doc(&mut self, ctx: &Context) -> Result<RecordDoc, Attempt> {
        let doc = RecordDoc::load(&self.state(), &ctx.replica).map_err(|e| {
            tracing::info!(reason = %e, "a stored state does not load; replaying the batch");
            Attempt::Refused
        })?;
        self.stored = Vec::new();
        Ok(doc)
    }
}

/// The row after a change applied to a flat history, and the conflicts it added.
fn flat_merged(flat: &FlatRecord, def: &CollectionDef, applied: FlatApplied) -> Applied {
    if applied.outcome == ChangeOutcome::MissingDeps {
        return Applied::MissingDeps;
    }
    let fields = flat.materialize(def);
    let conflicts = match &applied.concurrent {
        Some(concurrent) => flat.new_conflicts(def, concurrent, &fields),
        None => Vec::new(),
    };
    Applied::Merged {
        outcome: applied.outcome,
        fields,
        conflicts,
    }
}

/// Applies `change` to a document: the row after it, and the conflicts it added.
fn doc_merged(
    doc: &mut RecordDoc,
    def: &CollectionDef,
    origin: ReplicaId,
    change: &[u8],
) -> Result<Applied, Attempt> {
    let (outcome, concurrent) = doc
        .apply_noting_concurrency(origin, change, def)
        .map_err(|_| Attempt::Refused)?;
    if outcome == ChangeOutcome::MissingDeps {
        return Ok(Applied::MissingDeps);
    }
    let fields = doc.materialize(def);
    let conflicts = match &concurrent {
        Some(concurrent) => doc.new_conflicts(def, concurrent, &fields),
        None => Vec::new(),
    };
    Ok(Applied::Merged {
        outcome,
        fields,
        conflicts,
    })
}

/// The batch merged in memory, ready to be written.
struct Merge<'t> {
    records: BTreeMap<DocKey, Record>,
    /// Records in the order the batch first changed them (for the change events).
    order: Vec<DocKey>,
    audit: Vec<(DocKey, FieldConflict)>,
    /// Log rows in order: collection, id, row, origin.
    appends: Vec<(String, String, Map<String, Value>, ReplicaId)>,
    via: Via,
    applied: Vec<&'t Txn>,
    parked: Vec<&'t Txn>,
    /// This transaction's id (the version of every row it writes).
    xid: u64,
}

/// What became of one transaction in memory.
enum Fate {
    Applied,
    Parked,
}

impl<'t> Merge<'t> {
    /// Loads and merges the batch; `Err(attempt)` when this path cannot finish it.
    async fn run(
        db: &Db<'_, '_>,
        ctx: &Context,
        txns: &[&'t Txn],
        via: Via,
        cache: &DocCache,
    ) -> Result<Result<Self, Attempt>, tokio_postgres::Error> {
        for txn in txns {
            if let Err(stop) = precheck(ctx, txn) {
                return Ok(Err(stop));
            }
        }
        let keys: Vec<DocKey> = {
            let mut keys: Vec<DocKey> = txns
                .iter()
                .flat_map(|t| t.ops.iter())
                .filter_map(doc_key)
                .collect();
            keys.sort();
            keys.dedup();
            keys
        };
        let refs: Vec<&DocKey> = keys.iter().collect();
        let (mut offers, mut xid) = (HashMap::new(), 0);
        if !refs.is_empty() {
            let stages = async {
                match via {
                    Via::Copy => sets::create_stages(db, ctx, &doc_tables(ctx, &keys)).await,
                    Via::Statements => Ok(()),
                }
            };
            let locked =
                tokio::try_join!(sets::lock_records(db, &refs), stages, sets::current_xid(db))?;
            xid = locked.2;
            offers = cache.take(&keys, xid);
        }
        let offered: Vec<Option<Expected>> = keys
            .iter()
            .map(|k| offers.get(k).map(|c| c.version.expected()))
            .collect();
        let stored = match refs.is_empty() {
            true => Vec::new(),
            false => sets::load(db, ctx, &refs, &offered).await?,
        };
        let mut merge = Merge {
            records: BTreeMap::new(),
            order: Vec::new(),
            audit: Vec::new(),
            appends: Vec::new(),
            applied: Vec::new(),
            parked: Vec::new(),
            via,
            xid,
        };
        let (mut hits, mut misses) = (0, 0);
        for (key, stored) in keys.into_iter().zip(stored) {
            let offer = offers.remove(&key);
            let offered = offer.is_some();
            let r = record(&key, stored, offer);
            match &r {
                Ok(r) if r.cached.is_some() => hits += 1,
                _ if offered => misses += 1,
                _ => {}
            }
            match r {
                Ok(r) => merge.records.insert(key, r),
                Err(reason) => {
                    tracing::info!(%reason, "a stored state does not load; replaying the batch");
                    return Ok(Err(Attempt::Refused));
                }
            };
        }
        cache.count(hits, misses);
        for txn in txns {
            match merge.txn(ctx, txn) {
                Ok(Fate::Applied) => merge.applied.push(txn),
                Ok(Fate::Parked) => merge.parked.push(txn),
                Err(stop) => return Ok(Err(stop)),
            }
        }
        Ok(Ok(merge))
    }

    /// Merges one transaction's ops.
    fn txn(&mut self, ctx: &Context, txn: &Txn) -> Result<Fate, Attempt> {
        let mut merged_any = false;
        let mut appends = Vec::new();
        for op in &txn.ops {
            match op {
                Op::Doc {
                    collection,
                    id,
                    incarnation,
                    change,
                } => {
                    if is_log(ctx, collection) {
                        return Err(Attempt::Unsuited); // held, not shown: the row path says so
                    }
                    let key = DocKey {
                        collection: collection.clone(),
                        id: id.clone(),
                        incarnation: *incarnation,
                    };
                    match self.change(ctx, key, change, txn.id.origin)? {
                        ChangeOutcome::MissingDeps if merged_any => return Err(Attempt::Unsuited),
                        ChangeOutcome::MissingDeps => return Ok(Fate::Parked),
                        _ => merged_any = true,
                    }
                }
                Op::Append {
                    collection,
                    id,
                    row,
                } => {
                    let value = log_row(ctx, collection, id, row)?;
                    appends.push((collection.clone(), id.clone(), value, txn.id.origin));
                }
                _ => return Err(Attempt::Unsuited),
            }
        }
        self.appends.extend(appends);
        Ok(Fate::Applied)
    }

    /// Applies one change to its record's document.
    fn change(
        &mut self,
        ctx: &Context,
        key: DocKey,
        change: &[u8],
        origin: ReplicaId,
    ) -> Result<ChangeOutcome, Attempt> {
        let fallback = CollectionDef::default();
        let def = ctx
            .schema
            .collections
            .get(&key.collection)
            .unwrap_or(&fallback);
        let record = self.records.get_mut(&key).ok_or(Attempt::Unsuited)?;
        if record.dead {
            // Held without being decoded, as on every node: the row path says so.
            return Err(Attempt::Unsuited);
        }
        let (outcome, fields, conflicts) = match record.apply(ctx, def, origin, change)? {
            Applied::MissingDeps => return Ok(ChangeOutcome::MissingDeps),
            Applied::Merged {
                outcome,
                fields,
                conflicts,
            } => (outcome, fields, conflicts),
        };
        if outcome == ChangeOutcome::Applied {
            record.appended.extend_from_slice(change);
            record.appended_n += 1;
        }
        def.check_row(&key.collection, &fields)
            .map_err(|_| Attempt::Refused)?;
        self.audit
            .extend(conflicts.into_iter().map(|c| (key.clone(), c)));
        if record.fields.is_none() {
            self.order.push(key);
        }
        record.fields = Some((fields, origin));
        Ok(outcome)
    }

    /// Writes everything the batch merged (see the module doc) and fills `out`.
    async fn write(
        &mut self,
        db: &Db<'_, '_>,
        ctx: &Context,
        out: &mut BatchOutcome,
    ) -> Result<(), tokio_postgres::Error> {
        let states = self.state_writes(ctx);
        let audit: Vec<AuditRow<'_>> = self
            .audit
            .iter()
            .map(|(key, c)| AuditRow { key, conflict: c })
            .collect();
        let live = self.live_keys();
        // Document rows by collection, each record once with its final value.
        let mut docs: BTreeMap<&str, Vec<RowRef<'_>>> = BTreeMap::new();
        for key in self.order.iter().filter(|k| live.contains(k)) {
            if let Some((fields, origin)) = self.records.get(key).and_then(|r| r.fields.as_ref()) {
                let row = RowRef {
                    id: &key.id,
                    fields,
                    origin,
                };
                docs.entry(&key.collection).or_default().push(row);
            }
        }
        let mut logs: BTreeMap<&str, Vec<RowRef<'_>>> = BTreeMap::new();
        for (collection, id, fields, origin) in &self.appends {
            let row = RowRef { id, fields, origin };
            logs.entry(collection).or_default().push(row);
        }
        let via = self.via;
        let mut all: Vec<&Txn> = self.applied.clone();
        all.extend(&self.parked);
        // First the COPYs, one after another and each to its end: a COPY must not be sent
        // behind a statement that may fail (the driver then misreads the answers).
        sets::record_conflicts(db, ctx, &audit).await?;
        if via == Via::Copy {
            sets::copy_txns(db, ctx, &all).await?;
            for (collection, rows) in &logs {
                if let Some(table) = ctx.tables.get(*collection) {
                    sets::copy_log_rows(db, ctx, table, rows).await?;
                }
            }
            for (collection, rows) in &docs {
                if let Some(table) = ctx.tables.get(*collection) {
                    sets::stage_rows(db, table, rows).await?;
                }
            }
        }
        // Then the other statements, sent together; each awaited to its end even after one
        // failed, so the error kept is the cause (see `copy::settle`).
        let upserts = join_all(docs.iter().filter_map(|(collection, rows)| {
            let table = ctx.tables.get(*collection)?;
            Some(async move {
                let inserted = sets::upsert_rows(db, ctx, table, rows, via).await?;
                Ok::<_, tokio_postgres::Error>((*collection, inserted))
            })
        }));
        let appends = join_all(logs.iter().filter_map(|(collection, rows)| {
            let table = ctx.tables.get(*collection)?;
            Some(async move {
                let new = match via {
                    Via::Copy => NewIds::All,
                    Via::Statements => sets::append_rows(db, ctx, table, rows).await?,
                };
                Ok::<_, tokio_postgres::Error>((*collection, new))
            })
        }));
        let (states, inserted, appended, stored) = tokio::join!(
            sets::save_states(db, ctx, &states),
            upserts,
            appends,
            sets::store_txns(db, ctx, &all, &self.parked, via),
        );
        let mut errors = Vec::new();
        let mut keep = |r: Result<(), tokio_postgres::Error>| r.map_err(|e| errors.push(e));
        let _ = (keep(states), keep(stored));
        let inserted: Vec<_> = inserted
            .into_iter()
            .filter_map(|r| r.map_err(|e| errors.push(e)).ok())
            .collect();
        let appended: Vec<_> = appended
            .into_iter()
            .filter_map(|r| r.map_err(|e| errors.push(e)).ok())
            .collect();
        if let Some(e) = copy::settle(errors) {
            return Err(e);
        }
        let inserted: HashMap<String, HashSet<String>> = inserted
            .into_iter()
            .map(|(c, ids)| (c.to_owned(), ids))
            .collect();
        let appended: HashMap<String, NewIds> = appended
            .into_iter()
            .map(|(c, ids)| (c.to_owned(), ids))
            .collect();
        out.txns.extend(self.applied.iter().map(|t| t.id));
        let shown: Vec<bool> = self.order.iter().map(|k| live.contains(k)).collect();
        self.doc_changes(ctx, &shown, &inserted, out);
        self.log_changes(appended, out);
        Ok(())
    }

    /// The state write of every record the batch changed, in key order: its change chunks
    /// appended, or a snapshot once the stored state would hold [`COMPACT_CHUNKS`] chunks.
    fn state_writes(&mut self, ctx: &Context) -> Vec<StateSave> {
        let mut states = Vec::new();
        for (key, r) in &mut self.records {
            if r.appended_n == 0 {
                continue;
            }
            let compact = r
                .stored_chunks
                .is_some_and(|chunks| chunks + r.appended_n >= COMPACT_CHUNKS);
            if compact && !matches!(r.form, Form::Doc(_)) {
                // A flat history is compacted too: a long one is dearer to parse than a
                // snapshot to load. (A state that does not load is appended to, as before.)
                if let Ok(doc) = r.load_doc(ctx) {
                    r.form = Form::Doc(Box::new(doc));
                }
            }
            let write = match (compact, &mut r.form) {
                (true, Form::Doc(doc)) => {
                    let snapshot = doc.save();
                    r.written = Some((0, len_i64(&snapshot)));
                    StateWrite::Snapshot(snapshot)
                }
                (_, form) => {
                    // A record without a document keeps its bytes to build one for the cache.
                    let appended = match form {
                        Form::Doc(_) => std::mem::take(&mut r.appended),
                        Form::Bytes | Form::Flat(_) => r.appended.clone(),
                    };
                    let chunks = r.stored_chunks.unwrap_or(0) + r.appended_n;
                    r.written = Some((chunks, r.stored_len + len_i64(&appended)));
                    StateWrite::Append(appended, r.appended_n)
                }
            };
            states.push(StateSave {
                key: key.clone(),
                write,
                ctid: r.ctid.clone(),
            });
        }
        states
    }

    /// The documents to cache once the batch committed: those it wrote (their rows now have
    /// this transaction's `xmin`) and those it found current in the cache without changing them.
    /// A new record holding only a first change materialized without a document gets one
    /// built from that change (only when the cache takes entries: the iterator is lazy).
    fn into_cached(self, replica: ReplicaId) -> impl Iterator<Item = (DocKey, Cached)> {
        let xid = self.xid;
        self.records.into_iter().filter_map(move |(key, r)| {
            let version = match (r.written, r.cached) {
                (Some((chunks, len)), _) => RowVersion { xid, chunks, len },
                (None, Some(version)) => version,
                (None, None) => return None,
            };
            let doc = match r.form {
                Form::Doc(doc) => *doc,
                Form::Bytes | Form::Flat(_) => RecordDoc::load(&r.state(), &replica).ok()?,
            };
            Some((key, Cached { doc, version }))
        })
    }

    /// The keys whose rows are shown at the end of the batch: changed here, not dead, and no
    /// later incarnation of the record changed in this batch either.
    fn live_keys(&self) -> HashSet<&DocKey> {
        let mut latest: HashMap<(&str, &str), Incarnation> = HashMap::new();
        for key in &self.order {
            let e = latest.entry((&key.collection, &key.id)).or_insert(0);
            *e = (*e).max(key.incarnation);
        }
        self.order
            .iter()
            .filter(|k| self.records.get(*k).is_some_and(|r| !r.dead))
            .filter(|k| latest.get(&(k.collection.as_str(), k.id.as_str())) == Some(&k.incarnation))
            .collect()
    }

    /// One change per record shown: its final value (moved out of the merge), inserted or
    /// updated.
    fn doc_changes(
        &mut self,
        ctx: &Context,
        shown: &[bool],
        inserted: &HashMap<String, HashSet<String>>,
        out: &mut BatchOutcome,
    ) {
        let fallback = CollectionDef::default();
        let keys = self.order.iter().zip(shown).filter(|(_, s)| **s);
        for (key, _) in keys {
            let (Some(table), Some((fields, _))) = (
                ctx.tables.get(&key.collection),
                self.records.get_mut(key).and_then(|r| r.fields.take()),
            ) else {
                continue;
            };
            let def = ctx.schema.collections.get(&key.collection);
            let mut fields = fields;
            fields.insert(
                table.primary_key.name.as_str().to_owned(),
                def.unwrap_or(&fallback).key_value(&key.id),
            );
            let value = Value::Object(fields);
            let new = inserted
                .get(key.collection.as_str())
                .is_some_and(|s| s.contains(&key.id));
            out.changes.push(RecordChange {
                collection: key.collection.clone(),
                id: key.id.clone(),
                kind: if new {
                    ChangeKind::Insert
                } else {
                    ChangeKind::Update
                },
                value: Some(value),
            });
        }
    }

    /// One change per log row that was new (its fields moved out of the merge).
    fn log_changes(&mut self, mut appended: HashMap<String, NewIds>, out: &mut BatchOutcome) {
        for (collection, id, fields, _) in std::mem::take(&mut self.appends) {
            // A row id is reported once: `take` forgets it.
            let new = appended.get_mut(&collection).is_some_and(|s| s.take(&id));
            if new {
                out.changes.push(RecordChange {
                    collection,
                    id,
                    kind: ChangeKind::Append,
                    value: Some(Value::Object(fields)),
                });
            }
        }
    }
}

/// Checks what can be checked of a transaction before any record is read.
fn precheck(ctx: &Context, txn: &Txn) -> Result<(), Attempt> {
    check_remote_txn(txn).map_err(|_| Attempt::Refused)?;
    let fallback = CollectionDef::default();
    for op in &txn.ops {
        if let Op::Doc { collection, id, .. } = op {
            let def = ctx.schema.collections.get(collection).unwrap_or(&fallback);
            def.check_key(collection, id)
                .map_err(|_| Attempt::Refused)?;
        }
    }
    Ok(())
}

/// A log row parsed and type-checked (as on the row-by-row path); a row that is not a JSON
/// object is left to that path.
fn log_row(
    ctx: &Context,
    collection: &str,
    id: &str,
    row: &str,
) -> Result<Map<String, Value>, Attempt> {
    let value: Value = serde_json::from_str(row).map_err(|_| Attempt::Refused)?;
    let Value::Object(fields) = value else {
        return Err(Attempt::Unsuited);
    };
    let Some(def) = ctx.schema.collections.get(collection) else {
        return Err(Attempt::Unsuited);
    };
    // A log row for a document collection is held, not shown: the row path says so.
    if def.kind != CollectionKind::Log {
        return Err(Attempt::Unsuited);
    }
    def.check_key(collection, id)
        .map_err(|_| Attempt::Refused)?;
    def.check_row(collection, &fields)
        .map_err(|_| Attempt::Refused)?;
    Ok(fields)
}

/// The materialized tables of the document records `keys` touch, once each.
fn doc_tables<'c>(ctx: &'c Context, keys: &[DocKey]) -> Vec<&'c TableSpec> {
    let collections: BTreeSet<&str> = keys.iter().map(|k| k.collection.as_str()).collect();
    collections
        .into_iter()
        .filter_map(|c| ctx.tables.get(c))
        .collect()
}

/// The `docs` key a document op touches.
fn doc_key(op: &Op) -> Option<DocKey> {
    match op {
        Op::Doc {
            collection,
            id,
            incarnation,
            ..
        } => Some(DocKey {
            collection: collection.clone(),
            id: id.clone(),
            incarnation: *incarnation,
        }),
        _ => None,
    }
}

/// A record as read: the cached document when `offer` is still the row's version, else the
/// row's state, parsed when the batch first changes the record ([`Record::apply`]), or nothing
/// when there is no row.
fn record(key: &DocKey, stored: Stored, offer: Option<Cached>) -> Result<Record, String> {
    let ctid = stored.row.as_ref().map(|row| row.ctid.clone());
    let (form, bytes, stored_chunks, stored_len, cached) = match stored.row {
        // No row: a record new to the bridge.
        None => (Form::Bytes, Vec::new(), None, 0, None),
        Some(row) => {
            let (form, bytes, cached) = match (row.state, offer) {
                (None, Some(cached)) => {
                    let form = Form::Doc(Box::new(cached.doc));
                    (form, Vec::new(), Some(cached.version))
                }
                (Some(bytes), _) => (Form::Bytes, bytes, None),
                (None, None) => {
                    return Err(format!(
                        "{}/{}: no state sent and none cached",
                        key.collection, key.id
                    ));
                }
            };
            (form, bytes, Some(row.chunks), row.len, cached)
        }
    };
    Ok(Record {
        form,
        stored: bytes,
        stored_chunks,
        ctid,
        stored_len,
        cached,
        written: None,
        appended: Vec::new(),
        appended_n: 0,
        dead: stored.dead,
        fields: None,
    })
}

fn len_i64(bytes: &[u8]) -> i64 {
    i64::try_from(bytes.len()).unwrap_or(i64::MAX)
}
