//! Local writes: validate a batch of [`WriteOp`]s, turn each into one replicated [`Op`], and
//! commit them as one [`Txn`] with the next sequence number of this replica.
//!
//! Stateless checks (names, kinds, JSON shape, ids and key types, declared field types, policy
//! value types, sizes) run first for every op; state-dependent checks (deleted records, existing
//! log ids, max/min type mismatch) run while applying, where the schema's defaults are added to
//! a write that creates a record. Either way the writer's savepoint rolls the whole transaction
//! back on the first error, so nothing is written.

use std::borrow::Cow;
use std::sync::Arc;

use automerge::Automerge;
use serde_json::{Map, Value};

use super::derived;
use super::doc::{self, DocError, MAX_DEPTH, json_type};
use super::docs::{DocKey, free_dead, insert_derived, lends_to, store_change};
use super::error::WriteError;
use super::rows::{self, RecordState, with_pk};
use super::types::{ChangeKind, Committed, RecordChange, StoreEvent, WriteOp};
use super::writer::Writer;
use crate::change::{MAX_TXN_BYTES, MAX_TXN_OPS, Op, Txn};
use crate::ids::{ReplicaId, TxnId, new_record_id};
use crate::schema::{CollectionDef, CollectionKind, FieldType, Schema, TypeError, validate_name};

/// Longest accepted record id, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// A validated op; `def` borrows the schema's definition (cloning one per op cost a dozen
/// allocations).
enum Planned<'s> {
    Put {
        collection: String,
        def: Cow<'s, CollectionDef>,
        id: String,
        fields: Map<String, Value>,
        existing: Existing,
    },
    Increment {
        collection: String,
        def: Cow<'s, CollectionDef>,
        id: String,
        field: String,
        by: i64,
    },
    Delete {
        collection: String,
        def: Cow<'s, CollectionDef>,
        id: String,
    },
    Append {
        collection: String,
        id: String,
        row: Value,
    },
}

/// What a put does to a record that exists (live or deleted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Existing {
    /// Merge into a live record; refuse a deleted one (`Put`, `Increment`).
    Merge,
    /// Merge into a live record; re-create a deleted one (`Put` with `recreate`).
    Recreate,
    /// Refuse a live record; re-create a deleted one (`Insert`).
    Refuse,
    /// Merge into a live record; refuse an absent or deleted one with `NotFound` (`Update`).
    Live,
}

impl Existing {
    fn of_put(recreate: bool) -> Self {
        match recreate {
            true => Existing::Recreate,
            false => Existing::Merge,
        }
    }
}

/// What a local write does to a record's document.
enum DocWrite {
    /// Merge-patch these fields.
    Put(Map<String, Value>),
    /// Add `by` to counter `field`, after putting `defaults` (when it creates the record).
    Increment {
        field: String,
        by: i64,
        defaults: Map<String, Value>,
    },
}

impl DocWrite {
    fn apply(
        &self,
        doc: &mut Automerge,
        def: &CollectionDef,
        replica: &ReplicaId,
    ) -> Result<Vec<u8>, DocError> {
        match self {
            DocWrite::Put(fields) => doc::put_fields(doc, def, fields, replica),
            DocWrite::Increment {
                field,
                by,
                defaults,
            } if defaults.is_empty() => doc::increment(doc, field, *by, replica),
            DocWrite::Increment {
                field,
                by,
                defaults,
            } => doc::increment_creating(doc, Some((def, defaults)), field, *by, replica),
        }
    }

    /// The record's row when its document was empty before this write: exactly the fields
    /// written, because every policy shows a lone value as written (a counter part of `v` sums to
    /// `v`, max/min/priority of one value is that value, text shows its string, nested objects
    /// and lists round-trip). This skips reading the new document back, a measurable share of an
    /// insert; debug builds (every test) check it against the materialized document.
    fn into_fresh_row(self) -> Map<String, Value> {
        match self {
            DocWrite::Put(fields) => fields,
            DocWrite::Increment {
                field,
                by,
                mut defaults,
            } => {
                // A counter's default is its starting value (the increment did not overflow).
                let base = defaults.get(&field).and_then(Value::as_i64).unwrap_or(0);
                defaults.insert(field, Value::from(base.saturating_add(by)));
                defaults
            }
        }
    }
}

/// The record a document write goes to.
struct Target<'d> {
    collection: String,
    def: &'d CollectionDef,
    id: String,
    incarnation: u32,
    kind: ChangeKind,
}

