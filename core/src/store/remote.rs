//! Applying remote transactions: idempotent, order-independent, atomic per transaction.
//!
//! For each transaction (sorted by id): already held ⇒ duplicate. Otherwise it runs in two
//! phases. *Check*: decode every Automerge change (behind `catch_unwind`) and check its
//! dependencies against the record's document plus the changes of earlier ops of the
//! same transaction; a missing dependency parks the whole transaction (stored in `parked`, held
//! in the summary so peers stop resending it). *Apply*: apply the changes, tombstones and log
//! rows and re-materialize the touched rows. A decoding error or a panic inside Automerge
//! rejects the transaction: what it wrote is rolled back, the possibly poisoned cached documents
//! are evicted, and the store carries on. A SQLite failure (even while loading a document) is
//! not the transaction's fault: it fails the whole batch, which keeps nothing and can be retried. After a batch that applied anything, parked
//! transactions are retried until no more progress is made.
//!
//! Savepoints: the check phase writes nothing, so the common path runs a whole batch inside one
//! SAVEPOINT (a savepoint per transaction copied every page it touched to the sub-journal again).
//! Only a transaction rejected while *applying* needs its own: then the batch is rolled back,
//! the summary, parked count and touched documents are reloaded, and the batch runs again with
//! one SAVEPOINT per transaction, so the bad one is rolled back alone. Parked transactions are
//! always retried guarded.
//!
//! Applying a document change: a new record's first change that is plain scalar puts on the
//! root map is materialized from the change itself, without building a document
//! ([`super::first_change`]); any other change is applied to the record's document (cached,
//! loaded from its `docs` row, or new). The state read while checking is reused unless an
//! earlier op of the transaction wrote the record, and the live row of an updated record is
//! rewritten with a plain UPDATE.
//!
//! Stored once: a transaction applied as it is received is stored packed, without the changes
//! that created `docs` rows, which lend them back when it is relayed (see `docs`, "Lent first
//! changes"); it relays exactly the bytes it arrived as. A parked transaction is stored whole
//! when it parks and lends nothing when it is unparked. A lent first change taken by the fast
//! path that its new row re-encodes to byte for byte is not stored at all: it is derived from
//! the row (see `derived`).
//!
//! Actors: a document change whose Automerge actor is not its transaction's origin is rejected
//! (see `check_actor`): a peer cannot write under another replica's name.
//!
//! Declared types: the check phase rejects an op whose id is not a canonical key of its
//! collection's `key_type`; the apply phase rejects a transaction that leaves a materialized row
//! with a value its field's type refuses (the rows in force always satisfy the schema's types;
//! a peer on an older schema can still send such values). The reason names the collection, the
//! field and the value, and only that transaction is rejected.
//!
//! Changes to a dead incarnation (deleted, or superseded by a re-creation) are held and relayed
//! but never materialized. Data for collections the local schema does not declare is applied
//! with the default definition (all fields `lww`), never dropped.

use std::borrow::Cow;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use automerge::{Change, ChangeHash, ReadDoc};
use rusqlite::params;
use serde_json::Value;

use super::derived;
use super::doc;
use super::docs::{DocKey, free_dead, insert_derived, insert_first_change, lends_to, store_change};
use super::error::LoadError;
use super::first_change;
use super::rows::{self, LogInsert, RecordState, with_pk};
use super::types::{ApplyReport, ChangeKind, RecordChange, StoreEvent};
use super::writer::Writer;
use crate::change::{Incarnation, Op, Txn};
use crate::ids::{ReplicaId, Seq, TxnId};
use crate::schema::{CollectionDef, CollectionKind, Schema, validate_name};

/// What checking a transaction decided.
enum Verdict {
    /// Ready: each op's decoded change and its record's state as read while checking (`None`
    /// for non-document or dead ops).
    Ready(Vec<Option<Checked>>),
    /// A dependency is missing.
    Park,
    /// Unusable input.
    Reject(String),
}

