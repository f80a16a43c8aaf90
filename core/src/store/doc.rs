//! A record's Automerge document: writing JSON into it under merge policies, and materializing
//! it back to JSON.
//!
//! Encoding (the root map holds the record's fields; the primary key is not stored):
//! - `lww`: scalars as scalars, objects as nested maps merged per key, arrays replaced wholesale,
//!   `null` as Null. A field whose visible value already equals the written one is not written,
//!   so a full-record upsert does not override concurrent edits of the fields it did not change.
//! - `counter`: replica `r` only ever writes its own hidden root key `"<field>~<r hex>"`; the
//!   value is the int at `<field>` (if any) plus the sum of all parts. Keys with `~` are always
//!   treated as counter parts (field names cannot contain `~`), so counters are self-describing.
//! - `max`/`min`: a local write stores the value only when it beats the visible one;
//!   materialization picks the extreme among concurrent values (`get_all`).
//! - `priority`: materialization picks the value earliest in `order` among concurrent values;
//!   unlisted values rank last; ties go to Automerge's winner.
//! - `text`: an Automerge Text object updated by splicing the differing middle.
//!
//! Materialization reads only the document, so every replica holding the same changes produces
//! the same JSON.

use std::cmp::Ordering;

use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{
    ActorId, Automerge, LoadOptions, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, TextEncoding,
};
use serde_json::{Map, Number, Value};

use crate::ids::ReplicaId;
use crate::schema::{CollectionDef, MergePolicy};

/// Separates a counter field from the replica that owns a part: `"<field>~<replica hex>"`.
pub(crate) const COUNTER_SEP: char = '~';

/// Deepest JSON nesting accepted in a record (also bounds recursion when materializing).
pub(crate) const MAX_DEPTH: usize = 32;

/// Why a write could not be encoded.
#[derive(Debug)]
pub(crate) enum DocError {
    /// The value breaks the field's policy.
    Policy { field: String, reason: String },
    /// Automerge refused an operation (not expected for well-formed documents).
    Automerge(String),
}

impl From<automerge::AutomergeError> for DocError {
    fn from(e: automerge::AutomergeError) -> Self {
        DocError::Automerge(e.to_string())
    }
}

