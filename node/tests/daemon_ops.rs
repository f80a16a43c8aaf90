#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.
//! Operating a running `meshlite run`: certificate expiry made visible, the CLI's store
//! commands going through the daemon's HTTP API, and logs a user can act on.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{Fleet, NodeConfig, NodeProc, metric_value};
use meshlite_fixtures::records::named_id;
use serde_json::{Value, json};

const DAY: u64 = 24 * 3600;

fn mesh_node(fleet: &Fleet, name: &str, not_after: SystemTime) -> NodeConfig {
    let bundle = fleet.issue_until(name, not_after);
    NodeConfig::loopback(name, fleet.root().join("nodes").join(name), Some(bundle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_certificate_shows_in_status_metrics_and_the_log() {
    let fleet = Fleet::new();
    let now = SystemTime::now();
    let soon = NodeProc::start(mesh_node(
        &fleet,
        "soon",
        now + Duration::from_secs(10 * DAY),
    ))
    .await;
    let later = NodeProc::start(mesh_node(
        &fleet,
        "later",
        now + Duration::from_secs(200 * DAY),
    ))
    .await;

    let (_, status) = soon.get("/status").await;
    let cert = &status["certificate"];
    assert_eq!(cert["expiring_soon"], true, "{status}");
    let left = cert["expires_in_s"].as_i64().unwrap();
    assert!((9 * DAY as i64..=10 * DAY as i64).contains(&left), "{cert}");
    let metric = metric_value(&soon.metrics().await, "meshlite_cert_expiry_seconds");
    assert!(
        (9.0 * DAY as f64..=10.0 * DAY as f64).contains(&metric),
        "{metric}"
    );
    // Logged before the ready line, so it is in the log now.
    let log = soon.log();
    assert!(
        log.contains("the node certificate expires in 9 days") && log.contains("fleet renew"),
        "{}",
        soon.log_tail(20)
    );

    let (_, status) = later.get("/status").await;
    assert_eq!(status["certificate"]["expiring_soon"], false, "{status}");
    let metric = metric_value(&later.metrics().await, "meshlite_cert_expiry_seconds");
    assert!(metric > 199.0 * DAY as f64, "{metric}");
    assert!(!later.log().contains("node certificate expires"));
}

/// Runs the CLI on `data`; (success, stdout, stderr).
fn cli(data: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(common::BIN)
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("MESHLITE_DATA")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli_ok(data: &Path, args: &[&str]) -> Value {
    let (ok, stdout, stderr) = cli(data, args);
    assert!(ok, "meshlite {args:?}: {stderr}");
    serde_json::from_str(stdout.trim()).unwrap()
}

fn task(name: &str) -> Value {
    json!({"id": named_id(name), "status": "queued"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_and_summary_commands_go_through_a_running_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = NodeProc::start(NodeConfig::loopback("hub", tmp.path().join("hub"), None)).await;
    let data = node.cfg.data_dir();
    for n in 0..30 {
        node.put("tasks", task(&format!("hub-{n}"))).await;
    }

    // `summary` while the daemon holds the directory: the daemon's answer.
    let summary = cli_ok(&data, &["summary"]);
    assert_eq!(summary, node.get("/summary").await.1);

    // Export through the daemon, import offline into a fresh store.
    let file = tmp.path().join("hub.bundle");
    let f = file.to_str().unwrap();
    let exported = cli_ok(&data, &["bundle", "export", f]);
    assert_eq!(exported["txns"], 30, "{exported}");
    assert_eq!(exported["via"], node.http().to_string());
    assert_eq!(exported["bytes"], std::fs::metadata(&file).unwrap().len());
    let field = tmp.path().join("field");
    cli_ok(
        &field,
        &[
            "init",
            "--schema",
            common::pmoves_schema().to_str().unwrap(),
        ],
    );
    assert_eq!(cli_ok(&field, &["bundle", "import", f])["applied"], 30);

    // The field device writes; its bundle, cut for the hub's summary, imports into the
    // running daemon.
    let row = task("field-1").to_string();
    cli_ok(&field, &["put", "tasks", &row]);
    let hub_summary = tmp.path().join("hub-summary.json");
    std::fs::write(&hub_summary, summary.to_string()).unwrap();
    let back = tmp.path().join("field.bundle");
    let b = back.to_str().unwrap();
    let cut = cli_ok(
        &field,
        &[
            "bundle",
            "export",
            b,
            "--for",
            hub_summary.to_str().unwrap(),
        ],
    );
    assert_eq!(cut["txns"], 1, "only what the hub lacks: {cut}");
    let imported = cli_ok(&data, &["bundle", "import", b]);
    assert_eq!(
        (imported["applied"].clone(), imported["via"].clone()),
        (json!(1), json!(node.http().to_string()))
    );
    assert!(node.record("tasks", &named_id("field-1")).await.is_some());

    // An export through the daemon cut for the field's summary holds nothing it has.
    let field_summary = tmp.path().join("field-summary.json");
    std::fs::write(&field_summary, cli(&field, &["summary"]).1).unwrap();
    let none = tmp.path().join("none.bundle");
    let fs = field_summary.to_str().unwrap();
    assert_eq!(
        cli_ok(
            &data,
            &["bundle", "export", none.to_str().unwrap(), "--for", fs]
        )["txns"],
        0
    );

    // A corrupt bundle is refused by the daemon and writes nothing; the spool file is gone.
    let mut bytes = std::fs::read(&back).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let bad = tmp.path().join("bad.bundle");
    std::fs::write(&bad, &bytes).unwrap();
    let before = node.get("/summary").await.1;
    let (ok, _, stderr) = cli(&data, &["bundle", "import", bad.to_str().unwrap()]);
    assert!(!ok && stderr.contains("400"), "{stderr}");
    assert_eq!(node.get("/summary").await.1, before);
    let leftovers: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("import-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Once the daemon stops, the same commands open the store themselves again.
    let last = node.get("/summary").await.1;
    assert!(node.stop().await.success());
    assert!(
        !data.join("daemon.json").exists(),
        "the daemon removes its address at stop"
    );
    assert_eq!(cli_ok(&data, &["summary"]), last);
    let offline = cli_ok(&data, &["bundle", "export", f]);
    assert_eq!(offline["txns"], 31);
    assert!(offline.get("via").is_none());
}

/// A loopback TCP port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_nats_is_named_with_its_cause_and_repeats_back_off() {
    let tmp = tempfile::tempdir().unwrap();
    let port = closed_port();
    let url = format!("nats://127.0.0.1:{port}");
    let mut cfg = NodeConfig::loopback("lonely", tmp.path().join("lonely"), None);
    cfg.env.push(("NATS_URL".into(), url.clone()));
    let node = NodeProc::start(cfg).await;
    // A fixed observation window, long enough for several reconnect attempts (every 0.1–2 s);
    // the assertions are on what the log says and on a bound of lines, not on timing.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let log = node.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("NATS") || l.contains("nats"))
        .collect();
    let failures: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("cannot connect to NATS"))
        .collect();
    assert!(!failures.is_empty(), "{log}");
    assert!(
        failures[0].contains(&url) && failures[0].contains("refused"),
        "the first failure names the URL and the OS cause: {}",
        failures[0]
    );
    // Logged after 1, 2, 4, 8 failures: at most 5 lines in the window whatever the attempts.
    assert!(
        failures.len() <= 5,
        "repeats must back off:\n{}",
        lines.join("\n")
    );
    // Every NATS warning names the server; none is a bare `IO error`.
    let bare: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("IO error") && !l.contains(&url))
        .collect();
    assert!(bare.is_empty(), "{bare:?}");
    // The daemon keeps serving meanwhile.
    assert_eq!(node.healthz().await.0, hyper::StatusCode::OK);
}

#[test]
fn a_busy_quic_port_is_reported_once() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = Fleet::new();
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut cfg = mesh_node(
        &fleet,
        "busy",
        SystemTime::now() + Duration::from_secs(100 * DAY),
    );
    cfg.quic = busy.local_addr().unwrap();
    cfg.dir = tmp.path().join("busy");
    std::fs::create_dir_all(&cfg.dir).unwrap();
    std::fs::write(cfg.config_path(), cfg.render()).unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("run")
        .arg("--config")
        .arg(cfg.config_path())
        .env_remove("MESHLITE_LISTEN")
        .env_remove("MESHLITE_DATA")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("in use").count(), 1, "{stderr}");
    assert!(
        stderr.contains(&busy.local_addr().unwrap().to_string()),
        "{stderr}"
    );
}
