//! End to end over real QUIC: two fleet nodes (the mesh library over real SQLite stores, the
//! same code `meshlite run` runs) edit the same records concurrently; a real `meshlite-bridge`
//! process dials them with its own fleet certificate and materializes the merged state into a
//! real Postgres, where every row equals what the nodes read.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshlite_core::Schema;
use meshlite_core::dissemination::{DisseminationConfig, Disseminator};
use meshlite_core::store::{OpenOptions, Store, WriteError};
use meshlite_fixtures::postgres::PgServer;
use meshlite_fixtures::records::named_id;
use meshlite_fixtures::wait::poll_until;
use meshlite_mesh::discovery::PeerTable;
use meshlite_mesh::fleet;
use meshlite_mesh::gossip::Gossip;
use meshlite_mesh::net::handle::NetHandle;
use meshlite_mesh::net::{TransportConfig, mesh};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Failure guard only: convergence is expected within a few anti-entropy rounds (1 s each).
const GUARD: Duration = Duration::from_secs(60);

fn pmoves() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/schemas/pmoves.toml")
}

/// A node: a real store served by the mesh library's transport and gossip actor.
struct Node {
    store: Store,
    net: NetHandle,
    _dir: tempfile::TempDir,
}

async fn start_node(fleet_dir: &Path, name: &str, cancel: &CancellationToken) -> Node {
    let issued = fleet::issue(fleet_dir, name, 30).expect("issue");
    let identity = fleet::load_node_identity(&issued.bundle_dir).expect("identity");
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = OpenOptions {
        schema: Some(Schema::from_file(&pmoves()).expect("schema")),
        ..OpenOptions::default()
    };
    let store = Store::open(dir.path(), opts).expect("store");
    let transport = TransportConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..TransportConfig::default()
    };
    let net = mesh::start(identity, transport, store.clone(), cancel.child_token()).expect("quic");
    let policy = Disseminator::new(
        DisseminationConfig::with_interval(Duration::from_secs(1)),
        rand_seed(name),
        Instant::now(),
    )
    .expect("policy");
    let gossip = Gossip {
        store: store.clone(),
        net: net.clone(),
        table: PeerTable::new(Duration::from_secs(300)),
        policy,
        stats: Default::default(),
        cancel: cancel.child_token(),
    };
    tokio::spawn(gossip.run());
    Node {
        store,
        net,
        _dir: dir,
    }
}

