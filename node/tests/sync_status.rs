//! Sync visibility against a real two-node mesh (`meshlite run` processes over QUIC on
//! loopback): a record written on `a` while its peer `b` is stopped (SIGSTOP) is reported as
//! not synced (`_synced: false`, `b` among `_pending_peers`, `_synced_central: false` with `b`
//! configured as the central replica, pending counts in `/api/sync/status`); once `b` runs
//! again and a sync round completes, the same record reads `_synced: true`, `b` holds it, and
//! the per-peer and per-collection summaries show nothing pending.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use common::{Fleet, GUARD, NodeProc, poll_until, wait_connected};
use hyper::StatusCode;
use serde_json::{Value, json};

async fn sync_status(node: &NodeProc) -> Value {
    let (status, body) = node.get("/api/sync/status").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn synced_record(node: &NodeProc, path: &str) -> Value {
    let (status, body) = node.get(path).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_is_reported_pending_until_the_peer_acknowledges_it() {
    let fleet = Fleet::new();
    let mut b = fleet.node("b");
    b.schema = None;
    let b = NodeProc::start(b).await;
    let (_, health) = b.healthz().await;
    let b_replica = health["replica"].as_str().unwrap().to_owned();

    let mut a = fleet.node("a");
    a.schema = None;
    a.static_peers = vec![b.cfg.peer_addr()];
    a.env
        .push(("MESHLITE_CENTRAL_REPLICAS".into(), b_replica.clone()));
    let a = NodeProc::start(a).await;
    wait_connected(&a, &[&b]).await;

    // b becomes a known peer of a once a sync session completes.
    poll_until("a to record b's first acknowledgement", GUARD, || async {
        let st = sync_status(&a).await;
        match st["peers"].as_array().map(Vec::len) {
            Some(1) => Ok(st),
            _ => Err(st.to_string()),
        }
    })
    .await;

    // Before: b is stopped, so nothing written now can be acknowledged by it.
    b.signal("STOP");
    a.put("notes", json!({ "id": "n1", "text": "hello" })).await;
    let before = synced_record(&a, "/api/sync/records/notes/n1").await;
    assert_eq!(before["text"], "hello");
    assert_eq!(before["_synced"], false, "{before}");
    assert_eq!(before["_pending_peers"], json!([b_replica]), "{before}");
    assert_eq!(before["_synced_peers"], json!([]), "{before}");
    assert_eq!(before["_synced_central"], false, "{before}");
    assert_eq!(before["_synced_at"], Value::Null, "{before}");
    let st = sync_status(&a).await;
    let peer = &st["peers"][0];
    assert_eq!(peer["replica"], b_replica.as_str(), "{st}");
    assert_eq!(peer["central"], true, "{st}");
    assert_eq!(peer["status"], "pending", "{st}");
    assert_eq!(peer["pending_txns"], 1, "{st}");
    assert_eq!(peer["pending_by_collection"], json!({ "notes": 1 }), "{st}");
    let notes = collection(&st, "notes");
    assert_eq!(notes["pending_records"], 1, "{st}");
    assert_eq!(notes["synced"], false, "{st}");

    // After: b runs again; the push (or the next anti-entropy round) delivers the change and
    // the round's acknowledgement reports it held.
    b.signal("CONT");
    let after = poll_until("a to see n1 acknowledged by b", GUARD, || async {
        let r = synced_record(&a, "/api/sync/records/notes/n1").await;
        match r["_synced"] == true {
            true => Ok(r),
            false => Err(r.to_string()),
        }
    })
    .await;
    assert_eq!(after["_synced_peers"], json!([b_replica]), "{after}");
    assert_eq!(after["_pending_peers"], json!([]), "{after}");
    assert_eq!(after["_synced_central"], true, "{after}");
    assert!(
        after["_synced_at"].as_str().unwrap().ends_with('Z'),
        "{after}"
    );
    assert_eq!(b.record("notes", "n1").await.unwrap()["text"], "hello");

    let st = sync_status(&a).await;
    assert_eq!(st["peers"][0]["status"], "synced", "{st}");
    assert_eq!(st["peers"][0]["pending_txns"], 0, "{st}");
    assert_eq!(collection(&st, "notes")["synced"], true, "{st}");
    let listing = synced_record(&a, "/api/sync/records/notes").await;
    assert_eq!(listing.as_array().unwrap().len(), 1, "{listing}");
    assert_eq!(listing[0]["_synced"], true, "{listing}");

    // b's own view of the record it received: a (its origin) holds it.
    let a_replica = a.healthz().await.1["replica"].as_str().unwrap().to_owned();
    let on_b = poll_until("b to know a's acknowledgement", GUARD, || async {
        let r = synced_record(&b, "/api/sync/records/notes/n1").await;
        match r["_synced"] == true {
            true => Ok(r),
            false => Err(r.to_string()),
        }
    })
    .await;
    assert_eq!(on_b["_synced_peers"], json!([a_replica]), "{on_b}");
    assert_eq!(on_b["_synced_central"], Value::Null, "{on_b}");

    let (status, body) = a.get("/api/sync/records/notes/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = a.get("/api/sync/records/bad-name").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

fn collection<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}
