//! One record's Automerge document, for replicas that keep document states outside the core
//! store: the central bridge keeps them in Postgres and merges there.
//!
//! [`RecordDoc`] is the same encoding and the same merge rules as the store's own documents
//! (see the `doc` module: counters as per-replica parts, max/min/priority resolved over
//! concurrent values, `lww` by Automerge's deterministic winner), so a record materializes to the
//! same JSON on a node and in Postgres. It is pure computation: bytes in, bytes and JSON out.
//! Every load and apply of foreign bytes runs behind a `catch_unwind` boundary (automerge 0.6
//! can panic on malformed input), and a panic is an error, never a crash.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::{Automerge, Change, ROOT, ReadDoc};
use serde_json::{Map, Value};

use super::doc::{self, COUNTER_SEP, DocError};
use super::first_change;

#[path = "flat.rs"]
mod flat;
use crate::ids::ReplicaId;
use crate::schema::{CollectionDef, MergePolicy};
pub use flat::{FlatApplied, FlatRecord};

/// Why a record document operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A stored state does not load: the bytes are corrupt.
    #[error("stored document state does not load: {0}")]
    Load(String),
    /// A change's bytes do not decode, or Automerge refused to apply it.
    #[error("bad change: {0}")]
    Change(String),
    /// A written value breaks the field's merge policy.
    #[error("field {field}: {reason}")]
    Policy {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// Automerge refused a local operation (not expected for well-formed documents).
    #[error("automerge: {0}")]
    Automerge(String),
}

impl From<DocError> for RecordError {
    fn from(e: DocError) -> Self {
        match e {
            DocError::Policy { field, reason } => RecordError::Policy { field, reason },
            DocError::Automerge(m) => RecordError::Automerge(m),
        }
    }
}

/// What [`RecordDoc::apply`] did with a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOutcome {
    /// The change is now part of the document.
    Applied,
    /// The document already had it.
    Duplicate,
    /// Some of its dependencies are missing; nothing was applied (park it and retry later).
    MissingDeps,
}

/// Concurrent values of one field that a merge resolved (for a conflict audit).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldConflict {
    /// The field.
    pub field: String,
    /// The policy that resolved it.
    pub policy: MergePolicy,
    /// Every concurrent value, in Automerge's order.
    pub candidates: Vec<Value>,
    /// The replica that wrote each candidate (hex [`ReplicaId`], as in transaction ids), in
    /// the same order.
    pub origins: Vec<String>,
    /// The materialized result.
    pub winner: Option<Value>,
}

/// One record's document, written as `replica`.
#[derive(Debug)]
pub struct RecordDoc {
    doc: Automerge,
    replica: ReplicaId,
}

impl RecordDoc {
    /// An empty document (a record not seen before).
    pub fn new(replica: &ReplicaId) -> Self {
        Self {
            doc: doc::new_doc(replica),
            replica: *replica,
        }
    }

    /// Loads a state saved by [`RecordDoc::save`] (or by the store).
    pub fn load(bytes: &[u8], replica: &ReplicaId) -> Result<Self, RecordError> {
        Ok(Self {
            doc: doc::load_doc(bytes, replica).map_err(RecordError::Load)?,
            replica: *replica,
        })
    }

    /// Applies one received change (the bytes of a `change::Op::Doc` of a transaction from
    /// `origin`), idempotently. A change not written by `origin`'s actor is refused, as the
    /// store refuses it (`store::remote`): a peer cannot write under another replica's name.
    pub fn apply(
        &mut self,
        origin: ReplicaId,
        change: &[u8],
    ) -> Result<ChangeOutcome, RecordError> {
        let change = decode_from(origin, change)?;
        self.apply_decoded(change, None).map(|(outcome, _)| outcome)
    }

    /// [`RecordDoc::apply`], also saying whether the change was *concurrent* with the document:
    /// its dependencies were not the document's heads. Only such a merge can leave a field with
    /// concurrent values (a change made on top of the heads supersedes every value it saw), and
    /// only in the fields it wrote, so a conflict audit looks only there: the [`Concurrent`]
    /// returned holds those fields and their conflicts just before the change (under `def`'s
    /// policies); [`RecordDoc::new_conflicts`] then gives what the change added.
    pub fn apply_noting_concurrency(
        &mut self,
        origin: ReplicaId,
        change: &[u8],
        def: &CollectionDef,
    ) -> Result<(ChangeOutcome, Option<Concurrent>), RecordError> {
        let change = decode_from(origin, change)?;
        self.apply_decoded(change, Some(def))
    }