fn rand_seed(name: &str) -> u64 {
    name.bytes()
        .fold(7, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
}

/// Kills the bridge process when the test ends, however it ends.
struct BridgeProc(Child);

impl Drop for BridgeProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_bridge(url: &str, fleet_dir: &Path, peers: &[&Node]) -> BridgeProc {
    let issued = fleet::issue(fleet_dir, "bridge", 30).expect("issue bridge");
    let peers: Vec<String> = peers
        .iter()
        .map(|n| n.net.local_addr().to_string())
        .collect();
    let child = Command::new(env!("CARGO_BIN_EXE_meshlite-bridge"))
        .arg("run")
        .env_remove("MESHLITE_CONFIG")
        .env("DATABASE_URL", url)
        .env("MESHLITE_SCHEMA", pmoves())
        .env("MESHLITE_NAME", "bridge-e2e")
        .env("MESHLITE_FLEET_DIR", &issued.bundle_dir)
        .env("MESHLITE_STATIC_PEERS", peers.join(","))
        .env("MESHLITE_LISTEN", "127.0.0.1:0")
        .env("MESHLITE_HTTP_LISTEN", "127.0.0.1:0")
        .env("SYNC_INTERVAL_SECONDS", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn meshlite-bridge");
    BridgeProc(child)
}

/// The node's view of a task, and the bridge's row in the same shape.
async fn task_rows(conn: &tokio_postgres::Client, ids: &[String]) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for id in ids {
        let row = conn
            .query_opt(
                "SELECT jsonb_strip_nulls(to_jsonb(t) - '_extra' - '_origin' - '_synced_at' || t._extra) \
                 FROM public.tasks t WHERE id::text = $1",
                &[id],
            )
            .await
            .map_err(|e| e.to_string())?;
        out.push(row.map_or(Value::Null, |r| r.get(0)));
    }
    Ok(out)
}

async fn node_rows(store: &Store, ids: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for id in ids {
        let row = store.get_async("tasks", id).await.expect("read");
        out.push(row.unwrap_or(Value::Null));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_on_two_nodes_reach_postgres_merged() {
    let cancel = CancellationToken::new();
    let fleet_root = tempfile::tempdir().expect("fleet");
    fleet::init(fleet_root.path()).expect("fleet init");
    let a = start_node(fleet_root.path(), "node-a", &cancel).await;
    let b = start_node(fleet_root.path(), "node-b", &cancel).await;
    let url = PgServer::shared().database("fleet");
    let _bridge = start_bridge(&url, fleet_root.path(), &[&a, &b]);

    let ids: Vec<String> = (0..3).map(|i| named_id(&format!("task{i}"))).collect();
    let gone = named_id("gone");
    // Both nodes write the same records before they ever talked to each other.
    for (node, status, by) in [(&a, "running", 2), (&b, "completed", 3)] {
        let (store, ids, gone) = (node.store.clone(), ids.clone(), gone.clone());
        tokio::task::spawn_blocking(move || {
            for id in &ids {
                store.put(
                    "tasks",
                    json!({"id": id, "status": status, "title": status}),
                )?;
                store.increment("tasks", id, "retry_count", by)?;
            }
            store.put("tasks", json!({"id": gone, "status": "queued"}))?;
            Ok::<_, WriteError>(())
        })
        .await
        .expect("join")
        .expect("writes");
    }
    tokio::task::spawn_blocking({
        let (store, gone) = (a.store.clone(), gone.clone());
        move || store.delete("tasks", &gone)
    })
    .await
    .expect("join")
    .expect("delete");

    let (pg, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    // The nodes never connect to each other: everything flows through the bridge, which pulls
    // from both and serves each the other's transactions.
    let mut all = ids.clone();
    all.push(gone.clone());
    let merged = poll_until("Postgres rows equal both nodes' rows", GUARD, || async {
        let (ra, rb) = (
            node_rows(&a.store, &all).await,
            node_rows(&b.store, &all).await,
        );
        let pg_rows = task_rows(&pg, &all).await?;
        if ra == rb && ra == pg_rows {
            Ok(ra)
        } else {
            Err(format!("a: {ra:?}\nb: {rb:?}\npostgres: {pg_rows:?}"))
        }
    })
    .await;
    for row in &merged[..3] {
        assert_eq!(row["status"], json!("running"), "running beats completed");
        assert_eq!(row["retry_count"], json!(5), "both increments count");
    }
    assert_eq!(
        merged[3],
        Value::Null,
        "delete wins over the concurrent write"
    );
    let audited: i64 = pg
        .query_one(
            "SELECT count(DISTINCT record_id) FROM meshlite.conflicts \
             WHERE collection = 'tasks' AND field = 'status' AND winner = '\"running\"'",
            &[],
        )
        .await
        .expect("conflicts")
        .get(0);
    assert_eq!(audited, 3, "each merged status is in the audit table");
    let nodes: Vec<String> = pg
        .query("SELECT name FROM meshlite.nodes ORDER BY name", &[])
        .await
        .expect("nodes")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        nodes,
        ["node-a", "node-b"],
        "the fleet as the bridge sees it"
    );
    cancel.cancel();
    for node in [a, b] {
        node.net.shutdown().await;
        node.store.close_async().await.expect("close");
    }
}

/// A node with no QUIC path to the bridge: the NATS JetStream relay carries its transactions to
/// the bridge (applied, acked after commit) and the bridge's central edits back to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_relay_carries_changes_both_ways_without_quic() {
    use meshlite_fixtures::nats::NatsServer;
    use meshlite_mesh::discovery::LocalNode;
    use meshlite_mesh::nats::{self, NatsConfig, NatsContext, NatsService};

    let server = NatsServer::start();
    let cancel = CancellationToken::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = OpenOptions {
        schema: Some(Schema::from_file(&pmoves()).expect("schema")),
        ..OpenOptions::default()
    };
    let store = Store::open(&dir.path().join("data"), opts).expect("store");
    let cfg = NatsConfig {
        url: Some(server.url()),
        relay: true,
        request_timeout_secs: 2,
        ..NatsConfig::default()
    };
    let client = nats::connect(&cfg, "node-n")
        .await
        .expect("nats")
        .expect("url");
    let local = LocalNode {
        node_id: store.replica_id().to_hex(),
        name: "node-n".into(),
        cluster: "local".into(),
        quic_port: 0,
        version: "test".into(),
        addresses: Vec::new(),
        collections: Vec::new(),
        capabilities: Vec::new(),
    };
    let ctx = NatsContext {
        client,
        local,
        table: PeerTable::new(Duration::from_secs(300)),
        store: store.clone(),
        cursor_path: dir.path().join("relay.cursor"),
    };
    let service = NatsService::start(&cfg, ctx, &cancel).expect("node relay");

    let url = PgServer::shared().database("relay");
    let bridge_dir = tempfile::tempdir().expect("bridge dir");
    let _bridge = BridgeProc(
        Command::new(env!("CARGO_BIN_EXE_meshlite-bridge"))
            .arg("run")
            .current_dir(bridge_dir.path())
            .env_remove("MESHLITE_CONFIG")
            .env_remove("MESHLITE_FLEET_DIR")
            .env("DATABASE_URL", &url)
            .env("MESHLITE_SCHEMA", pmoves())
            .env("MESHLITE_NAME", "bridge-relay")
            .env("MESHLITE_HTTP_LISTEN", "127.0.0.1:0")
            .env("NATS_URL", server.url())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn meshlite-bridge"),
    );
    let (pg, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);

    let id = named_id("relayed");
    tokio::task::spawn_blocking({
        let (store, id) = (store.clone(), id.clone());
        move || {
            store.put(
                "tasks",
                json!({"id": id, "status": "queued", "retry_count": 1}),
            )
        }
    })
    .await
    .expect("join")
    .expect("put");
    let ids = [id.clone()];
    poll_until("the node's write in Postgres", GUARD, || async {
        let rows = task_rows(&pg, &ids).await?;
        let node = node_rows(&store, &ids).await;
        if rows == node {
            Ok(())
        } else {
            Err(format!("pg {rows:?} node {node:?}"))
        }
    })
    .await;

    // A central edit travels back over the relay.
    pg.execute(
        "UPDATE public.tasks SET status = 'running', retry_count = retry_count + 1 WHERE id::text = $1",
        &[&id],
    )
    .await
    .expect("central update");
    poll_until("the central edit on the node", GUARD, || async {
        let node = node_rows(&store, &ids).await;
        let want = (json!("running"), json!(2));
        match node[0]
            .get("status")
            .cloned()
            .zip(node[0].get("retry_count").cloned())
        {
            Some(got) if got == want => Ok(()),
            _ => {
                let state = pg
                    .query_one(
                        "SELECT (SELECT count(*) FROM meshlite.outbox), \
                                (SELECT count(*) FROM meshlite.txns t JOIN meshlite.bridges b \
                                 ON t.origin = b.replica_id)",
                        &[],
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let (outbox, own): (i64, i64) = (state.get(0), state.get(1));
                Err(format!(
                    "node {node:?}; outbox {outbox}, bridge's own txns {own}"
                ))
            }
        }
    })
    .await;
    service.shutdown(GUARD).await;
    cancel.cancel();
    store.close_async().await.expect("close");
}
