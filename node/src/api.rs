//! The node's native record API on the local HTTP listener, under `/v1`. JSON in, JSON out;
//! errors are `{"error": "..."}` with a 4xx status a client can act on (5xx only when the store
//! itself fails). The Supabase-compatible PostgREST dialect of a later issue builds on the same
//! store calls.
//!
//! | method and path                       | body                          | does                          |
//! |---------------------------------------|-------------------------------|-------------------------------|
//! | `GET /v1/{collection}?f=v&order=f.desc&limit=n&offset=n` |            | query (equality filters; at most [`DEFAULT_LIMIT`] rows unless `limit` says otherwise) |
//! | `GET /v1/{collection}/{id}`           |                               | one record (404 if absent)    |
//! | `POST /v1/{collection}[?recreate=true]` | object, or array (one txn)  | upsert; returns merged rows   |
//! | `DELETE /v1/{collection}/{id}`        |                               | tombstone                     |
//! | `POST /v1/{collection}/{id}/incr`     | `{"field": f, "by": n}`       | counter increment             |
//! | `POST /v1/{collection}/append`        | object, or array (one txn)    | log rows                      |
//! | `POST /v1/txn`                        | `[{"op": "put"|"delete"|"incr"|"append", ...}]` | one atomic multi-record transaction |
//! | `GET /v1/changes[?collection=c]`      |                               | live change stream (server-sent events) |
//! | `GET`/`POST /v1/{collection}/`        | as without the slash          | the collection, whatever its name |
//!
//! No name is unreachable: a record id is always the segment after the collection (also
//! `append`, which the `append` route answers for GET and DELETE), and the trailing-slash form
//! reaches collections named `changes` or `txn`, whose slash-less paths are the routes above.
//! Query parameters other than `order`, `limit` and `offset` are equality filters on field names;
//! PostgREST syntax (`select`, `status=eq.x`, `id=in.(a,b)`) is refused with a pointer to
//! `/rest/v1`, so a filter is never silently wrong. Bodies over [`MAX_BODY_BYTES`] get a JSON 413.
//!
//! Writes (`POST`, `DELETE`, `incr`, `append`, `txn`) accept an `Idempotency-Key` header (1–255
//! visible ASCII characters): a retry with the same key and the same method, path and body
//! applies nothing and gets the first answer again, with `Idempotent-Replayed: true`; the same
//! key with a different request is refused with 422. Keys are stored in the same SQLite
//! transaction as the write (so a crash between the write and the reply cannot make a retry
//! apply twice) and remembered for 24 hours, at most 100,000 of them ([`crate::idempotency`]).
//! A write that failed stores no key: its retry runs again.
//!
//! Record ids are 1–256 bytes of UTF-8 without control characters and not `.` or `..`; `/` is
//! allowed (send it as `%2F`). Field values nest at most 32 levels (400 beyond).
//!
//! The change stream sends one `change` event per committed record change, local or from a
//! peer: `{"txns": ["<origin>-<seq>", ...], "local": bool, "collection", "id", "kind", "value"}`.
//! A subscriber that falls behind gets a `lagged` event with the number of changes it missed
//! (re-read with a query).
//!
//! Memory per subscriber is bounded in bytes: a forwarding task drains the store's broadcast at
//! once (so a stalled client never pins the store's 1,024 whole commits) and queues the rendered
//! events, counting their bytes. When the queue would pass `http.changes_buffer_bytes`, the
//! client gets what was queued, then a `lagged` event (data: the changes dropped at that point)
//! and the stream ends: reconnect, then re-read with a query. Dropping the slow subscriber,
//! rather than carrying ids and re-reading rows, keeps the fast path free of reads and tells
//! the client plainly that it missed something. The stream also ends when the daemon stops.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query as QueryParams, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use meshlite_core::change::MAX_TXN_BYTES;
use meshlite_core::schema::validate_name;
use meshlite_core::store::{
    Committed, IdempotencyKey, Once, Query, ReadError, Store, StoreEvent, WriteError, WriteOp,
};
use serde::Deserialize;
use serde_json::Value;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::idempotency::{self, IdemHeader};
use crate::state::AppState;