/// The ops of a transaction being built. Appends are recorded without their rows (the rows are
/// in `log_rows`; the stored transaction is "packed", see `migrations`); `omitted` counts the
/// bytes the rows add to the full encoding, so the size limit holds for the transaction as relayed.
/// `lent` lists the doc ops whose change created a `docs` row that lends it (see `docs`): the
/// stored transaction leaves those changes out too, if the rows still lend them at the end.
#[derive(Default)]
pub(super) struct Built {
    ops: Vec<Op>,
    omitted: usize,
    lent: Vec<usize>,
}

/// How far a [`Built`] had grown, to cut it back when one caller's ops are rolled back.
#[derive(Clone, Copy)]
pub(super) struct BuiltMark {
    ops: usize,
    omitted: usize,
    lent: usize,
}

impl Built {
    /// Its size now.
    pub(super) fn mark(&self) -> BuiltMark {
        BuiltMark {
            ops: self.ops.len(),
            omitted: self.omitted,
            lent: self.lent.len(),
        }
    }

    /// Forgets everything added after `mark`.
    pub(super) fn cut_back(&mut self, mark: BuiltMark) {
        self.ops.truncate(mark.ops);
        self.omitted = mark.omitted;
        self.lent.truncate(mark.lent);
    }

    /// True when no op was added.
    pub(super) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Bytes a string of `len` bytes adds to a postcard encoding over an empty one (its bytes plus
/// the longer varint length prefix).
fn omitted_len(len: usize) -> usize {
    let mut prefix = 1;
    let mut rest = len >> 7;
    while rest > 0 {
        prefix += 1;
        rest >>= 7;
    }
    len + prefix - 1
}

impl Writer {
    /// Runs one local transaction (inside the writer's savepoint).
    pub fn transact(
        &mut self,
        ops: Vec<WriteOp>,
    ) -> Result<(Committed, Option<StoreEvent>), WriteError> {
        let id = self.next_txn_id();
        let mut out = Built::default();
        let changes = self.run_ops(ops, id, &mut out)?;
        self.record_built(id, out)?;
        let event = self.has_subscribers().then(|| StoreEvent::Committed {
            txns: Arc::from([id]),
            local: true,
            changes: changes.as_slice().into(),
        });
        Ok((Committed { txn: id, changes }, event))
    }

    /// The id the next local transaction takes.
    pub(super) fn next_txn_id(&self) -> TxnId {
        TxnId {
            origin: self.replica,
            seq: self.summary.next_seq(&self.replica),
        }
    }

    /// Validates and writes one caller's `ops` as part of transaction `id`, adding its ops to
    /// `out`. On an error the caller rolls back what it wrote (and `out`, see [`Built::mark`]).
    pub(super) fn run_ops(
        &mut self,
        ops: Vec<WriteOp>,
        id: TxnId,
        out: &mut Built,
    ) -> Result<Vec<RecordChange>, WriteError> {
        if ops.is_empty() {
            return Err(WriteError::Empty);
        }
        if ops.len() > MAX_TXN_OPS {
            return Err(WriteError::TooLarge {
                what: format!("{} ops, limit {MAX_TXN_OPS}", ops.len()),
            });
        }
        let schema = Arc::clone(&self.schema);
        let plans = ops
            .into_iter()
            .map(|op| plan(&schema, op))
            .collect::<Result<Vec<_>, _>>()?;
        out.ops.reserve(plans.len());
        let mut changes = Vec::with_capacity(plans.len());
        for p in plans {
            changes.push(self.exec(p, id, out)?);
        }
        Ok(changes)
    }

    /// Stores the transaction `id` built in `out` (packed, see [`Self::record_local`]) and marks
    /// it held.
    pub(super) fn record_built(&mut self, id: TxnId, out: Built) -> Result<(), WriteError> {
        let Built { ops, omitted, lent } = out;
        let mut txn = Txn {
            id,
            timestamp_ms: super::now_ms(),
            schema_version: self.schema.version,
            ops,
        };
        let omitted = omitted.saturating_add(self.leave_out_lent(&mut txn, &lent)?);
        self.record_local(&txn, omitted)
    }

    /// Empties the changes of `txn` that `docs` rows still lend (see `docs`); returns the bytes
    /// they add to its full encoding.
    fn leave_out_lent(&self, txn: &mut Txn, lent: &[usize]) -> Result<usize, WriteError> {
        let mut omitted = 0usize;
        for &index in lent {
            if let Some(Op::Doc {
                collection,
                id,
                incarnation,
                change,
            }) = txn.ops.get_mut(index)
                && lends_to(&self.conn, collection, id, *incarnation, txn.id)?
            {
                omitted = omitted.saturating_add(omitted_len(change.len()));
                change.clear();
            }
        }
        Ok(omitted)
    }

    /// Stores the encoded transaction (packed: its appends' rows and lent changes left out,
    /// `omitted` bytes) and marks it held.
    fn record_local(&mut self, txn: &Txn, omitted: usize) -> Result<(), WriteError> {
        let bytes = txn.encode();
        let full = bytes.len().saturating_add(omitted);
        if full > MAX_TXN_BYTES {
            return Err(WriteError::TooLarge {
                what: format!("{full} bytes encoded, limit {MAX_TXN_BYTES}"),
            });
        }
        rows::insert_txn(&self.conn, txn.id, &bytes, omitted > 0)?;
        let mut set = self.summary.get(&self.replica).cloned().unwrap_or_default();
        set.insert(txn.id.seq);
        rows::save_held(&self.conn, &self.replica, &set)?;
        self.summary.set(self.replica, set);
        Ok(())
    }

    fn exec(
        &mut self,
        p: Planned<'_>,
        txn: TxnId,
        out: &mut Built,
    ) -> Result<RecordChange, WriteError> {
        match p {
            Planned::Put {
                collection,
                def,
                id,
                mut fields,
                existing,
            } => {
                let target = self.target(collection, &def, id, existing)?;
                for (field, value) in creation_defaults(&def, target.kind) {
                    fields.entry(field).or_insert(value);
                }
                self.write_doc(target, DocWrite::Put(fields), txn, out)
            }
            Planned::Increment {
                collection,
                def,
                id,
                field,
                by,
            } => {
                let target = self.target(collection, &def, id, Existing::Merge)?;
                let defaults = creation_defaults(&def, target.kind);
                let write = DocWrite::Increment {
                    field,
                    by,
                    defaults,
                };
                self.write_doc(target, write, txn, out)
            }
            Planned::Delete {
                collection,
                def,
                id,
            } => self.delete(collection, &def, id, &mut out.ops),
            Planned::Append {
                collection,
                id,
                row,
            } => self.append(collection, id, row, txn, out),
        }
    }

    /// The incarnation of record `id` a put or increment goes to (see [`target_incarnation`]).
    fn target<'d>(
        &self,
        collection: String,
        def: &'d CollectionDef,
        id: String,
        existing: Existing,
    ) -> Result<Target<'d>, WriteError> {
        let state = rows::record_state(&self.conn, &collection, &id)?;
        let (incarnation, kind) = target_incarnation(state, existing, &collection, &id)?;
        Ok(Target {
            collection,
            def,
            id,
            incarnation,
            kind,
        })
    }