fn policy_err(field: &str, reason: impl Into<String>) -> DocError {
    DocError::Policy {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// A new empty document written by `replica`.
pub(crate) fn new_doc(replica: &ReplicaId) -> Automerge {
    Automerge::new_with_encoding(TextEncoding::UnicodeCodePoint).with_actor(actor(replica))
}

/// The Automerge actor of a replica.
pub(crate) fn actor(replica: &ReplicaId) -> ActorId {
    ActorId::from(&replica.0[..])
}

/// Loads a stored state (a snapshot and/or change chunks). Never panics: a panic inside
/// Automerge is reported as an error.
pub(crate) fn load_doc(bytes: &[u8], replica: &ReplicaId) -> Result<Automerge, String> {
    let opts = || LoadOptions::new().text_encoding(TextEncoding::UnicodeCodePoint);
    let loaded = std::panic::catch_unwind(|| Automerge::load_with_options(bytes, opts()));
    match loaded {
        Ok(Ok(doc)) => Ok(doc.with_actor(actor(replica))),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("automerge panicked while loading".to_owned()),
    }
}

/// Merge-patches `fields` into the document as one change and returns the change's bytes.
pub(crate) fn put_fields(
    doc: &mut Automerge,
    def: &CollectionDef,
    fields: &Map<String, Value>,
    replica: &ReplicaId,
) -> Result<Vec<u8>, DocError> {
    // Fields with counter parts, found in one walk over the root keys (a field's own parts are
    // only ever written while that field is put, after its check).
    let counted = counted_fields(doc);
    let mut tx = doc.transaction();
    for (field, value) in fields {
        let counted = counted.iter().any(|f| f == field);
        if let Err(e) = put_field(&mut tx, def.policy(field), field, value, counted, replica) {
            tx.rollback();
            return Err(e);
        }
    }
    let committed = tx.commit().0.is_some();
    Ok(last_change(doc, committed))
}

/// A cached document's materialized row and the fields that have counter parts, kept beside
/// the document so that a local put decides what to write, and what the row becomes, from it
/// instead of reading Automerge: a read of a key scans every op ever written to that key, so
/// reads grow with a hot record's history, while the view does not. Valid only while the
/// document changes through [`put_fields_viewed`] alone (see `docs::DocEntry`).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct View {
    /// The row [`materialize`] returns.
    pub row: Map<String, Value>,
    /// Fields with counter parts, sorted.
    counted: Vec<String>,
}

impl View {
    fn is_counted(&self, field: &str) -> bool {
        self.counted
            .binary_search_by(|f| f.as_str().cmp(field))
            .is_ok()
    }

    fn mark_counted(&mut self, field: &str) {
        if let Err(at) = self.counted.binary_search_by(|f| f.as_str().cmp(field)) {
            self.counted.insert(at, field.to_owned());
        }
    }
}

/// What a put did to a field's visible value.
enum Outcome {
    /// Nothing written.
    Kept,
    /// The field now shows this value.
    Now(Value),
    /// The counter now totals this, and this replica holds a part of it.
    Counted(i64),
    /// Written in a way whose visible value is read back after the commit.
    Reread,
}

/// [`put_fields`] on a document whose current [`View`] is `view`, which it brings up to date.
///
/// Every rule is the one [`put_field`] applies, with the value it would read taken from the
/// view: after a local put of a scalar, the key's only visible op is the new one, so the field
/// shows the written value. Fields with counter parts (other than counters themselves), text
/// and nested objects take the reading path and are read back after the commit.
pub(crate) fn put_fields_viewed(
    doc: &mut Automerge,
    def: &CollectionDef,
    fields: &Map<String, Value>,
    replica: &ReplicaId,
    view: &mut View,
) -> Result<Vec<u8>, DocError> {
    let mut tx = doc.transaction();
    let mut changed: Vec<(&str, Outcome)> = Vec::new();
    for (field, value) in fields {
        match put_field_viewed(&mut tx, def.policy(field), field, value, view, replica) {
            Ok(Outcome::Kept) => {}
            Ok(outcome) => changed.push((field, outcome)),
            Err(e) => {
                tx.rollback();
                return Err(e);
            }
        }
    }
    let committed = tx.commit().0.is_some();
    let change = last_change(doc, committed);
    // The view changes only once the change is committed (an error above left it as it was).
    for (field, outcome) in changed {
        let now = match outcome {
            Outcome::Now(v) => Some(v),
            Outcome::Counted(total) => {
                view.mark_counted(field);
                Some(Value::from(total))
            }
            Outcome::Kept | Outcome::Reread => visible(doc, def, field, view.is_counted(field)),
        };
        match now {
            Some(v) => view.row.insert(field.to_owned(), v),
            None => view.row.remove(field),
        };
    }
    debug_assert_eq!(*view, self::view(&*doc, def), "incremental view");
    Ok(change)
}

/// One field of [`put_fields_viewed`].
fn put_field_viewed(
    tx: &mut Transaction<'_>,
    policy: &MergePolicy,
    field: &str,
    value: &Value,
    view: &View,
    replica: &ReplicaId,
) -> Result<Outcome, DocError> {
    let current = view.row.get(field);
    let counted = view.is_counted(field);
    let scalar = !matches!(value, Value::Object(_) | Value::Array(_));
    let counter =
        matches!(policy, MergePolicy::Counter) || (counted && *policy == MergePolicy::Lww);
    if counter {
        // The view shows the counter's total, which `put_counter` would read.
        let target = value
            .as_i64()
            .ok_or_else(|| policy_err(field, "a counter needs an integer"))?;
        let total = current.and_then(Value::as_i64).unwrap_or(0);
        if target == total && current.is_some() {
            return Ok(Outcome::Kept);
        }
        put_counter_from(tx, field, target, total, current.is_some(), replica)?;
        return Ok(Outcome::Counted(target));
    }
    if counted || !scalar {
        put_field(tx, policy, field, value, counted, replica)?;
        return Ok(Outcome::Reread);
    }
    match policy {
        MergePolicy::Lww | MergePolicy::Priority { .. } if current == Some(value) => {
            Ok(Outcome::Kept)
        }
        MergePolicy::Lww | MergePolicy::Priority { .. } => {
            tx.put(&ROOT, field, to_scalar(value))?;
            Ok(Outcome::Now(value.clone()))
        }
        MergePolicy::Max | MergePolicy::Min => {
            let wins = match policy {
                MergePolicy::Max => Ordering::Greater,
                _ => Ordering::Less,
            };
            if !beats(field, value, current, wins)? {
                return Ok(Outcome::Kept);
            }
            tx.put(&ROOT, field, to_scalar(value))?;
            Ok(Outcome::Now(value.clone()))
        }
        _ => {
            put_field(tx, policy, field, value, counted, replica)?;
            Ok(Outcome::Reread)
        }
    }
}

/// The visible value of one field, as [`materialize`] shows it.
fn visible<R: ReadDoc>(doc: &R, def: &CollectionDef, field: &str, counted: bool) -> Option<Value> {
    if counted {
        return Some(Value::from(counter_value(doc, field)));
    }
    match def.policy(field) {
        MergePolicy::Counter => doc
            .get(&ROOT, field)
            .ok()
            .flatten()
            .map(|(v, _)| Value::from(scalar_i64(&v).unwrap_or(0))),
        policy => field_value(doc, policy, field),
    }
}

/// Adds `by` to the replica's part of counter `field` as one change; returns its bytes.
pub(crate) fn increment(
    doc: &mut Automerge,
    field: &str,
    by: i64,
    replica: &ReplicaId,
) -> Result<Vec<u8>, DocError> {
    increment_creating(doc, None, field, by, replica)
}

/// [`increment`], first putting `defaults` under `def`'s policies in the same change (the
/// fields a record created by this increment gets, see `local`).
pub(crate) fn increment_creating(
    doc: &mut Automerge,
    defaults: Option<(&CollectionDef, &Map<String, Value>)>,
    field: &str,
    by: i64,
    replica: &ReplicaId,
) -> Result<Vec<u8>, DocError> {
    let mut tx = doc.transaction();
    let mut result = Ok(());
    if let Some((def, fields)) = defaults {
        result = fields
            .iter()
            .try_for_each(|(f, v)| put_field(&mut tx, def.policy(f), f, v, false, replica));
    }
    let result = result.and_then(|()| {
        let total = counter_value(&tx, field);
        add_to_part(&mut tx, field, by, total, replica)
    });
    if let Err(e) = result {
        tx.rollback();
        return Err(e);
    }
    let committed = tx.commit().0.is_some();
    Ok(last_change(doc, committed))
}

/// The bytes of the change just committed; an empty transaction becomes an empty change so
/// every op still carries one.
fn last_change(doc: &mut Automerge, committed: bool) -> Vec<u8> {
    if !committed {
        doc.empty_commit(CommitOptions::default());
    }
    doc.get_last_local_change()
        .map(|c| c.raw_bytes().to_vec())
        .unwrap_or_default()
}

/// The fields that have counter parts.
fn counted_fields<R: ReadDoc>(doc: &R) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for key in doc.keys(&ROOT) {
        if let Some((field, _)) = key.split_once(COUNTER_SEP)
            && out.last().is_none_or(|last| last != field)
        {
            out.push(field.to_owned());
        }
    }
    out
}

