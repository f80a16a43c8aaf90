//! Sync visibility: per record, which peers (and whether the central bridge) hold its latest
//! change, and a per-collection, per-peer summary — the seeds' `_synced` / `_synced_at`
//! columns, computed from what peers acknowledged instead of a flag a worker sets.
//!
//! | method and path                              | answer |
//! |----------------------------------------------|--------|
//! | `GET /api/sync/status`                       | per peer and per collection: pending transactions and records, last acknowledgement, connection counters |
//! | `GET /api/sync/records/{collection}?limit=&offset=` | the collection's live rows (by key, at most 1000 unless `limit` says otherwise) with the sync columns |
//! | `GET /api/sync/records/{collection}/{id}`    | one row with the sync columns (404 if absent) |
//!
//! Sync columns added to each row:
//!
//! | column            | meaning |
//! |-------------------|---------|
//! | `_synced`         | every known peer holds the row's latest change (false while no peer is known) |
//! | `_synced_peers`   | replica ids of the peers that hold it |
//! | `_pending_peers`  | replica ids of the known peers that do not (yet) |
//! | `_synced_central` | a central bridge (`sync.central_replicas`) holds it; null when none is configured |
//! | `_synced_at`      | when the most recent acknowledgement covering it was recorded (RFC 3339), or null |
//!
//! # Where the knowledge comes from
//!
//! Peers acknowledge their whole summary at the end of every sync session (anti-entropy rounds,
//! every `sync.interval_seconds`); the store keeps the last one per peer replica
//! ([`meshlite_core::store::Store::peer_acks`]). [`pending`] turns this replica's summary and
//! one acknowledgement into the transactions that peer lacks and the records they touch. So the
//! view is as fresh as the last session with each peer: a change a push already delivered shows
//! as pending until the next round, never the other way round. "Known peers" are those that ever
//! completed a session with this replica (including the bridge, which syncs like any peer).
//!
//! Cost: one read of the summaries, then per peer the encoded transactions it lacks (at most
//! [`PEER_READ_BUDGET`] bytes each; beyond it the peer is marked `truncated` and its unread
//! records count as pending), decoded to learn which records they touch. In a converged fleet
//! that is nothing.

pub mod pending;

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, Query as QueryParams, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use meshlite_core::ids::ReplicaId;
use meshlite_core::schema::validate_name;
use meshlite_core::store::{PeerAck, Query, ReadError, Store};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::registry::service::rfc3339;
use crate::state::AppState;
use pending::{PeerPending, RecordKey, record_sync};

/// Bytes of pending transactions read per peer for one request.
pub const PEER_READ_BUDGET: usize = 8 << 20;

/// Rows `GET /api/sync/records/{collection}` returns when it names no `limit`.
pub const DEFAULT_LIMIT: usize = 1000;

/// The routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/sync/status", get(status))
        .route("/api/sync/records/{collection}", get(records))
        .route("/api/sync/records/{collection}/{id}", get(record))
}

