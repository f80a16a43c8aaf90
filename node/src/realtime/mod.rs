//! Supabase Realtime's websocket at `/realtime/v1/websocket`, so that
//! `supabase.channel(...).on('postgres_changes', ...).subscribe()` works unchanged against a
//! node: the Phoenix channel protocol as realtime-js speaks it (serializers `vsn=1.0.0` and
//! `2.0.0`), carrying every committed change — local writes and changes that arrived from
//! peers, from the store's change events (the source `/v1/changes` reads) — as
//! `postgres_changes` messages. Issue 9, section "Realtime"; see the README section "Realtime".
//!
//! Broadcast and presence are refused: a join that enables presence gets an error reply, and
//! a broadcast or presence push gets an error reply (realtime-js reports both to the app).
//!
//! Modules, each depending only on those listed after it:
//! `socket` (the websocket loop and the change forwarder, bounded in bytes) → `session` (the
//! protocol as a state machine without I/O) → `change` (a store change as a
//! `postgres_changes` payload), `subscription` (a `postgres_changes` entry: checked, matched;
//! filters reuse `/rest/v1`'s parser and evaluator) → `frame` (the wire format), `access` (the
//! auth seam).

pub mod access;
pub mod change;
pub mod frame;
pub mod session;
pub mod socket;
pub mod subscription;

use std::net::SocketAddr;

use axum::Extension;
use axum::Router;
use axum::extract::{ConnectInfo, Query, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::state::AppState;
use frame::Vsn;
use socket::{MAX_MESSAGE_BYTES, SocketConfig};

/// The websocket route.
pub fn routes() -> Router<AppState> {
    Router::new().route("/realtime/v1/websocket", get(websocket))
}

/// The connection's query parameters (realtime-js also sends `log_level`, ignored).
#[derive(Debug, Deserialize)]
struct ConnectParams {
    apikey: Option<String>,
    vsn: Option<String>,
}

fn refuse(status: StatusCode, message: impl std::fmt::Display) -> Response {
    let body = serde_json::json!({ "message": message.to_string() });
    (status, axum::Json(body)).into_response()
}

async fn websocket(
    State(s): State<AppState>,
    Query(p): Query<ConnectParams>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(vsn) = Vsn::parse(p.vsn.as_deref()) else {
        let msg = "unsupported vsn: this node speaks the Phoenix serializers 1.0.0 and 2.0.0";
        return refuse(StatusCode::BAD_REQUEST, msg);
    };
    let gate = access::Gate::new(s.auth.clone(), peer.map(|Extension(c)| c.0.ip()));
    if let Err(denied) = gate.caller(p.apikey.as_deref(), None) {
        return refuse(StatusCode::FORBIDDEN, denied);
    }
    let cfg = SocketConfig {
        store: s.store.clone(),
        vsn,
        apikey: p.apikey,
        gate,
        budget: s.http.changes_buffer_bytes,
        idle: s.http.idle_timeout(),
        shutdown: s.shutdown.clone(),
    };
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| socket::serve(socket, cfg))
}
