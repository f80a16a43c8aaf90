//! Concurrent clients on loopback under bounded load lose nothing (issue 9, "Tests"): a real
//! `meshlite run` daemon serves [`CLIENTS`] concurrent HTTP clients (tokio tasks, one request
//! per connection) for a bounded number of operations each — inserts (single rows and
//! batches), inserts racing for the same keys, PATCHes of a `counter` column, upserts of shared
//! keys through `/rest/v1`, and increments of one shared counter through `/v1` — then reads
//! everything back and checks:
//!
//! - every acknowledged insert is there exactly once, and nothing unacknowledged is;
//! - each counter equals the increments acknowledged on it;
//! - each raced or upserted key exists once, holding the body of an acknowledged write (on one
//!   node writes are serialized, so the last one is whole);
//! - no answer is a 5xx, and the only refusal is the documented one: 409 with 23505 for a plain
//!   insert of a key another client inserted first.
//!
//! No timing is asserted; the clients' guard only bounds a hang.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{NodeConfig, NodeProc};
use hyper::{Method, StatusCode};
use meshlite_node::httpc;
use serde_json::{Value, json};

/// Concurrent clients.
const CLIENTS: usize = 8;
/// Operations per client.
const STEPS: usize = 60;
/// Keys every client upserts, and keys every client tries to insert plainly.
const SHARED_KEYS: usize = 5;
/// Bounds the whole run (a hang, not a speed check).
const GUARD: Duration = Duration::from_secs(300);

const SCHEMA: &str = r#"
version = 1
strict = true

[collections.items.fields]
client = { type = "integer" }
seq = { type = "integer" }

[collections.counters.fields]
hits = { merge = "counter", type = "integer" }

[collections.shared.fields]
client = { type = "integer" }
n = { type = "integer" }
"#;

/// What one client saw.
#[derive(Default)]
struct Log {
    /// Item ids whose insert was acknowledged.
    inserted: Vec<String>,
    /// Acknowledged PATCH increments of the client's own counter.
    patched: i64,
    /// Acknowledged increments of the shared counter.
    incremented: i64,
    /// Acknowledged bodies per raced or upserted key.
    written: BTreeMap<String, Vec<Value>>,
    /// Answers outside the documented set: (what, status, body).
    unexpected: Vec<(String, String, String)>,
}

struct Client {
    addr: std::net::SocketAddr,
    id: usize,
    log: Log,
}