/// Why a sync view request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncViewError {
    /// A bad collection name or query (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such record (404).
    #[error("no record {1:?} in {0:?}")]
    NotFound(String, String),
    /// The store could not be read (503, or 400 for an invalid query).
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl IntoResponse for SyncViewError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) | Self::Read(ReadError::InvalidName(_)) => StatusCode::BAD_REQUEST,
            Self::Read(ReadError::InvalidQuery(_)) => StatusCode::BAD_REQUEST,
            Self::NotFound(..) => StatusCode::NOT_FOUND,
            Self::Read(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// Every known peer's acknowledgement with what it lacks.
struct View {
    held_txns: u64,
    peers: Vec<(PeerAck, PeerPending)>,
}

impl View {
    async fn read(store: &Store) -> Result<View, ReadError> {
        let acks = store.peer_acks_async().await?;
        let mut peers = Vec::with_capacity(acks.peers.len());
        for ack in acks.peers {
            let want = acks.held.missing_from(&ack.held);
            let mut p = PeerPending {
                txns: want.iter().map(|(_, r)| r.end() - r.start() + 1).sum(),
                ..PeerPending::default()
            };
            if !want.is_empty() {
                let batch = store.txns_for_async(&want, PEER_READ_BUDGET).await?;
                p.absorb(&batch.txns, &batch.ids);
                p.truncated = batch.more;
            }
            peers.push((ack, p));
        }
        Ok(View {
            held_txns: acks.held.txn_count(),
            peers,
        })
    }

    /// The sync columns of one record.
    fn columns(&self, record: &RecordKey, central: &[ReplicaId]) -> Map<String, Value> {
        let refs: Vec<(ReplicaId, &PeerPending)> =
            self.peers.iter().map(|(a, p)| (a.replica, p)).collect();
        let s = record_sync(record, &refs);
        let acked_at = |r: &ReplicaId| {
            self.peers
                .iter()
                .find(|(a, _)| a.replica == *r)
                .map(|(a, _)| a.acked_at_ms)
        };
        let synced_at = s.holders.iter().filter_map(acked_at).max();
        let central_holds = match central.is_empty() {
            true => Value::Null,
            false => json!(s.holders.iter().any(|h| central.contains(h))),
        };
        let mut m = Map::new();
        m.insert(
            "_synced".into(),
            json!(s.lacking.is_empty() && !s.holders.is_empty()),
        );
        m.insert("_synced_peers".into(), json!(s.holders));
        m.insert("_pending_peers".into(), json!(s.lacking));
        m.insert("_synced_central".into(), central_holds);
        m.insert("_synced_at".into(), json!(synced_at.map(rfc3339)));
        m
    }
}

/// The store's key of a row: its primary key as text (integer keys as decimal strings).
fn row_key(row: &Map<String, Value>, key: &str) -> Option<String> {
    match row.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn key_field(store: &Store, collection: &str) -> Result<String, SyncViewError> {
    validate_name("collection", collection)
        .map_err(|e| SyncViewError::BadRequest(e.to_string()))?;
    Ok(store.schema().collection_or_default(collection).primary_key)
}

fn with_columns(
    row: Value,
    collection: &str,
    key: &str,
    view: &View,
    central: &[ReplicaId],
) -> Value {
    match row {
        Value::Object(mut row) => {
            if let Some(id) = row_key(&row, key) {
                row.extend(view.columns(&(collection.to_owned(), id), central));
            }
            Value::Object(row)
        }
        other => other,
    }
}

/// `?limit=&offset=` of the records listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<usize>,
    #[serde(default)]
    offset: usize,
}

async fn records(
    State(s): State<AppState>,
    Path(collection): Path<String>,
    page: Result<QueryParams<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, SyncViewError> {
    let QueryParams(page) = page.map_err(|e| SyncViewError::BadRequest(e.body_text()))?;
    let key = key_field(&s.store, &collection)?;
    let q = Query {
        limit: Some(page.limit.unwrap_or(DEFAULT_LIMIT)),
        offset: page.offset,
        ..Query::default()
    };
    let rows = s.store.query_async(&collection, &q).await?;
    let view = View::read(&s.store).await?;
    let central = &s.sync.central_replicas;
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|r| with_columns(r, &collection, &key, &view, central))
        .collect();
    Ok(Json(Value::Array(rows)))
}

async fn record(
    State(s): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
) -> Result<Json<Value>, SyncViewError> {
    let key = key_field(&s.store, &collection)?;
    let Some(row) = s.store.get_async(&collection, &id).await? else {
        return Err(SyncViewError::NotFound(collection, id));
    };
    let view = View::read(&s.store).await?;
    let central = &s.sync.central_replicas;
    Ok(Json(with_columns(row, &collection, &key, &view, central)))
}

async fn status(State(s): State<AppState>) -> Result<Json<Value>, SyncViewError> {
    let view = View::read(&s.store).await?;
    let store_status = s.store.status_async().await?;
    let central = &s.sync.central_replicas;
    let peers: Vec<Value> = view
        .peers
        .iter()
        .map(|(ack, p)| peer_json(ack, p, central))
        .collect();
    let mut pending: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (_, p) in &view.peers {
        for (c, id) in &p.records {
            pending.entry(c.as_str()).or_default().insert(id.as_str());
        }
    }
    let collections: Vec<Value> = store_status
        .collections
        .iter()
        .map(|c| {
            let n = pending.get(c.name.as_str()).map_or(0, BTreeSet::len);
            json!({
                "name": c.name, "live": c.live, "deleted": c.deleted, "pending_records": n,
                "synced": n == 0 && !view.peers.is_empty()
                    && view.peers.iter().all(|(_, p)| !p.truncated),
            })
        })
        .collect();
    let connections = match &s.net {
        Some(net) => net.peers().await,
        None => Vec::new(),
    };
    Ok(Json(json!({
        "node": s.node_name,
        "replica": s.store.replica_id(),
        "held_txns": view.held_txns,
        "central_replicas": central,
        "peers": peers,
        "collections": collections,
        "connections": connections,
    })))
}

fn peer_json(ack: &PeerAck, p: &PeerPending, central: &[ReplicaId]) -> Value {
    json!({
        "replica": ack.replica,
        "central": central.contains(&ack.replica),
        "last_ack": rfc3339(ack.acked_at_ms),
        "last_ack_ms": ack.acked_at_ms,
        "pending_txns": p.txns,
        "pending_records": p.records.len(),
        "pending_by_collection": p.by_collection(),
        "undecodable_txns": p.undecodable,
        "truncated": p.truncated,
        "status": if p.txns == 0 { "synced" } else { "pending" },
    })
}