fn put_field(
    tx: &mut Transaction<'_>,
    policy: &MergePolicy,
    field: &str,
    value: &Value,
    counted: bool,
    replica: &ReplicaId,
) -> Result<(), DocError> {
    match policy {
        // An undeclared field that was incremented is a counter: a put sets its total.
        MergePolicy::Lww if counted => put_counter(tx, field, value, counted, replica)?,
        MergePolicy::Lww => write_json(tx, &ROOT, field, value)?,
        MergePolicy::Priority { order } => {
            if by_priority(tx, field, order).as_ref() != Some(value) {
                tx.put(&ROOT, field, to_scalar(value))?;
            }
        }
        MergePolicy::Counter => put_counter(tx, field, value, counted, replica)?,
        MergePolicy::Max => put_extreme(tx, field, value, Ordering::Greater)?,
        MergePolicy::Min => put_extreme(tx, field, value, Ordering::Less)?,
        MergePolicy::Text => put_text(tx, field, value)?,
    }
    Ok(())
}

/// Checks a value against a policy without reading the document (done before any write).
pub(crate) fn check_policy(
    policy: &MergePolicy,
    field: &str,
    value: &Value,
) -> Result<(), DocError> {
    if policy.accepts(value) {
        return Ok(());
    }
    let want = match policy {
        MergePolicy::Counter => "a counter needs an integer (64-bit signed)",
        MergePolicy::Max | MergePolicy::Min => "max/min fields take a number or a string",
        MergePolicy::Priority { .. } => "a priority field takes a scalar (string, number, bool)",
        _ => "a text field takes a string",
    };
    Err(policy_err(
        field,
        format!("{want}, got {}", json_type(value)),
    ))
}