    /// Applies one local change to a record's document and materializes the row.
    fn write_doc(
        &mut self,
        target: Target<'_>,
        write: DocWrite,
        txn: TxnId,
        out: &mut Built,
    ) -> Result<RecordChange, WriteError> {
        let Target {
            collection,
            def,
            id,
            incarnation,
            kind,
        } = target;
        let key = DocKey {
            collection,
            id,
            incarnation,
        };
        let rowversion = self.next_rowversion();
        // Incarnation 1 inserted: the record had no row at all (`target_incarnation`).
        let unstored = kind == ChangeKind::Insert && incarnation == 1;
        let entry = self.docs.entry_or_new(&self.conn, &key, unstored)?;
        let fresh = entry.doc().get_heads().is_empty();
        let plain = fresh && matches!(write, DocWrite::Put(_));
        let (change, row) = match write {
            // A put to a record with history: decided and materialized from the cached view.
            DocWrite::Put(fields) if !fresh => entry
                .put_fields(def, &fields, &self.replica)
                .map_err(doc_error)?,
            write => {
                let change = write
                    .apply(entry.doc_mut(), def, &self.replica)
                    .map_err(doc_error)?;
                let row = match fresh {
                    true => write.into_fresh_row(),
                    false => doc::materialize(entry.doc(), def),
                };
                (change, row)
            }
        };
        debug_assert_eq!(
            row,
            doc::materialize(entry.doc(), def),
            "row of {}/{}",
            key.collection,
            key.id
        );
        let json = with_pk(row, def, &key.id);
        let text = rows::json_text(&json);
        // A new record's plain first change is derived from its row when it re-encodes exactly
        // (see `derived`); its document leaves the cache (a later change reloads it from the
        // row, which materializes the state).
        let marker = match (plain, &json) {
            (true, Value::Object(row)) => {
                derived::derive(def, &self.replica, &key.id, row, &change)
            }
            _ => None,
        };
        let lends = match marker {
            Some(marker) => {
                insert_derived(&self.conn, &key, &marker, change.len(), txn)?;
                self.docs.evict(&key);
                true
            }
            None => store_change(&self.conn, &key, entry, &change, Some(txn))?,
        };
        if lends {
            out.lent.push(out.ops.len());
        }
        let DocKey { collection, id, .. } = key;
        if kind == ChangeKind::Insert && incarnation > 1 {
            free_dead(&self.conn, &collection, &id, incarnation - 1)?;
            // The re-created record goes to the end of the insertion order (`Query`).
            rows::drop_tombstone(&self.conn, &collection, &id)?;
        }
        match kind {
            ChangeKind::Update => rows::update_live_record(
                &self.conn,
                &collection,
                &id,
                incarnation,
                &text,
                rowversion,
            )?,
            _ => rows::upsert_record(&self.conn, &collection, &id, incarnation, &text, rowversion)?,
        }
        out.ops.push(Op::Doc {
            collection: collection.clone(),
            id: id.clone(),
            incarnation,
            change,
        });
        Ok(RecordChange {
            collection,
            id,
            kind,
            value: Some(json),
        })
    }