/// A document op that passed the check.
struct Checked {
    change: Change,
    /// The record's state before the transaction (its `records` row).
    state: Option<RecordState>,
}

/// What applying a transaction did.
enum Outcome {
    /// The record changes shown, and the indices of the doc ops whose change a new `docs` row
    /// lends (see `docs`, "Lent first changes").
    Applied(Vec<RecordChange>, Vec<usize>),
    Parked,
    Rejected(String),
}

/// The record a document op targets.
#[derive(Clone, Copy)]
struct Target<'a> {
    collection: &'a str,
    id: &'a str,
    incarnation: Incarnation,
}

/// The record changes of an applied transaction and the indices of its lent ops.
type AppliedOps = (Vec<RecordChange>, Vec<usize>);

/// A record's materialized row and whether its new `docs` row lends the change.
type Materialized = (serde_json::Map<String, Value>, bool);

/// What applying one document op did.
#[derive(Default)]
struct DocApplied {
    /// The record change shown (`None` for a dead incarnation).
    change: Option<RecordChange>,
    /// A new `docs` row lends the op's change to its transaction.
    lends: bool,
}

/// Accumulates the results of one apply command.
#[derive(Default)]
struct Batch {
    report: ApplyReport,
    txns: Vec<TxnId>,
    changes: Vec<RecordChange>,
    dirty: HashSet<ReplicaId>,
}

impl Writer {
    /// Applies remote transactions (inside the writer's savepoint).
    pub fn apply(
        &mut self,
        mut txns: Vec<Txn>,
    ) -> rusqlite::Result<(ApplyReport, Option<StoreEvent>)> {
        txns.sort_by_key(|t| t.id);
        let mut batch = match self.receive_all(&txns, false)? {
            Some(batch) => batch,
            None => self.receive_all(&txns, true)?.unwrap_or_default(),
        };
        if batch.report.applied > 0 && self.parked > 0 {
            self.unpark(&mut batch)?;
        }
        for origin in &batch.dirty {
            if let Some(set) = self.summary.get(origin) {
                rows::save_held(&self.conn, origin, set)?;
            }
        }
        let event =
            (self.has_subscribers() && !batch.txns.is_empty()).then_some(StoreEvent::Committed {
                txns: batch.txns.into(),
                local: false,
                changes: batch.changes.into(),
            });
        Ok((batch.report, event))
    }

    /// Receives every transaction of a batch inside one savepoint. Unguarded (the common
    /// path), a transaction has no savepoint of its own: if one is rejected after it started
    /// writing, the whole batch is rolled back, the in-memory state reloaded, and `None` tells
    /// the caller to run the batch again guarded (one savepoint per transaction).
    fn receive_all(&mut self, txns: &[Txn], guard: bool) -> rusqlite::Result<Option<Batch>> {
        let mark = self.docs.touched_mark();
        self.conn.execute_batch("SAVEPOINT batch")?;
        let mut batch = Batch::default();
        for txn in txns {
            if !self.receive(txn, &mut batch, guard)? {
                self.conn
                    .execute_batch("ROLLBACK TO batch; RELEASE batch")?;
                self.docs.evict_touched_since(mark);
                self.resync_counters();
                return Ok(None);
            }
        }
        self.conn.execute_batch("RELEASE batch")?;
        Ok(Some(batch))
    }

