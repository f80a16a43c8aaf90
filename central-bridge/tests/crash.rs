//! Correctness under faults, end to end: an in-process fleet node (the mesh library over a real
//! SQLite store, as in `fleet.rs`) and a real `meshlite-bridge run` process over a real Postgres.
//!
//! - The bridge is SIGKILLed again and again while it applies, and restarted each time against
//!   the same database from an empty working directory: Postgres must end up equal to the node,
//!   with every transaction stored and applied exactly once and nothing left parked.
//! - Postgres is stopped (like a crash) and restarted while the node keeps writing: the bridge
//!   must stay up, report it on `/healthz`, and lose nothing; the same while start-up waits for
//!   another bridge's migration lock.
//! - Postgres' own disk fills (a cluster on a tmpfs) and is grown again; the bridge's wall clock
//!   runs 9 hours ahead (libfaketime).
//!
//! Both compare the same things once the bridge has caught up (see [`converged`]): every task row
//! field by field, the summaries, the number of stored transactions, and the parked ones; then
//! every counter against the number of increments the workload made (see [`plan`]).

use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshlite_bridge::config::Config;
use meshlite_bridge::migrations::lock_key;
use meshlite_core::store::{Store, WriteError};
use meshlite_core::{ReplicaId, Summary};
use meshlite_fixtures::postgres::{PgCluster, PgServer};
use meshlite_fixtures::records::named_id;
use meshlite_fixtures::wait::{check, poll_until};
use meshlite_mesh::fleet;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod support;
use support::{
    Node, connect_utc, node_task_rows, pg_task_rows, pmoves, reported_http_port, start_node,
};

/// Failure guard only: each wait is expected to end within a few anti-entropy rounds (1 s each).
const GUARD: Duration = Duration::from_secs(60);

/// One write of the workload, on task number `.0`.
#[derive(Debug, Clone, Copy)]
enum Write {
    Put(usize),
    Increment(usize),
    Delete(usize),
}

/// `txns` single-write transactions over `tasks` records: every record is put, then increments
/// go round-robin (by 1, so a counter shows how many increments it received), and every tenth
/// record is deleted at the end (nothing touches it afterwards).
fn plan(tasks: usize, txns: usize) -> Vec<Write> {
    let deleted: Vec<usize> = (0..tasks).step_by(10).collect();
    let increments = txns - tasks - deleted.len();
    let mut out: Vec<Write> = (0..tasks).map(Write::Put).collect();
    out.extend((0..increments).map(|i| Write::Increment(i % tasks)));
    out.extend(deleted.into_iter().map(Write::Delete));
    out
}

/// What each task should read after the whole plan: its counter, or `None` when deleted.
fn expected_counters(plan: &[Write], tasks: usize) -> Vec<Option<i64>> {
    let mut out = vec![Some(0); tasks];
    for w in plan {
        match *w {
            Write::Put(_) => {}
            Write::Increment(t) => *out[t].as_mut().expect("increment after delete") += 1,
            Write::Delete(t) => out[t] = None,
        }
    }
    out
}

fn task_id(t: usize) -> String {
    named_id(&format!("crash-task-{t}"))
}

/// Runs `writes` on the node, one transaction each, in order.
async fn write(store: &Store, writes: Vec<Write>) {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        for w in writes {
            match w {
                Write::Put(t) => {
                    let id = task_id(t);
                    store.put(
                        "tasks",
                        json!({"id": id, "status": "queued", "title": format!("task {t}"), "retry_count": 0}),
                    )?;
                }
                Write::Increment(t) => {
                    store.increment("tasks", &task_id(t), "retry_count", 1)?;
                }
                Write::Delete(t) => store.delete("tasks", &task_id(t))?,
            }
        }
        Ok::<_, WriteError>(())
    })
    .await
    .expect("join")
    .expect("node writes");
}

/// How to start a `meshlite-bridge run` process (the same every time: one fleet identity, one
/// database).
struct BridgeSpec {
    url: String,
    bundle_dir: PathBuf,
    node: String,
}