/// Most ops accepted in one request.
pub const MAX_OPS_PER_REQUEST: usize = 10_000;

/// Largest request body: one transaction's limit (a bigger body cannot commit anyway).
pub const MAX_BODY_BYTES: usize = MAX_TXN_BYTES;

/// Rows a query returns when it names no `limit`; page on with `offset`.
pub const DEFAULT_LIMIT: usize = 1000;

/// The `/v1` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/txn", post(txn))
        .route("/v1/changes", get(changes))
        .route("/v1/{collection}", get(query).post(put))
        .route("/v1/{collection}/", get(query).post(put))
        .route(
            "/v1/{collection}/append",
            post(append).get(get_append).delete(delete_append),
        )
        .route("/v1/{collection}/{id}", get(get_one).delete(delete))
        .route("/v1/{collection}/{id}/incr", post(incr))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// An error answer: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> ApiError {
    ApiError(status, message.to_string())
}

fn write_error(e: WriteError) -> ApiError {
    let status = match &e {
        _ if e.is_disk_full() => StatusCode::INSUFFICIENT_STORAGE,
        WriteError::NotFound { .. } => StatusCode::NOT_FOUND,
        WriteError::Deleted { .. } | WriteError::Exists { .. } | WriteError::Duplicate { .. } => {
            StatusCode::CONFLICT
        }
        WriteError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        WriteError::IdempotencyKeyReused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        WriteError::Storage(_) | WriteError::Corrupt(_) | WriteError::Closed => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e)
}

fn read_error(e: ReadError) -> ApiError {
    match e {
        ReadError::InvalidName(_) | ReadError::InvalidQuery(_) => error(StatusCode::BAD_REQUEST, e),
        _ => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// Commits `ops`; under an idempotency key, at most once (a replay gets the first answer with
/// `Idempotent-Replayed: true`).
async fn commit(
    store: &Store,
    ops: Vec<WriteOp>,
    idem: Option<Result<IdempotencyKey, WriteError>>,
) -> Result<Response, ApiError> {
    if ops.is_empty() || ops.len() > MAX_OPS_PER_REQUEST {
        let msg = format!("expected 1..={MAX_OPS_PER_REQUEST} records");
        return Err(error(StatusCode::BAD_REQUEST, msg));
    }
    let Some(key) = idem else {
        let c = store.transact_async(ops).await.map_err(write_error)?;
        return Ok(Json(answer(&c)).into_response());
    };
    let key = key.map_err(write_error)?;
    let once = store
        .transact_once_async(ops, key)
        .await
        .map_err(write_error)?;
    let replayed = matches!(once, Once::Replayed { .. });
    let json = [(header::CONTENT_TYPE, "application/json")];
    let mut response = (json, once.answer().to_vec()).into_response();
    if replayed {
        let yes = header::HeaderValue::from_static("true");
        response
            .headers_mut()
            .insert(idempotency::REPLAYED.clone(), yes);
    }
    Ok(response)
}

/// The answer to a committed write: `{"txn": key, "rows": [merged rows]}`.
fn answer(c: &Committed) -> Value {
    let rows: Vec<Value> = c.changes.iter().filter_map(|ch| ch.value.clone()).collect();
    serde_json::json!({ "txn": c.txn.to_key(), "rows": rows })
}

/// [`answer`] as the bytes an idempotency key remembers.
fn render_answer(c: &Committed) -> Vec<u8> {
    serde_json::to_vec(&answer(c)).unwrap_or_default()
}

/// Parses a JSON request body (any content type: curl users often omit it).
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

/// The body, or the JSON refusal of one over [`MAX_BODY_BYTES`].
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body exceeds the limit of {MAX_BODY_BYTES} bytes (1 MiB); split it into smaller requests"
            ),
        ),
        status => error(status, e.body_text()),
    })
}

/// An object, or an array of objects.
fn objects(body: Value) -> Result<Vec<Value>, ApiError> {
    match body {
        Value::Array(items) => Ok(items),
        v @ Value::Object(_) => Ok(vec![v]),
        other => Err(error(
            StatusCode::BAD_REQUEST,
            format!("expected a JSON object or array, got {other}"),
        )),
    }
}

