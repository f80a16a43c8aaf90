//! First changes derived from rows: a record created by one plain change and not changed since
//! keeps no Automerge state; its change is re-encoded from its `records` row when needed.
//!
//! A record's first change written by [`super::doc::put_fields`] for scalar fields is one put
//! per field on the root map, in the fields' order, by the writing replica's actor, with
//! sequence 1, start op 1, time 0 (this code never sets a commit time), no message, no
//! dependencies and no extra bytes. A `counter` field is put under this replica's part key
//! (`<field>~<actor hex>`, see `doc`) with the same integer. Its `records` row holds the same
//! values plus the primary key. So the change is a function of the row, the record id, the
//! actor and which fields are counters: [`encode`] writes its bytes directly (see
//! [`super::root_puts`]), from the row's values: no JSON text, no Automerge document.
//!
//! The primary key is found without the schema: it is the one field whose value is the record
//! id (a string, or an integer key as a number); a row with no or several such fields is not
//! derived.
//!
//! **The marker.** A derived `docs` row stores a [`Marker`] as its `state`: a tag byte that no
//! Automerge state starts with ([`TAG`]; states start with Automerge's magic bytes), the first
//! [`HASH_PREFIX`] bytes of the change's hash, and a bitmask of the non-key fields (in row order)
//! that are counters. So re-encoding needs no schema (readers and schema changes have none at
//! hand), and it is **verified on every use**: a re-encoding whose hash does not start with the
//! stored prefix is refused with [`Underivable::Mismatch`] — never relayed, never loaded — which
//! is what a build that encodes differently (another Automerge, serde_json parsing floats or
//! ordering keys differently through feature unification) would produce. The golden test in
//! `derived_paths_tests` makes such a change fail CI first.
//!
//! **Derived only when verified.** A row is stored derived only when [`derive`], run on the row
//! as written, reproduces the committed (or received) change byte for byte; anything else (nested
//! values, text, a commit time, a message, a peer's non-canonical encoding, a field holding the
//! id) is stored as before. The actor is the lending transaction's origin (only lending rows are
//! derived; a received change's actor is checked to be its origin).
//!
//! **Invariant**: the `records` JSON of a derived row's incarnation does not change while the
//! row is derived. Everything that changes it first materializes the row (writes the real
//! state) or frees it: the next change stored for a loaded document writes the re-encoded first
//! change with it (`docs::store_change`), freeing a dead incarnation gives the change back first,
//! while the row still holds the JSON (so deletes free before they tombstone), and
//! re-materializing a collection after a schema change materializes its derived rows first
//! (`docs::materialize_derived`).

use serde_json::{Map, Value};

use super::doc::COUNTER_SEP;
use super::root_puts::{self, Encoded, Scalar};
use crate::ids::ReplicaId;
use crate::schema::{CollectionDef, MergePolicy};

/// First byte of a [`Marker`]; an Automerge state starts with its magic bytes (`0x85 ...`).
pub(crate) const TAG: u8 = 0;

/// Bytes of the change hash a marker keeps (a mismatch passes with probability 2^-64).
pub(crate) const HASH_PREFIX: usize = 8;

/// True when a stored `docs` state is a [`Marker`], not an Automerge state.
pub(crate) fn is_marker(state: &[u8]) -> bool {
    state.first() == Some(&TAG)
}

/// Why a derived first change cannot be given.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Underivable {
    /// The row of the derived incarnation is missing, or is no longer one plain change.
    #[error(
        "the first change of record {0:?} is derived from its row, but the row no longer encodes one (the records table was changed outside Meshlite?)"
    )]
    NoRow(String),
    /// The re-encoding hashes differently from the change that was committed.
    #[error(
        "the first change of record {0:?} re-encodes from its row to another change than the one committed (hash {1}…, stored {2}…): this build encodes Automerge changes or parses JSON differently from the build that wrote the file (or the file was changed outside Meshlite); it is refused rather than relayed. Open the file with the build that wrote it, or report this build"
    )]
    Mismatch(String, String, String),
}

impl From<Underivable> for rusqlite::Error {
    fn from(e: Underivable) -> Self {
        let what = e.to_string();
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, what.into())
    }
}

/// What a derived `docs` row stores instead of its state (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Marker {
    /// The first bytes of the change's hash.
    hash: [u8; HASH_PREFIX],
    /// Bit `i` (of byte `i / 8`): the `i`-th non-key field in row order is a counter.
    counters: Vec<u8>,
}