/// A running bridge process, killed (SIGKILL) when dropped, with its own empty working directory.
struct Bridge {
    child: Child,
    /// The HTTP port it reported (it listens on a port of its own choosing).
    http_port: u16,
    _cwd: tempfile::TempDir,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl BridgeSpec {
    fn new(url: String, fleet_dir: &Path, node: &Node) -> Self {
        let issued = fleet::issue(fleet_dir, "bridge", 30).expect("issue bridge");
        Self {
            url,
            bundle_dir: issued.bundle_dir,
            node: node.net.local_addr().to_string(),
        }
    }

    fn spawn(&self) -> Bridge {
        self.spawn_with(&[])
    }

    /// [`Self::spawn`] with extra environment variables.
    fn spawn_with(&self, env: &[(&str, &str)]) -> Bridge {
        let cwd = tempfile::tempdir().expect("cwd");
        let child = Command::new(env!("CARGO_BIN_EXE_meshlite-bridge"))
            .arg("run")
            .envs(env.iter().copied())
            .current_dir(cwd.path())
            .env_remove("MESHLITE_CONFIG")
            .env_remove("SYNC_TABLES")
            .env("DATABASE_URL", &self.url)
            .env("MESHLITE_SCHEMA", pmoves())
            .env("MESHLITE_NAME", "bridge-crash")
            .env("MESHLITE_FLEET_DIR", &self.bundle_dir)
            .env("MESHLITE_STATIC_PEERS", &self.node)
            .env("MESHLITE_LISTEN", "127.0.0.1:0")
            .env("MESHLITE_HTTP_LISTEN", "127.0.0.1:0")
            .env("SYNC_INTERVAL_SECONDS", "1")
            // Killed with a warm document cache, restarted cold (`replica::cache`).
            .env("SYNC_DOC_CACHE_MIB", "64")
            .env("MESHLITE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn meshlite-bridge");
        let mut child = child;
        let http_port = reported_http_port(&mut child);
        Bridge {
            child,
            http_port,
            _cwd: cwd,
        }
    }
}

/// The directories a [`rig`] lives in (kept until the test ends).
type RigDirs = (tempfile::TempDir, tempfile::TempDir);

/// A fleet, one in-process node of it (its store's writes are the workload), and how to start a
/// bridge of the same fleet over `url`.
fn rig(url: &str) -> (CancellationToken, Node, BridgeSpec, RigDirs) {
    let cancel = CancellationToken::new();
    let fleet_root = tempfile::tempdir().expect("fleet");
    fleet::init(fleet_root.path()).expect("fleet init");
    let (node, node_data) = start_node(fleet_root.path(), "node", &cancel);
    let spec = BridgeSpec::new(url.to_owned(), fleet_root.path(), &node);
    (cancel, node, spec, (fleet_root, node_data))
}

/// `GET /healthz`: the status code and body, or `None` when the bridge does not answer.
async fn healthz(port: u16) -> Option<(u16, String)> {
    // A blocking request (as `cli.rs`), off the workers the node runs on.
    tokio::task::spawn_blocking(move || get_healthz(port))
        .await
        .expect("join")
}

fn get_healthz(port: u16) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Some((code, body))
}

