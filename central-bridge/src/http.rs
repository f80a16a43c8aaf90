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
use meshlite_mesh::http::Limits;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::migrations::Schemas;
use crate::pg::{PgConn, PgTarget};
use crate::replica::ReplicaStats;

/// Longest a health or metrics probe waits for Postgres.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What one probe of the database saw.
#[derive(Debug)]
struct Probe {
    /// Central edits captured and not yet consumed.
    outbox: i64,
    /// Conflict audit rows ever inserted (Postgres' table statistics).
    conflicts: i64,
    /// Refusals ever recorded.
    rejected: i64,
    /// Per origin (hex): the highest seq held and the transactions parked.
    origins: Vec<(String, i64, i64)>,
}

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
    replica: std::sync::OnceLock<Arc<ReplicaStats>>,
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
            replica: std::sync::OnceLock::new(),
        }))
    }

    /// Start-up is done; `conn` becomes the probe session and `replica`'s counters are
    /// exported.
    pub async fn set_ready(&self, conn: PgConn, replica: Arc<ReplicaStats>) {
        let _ = self.0.replica.set(replica);
        *self.0.conn.lock().await = Some(conn);
        self.0.ready.store(true, Ordering::Release);
    }

    fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::Acquire)
    }

    /// The database as it is now, or `None` when Postgres does not answer in time.
    async fn probe(&self) -> Option<Probe> {
        let inner = &self.0;
        let mut guard = inner.conn.lock().await;
        let attempt = async {
            if guard.is_none() {
                *guard = Some(inner.target.connect().await.map_err(|e| e.to_string())?);
            }
            let client = guard.as_ref().ok_or("no session")?.client();
            let st = &inner.schemas.state;
            let sql = format!(
                "SELECT (SELECT count(*) FROM {st}.outbox), \
                        coalesce((SELECT n_tup_ins FROM pg_stat_user_tables \
                                  WHERE schemaname = $1 AND relname = 'conflicts'), 0), \
                        coalesce((SELECT n_tup_ins FROM pg_stat_user_tables \
                                  WHERE schemaname = $1 AND relname = 'rejected'), 0)"
            );
            let row = client
                .query_one(&sql, &[&st.as_str()])
                .await
                .map_err(|e| e.to_string())?;
            let sql = format!(
                "SELECT encode(o.origin, 'hex'), o.max_seq, \
                        (SELECT count(*) FROM {st}.parked p WHERE p.origin = o.origin) \
                 FROM {st}.origins o ORDER BY 1 LIMIT 1000"
            );
            let origins = client
                .query(&sql, &[])
                .await
                .map_err(|e| e.to_string())?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            Ok::<Probe, String>(Probe {
                outbox: row.get(0),
                conflicts: row.get(1),
                rejected: row.get(2),
                origins,
            })
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

/// Serves on `listener` under `limits` (the mesh's bounded listener, the node's too) until
/// `shutdown` completes; open connections then finish their request within
/// [`meshlite_mesh::http::CONNECTION_DRAIN`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "http listening (/healthz, /metrics)");
    }
    let cancel = CancellationToken::new();
    let server = meshlite_mesh::http::serve(listener, router(state), limits, cancel.clone());
    tokio::pin!(server, shutdown);
    tokio::select! {
        r = &mut server => return r,
        () = &mut shutdown => cancel.cancel(),
    }
    server.await
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
    if let Some(p) = &outbox {
        family(
            "meshlite_bridge_outbox_pending",
            "gauge",
            "Central edits captured and not yet turned into CRDT changes.",
            p.outbox.to_string(),
        );
        family(
            "meshlite_bridge_conflicts_recorded_total",
            "counter",
            "Fields whose concurrent values were merged, recorded in the conflicts table.",
            p.conflicts.to_string(),
        );
        family(
            "meshlite_bridge_rejected_total",
            "counter",
            "Inputs refused and recorded in the rejected table (peers, relay, central edits).",
            p.rejected.to_string(),
        );
    }
    if let Some(r) = s.0.replica.get() {
        replica_families(&mut out, r);
    }
    if let Some(p) = &outbox {
        origin_families(&mut out, &p.origins);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}

/// Per-origin progress: what each node's transactions the bridge holds (compare with the node's
/// own head for lag) and how many wait for dependencies.
fn origin_families(out: &mut String, origins: &[(String, i64, i64)]) {
    out.push_str(
        "# HELP meshlite_bridge_origin_max_seq Highest transaction seq of an origin held by the bridge.\n\
         # TYPE meshlite_bridge_origin_max_seq gauge\n",
    );
    for (origin, max, _) in origins {
        out.push_str(&format!(
            "meshlite_bridge_origin_max_seq{{origin=\"{origin}\"}} {max}\n"
        ));
    }
    out.push_str(
        "# HELP meshlite_bridge_origin_parked Transactions of an origin parked until their dependencies arrive.\n\
         # TYPE meshlite_bridge_origin_parked gauge\n",
    );
    for (origin, _, parked) in origins {
        out.push_str(&format!(
            "meshlite_bridge_origin_parked{{origin=\"{origin}\"}} {parked}\n"
        ));
    }
}

/// The replica's counters in Prometheus text.
fn replica_families(out: &mut String, r: &ReplicaStats) {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let families: [(&str, &str, &str, String); 11] = [
        (
            "meshlite_bridge_batches_total",
            "counter",
            "Batches of peer transactions committed to Postgres.",
            get(&r.batches).to_string(),
        ),
        (
            "meshlite_bridge_batch_seconds_total",
            "counter",
            "Time spent committing those batches.",
            format!("{:.6}", get(&r.batch_micros) as f64 / 1e6),
        ),
        (
            "meshlite_bridge_last_batch_txns",
            "gauge",
            "Transactions in the last committed batch.",
            get(&r.last_batch_txns).to_string(),
        ),
        (
            "meshlite_bridge_txns_applied_total",
            "counter",
            "Peer transactions applied (or parked until their dependencies arrive).",
            get(&r.txns_applied).to_string(),
        ),
        (
            "meshlite_bridge_txns_duplicate_total",
            "counter",
            "Peer transactions received that were already held.",
            get(&r.txns_duplicate).to_string(),
        ),
        (
            "meshlite_bridge_txns_rejected_total",
            "counter",
            "Peer transactions refused (see the rejected table).",
            get(&r.txns_rejected).to_string(),
        ),
        (
            "meshlite_bridge_rows_written_total",
            "counter",
            "Materialized rows written or deleted.",
            get(&r.rows_written).to_string(),
        ),
        (
            "meshlite_bridge_central_edits_total",
            "counter",
            "Central edits turned into CRDT changes.",
            get(&r.central_edits).to_string(),
        ),
        (
            "meshlite_bridge_doc_cache_hits_total",
            "counter",
            "Records whose cached merged document was still current (not loaded from Postgres).",
            get(&r.doc_cache_hits).to_string(),
        ),
        (
            "meshlite_bridge_doc_cache_misses_total",
            "counter",
            "Cached documents found stale (their row changed since) and loaded again.",
            get(&r.doc_cache_misses).to_string(),
        ),
        (
            "meshlite_bridge_replica_postgres_errors_total",
            "counter",
            "Replica operations that failed in Postgres (peers resend).",
            get(&r.postgres_errors).to_string(),
        ),
    ];
    for (name, kind, help, value) in families {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
}
