//! The node's local HTTP listener (127.0.0.1:8100 by default): `/healthz`, `/metrics`,
//! `/peers`, `/status`, the record API under `/v1` ([`crate::api`]), the PostgREST dialect
//! under `/rest/v1` ([`crate::rest`]) and `/summary`, `/bundle/export`, `/bundle/import`
//! ([`crate::sneakernet`]).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use meshlite_core::store::{Status, Store};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use meshlite_mesh::net::events::PeerInfo;
use meshlite_mesh::net::handle::NetHandle;

use crate::config::HttpSection;
use crate::metrics::{Snapshot, render};
use crate::state::AppState;

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/peers", get(peers))
        .route("/status", get(status))
        .merge(crate::api::routes())
        .merge(crate::rest::routes())
        .merge(crate::sneakernet::routes())
        .with_state(state)
}

/// Binds `state.http.listen` and serves until `cancel` fires; returns the bound address and
/// the accept loop's task.
///
/// Each connection is HTTP/1.1 served by hyper in its own task, holding a permit of a
/// semaphore of `http.max_connections`: when all are taken the loop stops accepting, so further
/// clients wait in the kernel's queue instead of exhausting the daemon's descriptors. hyper's
/// header-read timeout bounds trickled headers and keep-alive waits; a watchdog closes a
/// connection on which no byte moved for `http.idle_timeout_ms` (a half-sent body, a client
/// that stopped reading). On `cancel`, connections finish their current request (long-lived
/// streams end on the same token) within [`CONNECTION_DRAIN`].
pub async fn serve(
    state: AppState,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(state.http.listen).await?;
    let local = listener.local_addr()?;
    let limits = state.http.clone();
    let app = router(state);
    let task = tokio::spawn(accept_loop(listener, app, limits, cancel));
    Ok((local, task))
}

/// How long open connections may take to finish once the daemon stops.
pub const CONNECTION_DRAIN: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (out of descriptors, say) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    limits: HttpSection,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let conn = serve_connection(stream, app.clone(), limits.clone(), cancel.clone());
        conns.spawn(async move {
            conn.await;
            drop(permit);
        });
        while let Some(done) = conns.try_join_next() {
            log_panic(done);
        }
    }
    drop(listener);
    while let Some(done) = conns.join_next().await {
        log_panic(done);
    }
    Ok(())
}

fn log_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "http connection task failed");
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: HttpSection,
    cancel: CancellationToken,
) {
    let progress = Progress::new();
    let io = TokioIo::new(Watched {
        inner: stream,
        progress: progress.clone(),
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout());
    let conn = builder.serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    tokio::select! {
        biased;
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CONNECTION_DRAIN, conn).await;
        }
        _ = progress.stalled(limits.idle_timeout()) => {
            tracing::debug!("closing an http connection on which nothing moved");
        }
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "http connection ended");
            }
        }
    }
}

/// When a connection last moved a byte, in ms since its start.
#[derive(Clone)]
struct Progress {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Progress {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing moved for `idle`.
    async fn stalled(&self, idle: Duration) {
        loop {
            let last = self.last_ms.load(Ordering::Relaxed);
            let deadline = self.start + Duration::from_millis(last) + idle;
            tokio::time::sleep_until(deadline.into()).await;
            if self.last_ms.load(Ordering::Relaxed) == last {
                return;
            }
        }
    }
}

/// A socket that records progress in [`Progress`] on every successful read or write.
struct Watched {
    inner: TcpStream,
    progress: Progress,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.progress.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.progress.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
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
        connections: &conns,
        table: &table,
        gossip: s.gossip.as_deref(),
        nats: s.nats.as_ref(),
        cert: s.cert.as_ref(),
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