fn parse_order(s: &str) -> (String, bool) {
    match s.rsplit_once('.') {
        Some((f, "desc")) => (f.to_owned(), true),
        Some((f, "asc")) => (f.to_owned(), false),
        _ => (s.to_owned(), false),
    }
}

/// Where a refused query parameter sends the user.
const QUERY_SYNTAX: &str = "the native API takes ?field=value (equality; quote a value that looks like an operator: ?f=\"eq.x\") &order=field.desc &limit=N &offset=N; for PostgREST filters use /rest/v1/{collection}";

/// PostgREST parameters that are not field filters here.
const POSTGREST_PARAMS: &[&str] = &["select", "or", "and", "not", "on_conflict", "columns"];

/// PostgREST operators: an unquoted filter value `op.x` is a PostgREST filter, not a value.
const POSTGREST_OPERATORS: &[&str] = &[
    "eq",
    "neq",
    "gt",
    "gte",
    "lt",
    "lte",
    "like",
    "ilike",
    "match",
    "imatch",
    "in",
    "is",
    "isdistinct",
    "fts",
    "plfts",
    "phfts",
    "wfts",
    "cs",
    "cd",
    "ov",
    "sl",
    "sr",
    "nxr",
    "nxl",
    "adj",
    "not",
];

/// Refuses a filter the native API would read differently from what was meant.
fn check_filter(field: &str, value: &str) -> Result<(), ApiError> {
    let refuse = |what: String| error(StatusCode::BAD_REQUEST, format!("{what}: {QUERY_SYNTAX}"));
    if POSTGREST_PARAMS.contains(&field) {
        return Err(refuse(format!("unsupported query parameter {field:?}")));
    }
    if validate_name("field", field).is_err() {
        return Err(refuse(format!("unknown query parameter {field:?}")));
    }
    if let Some((op, _)) = value.split_once('.')
        && POSTGREST_OPERATORS.contains(&op)
    {
        return Err(refuse(format!(
            "{field}={value}: PostgREST operator {op:?} in a native filter"
        )));
    }
    Ok(())
}

fn build_query(params: HashMap<String, String>) -> Result<Query, ApiError> {
    let mut q = Query {
        limit: Some(DEFAULT_LIMIT),
        ..Query::default()
    };
    for (k, v) in params {
        match k.as_str() {
            "order" => q.order = Some(parse_order(&v)),
            "limit" => {
                q.limit = Some(
                    v.parse()
                        .map_err(|_| error(StatusCode::BAD_REQUEST, "limit: not a number"))?,
                )
            }
            "offset" => {
                q.offset = v
                    .parse()
                    .map_err(|_| error(StatusCode::BAD_REQUEST, "offset: not a number"))?
            }
            _ => {
                check_filter(&k, &v)?;
                q.filters
                    .push((k, serde_json::from_str(&v).unwrap_or(Value::String(v))))
            }
        }
    }
    q.filters.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(q)
}

async fn query(
    State(s): State<AppState>,
    Path(collection): Path<String>,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let q = build_query(params)?;
    let rows = s
        .store
        .query_async(&collection, &q)
        .await
        .map_err(read_error)?;
    Ok(Json(rows).into_response())
}

async fn get_one(
    State(s): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    match s
        .store
        .get_async(&collection, &id)
        .await
        .map_err(read_error)?
    {
        Some(row) => Ok(Json(row).into_response()),
        None => Err(error(
            StatusCode::NOT_FOUND,
            format!("{collection}/{id}: not found (never written, or deleted)"),
        )),
    }
}

#[derive(Debug, Deserialize)]
struct PutParams {
    #[serde(default)]
    recreate: bool,
}

async fn put(
    State(s): State<AppState>,
    Path(collection): Path<String>,
    QueryParams(p): QueryParams<PutParams>,
    idem: IdemHeader,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let ops = objects(parse_json(&body)?)?.into_iter();
    let ops = ops.map(|value| WriteOp::Put {
        collection: collection.clone(),
        value,
        recreate: p.recreate,
    });
    let key = idem.with_body(&body, render_answer);
    commit(&s.store, ops.collect(), key).await
}

