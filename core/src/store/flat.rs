//! A record whose whole history is puts of scalars on root keys, merged without a document.
//!
//! Loading a stored state into an Automerge document replays every change in it, then the
//! new change is applied and the document read back: most of a replica's CPU per change when
//! records are small (the central bridge's profile). A record written by
//! [`super::super::doc::put_fields`] with flat values (the common case: text, numbers,
//! timestamps, counters as per-replica parts) has a history of changes that only put scalars
//! on root keys. For such a history Automerge's map semantics are simple: a key's values are
//! the puts on it that no later put names as a predecessor, in op order (counter, then actor),
//! the last one being Automerge's winner. [`FlatRecord`] keeps exactly that, per key, and
//! materializes and reports conflicts as [`super::RecordDoc`] does from it.
//!
//! Only *canonical* changes are taken, the way Automerge itself writes them: every op a put
//! of a scalar (not a counter) on a root key, each key once, predecessors that are puts on the
//! same key already held and older than the change, the change's first op counter one past the
//! highest of its dependencies, its sequence number one past its actor's last and its op
//! counters above the actor's earlier ones. Anything else — nested objects, text, deletes, increments, a
//! compacted state, an unknown predecessor — makes [`FlatRecord::load`] or
//! [`FlatRecord::apply`] answer `None`, and the caller uses the document, which handles
//! everything; so this path only ever decides what the document path would.
//!
//! Debug builds check every materialization and conflict list against the document built from
//! the same changes (`debug_assert_eq!`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::{ActorId, Change, ChangeHash, ScalarValue};
use serde_json::{Map, Value};

use super::super::doc::{COUNTER_SEP, pick_by_priority, pick_extreme, scalar_to_json};
use super::{ChangeOutcome, Concurrent, FieldConflict, RecordError, decode_from};
use crate::ids::ReplicaId;
use crate::schema::{CollectionDef, MergePolicy};

/// A record's merged state when its history is flat (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct FlatRecord {
    /// Every change held: its hash and its highest op counter. (A few per record: a list is
    /// cheaper to build, search and free than a map.)
    changes: Vec<(ChangeHash, u64)>,
    /// The changes no held change depends on, sorted.
    heads: Vec<ChangeHash>,
    /// Per actor: the sequence number of its last change and its highest op counter.
    actors: Vec<(ActorId, u64, u64)>,
    /// Per root key, every put on it, in Automerge's op order.
    keys: BTreeMap<String, Vec<Put>>,
    /// Every change applied, concatenated (the document the debug checks compare with).
    #[cfg(debug_assertions)]
    history: Vec<u8>,
}

/// One put on a root key.
#[derive(Debug, Clone)]
struct Put {
    counter: u64,
    actor: ActorId,
    value: ScalarValue,
    /// No later put names it as a predecessor: it is one of the key's values.
    live: bool,
}

/// An op id: counter and actor.
type OpId = (u64, ActorId);

/// A change checked and ready to apply: its puts as (key, predecessors, value).
struct Checked {
    puts: Vec<(String, Vec<OpId>, ScalarValue)>,
}

/// What [`FlatRecord::apply`] did with a change it could take.
#[derive(Debug)]
pub struct FlatApplied {
    /// Applied, duplicate or missing dependencies, as [`super::RecordDoc::apply`] says.
    pub outcome: ChangeOutcome,
    /// `Some` when the change was concurrent with the record (see
    /// [`super::RecordDoc::apply_noting_concurrency`]).
    pub concurrent: Option<Concurrent>,
}

impl FlatRecord {
    /// A state (change chunks, concatenated, as the bridge stores them) as a flat record, or
    /// `None` when any of its changes is not flat, or the state is a compacted document.
    pub fn load(state: &[u8]) -> Option<Self> {
        let mut flat = Self::default();
        for chunk in chunks(state)? {
            let change = catch_unwind(|| Change::try_from(chunk)).ok()?.ok()?;
            let checked = flat.check(&change)?;
            if flat.held(&change.hash()).is_some() || !flat.deps_held(&change) {
                return None;
            }
            flat.commit(&change, checked);
        }
        Some(flat)
    }

    /// Applies `change` (from a transaction of `origin`) if it is flat and canonical
    /// (`Ok(None)` otherwise: nothing changed, use the document). A change not written by
    /// `origin`'s actor is refused, as [`super::RecordDoc::apply`] refuses it.
    pub fn apply(
        &mut self,
        origin: ReplicaId,
        change: &[u8],
        def: &CollectionDef,
    ) -> Result<Option<FlatApplied>, RecordError> {
        let change = decode_from(origin, change)?;
        let applied = |outcome, concurrent| FlatApplied {
            outcome,
            concurrent,
        };
        if self.held(&change.hash()).is_some() {
            return Ok(Some(applied(ChangeOutcome::Duplicate, None)));
        }
        if !self.deps_held(&change) {
            return Ok(Some(applied(ChangeOutcome::MissingDeps, None)));
        }
        let Some(checked) = self.check(&change) else {
            return Ok(None);
        };
        let concurrent = (!self.on_heads(&change)).then(|| {
            let fields: BTreeSet<String> = checked.puts.iter().map(|p| p.0.clone()).collect();
            let before = self.conflicts_in(def, &fields, &Map::new());
            Concurrent {
                fields: Some(fields),
                before,
            }
        });
        self.commit(&change, checked);
        Ok(Some(applied(ChangeOutcome::Applied, concurrent)))
    }

