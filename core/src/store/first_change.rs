//! A new record's first change materialized straight from the change, without a document.
//!
//! Building an Automerge document for a record that has none costs more than everything else
//! remote apply does for it (a new document, applying the change, reading the root map back).
//! A record's first change written by [`super::doc::put_fields`] is, in the common case, a set
//! of scalar puts on the root map, one per key, with no dependencies and no predecessors: then
//! the document it would build holds exactly those values, one per key, with no conflicts, and
//! [`super::doc::view`] of it is a function of the (key, value) pairs alone. [`materialize`]
//! computes that function from the decoded operations; anything else (nested objects, text,
//! deletes, increments, marks, a key written twice, any dependency or predecessor) returns
//! `None` and the caller builds the document as before.
//!
//! The record's stored state is then the change bytes alone (a valid `docs` state: a document
//! loads from a concatenation of changes), and the cache holds no document for it: a later
//! change loads it from that state like any record not in the cache.
//!
//! Debug builds check every result against the document path (`debug_assert_eq!`).

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::{Change, ScalarValue};
use serde_json::{Map, Value};

use super::doc::{COUNTER_SEP, scalar_to_json};
use crate::schema::{CollectionDef, MergePolicy};

/// The materialized record (without its primary key) of a document holding only `change`, or
/// `None` when the change is not plain scalar puts on distinct root keys with no dependencies.
pub(crate) fn materialize(change: &Change, def: &CollectionDef) -> Option<Map<String, Value>> {
    if !change.deps().is_empty() {
        return None;
    }
    let puts = catch_unwind(AssertUnwindSafe(|| root_puts(change))).ok()??;
    let row = view(&puts, def);
    #[cfg(debug_assertions)]
    debug_assert_eq!(
        Some(&row),
        by_document(change, def).as_ref(),
        "first change"
    );
    Some(row)
}

/// The scalar put on each root key, if every op of `change` is one and no key repeats.
fn root_puts(change: &Change) -> Option<BTreeMap<String, ScalarValue>> {
    let mut puts = BTreeMap::new();
    for op in change.decode().operations {
        if op.insert || !op.pred.is_empty() || !op.key.is_map_key() {
            return None;
        }
        let plain = |v: serde_json::Result<Value>, want: &str| matches!(v, Ok(Value::String(s)) if s == want);
        if !plain(serde_json::to_value(&op.action), "set")
            || !plain(serde_json::to_value(&op.obj), "_root")
        {
            return None;
        }
        let Ok(Value::String(key)) = serde_json::to_value(&op.key) else {
            return None;
        };
        let value = op.primitive_value()?;
        if puts.insert(key, value).is_some() {
            return None;
        }
    }
    Some(puts)
}

/// [`super::doc::view`]'s row for a root map holding exactly `puts`: one value per key, so
/// every policy's pick among concurrent values is that value.
fn view(puts: &BTreeMap<String, ScalarValue>, def: &CollectionDef) -> Map<String, Value> {
    let mut out = Map::new();
    let mut parts: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (key, value) in puts {
        if let Some((field, _)) = key.split_once(COUNTER_SEP) {
            parts.entry(field).or_default().extend(value.to_i64());
            continue;
        }
        let json = match def.policy(key) {
            MergePolicy::Counter => Value::from(value.to_i64().unwrap_or(0)),
            _ => scalar_to_json(value),
        };
        out.insert(key.clone(), json);
    }
    for (field, values) in parts {
        let base = puts.get(field).and_then(ScalarValue::to_i64).unwrap_or(0);
        let total = values.into_iter().fold(base, i64::saturating_add);
        out.insert(field.to_owned(), Value::from(total));
    }
    out
}

/// The row the document path materializes (the reference debug builds check against).
#[cfg(debug_assertions)]
fn by_document(change: &Change, def: &CollectionDef) -> Option<Map<String, Value>> {
    let mut doc =
        automerge::Automerge::new_with_encoding(automerge::TextEncoding::UnicodeCodePoint);
    doc.apply_changes([change.clone()]).ok()?;
    Some(super::doc::materialize(&doc, def))
}

#[cfg(test)]
#[path = "first_change_tests.rs"]
mod tests;
