//! The PMOVES seed scenarios on three replicas (three data directories) exchanging transactions
//! with `txns_for` + `Txn::decode` + `apply_remote`, the same path the sync protocol uses.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::path::PathBuf;

use meshlite_core::store::{OpenOptions, Query, Store, WriteOp};
use meshlite_core::{Schema, Txn};
use serde_json::{Value, json};
use tempfile::TempDir;

// Record ids: the PMOVES tables are keyed by UUIDs (`key_type = "uuid"`).
const T1: &str = "0190b6a2-0000-7000-8000-0000000000a1";
const T: &str = "0190b6a2-0000-7000-8000-0000000000a2";
const J: &str = "0190b6a2-0000-7000-8000-0000000000b1";
const W: &str = "0190b6a2-0000-7000-8000-0000000000c1";

fn pmoves() -> Schema {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/schemas/pmoves.toml");
    Schema::from_file(&path).unwrap()
}

struct Fleet {
    _dirs: Vec<TempDir>,
    stores: Vec<Store>,
}

impl Fleet {
    fn new(n: usize) -> Fleet {
        let dirs: Vec<TempDir> = (0..n).map(|_| TempDir::new().unwrap()).collect();
        let stores = dirs
            .iter()
            .map(|d| {
                Store::open(
                    d.path(),
                    OpenOptions {
                        schema: Some(pmoves()),
                        ..Default::default()
                    },
                )
                .unwrap()
            })
            .collect();
        Fleet {
            _dirs: dirs,
            stores,
        }
    }

    /// Sends `to` everything `from` holds and `to` lacks.
    fn push(&self, from: usize, to: usize) {
        let (a, b) = (&self.stores[from], &self.stores[to]);
        let want = a.summary().unwrap().missing_from(&b.summary().unwrap());
        let batch = a.txns_for(&want, usize::MAX).unwrap();
        assert!(!batch.more && batch.pruned.is_empty());
        let txns = batch.txns.iter().map(|t| Txn::decode(t).unwrap()).collect();
        let report = b.apply_remote(txns).unwrap();
        assert!(report.rejected.is_empty(), "{report:?}");
    }

    /// Full exchange between every pair, then checks that all replicas agree.
    fn sync_all(&self) {
        for from in 0..self.stores.len() {
            for to in 0..self.stores.len() {
                if from != to {
                    self.push(from, to);
                }
            }
        }
        let first = self.stores[0].summary().unwrap();
        for s in &self.stores {
            assert_eq!(s.summary().unwrap(), first);
        }
    }

    fn get_all(&self, collection: &str, id: &str) -> Vec<Option<Value>> {
        self.stores
            .iter()
            .map(|s| s.get(collection, id).unwrap())
            .collect()
    }

    /// The value on every replica, asserting they agree.
    fn agreed(&self, collection: &str, id: &str) -> Option<Value> {
        let all = self.get_all(collection, id);
        assert!(
            all.windows(2).all(|w| w[0] == w[1]),
            "replicas disagree: {all:?}"
        );
        all.into_iter().next().flatten()
    }
}

#[test]
fn concurrent_status_edits_running_wins() {
    let f = Fleet::new(3);
    f.stores[0]
        .put(
            "tasks",
            json!({"id": T1, "status": "pending", "title": "build"}),
        )
        .unwrap();
    f.sync_all();
    f.stores[0]
        .put("tasks", json!({"id": T1, "status": "completed"}))
        .unwrap();
    f.stores[1]
        .put("tasks", json!({"id": T1, "status": "running"}))
        .unwrap();
    f.stores[2]
        .put("tasks", json!({"id": T1, "status": "failed"}))
        .unwrap();
    f.sync_all();
    let t = f.agreed("tasks", T1).unwrap();
    assert_eq!(t["status"], json!("running"));
    assert_eq!(t["title"], json!("build"));
    let running = Query {
        filters: vec![("status".into(), json!("running"))],
        ..Default::default()
    };
    for s in &f.stores {
        assert_eq!(s.query("tasks", &running).unwrap().len(), 1);
    }
}