    /// The merged record (without its primary key), as [`super::RecordDoc::materialize`]
    /// gives it for the same changes.
    pub fn materialize(&self, def: &CollectionDef) -> Map<String, Value> {
        let mut out = Map::new();
        let mut parts: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for (key, puts) in &self.keys {
            let Some(winner) = winner(puts) else {
                continue;
            };
            if let Some((field, _)) = key.split_once(COUNTER_SEP) {
                parts
                    .entry(field)
                    .or_default()
                    .extend(winner.value.to_i64());
                continue;
            }
            let live = || puts.iter().filter(|p| p.live);
            let value = match def.policy(key) {
                MergePolicy::Counter => Some(Value::from(winner.value.to_i64().unwrap_or(0))),
                MergePolicy::Lww | MergePolicy::Text => Some(scalar_to_json(&winner.value)),
                MergePolicy::Max => pick_extreme(live().map(json), Ordering::Greater),
                MergePolicy::Min => pick_extreme(live().map(json), Ordering::Less),
                MergePolicy::Priority { order } => {
                    let values = live().map(|p| (json(p), std::ptr::eq(p, winner))).collect();
                    pick_by_priority(values, order)
                }
            };
            if let Some(v) = value {
                out.insert(key.clone(), v);
            }
        }
        for (field, values) in parts {
            let base = self.keys.get(field).and_then(|p| winner(p));
            let base = base.and_then(|p| p.value.to_i64()).unwrap_or(0);
            let total = values.into_iter().fold(base, i64::saturating_add);
            out.insert(field.to_owned(), Value::from(total));
        }
        #[cfg(debug_assertions)]
        debug_assert_eq!(Some(&out), self.by_document(def).as_ref(), "flat record");
        out
    }

    /// The conflicts the concurrent change `concurrent` added, as
    /// [`super::RecordDoc::new_conflicts`] gives them; `materialized` is the record's
    /// current materialization.
    pub fn new_conflicts(
        &self,
        def: &CollectionDef,
        concurrent: &Concurrent,
        materialized: &Map<String, Value>,
    ) -> Vec<FieldConflict> {
        let fields = concurrent.fields.clone().unwrap_or_default();
        let mut after = self.conflicts_in(def, &fields, materialized);
        after.retain(|c| !concurrent.before.iter().any(|b| super::same_conflict(b, c)));
        after
    }

    /// The conflicts of `fields`, in key order, as [`super::RecordDoc`] reports them.
    fn conflicts_in(
        &self,
        def: &CollectionDef,
        fields: &BTreeSet<String>,
        materialized: &Map<String, Value>,
    ) -> Vec<FieldConflict> {
        let mut out = Vec::new();
        for key in fields {
            let policy = def.policy(key);
            if key.contains(COUNTER_SEP) || *policy == MergePolicy::Counter {
                continue;
            }
            let live: Vec<&Put> = self.keys.get(key).into_iter().flatten().collect();
            let live: Vec<&Put> = live.into_iter().filter(|p| p.live).collect();
            if live.len() < 2 {
                continue;
            }
            out.push(FieldConflict {
                field: key.clone(),
                policy: policy.clone(),
                candidates: live.iter().map(|p| json(p)).collect(),
                origins: live.iter().map(|p| p.actor.to_hex_string()).collect(),
                winner: materialized.get(key).cloned(),
            });
        }
        #[cfg(debug_assertions)]
        if let Ok(doc) = super::RecordDoc::load(&self.history, &ReplicaId([0; 16])) {
            let by_doc = doc.conflicts_in(def, Some(fields), materialized);
            debug_assert_eq!(out, by_doc, "flat record conflicts");
        }
        out
    }

    /// Whether every dependency of `change` is held.
    fn deps_held(&self, change: &Change) -> bool {
        change.deps().iter().all(|d| self.held(d).is_some())
    }

    /// The highest op counter of held change `hash`.
    fn held(&self, hash: &ChangeHash) -> Option<u64> {
        self.changes
            .iter()
            .find(|(h, _)| h == hash)
            .map(|(_, m)| *m)
    }