fn write_json(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    key: &str,
    value: &Value,
) -> Result<(), DocError> {
    let current = tx.get(obj, key)?.map(|(v, id)| (v.to_owned(), id));
    if let Some((v, id)) = &current
        && to_json(tx, v, id, 0) == *value
    {
        return Ok(());
    }
    match value {
        Value::Object(map) => {
            let target = match current {
                Some((automerge::Value::Object(ObjType::Map), id)) => id,
                _ => tx.put_object(obj, key, ObjType::Map)?,
            };
            for (k, v) in map {
                write_json(tx, &target, k, v)?;
            }
        }
        Value::Array(items) => {
            let list = tx.put_object(obj, key, ObjType::List)?;
            insert_items(tx, &list, items)?;
        }
        scalar => tx.put(obj, key, to_scalar(scalar))?,
    }
    Ok(())
}

fn insert_items(tx: &mut Transaction<'_>, list: &ObjId, items: &[Value]) -> Result<(), DocError> {
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::Object(map) => {
                let m = tx.insert_object(list, i, ObjType::Map)?;
                for (k, v) in map {
                    write_json(tx, &m, k, v)?;
                }
            }
            Value::Array(inner) => {
                let l = tx.insert_object(list, i, ObjType::List)?;
                insert_items(tx, &l, inner)?;
            }
            scalar => tx.insert(list, i, to_scalar(scalar))?,
        }
    }
    Ok(())
}

fn part_key(field: &str, replica: &ReplicaId) -> String {
    format!("{field}{COUNTER_SEP}{}", replica.to_hex())
}

/// Sets counter `field` to `value` by adding the difference to this replica's part; `counted`
/// tells whether the document holds any part of it (else its total is the plain value, if any).
fn put_counter(
    tx: &mut Transaction<'_>,
    field: &str,
    value: &Value,
    counted: bool,
    replica: &ReplicaId,
) -> Result<(), DocError> {
    let target = value
        .as_i64()
        .ok_or_else(|| policy_err(field, "a counter needs an integer"))?;
    let current = match counted {
        true => counter_value(tx, field),
        false => counter_base(tx, field),
    };
    debug_assert_eq!(
        current,
        counter_value(tx, field),
        "counted parts of {field}"
    );
    // Read only when it matters: a zero written to a counter that is zero.
    let present = target != current || current != 0 || counter_present(tx, field)?;
    put_counter_from(tx, field, target, current, present, replica)
}

