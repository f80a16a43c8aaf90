//! The service registry of seed 003 on the node's HTTP listener, backed by a replicated
//! `services` collection, so every node of the fleet answers for every service registered on
//! any of them.
//!
//! | method and path            | body                                   | answer |
//! |----------------------------|----------------------------------------|--------|
//! | `POST /api/services`       | `{name, host, port, mode?, capabilities?, health_url?, version?, metadata?}` | 201 first registration, 200 update: `{"status", "service"}` |
//! | `GET /api/services`        |                                        | `{"services": [...], "count", "healthy", "ttl_seconds"}` |
//! | `GET /api/services/{name}` |                                        | the entry, or 404 |
//! | `POST /api/discover`       | `{"capabilities": [...], "match"?: "all"\|"any", "include_unhealthy"?: bool}` | `{"services": [...], "count"}` |
//! | `GET /api/status`          |                                        | `{"status", "node", "replica", "registry": {"services", "healthy", "unhealthy", "ttl_seconds"}}` |
//!
//! `GET /healthz` (the listener's own) is the seed's health check.
//!
//! # How the parts fit
//!
//! [`service`] is the data without I/O: it validates a registration whole (bad JSON, unknown
//! fields, out-of-range values are a 400 `{"error": ...}` and nothing is written), builds the
//! stored record, and computes an entry's `health_status` from its heartbeat and a `now` passed
//! in. This file holds the handlers: one store read or one store transaction each.
//!
//! # Heartbeat and health
//!
//! Every registration stamps `last_heartbeat` (RFC 3339) and `last_heartbeat_ms` with the
//! receiving node's clock; services re-register periodically to heartbeat. An entry is
//! `"healthy"` while its heartbeat is at most `registry.ttl_seconds` old (default 60, env
//! `MESHLITE_REGISTRY_TTL_SECONDS`) by the clock of the node answering, else `"unhealthy"`; the
//! seed's `jq '.services[] | select(.health_status != "healthy")'` reads exactly that. Health is
//! computed at read time, never stored, so expiry needs no writer and no timer, and every node
//! reaches the same verdict up to its clock skew (keep the TTL well above it). The registry
//! does not probe `health_url` (the seed's hosts are Tailscale addresses a node may not reach);
//! it is stored for clients. Discovery returns healthy services unless asked otherwise.
//!
//! # The `services` collection
//!
//! A registration is an upsert of one record keyed by the service name: its `id` (the default
//! key) is the name and a `name` field repeats it. When the user's schema does not declare
//! `services`, [`declare`] adds it as a plain document collection (key `id`, every field
//! `lww`), exactly what an undeclared collection is on a schemaless store, so nodes with and
//! without a schema file write identical records and a strict schema still admits the
//! registry. Last-writer-wins per field suits a registry: a re-registration replaces the
//! entry's fields, and concurrent registrations of one name on two nodes converge on one of
//! them. A schema that declares `services` itself is used as declared (the name goes into its
//! key field); if it declares it as a log, registrations are refused with 409.

pub mod service;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use meshlite_core::schema::{CollectionKind, Schema};
use meshlite_core::store::{Query, ReadError, WriteError, WriteOp};
use serde_json::{Map, Value, json};

use crate::state::AppState;
use service::{Discover, InvalidRequest, Registration, Stamp};

/// The collection the registry keeps its entries in.
pub const COLLECTION: &str = "services";

/// Largest registration or discovery body.
pub const MAX_BODY_BYTES: usize = 64 << 10;

/// The registry's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/services", get(list).post(register))
        .route("/api/services/{name}", get(one))
        .route("/api/discover", post(discover))
        .route("/api/status", get(status))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// `schema` with `services` declared as a plain document collection when it lacks it (see the
/// module doc).
pub fn declare(mut schema: Schema) -> Schema {
    schema.collections.entry(COLLECTION.to_owned()).or_default();
    schema
}

