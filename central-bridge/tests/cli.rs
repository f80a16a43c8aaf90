//! The `meshlite-bridge` binary: dry-run SQL, config errors naming the key, and `run` serving
//! /healthz until SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use meshlite_fixtures::postgres::PgServer;

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

#[test]
fn run_migrates_serves_health_and_stops_on_sigterm() {
    let url = PgServer::shared().database("cli_run");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = bridge()
        .arg("run")
        .env("DATABASE_URL", &url)
        .env("MESHLITE_SCHEMA", schema())
        .env("MESHLITE_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        if let Some(resp) = get(port, "/healthz") {
            break resp;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("bridge exited with {status}: {err}");
        }
        assert!(Instant::now() < deadline, "bridge never served /healthz");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = get(port, "/metrics").unwrap();
    assert!(
        metrics.contains("meshlite_bridge_postgres_up 1"),
        "{metrics}"
    );
    assert!(metrics.contains("meshlite_bridge_tables 10"), "{metrics}");
    let tables = PgServer::psql(
        &url,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
    );
    assert_eq!(tables.trim(), "11", "10 collections + sync_status");

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "bridge ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
}
