//! What `meshlite-bridge run` and `migrate` do today: connect, migrate, create or extend the
//! materialized tables, and (for `run`) serve `/healthz` and `/metrics` until shutdown.
//!
//! With `bridge.fleet_dir`, `run` also starts the fleet peer ([`crate::peer`]) over the bridge's
//! Postgres replica ([`crate::replica`]): what peers send is merged and materialized.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use meshlite_core::ReplicaId;
use meshlite_core::schema::Schema;
use meshlite_mesh::backoff::Backoff;
use meshlite_mesh::tasks::{SHUTDOWN_GRACE, Ticker};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::ddl::{self, ApplyError, DdlError, TableSpec};
use crate::http;
use crate::migrations::{self, MigrateError, MigrateReport};
use crate::peer::{Peer, PeerError};
use crate::pg::{PgConn, PgError, PgTarget};
use crate::replica::{self, PgReplica};

/// Error starting or running the bridge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The schema file could not be loaded.
    #[error("bridge.schema: {0}")]
    Schema(#[from] meshlite_core::schema::SchemaError),
    /// The schema cannot be materialized.
    #[error("bridge.schema: {0}")]
    Ddl(#[from] DdlError),
    /// Postgres could not be reached.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// A migration failed.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// The tables could not be created or extended.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The bridge's state could not be read or written.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The fleet peer could not start.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The HTTP listener could not be opened or failed.
    #[error("http.listen {addr}: {source}")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The schema file's schema (an empty schemaless one without a file).
pub fn load_schema(config: &Config) -> Result<Schema, BridgeError> {
    Ok(match &config.bridge.schema {
        Some(path) => Schema::from_file(Path::new(path))?,
        None => Schema::default(),
    })
}

/// What every apply of the bridge whose origin is `replica` needs, from `config` and the
/// `tables` it materializes.
pub fn replica_context(
    config: &Config,
    replica: ReplicaId,
    tables: &[TableSpec],
) -> Result<replica::Context, BridgeError> {
    Ok(replica::Context {
        replica,
        name: config.bridge.name.clone(),
        schema: Arc::new(load_schema(config)?),
        tables: tables
            .iter()
            .map(|t| (t.name.as_str().to_owned(), t.clone()))
            .collect(),
        schemas: config.schemas()?,
        batch_size: config.sync.batch_size,
        doc_cache_bytes: config.sync.doc_cache_bytes(),
    })
}

/// The tables the configuration asks for: the schema's collections, limited to `sync.tables`.
/// No schema file means no tables (and `sync.tables` must then be empty).
pub fn load_tables(config: &Config) -> Result<Vec<TableSpec>, BridgeError> {
    let Some(path) = &config.bridge.schema else {
        if !config.sync.tables.is_empty() {
            return Err(ConfigError::Invalid {
                key: "sync.tables".into(),
                reason: "names tables but no bridge.schema (MESHLITE_SCHEMA) declares them".into(),
            }
            .into());
        }
        return Ok(Vec::new());
    };
    let schema = Schema::from_file(Path::new(path))?;
    Ok(ddl::tables_from_schema(&schema, &config.sync.tables)?)
}

/// Start-up on an open session: migrations, then the materialized tables and their exposure.
pub async fn prepare(
    conn: &mut PgConn,
    config: &Config,
    tables: &[TableSpec],
) -> Result<MigrateReport, BridgeError> {
    let schemas = config.schemas()?;
    let report = migrations::migrate(conn.client_mut(), &schemas).await?;
    ddl::apply(conn.client_mut(), &schemas, tables, &config.grants()?).await?;
    Ok(report)
}

/// `meshlite-bridge migrate`: connect, migrate, create or extend the tables, disconnect.
pub async fn migrate(config: &Config) -> Result<MigrateReport, BridgeError> {
    let tables = load_tables(config)?;
    let mut conn = config.pg_target()?.connect().await?;
    prepare(&mut conn, config, &tables).await
}

/// `meshlite-bridge migrate --dry-run`: the SQL `migrate` would run on an empty database,
/// without connecting (every statement is idempotent, so on an existing database it changes
/// only what is missing).
pub fn dry_run(config: &Config) -> Result<String, BridgeError> {
    let schemas = config.schemas()?;
    let tables = load_tables(config)?;
    let mut sql = migrations::dry_run_sql(&schemas);
    sql.push_str("\n-- materialized tables (one transaction, same advisory lock)\nBEGIN;\n");
    sql.push_str(&ddl::schema_sql(&schemas, &tables, &config.grants()?));
    sql.push_str("COMMIT;\n");
    Ok(sql)
}

/// First wait before retrying an unreachable Postgres at start; doubles up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between connection attempts at start.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long the HTTP server may take to finish open requests at shutdown.
const HTTP_DRAIN: Duration = Duration::from_secs(5);

/// `meshlite-bridge run`: serve `/healthz` (503 until the database is ready) and `/metrics` at
/// once, connect to Postgres (retrying with backoff while it is unreachable: the fleet keeps its
/// changes meanwhile), migrate and prepare the tables, then run until `shutdown`. Errors other
/// than an unreachable server (bad credentials, failed migration, column type drift) stop it.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BridgeError> {
    let tables = load_tables(&config)?;
    let target = config.pg_target()?;
    let schemas = config.schemas()?;
    let addr = config.http.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BridgeError::Http { addr, source })?;
    announce_listening(&listener);
    let state = http::AppState::new(target.clone(), schemas.clone(), tables.len());
    let cancel = CancellationToken::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = http::serve(
        listener,
        state.clone(),
        config.http.limits(),
        stopped(stop_rx.clone()),
    );
    let work = async {
        let Some((conn, report, replica)) =
            start_database(&target, &config, &tables, stopped(stop_rx.clone())).await?
        else {
            return Ok(());
        };
        tracing::info!(
            url = target.redacted(),
            bridge = %config.bridge.name,
            replica = %replica,
            applied = ?report.applied,
            tables = tables.len(),
            "database ready"
        );
        let ctx = replica_context(&config, replica, &tables)?;
        let pg = PgReplica::new(target.clone(), ctx);
        let peer = Peer::start(&config, pg.clone(), &cancel)?;
        let nats = crate::peer::start_nats(&config, &pg, peer.as_ref(), &cancel).await?;
        let batch = i64::try_from(config.sync.batch_size).unwrap_or(i64::MAX);
        let outbox = tokio::spawn(consume_central_edits(
            pg.clone(),
            batch,
            cancel.child_token(),
        ));
        state.set_ready(conn, pg.stats()).await;
        cancel.cancelled().await;
        if let Some(nats) = nats {
            nats.shutdown(SHUTDOWN_GRACE).await;
        }
        if let Some(peer) = peer {
            peer.shutdown().await;
        }
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, outbox).await;
        Ok(())
    };
    tokio::pin!(server, work, shutdown);
    let (result, server_done) = tokio::select! {
        biased;
        _ = &mut shutdown => {
            cancel.cancel();
            let _ = stop_tx.send(true);
            let stopped = tokio::time::timeout(SHUTDOWN_GRACE * 3, &mut work).await;
            (stopped.unwrap_or(Ok(())), false)
        }
        r = &mut work => (r, false),
        r = &mut server => (r.map_err(|source| BridgeError::Http { addr, source }), true),
    };
    cancel.cancel();
    let _ = stop_tx.send(true);
    if !server_done && tokio::time::timeout(HTTP_DRAIN, &mut server).await.is_err() {
        tracing::warn!("http requests still open after {HTTP_DRAIN:?}; stopping anyway");
    }
    result
}

