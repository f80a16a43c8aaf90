//! Tailscale discovery: the recorded `tailscale status --json` fixture, and the real
//! process-spawning path through a fake `tailscale` script that prints it.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshlite_mesh::discovery::tailscale::{TailscaleError, TailscaleSource, TailscaleStatus};
use meshlite_mesh::discovery::{PeerKey, PeerTable, Source};
use tokio_util::sync::CancellationToken;

const PORT: u16 = 7400;
/// Failure guard only: the source reports on its first poll.
const GUARD: Duration = Duration::from_secs(30);

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/data/tailscale_status.json")
}

/// Writes an executable script `tailscale` into `dir` with the given body.
fn fake_cli(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("tailscale");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn printing_fixture(dir: &Path) -> PathBuf {
    let body = format!(
        "[ \"$1 $2\" = \"status --json\" ] || {{ echo \"unexpected args: $*\" >&2; exit 64; }}\nexec cat '{}'",
        fixture().display()
    );
    fake_cli(dir, &body)
}

#[test]
fn fixture_parses_self_and_online_peers() {
    let status = TailscaleStatus::parse(&std::fs::read(fixture()).unwrap()).unwrap();
    assert_eq!(status.backend_state, "Running");
    let me = status.self_device.as_ref().unwrap();
    assert_eq!(me.host_name, "lab-workstation");
    assert_eq!(status.peer.len(), 4);

    let sightings = status.sightings(PORT);
    let mut names: Vec<_> = sightings.iter().map(|s| s.name.clone().unwrap()).collect();
    names.sort();
    assert_eq!(
        names,
        ["DESKTOP-4K2M9QZ", "jetson-orin", "vps-central"],
        "offline rpi5 skipped"
    );
    let jetson = sightings
        .iter()
        .find(|s| s.name.as_deref() == Some("jetson-orin"))
        .unwrap();
    assert_eq!(jetson.source, Source::Tailscale);
    assert_eq!(jetson.key, PeerKey::Addr("100.88.21.5:7400".into()));
    let addrs: Vec<String> = jetson.addresses.iter().map(|a| a.to_string()).collect();
    assert_eq!(
        addrs,
        ["100.88.21.5:7400", "[fd7a:115c:a1e0::d901:1505]:7400"]
    );
}

#[test]
fn stopped_backend_and_null_peers_yield_nothing() {
    let stopped = br#"{"BackendState":"Stopped","Self":null,"Peer":null,"TailscaleIPs":null}"#;
    let status = TailscaleStatus::parse(stopped).unwrap();
    assert!(status.peer.is_empty() && status.sightings(PORT).is_empty());
    assert!(TailscaleStatus::parse(b"not json").is_err());
}

#[tokio::test]
async fn fake_cli_feeds_the_peer_table() {
    let dir = tempfile::tempdir().unwrap();
    let source = TailscaleSource {
        cli: printing_fixture(dir.path()),
        interval: GUARD,
        port: PORT,
    };
    let table = PeerTable::new(Duration::from_secs(300));
    assert_eq!(source.poll_once(&table).await.unwrap(), 3);
    let row = table
        .get(&PeerKey::Addr("100.100.100.1:7400".into()))
        .unwrap();
    assert_eq!(row.name.as_deref(), Some("vps-central"));
    assert_eq!(row.sources, [Source::Tailscale]);

    // The long-running task polls at once and stops on cancel.
    let table = PeerTable::new(Duration::from_secs(300));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(source.run(table.clone(), cancel.clone()));
    let mut changes = table.changes();
    tokio::time::timeout(GUARD, changes.wait_for(|_| table.len() == 3))
        .await
        .unwrap()
        .unwrap();
    cancel.cancel();
    tokio::time::timeout(GUARD, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn absent_cli_disables_the_source_without_error() {
    let dir = tempfile::tempdir().unwrap();
    let cli = dir.path().join("no-such-tailscale");
    let source = TailscaleSource {
        cli: cli.clone(),
        interval: GUARD,
        port: PORT,
    };
    let table = PeerTable::new(Duration::from_secs(300));
    let err = source.poll_once(&table).await.unwrap_err();
    assert!(matches!(err, TailscaleError::CliMissing(p) if p == cli));
    // `run` returns Ok by itself (no cancellation needed).
    let run = source.run(table.clone(), CancellationToken::new());
    tokio::time::timeout(GUARD, run).await.unwrap().unwrap();
    assert!(table.is_empty());
}

#[tokio::test]
async fn failing_cli_reports_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let cli = fake_cli(
        dir.path(),
        "echo 'failed to connect to local tailscaled' >&2; exit 1",
    );
    let source = TailscaleSource {
        cli,
        interval: GUARD,
        port: PORT,
    };
    let err = source
        .poll_once(&PeerTable::new(Duration::from_secs(1)))
        .await
        .unwrap_err();
    match err {
        TailscaleError::Failed { stderr, .. } => assert!(stderr.contains("tailscaled"), "{stderr}"),
        other => panic!("unexpected {other:?}"),
    }
}