async fn count(pg: &tokio_postgres::Client, sql: &str) -> Result<i64, String> {
    let row = pg.query_one(sql, &[]).await.map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

/// The summary the bridge serves, read from `meshlite.origins` as the bridge reads it.
async fn bridge_summary(pg: &tokio_postgres::Client) -> Result<Summary, String> {
    let rows = pg
        .query(
            "SELECT o.origin, lower(r), upper(r) FROM meshlite.origins o, unnest(o.held) r \
             ORDER BY o.origin, lower(r)",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut summary = Summary::new();
    for row in rows {
        let origin = ReplicaId::from_slice(row.get(0)).ok_or("origin of a bad length")?;
        let (lo, hi): (i64, i64) = (row.get(1), row.get(2));
        let (lo, hi) = (
            lo.try_into().expect("seq"),
            (hi - 1).try_into().expect("seq"),
        );
        let mut set = summary.get(&origin).cloned().unwrap_or_default();
        set.insert_range(lo, hi);
        summary.set(origin, set);
    }
    Ok(summary)
}

/// Every task's id.
fn task_ids(tasks: usize) -> Vec<String> {
    (0..tasks).map(task_id).collect()
}

/// `Ok(rows)` once Postgres holds exactly what the node holds: the same summary, every
/// transaction stored once, none parked, and every task row equal field by field.
async fn converged(url: &str, store: &Store, tasks: usize) -> Result<Vec<Value>, String> {
    let pg = connect_utc(url).await?;
    let want = store.summary_async().await.map_err(|e| e.to_string())?;
    let held = bridge_summary(&pg).await?;
    let stored = count(&pg, "SELECT count(*) FROM meshlite.txns").await?;
    let parked = count(&pg, "SELECT count(*) FROM meshlite.parked").await?;
    check(
        held == want && u64::try_from(stored) == Ok(want.txn_count()) && parked == 0,
        format!(
            "bridge holds {} txns ({stored} stored, {parked} parked), node {}",
            held.txn_count(),
            want.txn_count()
        ),
    )?;
    let (node_rows, pg_rows) = (
        node_task_rows(store, &task_ids(tasks)).await,
        pg_task_rows(&pg, &task_ids(tasks)).await?,
    );
    let differ = node_rows.iter().zip(&pg_rows).filter(|(a, b)| a != b);
    match differ.clone().next() {
        None => Ok(pg_rows),
        Some((a, b)) => Err(format!(
            "{} task rows differ, e.g. node {a} / postgres {b}",
            differ.count()
        )),
    }
}

/// The rows after convergence show every increment exactly once and every delete.
fn assert_counters(rows: &[Value], expected: &[Option<i64>]) {
    for (t, (row, want)) in rows.iter().zip(expected).enumerate() {
        match want {
            Some(k) => assert_eq!(row["retry_count"], json!(k), "task {t}: {row}"),
            None => assert_eq!(*row, Value::Null, "task {t} was deleted"),
        }
    }
}

/// What nothing may have produced: refused transactions.
async fn assert_nothing_rejected(url: &str) {
    let pg = connect_utc(url).await.expect("connect");
    let rejected = count(&pg, "SELECT count(*) FROM meshlite.rejected")
        .await
        .expect("rejected");
    assert_eq!(rejected, 0, "no transaction may be refused");
}

fn seed() -> u64 {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("kill schedule seed: {seed} (rerun with CRASH_SEED={seed})");
    seed
}

const CRASH_TASKS: usize = 100;
const CRASH_TXNS: usize = 2000;
/// Written before the first bridge starts; the rest while the bridge is being killed.
const CRASH_BACKLOG: usize = 1500;
/// Bridge incarnations killed: `MESHLITE_BRIDGE_KILLS` (default 15; `deploy/faults.sh --long`
/// runs 100).
fn kill_count() -> usize {
    std::env::var("MESHLITE_BRIDGE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_apply_loses_and_duplicates_nothing() {
    let mut rng = StdRng::seed_from_u64(seed());
    let url = PgServer::shared().database("crash");
    let (cancel, node, spec, _dirs) = rig(&url);
    let plan = plan(CRASH_TASKS, CRASH_TXNS);
    write(&node.store, plan[..CRASH_BACKLOG].to_vec()).await;

    // The rest is written while the bridge lives, a share per incarnation, so it arrives as
    // pushes as well as in the anti-entropy round that follows each restart.
    let rest = &plan[CRASH_BACKLOG..];
    let pg = connect_utc(&url).await.expect("connect");
    let (mut kills, mut mid_transaction) = (0, 0);
    let started = Instant::now();
    for writes in rest.chunks(rest.len().div_ceil(kill_count())) {
        let mut bridge = spec.spawn();
        // Most incarnations die while their first batch is under way; some first commit one.
        gets_to_work(&pg, &node.store, kills, rng.random_bool(0.4)).await;
        let pause = Duration::from_millis(rng.random_range(50..=400));
        tokio::join!(
            write(&node.store, writes.to_vec()),
            tokio::time::sleep(pause)
        );
        mid_transaction += writing_transactions(&pg).await;
        bridge.child.kill().expect("SIGKILL");
        bridge.child.wait().expect("reap");
        eprintln!("kill {kills}: {} stored", stored(&pg).await);
        kills += 1;
    }
    eprintln!(
        "{mid_transaction} of {kills} kills interrupted a writing transaction ({:?})",
        started.elapsed()
    );

    let started = Instant::now();
    let _bridge = spec.spawn();
    let rows = poll_until(
        "Postgres equals the node after the last restart",
        GUARD,
        || converged(&url, &node.store, CRASH_TASKS),
    )
    .await;
    eprintln!("converged {:?} after the last restart", started.elapsed());
    let node_txns = node
        .store
        .summary_async()
        .await
        .expect("summary")
        .txn_count();
    assert_eq!(node_txns, CRASH_TXNS as u64, "the node made every write");
    assert_counters(&rows, &expected_counters(&plan, CRASH_TASKS));
    assert_nothing_rejected(&url).await;
    cancel.cancel();
    node.stop().await;
}

/// Waits until incarnation `n` of the bridge is at work: it has stored something, or (unless
/// `commit` asks for stored progress) has a writing transaction open, or it finds nothing left
/// to do. So no kill lands before the bridge started.
async fn gets_to_work(pg: &tokio_postgres::Client, store: &Store, n: usize, commit: bool) {
    let before = stored(pg).await;
    poll_until(
        &format!("bridge incarnation {n} at work"),
        GUARD,
        || async {
            let now = stored(pg).await;
            let node = store.summary_async().await.map_err(|e| e.to_string())?;
            let writing = !commit && writing_transactions(pg).await > 0;
            check(
                now > before || writing || u64::try_from(now) == Ok(node.txn_count()),
                format!(
                    "{now} stored (was {before}), node holds {}",
                    node.txn_count()
                ),
            )
        },
    )
    .await;
}

/// Transactions stored in Postgres (0 until the first bridge has created the tables).
async fn stored(pg: &tokio_postgres::Client) -> i64 {
    count(pg, "SELECT count(*) FROM meshlite.txns")
        .await
        .unwrap_or(0)
}

/// Other sessions of this database inside a transaction that has written (an apply under way).
async fn writing_transactions(pg: &tokio_postgres::Client) -> usize {
    let n = count(
        pg,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL",
    )
    .await
    .expect("pg_stat_activity");
    usize::try_from(n).unwrap_or(0)
}

const OUTAGE_TASKS: usize = 30;
const OUTAGE_TXNS: usize = 1200;
/// Written before the bridge starts, so Postgres goes away in the middle of their first batch.
const OUTAGE_BACKLOG: usize = 1000;
/// How long Postgres stays down after the bridge has noticed.
const OUTAGE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_keeps_the_bridge_up_and_loses_nothing() {
    let mut cluster = tokio::task::block_in_place(PgCluster::start);
    let url = cluster.url();
    let (cancel, node, spec, _dirs) = rig(&url);
    let plan = plan(OUTAGE_TASKS, OUTAGE_TXNS);
    let (before, during) = plan.split_at(OUTAGE_BACKLOG);
    write(&node.store, before.to_vec()).await;

    let mut bridge = spec.spawn();
    let pg = connect_utc(&url).await.expect("connect");
    // Ready (migrated) and writing: the first batch is under way. A fast bridge may have
    // stored the whole backlog between two polls; the outage then starts between batches (the
    // writes made during it still test the catch-up), and the test says so.
    poll_until("the bridge applies its first batch", GUARD, || async {
        let ready = healthz(bridge.http_port).await;
        let writing = writing_transactions(&pg).await;
        let stored = stored(&pg).await;
        check(
            matches!(ready, Some((200, _)))
                && (writing > 0 || stored >= i64::try_from(OUTAGE_BACKLOG).unwrap_or(i64::MAX)),
            format!("{ready:?}, {writing} writing, {stored} stored"),
        )
    })
    .await;
    eprintln!("Postgres stops with {} stored", stored(&pg).await);
    tokio::task::block_in_place(|| cluster.stop());
    let health = poll_until("/healthz reports Postgres down", GUARD, || async {
        match healthz(bridge.http_port).await {
            Some((503, body)) => Ok(body),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(health.contains(r#""postgres":"down""#), "{health}");
    // The node goes on writing; the bridge must not exit meanwhile.
    write(&node.store, during.to_vec()).await;
    tokio::time::sleep(OUTAGE).await;
    assert!(
        bridge.child.try_wait().expect("try_wait").is_none(),
        "the bridge exited while Postgres was down"
    );
    assert_eq!(healthz(bridge.http_port).await.map(|h| h.0), Some(503));

    tokio::task::block_in_place(|| cluster.restart());
    poll_until("/healthz recovers", GUARD, || async {
        let h = healthz(bridge.http_port).await;
        check(matches!(h, Some((200, _))), format!("{h:?}"))
    })
    .await;
    let rows = poll_until("Postgres equals the node after the outage", GUARD, || {
        converged(&url, &node.store, OUTAGE_TASKS)
    })
    .await;
    assert_counters(&rows, &expected_counters(&plan, OUTAGE_TASKS));
    assert_nothing_rejected(&url).await;
    assert!(
        bridge.child.try_wait().expect("try_wait").is_none(),
        "the bridge is still running"
    );
    cancel.cancel();
    node.stop().await;
}

/// Start-up should wait out a Postgres that goes away, as connecting does (with backoff): here
/// it goes away while the bridge waits inside its first migration for the migration lock (held
/// by another bridge migrating the same database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_during_startup_migration_is_waited_out() {
    let mut cluster = tokio::task::block_in_place(PgCluster::start);
    let url = cluster.url();
    let (cancel, node, spec, _dirs) = rig(&url);
    let other = connect_utc(&url).await.expect("connect");
    let schemas = Config::default().schemas().expect("schemas");
    other.batch_execute("BEGIN").await.expect("begin");
    other
        .execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(&schemas)])
        .await
        .expect("migration lock");

    let mut bridge = spec.spawn();
    poll_until("the bridge waits for the migration lock", GUARD, || async {
        let waiting = count(
            &other,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        )
        .await;
        check(waiting == Ok(1), format!("{waiting:?}"))
    })
    .await;
    tokio::task::block_in_place(|| cluster.stop());
    tokio::time::sleep(OUTAGE).await;
    tokio::task::block_in_place(|| cluster.restart());
    poll_until("the bridge becomes ready", GUARD, || {
        let exited = bridge.child.try_wait().expect("try_wait");
        async move {
            assert!(exited.is_none(), "the bridge exited: {exited:?}");
            let h = healthz(bridge.http_port).await;
            check(matches!(h, Some((200, _))), format!("{h:?}"))
        }
    })
    .await;
    cancel.cancel();
    node.stop().await;
}

/// Tasks written while Postgres' disk fills, each with a title this long.
const BIG_TITLE: usize = 16 * 1024;
/// Tasks per round of writes; rounds go on until Postgres says its disk is full.
const FILL_ROUND: usize = 100;
/// At most this many rounds (≈ 50 MB of titles, several times what the tmpfs holds).
const FILL_ROUNDS: usize = 32;

async fn put_big_tasks(store: &Store, tasks: std::ops::Range<usize>) {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        for t in tasks {
            // Random letters: Postgres compresses long values (TOAST), a repeated pattern to nothing.
            let mut rng = StdRng::seed_from_u64(t as u64);
            let title: String = (0..BIG_TITLE)
                .map(|_| char::from(rng.random_range(b'a'..=b'z')))
                .collect();
            let value =
                json!({"id": task_id(t), "status": "queued", "title": title, "retry_count": 0});
            store.put("tasks", value)?;
        }
        Ok::<_, WriteError>(())
    })
    .await
    .expect("join")
    .expect("node writes");
}

/// Postgres' disk fills under the bridge: the bridge must stay up, refuse nothing (a full disk
/// is not a bad transaction), and once the disk has room again (and Postgres is back, if its
/// crash recovery gave up meanwhile) store everything the node holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_postgres_disk_is_waited_out_and_loses_nothing() {
    let mut cluster = tokio::task::block_in_place(|| PgCluster::start_with_disk("80m"));
    let url = cluster.url();
    let (cancel, node, spec, _dirs) = rig(&url);
    let mut bridge = spec.spawn();

    let mut tasks = 0;
    while !cluster.log().contains("No space left on device") {
        assert!(
            tasks < FILL_ROUND * FILL_ROUNDS,
            "Postgres' 80 MB disk never filled after {tasks} tasks of {BIG_TITLE} bytes"
        );
        put_big_tasks(&node.store, tasks..tasks + FILL_ROUND).await;
        tasks += FILL_ROUND;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("Postgres' disk filled after {tasks} tasks");
    // More writes while it is full; the bridge keeps retrying and must not exit.
    put_big_tasks(&node.store, tasks..tasks + FILL_ROUND).await;
    tasks += FILL_ROUND;
    tokio::time::sleep(OUTAGE).await;
    assert!(
        bridge.child.try_wait().expect("try_wait").is_none(),
        "the bridge exited while Postgres' disk was full"
    );

    cluster.grow_disk("1g");
    let restarted = tokio::task::block_in_place(|| cluster.ensure_running());
    eprintln!("disk grown; Postgres had to be started again: {restarted}");
    let _rows = poll_until(
        "Postgres equals the node once its disk has room",
        GUARD,
        || converged(&url, &node.store, tasks),
    )
    .await;
    assert_nothing_rejected(&url).await;
    poll_until("/healthz is healthy again", GUARD, || async {
        let h = healthz(bridge.http_port).await;
        check(matches!(h, Some((200, _))), format!("{h:?}"))
    })
    .await;
    assert!(bridge.child.try_wait().expect("try_wait").is_none());
    cancel.cancel();
    node.stop().await;
}

/// libfaketime, preloaded into the bridge to shift its wall clock (as `node/tests/faults.rs`
/// does for nodes; `deploy/test.sh` installs it).
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// The bridge's clock 9 hours ahead: the merged rows, a central edit flowing back and every
/// timestamp in the bridge's tables are as with a true clock, because the bridge takes its
/// times from Postgres' `now()`. (`nodes.last_seen_at` came from the bridge's clock and was
/// 9 hours in the future here until it was computed on Postgres' clock too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_clock_hours_ahead_changes_nothing_in_postgres() {
    assert!(
        Path::new(FAKETIME_LIB).exists(),
        "{FAKETIME_LIB} is missing: apt-get install faketime (deploy/test.sh does)"
    );
    let url = PgServer::shared().database("skew");
    let (cancel, node, spec, _dirs) = rig(&url);
    let _bridge = spec.spawn_with(&[
        ("LD_PRELOAD", FAKETIME_LIB),
        ("FAKETIME", "+9h"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ]);
    let (tasks, plan) = (10, plan(10, 60));
    write(&node.store, plan.clone()).await;
    let rows = poll_until("Postgres equals the node", GUARD, || {
        converged(&url, &node.store, tasks)
    })
    .await;
    assert_counters(&rows, &expected_counters(&plan, tasks));

    let pg = connect_utc(&url).await.expect("connect");
    let edited = task_id(1);
    pg.execute(
        "UPDATE public.tasks SET output = '{\"by\": \"central\"}' WHERE id::text = $1",
        &[&edited],
    )
    .await
    .expect("central edit");
    poll_until("the central edit reaches the node", GUARD, || async {
        let row = &node_task_rows(&node.store, std::slice::from_ref(&edited)).await[0];
        check(row["output"]["by"] == "central", row.to_string())
    })
    .await;
    poll_until("the bridge has recorded the node", GUARD, || async {
        let n = count(&pg, "SELECT count(*) FROM meshlite.nodes").await?;
        check(n > 0, format!("{n} nodes"))
    })
    .await;
    let future = count(
        &pg,
        "SELECT count(*) FROM meshlite.nodes WHERE last_seen_at > now() + interval '1 minute'",
    )
    .await
    .expect("nodes");
    assert_eq!(future, 0, "a node last seen in the future");
    let health: Vec<String> = pg
        .query("SELECT health_status FROM public.sync_health", &[])
        .await
        .expect("sync_health")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !health.is_empty() && health.iter().all(|h| h == "healthy"),
        "{health:?}"
    );
    cancel.cancel();
    node.stop().await;
}
