//! End to end with real processes only: three `meshlite run` daemons and a `meshlite-bridge`
//! on loopback, fleet files made by the `meshlite fleet` CLI, a real Postgres.
//!
//! The nodes edit the same tasks concurrently through their HTTP API (every merge policy of
//! `tasks`: priority `status`, counter `retry_count`, max `updated_at`, min `created_at`, text
//! `notes`, a delete against an edit) and append telemetry rows. Node c is cut off in the middle:
//! it is stopped (SIGTERM) and restarted on the same data directory on a fresh port with no
//! peers, so nobody can reach it and it reaches nobody, and takes its edits there; it is healed
//! by restarting it once more with its peers. Then every Postgres row equals every node's
//! record field by field, `sync_health` reports every node healthy, and the conflict table
//! holds the merges.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use meshlite_fixtures::bins::workspace_binary;
use meshlite_fixtures::postgres::PgServer;
use meshlite_fixtures::records::named_id;
use meshlite_fixtures::wait::{check, poll_until};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;
use support::{connect_utc, pg_task_rows, pmoves};

/// Failure guard only: convergence takes a few anti-entropy rounds (1 s each).
const GUARD: Duration = Duration::from_secs(60);

/// The `meshlite` binary, built by cargo for this test.
fn meshlite() -> PathBuf {
    workspace_binary("meshlite-node", "meshlite").unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a `meshlite` command that must succeed.
fn cli(args: &[&str], dir: &Path) {
    let out = Command::new(meshlite())
        .args(args)
        .arg(dir)
        .output()
        .expect("run meshlite");
    assert!(
        out.status.success(),
        "meshlite {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `meshlite run` daemon (killed on drop) and what it needs to restart.
struct NodeProc {
    name: String,
    child: Child,
    http: SocketAddr,
    quic: SocketAddr,
}

impl NodeProc {
    /// Starts `name` (bundle `fleet/nodes/<name>`) with `peers` as its static peers, QUIC on
    /// `quic` (port 0: the daemon picks), and waits for its ready line.
    fn start(root: &Path, name: &str, quic: SocketAddr, peers: &[SocketAddr]) -> Self {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("node dir");
        let peers: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
        let q = |s: String| toml::Value::String(s).to_string();
        let config = format!(
            "[node]\nname = {}\ndata = {}\nfleet_dir = {}\nschema = {}\n\
             [sync]\ninterval_seconds = 1\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [transport]\nlisten = {}\n\
             [discovery]\nmdns = false\ntailscale = false\nstatic_peers = {}\n",
            q(name.to_owned()),
            q(dir.join("data").display().to_string()),
            q(root.join("fleet/nodes").join(name).display().to_string()),
            q(pmoves().display().to_string()),
            q(quic.to_string()),
            toml::Value::from(peers),
        );
        let path = dir.join("config.toml");
        std::fs::write(&path, &config).expect("write config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .expect("log");
        let mut child = Command::new(meshlite())
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env_clear()
            .env("MESHLITE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn meshlite run");
        let ready = ready_line(&mut child, &dir);
        let addr = |k: &str| -> SocketAddr {
            ready[k]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("{name}: no {k} address in {ready}"))
        };
        Self {
            name: name.to_owned(),
            http: addr("http"),
            quic: addr("quic"),
            child,
        }
    }

    /// SIGTERM, and the daemon exits cleanly.
    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "{} exited with {status}", self.name);
    }

    /// `GET /v1/tasks/{id}`: None on 404.
    async fn task(&self, id: &str) -> Option<Value> {
        match request(self.http, "GET", &format!("/v1/tasks/{id}"), None).await {
            (200, body) => Some(body),
            (404, _) => None,
            (status, body) => panic!("{}: get {id}: {status} {body}", self.name),
        }
    }

    /// A request that must answer 200.
    async fn ok(&self, method: &str, path: &str, body: Value) {
        let (status, answer) = request(self.http, method, path, Some(&body)).await;
        assert_eq!(
            status, 200,
            "{}: {method} {path} {body}: {answer}",
            self.name
        );
    }

    /// `GET /v1/{collection}`: every row.
    async fn rows(&self, collection: &str) -> Vec<Value> {
        match request(self.http, "GET", &format!("/v1/{collection}"), None).await {
            (200, Value::Array(rows)) => rows,
            (status, body) => panic!("{}: query {collection}: {status} {body}", self.name),
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon's `ready` line (the first JSON line with an `http` address); the daemon's log
/// when it exits first.
fn ready_line(child: &mut Child, dir: &Path) -> Value {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let found = lines
        .by_ref()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .find(|v| v.get("http").is_some());
    // Keep draining, so the daemon never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    found.unwrap_or_else(|| {
        let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
        panic!("{} exited before it was ready:\n{log}", dir.display())
    })
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`): status and JSON body.
async fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(GUARD, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} on {addr}: no answer"))
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"));
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "chunked answers are not parsed here: {head}"
    );
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Kills the bridge when the test ends, however it ends.
struct BridgeProc(Child);

impl Drop for BridgeProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_bridge(url: &str, root: &Path, peers: &[SocketAddr]) -> BridgeProc {
    let peers: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
    let log = std::fs::File::create(root.join("bridge.log")).expect("bridge log");
    let child = Command::new(env!("CARGO_BIN_EXE_meshlite-bridge"))
        .arg("run")
        .env_clear()
        .env("DATABASE_URL", url)
        .env("MESHLITE_SCHEMA", pmoves())
        .env("MESHLITE_NAME", "bridge")
        .env("SYNC_DOC_CACHE_MIB", "64")
        .env("MESHLITE_FLEET_DIR", root.join("fleet/nodes/bridge"))
        .env("MESHLITE_STATIC_PEERS", peers.join(","))
        .env("MESHLITE_LISTEN", "127.0.0.1:0")
        .env("MESHLITE_HTTP_LISTEN", "127.0.0.1:0")
        .env("SYNC_INTERVAL_SECONDS", "1")
        .env("MESHLITE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn meshlite-bridge");
    BridgeProc(child)
}

/// Every node's task rows, which must all be equal, and Postgres' rows equal to them.
async fn everyone(
    pg: &tokio_postgres::Client,
    nodes: &[&NodeProc],
    ids: &[String],
) -> Result<Vec<Value>, String> {
    let pg_rows = pg_task_rows(pg, ids).await?;
    for node in nodes {
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            rows.push(node.task(id).await.unwrap_or(Value::Null));
        }
        if rows != pg_rows {
            return Err(format!("{}: {rows:?}\npostgres: {pg_rows:?}", node.name));
        }
    }
    Ok(pg_rows)
}

/// Ids of the log rows of `collection` on a node / in Postgres, sorted.
fn log_ids(rows: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = rows
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_and_the_bridge_converge_in_postgres_after_a_cut_off() {
    let clock = std::time::Instant::now();
    let phase = |what: &str| eprintln!("[{:>6.1} s] {what}", clock.elapsed().as_secs_f64());
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let fleet_dir = root.join("fleet");
    cli(&["fleet", "init"], &fleet_dir);
    for name in ["node-a", "node-b", "node-c", "bridge"] {
        let out = Command::new(meshlite())
            .args(["fleet", "issue"])
            .arg(&fleet_dir)
            .arg(name)
            .output()
            .expect("fleet issue");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    phase("fleet issued");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let a = NodeProc::start(root, "node-a", any, &[]);
    let b = NodeProc::start(root, "node-b", any, &[a.quic]);
    let mut c = NodeProc::start(root, "node-c", any, &[a.quic, b.quic]);
    phase("three nodes started");
    let url = PgServer::shared().database("e2e");
    let _bridge = start_bridge(&url, root, &[a.quic, b.quic, c.quic]);
    phase("bridge started");
    let pg = connect_utc(&url).await.expect("connect");

    let ids: Vec<String> = (0..3).map(|i| named_id(&format!("e2e{i}"))).collect();
    let gone = named_id("e2e-gone");
    let mut all = ids.clone();
    all.push(gone.clone());
    for id in &all {
        a.ok(
            "POST",
            "/v1/tasks",
            json!({"id": id, "status": "queued", "notes": "plan",
                   "created_at": "2026-11-30T10:00:00Z", "updated_at": "2026-11-30T10:00:00Z"}),
        )
        .await;
    }
    {
        let nodes = [&a, &b, &c];
        poll_until("the start on every node and in Postgres", GUARD, || {
            everyone(&pg, &nodes, &all)
        })
        .await;
    }

    phase("start converged");
    // Cut off: c restarts on the same data on a fresh port that nobody names, knowing nobody.
    c.stop();
    let first_quic = c.quic;
    c = NodeProc::start(root, "node-c", any, &[]);
    assert_ne!(
        c.quic, first_quic,
        "c is unreachable at the address its peers know"
    );

    phase("c restarted cut off");
    for (node, status, by, minute) in [
        (&a, "failed", 1, 11),
        (&b, "completed", 2, 12),
        (&c, "running", 4, 13),
    ] {
        for id in &ids {
            node.ok(
                "POST",
                "/v1/tasks",
                json!({"id": id, "status": status, "notes": format!("plan {status}"),
                       "created_at": format!("2026-11-30T09:{minute}:00Z"),
                       "updated_at": format!("2026-11-30T10:{minute}:00Z")}),
            )
            .await;
            node.ok(
                "POST",
                &format!("/v1/tasks/{id}/incr"),
                json!({"field": "retry_count", "by": by}),
            )
            .await;
        }
        node.ok(
            "POST",
            "/v1/sensor_data/append",
            json!({"device_id": node.name, "sensor_type": "temp", "value": minute}),
        )
        .await;
    }
    phase("edits written");
    b.ok("DELETE", &format!("/v1/tasks/{gone}"), json!({}))
        .await;
    c.ok(
        "POST",
        "/v1/tasks",
        json!({"id": gone, "status": "running"}),
    )
    .await;
    // a and b still sync with each other; nothing of c's reaches them while it is cut off.
    poll_until("a has its and b's increments", GUARD, || async {
        let row = a.task(&ids[0]).await.unwrap_or(Value::Null);
        match row["retry_count"].as_i64() {
            Some(3) => Ok(()),
            _ => Err(row.to_string()),
        }
    })
    .await;

    phase("a has the increments of b");
    // Heal: c back on its first address, with its peers.
    c.stop();
    c = NodeProc::start(root, "node-c", first_quic, &[a.quic, b.quic]);

    phase("c restarted healed");
    let nodes = [&a, &b, &c];
    let merged = poll_until("Postgres equals every node", GUARD, || {
        everyone(&pg, &nodes, &all)
    })
    .await;
    phase("merged everywhere");
    for row in &merged[..3] {
        assert_eq!(
            row["status"],
            json!("running"),
            "priority: c's running wins: {row}"
        );
        assert_eq!(row["retry_count"], json!(7), "counter 1 + 2 + 4: {row}");
        assert_eq!(
            row["updated_at"],
            json!("2026-11-30T10:13:00Z"),
            "max: {row}"
        );
        assert_eq!(
            row["created_at"],
            json!("2026-11-30T09:11:00Z"),
            "min: {row}"
        );
        // a and b are connected: b's edit may come after a's (then it replaces it) or be
        // concurrent with it; c's edit is concurrent with both, so it merges with b's.
        let notes = row["notes"].as_str().unwrap_or_default();
        for word in ["running", "completed"] {
            assert!(notes.contains(word), "text merges concurrent edits: {row}");
        }
    }
    assert_eq!(merged[3], Value::Null, "the delete wins over c's edit");

    let pg_logs: Vec<Value> = pg
        .query("SELECT id::text FROM public.sensor_data", &[])
        .await
        .expect("sensor_data")
        .iter()
        .map(|r| json!({"id": r.get::<_, String>(0)}))
        .collect();
    for node in nodes {
        let on_node = poll_until("every log row on every node", GUARD, || async {
            let rows = node.rows("sensor_data").await;
            match rows.len() {
                3 => Ok(rows),
                n => Err(format!("{}: {n} rows", node.name)),
            }
        })
        .await;
        assert_eq!(log_ids(&on_node), log_ids(&pg_logs), "{}", node.name);
    }

    phase("log rows everywhere");
    // One row per node under its name: a node shows under its replica id in hex until the
    // bridge has completed a session with it and learned its name (rows.rs, touch_sync_status).
    let want_health: Vec<(String, String)> = nodes
        .iter()
        .map(|n| (n.name.clone(), "healthy".to_owned()))
        .collect();
    poll_until(
        "one healthy sync_health row per node, by name",
        GUARD,
        || async {
            let health: Vec<(String, String)> = pg
                .query(
                    "SELECT service_name, health_status FROM public.sync_health \
                 WHERE table_name = 'tasks' ORDER BY service_name",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            check(health == want_health, format!("{health:?}"))
        },
    )
    .await;
    // The fleet as the bridge sees it: each node with the replica it serves, and the name
    // sync_status gives it.
    let mut want: Vec<(String, String)> = Vec::new();
    for node in nodes {
        let (_, health) = request(node.http, "GET", "/healthz", None).await;
        let replica = health["replica"].as_str().unwrap_or_default().to_owned();
        want.push((node.name.clone(), replica));
    }
    let seen = poll_until("every node with its replica in nodes", GUARD, || async {
        let rows: Vec<(String, String, String)> = pg
            .query(
                "SELECT name, encode(replica_id, 'hex'), meshlite.service_name(replica_id) \
                 FROM meshlite.nodes WHERE replica_id IS NOT NULL ORDER BY name",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let pairs: Vec<(String, String)> = rows
            .iter()
            .map(|(n, r, _)| (n.clone(), r.clone()))
            .collect();
        if pairs == want {
            Ok(rows)
        } else {
            Err(format!("{rows:?}"))
        }
    })
    .await;
    for (name, _, service) in &seen {
        assert_eq!(service, name, "service_name() names the node");
    }
    phase("nodes seen");
    let fields: Vec<String> = pg
        .query(
            "SELECT DISTINCT field FROM meshlite.conflicts WHERE collection = 'tasks' ORDER BY 1",
            &[],
        )
        .await
        .expect("conflicts")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for field in ["created_at", "status", "updated_at"] {
        assert!(
            fields.iter().any(|f| f == field),
            "{field} audited: {fields:?}"
        );
    }
    phase("audit checked");
    for node in [a, b, c] {
        let mut node = node;
        node.stop();
    }
    phase("nodes stopped");
}