    /// A record's first change (the record has no document yet), written as `replica`: when it
    /// is a tree of puts (scalars, new maps and lists, each written once and front to back)
    /// with no dependencies, the row its document
    /// would materialize, computed without building the document (building one costs more
    /// than the rest of applying the change: see the `first_change` module); else a new
    /// document with the change applied as [`RecordDoc::apply`] does.
    pub fn first(
        replica: &ReplicaId,
        origin: ReplicaId,
        change: &[u8],
        def: &CollectionDef,
    ) -> Result<First, RecordError> {
        let change = decode_from(origin, change)?;
        if let Some(row) = first_change::materialize(&change, def) {
            return Ok(First::Row(row));
        }
        let mut doc = Self::new(replica);
        let (outcome, _) = doc.apply_decoded(change, None)?;
        Ok(First::Doc(Box::new(doc), outcome))
    }

    /// Applies a decoded change whose actor was checked; with `def`, notes a concurrent change
    /// (see [`RecordDoc::apply_noting_concurrency`]).
    fn apply_decoded(
        &mut self,
        change: Change,
        def: Option<&CollectionDef>,
    ) -> Result<(ChangeOutcome, Option<Concurrent>), RecordError> {
        let hash = change.hash();
        if self.doc.get_change_by_hash(&hash).is_some() {
            return Ok((ChangeOutcome::Duplicate, None));
        }
        let missing = change
            .deps()
            .iter()
            .any(|dep| self.doc.get_change_by_hash(dep).is_none());
        if missing {
            return Ok((ChangeOutcome::MissingDeps, None));
        }
        let concurrent = match def {
            Some(def) if !on_heads(&self.doc, &change) => {
                let fields = written_fields(&change);
                let before = self.conflicts_in(def, fields.as_ref(), &Map::new());
                Some(Concurrent { fields, before })
            }
            _ => None,
        };
        let doc = &mut self.doc;
        let applied = catch_unwind(AssertUnwindSafe(|| doc.apply_changes([change])));
        match applied {
            Ok(Ok(())) => Ok((ChangeOutcome::Applied, concurrent)),
            Ok(Err(e)) => Err(RecordError::Change(e.to_string())),
            Err(_) => Err(RecordError::Change("automerge panicked applying it".into())),
        }
    }

    /// Merge-patches `fields` into the document under `def`'s policies as one local change and
    /// returns its bytes (for a `change::Op::Doc`).
    pub fn put(
        &mut self,
        def: &CollectionDef,
        fields: &Map<String, Value>,
    ) -> Result<Vec<u8>, RecordError> {
        Ok(doc::put_fields(&mut self.doc, def, fields, &self.replica)?)
    }

    /// Adds `by` to counter `field` as one local change and returns its bytes.
    pub fn increment(&mut self, field: &str, by: i64) -> Result<Vec<u8>, RecordError> {
        Ok(doc::increment(&mut self.doc, field, by, &self.replica)?)
    }

    /// The merged record (without its primary key), exactly as the store materializes it.
    pub fn materialize(&self, def: &CollectionDef) -> Map<String, Value> {
        doc::materialize(&self.doc, def)
    }

    /// The document as compact bytes for storage.
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// Fields that currently hold concurrent values, with the candidates and the merged winner.
    /// Counter parts never conflict (each replica writes its own), so counters do not appear.
    pub fn conflicts(&self, def: &CollectionDef) -> Vec<FieldConflict> {
        self.conflicts_of(def, &self.materialize(def))
    }

    /// [`RecordDoc::conflicts`] given the document's current materialization (from
    /// [`RecordDoc::materialize`] since the last change), which gives the winners.
    pub fn conflicts_of(
        &self,
        def: &CollectionDef,
        materialized: &Map<String, Value>,
    ) -> Vec<FieldConflict> {
        self.conflicts_in(def, None, materialized)
    }

    /// The conflicts the concurrent change `concurrent` noted (by
    /// [`RecordDoc::apply_noting_concurrency`], the last change applied) added: those of the
    /// fields it wrote that were not there before it, the same field, policy and candidates.
    /// The winner is not compared: it follows from those (each policy picks from the
    /// candidates; Automerge's own pick, for `lww` and priority ties, from their order).
    /// `materialized` is the document's current materialization (the winners).
    pub fn new_conflicts(
        &self,
        def: &CollectionDef,
        concurrent: &Concurrent,
        materialized: &Map<String, Value>,
    ) -> Vec<FieldConflict> {
        let mut after = self.conflicts_in(def, concurrent.fields.as_ref(), materialized);
        after.retain(|c| !concurrent.before.iter().any(|b| same_conflict(b, c)));
        after
    }

