//! Static peers: resolution through the system resolver, failures recorded on the peer, and the
//! whole discovery service started and stopped with static and Tailscale sources.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use meshlite_mesh::discovery::static_peers::resolve_all;
use meshlite_mesh::discovery::{Discovery, DiscoveryConfig, LocalNode, PeerKey, PeerTable, Source};
use meshlite_mesh::tasks::ShutdownReport;
use tokio_util::sync::CancellationToken;

/// Failure guard only.
const GUARD: Duration = Duration::from_secs(30);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn entries_resolve_and_failures_are_visible() {
    let table = PeerTable::new(Duration::from_secs(1));
    let entries = vec![
        "127.0.0.1:7400".to_owned(),
        "localhost:7401".into(),
        "no-such-host.invalid:7402".into(),
    ];
    resolve_all(&entries, &table).await;
    assert_eq!(table.len(), 3);

    let ip = table.get(&PeerKey::Addr("127.0.0.1:7400".into())).unwrap();
    assert_eq!(ip.addresses, [addr("127.0.0.1:7400")]);
    assert_eq!(ip.sources, [Source::Static]);
    let named = table.get(&PeerKey::Addr("localhost:7401".into())).unwrap();
    assert!(
        named
            .addresses
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 7401),
        "{named:?}"
    );
    assert!(!named.addresses.is_empty());
    let bad = table
        .get(&PeerKey::Addr("no-such-host.invalid:7402".into()))
        .unwrap();
    assert!(bad.addresses.is_empty());
    assert_eq!(bad.consecutive_errors, 1);
    assert!(bad.last_error.unwrap().contains("no-such-host.invalid"));

    // Static peers never expire.
    assert_eq!(
        table.expire_at(std::time::Instant::now() + Duration::from_secs(3600)),
        0
    );
    assert_eq!(table.len(), 3);
}

fn local() -> LocalNode {
    LocalNode {
        node_id: "aa".repeat(16),
        name: "test-node".into(),
        cluster: "c1".into(),
        quic_port: 7400,
        version: "0.1.0".into(),
        addresses: vec![],
        collections: vec![],
        capabilities: vec![],
    }
}

#[tokio::test]
async fn discovery_service_runs_sources_and_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cli = dir.path().join("tailscale");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/data/tailscale_status.json");
    std::fs::write(
        &cli,
        format!("#!/bin/sh\nexec cat '{}'\n", fixture.display()),
    )
    .unwrap();
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = DiscoveryConfig {
        mdns: false,
        static_peers: vec!["127.0.0.1:7500".into()],
        tailscale_cli: cli,
        ..Default::default()
    };
    let table = PeerTable::new(cfg.peer_expiry());
    let root = CancellationToken::new();
    let discovery = Discovery::start(&cfg, &local(), &table, &root).unwrap();
    let mut changes = table.changes();
    tokio::time::timeout(GUARD, changes.wait_for(|_| table.len() == 4))
        .await
        .unwrap()
        .unwrap();
    let sources: Vec<Source> = table
        .snapshot()
        .iter()
        .flat_map(|r| r.sources.clone())
        .collect();
    assert_eq!(sources.iter().filter(|s| **s == Source::Static).count(), 1);
    assert_eq!(
        sources.iter().filter(|s| **s == Source::Tailscale).count(),
        3
    );
    let report = discovery.shutdown(GUARD).await;
    assert_eq!(
        report,
        ShutdownReport {
            joined: 3,
            crashed: 0,
            aborted: 0
        }
    );
}

#[test]
fn invalid_config_is_refused_by_start() {
    let cfg = DiscoveryConfig {
        static_peers: vec!["missing-port".into()],
        ..Default::default()
    };
    let table = PeerTable::new(Duration::from_secs(1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt.block_on(async {
        Discovery::start(&cfg, &local(), &table, &CancellationToken::new()).unwrap_err()
    });
    assert!(
        err.to_string().starts_with("discovery.static_peers:"),
        "{err}"
    );
}
