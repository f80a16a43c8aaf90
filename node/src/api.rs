//! The node's native record API on the local HTTP listener, under `/v1`. JSON in, JSON out;
//! errors are `{"error": "..."}` with a 4xx status a client can act on (5xx only when the store
//! itself fails). The Supabase-compatible PostgREST dialect of a later issue builds on the same
//! store calls.
//!
//! | method and path                       | body                          | does                          |
//! |---------------------------------------|-------------------------------|-------------------------------|
//! | `GET /v1/{collection}?f=v&order=f.desc&limit=n&offset=n` |            | query (equality filters)      |
//! | `GET /v1/{collection}/{id}`           |                               | one record (404 if absent)    |
//! | `POST /v1/{collection}[?recreate=true]` | object, or array (one txn)  | upsert; returns merged rows   |
//! | `DELETE /v1/{collection}/{id}`        |                               | tombstone                     |
//! | `POST /v1/{collection}/{id}/incr`     | `{"field": f, "by": n}`       | counter increment             |
//! | `POST /v1/{collection}/append`        | object, or array (one txn)    | log rows                      |
//! | `POST /v1/txn`                        | `[{"op": "put"|"delete"|"incr"|"append", ...}]` | one atomic multi-record transaction |
//! | `GET /v1/changes[?collection=c]`      |                               | live change stream (server-sent events) |
//!
//! The change stream sends one `change` event per committed record change, local or from a
//! peer: `{"txns": ["<origin>-<seq>", ...], "local": bool, "collection", "id", "kind", "value"}`.
//! A subscriber that falls behind gets a `lagged` event with the number of changes it missed
//! (re-read with a query).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use meshlite_core::store::{Query, ReadError, Store, StoreEvent, WriteError, WriteOp};
use serde::Deserialize;
use serde_json::Value;
use std::convert::Infallible;
use tokio::sync::broadcast::error::RecvError;

use crate::state::AppState;

/// Most ops accepted in one request.
pub const MAX_OPS_PER_REQUEST: usize = 10_000;

/// The `/v1` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/txn", post(txn))
        .route("/v1/changes", get(changes))
        .route("/v1/{collection}", get(query).post(put))
        .route("/v1/{collection}/append", post(append))
        .route("/v1/{collection}/{id}", get(get_one).delete(delete))
        .route("/v1/{collection}/{id}/incr", post(incr))
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
        WriteError::NotFound { .. } => StatusCode::NOT_FOUND,
        WriteError::Deleted { .. } | WriteError::Exists { .. } => StatusCode::CONFLICT,
        WriteError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
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

async fn commit(store: &Store, ops: Vec<WriteOp>) -> Result<Response, ApiError> {
    if ops.is_empty() || ops.len() > MAX_OPS_PER_REQUEST {
        let msg = format!("expected 1..={MAX_OPS_PER_REQUEST} records");
        return Err(error(StatusCode::BAD_REQUEST, msg));
    }
    let c = store.transact_async(ops).await.map_err(write_error)?;
    let rows: Vec<Value> = c.changes.into_iter().filter_map(|ch| ch.value).collect();
    Ok(Json(serde_json::json!({ "txn": c.txn.to_key(), "rows": rows })).into_response())
}

/// Parses a JSON request body (any content type: curl users often omit it).
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
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

fn build_query(params: HashMap<String, String>) -> Result<Query, ApiError> {
    let mut q = Query::default();
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
            _ => q
                .filters
                .push((k, serde_json::from_str(&v).unwrap_or(Value::String(v)))),
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
    body: Bytes,
) -> Result<Response, ApiError> {
    let ops = parse_body(&body).and_then(objects)?.into_iter();
    let ops = ops.map(|value| WriteOp::Put {
        collection: collection.clone(),
        value,
        recreate: p.recreate,
    });
    commit(&s.store, ops.collect()).await
}

async fn append(
    State(s): State<AppState>,
    Path(collection): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ops = parse_body(&body).and_then(objects)?.into_iter();
    let ops = ops.map(|value| WriteOp::Append {
        collection: collection.clone(),
        value,
    });
    commit(&s.store, ops.collect()).await
}

async fn delete(
    State(s): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    commit(&s.store, vec![WriteOp::Delete { collection, id }]).await
}

#[derive(Debug, Deserialize)]
struct IncrBody {
    field: String,
    by: i64,
}

async fn incr(
    State(s): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: IncrBody = parse_body(&body)?;
    let op = WriteOp::Increment {
        collection,
        id,
        field: b.field,
        by: b.by,
    };
    commit(&s.store, vec![op]).await
}

#[derive(Debug, Deserialize)]
struct ChangesParams {
    collection: Option<String>,
}

/// Turns store events into SSE events (one per record change).
fn sse_events(ev: Result<StoreEvent, RecvError>, filter: Option<&str>) -> Vec<Event> {
    match ev {
        Ok(StoreEvent::Committed {
            txns,
            local,
            changes,
        }) => {
            let txns: Vec<String> = txns.iter().map(|t| t.to_key()).collect();
            changes
                .into_iter()
                .filter(|c| filter.is_none_or(|f| f == c.collection))
                .filter_map(|c| {
                    let body = serde_json::json!({
                        "txns": txns, "local": local, "collection": c.collection,
                        "id": c.id, "kind": c.kind, "value": c.value,
                    });
                    Event::default().event("change").json_data(body).ok()
                })
                .collect()
        }
        Ok(_) => Vec::new(),
        Err(RecvError::Lagged(n)) => vec![Event::default().event("lagged").data(n.to_string())],
        Err(RecvError::Closed) => Vec::new(),
    }
}

async fn changes(
    State(s): State<AppState>,
    QueryParams(p): QueryParams<ChangesParams>,
) -> Response {
    let rx = s.store.subscribe();
    let stream = futures_util::stream::unfold((rx, p.collection), |(mut rx, filter)| async move {
        loop {
            let ev = rx.recv().await;
            if matches!(ev, Err(RecvError::Closed)) {
                return None;
            }
            let events = sse_events(ev, filter.as_deref());
            if !events.is_empty() {
                let batch = futures_util::stream::iter(events.into_iter().map(Ok::<_, Infallible>));
                return Some((batch, (rx, filter)));
            }
        }
    })
    .flatten();
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
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

async fn txn(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let ops: Vec<TxnOp> = parse_body(&body)?;
    commit(&s.store, ops.into_iter().map(WriteOp::from).collect()).await
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
