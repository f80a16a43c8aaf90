//! The node's local HTTP listener (127.0.0.1:8100 by default): `/healthz`, `/metrics`,
//! `/peers`, `/status`, the record API under `/v1` ([`crate::api`]), the PostgREST dialect
//! under `/rest/v1` ([`crate::rest`]), the Realtime websocket ([`crate::realtime`]), the service registry
//! under `/api` ([`crate::registry`]) sync visibility under `/api/sync` ([`crate::syncview`]) and `/summary`,
//! `/bundle/export`, `/bundle/import` ([`crate::sneakernet`]).
//!
//! Every request carries its peer's address (`ConnectInfo<SocketAddr>`), which
//! [`crate::auth`] reads to trust keyless loopback requests. `/healthz` is open; `/metrics`,
//! `/peers`, `/status`, `/api/sync` and the native `/v1` API need the `service_role`
//! ([`crate::auth::require_service_role`]); `/rest/v1` applies the schema's per-collection
//! access rules in its handlers.
//!
//! `/healthz` is also the seed registry's health check: 200 with `"status": "ok"` and
//! `"health_status": "healthy"` (the registry's vocabulary), 503 when the store is unavailable.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use meshlite_core::store::{Status, Store};
use tokio_util::sync::CancellationToken;

use meshlite_mesh::net::events::PeerInfo;
use meshlite_mesh::net::handle::NetHandle;

use crate::metrics::{Snapshot, render};
use crate::state::AppState;

/// The router.
pub fn router(state: AppState) -> Router {
    let service_only =
        axum::middleware::from_fn_with_state(state.clone(), crate::auth::require_service_role);
    let native = Router::new()
        .route("/metrics", get(metrics))
        .route("/peers", get(peers))
        .route("/status", get(status))
        .merge(crate::api::routes())
        .merge(crate::syncview::routes())
        .route_layer(service_only);
    Router::new()
        .route("/healthz", get(healthz))
        .merge(native)
        .merge(crate::rest::routes())
        .merge(crate::realtime::routes())
        .merge(crate::registry::routes())
        .merge(crate::sneakernet::routes())
        .with_state(state)
}

/// Binds `state.http.listen` and serves until `cancel` fires; returns the bound address and
/// the accept loop's task. The listener and its limits (`http.max_connections`,
/// `http.header_timeout_ms`, `http.idle_timeout_ms`) are the mesh's shared
/// [`meshlite_mesh::http::serve`], which the bridge serves its router with too.
pub async fn serve(
    state: AppState,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(state.http.listen).await?;
    let local = listener.local_addr()?;
    let limits = state.http.limits();
    let app = router(state);
    let task = tokio::spawn(meshlite_mesh::http::serve(listener, app, limits, cancel));
    Ok((local, task))
}

async fn read_status(store: &Store) -> Option<Status> {
    match store.status_async().await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "store status unavailable");
            None
        }
    }
}

async fn connections(net: &Option<NetHandle>) -> Vec<PeerInfo> {
    match net {
        Some(net) => net.peers().await,
        None => Vec::new(),
    }
}

async fn healthz(State(s): State<AppState>) -> Response {
    let status = read_status(&s.store).await;
    let code = if status.is_some() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if status.is_some() { "ok" } else { "store unavailable" },
        "health_status": if status.is_some() { "healthy" } else { "unhealthy" },
        "node": s.node_name,
        "replica": s.store.replica_id(),
        "node_id": s.net.as_ref().map(|n| n.node_id().to_string()),
        "uptime_s": s.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    let status = read_status(&s.store).await;
    let conns = connections(&s.net).await;
    let table = s.table.snapshot();
    let text = render(&Snapshot {
        status: status.as_ref(),
        commits: s.store.commit_stats(),
        connections: &conns,
        table: &table,
        gossip: s.gossip.as_deref(),
        epidemic: s.epidemic.as_deref(),
        nats: s.nats.as_ref(),
        cert: s.cert.as_ref(),
        handshakes_rate_limited: s.net.as_ref().map(NetHandle::handshakes_rate_limited),
        handshakes_retried: s.net.as_ref().map(NetHandle::handshakes_retried),
        push_applies: s.net.as_ref().map(NetHandle::push_apply_counts),
    });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn peers(State(s): State<AppState>) -> Response {
    let conns = connections(&s.net).await;
    let body = serde_json::json!({ "table": s.table.snapshot(), "connections": conns });
    axum::Json(body).into_response()
}

/// The store's status, plus `certificate` (expiry of the node certificate, `null` without a
/// mesh).
async fn status(State(s): State<AppState>) -> Response {
    let Some(st) = read_status(&s.store).await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response();
    };
    let mut body = match serde_json::to_value(st) {
        Ok(v) => v,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let cert = s.cert.map(|c| c.to_json(std::time::SystemTime::now()));
    if let Some(obj) = body.as_object_mut() {
        obj.insert("certificate".into(), cert.into());
    }
    axum::Json(body).into_response()
}
