#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.
//! The `meshlite` binary as a user runs it: real processes, real data directories.

use std::path::Path;
use std::process::{Command, Output};

use meshlite_fixtures::records::named_id;
use meshlite_fixtures::wait::{block_until, check};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_meshlite");

fn schema_path() -> String {
    format!(
        "{}/../fixtures/schemas/pmoves.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn run(data: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("MESHLITE_DATA")
        .output()
        .expect("spawn meshlite")
}

/// Runs a command that must succeed; returns stdout.
fn ok(data: &Path, args: &[&str]) -> String {
    let out = run(data, args);
    assert!(
        out.status.success(),
        "meshlite {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs a command that must fail; returns stderr.
fn fails(data: &Path, args: &[&str]) -> String {
    let out = run(data, args);
    assert!(
        !out.status.success(),
        "meshlite {args:?} unexpectedly succeeded"
    );
    assert!(out.stdout.is_empty(), "a failing command printed to stdout");
    String::from_utf8(out.stderr).expect("utf-8 stderr")
}

/// A JSON record whose `id` is a name, with the id as the UUID of that name (`named_id`): the
/// PMOVES tables are keyed by UUIDs.
fn rec(json: &str) -> String {
    let mut v: Value = serde_json::from_str(json).unwrap();
    v["id"] = Value::from(named_id(v["id"].as_str().unwrap()));
    v.to_string()
}

fn json(line: &str) -> Value {
    serde_json::from_str(line.trim()).expect("command printed JSON")
}

#[test]
fn record_commands_print_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["init", "--schema", &schema_path()]);
    let put = json(&ok(
        d,
        &[
            "put",
            "tasks",
            &rec(r#"{"id":"t1","status":"pending","retry_count":0}"#),
        ],
    ));
    assert_eq!(put["status"], "pending");
    let incr = json(&ok(
        d,
        &["incr", "tasks", &named_id("t1"), "retry_count", "3"],
    ));
    assert_eq!(incr["retry_count"], 3);
    let dec = json(&ok(
        d,
        &["incr", "tasks", &named_id("t1"), "retry_count", "-1"],
    ));
    assert_eq!(dec["retry_count"], 2);
    ok(
        d,
        &["put", "tasks", &rec(r#"{"id":"t2","status":"running"}"#)],
    );
    let running = ok(d, &["query", "tasks", "--where", "status=running"]);
    assert_eq!(running.lines().count(), 1);
    assert_eq!(json(running.lines().next().unwrap())["id"], named_id("t2"));
    let limited = ok(d, &["query", "tasks", "--order", "id:desc", "--limit", "1"]);
    assert_eq!(json(&limited)["id"], named_id("t2"));
    let row = json(&ok(
        d,
        &["append", "sensor_data", r#"{"device_id":"pi","t":1.5}"#],
    ));
    assert!(
        row["id"].as_str().is_some_and(|id| id.len() == 36),
        "generated UUIDv7 id"
    );
    ok(d, &["delete", "tasks", &named_id("t1")]);
    assert!(fails(d, &["get", "tasks", &named_id("t1")]).contains("not found"));
    let refused = fails(
        d,
        &["put", "tasks", &rec(r#"{"id":"t1","status":"pending"}"#)],
    );
    assert!(refused.contains("recreate"), "{refused}");
    ok(
        d,
        &[
            "put",
            "tasks",
            &rec(r#"{"id":"t1","status":"pending"}"#),
            "--recreate",
        ],
    );
    assert_eq!(
        json(&ok(d, &["get", "tasks", &named_id("t1")]))["status"],
        "pending"
    );
    let status = json(&ok(d, &["status"]));
    assert_eq!(status["schema_version"], 2);
}

#[test]
fn bad_input_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["init", "--schema", &schema_path()]);
    let before = ok(d, &["summary"]);
    let t9 = named_id("t9");
    for (args, expect) in [
        (vec!["put", "tasks", "{not json"], "invalid JSON"),
        (vec!["put", "tasks", "[1,2]"], "JSON object"),
        (vec!["put", "undeclared", r#"{"id":"x"}"#], "undeclared"),
        (vec!["put", "bad-name", r#"{"id":"x"}"#], "name"),
        (vec!["incr", "tasks", t9.as_str(), "status", "1"], "counter"),
        (
            vec!["append", "tasks", r#"{"id":"x"}"#],
            "document collection",
        ),
        (vec!["query", "tasks", "--where", "nofield"], "FIELD=VALUE"),
    ] {
        let err = fails(d, &args);
        assert!(
            err.to_lowercase().contains(&expect.to_lowercase()),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        ok(d, &["summary"]),
        before,
        "a refused command wrote something"
    );
    let bad_schema = d.join("bad.toml");
    std::fs::write(&bad_schema, "[collections.tasks]\nkind = \"log\"\n").unwrap();
    let err = fails(d, &["init", "--schema", bad_schema.to_str().unwrap()]);
    assert!(err.contains("incompatible"), "{err}");
}

#[test]
fn bundles_sync_two_replicas_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for d in [&a, &b] {
        ok(d, &["init", "--schema", &schema_path()]);
    }
    ok(
        &a,
        &[
            "put",
            "tasks",
            &rec(r#"{"id":"t1","status":"pending","retry_count":0}"#),
        ],
    );
    ok(
        &b,
        &["put", "tasks", &rec(r#"{"id":"t2","status":"queued"}"#)],
    );
    ok(
        &a,
        &["append", "sensor_data", r#"{"id":"s1","device_id":"a"}"#],
    );
    sync_both_ways(dir.path(), &a, &b);
    // Concurrent edits on both sides of the air gap.
    ok(
        &a,
        &["put", "tasks", &rec(r#"{"id":"t1","status":"running"}"#)],
    );
    ok(
        &b,
        &["put", "tasks", &rec(r#"{"id":"t1","status":"completed"}"#)],
    );
    ok(&a, &["incr", "tasks", &named_id("t1"), "retry_count", "2"]);
    ok(&b, &["incr", "tasks", &named_id("t1"), "retry_count", "5"]);
    ok(&b, &["delete", "tasks", &named_id("t2")]);
    ok(
        &a,
        &["put", "tasks", &rec(r#"{"id":"t2","status":"running"}"#)],
    );
    sync_both_ways(dir.path(), &a, &b);
    for d in [&a, &b] {
        let t1 = json(&ok(d, &["get", "tasks", &named_id("t1")]));
        assert_eq!(t1["status"], "running", "running beats other statuses");
        assert_eq!(t1["retry_count"], 7, "increments add up");
        assert!(
            fails(d, &["get", "tasks", &named_id("t2")]).contains("not found"),
            "delete wins"
        );
    }
    for coll in ["tasks", "sensor_data"] {
        assert_eq!(
            ok(&a, &["query", coll]),
            ok(&b, &["query", coll]),
            "{coll} differs"
        );
    }
    assert_eq!(json(&ok(&a, &["summary"])), json(&ok(&b, &["summary"])));
    // Importing the same bundle again changes nothing.
    let again = json(&ok(
        &a,
        &[
            "bundle",
            "import",
            dir.path().join("b2a.bundle").to_str().unwrap(),
        ],
    ));
    assert_eq!(again["applied"], 0);
}

fn sync_both_ways(tmp: &Path, a: &Path, b: &Path) {
    for (from, to, name) in [(a, b, "a2b"), (b, a, "b2a")] {
        let summary = tmp.join(format!("{name}.summary.json"));
        std::fs::write(&summary, ok(to, &["summary"])).unwrap();
        let file = tmp.join(format!("{name}.bundle"));
        let (s, f) = (summary.to_str().unwrap(), file.to_str().unwrap());
        ok(from, &["bundle", "export", f, "--for", s]);
        ok(to, &["bundle", "import", f]);
    }
}

#[test]
fn corrupt_bundles_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for i in 0..50 {
        ok(
            &a,
            &[
                "put",
                "jobs",
                &format!(r#"{{"id":"j{i}","payload":"{}"}}"#, "x".repeat(200)),
            ],
        );
    }
    let file = dir.path().join("all.bundle");
    let f = file.to_str().unwrap();
    ok(&a, &["bundle", "export", f]);
    let good = std::fs::read(&file).unwrap();
    ok(&b, &["init"]); // reads no longer create a store
    let before = ok(&b, &["summary"]);
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        (
            "garbage",
            b"this is not a bundle at all, just some text".repeat(10),
        ),
        ("truncated", good[..good.len() - 7].to_vec()),
        ("half", good[..good.len() / 2].to_vec()),
        ("flipped", flipped),
    ];
    for (what, bytes) in cases {
        std::fs::write(&file, bytes).unwrap();
        let err = fails(&b, &["bundle", "import", f]);
        assert!(err.contains("error:"), "{what}: {err}");
        assert_eq!(
            ok(&b, &["summary"]),
            before,
            "{what}: a corrupt bundle wrote something"
        );
    }
    let missing = fails(
        &b,
        &["bundle", "export", f, "--for", "/nonexistent/summary.json"],
    );
    assert!(missing.contains("/nonexistent/summary.json"), "{missing}");
    std::fs::write(&file, good).unwrap();
    let imported = json(&ok(&b, &["bundle", "import", f]));
    assert_eq!(imported["applied"], 50);
}

/// Reads the daemon's ready line from its stdout.
fn ready_line(child: &mut std::process::Child) -> Value {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    json(&line)
}

/// Starts `meshlite ARGS` with no NATS, fleet, data or HTTP settings from the environment
/// (only `env`); returns the process and its ready line.
fn start_daemon(args: &[&str], env: &[(&str, &str)]) -> (std::process::Child, Value) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for key in [
        "NATS_URL",
        "MESHLITE_FLEET_DIR",
        "MESHLITE_DATA",
        "MESHLITE_HTTP_LISTEN",
    ] {
        cmd.env_remove(key);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = ready_line(&mut child);
    (child, ready)
}

/// Sends SIGTERM and expects a clean exit.
fn stop_daemon(child: &mut std::process::Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "daemon exit status {status}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn run_serves_the_embedded_default_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut child, ready) = start_daemon(
        &["--data", d.to_str().unwrap(), "run"],
        &[("MESHLITE_HTTP_LISTEN", "127.0.0.1:0")],
    );
    assert_eq!(ready["quic"], Value::Null, "no fleet files: no peer port");
    let http: std::net::SocketAddr = ready["http"].as_str().unwrap().parse().unwrap();
    runtime().block_on(async {
        let (status, body) = meshlite_node::httpc::get(http, "/healthz").await.unwrap();
        assert!(status.is_success(), "{body:?}");
        let row = serde_json::json!({"id": "t1", "status": "pending"});
        let (status, _) = meshlite_node::httpc::post_json(http, "/v1/tasks", &row)
            .await
            .unwrap();
        assert!(status.is_success());
    });
    // While the daemon owns the data directory, the CLI is refused with a clear message.
    assert!(fails(d, &["get", "tasks", "t1"]).contains("in use"));
    stop_daemon(&mut child);
    // The acknowledged write is on disk and the directory is free again.
    assert_eq!(json(&ok(d, &["get", "tasks", "t1"]))["status"], "pending");
}

/// The daemon compacts document states in the background: a record updated a few times has its
/// appended changes rewritten as one snapshot without further writes.
#[test]
fn run_compacts_document_states_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("meshlite.toml");
    let data = d.join("data");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata = {:?}\ncompact_interval_seconds = 1\n[http]\nlisten = \"127.0.0.1:0\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let (mut child, ready) = start_daemon(&["run", "--config", config.to_str().unwrap()], &[]);
    let http: std::net::SocketAddr = ready["http"].as_str().unwrap().parse().unwrap();
    runtime().block_on(async {
        for n in 0..5 {
            let row = serde_json::json!({"id": "t1", "n": n});
            let (status, body) = meshlite_node::httpc::post_json(http, "/v1/tasks", &row)
                .await
                .unwrap();
            assert!(status.is_success(), "{body:?}");
        }
    });
    let db = rusqlite::Connection::open_with_flags(
        data.join(meshlite_core::store::DB_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let chunks = || -> i64 {
        db.query_row("SELECT chunks FROM docs WHERE id = 't1'", [], |r| r.get(0))
            .unwrap()
    };
    block_until(
        "the state compacted (no chunks left)",
        std::time::Duration::from_secs(20),
        || {
            let seen = chunks();
            check(seen == 0, format!("chunks: {seen}"))
        },
    );
    drop(db);
    stop_daemon(&mut child);
    let got = json(&ok(&data, &["get", "tasks", "t1"]));
    assert_eq!(got, serde_json::json!({"id": "t1", "n": 4}));
}

#[test]
fn run_refuses_invalid_configuration_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value) in [
        ("SYNC_INTERVAL_SECONDS", "soon"),
        ("SUPABASE_MODE", "hybrid"),
        ("SYNC_TABLES", "bad-name"),
    ] {
        let out = Command::new(BIN)
            .args(["--data", dir.path().to_str().unwrap(), "run"])
            .env(key, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{key}={value} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        let named = if key == "SYNC_TABLES" {
            "sync.tables"
        } else {
            key
        };
        assert!(err.contains(named), "{key}: {err}");
    }
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[transport]\nlisten = \"not an address\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listen"),
        "{out:?}"
    );
}

#[test]
fn append_to_an_undeclared_collection_says_what_to_declare() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = fails(d, &["append", "sensor_data", r#"{"t":1}"#]);
    assert!(
        err.contains("[collections.sensor_data]") && err.contains("init --schema"),
        "{err}"
    );
}

#[test]
fn reads_on_a_directory_without_a_store_say_so_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("mistyped");
    for args in [
        &["get", "tasks", "t1"][..],
        &["query", "tasks"],
        &["status"],
        &["summary"],
    ] {
        let err = fails(&missing, args);
        assert!(err.contains("no store in"), "{args:?}: {err}");
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }
}

#[test]
fn run_on_a_busy_port_creates_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["--data", data.to_str().unwrap(), "run"])
        .env_remove("NATS_URL")
        .env_remove("MESHLITE_FLEET_DIR")
        .env_remove("MESHLITE_CONFIG")
        .env("MESHLITE_HTTP_LISTEN", &addr)
        .output()
        .unwrap();
    assert!(!out.status.success(), "run on a busy port succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "{err}");
    assert!(
        !data.exists(),
        "a failed run left {} behind",
        data.display()
    );
}

#[test]
fn bundle_reports_tell_the_truth_size_and_what_stays_parked() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y, z) = (
        dir.path().join("x"),
        dir.path().join("y"),
        dir.path().join("z"),
    );
    for d in [&x, &y, &z] {
        ok(d, &["init", "--schema", &schema_path()]);
    }
    let bundle = |from: &Path, to: &Path, name: &str| {
        let file = dir.path().join(name);
        let f = file.to_str().unwrap();
        ok(from, &["bundle", "export", f]);
        ok(to, &["bundle", "import", f]);
    };
    // Each replica edits a record the other created, so whichever origin a bundle lists first,
    // one of its transactions depends on one listed after it (parked, then applied).
    ok(
        &x,
        &["put", "tasks", &rec(r#"{"id":"t1","status":"queued"}"#)],
    );
    bundle(&x, &y, "x2y.bundle");
    ok(
        &y,
        &["put", "tasks", &rec(r#"{"id":"t2","status":"queued"}"#)],
    );
    ok(
        &y,
        &["put", "tasks", &rec(r#"{"id":"t1","status":"running"}"#)],
    );
    bundle(&y, &x, "y2x.bundle");
    ok(
        &x,
        &["put", "tasks", &rec(r#"{"id":"t2","status":"failed"}"#)],
    );

    let file = dir.path().join("all.bundle");
    let f = file.to_str().unwrap();
    let exported = json(&ok(&x, &["bundle", "export", f]));
    let size = std::fs::metadata(&file).unwrap().len();
    assert_eq!(exported["bytes"], size, "the size printed is the file's");
    let imported = json(&ok(&z, &["bundle", "import", f]));
    assert_eq!(imported["applied"], 4, "{imported}");
    assert_eq!(imported["parked"], 0, "nothing stays parked: {imported}");
    assert_eq!(ok(&x, &["query", "tasks"]), ok(&z, &["query", "tasks"]));
}

#[test]
fn a_public_listener_without_jwt_secret_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .args(["--data", data.to_str().unwrap(), "run"])
        .env_remove("NATS_URL")
        .env_remove("MESHLITE_FLEET_DIR")
        .env_remove("MESHLITE_CONFIG")
        .env_remove("JWT_SECRET")
        .env_remove("ANON_KEY")
        .env_remove("SERVICE_ROLE_KEY")
        .env("MESHLITE_HTTP_LISTEN", "0.0.0.0:0")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a public listener without a secret started"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.listen") && err.contains("JWT_SECRET") && err.contains("meshlite keys"),
        "{err}"
    );
    assert!(
        !data.exists(),
        "a refused run left {} behind",
        data.display()
    );
    // With a secret it serves, and keyless requests from elsewhere would be refused (unit
    // tests in `auth`); from loopback the embedded default still needs no key.
    let secret = "cli-test-secret-with-at-least-32-characters";
    let (mut child, ready) = start_daemon(
        &["--data", data.to_str().unwrap(), "run"],
        &[
            ("MESHLITE_HTTP_LISTEN", "0.0.0.0:0"),
            ("JWT_SECRET", secret),
        ],
    );
    let port = ready["http"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (status, _) = runtime()
        .block_on(meshlite_node::httpc::get(addr, "/rest/v1/anything"))
        .unwrap();
    assert_eq!(status, 200);
    stop_daemon(&mut child);
}

#[test]
fn keys_prints_anon_and_service_role_keys_for_a_secret() {
    use meshlite_node::auth::{Role, RoleClaim, Verifier, unix_now};
    let dir = tempfile::tempdir().unwrap();
    let secret = "keys-test-secret-with-at-least-32-characters";
    let out = ok(dir.path(), &["keys", "--secret", secret, "--expiry", "600"]);
    let keys = json(&out);
    let verifier = Verifier::new(secret);
    for (field, role) in [
        ("anon_key", Role::Anon),
        ("service_role_key", Role::ServiceRole),
    ] {
        let v = verifier
            .verify(keys[field].as_str().unwrap(), unix_now())
            .unwrap();
        assert_eq!(v.role, RoleClaim::Known(role));
    }
    assert_eq!(
        keys["exp"].as_i64().unwrap() - keys["iat"].as_i64().unwrap(),
        600
    );
    let expired_soon = keys["exp"].as_i64().unwrap() + 31;
    let e = verifier.verify(keys["anon_key"].as_str().unwrap(), expired_soon);
    assert!(e.is_err(), "the key outlives its expiry");
    let err = fails(dir.path(), &["keys", "--secret", "short"]);
    assert!(err.contains("at least 32"), "{err}");
}

#[test]
fn fleet_renew_keeps_the_node_id_and_extends_validity() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fleet = d.join("fleet");
    let f = fleet.to_str().unwrap();
    ok(d, &["fleet", "init", f]);
    let first = json(&ok(d, &["fleet", "issue", f, "edge", "--days", "10"]));
    assert_eq!(first["renewed"], false);
    let renewed = json(&ok(d, &["fleet", "renew", f, "edge", "--days", "400"]));
    assert_eq!(renewed["renewed"], true);
    assert_eq!(
        renewed["node_id"], first["node_id"],
        "renewal keeps the key"
    );
    let (before, after) = (
        first["not_after_unix"].as_u64().unwrap(),
        renewed["not_after_unix"].as_u64().unwrap(),
    );
    assert!(after >= before + 389 * 86_400, "{before} -> {after}");
    // The bundle on disk holds the new certificate, valid for the fleet, with the same id.
    let identity = meshlite_mesh::fleet::load_node_identity(&fleet.join("nodes/edge")).unwrap();
    assert_eq!(
        identity.node_id().to_string(),
        first["node_id"].as_str().unwrap()
    );
    let not_after = identity
        .not_after()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    assert_eq!(not_after.as_secs(), after);
    // Renewing a node that was never issued says so and creates nothing.
    let err = fails(d, &["fleet", "renew", f, "ghost"]);
    assert!(err.contains("no node bundle"), "{err}");
    assert!(!fleet.join("nodes/ghost").exists());
}

#[test]
fn run_help_lists_every_environment_override() {
    let out = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let applied = meshlite_node::config::ENV_OVERRIDES.iter().map(|o| o.name);
    let documented = [
        "MESHLITE_CONFIG",
        "MESHLITE_LOG",
        "MESHLITE_LOG_FORMAT",
        "MESHLITE_DATA",
        "MESHLITE_NAME",
        "MESHLITE_FLEET_DIR",
        "MESHLITE_SCHEMA",
        "MESHLITE_HTTP_LISTEN",
        "MESHLITE_LISTEN",
        "MESHLITE_STATIC_PEERS",
        "MESHLITE_MDNS",
        "SUPABASE_MODE",
        "SYNC_TABLES",
        "SYNC_INTERVAL_SECONDS",
        "SYNC_BATCH_SIZE",
        "NATS_URL",
    ];
    for name in applied.chain(documented) {
        assert!(
            help.contains(name),
            "`run --help` does not list {name}:\n{help}"
        );
    }
}
