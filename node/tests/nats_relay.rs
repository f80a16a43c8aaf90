//! NATS against a real `nats-server` (started by the test; the test fails if it is missing):
//! the JetStream relay makes two stores with no QUIC path converge, across a server that is down
//! at start and killed mid-test; garbage on the relay subject is rejected without harm;
//! announcements populate the peer table; change events carry the seed's JSON.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use meshlite_core::store::{OpenOptions, Query, WriteOp};
use meshlite_core::{Schema, Store};
use meshlite_fixtures::nats::NatsServer;
use meshlite_fixtures::records::named_id;
use meshlite_fixtures::wait::{check, wait_until};
use meshlite_mesh::discovery::{LocalNode, PeerKey, PeerTable, Source};
use meshlite_mesh::nats::{self, ChangeEvent, NatsConfig, NatsContext, NatsService};
use meshlite_mesh::replica::Replica;
use serde_json::json;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// Failure guard only: convergence normally takes well under a second after each step.
const GUARD: Duration = Duration::from_secs(90);
const CLUSTER: &str = "c1";

struct Node {
    store: Store,
    table: PeerTable,
    service: NatsService,
    local: LocalNode,
    _dir: TempDir,
}

fn schema() -> Schema {
    Schema::from_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/schemas/pmoves.toml"),
    )
    .expect("pmoves schema")
}

fn local(name: &str, cluster: &str) -> LocalNode {
    LocalNode {
        node_id: hex_id(name),
        name: name.into(),
        cluster: cluster.into(),
        quic_port: 7400,
        version: "0.1.0-test".into(),
        addresses: vec!["127.0.0.1:7400".parse().unwrap()],
        collections: vec!["jobs".into()],
        capabilities: vec!["test".into()],
    }
}

fn hex_id(name: &str) -> String {
    format!("{:0<32}", hex::encode(name))
}

fn config(url: &str) -> NatsConfig {
    NatsConfig {
        url: Some(url.into()),
        relay: true,
        announce_interval_secs: 1,
        relay_batch: 64,
        request_timeout_secs: 2,
        ..Default::default()
    }
}

async fn start(cfg: &NatsConfig, local: LocalNode, root: &CancellationToken) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let opts = OpenOptions {
        schema: Some(schema()),
        ..Default::default()
    };
    let store = Store::open(&dir.path().join("data"), opts).unwrap();
    let client = nats::connect(cfg, &local.name)
        .await
        .unwrap()
        .expect("url is set");
    let table = PeerTable::new(Duration::from_secs(300));
    let ctx = NatsContext {
        client,
        local: local.clone(),
        table: table.clone(),
        store: store.clone(),
        cursor_path: dir.path().join("nats-relay.cursor"),
    };
    let service = NatsService::start(cfg, ctx, root).unwrap();
    Node {
        store,
        table,
        service,
        local,
        _dir: dir,
    }
}

fn jobs(store: &Store) -> usize {
    store.query("jobs", &Query::default()).unwrap().len()
}

/// Waits until `store` holds `total` jobs.
async fn wait_jobs(what: &str, store: &Store, total: usize) {
    wait_until(what, GUARD, || {
        let n = jobs(store);
        check(n == total, format!("{n} of {total} jobs"))
    })
    .await;
}

/// One local transaction (the store's blocking API must not be used inside the runtime).
async fn write(store: &Store, op: WriteOp) {
    store.transact_async(vec![op]).await.unwrap();
}

fn put(collection: &str, value: serde_json::Value) -> WriteOp {
    WriteOp::Put {
        collection: collection.into(),
        value,
        recreate: false,
    }
}

async fn write_jobs(store: &Store, prefix: &str, n: usize) {
    for i in 0..n {
        let value =
            json!({"id": named_id(&format!("{prefix}-{i}")), "status": "queued", "priority": i});
        write(store, put("jobs", value)).await;
    }
}