    fn delete(
        &mut self,
        collection: String,
        def: &CollectionDef,
        id: String,
        out: &mut Vec<Op>,
    ) -> Result<RecordChange, WriteError> {
        let state = rows::record_state(&self.conn, &collection, &id)?;
        let Some(RecordState {
            incarnation,
            deleted: false,
        }) = state
        else {
            return Err(WriteError::NotFound { collection, id });
        };
        let stub = with_pk(Map::new(), def, &id).to_string();
        let rowversion = self.next_rowversion();
        // Freed first: a derived state re-encodes its change from the live row.
        free_dead(&self.conn, &collection, &id, incarnation)?;
        rows::tombstone(&self.conn, &collection, &id, incarnation, &stub, rowversion)?;
        self.docs.evict(&DocKey {
            collection: collection.clone(),
            id: id.clone(),
            incarnation,
        });
        out.push(Op::Delete {
            collection: collection.clone(),
            id: id.clone(),
            incarnation,
        });
        Ok(RecordChange {
            collection,
            id,
            kind: ChangeKind::Delete,
            value: None,
        })
    }

    fn append(
        &mut self,
        collection: String,
        id: String,
        row: Value,
        txn: TxnId,
        out: &mut Built,
    ) -> Result<RecordChange, WriteError> {
        let text = rows::json_text(&row);
        let rowversion = self.next_rowversion();
        if !rows::insert_new_log_row(&self.conn, &collection, &id, txn, &text, rowversion)? {
            return Err(WriteError::Exists { collection, id });
        }
        out.omitted = out.omitted.saturating_add(omitted_len(text.len()));
        out.ops.push(Op::Append {
            collection: collection.clone(),
            id: id.clone(),
            row: String::new(),
        });
        Ok(RecordChange {
            collection,
            id,
            kind: ChangeKind::Append,
            value: Some(row),
        })
    }
}

/// The incarnation a write goes to, and whether the row appears (Insert) or changes (Update).
fn target_incarnation(
    state: Option<RecordState>,
    existing: Existing,
    collection: &str,
    id: &str,
) -> Result<(u32, ChangeKind), WriteError> {
    let not_found = || WriteError::NotFound {
        collection: collection.to_owned(),
        id: id.to_owned(),
    };
    match state {
        None if existing == Existing::Live => Err(not_found()),
        None => Ok((1, ChangeKind::Insert)),
        Some(s) if !s.deleted && existing == Existing::Refuse => Err(WriteError::Duplicate {
            collection: collection.to_owned(),
            id: id.to_owned(),
        }),
        Some(s) if !s.deleted => Ok((s.incarnation, ChangeKind::Update)),
        Some(_) if existing == Existing::Live => Err(not_found()),
        Some(s) if existing != Existing::Merge => match s.incarnation.checked_add(1) {
            Some(next) => Ok((next, ChangeKind::Insert)),
            None => Err(WriteError::InvalidId {
                collection: collection.to_owned(),
                reason: "re-created too many times".into(),
            }),
        },
        Some(_) => Err(WriteError::Deleted {
            collection: collection.to_owned(),
            id: id.to_owned(),
        }),
    }
}

