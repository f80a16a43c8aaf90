//! The HTTP/1.1 listener the node and the bridge serve their routers with (feature `http`).
//!
//! [`serve`] accepts connections on a bound listener and serves each with hyper in its own task,
//! holding a permit of a semaphore of [`Limits::max_connections`]: when all are taken the loop
//! stops accepting, so further clients wait in the kernel's queue instead of exhausting the
//! process's descriptors. hyper's header-read timeout bounds trickled headers and keep-alive
//! waits; a watchdog closes a connection on which no byte moved for [`Limits::idle_timeout`] (a
//! half-sent body, a client that stopped reading). On `cancel`, connections finish their current
//! request (long-lived streams must end on the same token) within [`CONNECTION_DRAIN`].
//!
//! A handler that panics answers 500 (`answer_panics`) instead of resetting the connection.
//!
//! Every request carries its peer's address as `ConnectInfo<SocketAddr>` (the node's auth trusts
//! keyless loopback requests). Connections may be upgraded (the node's Realtime websocket): an
//! upgraded connection keeps its permit until its socket is dropped, and the websocket enforces
//! its own idle timeout and ends on the same `cancel` token.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, invalid};

/// How long open connections may take to finish once the process stops.
pub const CONNECTION_DRAIN: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (out of descriptors, say) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The listener's limits, from a `[http]` config section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once (`http.max_connections`).
    pub max_connections: usize,
    /// A request's headers must arrive within this many ms; also the keep-alive idle timeout
    /// (`http.header_timeout_ms`).
    pub header_timeout_ms: u64,
    /// A connection on which no byte moved either way for this many ms is closed
    /// (`http.idle_timeout_ms`).
    pub idle_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
        }
    }
}

impl Limits {
    /// The header-read (and keep-alive idle) timeout.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    /// The no-progress timeout of a connection.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// Checks the ranges; errors name the `http.*` key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=65_536).contains(&self.max_connections) {
            return Err(invalid(
                "http.max_connections",
                "must be between 1 and 65536",
            ));
        }
        if !(100..=3_600_000).contains(&self.header_timeout_ms) {
            return Err(invalid(
                "http.header_timeout_ms",
                "must be between 100 and 3600000",
            ));
        }
        if !(300..=3_600_000).contains(&self.idle_timeout_ms) {
            return Err(invalid(
                "http.idle_timeout_ms",
                "must be between 300 and 3600000",
            ));
        }
        Ok(())
    }
}

/// Serves `app` on `listener` under `limits` until `cancel` fires, then lets open connections
/// finish (see the module doc).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = app.layer(axum::middleware::from_fn(answer_panics));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed; stop rather than spin
            },
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
        let conn = serve_connection(stream, app.clone(), limits, cancel.clone());
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

/// A handler that panics (a bug: input from the network must never make one) answers 500 with
/// a JSON error and is logged with its method and path; without this the connection's task
/// died and the client saw its connection reset, with no answer.
async fn answer_panics(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    use futures_util::FutureExt as _;
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    match std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(%method, %path, panic = %what, "request handler panicked; answered 500");
            let body =
                serde_json::json!({ "error": "internal error (a bug: see the server's log)" });
            (hyper::StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
        }
    }
}

fn log_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "http connection task failed");
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: Limits,
    cancel: CancellationToken,
) {
    let progress = Progress::new();
    let peer = stream.peer_addr().ok();
    let app = tower::ServiceExt::map_request(app, move |mut req: axum::extract::Request<_>| {
        if let Some(peer) = peer {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        req
    });
    // Cancelled when the socket is dropped: by hyper, or by the websocket it was upgraded to.
    let closed = CancellationToken::new();
    let io = TokioIo::new(Watched {
        inner: stream,
        progress: progress.clone(),
        _closed: closed.clone().drop_guard(),
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout());
    let mut conn = Box::pin(
        builder
            .serve_connection(io, TowerToHyperService::new(app))
            .with_upgrades(),
    );
    tokio::select! {
        biased;
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CONNECTION_DRAIN, conn.as_mut()).await;
        }
        _ = progress.stalled(limits.idle_timeout()) => {
            tracing::debug!("closing an http connection on which nothing moved");
            return;
        }
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "http connection ended");
            }
        }
    }
    // After an upgrade the socket lives on in the websocket task: hold the permit until it ends.
    drop(conn);
    tokio::select! {
        _ = closed.cancelled() => {}
        _ = cancel.cancelled() => {
            let _ = tokio::time::timeout(CONNECTION_DRAIN, closed.cancelled()).await;
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
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
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
    _closed: tokio_util::sync::DropGuard,
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

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn get_raw(addr: std::net::SocketAddr, path: &str) -> String {
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).await.expect("write");
        let mut out = String::new();
        conn.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_server_carries_on() {
        fn boom() -> &'static str {
            panic!("a bug in a handler")
        }
        let app = Router::new()
            .route("/boom", get(|| async { boom() }))
            .route("/ok", get(|| async { "fine" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(listener, app, Limits::default(), cancel.clone()));
        let answer = get_raw(addr, "/boom").await;
        assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
        assert!(answer.contains("internal error"), "{answer}");
        let answer = get_raw(addr, "/ok").await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("fine"),
            "{answer}"
        );
        cancel.cancel();
        server.await.expect("join").expect("serve");
    }
}