/// Sets counter `field`, whose total is `current` (`present`: the document holds the field or
/// a part of it), to `target`.
fn put_counter_from(
    tx: &mut Transaction<'_>,
    field: &str,
    target: i64,
    current: i64,
    present: bool,
    replica: &ReplicaId,
) -> Result<(), DocError> {
    let delta = target
        .checked_sub(current)
        .ok_or_else(|| policy_err(field, "counter overflow"))?;
    if delta != 0 {
        add_to_part(tx, field, delta, current, replica)?;
    } else if !present {
        // A zero on a counter the document does not hold yet still writes this replica's part
        // (as `add_to_part` of 0 would), so the field appears (as 0) in the materialized row.
        tx.put(&ROOT, part_key(field, replica), 0_i64)?;
    }
    Ok(())
}

/// True when the document holds `field` itself or some replica's counter part of it.
fn counter_present<R: ReadDoc>(doc: &R, field: &str) -> Result<bool, DocError> {
    Ok(doc.get(&ROOT, field)?.is_some() || has_counter_parts(doc, field))
}

/// Adds `by` to this replica's part of counter `field`, whose total is now `total`.
fn add_to_part(
    tx: &mut Transaction<'_>,
    field: &str,
    by: i64,
    total: i64,
    replica: &ReplicaId,
) -> Result<(), DocError> {
    let base = tx.get(&ROOT, field)?;
    if base.as_ref().is_some_and(|(v, _)| scalar_i64(v).is_none()) {
        return Err(policy_err(
            field,
            "increment needs an integer field; it holds another value",
        ));
    }
    let key = part_key(field, replica);
    let own = tx
        .get(&ROOT, key.as_str())?
        .and_then(|(v, _)| scalar_i64(&v))
        .unwrap_or(0);
    let next = own
        .checked_add(by)
        .ok_or_else(|| policy_err(field, "counter overflow"))?;
    total.checked_add(by).ok_or_else(|| {
        policy_err(
            field,
            "counter overflow: the total would leave the 64-bit range",
        )
    })?;
    tx.put(&ROOT, key, next)?;
    Ok(())
}

fn put_extreme(
    tx: &mut Transaction<'_>,
    field: &str,
    value: &Value,
    wins: Ordering,
) -> Result<(), DocError> {
    if beats(field, value, extreme(tx, field, wins).as_ref(), wins)? {
        tx.put(&ROOT, field, to_scalar(value))?;
    }
    Ok(())
}

/// Whether a max/min write of `value` beats the field's `current` extreme (so it is written);
/// an error when they differ in type.
fn beats(
    field: &str,
    value: &Value,
    current: Option<&Value>,
    wins: Ordering,
) -> Result<bool, DocError> {
    let Some(current) = current else {
        return Ok(true);
    };
    if !current.is_null() && json_kind(current) != json_kind(value) {
        return Err(policy_err(
            field,
            format!(
                "type mismatch: the field holds a {}, got a {}",
                json_type(current),
                json_type(value)
            ),
        ));
    }
    Ok(json_cmp(value, current) == wins)
}

fn put_text(tx: &mut Transaction<'_>, field: &str, value: &Value) -> Result<(), DocError> {
    let new = value
        .as_str()
        .ok_or_else(|| policy_err(field, "a text field takes a string"))?;
    let (obj, old) = match tx.get(&ROOT, field)? {
        Some((automerge::Value::Object(ObjType::Text), id)) => {
            let old = tx.text(&id)?;
            (id, old)
        }
        _ => (tx.put_object(&ROOT, field, ObjType::Text)?, String::new()),
    };
    let (pos, del, insert) = splice_middle(&old, new);
    if del > 0 || !insert.is_empty() {
        tx.splice_text(&obj, pos, del as isize, insert)?;
    }
    Ok(())
}

/// The differing middle of `old` → `new` in code points: (position, deleted count, inserted text).
pub(crate) fn splice_middle<'a>(old: &str, new: &'a str) -> (usize, usize, &'a str) {
    let prefix = old
        .chars()
        .zip(new.chars())
        .take_while(|(a, b)| a == b)
        .count();
    let (old_n, new_n) = (old.chars().count(), new.chars().count());
    let max_suffix = old_n.min(new_n) - prefix;
    let suffix = old
        .chars()
        .rev()
        .zip(new.chars().rev())
        .take(max_suffix)
        .take_while(|(a, b)| a == b)
        .count();
    let start = new.char_indices().nth(prefix).map_or(new.len(), |(i, _)| i);
    let end = new
        .char_indices()
        .nth(new_n - suffix)
        .map_or(new.len(), |(i, _)| i);
    (prefix, old_n - prefix - suffix, &new[start..end])
}