    /// Receives one transaction; false when unguarded and it failed after writing.
    fn receive(&mut self, txn: &Txn, batch: &mut Batch, guard: bool) -> rusqlite::Result<bool> {
        if let Err(reason) = check_remote_txn(txn) {
            reject(batch, txn.id, reason);
            return Ok(true);
        }
        if self.summary.contains(&txn.id) {
            batch.report.duplicates += 1;
            return Ok(true);
        }
        if !self.replicates(txn) {
            // Partial replica: held (so peers do not resend it), neither stored nor shown.
            batch.report.filtered += 1;
            self.summary.insert(txn.id);
            batch.dirty.insert(txn.id.origin);
            return Ok(true);
        }
        let outcome = if guard {
            self.guarded(txn, true)?
        } else {
            match self.unguarded(txn)? {
                Some(outcome) => outcome,
                None => return Ok(false),
            }
        };
        match outcome {
            Outcome::Applied(changes, lent) => {
                self.store_received(txn, &lent)?;
                batch.report.applied += 1;
                batch.txns.push(txn.id);
                batch.changes.extend(changes);
            }
            Outcome::Parked => {
                let bytes = txn.encode();
                rows::insert_txn(&self.conn, txn.id, &bytes, false)?;
                self.conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO parked (origin, seq, bytes) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![&txn.id.origin.0[..], txn.id.seq as i64, bytes])?;
                self.parked += 1;
                batch.report.parked += 1;
            }
            Outcome::Rejected(reason) => {
                reject(batch, txn.id, reason);
                return Ok(true);
            }
        }
        self.summary.insert(txn.id);
        batch.dirty.insert(txn.id.origin);
        Ok(true)
    }

    /// True when this replica keeps `txn`: no replication filter, or some op touches a
    /// replicated collection (a transaction is kept whole, never split).
    fn replicates(&self, txn: &Txn) -> bool {
        match &self.replicate {
            None => true,
            Some(set) => txn.ops.iter().any(|op| set.contains(op.collection())),
        }
    }

    /// Retries parked transactions until a pass makes no progress.
    fn unpark(&mut self, batch: &mut Batch) -> rusqlite::Result<()> {
        loop {
            let mut progress = false;
            for (id, bytes) in self.load_parked()? {
                let outcome = match Txn::decode(&bytes) {
                    // Stored already (when parked), whole: lends nothing.
                    Ok(txn) => self.guarded(&txn, false)?,
                    Err(e) => Outcome::Rejected(e.to_string()),
                };
                match outcome {
                    Outcome::Parked => continue,
                    Outcome::Applied(changes, _) => {
                        progress = true;
                        batch.report.unparked += 1;
                        batch.txns.push(id);
                        batch.changes.extend(changes);
                    }
                    Outcome::Rejected(reason) => {
                        tracing::warn!(txn = ?id, %reason, "dropping a parked transaction that cannot be applied");
                    }
                }
                self.conn
                    .prepare_cached("DELETE FROM parked WHERE origin = ?1 AND seq = ?2")?
                    .execute(params![&id.origin.0[..], id.seq as i64])?;
                self.parked = self.parked.saturating_sub(1);
            }
            if !progress {
                return Ok(());
            }
        }
    }

    fn load_parked(&self) -> rusqlite::Result<Vec<(TxnId, Vec<u8>)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT origin, seq, bytes FROM parked ORDER BY origin, seq")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (origin, seq, bytes) = row?;
            if let Some(origin) = ReplicaId::from_slice(&origin) {
                out.push((
                    TxnId {
                        origin,
                        seq: seq as Seq,
                    },
                    bytes,
                ));
            }
        }
        Ok(out)
    }

    /// Checks and applies one transaction inside its own savepoint; new `docs` rows lend their
    /// first change to it when `lend` (it is not stored yet).
    fn guarded(&mut self, txn: &Txn, lend: bool) -> rusqlite::Result<Outcome> {
        let mark = self.docs.touched_mark();
        self.conn.execute_batch("SAVEPOINT txn")?;
        self.docs.widen(txn.ops.len());
        let outcome = self.check(txn).and_then(|verdict| match verdict {
            Verdict::Park => Ok(Outcome::Parked),
            Verdict::Reject(reason) => Ok(Outcome::Rejected(reason)),
            Verdict::Ready(changes) => Ok(match self.apply_ops(txn, changes, lend)? {
                Ok((rows, lent)) => Outcome::Applied(rows, lent),
                Err(reason) => Outcome::Rejected(reason),
            }),
        });
        self.docs.narrow();
        let outcome = outcome?;
        if let Outcome::Rejected(_) = outcome {
            self.conn.execute_batch("ROLLBACK TO txn; RELEASE txn")?;
            self.docs.evict_touched_since(mark);
        } else {
            self.conn.execute_batch("RELEASE txn")?;
        }
        Ok(outcome)
    }

    /// Checks and applies one transaction without a savepoint of its own. Checking writes
    /// nothing, so a park or a rejection there needs no rollback; `None` when the transaction
    /// was rejected while applying (the caller rolls back the batch).
    fn unguarded(&mut self, txn: &Txn) -> rusqlite::Result<Option<Outcome>> {
        let mark = self.docs.touched_mark();
        self.docs.widen(txn.ops.len());
        let outcome = self.check(txn).and_then(|verdict| match verdict {
            Verdict::Park => Ok(Some(Outcome::Parked)),
            Verdict::Reject(reason) => {
                self.docs.evict_touched_since(mark);
                Ok(Some(Outcome::Rejected(reason)))
            }
            Verdict::Ready(changes) => Ok(match self.apply_ops(txn, changes, true)? {
                Ok((rows, lent)) => Some(Outcome::Applied(rows, lent)),
                Err(_) => None,
            }),
        });
        self.docs.narrow();
        outcome
    }

    /// Phase 1: check key types, decode changes and check their dependencies.
    fn check(&mut self, txn: &Txn) -> rusqlite::Result<Verdict> {
        if let Err(e) = check_keys(&self.schema, txn) {
            return Ok(Verdict::Reject(e.to_string()));
        }
        // Changes of earlier ops of this transaction, by record (a later op may depend on them);
        // searched only for a dependency the document lacks.
        let mut seen: Vec<(&str, &str, Incarnation, ChangeHash)> = Vec::new();
        let mut decoded = Vec::with_capacity(txn.ops.len());
        for op in &txn.ops {
            let Op::Doc {
                collection,
                id,
                incarnation,
                change,
            } = op
            else {
                decoded.push(None);
                continue;
            };
            let Some(state) = self.live_doc_state(collection, id, *incarnation)? else {
                decoded.push(None);
                continue;
            };
            let change = match decode_change(change) {
                Ok(c) => c,
                Err(reason) => return Ok(Verdict::Reject(reason)),
            };
            if let Err(reason) = check_actor(&change, txn.id.origin) {
                return Ok(Verdict::Reject(reason));
            }
            let earlier = |d: &ChangeHash| seen.contains(&(collection, id, *incarnation, *d));
            let missing = match state {
                // No records row: no document either (see `DocCache::entry_or_new`), so only
                // changes earlier in this transaction can be dependencies; nothing to load.
                None => !change.deps().iter().all(earlier),
                Some(_) => {
                    let key = DocKey {
                        collection: collection.clone(),
                        id: id.clone(),
                        incarnation: *incarnation,
                    };
                    // A storage error fails the batch (the caller may retry it); a state that
                    // does not decode rejects this transaction only.
                    let entry = match self.docs.entry_or_new(&self.conn, &key, false) {
                        Ok(e) => e,
                        Err(LoadError::Storage(e)) => return Err(e),
                        Err(LoadError::Corrupt(reason)) => {
                            let reason = format!("local state unreadable: {reason}");
                            return Ok(Verdict::Reject(reason));
                        }
                    };
                    let doc = entry.doc();
                    let have = |d: &ChangeHash| doc.get_change_by_hash(d).is_some() || earlier(d);
                    !change.deps().iter().all(have)
                }
            };
            if missing {
                return Ok(Verdict::Park);
            }
            seen.push((collection, id, *incarnation, change.hash()));
            decoded.push(Some(Checked { change, state }));
        }
        Ok(Verdict::Ready(decoded))
    }

    /// The record's state when a document op must be applied (its collection is a document
    /// collection here and its incarnation is not dead); `None` when it must not.
    fn live_doc_state(
        &self,
        collection: &str,
        id: &str,
        incarnation: Incarnation,
    ) -> rusqlite::Result<Option<Option<RecordState>>> {
        let kind = self.schema.collections.get(collection).map(|d| d.kind);
        if kind == Some(CollectionKind::Log) {
            tracing::warn!(
                collection,
                id,
                "document change for a log collection: held and relayed, not materialized"
            );
            return Ok(None);
        }
        let state = rows::record_state(&self.conn, collection, id)?;
        Ok((!state.is_some_and(|s| s.is_dead(incarnation))).then_some(state))
    }

    /// Phase 2: apply every op. `Err(reason)` rejects the transaction. With `lend`, a doc op
    /// that creates a `docs` row makes it lend its change to the transaction; the indices of
    /// those ops are returned with the record changes.
    fn apply_ops(
        &mut self,
        txn: &Txn,
        changes: Vec<Option<Checked>>,
        lend: bool,
    ) -> rusqlite::Result<Result<AppliedOps, String>> {
        let mut out = Vec::new();
        let mut lent = Vec::new();
        let lender = lend.then_some(txn.id);
        for (index, (op, change)) in txn.ops.iter().zip(changes).enumerate() {
            let result = match (op, change) {
                (
                    Op::Doc {
                        collection,
                        id,
                        incarnation,
                        change: bytes,
                    },
                    Some(Checked { change, state }),
                ) => {
                    let target = Target {
                        collection,
                        id,
                        incarnation: *incarnation,
                    };
                    // The state read while checking holds unless an earlier op of this
                    // transaction wrote the record.
                    let earlier = txn.ops[..index]
                        .iter()
                        .any(|o| o.collection() == *collection && o.record_id() == *id);
                    let state = match earlier {
                        false => state,
                        true => rows::record_state(&self.conn, collection, id)?,
                    };
                    self.apply_doc(target, state, change, bytes, lender)?
                        .map(|applied| {
                            if applied.lends {
                                lent.push(index);
                            }
                            applied.change
                        })
                }
                (Op::Doc { .. }, None) => Ok(None),
                (
                    Op::Delete {
                        collection,
                        id,
                        incarnation,
                    },
                    _,
                ) => Ok(self.apply_delete(collection, id, *incarnation)?),
                (
                    Op::Append {
                        collection,
                        id,
                        row,
                    },
                    _,
                ) => self.apply_append(collection, id, row, txn.id)?,
            };
            match result {
                Ok(Some(change)) => out.push(change),
                Ok(None) => {}
                Err(reason) => return Ok(Err(reason)),
            }
        }
        Ok(Ok((out, lent)))
    }

    /// Stores an applied transaction for relaying: packed, without the changes `docs` rows
    /// still lend (the ops at `lent`; a later op of the same transaction on the same record may
    /// have freed or rewritten such a row, and then its change stays in). A transaction that
    /// arrived with an empty change (an op never decoded: a dead incarnation, a log collection)
    /// is stored whole: relaying a packed one fills every empty change from a lending row.
    fn store_received(&self, txn: &Txn, lent: &[usize]) -> rusqlite::Result<()> {
        let arrived_empty = txn
            .ops
            .iter()
            .any(|op| matches!(op, Op::Doc { change, .. } if change.is_empty()));
        let lent = if arrived_empty { &[] } else { lent };
        let mut left_out = Vec::with_capacity(lent.len());
        for &index in lent {
            let Some(Op::Doc {
                collection,
                id,
                incarnation,
                ..
            }) = txn.ops.get(index)
            else {
                continue;
            };
            let later = txn.ops[index + 1..]
                .iter()
                .any(|o| o.collection() == collection && o.record_id() == id);
            if !later || lends_to(&self.conn, collection, id, *incarnation, txn.id)? {
                left_out.push(index);
            }
        }
        if left_out.is_empty() {
            return rows::insert_txn(&self.conn, txn.id, &txn.encode(), false);
        }
        let mut packed = txn.clone();
        for &index in &left_out {
            if let Some(Op::Doc { change, .. }) = packed.ops.get_mut(index) {
                change.clear();
            }
        }
        rows::insert_txn(&self.conn, txn.id, &packed.encode(), true)
    }

    /// Applies one decoded document change whose dependencies are present.
    fn apply_doc(
        &mut self,
        target: Target<'_>,
        state: Option<RecordState>,
        change: Change,
        bytes: &[u8],
        lender: Option<TxnId>,
    ) -> rusqlite::Result<Result<DocApplied, String>> {
        let Target {
            collection,
            id,
            incarnation,
        } = target;
        if state.is_some_and(|s| s.is_dead(incarnation)) {
            return Ok(Ok(DocApplied::default()));
        }
        let schema = Arc::clone(&self.schema);
        let def = def_or_default(&schema, collection);
        let key = DocKey {
            collection: collection.to_owned(),
            id: id.to_owned(),
            incarnation,
        };
        let rowversion = self.next_rowversion();
        let fresh = match state {
            None => first_change::materialize(&change, &def),
            Some(_) => None,
        };
        // `stored`: whether the new `docs` row lends the change, once it is written (the fast
        // path writes it below, from the row's text).
        let (merged, stored) = match fresh {
            Some(merged) => {
                if let Err(e) = def.check_row(collection, &merged) {
                    return Ok(Err(e.to_string()));
                }
                // No records row, so no docs row and no cached document (see
                // `DocCache::entry_or_new`); evicted anyway, the row is the truth from now on.
                self.docs.evict(&key);
                (merged, None)
            }
            None => {
                match self.apply_by_document(&key, state.is_none(), change, bytes, &def, lender)? {
                    Ok((merged, lends)) => (merged, Some(lends)),
                    Err(reason) => return Ok(Err(reason)),
                }
            }
        };
        let newer = state.is_none_or(|s| incarnation > s.incarnation);
        if let Some(s) = state.filter(|_| newer) {
            free_dead(&self.conn, collection, id, s.incarnation)?;
        }
        let json = with_pk(merged, &def, id);
        let text = rows::json_text(&json);
        let lends = match (stored, &json) {
            (Some(lends), _) => lends,
            (None, Value::Object(row)) => self.insert_fresh(&key, bytes, row, &def, lender)?,
            (None, _) => insert_first_change(&self.conn, &key, bytes, lender)?,
        };
        match state {
            // The live row at this incarnation: a plain UPDATE.
            Some(s) if !newer && !s.deleted => rows::update_live_record(
                &self.conn,
                collection,
                id,
                incarnation,
                &text,
                rowversion,
            )?,
            _ => rows::upsert_record(&self.conn, collection, id, incarnation, &text, rowversion)?,
        }
        let kind = if newer {
            ChangeKind::Insert
        } else {
            ChangeKind::Update
        };
        let change = RecordChange {
            collection: collection.to_owned(),
            id: id.to_owned(),
            kind,
            value: Some(json),
        };
        Ok(Ok(DocApplied {
            change: Some(change),
            lends,
        }))
    }

    /// Inserts the `docs` row of a new record materialized straight from its first change
    /// (`bytes`, whose row is `row`): derived from the row when it lends the change and
    /// re-encodes exactly (see `derived`), else the change as its state. Returns whether the
    /// row lends the change.
    fn insert_fresh(
        &self,
        key: &DocKey,
        bytes: &[u8],
        row: &serde_json::Map<String, Value>,
        def: &CollectionDef,
        lender: Option<TxnId>,
    ) -> rusqlite::Result<bool> {
        let Some(txn) = lender else {
            return insert_first_change(&self.conn, key, bytes, lender);
        };
        match derived::derive(def, &txn.origin, &key.id, row, bytes) {
            Some(marker) => {
                insert_derived(&self.conn, key, &marker, bytes.len(), txn)?;
                Ok(true)
            }
            None => insert_first_change(&self.conn, key, bytes, lender),
        }
    }

    /// Applies `change` to the record's document (cached, loaded or new) and stores it;
    /// returns the materialized row and whether a new `docs` row lends the change.
    fn apply_by_document(
        &mut self,
        key: &DocKey,
        unstored: bool,
        change: Change,
        bytes: &[u8],
        def: &CollectionDef,
        lender: Option<TxnId>,
    ) -> rusqlite::Result<Result<Materialized, String>> {
        // `check` loaded the document of an existing record (its first use in this command).
        let entry = match self.docs.entry_again(&self.conn, key, unstored) {
            Ok(e) => e,
            Err(LoadError::Storage(e)) => return Err(e),
            Err(LoadError::Corrupt(reason)) => return Ok(Err(reason)),
        };
        let merged = match apply_and_materialize(entry.doc_mut(), change, def) {
            Ok(m) => m,
            Err(reason) => return Ok(Err(reason)),
        };
        if let Err(e) = def.check_row(&key.collection, &merged) {
            return Ok(Err(e.to_string()));
        }
        let lends = store_change(&self.conn, key, entry, bytes, lender)?;
        Ok(Ok((merged, lends)))
    }

    fn apply_delete(
        &mut self,
        collection: &str,
        id: &str,
        incarnation: Incarnation,
    ) -> rusqlite::Result<Option<RecordChange>> {
        let state = rows::record_state(&self.conn, collection, id)?;
        let was_live = match state {
            Some(s) if s.is_dead(incarnation) => return Ok(None),
            Some(s) => !s.deleted,
            None => false,
        };
        let schema = Arc::clone(&self.schema);
        let def = def_or_default(&schema, collection);
        let stub = with_pk(serde_json::Map::new(), &def, id).to_string();
        let rowversion = self.next_rowversion();
        // Freed first: a derived state re-encodes its change from the row of its incarnation,
        // which the tombstone may move on.
        free_dead(&self.conn, collection, id, incarnation)?;
        rows::tombstone(&self.conn, collection, id, incarnation, &stub, rowversion)?;
        self.docs.evict(&DocKey {
            collection: collection.to_owned(),
            id: id.to_owned(),
            incarnation,
        });
        let kind = ChangeKind::Delete;
        Ok(was_live.then(|| RecordChange {
            collection: collection.to_owned(),
            id: id.to_owned(),
            kind,
            value: None,
        }))
    }

    fn apply_append(
        &mut self,
        collection: &str,
        id: &str,
        row: &str,
        txn: TxnId,
    ) -> rusqlite::Result<Result<Option<RecordChange>, String>> {
        let mut fields = match serde_json::from_str(row) {
            Ok(Value::Object(fields)) => fields,
            _ => {
                return Ok(Err(format!(
                    "log row {collection}/{id} is not a JSON object"
                )));
            }
        };
        let def = self.schema.collections.get(collection);
        if def.is_some_and(|d| d.kind == CollectionKind::Document) {
            tracing::warn!(
                collection,
                id,
                "log row for a document collection: held and relayed, not materialized"
            );
            return Ok(Ok(None));
        }
        let mut retyped = false;
        if let Some(def) = def {
            let key = fields.remove(&def.primary_key);
            if let Err(e) = def.check_row(collection, &fields) {
                return Ok(Err(e.to_string()));
            }
            // The id was checked with the other ops' keys. The row shows the op's id as its
            // key, as the bridge does: a replica on an older schema may have written a typed
            // key untyped (`"42"`), and a hostile one a body whose key is another row's (found
            // by the `bridge_txn` fuzz target: the node showed the body's key, Postgres the
            // op's).
            let shown = def.key_value(id);
            retyped = key.as_ref() != Some(&shown);
            fields.insert(def.primary_key.clone(), shown);
        }
        let value = Value::Object(fields);
        let text = retyped.then(|| rows::json_text(&value));
        let row = text.as_deref().unwrap_or(row);
        let rowversion = self.next_rowversion();
        let kind = match rows::insert_log_row(&self.conn, collection, id, txn, row, rowversion)? {
            LogInsert::Inserted => ChangeKind::Append,
            LogInsert::Replaced => ChangeKind::Update,
            LogInsert::Kept => return Ok(Ok(None)),
        };
        Ok(Ok(Some(RecordChange {
            collection: collection.to_owned(),
            id: id.to_owned(),
            kind,
            value: Some(value),
        })))
    }
}

