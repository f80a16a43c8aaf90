//! Test support shared by the bridge's tests: a bridge replica over a prepared database
//! (`replica.rs`, `hostile.rs`), in-process fleet nodes on the PMOVES schema
//! (`meshlite_mesh::testkit`; `fleet.rs`, `crash.rs`) and rows read back in the node's shape
//! from either side.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};

use meshlite_bridge::config::Config;
use meshlite_bridge::pg::PgConn;
use meshlite_bridge::replica::PgReplica;
use meshlite_bridge::{service, state};

use meshlite_core::store::{OpenOptions, Store};
use meshlite_core::{Schema, Txn};
use meshlite_fixtures::records::named_id;
pub use meshlite_mesh::testkit::Node;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The PMOVES schema.
pub fn pmoves() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/schemas/pmoves.toml")
}

/// The database at `url` prepared as `meshlite-bridge run` prepares it for `schema`, and a
/// bridge replica named `test-{name}` over it (with a connection of its own for checks).
/// The document cache is on (64 MiB), so every test that merges also exercises it.
pub async fn pg_replica(url: String, name: &str, schema: &Path) -> (PgReplica, PgConn) {
    pg_replica_cached(url, name, schema, 64).await
}

/// [`pg_replica`] with a document cache of `doc_cache_mib` MiB (0: none).
pub async fn pg_replica_cached(
    url: String,
    name: &str,
    schema: &Path,
    doc_cache_mib: usize,
) -> (PgReplica, PgConn) {
    let mut config = Config::default();
    config.sync.doc_cache_mib = doc_cache_mib;
    config.postgres.url = Some(url);
    config.bridge.schema = Some(schema.to_path_buf());
    config.bridge.name = format!("test-{name}");
    let tables = service::load_tables(&config).expect("tables");
    let target = config.pg_target().expect("target");
    let mut conn = target.connect().await.expect("connect");
    service::prepare(&mut conn, &config, &tables)
        .await
        .expect("prepare");
    let schemas = config.schemas().expect("schemas");
    let replica = state::bridge_replica_id(conn.client(), &schemas, &config.bridge.name)
        .await
        .expect("replica id");
    let ctx = service::replica_context(&config, replica, &tables).expect("context");
    (PgReplica::new(target, ctx), conn)
}

/// A node of the fleet in `fleet_dir` on the PMOVES schema, with its store in a temporary
/// directory (removed when the returned guard drops).
pub fn start_node(
    fleet_dir: &Path,
    name: &str,
    root: &CancellationToken,
) -> (Node, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("tempdir");
    let schema = Schema::from_file(&pmoves()).expect("schema");
    (
        Node::start(fleet_dir, name, data.path(), schema, root),
        data,
    )
}

/// Task rows in Postgres in the node's shape (typed columns back to JSON, `_extra` merged,
/// metadata and NULLs left out, timestamps in UTC `Z` form); `Null` for a missing row.
pub async fn pg_task_rows(
    pg: &tokio_postgres::Client,
    ids: &[String],
) -> Result<Vec<Value>, String> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let row = pg
            .query_opt(
                "SELECT jsonb_strip_nulls(to_jsonb(t) - '_extra' - '_origin' - '_synced_at' || t._extra) \
                 FROM public.tasks t WHERE id::text = $1",
                &[id],
            )
            .await
            .map_err(|e| e.to_string())?;
        out.push(row.map_or(Value::Null, |r| utc_z(r.get(0))));
    }
    Ok(out)
}

/// The node's task rows; `Null` for a missing one.
pub async fn node_task_rows(store: &Store, ids: &[String]) -> Vec<Value> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let row = store.get_async("tasks", id).await.expect("read");
        out.push(row.unwrap_or(Value::Null));
    }
    out
}

/// Postgres renders a `timestamptz` as `...+00:00` (in a UTC session), nodes keep the RFC 3339
/// text they were given (`...Z`): the same instant, written two ways.
fn utc_z(row: Value) -> Value {
    match row {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) if s.ends_with("+00:00") => {
                        (k, Value::String(format!("{}Z", &s[..s.len() - 6])))
                    }
                    v => (k, v),
                })
                .collect(),
        ),
        other => other,
    }
}

/// A Postgres session in UTC, its connection driven in the background.
pub async fn connect_utc(url: &str) -> Result<tokio_postgres::Client, String> {
    let (pg, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    pg.batch_execute("SET TIME ZONE 'UTC'")
        .await
        .map_err(|e| e.to_string())?;
    Ok(pg)
}

/// The HTTP port a `meshlite-bridge run` child reports on its first stdout line
/// (`{"event":"listening","http":"127.0.0.1:PORT"}`); the child must have been spawned with
/// `MESHLITE_HTTP_LISTEN=127.0.0.1:0` and a piped stdout.
pub fn reported_http_port(child: &mut std::process::Child) -> u16 {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reader = std::io::BufReader::new(stdout);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .expect("read the bridge's first line");
    // Keep reading, so the bridge never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let event: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("bridge's first line is not JSON ({e}): {line:?}"));
    let addr: std::net::SocketAddr = event["http"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no http address in {line:?}"));
    addr.port()
}

/// A node store on the PMOVES schema in `dir`.
pub fn node(dir: &tempfile::TempDir) -> Store {
    let opts = OpenOptions {
        schema: Some(Schema::from_file(&pmoves()).expect("pmoves")),
        ..OpenOptions::default()
    };
    Store::open(dir.path(), opts).expect("open store")
}

/// Every transaction the store holds, decoded.
pub async fn all_txns(store: &Store) -> Vec<Txn> {
    let summary = store.summary_async().await.expect("summary");
    let want: Vec<_> = summary
        .iter()
        .map(|(origin, set)| (*origin, 1..=set.max()))
        .collect();
    let batch = store.txns_for_async(&want, usize::MAX).await.expect("txns");
    batch
        .txns
        .iter()
        .map(|b| Txn::decode(b).expect("decode"))
        .collect()
}

/// The materialized task row, as the node would show it (typed columns back to JSON, the
/// undeclared fields from `_extra`, columns the record lacks (NULL) left out).
pub async fn task_row(conn: &PgConn, id: &str) -> Option<Value> {
    let row = conn
        .client()
        .query_opt(
            "SELECT jsonb_strip_nulls(to_jsonb(t) - '_extra' - '_origin' - '_synced_at' || t._extra) \
             FROM public.tasks t WHERE id::text = $1",
            &[&id],
        )
        .await
        .expect("select task");
    row.map(|r| r.get::<_, Value>(0))
}

/// Runs a blocking store call (the store's write helpers block) on this worker.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Two nodes in `da` and `db` that both hold task `t1` (pending, written on the first): the base
/// of a concurrent-edit scenario.
pub async fn two_nodes_with_one_task(
    da: &tempfile::TempDir,
    db: &tempfile::TempDir,
) -> (Store, Store, String) {
    let (a, n2) = (node(da), node(db));
    let t1 = named_id("t1");
    blocking(|| {
        a.put(
            "tasks",
            json!({"id": t1, "status": "pending", "title": "x"}),
        )
    })
    .expect("put");
    let base = all_txns(&a).await;
    blocking(|| n2.apply_remote(base)).expect("b gets the base");
    (a, n2, t1)
}