impl Marker {
    /// The stored form.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + HASH_PREFIX + self.counters.len());
        out.push(TAG);
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&self.counters);
        out
    }

    /// Reads a stored marker (`None` when `bytes` is not one).
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(&[TAG])?;
        let hash = rest.get(..HASH_PREFIX)?.try_into().ok()?;
        Some(Self {
            hash,
            counters: rest[HASH_PREFIX..].to_vec(),
        })
    }

    fn is_counter(&self, field: usize) -> bool {
        self.counters
            .get(field / 8)
            .is_some_and(|b| b & (1 << (field % 8)) != 0)
    }
}

/// The marker of a new record whose row (primary key included) is `row`, when the re-encoding
/// of `row` written by `actor` under `def` reproduces `change` byte for byte; `None` when the
/// record must keep its state.
pub(crate) fn derive(
    def: &CollectionDef,
    actor: &ReplicaId,
    id: &str,
    row: &Map<String, Value>,
    change: &[u8],
) -> Option<Marker> {
    let key = primary_key(row, id)?;
    let mut counters = Vec::new();
    for (n, (field, value)) in row.iter().filter(|(f, _)| *f != key).enumerate() {
        if value.is_object() || value.is_array() {
            return None;
        }
        match def.policy(field) {
            MergePolicy::Text => return None,
            MergePolicy::Counter if value.is_i64() => {
                counters.resize(n / 8 + 1, 0);
                counters[n / 8] |= 1 << (n % 8);
            }
            _ => {}
        }
    }
    let mut marker = Marker {
        hash: [0; HASH_PREFIX],
        counters,
    };
    let encoded = encode(actor, row, key, &marker)?;
    if encoded.bytes != change {
        return None;
    }
    marker.hash.copy_from_slice(&encoded.hash[..HASH_PREFIX]);
    Some(marker)
}

/// The first change of a derived row of record `id`, from its marker, its lender's origin and
/// its `records` JSON (`None` when the row is gone), verified against the marker's hash.
pub(crate) fn rederive(
    id: &str,
    marker: &[u8],
    origin: &ReplicaId,
    json: Option<&str>,
) -> Result<Vec<u8>, Underivable> {
    let no_row = || Underivable::NoRow(id.to_owned());
    let marker = Marker::from_bytes(marker).ok_or_else(no_row)?;
    let Some(Ok(Value::Object(row))) = json.map(serde_json::from_str::<Value>) else {
        return Err(no_row());
    };
    let key = primary_key(&row, id).ok_or_else(no_row)?;
    let Encoded { bytes, hash } = encode(origin, &row, key, &marker).ok_or_else(no_row)?;
    if hash[..HASH_PREFIX] != marker.hash {
        return Err(Underivable::Mismatch(
            id.to_owned(),
            hex::encode(&hash[..HASH_PREFIX]),
            hex::encode(marker.hash),
        ));
    }
    Ok(bytes)
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

/// The change putting every field of `row` but `primary_key` (counters under `actor`'s part
/// key, as `marker` says), by `actor`; `None` for a nested value.
fn encode(
    actor: &ReplicaId,
    row: &Map<String, Value>,
    primary_key: &str,
    marker: &Marker,
) -> Option<Encoded> {
    let actor_hex = actor.to_hex();
    let fields = row.iter().filter(|(key, _)| key.as_str() != primary_key);
    let part_keys: Vec<Option<String>> = fields
        .clone()
        .enumerate()
        .map(|(n, (key, _))| {
            marker
                .is_counter(n)
                .then(|| format!("{key}{COUNTER_SEP}{actor_hex}"))
        })
        .collect();
    let mut puts = Vec::with_capacity(part_keys.len());
    for ((key, value), part) in fields.zip(&part_keys) {
        let key = part.as_deref().unwrap_or(key);
        puts.push((key, scalar(value)?));
    }
    Some(root_puts::encode(actor, puts.into_iter()))
}

/// A JSON scalar as `doc`'s `to_scalar` writes it (`int`, then `uint`, else `f64`); `None` for
/// a nested value.
fn scalar(value: &Value) -> Option<Scalar<'_>> {
    Some(match value {
        Value::Null => Scalar::Null,
        Value::Bool(b) => Scalar::Bool(*b),
        Value::String(s) => Scalar::Str(s),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Scalar::Int(i),
            (None, Some(u)) => Scalar::Uint(u),
            _ => Scalar::F64(n.as_f64().unwrap_or(0.0)),
        },
        Value::Object(_) | Value::Array(_) => return None,
    })
}

#[cfg(test)]
#[path = "derived_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "derived_paths_tests.rs"]
mod paths_tests;