/// The declared defaults, when a write of `kind` creates the record (else none).
fn creation_defaults(def: &CollectionDef, kind: ChangeKind) -> Map<String, Value> {
    if kind != ChangeKind::Insert {
        return Map::new();
    }
    def.defaults()
        .map(|(field, value)| (field.clone(), value.clone()))
        .collect()
}

fn doc_error(e: DocError) -> WriteError {
    match e {
        DocError::Policy { field, reason } => WriteError::PolicyViolation { field, reason },
        DocError::Automerge(m) => WriteError::Corrupt(m),
    }
}

/// Stateless validation of one op.
fn plan(schema: &Schema, op: WriteOp) -> Result<Planned<'_>, WriteError> {
    match op {
        WriteOp::Put {
            collection,
            value,
            recreate,
        } => plan_put(schema, collection, value, Existing::of_put(recreate)),
        WriteOp::Insert { collection, value } => {
            plan_put(schema, collection, value, Existing::Refuse)
        }
        WriteOp::Update { collection, value } => {
            plan_put(schema, collection, value, Existing::Live)
        }
        WriteOp::Increment {
            collection,
            id,
            field,
            by,
        } => {
            let def = collection_def(schema, &collection, CollectionKind::Document, "increment")?;
            check_id(&collection, &id)?;
            def.check_key(&collection, &id)?;
            validate_name("field", &field)?;
            // Without a strict schema, undeclared fields become counters on first increment
            // (counter parts are self-describing); otherwise the field must be declared `counter`.
            let dynamic = !schema.strict && !def.fields.contains_key(&field);
            if !dynamic && *def.policy(&field) != crate::schema::MergePolicy::Counter {
                let reason = format!(
                    "increment needs a counter field, but {collection}.{field} merges as {}; declare it with merge = \"counter\" in the schema",
                    def.policy(&field).name()
                );
                return Err(WriteError::PolicyViolation { field, reason });
            }
            Ok(Planned::Increment {
                collection,
                def,
                id,
                field,
                by,
            })
        }
        WriteOp::Delete { collection, id } => {
            let def = collection_def(schema, &collection, CollectionKind::Document, "delete")?;
            check_id(&collection, &id)?;
            def.check_key(&collection, &id)?;
            Ok(Planned::Delete {
                collection,
                def,
                id,
            })
        }
        WriteOp::Append { collection, value } => {
            let def = collection_def(schema, &collection, CollectionKind::Log, "append")?;
            let (id, mut fields) = split_record(&collection, &def, value, false)?;
            for (field, value) in creation_defaults(&def, ChangeKind::Insert) {
                fields.entry(field).or_insert(value);
            }
            let row = with_pk(fields, &def, &id);
            Ok(Planned::Append {
                collection,
                id,
                row,
            })
        }
    }
}

/// Validates a put or an insert.
fn plan_put(
    schema: &Schema,
    collection: String,
    value: Value,
    existing: Existing,
) -> Result<Planned<'_>, WriteError> {
    let op = match existing {
        Existing::Refuse => "insert",
        Existing::Live => "update",
        Existing::Merge | Existing::Recreate => "put",
    };
    let def = collection_def(schema, &collection, CollectionKind::Document, op)?;
    let (id, fields) = split_record(&collection, &def, value, true)?;
    Ok(Planned::Put {
        collection,
        def,
        id,
        fields,
        existing,
    })
}

/// The definition for a local write, refusing undeclared collections (strict) and wrong kinds.
fn collection_def<'s>(
    schema: &'s Schema,
    collection: &str,
    want: CollectionKind,
    op: &'static str,
) -> Result<Cow<'s, CollectionDef>, WriteError> {
    validate_name("collection", collection)?;
    // As `Schema::collection`, without cloning a declared definition.
    let def = match schema.collections.get(collection) {
        Some(def) => Cow::Borrowed(def),
        // An undeclared collection is a document collection: its kind is not replicated state,
        // so a first append cannot make it a log (another replica may put to it meanwhile).
        None if !schema.strict && want == CollectionKind::Log => {
            return Err(WriteError::UndeclaredLog(collection.to_owned()));
        }
        None if !schema.strict => Cow::Owned(CollectionDef::default()),
        None => return Err(WriteError::UnknownCollection(collection.to_owned())),
    };
    if def.kind == want {
        return Ok(def);
    }
    let (kind, hint) = match def.kind {
        CollectionKind::Log => ("log", "log rows are immutable; use append"),
        CollectionKind::Document => ("document", "use put, increment or delete"),
    };
    Err(WriteError::WrongKind {
        collection: collection.to_owned(),
        kind,
        op,
        hint,
    })
}