impl Client {
    async fn send(&mut self, method: Method, path: &str, prefer: &str, body: Value) -> StatusCode {
        let headers = [("prefer", prefer), ("content-type", "application/json")];
        let bytes = Some(body.to_string().into_bytes());
        match httpc::request_with(self.addr, method.clone(), path, &headers, bytes).await {
            Ok(a) => {
                if a.status.is_server_error() {
                    let text = String::from_utf8_lossy(&a.body).into_owned();
                    self.log.unexpected.push((
                        format!("{method} {path}"),
                        a.status.to_string(),
                        text,
                    ));
                }
                a.status
            }
            Err(e) => {
                let what = format!("{method} {path}");
                self.log
                    .unexpected
                    .push((what, "transport".into(), e.to_string()));
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn expect(&mut self, what: &str, status: StatusCode, ok: &[u16]) -> bool {
        let fine = ok.contains(&status.as_u16());
        if !fine && !status.is_server_error() {
            let note = format!("expected one of {ok:?}");
            self.log
                .unexpected
                .push((what.to_owned(), status.to_string(), note));
        }
        fine
    }

    async fn insert(&mut self, step: usize) {
        let c = self.id;
        // Every third insert is a batch of three rows (one transaction).
        let n = if step.is_multiple_of(3) { 3 } else { 1 };
        let rows: Vec<Value> = (0..n)
            .map(|k| json!({"id": format!("i-{c}-{step}-{k}"), "client": c, "seq": step}))
            .collect();
        let ids: Vec<String> = rows
            .iter()
            .map(|r| r["id"].as_str().unwrap().into())
            .collect();
        let s = self
            .send(
                Method::POST,
                "/rest/v1/items",
                "return=minimal",
                json!(rows),
            )
            .await;
        if self.expect("insert", s, &[201]) {
            self.log.inserted.extend(ids);
        }
    }

    async fn raced_insert(&mut self, step: usize) {
        let key = format!("k{}", step % SHARED_KEYS);
        let body = json!({"id": key, "client": self.id, "n": step});
        let s = self
            .send(
                Method::POST,
                "/rest/v1/shared",
                "return=minimal",
                body.clone(),
            )
            .await;
        // 409 (23505) is the documented answer to an insert of a key that exists.
        if self.expect("raced insert", s, &[201, 409]) && s == StatusCode::CREATED {
            self.log.written.entry(key).or_default().push(body);
        }
    }

    async fn patch_counter(&mut self) {
        // The counter is this client's own: setting it to acknowledged+1 is one increment.
        let path = format!("/rest/v1/counters?id=eq.c{}", self.id);
        let body = json!({"hits": self.log.patched + 1});
        let s = self
            .send(Method::PATCH, &path, "return=minimal", body)
            .await;
        if self.expect("patch", s, &[200, 204]) {
            self.log.patched += 1;
        }
    }

    async fn upsert(&mut self, step: usize) {
        let key = format!("s{}", step % SHARED_KEYS);
        let body = json!({"id": key, "client": self.id, "n": step});
        let prefer = "resolution=merge-duplicates,return=minimal";
        let s = self
            .send(Method::POST, "/rest/v1/shared", prefer, body.clone())
            .await;
        if self.expect("upsert", s, &[200, 201]) {
            self.log.written.entry(key).or_default().push(body);
        }
    }

    async fn increment(&mut self) {
        let body = json!({"field": "hits", "by": 1});
        let s = self
            .send(Method::POST, "/v1/counters/total/incr", "", body)
            .await;
        if self.expect("incr", s, &[200]) {
            self.log.incremented += 1;
        }
    }

    async fn run(mut self) -> Log {
        for step in 0..STEPS {
            match step % 4 {
                0 => self.insert(step).await,
                1 => self.patch_counter().await,
                2 => self.upsert(step).await,
                _ => self.increment().await,
            }
            if step.is_multiple_of(6) {
                self.raced_insert(step).await;
            }
        }
        self.log
    }
}

async fn get(addr: std::net::SocketAddr, path: &str) -> Vec<Value> {
    let (status, body) = httpc::request(addr, Method::GET, path, None).await.unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = tmp.path().join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let mut cfg = NodeConfig::loopback("busy", tmp.path().join("node"), None);
    cfg.schema = Some(schema);
    let node = NodeProc::start(cfg).await;
    let addr = node.http();

    // Each client's counter exists before the clients start.
    let counters: Vec<Value> = (0..CLIENTS)
        .map(|c| json!({"id": format!("c{c}"), "hits": 0}))
        .collect();
    let seed = [("content-type", "application/json")];
    let body = Some(json!(counters).to_string().into_bytes());
    let a = httpc::request_with(addr, Method::POST, "/rest/v1/counters", &seed, body)
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");

    let tasks: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let client = Client {
                addr,
                id,
                log: Log::default(),
            };
            tokio::spawn(client.run())
        })
        .collect();
    let mut logs = Vec::new();
    for t in tasks {
        let log = tokio::time::timeout(GUARD, t)
            .await
            .unwrap_or_else(|_| panic!("the clients hang\n{}", node.log_tail(40)))
            .unwrap();
        logs.push(log);
    }

    let unexpected: Vec<_> = logs.iter().flat_map(|l| &l.unexpected).collect();
    assert!(
        unexpected.is_empty(),
        "answers outside the documented set: {unexpected:#?}\n{}",
        node.log_tail(40)
    );

    // Every acknowledged insert exactly once; nothing else.
    let rows = get(addr, "/rest/v1/items?select=id").await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        *seen
            .entry(r["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let acked: BTreeSet<String> = logs
        .iter()
        .flat_map(|l| l.inserted.iter().cloned())
        .collect();
    let acked_count: usize = logs.iter().map(|l| l.inserted.len()).sum();
    assert_eq!(acked.len(), acked_count, "ids are unique per insert");
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        doubled.is_empty(),
        "rows listed more than once: {doubled:?}"
    );
    let present: BTreeSet<String> = seen.into_keys().collect();
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(lost.is_empty(), "acknowledged inserts lost: {lost:?}");
    let extra: Vec<_> = present.difference(&acked).collect();
    assert!(
        extra.is_empty(),
        "rows nobody was told were inserted: {extra:?}"
    );
    let expected_items = CLIENTS
        * (0..STEPS)
            .filter(|s| s.is_multiple_of(4))
            .map(|s| if s.is_multiple_of(3) { 3 } else { 1 })
            .sum::<usize>();
    assert_eq!(acked_count, expected_items, "every insert was acknowledged");

    // Counters equal the acknowledged increments.
    let counters = get(addr, "/rest/v1/counters?select=id,hits&order=id").await;
    let hits: BTreeMap<String, i64> = counters
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["hits"].as_i64().unwrap(),
            )
        })
        .collect();
    for (c, log) in logs.iter().enumerate() {
        assert_eq!(
            hits.get(&format!("c{c}")),
            Some(&log.patched),
            "client {c}'s counter"
        );
        assert_eq!(
            log.patched as usize,
            STEPS / 4,
            "every PATCH was acknowledged"
        );
    }
    let increments: i64 = logs.iter().map(|l| l.incremented).sum();
    assert_eq!(hits.get("total"), Some(&increments), "the shared counter");
    assert_eq!(increments as usize, CLIENTS * STEPS / 4);

    // Raced and upserted keys: once each, holding an acknowledged body.
    let shared = get(addr, "/rest/v1/shared?select=id,client,n").await;
    let mut written: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for log in &logs {
        for (k, bodies) in &log.written {
            written
                .entry(k.clone())
                .or_default()
                .extend(bodies.iter().cloned());
        }
    }
    let ids: Vec<&str> = shared.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let distinct: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(
        ids.len(),
        distinct.len(),
        "shared keys listed twice: {ids:?}"
    );
    assert_eq!(distinct.len(), 2 * SHARED_KEYS, "{ids:?}");
    for row in &shared {
        let key = row["id"].as_str().unwrap();
        let bodies = written
            .get(key)
            .unwrap_or_else(|| panic!("{key}: no acknowledged write"));
        assert!(
            bodies.contains(row),
            "{key} holds {row}, not an acknowledged body"
        );
    }
}