/// The materialized record (without its primary key).
pub(crate) fn materialize<R: ReadDoc>(doc: &R, def: &CollectionDef) -> Map<String, Value> {
    view(doc, def).row
}

/// The materialized record and the fields that have counter parts.
///
/// One pass over the root keys: a counter's parts are collected as they come (in key order) and
/// folded onto its base afterwards, as [`counter_value`] does, instead of walking every key again
/// per counter field.
pub(crate) fn view<R: ReadDoc>(doc: &R, def: &CollectionDef) -> View {
    let mut out = Map::new();
    let mut parts: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    // One pass over the root map yields each key's winning value: enough for counter parts,
    // counter bases and lww/text scalars; maps (whose concurrent versions merge) and the other
    // policies read all values. (`MapRangeItem::conflict` is not used: automerge 0.6.1 reports
    // it reliably only for the last key.)
    for item in doc.map_range(&ROOT, ..) {
        let key = item.key;
        if let Some((field, _)) = key.split_once(COUNTER_SEP) {
            let values = parts.entry(field.to_owned()).or_default();
            values.extend(scalar_i64(&item.value));
            continue;
        }
        let policy = def.policy(key);
        let map = matches!(item.value, automerge::Value::Object(ObjType::Map));
        let value = match policy {
            // A counter's parts are added below; its base alone is what it holds so far.
            MergePolicy::Counter => Some(Value::from(scalar_i64(&item.value).unwrap_or(0))),
            MergePolicy::Lww | MergePolicy::Text if !map => {
                Some(to_json(doc, &item.value, &item.id, 0))
            }
            _ => field_value(doc, policy, key),
        };
        if let Some(v) = value {
            out.insert(key.to_owned(), v);
        }
    }
    let mut counted = Vec::with_capacity(parts.len());
    for (field, values) in parts {
        let total = values
            .into_iter()
            .fold(counter_base(doc, &field), i64::saturating_add);
        out.insert(field.clone(), Value::from(total));
        counted.push(field);
    }
    debug_assert_eq!(out, materialize_by_key(doc, def), "one-pass materialize");
    View { row: out, counted }
}

/// [`materialize`] one key at a time: the reference debug builds check the one-pass version
/// against.
fn materialize_by_key<R: ReadDoc>(doc: &R, def: &CollectionDef) -> Map<String, Value> {
    let mut out = Map::new();
    let mut parts: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for key in doc.keys(&ROOT) {
        match key.split_once(COUNTER_SEP) {
            Some((field, _)) => {
                let part = doc
                    .get(&ROOT, key.as_str())
                    .ok()
                    .flatten()
                    .and_then(|(v, _)| scalar_i64(&v));
                let values = parts.entry(field.to_owned()).or_default();
                values.extend(part);
            }
            None => {
                let policy = def.policy(&key);
                let value = match policy {
                    MergePolicy::Counter => Some(Value::from(counter_base(doc, &key))),
                    _ => field_value(doc, policy, &key),
                };
                if let Some(v) = value {
                    out.insert(key, v);
                }
            }
        }
    }
    for (field, values) in parts {
        let total = values
            .into_iter()
            .fold(counter_base(doc, &field), i64::saturating_add);
        out.insert(field, Value::from(total));
    }
    out
}

/// The visible value of one top-level field under its policy.
fn field_value<R: ReadDoc>(doc: &R, policy: &MergePolicy, field: &str) -> Option<Value> {
    match policy {
        MergePolicy::Counter => Some(Value::from(counter_value(doc, field))),
        MergePolicy::Max => extreme(doc, field, Ordering::Greater),
        MergePolicy::Min => extreme(doc, field, Ordering::Less),
        MergePolicy::Priority { order } => by_priority(doc, field, order),
        MergePolicy::Lww | MergePolicy::Text => prop_json(doc, &ROOT, field, 0),
    }
}

