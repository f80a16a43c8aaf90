//! The `meshlite-bridge` binary: dry-run SQL, config errors naming the key, `run` serving
//! /healthz until SIGTERM, and `run` waiting (unhealthy) for a Postgres that is down.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use meshlite_fixtures::postgres::{PgCluster, PgServer};

mod support;

fn bridge() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshlite-bridge"));
    // The tests choose every input; nothing leaks in from the environment.
    for var in [
        "DATABASE_URL",
        "MESHLITE_CONFIG",
        "MESHLITE_SCHEMA",
        "SYNC_TABLES",
        "SYNC_BATCH_SIZE",
        "MESHLITE_HTTP_LISTEN",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn schema() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/schemas/pmoves.toml")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dry_run_prints_sql_without_a_database() {
    let out = bridge()
        .args(["migrate", "--dry-run"])
        .env("MESHLITE_SCHEMA", schema())
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for needle in [
        "-- migration 1 (state_tables)",
        "CREATE TABLE IF NOT EXISTS \"meshlite\".txns",
        "CREATE TABLE IF NOT EXISTS \"public\".sync_status",
        "CREATE TABLE IF NOT EXISTS \"public\".\"tasks\"",
        "ADD COLUMN IF NOT EXISTS \"retry_count\" bigint",
        "pg_advisory_xact_lock",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in dry run");
    }
}

#[test]
fn config_errors_name_the_key_and_print_config_hides_the_password() {
    let out = bridge()
        .args(["migrate", "--dry-run"])
        .env("SYNC_BATCH_SIZE", "lots")
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("SYNC_BATCH_SIZE"), "{stderr}");

    let out = bridge().arg("migrate").output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("postgres.url"), "{stderr}");

    let out = bridge()
        .args(["--print-config"])
        .env("DATABASE_URL", "postgresql://u:hunter2@db:5432/postgres")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("u:****@db") && !stdout.contains("hunter2"),
        "{stdout}"
    );
    assert!(stdout.contains("state_schema = \"meshlite\""), "{stdout}");
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// A `meshlite-bridge run` on a port of its own choosing, and that port.
fn spawn_run(url: &str) -> (Child, u16) {
    let mut child = bridge()
        .arg("run")
        .env("DATABASE_URL", url)
        .env("MESHLITE_SCHEMA", schema())
        .env("MESHLITE_HTTP_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meshlite-bridge run");
    let port = support::reported_http_port(&mut child);
    (child, port)
}

/// Polls `path` until the response satisfies `done`; panics with the bridge's stderr if it
/// exits, or after `within`.
fn poll(
    child: &mut Child,
    port: u16,
    path: &str,
    within: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(resp) = get(port, path).filter(|r| done(r)) {
            return resp;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut err = String::new();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("bridge exited with {status}: {err}");
        }
        assert!(
            Instant::now() < deadline,
            "no matching {path} answer within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM, then the exit status (bounded).
fn terminate(mut child: Child) -> std::process::ExitStatus {
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "bridge ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_migrates_serves_health_and_stops_on_sigterm() {
    let url = PgServer::shared().database("cli_run");
    let (mut child, port) = spawn_run(&url);
    let health = poll(&mut child, port, "/healthz", Duration::from_secs(30), |r| {
        r.starts_with("HTTP/1.1 200")
    });
    assert!(health.contains("\"postgres\":\"up\""), "{health}");
    let metrics = get(port, "/metrics").unwrap();
    assert!(
        metrics.contains("meshlite_bridge_postgres_up 1"),
        "{metrics}"
    );
    assert!(metrics.contains("meshlite_bridge_tables 10"), "{metrics}");
    for family in [
        "meshlite_bridge_txns_applied_total 0",
        "meshlite_bridge_rows_written_total 0",
        "meshlite_bridge_central_edits_total 0",
        "meshlite_bridge_conflicts_recorded_total 0",
        "meshlite_bridge_rejected_total 0",
        "# TYPE meshlite_bridge_origin_max_seq gauge",
    ] {
        assert!(metrics.contains(family), "missing {family}: {metrics}");
    }
    let tables = PgServer::psql(
        &url,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
    );
    assert_eq!(tables.trim(), "11", "10 collections + sync_status");
    let status = terminate(child);
    assert!(status.success(), "exit status {status}");
}

#[test]
fn run_reports_unhealthy_until_postgres_comes_up() {
    let mut cluster = PgCluster::start();
    cluster.stop();
    let (mut child, port) = spawn_run(&cluster.url());
    let starting = poll(
        &mut child,
        port,
        "/healthz",
        Duration::from_secs(30),
        |_| true,
    );
    assert!(starting.starts_with("HTTP/1.1 503"), "{starting}");
    assert!(starting.contains("starting"), "{starting}");

    cluster.restart();
    poll(&mut child, port, "/healthz", Duration::from_secs(40), |r| {
        r.starts_with("HTTP/1.1 200")
    });
    let migrated = PgServer::psql(&cluster.url(), "SELECT count(*) FROM meshlite.migrations");
    assert_ne!(migrated.trim(), "0");
    let status = terminate(child);
    assert!(status.success(), "exit status {status}");
}