async fn append(
    State(s): State<AppState>,
    Path(collection): Path<String>,
    idem: IdemHeader,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let ops = objects(parse_json(&body)?)?.into_iter();
    let ops = ops.map(|value| WriteOp::Append {
        collection: collection.clone(),
        value,
    });
    let key = idem.with_body(&body, render_answer);
    commit(&s.store, ops.collect(), key).await
}

async fn delete(
    State(s): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    idem: IdemHeader,
) -> Result<Response, ApiError> {
    let key = idem.with_body(&[], render_answer);
    commit(&s.store, vec![WriteOp::Delete { collection, id }], key).await
}

/// `GET /v1/{collection}/append`: the record whose id is `append` (the static route wins).
async fn get_append(
    state: State<AppState>,
    Path(collection): Path<String>,
) -> Result<Response, ApiError> {
    get_one(state, Path((collection, "append".to_owned()))).await
}

/// `DELETE /v1/{collection}/append`: as [`get_append`].
async fn delete_append(
    state: State<AppState>,
    Path(collection): Path<String>,
    idem: IdemHeader,
) -> Result<Response, ApiError> {
    delete(state, Path((collection, "append".to_owned())), idem).await
}

#[derive(Debug, Deserialize)]
struct IncrBody {
    field: String,
    by: i64,
}

async fn incr(
    State(s): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    idem: IdemHeader,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let b: IncrBody = parse_json(&body)?;
    let op = WriteOp::Increment {
        collection,
        id,
        field: b.field,
        by: b.by,
    };
    commit(&s.store, vec![op], idem.with_body(&body, render_answer)).await
}

#[derive(Debug, Deserialize)]
struct ChangesParams {
    collection: Option<String>,
}

/// Turns store events into SSE events (one per record change), each with its size in bytes.
fn sse_events(ev: Result<StoreEvent, RecvError>, filter: Option<&str>) -> Vec<(Event, usize)> {
    match ev {
        Ok(StoreEvent::Committed {
            txns,
            local,
            changes,
        }) => {
            let txns: Vec<String> = txns.iter().map(|t| t.to_key()).collect();
            changes
                .iter()
                .filter(|c| filter.is_none_or(|f| f == c.collection))
                .filter_map(|c| {
                    let body = serde_json::json!({
                        "txns": txns, "local": local, "collection": c.collection,
                        "id": c.id, "kind": c.kind, "value": c.value,
                    });
                    let data = serde_json::to_string(&body).ok()?;
                    let len = data.len();
                    Some((Event::default().event("change").data(data), len))
                })
                .collect()
        }
        Ok(_) => Vec::new(),
        Err(RecvError::Lagged(n)) => vec![lagged(n as usize)],
        Err(RecvError::Closed) => Vec::new(),
    }
}

fn lagged(missed: usize) -> (Event, usize) {
    let data = missed.to_string();
    let len = data.len();
    (Event::default().event("lagged").data(data), len)
}

/// Events rendered for one subscriber and not yet taken by its response, with their total size.
struct Queue {
    tx: mpsc::UnboundedSender<(Event, usize)>,
    bytes: Arc<AtomicUsize>,
    budget: usize,
}

impl Queue {
    /// Queues `events`; false when the budget is spent (a `lagged` event was queued instead of
    /// the rest) or the response is gone.
    fn push(&self, events: Vec<(Event, usize)>) -> bool {
        let total = events.len();
        for (i, (event, len)) in events.into_iter().enumerate() {
            let queued = self.bytes.load(Ordering::Acquire);
            // An event larger than the budget still goes through an empty queue.
            if queued > 0 && queued + len > self.budget {
                let _ = self.tx.send(lagged(total - i));
                return false;
            }
            self.bytes.fetch_add(len, Ordering::AcqRel);
            if self.tx.send((event, len)).is_err() {
                return false;
            }
        }
        true
    }
}