/// True when some replica has a counter part for `field`.
fn has_counter_parts<R: ReadDoc>(doc: &R, field: &str) -> bool {
    doc.keys(&ROOT)
        .any(|k| k.split_once(COUNTER_SEP).is_some_and(|(f, _)| f == field))
}

/// The int at `field` itself (0 if none).
fn counter_base<R: ReadDoc>(doc: &R, field: &str) -> i64 {
    doc.get(&ROOT, field)
        .ok()
        .flatten()
        .and_then(|(v, _)| scalar_i64(&v))
        .unwrap_or(0)
}

/// Base int at `field` (if any) plus every replica's part.
fn counter_value<R: ReadDoc>(doc: &R, field: &str) -> i64 {
    let base = counter_base(doc, field);
    doc.keys(&ROOT)
        .filter(|k| k.split_once(COUNTER_SEP).is_some_and(|(f, _)| f == field))
        .filter_map(|k| {
            doc.get(&ROOT, k.as_str())
                .ok()
                .flatten()
                .and_then(|(v, _)| scalar_i64(&v))
        })
        .fold(base, i64::saturating_add)
}

/// The greatest (`Greater`) or least (`Less`) of the concurrent values of `field`.
fn extreme<R: ReadDoc>(doc: &R, field: &str, wins: Ordering) -> Option<Value> {
    let all = doc.get_all(&ROOT, field).ok()?;
    pick_extreme(all.iter().map(|(v, id)| to_json(doc, v, id, 0)), wins)
}

/// The greatest (`Greater`) or least (`Less`) of `values` (concurrent values in Automerge's
/// order); the first of equals.
pub(crate) fn pick_extreme(values: impl Iterator<Item = Value>, wins: Ordering) -> Option<Value> {
    values.reduce(|best, v| if json_cmp(&v, &best) == wins { v } else { best })
}

/// The concurrent value of `field` earliest in `order`; ties go to Automerge's winner.
fn by_priority<R: ReadDoc>(doc: &R, field: &str, order: &[Value]) -> Option<Value> {
    let all = doc.get_all(&ROOT, field).ok()?;
    let winner = doc.get(&ROOT, field).ok()??.1;
    let values = all
        .iter()
        .map(|(v, id)| (to_json(doc, v, id, 0), *id == winner))
        .collect();
    pick_by_priority(values, order)
}

/// Of `values` (concurrent values in Automerge's order, each saying whether it is Automerge's
/// winner), the one earliest in `order`; ties go to the winner, else to the first.
pub(crate) fn pick_by_priority(values: Vec<(Value, bool)>, order: &[Value]) -> Option<Value> {
    let rank = |v: &Value| order.iter().position(|o| o == v).unwrap_or(order.len());
    let best = values.iter().map(|(v, _)| rank(v)).min()?;
    let mut tied = values.into_iter().filter(|(v, _)| rank(v) == best);
    let first = tied.next()?;
    let mut chosen = first.0;
    let mut chosen_is_winner = first.1;
    for (v, is_winner) in tied {
        if !chosen_is_winner {
            chosen = v;
            chosen_is_winner = is_winner;
        }
    }
    Some(chosen)
}

/// Converts an Automerge value to JSON. Nesting beyond [`MAX_DEPTH`] becomes null.
/// One value of a field as JSON (a conflict candidate).
pub(crate) fn value_json<R: ReadDoc>(doc: &R, value: &automerge::Value<'_>, id: &ObjId) -> Value {
    to_json(doc, value, id, 0)
}

