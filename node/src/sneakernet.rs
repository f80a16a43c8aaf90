//! Sneakernet on a running daemon: the HTTP side of `meshlite summary` and `meshlite bundle`.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `GET /summary` | | this replica's summary (what `meshlite summary` prints) |
//! | `POST /bundle/export` | empty, or another replica's summary | the bundle, streamed |
//! | `POST /bundle/import` | a bundle, streamed | the import report (as `meshlite bundle import`) |
//!
//! Outside `/v1`, so no collection name can shadow them. Export runs [`crate::bundles::export`]
//! on a blocking thread writing into a bounded channel of [`CHUNK`]-byte chunks that the
//! response drains: memory stays at one store batch plus [`CHANNEL_CHUNKS`] chunks, and a client
//! that stops reading stops the export. A failure after the first byte aborts the response, so
//! the client gets a bundle without its trailer, which every importer refuses. Import spools the
//! body to a temporary file in the data directory (at most [`MAX_IMPORT_BYTES`]), then verifies
//! and applies it from there ([`crate::bundles::import`]): nothing is written unless the whole
//! bundle verifies.

use std::io::Write;
use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use meshlite_core::Summary;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::bundles;
use crate::state::AppState;

/// Bytes per chunk of a streamed export.
pub const CHUNK: usize = 64 * 1024;
/// Chunks buffered between the exporting thread and the response.
pub const CHANNEL_CHUNKS: usize = 8;
/// Largest bundle `POST /bundle/import` accepts (spooled to disk, not held in memory).
pub const MAX_IMPORT_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Largest summary accepted by `POST /bundle/export`.
pub const MAX_SUMMARY_BYTES: usize = 16 * 1024 * 1024;

/// The routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/summary", get(summary))
        .route("/bundle/export", post(export))
        .route("/bundle/import", post(import))
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    let body = serde_json::json!({ "error": message.to_string() });
    (status, axum::Json(body)).into_response()
}

async fn summary(State(s): State<AppState>) -> Response {
    match s.store.summary_async().await {
        Ok(summary) => axum::Json(summary).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// The optional summary of the replica the bundle is for.
async fn read_for(body: Body) -> Result<Option<Summary>, Response> {
    let bytes = axum::body::to_bytes(body, MAX_SUMMARY_BYTES)
        .await
        .map_err(|_| {
            let msg = format!("the summary exceeds the limit of {MAX_SUMMARY_BYTES} bytes");
            error(StatusCode::PAYLOAD_TOO_LARGE, msg)
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        let msg = format!("the body must be empty or a summary from `meshlite summary`: {e}");
        error(StatusCode::BAD_REQUEST, msg)
    })
}

async fn export(State(s): State<AppState>, body: Body) -> Response {
    let theirs = match read_for(body).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (tx, mut rx) = mpsc::channel::<std::io::Result<Bytes>>(CHANNEL_CHUNKS);
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || {
        let sink = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = bundles::export(&store, theirs.as_ref(), sink)
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|(mut sink, done)| sink.flush().map(|()| done));
        match result {
            Ok(done) => tracing::info!(txns = done.txns, "bundle exported over HTTP"),
            Err(e) => {
                tracing::warn!(error = %e, "bundle export over HTTP failed");
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A blocking `Write` that sends [`CHUNK`]-byte chunks down a bounded channel (back-pressure
/// from the HTTP client reaches the exporting thread). A closed channel (the client left) is a
/// broken pipe.
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

async fn import(State(s): State<AppState>, body: Body) -> Response {
    let spool = Spool::new(s.store.dir());
    let size = match spool.fill(body).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let store = s.store.clone();
    let path = spool.path.clone();
    let done = tokio::task::spawn_blocking(move || {
        bundles::import(
            &store,
            || std::fs::File::open(&path).map(std::io::BufReader::new),
            |_, _| {},
        )
    })
    .await;
    match done {
        Ok(Ok(imported)) => {
            let mut report = imported.to_json();
            report["bytes"] = size.into();
            tracing::info!(%report, "bundle imported over HTTP");
            axum::Json(report).into_response()
        }
        Ok(Err(e @ bundles::ImportError::Invalid(_))) => error(StatusCode::BAD_REQUEST, e),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// A temporary file in the data directory holding an uploaded bundle; removed on drop.
struct Spool {
    path: PathBuf,
}

impl Spool {
    fn new(dir: &Path) -> Self {
        let name = format!("import-{:016x}.bundle.tmp", rand::random::<u64>());
        Self {
            path: dir.join(name),
        }
    }

    /// Copies the request body into the file; its size, or the error answer.
    async fn fill(&self, body: Body) -> Result<u64, Response> {
        let io = |e: std::io::Error| {
            let msg = format!("cannot spool the bundle to {}: {e}", self.path.display());
            error(StatusCode::INSUFFICIENT_STORAGE, msg)
        };
        let mut file = tokio::fs::File::create(&self.path).await.map_err(io)?;
        let mut stream = body.into_data_stream();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
            size += chunk.len() as u64;
            if size > MAX_IMPORT_BYTES {
                let msg = format!("the bundle exceeds the limit of {MAX_IMPORT_BYTES} bytes");
                return Err(error(StatusCode::PAYLOAD_TOO_LARGE, msg));
            }
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        Ok(size)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