#[test]
fn concurrent_increments_sum() {
    let f = Fleet::new(3);
    f.stores[0]
        .put("jobs", json!({"id": J, "retry_count": 1}))
        .unwrap();
    f.sync_all();
    for (i, s) in f.stores.iter().enumerate() {
        for _ in 0..=i {
            s.increment("jobs", J, "retry_count", 10).unwrap();
        }
    }
    f.sync_all();
    assert_eq!(f.agreed("jobs", J).unwrap()["retry_count"], json!(1 + 60));
}

#[test]
fn concurrent_delete_and_update_is_deleted_everywhere() {
    let f = Fleet::new(3);
    f.stores[0]
        .put(
            "workers",
            json!({"id": W, "status": "idle", "hostname": "pi5"}),
        )
        .unwrap();
    f.sync_all();
    f.stores[0].delete("workers", W).unwrap();
    f.stores[1]
        .put("workers", json!({"id": W, "status": "running"}))
        .unwrap();
    f.stores[2]
        .increment("workers", W, "jobs_completed", 1)
        .unwrap();
    f.sync_all();
    assert_eq!(f.agreed("workers", W), None);
    // A late update on a replica that already saw the delete is refused locally...
    assert!(
        f.stores[1]
            .put("workers", json!({"id": W, "status": "busy"}))
            .is_err()
    );
    // ...and an explicit re-create starts a fresh incarnation that wins everywhere.
    f.stores[2]
        .recreate("workers", json!({"id": W, "status": "idle"}))
        .unwrap();
    f.sync_all();
    assert_eq!(
        f.agreed("workers", W).unwrap(),
        json!({"id": W, "status": "idle"})
    );
}

#[test]
fn max_and_min_converge() {
    let f = Fleet::new(3);
    f.stores[0]
        .put(
            "jobs",
            json!({"id": J, "updated_at": "2024-05-01T00:00:00Z", "created_at": "2024-05-01T00:00:00Z"}),
        )
        .unwrap();
    f.sync_all();
    let edits = [
        ("2024-05-03T00:00:00Z", "2024-04-30T00:00:00Z"),
        ("2024-05-02T00:00:00Z", "2024-04-01T00:00:00Z"),
        ("2024-05-09T00:00:00Z", "2024-04-15T00:00:00Z"),
    ];
    for (s, (up, cr)) in f.stores.iter().zip(edits) {
        s.put("jobs", json!({"id": J, "updated_at": up, "created_at": cr}))
            .unwrap();
    }
    f.sync_all();
    let j = f.agreed("jobs", J).unwrap();
    assert_eq!(
        (j["updated_at"].as_str(), j["created_at"].as_str()),
        (Some("2024-05-09T00:00:00Z"), Some("2024-04-01T00:00:00Z"))
    );
}

#[test]
fn concurrent_text_edits_merge() {
    let f = Fleet::new(3);
    f.stores[0]
        .put("tasks", json!({"id": T, "notes": "check GPU"}))
        .unwrap();
    f.sync_all();
    f.stores[0]
        .put("tasks", json!({"id": T, "notes": "Please check GPU"}))
        .unwrap();
    f.stores[1]
        .put("tasks", json!({"id": T, "notes": "check GPU temps"}))
        .unwrap();
    f.stores[2]
        .put("tasks", json!({"id": T, "notes": "check the GPU"}))
        .unwrap();
    f.sync_all();
    assert_eq!(
        f.agreed("tasks", T).unwrap()["notes"],
        json!("Please check the GPU temps")
    );
}

#[test]
fn telemetry_logs_replicate_as_a_grow_only_set() {
    let f = Fleet::new(3);
    for (i, s) in f.stores.iter().enumerate() {
        let ops = (0..5)
            .map(|n| WriteOp::Append {
                collection: "sensor_data".into(),
                value: json!({"device_id": format!("d{i}"), "n": n}),
            })
            .collect();
        s.transact(ops).unwrap();
    }
    f.sync_all();
    let all: Vec<Vec<Value>> = f
        .stores
        .iter()
        .map(|s| s.query("sensor_data", &Query::default()).unwrap())
        .collect();
    assert_eq!(all[0].len(), 15);
    assert!(all.windows(2).all(|w| w[0] == w[1]));
    let d1 = Query {
        filters: vec![("device_id".into(), json!("d1"))],
        ..Default::default()
    };
    assert_eq!(f.stores[2].query("sensor_data", &d1).unwrap().len(), 5);
}