fn to_json<R: ReadDoc>(doc: &R, value: &automerge::Value<'_>, id: &ObjId, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    match value {
        automerge::Value::Scalar(s) => scalar_to_json(s),
        automerge::Value::Object(ObjType::Text) => Value::String(doc.text(id).unwrap_or_default()),
        automerge::Value::Object(ObjType::List) => Value::Array(
            (0..doc.length(id))
                .filter_map(|i| doc.get(id, i).ok().flatten())
                .map(|(v, child)| to_json(doc, &v, &child, depth + 1))
                .collect(),
        ),
        automerge::Value::Object(ObjType::Map | ObjType::Table) => Value::Object(
            doc.keys(id)
                .filter_map(|k| Some((k.clone(), prop_json(doc, id, &k, depth + 1)?)))
                .collect(),
        ),
    }
}

/// The JSON at `obj[key]`. Maps created concurrently under one key are merged (the winner's
/// entries take precedence), so concurrent first writes of a nested object both survive.
fn prop_json<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str, depth: usize) -> Option<Value> {
    let (winner, winner_id) = doc.get(obj, key).ok()??;
    let mut json = to_json(doc, &winner, &winner_id, depth);
    if !matches!(winner, automerge::Value::Object(ObjType::Map)) {
        return Some(json);
    }
    for (v, id) in doc.get_all(obj, key).ok()? {
        if id != winner_id && matches!(v, automerge::Value::Object(ObjType::Map)) {
            json = deep_merge(to_json(doc, &v, &id, depth), json);
        }
    }
    Some(json)
}

/// `over` merged into `base`: objects merge key by key, anything else is replaced by `over`.
fn deep_merge(base: Value, over: Value) -> Value {
    match (base, over) {
        (Value::Object(mut b), Value::Object(o)) => {
            for (k, v) in o {
                let merged = match b.remove(&k) {
                    Some(old) => deep_merge(old, v),
                    None => v,
                };
                b.insert(k, merged);
            }
            Value::Object(b)
        }
        (_, over) => over,
    }
}

pub(crate) fn scalar_to_json(s: &ScalarValue) -> Value {
    match s {
        ScalarValue::Str(s) => Value::String(s.to_string()),
        ScalarValue::Int(i) | ScalarValue::Timestamp(i) => Value::from(*i),
        ScalarValue::Uint(u) => Value::from(*u),
        ScalarValue::F64(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        ScalarValue::Counter(_) => s.to_i64().map_or(Value::Null, Value::from),
        ScalarValue::Boolean(b) => Value::Bool(*b),
        ScalarValue::Bytes(b) => Value::String(hex::encode(b)),
        ScalarValue::Null | ScalarValue::Unknown { .. } => Value::Null,
    }
}

fn to_scalar(v: &Value) -> ScalarValue {
    match v {
        Value::Bool(b) => ScalarValue::Boolean(*b),
        Value::String(s) => ScalarValue::Str(s.as_str().into()),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => ScalarValue::Int(i),
            (None, Some(u)) => ScalarValue::Uint(u),
            _ => ScalarValue::F64(n.as_f64().unwrap_or(0.0)),
        },
        _ => ScalarValue::Null,
    }
}

fn scalar_i64(v: &automerge::Value<'_>) -> Option<i64> {
    match v {
        automerge::Value::Scalar(s) => s.to_i64(),
        automerge::Value::Object(_) => None,
    }
}

/// The JSON type name, for messages.
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn json_kind(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

/// A total order on JSON values: by type (null < bool < number < string < array < object), then
/// by value; integers compare exactly.
pub(crate) fn json_cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ if json_kind(a) != json_kind(b) => json_kind(a).cmp(&json_kind(b)),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

fn num_cmp(x: &Number, y: &Number) -> Ordering {
    let int = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(x), int(y)) {
        (Some(a), Some(b)) => a.cmp(&b),
        _ => x
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&y.as_f64().unwrap_or(0.0)),
    }
}

/// Nesting depth of a JSON value (a scalar is 0).
pub(crate) fn json_depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(json_depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// True when a string or an object key anywhere in `v` holds U+0000, which Postgres `text` and
/// `jsonb` cannot store (and C clients cut strings at).
pub(crate) fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
#[path = "doc_tests.rs"]
pub(super) mod tests;
