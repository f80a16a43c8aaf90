//! `POST` (insert, upsert), `PATCH` (update) and `DELETE` on `/rest/v1/{table}`.
//!
//! Every request is validated whole (URL, body, column names) before the store is touched,
//! and commits as ONE store transaction: a malformed request, or one refused by the store,
//! writes nothing.
//!
//! A plain insert of a live key is 23505. The existence check reads before the transaction is
//! queued, so a write of the same key by a peer or another client in between is merged (as an
//! upsert) rather than refused; a key-reserving insert op in the store would close that gap.
//! An insert of a deleted key re-creates the record (a new incarnation), as Postgres users
//! expect of insert after delete. PATCH sets the given fields on every matching row (all rows
//! without filters, as PostgREST); a `counter` field set to a value applies the difference, as
//! the store's put does.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use meshlite_core::store::{Store, WriteError, WriteOp};
use serde_json::{Map, Value};

use super::error::RestError;
use super::filter::Plan;
use super::prefer::{Prefer, Resolution, Return};
use super::query::{UrlQuery, parse_raw};
use super::response::{Accept, empty, rows};
use super::rows::matching;
use super::select::SelectItem;
use super::table::Table;
use crate::auth::{Action, Caller};
use crate::state::AppState;

/// Most rows one write request may touch.
pub const MAX_ROWS_PER_WRITE: usize = 10_000;

/// What every write parses first.
struct Request {
    table: Table,
    q: UrlQuery,
    prefer: Prefer,
    accept: Accept,
}

impl Request {
    fn new(
        s: &AppState,
        caller: &Caller,
        collection: &str,
        raw: Option<&str>,
        h: &HeaderMap,
    ) -> Result<Self, RestError> {
        let table =
            Table::resolve(&s.store.schema(), collection)?.authorize(caller, Action::Write)?;
        let q = parse_raw(raw)?;
        table.check_select(&q.select)?;
        let embeds = q.select.iter().any(|i| matches!(i, SelectItem::Embed(_)));
        if embeds || !q.embed_filters.is_empty() {
            return Err(RestError::unsupported(
                "embedding related tables in a write's representation",
            ));
        }
        Ok(Self {
            table,
            q,
            prefer: Prefer::from_headers(h),
            accept: Accept::from_headers(h)?,
        })
    }

    /// Commits `ops` (nothing when empty) and answers: the representation shows `before` when
    /// given (DELETE: the rows as they were), else the rows as the commit left them.
    async fn answer(
        &self,
        store: &Store,
        status: StatusCode,
        ops: Vec<WriteOp>,
        before: Option<Vec<Value>>,
    ) -> Result<Response, RestError> {
        if ops.len() > MAX_ROWS_PER_WRITE {
            let what = format!(
                "{} rows; at most {MAX_ROWS_PER_WRITE} per request",
                ops.len()
            );
            let e = WriteError::TooLarge { what };
            return Err(RestError::from_write(&self.table.name, e));
        }
        let after = match ops.is_empty() {
            true => Vec::new(),
            false => {
                let c = store
                    .transact_async(ops)
                    .await
                    .map_err(|e| RestError::from_write(&self.table.name, e))?;
                c.changes.into_iter().filter_map(|ch| ch.value).collect()
            }
        };
        let shown = before.unwrap_or(after);
        match self.prefer.ret {
            Return::Minimal if status == StatusCode::CREATED => Ok(empty(status)),
            Return::Minimal => Ok(empty(StatusCode::NO_CONTENT)),
            Return::Representation => {
                let shaped: Vec<Value> = shown
                    .iter()
                    .filter_map(Value::as_object)
                    .map(|r| self.table.project(&self.q.select, r))
                    .collect();
                let columns = self.table.column_names(&self.q.select, shaped.first());
                rows(status, self.accept, (columns, shaped), None)
            }
        }
    }

    /// The live rows matching the URL's filters.
    async fn matching(&self, store: &Store) -> Result<Vec<Value>, RestError> {
        if self.q.limit.is_some() || self.q.offset > 0 || !self.q.order.is_empty() {
            return Err(RestError::unsupported(
                "limit, offset and order on PATCH or DELETE",
            ));
        }
        let plan = Plan::bind(&self.table, &self.q)?;
        matching(store, &self.table, &plan).await
    }
}

/// The body as received; 413 when it exceeds the listener's body limit.
fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, RestError> {
    body.map_err(|e| {
        let too_large = e.status() == StatusCode::PAYLOAD_TOO_LARGE;
        RestError::unreadable_body(too_large, e.body_text())
    })
}

/// A JSON object, or an array of objects; PGRST102 otherwise.
fn objects(body: &[u8]) -> Result<Vec<Map<String, Value>>, RestError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| RestError::bad_body(e.to_string()))?;
    let items = match v {
        Value::Array(items) => items,
        v => vec![v],
    };
    items
        .into_iter()
        .map(|v| match v {
            Value::Object(m) => Ok(m),
            other => Err(RestError::bad_body(format!(
                "expected a JSON object or an array of objects, got {other}"
            ))),
        })
        .collect()
}

