//! The commit feed under pressure: a feed that falls behind the store's broadcast counts the
//! lost events, wakes the relay, and keeps publishing to a real nats-server afterwards.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use meshlite_core::Store;
use meshlite_core::store::{EVENT_CHANNEL, OpenOptions, WriteOp};
use meshlite_fixtures::nats::NatsServer;
use meshlite_fixtures::wait::{check, wait_until};
use meshlite_mesh::nats::events::CommitFeed;
use meshlite_mesh::nats::{ChangeEvent, EventStats};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Failure guard only.
const GUARD: Duration = Duration::from_secs(60);

async fn put(store: &Store, id: usize) {
    let value = json!({"id": format!("r{id}"), "n": id});
    let op = WriteOp::Put {
        collection: "jobs".into(),
        value,
        recreate: false,
    };
    store.transact_async(vec![op]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_feed_counts_lost_events_and_keeps_going() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut sub = client.subscribe("supabase.sync.jobs.>").await.unwrap();
    client.flush().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), OpenOptions::default()).unwrap();
    let rx = store.subscribe();
    // Overflow the broadcast before the feed reads anything.
    let overflow = EVENT_CHANNEL + 10;
    for i in 0..overflow {
        put(&store, i).await;
    }

    let stats = Arc::new(EventStats::default());
    let wake = Arc::new(Notify::new());
    let feed = CommitFeed {
        client: Some(client.clone()),
        source: "node-a".into(),
        relay_wake: Some(wake.clone()),
        stats: stats.clone(),
    };
    let cancel = CancellationToken::new();
    let task = tokio::spawn(feed.run(rx, cancel.clone()));
    tokio::time::timeout(GUARD, wake.notified())
        .await
        .expect("relay woken");
    // Let the feed drain the backlog it kept: a write before that would overwrite an unread
    // event and be (rightly) counted as one more lost.
    wait_until("backlog published", GUARD, || {
        let published = stats.published();
        check(
            published >= EVENT_CHANNEL as u64,
            format!("published {published} of {EVENT_CHANNEL}"),
        )
    })
    .await;

    // The feed survives the lag: a later write still becomes an event.
    put(&store, overflow).await;
    let last = format!("r{overflow}");
    let seen = async {
        loop {
            let msg = sub.next().await.unwrap();
            let event: ChangeEvent = serde_json::from_slice(&msg.payload).unwrap();
            if event.id == last {
                return event;
            }
        }
    };
    let event = tokio::time::timeout(GUARD, seen)
        .await
        .expect("event after the lag");
    assert_eq!((event.operation.as_str(), event.local), ("insert", true));
    assert_eq!(stats.lost(), 10, "exactly the overflow is reported lost");
    assert_eq!(stats.published(), EVENT_CHANNEL as u64 + 1);
    cancel.cancel();
    tokio::time::timeout(GUARD, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