    /// The conflicts of `fields` (every root key when `None`), in key order.
    fn conflicts_in(
        &self,
        def: &CollectionDef,
        fields: Option<&BTreeSet<String>>,
        materialized: &Map<String, Value>,
    ) -> Vec<FieldConflict> {
        let mut out = Vec::new();
        let mut look = |key: &str| {
            let policy = def.policy(key);
            if key.contains(COUNTER_SEP) || *policy == MergePolicy::Counter {
                return;
            }
            let Ok(values) = self.doc.get_all(&ROOT, key) else {
                return;
            };
            if values.len() < 2 {
                return;
            }
            let candidates = values
                .iter()
                .map(|(value, id)| doc::value_json(&self.doc, value, id))
                .collect();
            let origins = values.iter().map(|(_, id)| writer_hex(id)).collect();
            out.push(FieldConflict {
                winner: materialized.get(key).cloned(),
                policy: policy.clone(),
                field: key.to_owned(),
                candidates,
                origins,
            });
        };
        match fields {
            Some(fields) => fields.iter().for_each(|k| look(k)),
            None => self.doc.keys(&ROOT).for_each(|k| look(&k)),
        }
        out
    }
}

/// Whether two conflicts are the same: field, policy and candidates (the winner follows from
/// those).
fn same_conflict(a: &FieldConflict, b: &FieldConflict) -> bool {
    a.field == b.field && a.policy == b.policy && a.candidates == b.candidates
}

/// The replica that wrote the op `id` (its actor is the replica id, see `doc::actor`), in hex.
fn writer_hex(id: &automerge::ObjId) -> String {
    match id {
        automerge::ObjId::Id(_, actor, _) => actor.to_hex_string(),
        automerge::ObjId::Root => String::new(),
    }
}

/// What [`RecordDoc::first`] made of a record's first change.
#[derive(Debug)]
pub enum First {
    /// The row of the document the change alone would make; no document was built. The
    /// record's state is the change's bytes.
    Row(Map<String, Value>),
    /// A new document and what applying the change to it did.
    Doc(Box<RecordDoc>, ChangeOutcome),
}

/// A change applied concurrently with the document (see
/// [`RecordDoc::apply_noting_concurrency`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Concurrent {
    /// The root fields the change wrote; `None` when it also wrote inside nested objects (a
    /// nested write changes the candidates of the root field holding the object): any field.
    fields: Option<BTreeSet<String>>,
    /// Those fields' conflicts before the change (winners left out).
    before: Vec<FieldConflict>,
}

/// Whether `change` was made on top of the document's heads.
fn on_heads(doc: &Automerge, change: &Change) -> bool {
    let mut deps = change.deps().to_vec();
    let mut heads = doc.get_heads();
    deps.sort_unstable();
    heads.sort_unstable();
    deps == heads
}

/// The root keys `change` writes, or `None` when it also writes inside a nested object (or
/// does not decode as expected: then every field is looked at).
fn written_fields(change: &Change) -> Option<BTreeSet<String>> {
    let decoded = catch_unwind(AssertUnwindSafe(|| change.decode())).ok()?;
    let mut keys = BTreeSet::new();
    for op in decoded.operations {
        // The legacy op types are not nameable outside automerge; their serde forms are stable.
        let root = serde_json::to_value(&op.obj).is_ok_and(|o| o == "_root");
        let Ok(Value::String(key)) = serde_json::to_value(&op.key) else {
            return None;
        };
        if !root {
            return None;
        }
        keys.insert(key);
    }
    Some(keys)
}

/// Decodes a change of a transaction from `origin`, refusing one written by another actor.
fn decode_from(origin: ReplicaId, bytes: &[u8]) -> Result<Change, RecordError> {
    let change = decode(bytes)?;
    if *change.actor_id() != doc::actor(&origin) {
        return Err(RecordError::Change(format!(
            "change written by actor {} in a transaction of origin {}",
            change.actor_id(),
            doc::actor(&origin)
        )));
    }
    Ok(change)
}

fn decode(bytes: &[u8]) -> Result<Change, RecordError> {
    match catch_unwind(|| Change::try_from(bytes)) {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(RecordError::Change(format!("malformed change: {e}"))),
        Err(_) => Err(RecordError::Change(
            "automerge panicked decoding a change".into(),
        )),
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