/// `POST`: insert one object or an array in one transaction; upsert with `resolution=`.
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
    let table = &r.table;
    if let Some(c) = r.q.on_conflict.as_deref().filter(|c| *c != table.key()) {
        return Err(RestError::bad_on_conflict(c));
    }
    let mut objs = objects(&body)?;
    if let Some(cols) = &r.q.columns {
        for c in cols {
            table.write_column(c)?;
        }
        for o in &mut objs {
            o.retain(|k, _| cols.contains(k));
        }
    }
    for k in objs.iter().flat_map(|o| o.keys()) {
        table.write_column(k)?;
    }
    table.claim_all(&mut objs)?;
    let name = table.name.clone();
    let ops: Vec<WriteOp> = if table.is_log() {
        objs.into_iter()
            .map(|o| WriteOp::Append {
                collection: name.clone(),
                value: Value::Object(o),
            })
            .collect()
    } else {
        table
            .check_upsert(&s.store, r.prefer.resolution, &objs)
            .await?;
        let keep = unique_or_existing(&s.store, &r, &objs).await?;
        objs.into_iter()
            .zip(keep)
            .filter(|(_, keep)| *keep)
            .map(|(o, _)| WriteOp::Put {
                collection: name.clone(),
                value: Value::Object(o),
                recreate: true,
            })
            .collect()
    };
    r.answer(&s.store, StatusCode::CREATED, ops, None).await
}

/// Per object, whether to write it: 23505 for a plain insert of a live key (or a key twice in
/// one body); `ignore-duplicates` skips live keys; `merge-duplicates` writes every object.
async fn unique_or_existing(
    store: &Store,
    r: &Request,
    objs: &[Map<String, Value>],
) -> Result<Vec<bool>, RestError> {
    let table = &r.table;
    let mut seen = BTreeSet::new();
    let mut keep = Vec::with_capacity(objs.len());
    for o in objs {
        let Some(id) = table.id_of(o) else {
            keep.push(true);
            continue;
        };
        let live = seen.contains(&id)
            || store
                .get_async(&table.name, &id)
                .await
                .map_err(|e| RestError::from_read(&table.name, e))?
                .is_some();
        match (live, r.prefer.resolution) {
            (true, Resolution::Error) => {
                return Err(RestError::duplicate(&table.name, table.key(), &id));
            }
            (true, Resolution::IgnoreDuplicates) => keep.push(false),
            _ => keep.push(true),
        }
        seen.insert(id);
    }
    Ok(keep)
}

/// `PATCH`: sets the body's fields on every matching row.
pub async fn update(
    State(s): State<AppState>,
    caller: Caller,
    Path(collection): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RestError> {
    let r = Request::new(&s, &caller, &collection, raw.as_deref(), &headers)?;
    let body = read_body(body)?;
    if r.table.is_log() {
        return Err(RestError::log_immutable(&r.table.name, "update"));
    }
    let mut patch = match objects(&body)?.as_slice() {
        [one] => one.clone(),
        _ => return Err(RestError::bad_body("PATCH takes one JSON object")),
    };
    for k in patch.keys() {
        r.table.write_column(k)?;
    }
    r.table.check_patch(&patch)?;
    let key = r.table.key().to_owned();
    let new_key = patch.remove(&key);
    let matched = r.matching(&s.store).await?;
    let mut ops = Vec::with_capacity(matched.len());
    for row in matched.iter().filter_map(Value::as_object) {
        let old_key = row.get(&key).cloned().unwrap_or(Value::Null);
        if new_key.as_ref().is_some_and(|k| *k != old_key) {
            return Err(RestError::unsupported("changing a primary key"));
        }
        let mut value = patch.clone();
        value.insert(key.clone(), old_key);
        ops.push(WriteOp::Put {
            collection: r.table.name.clone(),
            value: Value::Object(value),
            recreate: false,
        });
    }
    r.answer(&s.store, StatusCode::OK, ops, None).await
}

/// `DELETE`: deletes every matching row; the representation is the rows as they were.
pub async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    Path(collection): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let r = Request::new(&s, &caller, &collection, raw.as_deref(), &headers)?;
    if r.table.is_log() {
        return Err(RestError::log_immutable(&r.table.name, "delete"));
    }
    let matched = r.matching(&s.store).await?;
    let ops = matched
        .iter()
        .filter_map(|row| r.table.id_of(row.as_object()?))
        .map(|id| WriteOp::Delete {
            collection: r.table.name.clone(),
            id,
        })
        .collect();
    r.answer(&s.store, StatusCode::OK, ops, Some(matched)).await
}
