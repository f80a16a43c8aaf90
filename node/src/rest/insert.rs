//! `POST /rest/v1/{table}`: insert one object or an array in one transaction, or upsert.
//!
//! - A plain insert is the store's `WriteOp::Insert`: the writer refuses a live key inside the
//!   transaction, so of several racing inserts of one id exactly one gets 201 and the others
//!   23505 (a peer's concurrent insert of the same id still merges: replicas do not
//!   coordinate). An insert of a deleted key re-creates the record (a new incarnation), as
//!   Postgres users expect of insert after delete.
//! - `resolution=merge-duplicates` puts every object (merged into a live row);
//!   `resolution=ignore-duplicates` inserts the objects whose key is not live, keeping the
//!   first of repeated keys, and drops a key that a racing write made live meanwhile.
//! - `on_conflict=` may only name the primary key: no other field is unique in a CRDT store
//!   (replicas accept writes apart, so uniqueness of a field cannot be checked), and Postgres
//!   answers an upsert on columns without a unique constraint with 42P10. Without a
//!   `resolution` it is ignored, as PostgREST ignores it.
//! - `columns=` picks the columns written; a listed column an object lacks is written as null,
//!   or with `Prefer: missing=default` as its declared default. Without `columns=`, the objects
//!   of an array must have the same keys (PGRST102), and absent columns take their defaults.
//! - `Prefer: return=headers-only` answers 201 with a `Location` naming the row when exactly
//!   one row was written (`write::created`).

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use meshlite_core::schema::MergePolicy;
use meshlite_core::store::{Store, WriteError, WriteOp};
use serde_json::{Map, Value};

use super::error::RestError;
use super::prefer::Resolution;
use super::table::Table;
use super::write::{Request, objects, read_body, try_commit};
use crate::auth::Caller;
use crate::state::AppState;

/// The objects of one insert.
type Objects = Vec<Map<String, Value>>;