/// Why a registry request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The request is malformed (400).
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// The body could not be read (too large: 413).
    #[error("{0}")]
    Body(String, StatusCode),
    /// No service of that name (404).
    #[error("no service named {0:?} is registered")]
    NotFound(String),
    /// The schema does not allow the registry's collection (409).
    #[error("{0}")]
    Schema(String),
    /// The store refused or failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The store could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl RegistryError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Body(_, status) => *status,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Schema(_) => StatusCode::CONFLICT,
            Self::Write(WriteError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Write(WriteError::Storage(_) | WriteError::Corrupt(_) | WriteError::Closed) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Write(_) => StatusCode::CONFLICT,
            Self::Read(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}

fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, RegistryError> {
    b.map_err(|e| RegistryError::Body(e.body_text(), e.status()))
}

/// The key field of `services` under the schema in force.
fn key_field(s: &AppState) -> Result<String, RegistryError> {
    match s.store.schema().collection(COLLECTION) {
        Some(def) if def.kind == CollectionKind::Document => Ok(def.primary_key),
        Some(_) => Err(RegistryError::Schema(format!(
            "the schema declares {COLLECTION:?} as a log; the registry needs a document collection"
        ))),
        None => Err(RegistryError::Schema(format!(
            "the strict schema in force does not declare {COLLECTION:?}: start the node with its \
             schema file (the daemon declares the collection) or declare [collections.{COLLECTION}]"
        ))),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ttl_ms(s: &AppState) -> u64 {
    s.registry.ttl().as_millis() as u64
}

/// Every entry, by name, with its health at `now`.
async fn entries(s: &AppState, now: u64) -> Result<Vec<Value>, RegistryError> {
    let key = key_field(s)?;
    let rows = s.store.query_async(COLLECTION, &Query::default()).await?;
    let mut out: Vec<Value> = rows
        .into_iter()
        .filter_map(|row| match row {
            Value::Object(map) => Some(service::entry(map, &key, now, ttl_ms(s))),
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(out)
}

async fn register(
    State(s): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, RegistryError> {
    let reg = Registration::parse(&body(b)?)?;
    let key = key_field(&s)?;
    let previous = s.store.get_async(COLLECTION, &reg.name).await?;
    let now = now_ms();
    let stamp = Stamp::at(now, &s.node_name);
    let mut record = reg.to_record(&stamp);
    record.insert(key.clone(), json!(reg.name));
    let registered_at = previous
        .as_ref()
        .and_then(|p| p.get("registered_at").cloned())
        .filter(|v| !v.is_null())
        .unwrap_or_else(|| json!(stamp.rfc3339));
    record.insert("registered_at".into(), registered_at);
    let op = WriteOp::Put {
        collection: COLLECTION.to_owned(),
        value: Value::Object(record),
        recreate: true,
    };
    let committed = s.store.transact_async(vec![op]).await?;
    let merged = committed
        .changes
        .into_iter()
        .find_map(|c| c.value)
        .and_then(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default();
    let code = match previous {
        Some(_) => StatusCode::OK,
        None => StatusCode::CREATED,
    };
    let entry = service::entry(merged, &key, now, ttl_ms(&s));
    let answer = json!({ "status": "registered", "service": entry });
    Ok((code, Json(answer)).into_response())
}

async fn list(State(s): State<AppState>) -> Result<Json<Value>, RegistryError> {
    let all = entries(&s, now_ms()).await?;
    let healthy = all.iter().filter(|e| service::is_healthy(e)).count();
    Ok(Json(json!({
        "services": all,
        "count": all.len(),
        "healthy": healthy,
        "ttl_seconds": s.registry.ttl_seconds,
    })))
}

async fn one(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, RegistryError> {
    service::check_name(&name)?;
    let key = key_field(&s)?;
    let row = s.store.get_async(COLLECTION, &name).await?;
    match row {
        Some(Value::Object(map)) => Ok(Json(service::entry(map, &key, now_ms(), ttl_ms(&s)))),
        _ => Err(RegistryError::NotFound(name)),
    }
}

async fn discover(
    State(s): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, RegistryError> {
    let want = Discover::parse(&body(b)?)?;
    let found: Vec<Value> = entries(&s, now_ms())
        .await?
        .into_iter()
        .filter(|e| want.matches(e))
        .collect();
    Ok(Json(json!({ "services": found, "count": found.len() })))
}

async fn status(State(s): State<AppState>) -> Result<Json<Value>, RegistryError> {
    let all = entries(&s, now_ms()).await?;
    let healthy = all.iter().filter(|e| service::is_healthy(e)).count();
    let mut registry = Map::new();
    registry.insert("services".into(), json!(all.len()));
    registry.insert("healthy".into(), json!(healthy));
    registry.insert("unhealthy".into(), json!(all.len() - healthy));
    registry.insert("ttl_seconds".into(), json!(s.registry.ttl_seconds));
    registry.insert("collection".into(), json!(COLLECTION));
    Ok(Json(json!({
        "status": "ok",
        "node": s.node_name,
        "replica": s.store.replica_id(),
        "uptime_s": s.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "registry": registry,
    })))
}