async fn converge(a: &Node, b: &Node, total: usize, step: &str) {
    wait_jobs(&format!("{step}: a has {total}"), &a.store, total).await;
    wait_jobs(&format!("{step}: b has {total}"), &b.store, total).await;
    assert_eq!(
        a.store.summary().unwrap(),
        b.store.summary().unwrap(),
        "{step}: same summaries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_converges_stores_across_server_outages() {
    let mut server = NatsServer::start();
    server.kill(); // NATS is down when the nodes start.
    let root = CancellationToken::new();
    let cfg = config(&server.url());
    let a = start(&cfg, local("node-a", CLUSTER), &root).await;
    let b = start(&cfg, local("node-b", CLUSTER), &root).await;

    write_jobs(&a.store, "a-offline", 5).await;
    server.restart();
    converge(&a, &b, 5, "written before NATS came up").await;

    write_jobs(&a.store, "a", 20).await;
    write_jobs(&b.store, "b", 20).await;
    converge(&a, &b, 45, "concurrent writes").await;

    server.kill();
    write_jobs(&a.store, "a-down", 10).await;
    write_jobs(&b.store, "b-down", 10).await;
    server.restart();
    converge(&a, &b, 65, "written while NATS was killed").await;

    let (sa, sb) = (&a.service.stats().relay, &b.service.stats().relay);
    assert_eq!(
        (sa.published(), sb.published()),
        (35, 30),
        "every local txn acknowledged once"
    );
    assert_eq!((sa.rejected(), sb.rejected()), (0, 0));
    for node in [a, b] {
        let report = node.service.shutdown(GUARD).await;
        assert_eq!((report.crashed, report.aborted), (0, 0), "{report:?}");
    }
}

/// `nats-server` killed again and again (`MESHLITE_FAULT_NATS_KILLS`, default 5) while both
/// nodes write, each kill landing mid-burst: every transaction still reaches the other store,
/// and each is published exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_loses_nothing_across_repeated_server_kills() {
    let kills: usize = std::env::var("MESHLITE_FAULT_NATS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut server = NatsServer::start();
    let root = CancellationToken::new();
    let cfg = config(&server.url());
    let a = start(&cfg, local("node-a", CLUSTER), &root).await;
    let b = start(&cfg, local("node-b", CLUSTER), &root).await;
    let mut total = 0;
    for round in 0..kills {
        // The kill lands while both nodes are writing.
        let (pa, pb) = (format!("a-{round}"), format!("b-{round}"));
        let (wa, wb) = (write_jobs(&a.store, &pa, 8), write_jobs(&b.store, &pb, 8));
        let kill = async {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            server.kill();
        };
        tokio::join!(wa, wb, kill);
        write_jobs(&a.store, &format!("a-down-{round}"), 2).await;
        server.restart();
        total += 8 + 8 + 2;
    }
    converge(&a, &b, total, "after repeated nats-server kills").await;
    let (sa, sb) = (&a.service.stats().relay, &b.service.stats().relay);
    assert_eq!(
        (sa.published(), sb.published()),
        ((kills * 10) as u64, (kills * 8) as u64),
        "every local txn published once"
    );
    assert_eq!((sa.rejected(), sb.rejected()), (0, 0));
    eprintln!("{kills} nats-server kills mid-write: {total} transactions, none lost");
    for node in [a, b] {
        let report = node.service.shutdown(GUARD).await;
        assert_eq!((report.crashed, report.aborted), (0, 0), "{report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_cursor_survives_a_node_restart() {
    let server = NatsServer::start();
    let root = CancellationToken::new();
    let cfg = config(&server.url());
    let a = start(&cfg, local("node-a", CLUSTER), &root).await;
    let b = start(&cfg, local("node-b", CLUSTER), &root).await;
    write_jobs(&a.store, "a", 3).await;
    converge(&a, &b, 3, "first batch").await;

    // Stop A's NATS side, write, and start it again on the same store and cursor file.
    a.service.shutdown(GUARD).await;
    write_jobs(&a.store, "a-stopped", 4).await;
    let client = nats::connect(&cfg, "node-a").await.unwrap().unwrap();
    let ctx = NatsContext {
        client,
        local: a.local.clone(),
        table: a.table.clone(),
        store: a.store.clone(),
        cursor_path: a._dir.path().join("nats-relay.cursor"),
    };
    let restarted = NatsService::start(&cfg, ctx, &root).unwrap();
    wait_jobs("b gets what a wrote while stopped", &b.store, 7).await;
    assert_eq!(
        restarted.stats().relay.published(),
        4,
        "only txns after the cursor go out"
    );
    restarted.shutdown(GUARD).await;
    b.service.shutdown(GUARD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_relay_subject_is_rejected_without_harm() {
    let server = NatsServer::start();
    let root = CancellationToken::new();
    let cfg = config(&server.url());
    let a = start(&cfg, local("node-a", CLUSTER), &root).await;
    let b = start(&cfg, local("node-b", CLUSTER), &root).await;
    // The relay created the stream once a round trip works.
    write_jobs(&b.store, "warmup", 1).await;
    converge(&a, &b, 1, "warm-up").await;

    let raw = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(raw);
    let garbage: [&[u8]; 3] = [b"", b"\xff\xff\xff\xff not a txn", &[0u8; 4096]];
    for g in garbage {
        js.publish("meshlite.txn.c1.evil", g.to_vec().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    write_jobs(&b.store, "after-garbage", 2).await;
    converge(&a, &b, 3, "valid txns after garbage").await;
    wait_until("garbage terminated", GUARD, || {
        let rejected = a.service.stats().relay.rejected();
        check(rejected == 3, format!("rejected: {rejected}"))
    })
    .await;
    assert_eq!(b.service.stats().relay.rejected(), 3);
    for node in [a, b] {
        let report = node.service.shutdown(GUARD).await;
        assert_eq!(
            (report.crashed, report.aborted, report.joined),
            (0, 0, 5),
            "{report:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_populate_the_peer_table() {
    let server = NatsServer::start();
    let root = CancellationToken::new();
    let cfg = NatsConfig {
        relay: false,
        events: false,
        ..config(&server.url())
    };
    let a = start(&cfg, local("node-a", CLUSTER), &root).await;

    let raw = async_nats::connect(server.url()).await.unwrap();
    for junk in ["{", "[]", r#"{"node_id": 7}"#] {
        raw.publish("mesh.node.announce.v1", junk.into())
            .await
            .unwrap();
    }
    let foreign = start(&cfg, local("node-x", "other-cluster"), &root).await;
    let b = start(&cfg, local("node-b", CLUSTER), &root).await;

    let b_key = PeerKey::Node(b.local.node_id.parse().unwrap());
    wait_until("a learns b", GUARD, || {
        check(
            a.table.get(&b_key).is_some(),
            format!("{:#?}", a.table.snapshot()),
        )
    })
    .await;
    let row = a.table.get(&b_key).unwrap();
    assert_eq!(row.sources, [Source::Nats]);
    assert_eq!(row.name.as_deref(), Some("node-b"));
    assert_eq!(row.addresses, ["127.0.0.1:7400".parse().unwrap()]);
    assert_eq!(row.collections, ["jobs"]);
    assert_eq!(row.version.as_deref(), Some("0.1.0-test"));
    // Foreign announcements were published before b's; by now they were seen and ignored.
    let ids: Vec<_> = a
        .table
        .snapshot()
        .into_iter()
        .filter_map(|r| r.node_id)
        .collect();
    assert_eq!(
        ids,
        [b.local
            .node_id
            .parse::<meshlite_mesh::fleet::NodeId>()
            .unwrap()],
        "neither ourselves nor the other cluster"
    );
    assert!(foreign.table.get(&b_key).is_none());
    for node in [a, b, foreign] {
        let report = node.service.shutdown(GUARD).await;
        assert_eq!(
            (report.crashed, report.aborted, report.joined),
            (0, 0, 2),
            "{report:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_events_carry_the_seed_shape() {
    let server = NatsServer::start();
    let root = CancellationToken::new();
    let cfg = NatsConfig {
        announce: false,
        ..config(&server.url())
    };
    let raw = async_nats::connect(server.url()).await.unwrap();
    let mut events = raw.subscribe("supabase.sync.>").await.unwrap();
    raw.flush().await.unwrap();
    let a = start(&cfg, local("node-a", CLUSTER), &root).await;
    let b = start(&cfg, local("node-b", CLUSTER), &root).await;

    write(
        &a.store,
        put("jobs", json!({"id": named_id("j1"), "status": "queued"})),
    )
    .await;
    write(
        &a.store,
        put("jobs", json!({"id": named_id("j1"), "status": "running"})),
    )
    .await;
    write(
        &a.store,
        WriteOp::Delete {
            collection: "jobs".into(),
            id: named_id("j1"),
        },
    )
    .await;
    let row = json!({"id": "m1", "device": "pi5", "cpu": 0.5});
    write(
        &a.store,
        WriteOp::Append {
            collection: "device_metrics".into(),
            value: row,
        },
    )
    .await;

    // Until a's 4 local events and b's event for the relayed append (the last txn) arrived.
    let mut got = Vec::new();
    let done = |got: &Vec<(String, ChangeEvent)>| {
        got.iter().filter(|(_, e)| e.source == "node-a").count() == 4
            && got
                .iter()
                .any(|(s, e)| e.source == "node-b" && s.ends_with(".append"))
    };
    let collect = async {
        while !done(&got) {
            let msg = events.next().await.expect("subscription open");
            let event: ChangeEvent =
                serde_json::from_slice(&msg.payload).expect("valid JSON event");
            got.push((msg.subject.to_string(), event));
        }
    };
    tokio::time::timeout(GUARD, collect)
        .await
        .expect("a's local events and b's relayed ones");

    let from =
        |source: &str| -> Vec<_> { got.iter().filter(|(_, e)| e.source == source).collect() };
    let (on_a, on_b) = (from("node-a"), from("node-b"));
    let subjects: Vec<&str> = on_a.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "supabase.sync.jobs.insert",
            "supabase.sync.jobs.update",
            "supabase.sync.jobs.delete",
            "supabase.sync.device_metrics.append",
        ]
    );
    assert!(on_a.iter().all(|(_, e)| e.local) && on_b.iter().all(|(_, e)| !e.local));
    assert!(
        !on_b.is_empty(),
        "remote changes are published by the node that applied them"
    );

    let (_, update) = on_a[1];
    assert_eq!(
        (
            update.table.as_str(),
            update.operation.as_str(),
            update.id.as_str()
        ),
        ("jobs", "update", named_id("j1").as_str())
    );
    assert_eq!(update.data.as_ref().unwrap()["status"], "running");
    assert_eq!(update.data.as_ref().unwrap()["id"], named_id("j1"));
    assert!(
        update.timestamp.ends_with('Z') && update.timestamp.contains('T'),
        "{}",
        update.timestamp
    );
    assert_eq!(on_a[2].1.data, None, "deletes carry no row");
    assert_eq!(on_a[3].1.data.as_ref().unwrap()["device"], "pi5");
    assert_eq!(a.service.stats().events.lost(), 0);
    let _ = (
        a.service.shutdown(GUARD).await,
        b.service.shutdown(GUARD).await,
    );
}

#[test]
fn store_adapter_reports_local_head_and_txns() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            OpenOptions {
                schema: Some(schema()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(Replica::local_head(&store).await.unwrap(), 0);
        write_jobs(&store, "x", 3).await;
        assert_eq!(Replica::local_head(&store).await.unwrap(), 3);
        let me = store.replica_id();
        let batch = store.load_txns(vec![(me, 2..=3)], 1 << 20).await.unwrap();
        let seqs: Vec<u64> = batch.ids.iter().map(|id| id.seq).collect();
        assert_eq!((seqs, batch.rest.is_empty()), (vec![2, 3], true));
    });
}