/// The handler.
pub async fn insert(
    State(s): State<AppState>,
    caller: Caller,
    Path(collection): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RestError> {
    let r = Request::new(&s, &caller, &collection, raw.as_deref(), &headers)?;
    let body = read_body(body)?;
    check_on_conflict(&r)?;
    let mut objs = objects(&body)?;
    shape_columns(&r, &mut objs)?;
    r.table.claim_all(&mut objs)?;
    let written = match (r.table.is_log(), r.prefer.resolution) {
        (true, _) => r.commit(&s.store, appends(&r.table, objs)).await?,
        (false, Resolution::Error) => r.commit(&s.store, inserts(&r.table, objs)).await?,
        (false, Resolution::MergeDuplicates) => {
            r.table
                .check_upsert(&s.store, Resolution::MergeDuplicates, &objs)
                .await?;
            r.commit(&s.store, puts(&r.table, objs)).await?
        }
        (false, Resolution::IgnoreDuplicates) => {
            let fresh = not_live(&s.store, &r.table, objs).await?;
            insert_skipping_duplicates(&s.store, &r, fresh).await?
        }
    };
    r.answer(StatusCode::CREATED, written)
}

/// `on_conflict=` of an upsert must name exactly the primary key: 42703 for an unknown
/// column, 42P10 for any other (see the module doc).
fn check_on_conflict(r: &Request) -> Result<(), RestError> {
    let Some(spec) = r.q.on_conflict.as_deref() else {
        return Ok(());
    };
    if r.prefer.resolution == Resolution::Error {
        return Ok(());
    }
    let names: BTreeSet<&str> = spec.split(',').collect();
    for n in &names {
        r.table.read_column(n)?;
    }
    match names.into_iter().collect::<Vec<_>>().as_slice() {
        [only] if *only == r.table.key() => Ok(()),
        _ => Err(RestError::bad_on_conflict(spec)),
    }
}

/// Applies `columns=` (and `missing=`) to the objects, or checks that an array's objects have
/// the same keys; every written name must be a column (PGRST204).
fn shape_columns(r: &Request, objs: &mut Objects) -> Result<(), RestError> {
    let table = &r.table;
    let Some(cols) = &r.q.columns else {
        let first: Option<BTreeSet<&String>> = objs.first().map(|o| o.keys().collect());
        if objs.iter().any(|o| Some(o.keys().collect()) != first) {
            return Err(RestError::bad_body("All object keys must match"));
        }
        return first
            .into_iter()
            .flatten()
            .try_for_each(|k| table.write_column(k));
    };
    for c in cols {
        table.write_column(c)?;
    }
    for o in objs.iter_mut() {
        o.retain(|k, _| cols.contains(k));
        for c in cols {
            if o.contains_key(c) {
                continue;
            }
            if let Some(v) = missing_value(table, c, r.prefer.missing_default)? {
                o.insert(c.clone(), v);
            }
        }
    }
    Ok(())
}

/// The value of listed column `c` an object lacks: its declared default (`missing=default`) or
/// null; `None` leaves it out: the key under `missing=default` (generated), and a counter
/// without a default (a counter holds a number, never null: a new row shows null, an existing
/// one keeps its count). A missing key without `missing=default` is null in a NOT NULL
/// column: 23502.
fn missing_value(table: &Table, c: &str, default: bool) -> Result<Option<Value>, RestError> {
    if c == table.key() {
        return match default {
            true => Ok(None),
            false => Err(RestError::not_null(&table.name, c)),
        };
    }
    let declared = table.def.fields.get(c).and_then(|f| f.default.clone());
    let value = match default {
        true => declared,
        false => None,
    };
    let counter = *table.def.policy(c) == MergePolicy::Counter;
    match (value, counter) {
        (Some(v), _) => Ok(Some(v)),
        (None, true) => Ok(None),
        (None, false) => Ok(Some(Value::Null)),
    }
}

fn appends(table: &Table, objs: Objects) -> Vec<WriteOp> {
    let op = |o| WriteOp::Append {
        collection: table.name.clone(),
        value: Value::Object(o),
    };
    objs.into_iter().map(op).collect()
}

fn inserts(table: &Table, objs: Objects) -> Vec<WriteOp> {
    let op = |o| WriteOp::Insert {
        collection: table.name.clone(),
        value: Value::Object(o),
    };
    objs.into_iter().map(op).collect()
}

fn puts(table: &Table, objs: Objects) -> Vec<WriteOp> {
    let op = |o| WriteOp::Put {
        collection: table.name.clone(),
        value: Value::Object(o),
        recreate: true,
    };
    objs.into_iter().map(op).collect()
}

/// The objects whose key is not live, keeping the first of repeated keys (objects without a
/// key get a generated one and are kept).
async fn not_live(store: &Store, table: &Table, objs: Objects) -> Result<Objects, RestError> {
    let mut seen = BTreeSet::new();
    let mut keep = Vec::with_capacity(objs.len());
    for o in objs {
        if let Some(id) = table.id_of(&o) {
            let live = store
                .get_async(&table.name, &id)
                .await
                .map_err(|e| RestError::from_read(&table.name, e))?
                .is_some();
            if live || !seen.insert(id) {
                continue;
            }
        }
        keep.push(o);
    }
    Ok(keep)
}

/// Inserts `objs`, dropping an object whose key a racing write made live since `not_live`
/// looked, and retrying (each retry drops one object, so this ends).
async fn insert_skipping_duplicates(
    store: &Store,
    r: &Request,
    mut objs: Objects,
) -> Result<Vec<Value>, RestError> {
    loop {
        match try_commit(store, inserts(&r.table, objs.clone())).await {
            Err(WriteError::Duplicate { id, .. }) => {
                let dup = objs
                    .iter()
                    .rposition(|o| r.table.id_of(o).as_ref() == Some(&id));
                match dup {
                    Some(i) => drop(objs.remove(i)),
                    None => {
                        return Err(r.write_error(WriteError::Duplicate {
                            collection: r.table.name.clone(),
                            id,
                        }));
                    }
                }
            }
            other => return other.map_err(|e| r.write_error(e)),
        }
    }
}
