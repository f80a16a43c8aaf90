//! Concurrent single-row HTTP writes share a commit, and none is acknowledged before it
//! (issue 13, "Single-row HTTP writes"): the node's listener in this process over a real
//! store; the test holds SQLite's write lock from its own connection so that [`REQUESTS`]
//! concurrent `POST /rest/v1/items` (and then `PATCH`) requests queue up behind the writer,
//! checks that none of them has been answered while the lock is held and that the writer's
//! queue holds them, releases the lock, and checks that
//!
//! - every request got its 201 / 200 with its row;
//! - when each answer arrived, its row was already visible to another SQLite connection (the
//!   store's read pool) and the writer's commit counter had moved: no answer before COMMIT;
//! - all the requests were committed in fewer commits than requests (group commit across
//!   requests), per `/metrics` (`meshlite_store_commit_groups_total`,
//!   `meshlite_store_commands_committed_total`) as well as `Store::commit_stats`.
//!
//! No timing is asserted: the waits are bounded only to turn a hang into a failure.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod inproc;

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use meshlite_core::schema::Schema;
use meshlite_core::store::{CommitStats, DB_FILE, OpenOptions, Store};
use meshlite_node::auth::Auth;
use meshlite_node::httpc;
use serde_json::{Value, json};

/// Concurrent requests per round.
const REQUESTS: usize = 16;
/// Bounds each wait (a hang, not a speed check); also the writer's busy timeout, so its
/// `BEGIN IMMEDIATE` waits for the test's lock instead of failing.
const GUARD: Duration = Duration::from_secs(120);

const SCHEMA: &str = r#"
version = 1
strict = true

[collections.items.fields]
n = { type = "integer" }
status = { type = "text" }
"#;

/// The test's own write connection, holding SQLite's write lock until dropped or released.
struct WriteLock(rusqlite::Connection);

impl WriteLock {
    fn take(dir: &std::path::Path) -> Self {
        let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        WriteLock(conn)
    }

    fn release(self) {
        self.0.execute_batch("ROLLBACK").unwrap();
    }
}

/// Polls `done` until it holds; panics after [`GUARD`].
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < GUARD, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One request's answer, and what the store showed when it arrived.
struct Answered {
    status: StatusCode,
    rows: Vec<Value>,
    /// The commit counter when the answer arrived.
    groups_then: u64,
    /// The row as another SQLite connection read it when the answer arrived.
    visible_then: Option<Value>,
}

/// Sends `method path body` with `Prefer: return=representation`, then reads the store.
async fn send(
    addr: std::net::SocketAddr,
    store: Store,
    method: Method,
    path: String,
    body: Value,
    id: String,
) -> Answered {
    let headers = [
        ("prefer", "return=representation"),
        ("content-type", "application/json"),
    ];
    let bytes = Some(body.to_string().into_bytes());
    let answer = httpc::request_with(addr, method, &path, &headers, bytes)
        .await
        .unwrap();
    let groups_then = store.commit_stats().groups;
    let visible_then = store.get_async("items", &id).await.unwrap();
    let (status, _, body) = answer.into_parts();
    let rows = serde_json::from_slice(&body).unwrap_or_default();
    Answered {
        status,
        rows,
        groups_then,
        visible_then,
    }
}

/// `(groups, commands)` from the node's `/metrics`.
async fn metrics_counters(addr: std::net::SocketAddr) -> (u64, u64) {
    let (status, body) = httpc::get(addr, "/metrics").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).unwrap();
    let counter = |name: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(&format!("{name} ")));
        line.and_then(|l| l.split(' ').nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
    };
    (
        counter("meshlite_store_commit_groups_total"),
        counter("meshlite_store_commands_committed_total"),
    )
}

/// Sends [`REQUESTS`] concurrent requests while the test holds the write lock; checks that
/// none is answered before the commit and that they share commits. `request(i)` is the
/// method, path, body and id of request `i`; `want` its status.
async fn round(
    server: &inproc::Server,
    request: impl Fn(usize) -> (Method, String, Value, String),
    want: StatusCode,
) {
    let before = server.store.commit_stats();
    let (m_groups, m_commands) = metrics_counters(server.addr).await;
    let lock = WriteLock::take(server.dir());
    let mut tasks = Vec::new();
    for i in 0..REQUESTS {
        let (method, path, body, id) = request(i);
        let store = server.store.clone();
        tasks.push(tokio::spawn(send(
            server.addr,
            store,
            method,
            path,
            body,
            id,
        )));
    }
    // The writer took the first command and waits for the lock in BEGIN; the rest queue.
    wait_for("the requests to queue behind the writer", || {
        server.store.queued_commands() >= REQUESTS - 1
    })
    .await;
    let early: Vec<_> = tasks.iter().filter(|t| t.is_finished()).collect();
    assert!(
        early.is_empty(),
        "{} answers arrived while nothing could commit",
        early.len()
    );
    assert_eq!(
        server.store.commit_stats(),
        before,
        "a commit under the lock"
    );
    lock.release();

    for (i, t) in tasks.into_iter().enumerate() {
        let a = t.await.unwrap();
        let (_, _, body, id) = request(i);
        assert_eq!(a.status, want, "request {i}: {:?}", a.rows);
        assert_eq!(a.rows.len(), 1, "request {i}: one row represented");
        assert_eq!(a.rows[0]["id"], json!(id));
        assert!(
            a.groups_then > before.groups,
            "request {i} answered before any commit"
        );
        let seen = a
            .visible_then
            .expect("answered row not visible to a reader");
        for (k, v) in body.as_object().unwrap() {
            assert_eq!(&seen[k], v, "request {i}: field {k} as committed");
        }
    }

    let after = server.store.commit_stats();
    let groups = after.groups - before.groups;
    let commands = after.commands - before.commands;
    assert_eq!(commands, REQUESTS as u64, "one command per request");
    assert!(
        groups * 2 <= commands,
        "{REQUESTS} concurrent requests took {groups} commits: no group commit"
    );
    let (m_groups2, m_commands2) = metrics_counters(server.addr).await;
    assert_eq!(
        (m_groups2 - m_groups, m_commands2 - m_commands),
        (groups, commands),
        "/metrics shows the store's counters"
    );
    assert_eq!(
        CommitStats {
            groups: m_groups2,
            commands: m_commands2
        },
        server.store.commit_stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits_and_wait_for_them() {
    let opts = OpenOptions {
        schema: Some(Schema::from_toml(SCHEMA).unwrap()),
        busy_timeout: GUARD,
        ..OpenOptions::default()
    };
    let server = inproc::serve_opts(opts, "group-commit", Auth::off()).await;
    let id = |i: usize| format!("item-{i:02}");

    round(
        &server,
        |i| {
            let body = json!({ "id": id(i), "n": i, "status": "queued" });
            (Method::POST, "/rest/v1/items".into(), body, id(i))
        },
        StatusCode::CREATED,
    )
    .await;

    round(
        &server,
        |i| {
            let path = format!("/rest/v1/items?id=eq.{}", id(i));
            let body = json!({ "status": "running" });
            (Method::PATCH, path, body, id(i))
        },
        StatusCode::OK,
    )
    .await;
}
