//! The bridge's HTTP listener under stalled clients: the node's limits (the mesh's shared
//! listener) from `[http]` in the bridge's config file. Trickled headers and idle keep-alive
//! connections are closed; idle connections beyond `http.max_connections` wait in the accept
//! queue without starving `/healthz` even with fewer descriptors than clients; out-of-range
//! limits are refused naming the key. A real `meshlite-bridge run` (its Postgres unreachable:
//! `/healthz` answers 503 `starting`, which is all these tests need), plain TCP clients; every
//! wait is a failure guard.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;

/// Failure guard for a connection the bridge should close.
const CLOSE_GUARD: Duration = Duration::from_secs(15);

/// Kills the bridge when the test ends.
struct Bridge {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `meshlite-bridge` with a config file holding `http` (the `[http]` section's body).
fn bridge_cmd(http: &str, dir: &tempfile::TempDir) -> Command {
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[postgres]\nurl = \"postgres://meshlite@127.0.0.1:1/none\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n{http}\n"
        ),
    )
    .expect("write config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshlite-bridge"));
    cmd.env_clear()
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null());
    cmd
}

fn start(http: &str) -> Bridge {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = bridge_cmd(http, &dir)
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn meshlite-bridge run");
    let port = support::reported_http_port(&mut child);
    Bridge {
        child,
        port,
        _dir: dir,
    }
}

/// Reads until the bridge closes `conn` (EOF or reset); panics after [`CLOSE_GUARD`].
async fn closed_by_bridge(conn: &mut TcpStream, what: &str) {
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

/// The status line of `GET /healthz` on a fresh connection.
async fn healthz(port: u16) -> std::io::Result<String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await?;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await?;
    Ok(answer.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_headers_and_idle_keep_alive_are_closed() {
    let bridge = start("header_timeout_ms = 500");
    let mut trickle = TcpStream::connect(("127.0.0.1", bridge.port))
        .await
        .expect("connect");
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("write");
    // One header line every 100 ms: progress, but the head never completes.
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

    let mut idle = TcpStream::connect(("127.0.0.1", bridge.port))
        .await
        .expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    closed_by_bridge(&mut idle, "idle keep-alive connection").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_cap_leave_healthz_answering() {
    let bridge = start("max_connections = 16\nheader_timeout_ms = 500");
    // Fewer descriptors than idle clients: without the cap the bridge runs out of them.
    let status = Command::new("prlimit")
        .args(["--pid", &bridge.child.id().to_string(), "--nofile=64:64"])
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit failed");
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(
            TcpStream::connect(("127.0.0.1", bridge.port))
                .await
                .expect("connect"),
        );
    }
    let line = meshlite_fixtures::wait::poll_until(
        "/healthz behind 100 idle connections",
        CLOSE_GUARD,
        || healthz(bridge.port),
    )
    .await;
    assert!(line.starts_with("HTTP/1.1 503"), "starting: {line}");
    drop(idle);
}

#[test]
fn out_of_range_limits_are_refused_naming_the_key() {
    for (http, key) in [
        ("max_connections = 0", "http.max_connections"),
        ("header_timeout_ms = 1", "http.header_timeout_ms"),
        ("idle_timeout_ms = 1", "http.idle_timeout_ms"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = bridge_cmd(http, &dir)
            .arg("--print-config")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{http}: {stderr}");
        assert!(stderr.contains(key), "{http}: {stderr}");
    }
}
