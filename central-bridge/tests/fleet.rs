//! End to end over real QUIC: two fleet nodes (the mesh library over real SQLite stores, the
//! same code `meshlite run` runs) edit the same records concurrently; a real `meshlite-bridge`
//! process dials them with its own fleet certificate and materializes the merged state into a
//! real Postgres, where every row equals what the nodes read.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use meshlite_core::Schema;
use meshlite_core::store::{OpenOptions, Store, WriteError};
use meshlite_fixtures::postgres::PgServer;
use meshlite_fixtures::records::named_id;
use meshlite_fixtures::wait::poll_until;
use meshlite_mesh::discovery::PeerTable;
use meshlite_mesh::fleet;
use serde_json::{Value, json};

mod support;
use support::{Node, connect_utc, node_task_rows, pg_task_rows, pmoves, start_node};
use tokio_util::sync::CancellationToken;

/// Failure guard only: convergence is expected within a few anti-entropy rounds (1 s each).
const GUARD: Duration = Duration::from_secs(60);

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
        .env("MESHLITE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn meshlite-bridge");
    BridgeProc(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_on_two_nodes_reach_postgres_merged() {
    let cancel = CancellationToken::new();
    let fleet_root = tempfile::tempdir().expect("fleet");
    fleet::init(fleet_root.path()).expect("fleet init");
    let (a, _a_data) = start_node(fleet_root.path(), "node-a", &cancel);
    let (b, _b_data) = start_node(fleet_root.path(), "node-b", &cancel);
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

    let pg = connect_utc(&url).await.expect("connect");
    // The nodes never connect to each other: everything flows through the bridge, which pulls
    // from both and serves each the other's transactions.
    let mut all = ids.clone();
    all.push(gone.clone());
    let merged = poll_until("Postgres rows equal both nodes' rows", GUARD, || async {
        let (ra, rb) = (
            node_task_rows(&a.store, &all).await,
            node_task_rows(&b.store, &all).await,
        );
        let pg_rows = pg_task_rows(&pg, &all).await?;
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
    // The fleet view is written every sync interval: wait for its next round.
    let nodes = poll_until("the fleet as the bridge sees it", GUARD, || async {
        let nodes: Vec<String> = pg
            .query("SELECT name FROM meshlite.nodes ORDER BY name", &[])
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .map(|r| r.get(0))
            .collect();
        match nodes.len() {
            2 => Ok(nodes),
            _ => Err(format!("nodes so far: {nodes:?}")),
        }
    })
    .await;
    assert_eq!(
        nodes,
        ["node-a", "node-b"],
        "the fleet as the bridge sees it"
    );
    cancel.cancel();
    for node in [a, b] {
        node.stop().await;
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
    let pg = connect_utc(&url).await.expect("connect");

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
        let rows = pg_task_rows(&pg, &ids).await?;
        let node = node_task_rows(&store, &ids).await;
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
        let node = node_task_rows(&store, &ids).await;
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

/// Every node's rows equal Postgres' rows: those rows, or what differs.
async fn everyone(
    pg: &tokio_postgres::Client,
    nodes: &[&Node],
    all: &[String],
) -> Result<Vec<Value>, String> {
    let pg_rows = pg_task_rows(pg, all).await?;
    for n in nodes {
        let rows = node_task_rows(&n.store, all).await;
        if rows != pg_rows {
            return Err(format!("{}: {rows:?}\npostgres: {pg_rows:?}", n.name));
        }
    }
    Ok(pg_rows)
}

/// Writes `ops` on `node` in one blocking call.
async fn write(node: &Node, ops: impl FnOnce(&Store) -> Result<(), WriteError> + Send + 'static) {
    let store = node.store.clone();
    tokio::task::spawn_blocking(move || ops(&store))
        .await
        .expect("join")
        .expect("node writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_cut_off_and_healed_converge_in_postgres_with_every_policy() {
    let root = CancellationToken::new();
    let fleet_root = tempfile::tempdir().expect("fleet");
    fleet::init(fleet_root.path()).expect("fleet init");
    let (a, _a_data) = start_node(fleet_root.path(), "node-a", &root);
    let (b, _b_data) = start_node(fleet_root.path(), "node-b", &root);
    let (mut c, _c_data) = start_node(fleet_root.path(), "node-c", &root);
    let url = PgServer::shared().database("three");
    let _bridge = start_bridge(&url, fleet_root.path(), &[&a, &b, &c]);
    let pg = connect_utc(&url).await.expect("connect");

    let ids: Vec<String> = (0..3).map(|i| named_id(&format!("rec{i}"))).collect();
    let gone = named_id("gone");
    // A common starting point, then c is cut off.
    write(&a, {
        let (ids, gone) = (ids.clone(), gone.clone());
        move |s| {
            for id in &ids {
                s.put(
                    "tasks",
                    json!({"id": id, "status": "queued", "title": "start",
                    "created_at": "2026-11-30T10:00:00Z", "updated_at": "2026-11-30T10:00:00Z"}),
                )?;
            }
            s.put("tasks", json!({"id": gone, "status": "queued"}))?;
            Ok(())
        }
    })
    .await;
    let mut all = ids.clone();
    all.push(gone.clone());
    {
        let nodes = [&a, &b, &c];
        poll_until("the start everywhere", GUARD, || {
            everyone(&pg, &nodes, &all)
        })
        .await;
    }
    c.cut_off().await;

    // Concurrent edits of every policy; c's happen while it is cut off.
    for (node, status, by, minute) in [
        (&a, "running", 1, 11),
        (&b, "completed", 2, 12),
        (&c, "failed", 4, 13),
    ] {
        let ids = ids.clone();
        write(node, move |s| {
            for id in &ids {
                s.put(
                    "tasks",
                    json!({"id": id, "status": status, "title": status,
                    "created_at": format!("2026-11-30T09:{minute}:00Z"),
                    "updated_at": format!("2026-11-30T10:{minute}:00Z")}),
                )?;
                s.increment("tasks", id, "retry_count", by)?;
            }
            Ok(())
        })
        .await;
    }
    write(&b, {
        let gone = gone.clone();
        move |s| s.delete("tasks", &gone)
    })
    .await;
    write(&c, {
        let gone = gone.clone();
        move |s| {
            s.put("tasks", json!({"id": gone, "status": "running"}))
                .map(|_| ())
        }
    })
    .await;
    c.heal(&root).await;

    let nodes = [&a, &b, &c];
    let merged = poll_until("Postgres equals every node", GUARD, || {
        everyone(&pg, &nodes, &all)
    })
    .await;
    for row in &merged[..3] {
        assert_eq!(
            row["status"],
            json!("running"),
            "priority: running beats failed and completed"
        );
        assert_eq!(row["retry_count"], json!(7), "counter: 1 + 2 + 4");
        assert_eq!(row["updated_at"], json!("2026-11-30T10:13:00Z"), "max");
        assert_eq!(row["created_at"], json!("2026-11-30T09:11:00Z"), "min");
        assert!(["running", "completed", "failed"].contains(&row["title"].as_str().unwrap_or("")));
    }
    assert_eq!(
        merged[3],
        Value::Null,
        "delete wins over the cut-off node's edit"
    );

    let health = pg
        .query(
            "SELECT encode(n.replica_id, 'hex'), h.health_status FROM public.sync_health h \
             JOIN meshlite.nodes n ON h.service_name = meshlite.service_name(n.replica_id) \
             WHERE h.table_name = 'tasks' \
             UNION ALL SELECT service_name, health_status FROM public.sync_health \
             WHERE table_name = 'tasks' AND service_name ~ '^[0-9a-f]{32}$'",
            &[],
        )
        .await
        .expect("sync_health");
    let origins: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|n| n.store.replica_id().to_hex())
        .collect();
    for origin in &origins {
        let row = health.iter().find(|r| r.get::<_, String>(0) == *origin);
        assert_eq!(
            row.map(|r| r.get::<_, String>(1)),
            Some("healthy".into()),
            "{origin}"
        );
    }
    let fields: Vec<String> = pg
        .query(
            "SELECT DISTINCT field FROM meshlite.conflicts WHERE collection = 'tasks' ORDER BY field",
            &[],
        )
        .await
        .expect("conflicts")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for field in ["created_at", "status", "title", "updated_at"] {
        assert!(
            fields.iter().any(|f| f == field),
            "{field} merges audited: {fields:?}"
        );
    }
    root.cancel();
    for node in [a, b, c] {
        node.stop().await;
    }
}