/// Splits a record into its id (given or generated) and its other fields, checking the key,
/// names, nesting, declared types and (for documents) each field's policy.
fn split_record(
    collection: &str,
    def: &CollectionDef,
    value: Value,
    document: bool,
) -> Result<(String, Map<String, Value>), WriteError> {
    let Value::Object(mut fields) = value else {
        return Err(WriteError::NotAnObject {
            collection: collection.to_owned(),
            got: json_type(&value),
        });
    };
    let id = match (def.key_type, fields.remove(&def.primary_key)) {
        (Some(FieldType::Integer), None | Some(Value::Null)) => {
            let reason = format!(
                "integer keys are not generated; give the record its {:?}",
                def.primary_key
            );
            return Err(WriteError::InvalidId {
                collection: collection.to_owned(),
                reason,
            });
        }
        (_, None | Some(Value::Null)) => new_record_id(),
        (Some(ty), Some(key)) => typed_id(collection, def, ty, key)?,
        (None, Some(Value::String(s))) => s,
        (None, Some(Value::Number(n))) if n.is_i64() || n.is_u64() => n.to_string(),
        (None, Some(other)) => {
            let reason = format!(
                "primary key {:?} must be a string or an integer, got {}",
                def.primary_key,
                json_type(&other)
            );
            return Err(WriteError::InvalidId {
                collection: collection.to_owned(),
                reason,
            });
        }
    };
    check_id(collection, &id)?;
    for (field, v) in &fields {
        validate_name("field", field)?;
        if doc::json_depth(v) > MAX_DEPTH {
            return Err(WriteError::TooDeep {
                field: field.clone(),
                limit: MAX_DEPTH,
            });
        }
        if doc::has_nul(v) {
            return Err(WriteError::Nul {
                field: field.clone(),
            });
        }
        def.check_value(collection, field, v)?;
        if document {
            doc::check_policy(def.policy(field), field, v).map_err(doc_error)?;
        }
    }
    Ok((id, fields))
}

/// The id of a typed key: the decimal string of an `integer`, the string of a `text` or a
/// canonical (lowercase) `uuid`.
fn typed_id(
    collection: &str,
    def: &CollectionDef,
    ty: FieldType,
    key: Value,
) -> Result<String, WriteError> {
    let id = match key {
        Value::Number(n) if ty == FieldType::Integer && n.is_i64() => n.to_string(),
        Value::String(s) if ty != FieldType::Integer => s,
        other => {
            let mut e = TypeError::new(collection, &def.primary_key, ty, &other);
            e.key = true;
            return Err(e.into());
        }
    };
    def.check_key(collection, &id)?;
    Ok(id)
}

/// Record ids of local writes: 1..=[`MAX_ID_LEN`] bytes of UTF-8 without control characters
/// (NUL, newlines, escapes: they break C clients, logs and terminals), and not `.` or `..`
/// (URL normalization makes `/v1/c/..` unreachable). Any other character is allowed, `/`
/// included (percent-encode it as `%2F` in a URL). Remote transactions are not checked here:
/// refusing what a peer already committed would make replicas diverge.
fn check_id(collection: &str, id: &str) -> Result<(), WriteError> {
    let reason = if id.is_empty() {
        "the id is empty"
    } else if id.len() > MAX_ID_LEN {
        "the id is longer than 256 bytes"
    } else if id.chars().any(char::is_control) {
        "the id contains a control character (NUL, newline, tab, escape, ...)"
    } else if id == "." || id == ".." {
        "the id is `.` or `..`, which URLs cannot address"
    } else {
        return Ok(());
    };
    Err(WriteError::InvalidId {
        collection: collection.to_owned(),
        reason: reason.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::omitted_len;

    #[test]
    fn omitted_len_matches_postcard() {
        let empty = postcard::to_stdvec(&String::new()).unwrap().len();
        for n in [0, 1, 127, 128, 200, 16_383, 16_384, 300_000] {
            let full = postcard::to_stdvec(&"x".repeat(n)).unwrap().len();
            assert_eq!(full - empty, omitted_len(n), "length {n}");
        }
    }
}
