//! What every write on `/rest/v1/{table}` shares ([`Request`]: parsing, committing, answering),
//! and the `PATCH` (update) and `DELETE` handlers; `POST` is in `insert`.
//!
//! Every request is validated whole (URL, body, column names) before the store is touched,
//! and commits as ONE store transaction: a malformed request, or one refused by the store,
//! writes nothing.
//!
//! PATCH sets the given fields on every matching row (all rows without filters, as PostgREST);
//! a `counter` field set to a value applies the difference, as the store's put does. A PATCH by
//! primary key alone (`?id=eq.X`, supabase-js' `.update().eq('id', X)`) skips the read: it is
//! one `WriteOp::Update`, which the store refuses inside its transaction when the record is not
//! live ([`update_one`]).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use meshlite_core::schema::FieldType;
use meshlite_core::store::{Store, WriteError, WriteOp};
use serde_json::{Map, Value};

use super::error::RestError;
use super::filter::Plan;
use super::prefer::{Prefer, Return};
use super::pushdown::Access;
use super::query::{UrlQuery, parse_raw};
use super::response::{Accept, empty, rows};
use super::rows::matching;
use super::select::SelectItem;
use super::table::Table;
use crate::auth::{Action, Caller, Scope};
use crate::state::AppState;

/// Most rows one write request may touch.
pub const MAX_ROWS_PER_WRITE: usize = 10_000;

/// What every write parses first.
#[derive(Debug)]
pub struct Request {
    /// The table, authorized for writing.
    pub table: Table,
    /// The URL.
    pub q: UrlQuery,
    /// The `Prefer` header.
    pub prefer: Prefer,
    accept: Accept,
}

impl Request {
    /// Parses and authorizes a write of `collection`.
    pub fn new(
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

    /// Commits `ops` as one transaction (nothing when empty); the rows as the commit left them.
    pub async fn commit(&self, store: &Store, ops: Vec<WriteOp>) -> Result<Vec<Value>, RestError> {
        try_commit(store, ops)
            .await
            .map_err(|e| self.write_error(e))
    }

    /// A store error as PostgREST's: an insert of a live key is 23505 naming the key.
    pub fn write_error(&self, e: WriteError) -> RestError {
        match e {
            WriteError::Duplicate { id, .. } => {
                RestError::duplicate(&self.table.name, self.table.key(), &id)
            }
            e => RestError::from_write(&self.table.name, e),
        }
    }

    /// The answer showing `shown` (the written rows, or for DELETE the rows as they were):
    /// its body per `return=`; `created` (201) adds `Location` for `return=headers-only`.
    pub fn answer(&self, status: StatusCode, shown: Vec<Value>) -> Result<Response, RestError> {
        match self.prefer.ret {
            Return::HeadersOnly if status == StatusCode::CREATED => {
                Ok(created(&self.table, &shown))
            }
            Return::Minimal | Return::HeadersOnly if status == StatusCode::CREATED => {
                Ok(empty(status))
            }
            Return::Minimal | Return::HeadersOnly => Ok(empty(StatusCode::NO_CONTENT)),
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

    /// The record id when the URL's only filter is `key=eq.id` on a table every row of which
    /// the caller may write, and nothing else narrows or orders the rows: then the rows an
    /// update or delete touches are exactly the live record `id`, if any.
    fn one_key(&self) -> Result<Option<String>, RestError> {
        let plain = self.q.filters.len() == 1
            && self.q.limit.is_none()
            && self.q.offset == 0
            && self.q.order.is_empty()
            && self.table.scope == Scope::All;
        if !plain {
            return Ok(None);
        }
        match Access::of(&Plan::bind(&self.table, &self.q)?, &self.table) {
            Access::Get(id) => Ok(Some(id)),
            _ => Ok(None),
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

/// Commits `ops` as one transaction (nothing when empty); the rows as the commit left them, or
/// the store's refusal.
pub async fn try_commit(store: &Store, ops: Vec<WriteOp>) -> Result<Vec<Value>, WriteError> {
    if ops.len() > MAX_ROWS_PER_WRITE {
        let what = format!(
            "{} rows; at most {MAX_ROWS_PER_WRITE} per request",
            ops.len()
        );
        return Err(WriteError::TooLarge { what });
    }
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let c = store.transact_async(ops).await?;
    Ok(c.changes.into_iter().filter_map(|ch| ch.value).collect())
}

/// 201 with no body and, for exactly one row, `Location: /{table}?{key}=eq.{id}` (as PostgREST
/// answers `return=headers-only`), and `Content-Range: */*`.
fn created(table: &Table, shown: &[Value]) -> Response {
    let mut r = empty(StatusCode::CREATED);
    let h = r.headers_mut();
    h.insert(header::CONTENT_RANGE, HeaderValue::from_static("*/*"));
    let id = match shown {
        [one] => one.as_object().and_then(|o| table.id_of(o)),
        _ => None,
    };
    if let Some(id) = id {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair(table.key(), &format!("eq.{id}"))
            .finish();
        let location = format!("/{}?{query}", table.name);
        if let Ok(v) = HeaderValue::from_str(&location) {
            h.insert(header::LOCATION, v);
        }
    }
    r
}

/// The body as received; 413 when it exceeds the listener's body limit.
pub fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, RestError> {
    body.map_err(|e| {
        let too_large = e.status() == StatusCode::PAYLOAD_TOO_LARGE;
        RestError::unreadable_body(too_large, e.body_text())
    })
}

/// A JSON object, or an array of objects; PGRST102 otherwise.
pub fn objects(body: &[u8]) -> Result<Vec<Map<String, Value>>, RestError> {
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
    if !patch.contains_key(r.table.key())
        && let Some(id) = r.one_key()?
    {
        return update_one(&s.store, &r, patch, &id).await;
    }
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
    let written = r.commit(&s.store, ops).await?;
    r.answer(StatusCode::OK, written)
}

/// `PATCH ?key=eq.id` (see [`Request::one_key`]): one store update of the record if it is
/// live, with no read before it; the store refuses an absent or deleted record inside the
/// transaction, which matches no row (200 and `[]`, as PostgREST). A patch naming the key goes
/// the general way (it is refused only when it would change the key of a matched row), as does
/// a table under the owner rule (the row's owner must be read).
async fn update_one(
    store: &Store,
    r: &Request,
    mut patch: Map<String, Value>,
    id: &str,
) -> Result<Response, RestError> {
    patch.insert(r.table.key().to_owned(), key_value(&r.table, id));
    let op = WriteOp::Update {
        collection: r.table.name.clone(),
        value: Value::Object(patch),
    };
    match try_commit(store, vec![op]).await {
        Ok(written) => r.answer(StatusCode::OK, written),
        Err(WriteError::NotFound { .. }) => r.answer(StatusCode::OK, Vec::new()),
        Err(e) => Err(r.write_error(e)),
    }
}

/// The key of record `id` as a write carries it: a number for an `integer` key.
fn key_value(table: &Table, id: &str) -> Value {
    match (table.def.key_type, id.parse::<i64>()) {
        (Some(FieldType::Integer), Ok(n)) => Value::from(n),
        _ => Value::String(id.to_owned()),
    }
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
    r.commit(&s.store, ops).await?;
    r.answer(StatusCode::OK, matched)
}