/// How often the outbox of central edits is looked at.
pub const OUTBOX_INTERVAL: Duration = Duration::from_millis(250);

/// Turns captured central edits into the bridge's transactions until `cancel` (draining a
/// backlog batch by batch; a failing Postgres is retried at the next tick, and said so after
/// failures 1, 2, 4, 8, … rather than four times a second).
async fn consume_central_edits(pg: PgReplica, batch: i64, cancel: CancellationToken) {
    let mut ticker = Ticker::every(OUTBOX_INTERVAL, cancel);
    let mut failures: u32 = 0;
    while ticker.tick().await {
        loop {
            match ticker.run(pg.consume_outbox(batch)).await {
                Some(Ok(n)) => {
                    if failures > 0 {
                        tracing::info!(failures, "central edits consumed again");
                        failures = 0;
                    }
                    if n as i64 >= batch {
                        continue;
                    }
                    break;
                }
                None => break,
                Some(Err(e)) => {
                    failures = failures.saturating_add(1);
                    if failures.is_power_of_two() {
                        tracing::warn!(error = %e, failures, "central edits not consumed; retrying");
                    }
                    break;
                }
            }
        }
    }
}

/// Prints `{"event":"listening","http":"ADDR"}` on stdout once the HTTP listener is bound, so
/// scripts and tests that pass port 0 learn the port (as the node's `ready` line does).
fn announce_listening(listener: &tokio::net::TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        println!(r#"{{"event":"listening","http":"{addr}"}}"#);
    }
}

/// Completes when `rx` turns true (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Connects, migrates, prepares the tables and reads the bridge's origin; a connection lost on
/// the way (Postgres restarting while we wait for another bridge's migration lock, say) starts
/// over after a backoff, like an unreachable server. `None` when `stop` completes first.
async fn start_database(
    target: &PgTarget,
    config: &Config,
    tables: &[TableSpec],
    stop: impl Future<Output = ()>,
) -> Result<Option<(PgConn, MigrateReport, meshlite_core::ReplicaId)>, BridgeError> {
    tokio::pin!(stop);
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    loop {
        let Some(mut conn) = connect_with_retry(target, &mut stop).await else {
            return Ok(None);
        };
        let attempt = async {
            let report = prepare(&mut conn, config, tables).await?;
            let replica = crate::state::bridge_replica_id(
                conn.client(),
                &config.schemas()?,
                &config.bridge.name,
            )
            .await?;
            Ok::<_, BridgeError>((report, replica))
        };
        match attempt.await {
            Ok((report, replica)) => return Ok(Some((conn, report, replica))),
            Err(e) if conn.client().is_closed() => {
                let wait = backoff.fail();
                tracing::warn!(error = %e, retry_in = ?wait, "Postgres went away during start-up; retrying");
                tokio::select! {
                    biased;
                    _ = &mut stop => return Ok(None),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Connects, retrying with exponential backoff while the server is unreachable; `None` when
/// `stop` completes first.
async fn connect_with_retry(target: &PgTarget, stop: impl Future<Output = ()>) -> Option<PgConn> {
    tokio::pin!(stop);
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    loop {
        let wait = backoff.fail();
        match target.connect().await {
            Ok(conn) => return Some(conn),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "Postgres unreachable; retrying");
            }
        }
        tokio::select! {
            biased;
            _ = &mut stop => return None,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
