//! The local HTTP listener under hostile or stalled clients (issue 11, "found by an independent
//! run"): trickled headers, idle and half-sent connections are closed; connections beyond
//! `http.max_connections` wait without starving `/healthz`; a `/v1/changes` subscriber that
//! never reads holds a bounded amount of the daemon's memory; an open change stream does not
//! hold up shutdown. Real daemons on loopback, plain TCP clients; every wait is a failure
//! guard.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::time::{Duration, Instant};

use common::{Fleet, NodeConfig, NodeProc};
use hyper::StatusCode;
use meshlite_fixtures::wait::poll_until;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Failure guard for a connection the daemon should close.
const CLOSE_GUARD: Duration = Duration::from_secs(15);

fn node(fleet: &Fleet, name: &str, limits: &[(&str, i64)]) -> NodeConfig {
    let mut cfg = NodeConfig::loopback(name, fleet.root().join(name), None);
    cfg.schema = None;
    for (k, v) in limits {
        cfg.http_limits.insert((*k).into(), (*v).into());
    }
    cfg
}

/// Reads until the daemon closes `conn` (EOF or reset); panics after [`CLOSE_GUARD`].
async fn closed_by_daemon(conn: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 4096];
    let reading = async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    if tokio::time::timeout(CLOSE_GUARD, reading).await.is_err() {
        panic!("{what}: still open after {CLOSE_GUARD:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_headers_and_idle_keep_alive_are_closed() {
    let fleet = Fleet::new();
    let node = NodeProc::start(node(&fleet, "n1", &[("header_timeout_ms", 500)])).await;

    // One header line every 100 ms: the connection makes progress but never finishes its head.
    let mut trickle = TcpStream::connect(node.http()).await.unwrap();
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let trickling = async {
        for i in 0.. {
            let line = format!("x-slow-{i}: a\r\n");
            if trickle.write_all(line.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    if tokio::time::timeout(CLOSE_GUARD, trickling).await.is_err() {
        panic!("trickled headers: still accepted after {CLOSE_GUARD:?}");
    }

    // A keep-alive connection that answered once and then sends nothing.
    let mut idle = TcpStream::connect(node.http()).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    closed_by_daemon(&mut idle, "idle keep-alive connection").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_body_is_cut_off() {
    let fleet = Fleet::new();
    let node = NodeProc::start(node(&fleet, "n1", &[("idle_timeout_ms", 500)])).await;
    let mut conn = TcpStream::connect(node.http()).await.unwrap();
    let head = "POST /v1/txn HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                content-length: 1000\r\n\r\n[{\"op\":";
    conn.write_all(head.as_bytes()).await.unwrap();
    closed_by_daemon(&mut conn, "half-sent body").await;
    let (status, _) = node.healthz().await;
    assert_eq!(status, StatusCode::OK);
}

/// Lowers the daemon's descriptor limit, as a small `ulimit -n` would (prlimit(1)).
fn limit_descriptors(pid: u32, n: u64) {
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={n}:{n}")])
        .status()
        .unwrap();
    assert!(status.success(), "prlimit --pid {pid} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_cap_leave_healthz_answering() {
    let fleet = Fleet::new();
    let limits = [("max_connections", 16), ("header_timeout_ms", 500)];
    let node = NodeProc::start(node(&fleet, "n1", &limits)).await;
    // Fewer descriptors than idle clients: without a cap the daemon runs out of them.
    limit_descriptors(node.pid(), 64);
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(node.http()).await.unwrap());
    }
    let (status, body) = poll_until("/healthz behind 100 idle connections", CLOSE_GUARD, || {
        node.try_request(hyper::Method::GET, "/healthz", None)
    })
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    drop(idle);
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Opens `GET /v1/changes` and returns the connection once the response head arrived.
async fn subscribe(node: &NodeProc) -> TcpStream {
    let mut conn = TcpStream::connect(node.http()).await.unwrap();
    conn.write_all(b"GET /v1/changes HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(CLOSE_GUARD, conn.read(&mut buf))
            .await
            .expect("the change stream answers")
            .unwrap();
        assert!(n > 0, "the change stream closed before its head");
        head.push(buf[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    conn
}

/// What a change-stream reader saw.
#[derive(Debug, Default)]
struct Seen {
    changes: usize,
    lagged: bool,
}

/// Reads the stream until `want` changes, a `lagged` event, or the end.
async fn read_changes(mut conn: TcpStream, want: usize) -> Seen {
    let mut seen = Seen::default();
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while seen.changes < want && !seen.lagged {
        let n = conn.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        let last_newline = pending
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        for line in pending[..last_newline].split(|b| *b == b'\n') {
            seen.changes += usize::from(line == b"event: change");
            seen.lagged |= line == b"event: lagged";
        }
        pending.drain(..last_newline);
    }
    seen
}

const COMMITS: usize = 1_100;
const ROWS_PER_COMMIT: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_change_subscriber_holds_bounded_memory() {
    let fleet = Fleet::new();
    // A long idle timeout: the stalled stream must end by its budget, not by the watchdog.
    let node = NodeProc::start(node(&fleet, "n1", &[("idle_timeout_ms", 600_000)])).await;
    let filler = "x".repeat(1000);
    let rows = |c: usize| -> serde_json::Value {
        (0..ROWS_PER_COMMIT)
            .map(|r| json!({"id": format!("r{c}-{r}"), "data": filler}))
            .collect()
    };
    node.put("blobs", rows(usize::MAX)).await;
    let before = rss_kib(node.pid());

    let stalled = subscribe(&node).await;
    let reader = tokio::spawn(read_changes(
        subscribe(&node).await,
        COMMITS * ROWS_PER_COMMIT,
    ));
    for c in 0..COMMITS {
        node.put("blobs", rows(c)).await;
    }
    let after = rss_kib(node.pid());
    let seen = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("the reading subscriber gets its changes")
        .unwrap();
    assert!(
        seen.lagged || seen.changes == COMMITS * ROWS_PER_COMMIT,
        "a reading subscriber gets every change or a `lagged` event: {seen:?}"
    );
    // Without a byte budget the stalled subscriber pins up to 1,024 commits (about 100 MB here).
    let grown_mib = after.saturating_sub(before) / 1024;
    eprintln!("VmRSS {before} KiB -> {after} KiB with a stalled subscriber");
    assert!(
        grown_mib < 64,
        "RSS grew by {grown_mib} MiB ({before} KiB -> {after} KiB) with a stalled subscriber"
    );
    let seen = tokio::time::timeout(CLOSE_GUARD, read_changes(stalled, usize::MAX))
        .await
        .expect("the stalled subscriber's stream ends");
    assert!(
        seen.lagged,
        "the stalled subscriber is told it lagged: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_change_stream_does_not_delay_shutdown() {
    let fleet = Fleet::new();
    let mut node = NodeProc::start(node(&fleet, "n1", &[])).await;
    let _stream = subscribe(&node).await;
    let started = Instant::now();
    let status = node.stop().await;
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    // Below the 5 s shutdown grace the HTTP task used to wait out with a stream open.
    assert!(
        took < Duration::from_secs(4),
        "shutdown took {took:?} with a change stream open"
    );
}
