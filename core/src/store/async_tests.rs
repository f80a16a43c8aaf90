//! The `_async` reads never run on the async runtime's worker thread.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;

use super::{OpenOptions, Store};

/// With the only read connection taken, a read must wait for it. On a single-threaded runtime
/// the task that gives the connection back can only run if the waiting read left the worker; a
/// read run on the worker would block it for good (the watchdog turns that into a failure).
#[test]
fn a_read_waiting_for_a_connection_leaves_the_worker_free() {
    let dir = TempDir::new().unwrap();
    let opts = OpenOptions {
        read_connections: 1,
        ..Default::default()
    };
    let store = Store::open(dir.path(), opts).unwrap();
    let taken = store.inner.readers.take();
    let (done, outcome) = mpsc::channel();
    let runtime = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async move {
            let reader = store.clone();
            let read = tokio::spawn(async move { reader.summary_async().await });
            tokio::time::sleep(Duration::from_millis(100)).await;
            let waited = !read.is_finished();
            store.inner.readers.give_back(taken);
            let summary = read.await.unwrap().unwrap();
            done.send((waited, summary.txn_count())).unwrap();
            store.close_async().await.unwrap();
        });
    });
    let (waited, count) = outcome
        .recv_timeout(Duration::from_secs(10))
        .expect("the read blocked the runtime's only worker thread");
    assert!(
        waited,
        "the read should have waited for the taken connection"
    );
    assert_eq!(count, 0);
    runtime.join().unwrap();
}