/// Drains the store's broadcast into `queue` until the budget is spent, the client leaves, the
/// store closes or the daemon stops (so the listener's graceful shutdown does not wait for it).
async fn forward(
    mut rx: broadcast::Receiver<StoreEvent>,
    filter: Option<String>,
    queue: Queue,
    shutdown: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = queue.tx.closed() => return,
            ev = rx.recv() => ev,
        };
        if matches!(ev, Err(RecvError::Closed)) {
            return;
        }
        if !queue.push(sse_events(ev, filter.as_deref())) {
            return;
        }
    }
}

async fn changes(
    State(s): State<AppState>,
    QueryParams(p): QueryParams<ChangesParams>,
) -> Response {
    let rx = s.store.subscribe();
    let (tx, out) = mpsc::unbounded_channel();
    let bytes = Arc::new(AtomicUsize::new(0));
    let queue = Queue {
        tx,
        bytes: bytes.clone(),
        budget: s.http.changes_buffer_bytes,
    };
    // Ends on its own when the response is dropped (`tx.closed()`), so nothing waits for it.
    tokio::spawn(forward(rx, p.collection, queue, s.shutdown.clone()));
    let stream = futures_util::stream::unfold((out, bytes), |(mut out, bytes)| async move {
        let (event, len) = out.recv().await?;
        bytes.fetch_sub(len, Ordering::AcqRel);
        Some((Ok::<_, Infallible>(event), (out, bytes)))
    });
    // Keep-alive comments count as progress for the listener's idle timeout.
    let keep_alive = (s.http.idle_timeout() / 3).min(Duration::from_secs(15));
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response()
}

/// One op of `POST /v1/txn`.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum TxnOp {
    Put {
        collection: String,
        value: Value,
        #[serde(default)]
        recreate: bool,
    },
    Delete {
        collection: String,
        id: String,
    },
    Incr {
        collection: String,
        id: String,
        field: String,
        by: i64,
    },
    Append {
        collection: String,
        value: Value,
    },
}

impl From<TxnOp> for WriteOp {
    fn from(op: TxnOp) -> Self {
        match op {
            TxnOp::Put {
                collection,
                value,
                recreate,
            } => WriteOp::Put {
                collection,
                value,
                recreate,
            },
            TxnOp::Delete { collection, id } => WriteOp::Delete { collection, id },
            TxnOp::Incr {
                collection,
                id,
                field,
                by,
            } => WriteOp::Increment {
                collection,
                id,
                field,
                by,
            },
            TxnOp::Append { collection, value } => WriteOp::Append { collection, value },
        }
    }
}

async fn txn(
    State(s): State<AppState>,
    idem: IdemHeader,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let ops: Vec<TxnOp> = parse_json(&body)?;
    let key = idem.with_body(&body, render_answer);
    commit(&s.store, ops.into_iter().map(WriteOp::from).collect(), key).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_filters_order_and_paging() {
        let params: HashMap<String, String> = [
            ("status", "running"),
            ("n", "3"),
            ("order", "at.desc"),
            ("limit", "5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let q = build_query(params).unwrap();
        assert_eq!(
            q.filters,
            vec![
                ("n".into(), Value::from(3)),
                ("status".into(), Value::from("running"))
            ]
        );
        assert_eq!(q.order, Some(("at".into(), true)));
        assert_eq!(q.limit, Some(5));
        assert!(build_query([("limit".to_owned(), "x".to_owned())].into()).is_err());
        let q = build_query(HashMap::new()).unwrap();
        assert_eq!(q.limit, Some(DEFAULT_LIMIT));
        let quoted = build_query([("s".to_owned(), "\"eq.x\"".to_owned())].into()).unwrap();
        assert_eq!(quoted.filters, vec![("s".into(), Value::from("eq.x"))]);
    }

    #[test]
    fn txn_ops_are_tagged() {
        let ops: Vec<TxnOp> = serde_json::from_str(
            r#"[{"op":"put","collection":"t","value":{"id":"a"}},{"op":"incr","collection":"t","id":"a","field":"n","by":2}]"#,
        )
        .unwrap();
        assert!(matches!(
            WriteOp::from(ops.into_iter().nth(1).unwrap()),
            WriteOp::Increment { by: 2, .. }
        ));
        assert!(serde_json::from_str::<Vec<TxnOp>>(r#"[{"op":"drop","collection":"t"}]"#).is_err());
    }
}