/// `Schema::collection_or_default` without cloning a declared definition.
fn def_or_default<'s>(schema: &'s Schema, collection: &str) -> Cow<'s, CollectionDef> {
    match schema.collections.get(collection) {
        Some(def) => Cow::Borrowed(def),
        None => Cow::Owned(CollectionDef::default()),
    }
}

/// Checks the id of every op of a collection with a declared key type.
fn check_keys(schema: &Schema, txn: &Txn) -> Result<(), crate::schema::TypeError> {
    for op in &txn.ops {
        if let Some(def) = schema.collections.get(op.collection()) {
            def.check_key(op.collection(), op.record_id())?;
        }
    }
    Ok(())
}

fn reject(batch: &mut Batch, id: TxnId, reason: String) {
    tracing::warn!(txn = ?id, %reason, "rejected a remote transaction");
    batch.report.rejected.push((id, reason));
}

/// Checks what the store relies on beyond [`Txn::validate`]: a sequence number that fits SQL's
/// signed 64 bits and valid collection names. Every replica that receives a peer's transactions
/// (the central bridge too) must refuse exactly what this refuses, or they never converge.
pub fn check_remote_txn(txn: &Txn) -> Result<(), String> {
    txn.validate().map_err(|e| e.to_string())?;
    if txn.id.seq > i64::MAX as Seq {
        return Err("sequence number out of range".into());
    }
    for op in &txn.ops {
        validate_name("collection", op.collection()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A change must be written by its transaction's origin: every replica writes its changes as
/// the actor derived from its replica id. A change under another replica's actor could take
/// sequence numbers that replica uses for its own changes of the same record, and then whichever
/// of the two a replica received first would make it refuse the other — for ever, and
/// differently on different replicas.
fn check_actor(change: &Change, origin: ReplicaId) -> Result<(), String> {
    let expected = doc::actor(&origin);
    if *change.actor_id() == expected {
        return Ok(());
    }
    Err(format!(
        "change written by actor {} in a transaction of origin {}",
        change.actor_id(),
        expected
    ))
}

/// Decodes one change; malformed bytes or a panic inside Automerge become an error.
fn decode_change(bytes: &[u8]) -> Result<Change, String> {
    match catch_unwind(|| Change::try_from(bytes)) {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("malformed change: {e}")),
        Err(_) => Err("automerge panicked decoding a change".into()),
    }
}

/// Applies a change whose dependencies are present and materializes the record. A panic inside
/// Automerge becomes an error (the caller evicts the document).
fn apply_and_materialize(
    doc: &mut automerge::Automerge,
    change: Change,
    def: &CollectionDef,
) -> Result<serde_json::Map<String, Value>, String> {
    let hash = change.hash();
    let result = catch_unwind(AssertUnwindSafe(|| {
        doc.apply_changes([change])
            .map_err(|e| format!("cannot apply change: {e}"))?;
        if doc.get_change_by_hash(&hash).is_none() {
            return Err("change was queued despite its dependencies being present".to_owned());
        }
        Ok(doc::materialize(doc, def))
    }));
    result.unwrap_or_else(|_| Err("automerge panicked applying a change".into()))
}

#[cfg(test)]
#[path = "remote_tests.rs"]
pub(super) mod tests;
