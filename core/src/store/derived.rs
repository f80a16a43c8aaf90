//! First changes derived from rows: a record created by one plain change and not changed since
//! keeps no Automerge state; its change is re-encoded from its `records` row when needed.
//!
//! A record's first change written by [`super::doc::put_fields`] for scalar fields is one put
//! per field on the root map, in key order (the fields are a sorted map), by the writing
//! replica's actor, with sequence 1, start op 1, time 0 (Automerge's default: this code never
//! sets a commit time), no message, no dependencies and no extra bytes. Its `records` row holds
//! the same values plus the primary key. So the change is a function of the row, the record id
//! and the actor: [`encode`] computes it, with Automerge's own change builder (through
//! [`automerge::ExpandedChange`]), hence byte for byte what a transaction commit writes for
//! those ops.
//!
//! The primary key is found without the schema (so readers and a schema change need none): it
//! is the one field whose value is the record id (a string, or an integer key as a number); a
//! row with no or several such fields is not derivable.
//!
//! **Safety by construction.** A `docs` row is stored derived (an empty `state`, see `docs`)
//! only when [`encode`] of the row's stored JSON text reproduces the real change byte for byte
//! ([`reproduces`]); any other change (nested values, text, counters, a commit time, a message,
//! a non-canonical encoding from a peer, a field holding the id) is stored as before. The actor
//! is the lending transaction's origin (only lending rows are derived; a received change's actor
//! is checked to be its origin), so a derived row needs no column of its own.
//!
//! **Invariant**: the `records` JSON of a derived row's incarnation does not change while the
//! row is derived. Everything that changes it first materializes the row (writes the real
//! state) or frees it: the next change stored for a loaded document writes the re-encoded first
//! change with it (`docs::store_change`), freeing a dead incarnation gives the change back first,
//! while the row still holds the JSON (so deletes free before they tombstone), and
//! re-materializing a collection after a schema change materializes its derived rows first
//! (`docs::materialize_derived`). A re-encoding that finds no row of the same incarnation is
//! reported as corruption, never guessed.

use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::{Change, ExpandedChange};
use serde_json::{Map, Value};

use crate::ids::ReplicaId;
use crate::schema::{CollectionDef, MergePolicy};

/// The first change of record `id` whose stored row (JSON text, primary key included) is
/// `row`, written by `actor`; `None` when the row cannot be the result of one plain change.
pub(crate) fn encode(actor: &ReplicaId, id: &str, row: &str) -> Option<Vec<u8>> {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(row) else {
        return None;
    };
    let key = primary_key(&fields, id)?;
    let text = change_json(actor, &fields, key)?;
    let expanded: ExpandedChange = serde_json::from_str(&text).ok()?;
    let change = catch_unwind(AssertUnwindSafe(|| Change::from(expanded))).ok()?;
    Some(change.raw_bytes().to_vec())
}

/// Whether a new record holding `fields` can be derived at all: no counter or text field (they
/// are written as other keys or objects) and no nested value. A cheap test that spares records
/// that never re-encode the attempt.
pub(crate) fn worth_trying(def: &CollectionDef, fields: &Map<String, Value>) -> bool {
    fields.iter().all(|(field, value)| {
        !matches!(def.policy(field), MergePolicy::Counter | MergePolicy::Text)
            && !matches!(value, Value::Object(_) | Value::Array(_))
    })
}

/// True when [`encode`] of `row` is exactly `change`.
pub(crate) fn reproduces(actor: &ReplicaId, id: &str, row: &str, change: &[u8]) -> bool {
    encode(actor, id, row).is_some_and(|bytes| bytes == change)
}

/// The one field whose value is the record id.
fn primary_key<'m>(fields: &'m Map<String, Value>, id: &str) -> Option<&'m str> {
    let is_id = |v: &Value| match v {
        Value::String(s) => s == id,
        Value::Number(n) => n.as_i64().is_some_and(|i| i.to_string() == id),
        _ => false,
    };
    let mut keys = fields.iter().filter(|(_, v)| is_id(v)).map(|(k, _)| k);
    let key = keys.next()?;
    keys.next().is_none().then_some(key.as_str())
}

/// The change as [`ExpandedChange`]'s JSON form: one put per field but `primary_key`, typed as
/// [`super::doc`]'s `to_scalar` types it (`int`, then `uint`, else `float64`); `None` for a
/// nested value.
fn change_json(
    actor: &ReplicaId,
    fields: &Map<String, Value>,
    primary_key: &str,
) -> Option<String> {
    let mut out = String::with_capacity(128 + 96 * fields.len());
    out.push_str(r#"{"actor":""#);
    out.push_str(&hex::encode(actor.0));
    out.push_str(r#"","seq":1,"startOp":1,"time":0,"message":null,"deps":[],"ops":["#);
    let puts = fields.iter().filter(|(key, _)| key.as_str() != primary_key);
    for (n, (key, value)) in puts.enumerate() {
        let datatype = match value {
            Value::Object(_) | Value::Array(_) => return None,
            Value::Number(v) if v.is_i64() => r#""int""#,
            Value::Number(v) if v.is_u64() => r#""uint""#,
            Value::Number(_) => r#""float64""#,
            _ => "null",
        };
        if n > 0 {
            out.push(',');
        }
        out.push_str(r#"{"action":"set","obj":"_root","key":"#);
        out.push_str(&serde_json::to_string(key).ok()?);
        if datatype != "null" {
            out.push_str(r#","datatype":"#);
            out.push_str(datatype);
        }
        out.push_str(r#","value":"#);
        out.push_str(&serde_json::to_string(value).ok()?);
        out.push_str(r#","pred":[]}"#);
    }
    out.push_str("]}");
    Some(out)
}

/// The first change of a derived row of record `id`, from its lender's origin and its
/// `records` JSON of the same incarnation (`None` when either is missing or does not encode).
pub(crate) fn rederive(id: &str, origin: Option<&[u8]>, json: Option<&str>) -> Option<Vec<u8>> {
    let actor = ReplicaId::from_slice(origin?)?;
    encode(&actor, id, json?)
}

/// A derived row whose change cannot be re-encoded (its `records` row changed or is gone).
pub(crate) fn underivable(id: &str) -> rusqlite::Error {
    let what =
        format!("the derived first change of record {id:?} cannot be re-encoded from its row");
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, what.into())
}

#[cfg(test)]
#[path = "derived_tests.rs"]
mod tests;