    /// Whether `change` was made on top of the heads.
    fn on_heads(&self, change: &Change) -> bool {
        let mut deps = change.deps().to_vec();
        deps.sort_unstable();
        deps == self.heads
    }

    /// `change`'s puts, if it is flat and canonical on top of what is held (see the module
    /// doc); its dependencies must be held.
    fn check(&self, change: &Change) -> Option<Checked> {
        let deps = change.deps();
        let unique: BTreeSet<&ChangeHash> = deps.iter().collect();
        let mut held = deps.iter().map(|d| self.held(d));
        let max_dep = held.try_fold(0, |m, c| Some(m.max(c?)))?;
        let actor = change.actor_id();
        let (last_seq, last_op) = self
            .actors
            .iter()
            .find(|(a, _, _)| a == actor)
            .map_or((0, 0), |(_, seq, op)| (*seq, *op));
        let start = change.start_op().get();
        let canonical = unique.len() == deps.len()
            && !change.is_empty()
            && start == max_dep.checked_add(1)?
            && start > last_op
            && change.seq() == last_seq.checked_add(1)?;
        if !canonical {
            return None;
        }
        let decoded = catch_unwind(AssertUnwindSafe(|| change.decode())).ok()?;
        let mut puts = Vec::with_capacity(decoded.operations.len());
        for op in decoded.operations {
            let set = serde_json::to_value(&op.action).ok()? == "set";
            if !set || op.insert || !op.key.is_map_key() || op.obj.to_string() != "_root" {
                return None;
            }
            let value = op.primitive_value()?;
            if matches!(value, ScalarValue::Counter(_) | ScalarValue::Unknown { .. }) {
                return None;
            }
            let Ok(Value::String(key)) = serde_json::to_value(&op.key) else {
                return None;
            };
            let pred: Vec<OpId> = op
                .pred
                .iter()
                .map(|p| (p.counter(), p.actor().clone()))
                .collect();
            // A predecessor is an earlier put on the same key (below the change's first op, as
            // everything in its history is).
            let held = self.keys.get(&key);
            let known = |(c, a): &OpId| {
                *c < start
                    && held
                        .is_some_and(|puts| puts.iter().any(|p| p.counter == *c && p.actor == *a))
            };
            let again = puts.iter().any(|(k, _, _)| *k == key);
            if again || !pred.iter().all(known) {
                return None;
            }
            puts.push((key, pred, value));
        }
        Some(Checked { puts })
    }

    /// Applies a checked change.
    fn commit(&mut self, change: &Change, checked: Checked) {
        let actor = change.actor_id();
        let start = change.start_op().get();
        for (i, (key, pred, value)) in checked.puts.into_iter().enumerate() {
            let puts = self.keys.entry(key).or_default();
            for p in puts.iter_mut() {
                if pred.iter().any(|(c, a)| p.counter == *c && p.actor == *a) {
                    p.live = false;
                }
            }
            let put = Put {
                counter: start + i as u64,
                actor: actor.clone(),
                value,
                live: true,
            };
            let at = puts.partition_point(|p| (p.counter, &p.actor) < (put.counter, &put.actor));
            puts.insert(at, put);
        }
        let hash = change.hash();
        self.changes.push((hash, change.max_op()));
        self.heads.retain(|h| !change.deps().contains(h));
        let at = self.heads.partition_point(|h| *h < hash);
        self.heads.insert(at, hash);
        let last = (actor.clone(), change.seq(), change.max_op());
        match self.actors.iter_mut().find(|(a, _, _)| a == actor) {
            Some(held) => *held = last,
            None => self.actors.push(last),
        }
        #[cfg(debug_assertions)]
        self.history.extend_from_slice(change.raw_bytes());
    }

    /// The document path's materialization of the same changes (the debug reference).
    #[cfg(debug_assertions)]
    fn by_document(&self, def: &CollectionDef) -> Option<Map<String, Value>> {
        let doc = super::RecordDoc::load(&self.history, &ReplicaId([0; 16])).ok()?;
        Some(doc.materialize(def))
    }
}

/// The value Automerge shows for a key: the greatest of its live puts.
fn winner(puts: &[Put]) -> Option<&Put> {
    puts.iter().rev().find(|p| p.live)
}

fn json(put: &Put) -> Value {
    scalar_to_json(&put.value)
}

/// The chunks of a state (each: magic bytes, checksum, type, LEB128 length, data), or `None`
/// when it does not split cleanly.
fn chunks(mut state: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !state.is_empty() {
        let (len, leb) = leb128_u64(state.get(9..)?)?;
        let end = 9usize
            .checked_add(leb)?
            .checked_add(usize::try_from(len).ok()?)?;
        out.push(state.get(..end)?);
        state = &state[end..];
    }
    Some(out)
}

/// An unsigned LEB128 number at the start of `bytes` and its length in bytes.
fn leb128_u64(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
#[path = "flat_tests.rs"]
mod tests;
