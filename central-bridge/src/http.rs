//! `/healthz` and Prometheus `/metrics`.
//!
//! Both probe Postgres on request (`SELECT count(*)` of the outbox, bounded by
//! [`PROBE_TIMEOUT`]) over one session kept for that purpose and reopened after an error, so a
//! scrape shows the database as it is now, never a stale flag. Until start-up has migrated the
//! database ([`AppState::set_ready`]) `/healthz` answers 503 `starting`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::Mutex;

use crate::migrations::Schemas;
use crate::pg::{PgConn, PgTarget};

/// Longest a health or metrics probe waits for Postgres.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    target: PgTarget,
    conn: Mutex<Option<PgConn>>,
    schemas: Schemas,
    tables: usize,
    pg_errors: AtomicU64,
    ready: AtomicBool,
}

impl AppState {
    /// State of a bridge that is starting (not ready, no session yet).
    pub fn new(target: PgTarget, schemas: Schemas, tables: usize) -> Self {
        Self(Arc::new(Inner {
            target,
            conn: Mutex::new(None),
            schemas,
            tables,
            pg_errors: AtomicU64::new(0),
            ready: AtomicBool::new(false),
        }))
    }

    /// Start-up is done; `conn` becomes the probe session.
    pub async fn set_ready(&self, conn: PgConn) {
        *self.0.conn.lock().await = Some(conn);
        self.0.ready.store(true, Ordering::Release);
    }

    fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::Acquire)
    }

    /// Rows waiting in the outbox, or `None` when Postgres does not answer in time.
    async fn probe(&self) -> Option<i64> {
        let inner = &self.0;
        let mut guard = inner.conn.lock().await;
        let attempt = async {
            if guard.is_none() {
                *guard = Some(inner.target.connect().await.map_err(|e| e.to_string())?);
            }
            let conn = guard.as_ref().ok_or("no session")?;
            let sql = format!("SELECT count(*) FROM {}.outbox", inner.schemas.state);
            let row = conn
                .client()
                .query_one(&sql, &[])
                .await
                .map_err(|e| e.to_string())?;
            Ok::<i64, String>(row.get(0))
        };
        match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
            Ok(Ok(n)) => Some(n),
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e,
                    _ => format!("no answer within {PROBE_TIMEOUT:?}"),
                };
                tracing::warn!(error = %why, "Postgres probe failed");
                inner.pg_errors.fetch_add(1, Ordering::Relaxed);
                *guard = None;
                None
            }
        }
    }
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "http listening (/healthz, /metrics)");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz(State(s): State<AppState>) -> Response {
    if !s.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"starting"}"#,
        )
            .into_response();
    }
    match s.probe().await {
        Some(_) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"ok","postgres":"up"}"#,
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"unhealthy","postgres":"down"}"#,
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let outbox = s.probe().await;
    let mut out = String::with_capacity(1024);
    let mut family = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    family(
        "meshlite_bridge_postgres_up",
        "gauge",
        "1 when the last probe of Postgres succeeded.",
        u8::from(outbox.is_some()).to_string(),
    );
    family(
        "meshlite_bridge_ready",
        "gauge",
        "1 once start-up (connect, migrate, tables) has finished.",
        u8::from(s.is_ready()).to_string(),
    );
    family(
        "meshlite_bridge_postgres_errors_total",
        "counter",
        "Failed Postgres probes since start.",
        s.0.pg_errors.load(Ordering::Relaxed).to_string(),
    );
    family(
        "meshlite_bridge_tables",
        "gauge",
        "Materialized tables managed by this bridge.",
        s.0.tables.to_string(),
    );
    if let Some(n) = outbox {
        family(
            "meshlite_bridge_outbox_pending",
            "gauge",
            "Central edits captured and not yet turned into CRDT changes.",
            n.to_string(),
        );
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}
