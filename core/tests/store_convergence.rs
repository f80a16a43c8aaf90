//! Convergence property test: 2–5 replicas (real stores in temp dirs) run random transactions of
//! every op kind and policy, and exchange them with random loss, duplication and delivery order.
//! After a final anti-entropy round every replica must show identical rows, equal to a reference
//! model for counters (sum), max, min, priority among concurrent writes, and log rows (smallest
//! transaction id wins). Throughout, no replica may show part of a multi-record transaction.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::collections::{BTreeMap, BTreeSet};

use meshlite_core::store::{OpenOptions, Query, Store, WriteError, WriteOp};
use meshlite_core::{Op, Schema, Txn, TxnId};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tempfile::TempDir;

const SCHEMA: &str = r#"
version = 1
[collections.d.fields]
c = { merge = "counter" }
hi = { merge = "max" }
lo = { merge = "min" }
st = { merge = "priority", order = ["s0", "s1", "s2", "s3"] }
tx = { merge = "text" }
[collections.z]
[collections.logs]
kind = "log"
[collections.marks]
kind = "log"
"#;

const STATUS: [&str; 4] = ["s0", "s1", "s2", "s3"];

#[derive(Clone, Debug)]
enum Spec {
    Put {
        id: u8,
        v: Option<u8>,
        hi: Option<i64>,
        lo: Option<i64>,
        st: Option<u8>,
        tx: Option<String>,
    },
    Inc {
        id: u8,
        by: i64,
    },
    Delete {
        id: u8,
    },
    Recreate {
        id: u8,
        v: u8,
    },
    Append {
        id: Option<u8>,
        n: u8,
    },
    /// Marks several `z` records and appends `logs` rows to `marks`, all tagged by the txn.
    Mark {
        ids: BTreeSet<u8>,
        logs: u8,
    },
}

#[derive(Clone, Debug)]
enum Action {
    Local { replica: usize, specs: Vec<Spec> },
    Deliver { from: usize, to: usize, seed: u64 },
}

fn spec() -> impl Strategy<Value = Spec> {
    let id = 0u8..4;
    prop_oneof![
        4 => (id.clone(), proptest::option::of(0u8..3), proptest::option::of(-50i64..50), proptest::option::of(-50i64..50),
              proptest::option::of(0u8..4), proptest::option::of("[ab]{0,4}"))
            .prop_map(|(id, v, hi, lo, st, tx)| Spec::Put { id, v, hi, lo, st, tx }),
        3 => (id.clone(), -5i64..6).prop_map(|(id, by)| Spec::Inc { id, by }),
        1 => id.clone().prop_map(|id| Spec::Delete { id }),
        1 => (id, 0u8..3).prop_map(|(id, v)| Spec::Recreate { id, v }),
        2 => (proptest::option::of(0u8..4), 0u8..100).prop_map(|(id, n)| Spec::Append { id, n }),
        2 => (proptest::collection::btree_set(0u8..4, 1..4), 0u8..3).prop_map(|(ids, logs)| Spec::Mark { ids, logs }),
    ]
}

fn actions(n: usize) -> impl Strategy<Value = Vec<Action>> {
    let local = (0..n, proptest::collection::vec(spec(), 1..4))
        .prop_map(|(replica, specs)| Action::Local { replica, specs });
    let deliver =
        (0..n, 0..n, any::<u64>()).prop_map(|(from, to, seed)| Action::Deliver { from, to, seed });
    proptest::collection::vec(prop_oneof![3 => local, 2 => deliver], 5..30)
}

/// A committed local transaction, for the model.
struct Record {
    txn: Txn,
    specs: Vec<Spec>,
    tag: String,
}

struct World {
    _dirs: Vec<TempDir>,
    stores: Vec<Store>,
    committed: Vec<Record>,
}

impl World {
    fn new(n: usize) -> World {
        let dirs: Vec<TempDir> = (0..n).map(|_| TempDir::new().unwrap()).collect();
        let schema = Schema::from_toml(SCHEMA).unwrap();
        let stores = dirs
            .iter()
            .map(|d| {
                let opts = OpenOptions {
                    schema: Some(schema.clone()),
                    doc_cache: 3,
                    read_connections: 1,
                    ..Default::default()
                };
                Store::open(d.path(), opts).unwrap()
            })
            .collect();
        World {
            _dirs: dirs,
            stores,
            committed: Vec::new(),
        }
    }

    fn local(&mut self, replica: usize, specs: Vec<Spec>) {
        let store = &self.stores[replica];
        let tag = format!("t{}_{}", replica, self.committed.len());
        let ops: Vec<WriteOp> = specs.iter().flat_map(|s| write_ops(s, &tag)).collect();
        match store.transact(ops) {
            Ok(c) => {
                let own = [(c.txn.origin, c.txn.seq..=c.txn.seq)];
                let txn = Txn::decode(&store.txns_for(&own, usize::MAX).unwrap().txns[0]).unwrap();
                self.committed.push(Record { txn, specs, tag });
            }
            Err(e) => assert!(
                matches!(
                    e,
                    WriteError::Deleted { .. }
                        | WriteError::NotFound { .. }
                        | WriteError::Exists { .. }
                ),
                "unexpected local error {e}"
            ),
        }
    }

    /// Sends a random subset of what `to` lacks, in random order and chunks, with duplicates.
    fn deliver(&self, from: usize, to: usize, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let (a, b) = (&self.stores[from], &self.stores[to]);
        let want = a.summary().unwrap().missing_from(&b.summary().unwrap());
        let mut txns: Vec<Txn> = a
            .txns_for(&want, usize::MAX)
            .unwrap()
            .txns
            .iter()
            .map(|t| Txn::decode(t).unwrap())
            .collect();
        txns.retain(|_| rng.random_bool(0.7));
        let dups: Vec<Txn> = txns
            .iter()
            .filter(|_| rng.random_bool(0.2))
            .cloned()
            .collect();
        txns.extend(dups);
        txns.shuffle(&mut rng);
        while !txns.is_empty() {
            let n = rng.random_range(1..=txns.len());
            let report = b.apply_remote(txns.drain(..n).collect()).unwrap();
            assert!(report.rejected.is_empty(), "{report:?}");
            self.check_atomic(to);
        }
    }

    /// Every tagged multi-record transaction is visible entirely or not at all.
    fn check_atomic(&self, replica: usize) {
        let s = &self.stores[replica];
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for z in s.query("z", &Query::default()).unwrap() {
            for tag in z["marks"].as_object().into_iter().flat_map(|m| m.keys()) {
                *seen.entry(tag.clone()).or_default() += 1;
            }
        }
        for row in s.query("marks", &Query::default()).unwrap() {
            *seen
                .entry(row["tag"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        for r in &self.committed {
            let full = mark_parts(&r.specs);
            let got = seen.get(&r.tag).copied().unwrap_or(0);
            assert!(
                got == 0 || got == full,
                "replica {replica} shows {got} of {full} parts of {}",
                r.tag
            );
        }
    }

    /// Anti-entropy until every replica holds everything.
    fn converge(&self) {
        let mut rounds = 0;
        while !self.converged() {
            rounds += 1;
            assert!(rounds < 100, "no convergence");
            for from in 0..self.stores.len() {
                for to in 0..self.stores.len() {
                    if from != to {
                        let (a, b) = (&self.stores[from], &self.stores[to]);
                        let want = a.summary().unwrap().missing_from(&b.summary().unwrap());
                        let batch = a.txns_for(&want, 2048).unwrap();
                        let txns = batch.txns.iter().map(|t| Txn::decode(t).unwrap()).collect();
                        assert!(b.apply_remote(txns).unwrap().rejected.is_empty());
                    }
                }
            }
        }
        let first = self.stores[0].summary().unwrap();
        assert_eq!(first.txn_count(), self.committed.len() as u64);
        for s in &self.stores {
            assert_eq!(s.status().unwrap().parked, 0);
        }
    }

    fn converged(&self) -> bool {
        let first = self.stores[0].summary().unwrap();
        self.stores.iter().all(|s| s.summary().unwrap() == first)
            && first.txn_count() == self.committed.len() as u64
    }
}

/// How many visible parts a transaction's marks have: distinct marked records plus log rows.
fn mark_parts(specs: &[Spec]) -> usize {
    let mut ids: BTreeSet<u8> = BTreeSet::new();
    let mut logs = 0;
    for s in specs {
        if let Spec::Mark { ids: i, logs: l } = s {
            ids.extend(i);
            logs += *l as usize;
        }
    }
    ids.len() + logs
}

fn write_ops(spec: &Spec, tag: &str) -> Vec<WriteOp> {
    let put = |value: Value, recreate| WriteOp::Put {
        collection: "d".into(),
        value,
        recreate,
    };
    match spec {
        Spec::Put {
            id,
            v,
            hi,
            lo,
            st,
            tx,
        } => {
            let mut m = serde_json::Map::new();
            m.insert("id".into(), json!(format!("d{id}")));
            let fields = [
                ("v", v.map(|v| json!({"k": v}))),
                ("hi", hi.map(Value::from)),
                ("lo", lo.map(Value::from)),
            ];
            let more = [
                ("st", st.map(|s| json!(STATUS[s as usize]))),
                ("tx", tx.clone().map(Value::from)),
            ];
            for (k, val) in fields.into_iter().chain(more) {
                if let Some(val) = val {
                    m.insert(k.into(), val);
                }
            }
            vec![put(Value::Object(m), false)]
        }
        Spec::Inc { id, by } => vec![WriteOp::Increment {
            collection: "d".into(),
            id: format!("d{id}"),
            field: "c".into(),
            by: *by,
        }],
        Spec::Delete { id } => vec![WriteOp::Delete {
            collection: "d".into(),
            id: format!("d{id}"),
        }],
        Spec::Recreate { id, v } => vec![put(json!({"id": format!("d{id}"), "v": {"r": v}}), true)],
        Spec::Append { id, n } => {
            let mut row = json!({"n": n});
            if let Some(id) = id {
                row["id"] = json!(format!("a{id}"));
            }
            vec![WriteOp::Append {
                collection: "logs".into(),
                value: row,
            }]
        }
        Spec::Mark { ids, logs } => {
            let marks = ids.iter().map(|i| WriteOp::Put {
                collection: "z".into(),
                value: json!({"id": format!("z{i}"), "marks": {tag: true}}),
                recreate: false,
            });
            let rows = (0..*logs).map(|i| WriteOp::Append {
                collection: "marks".into(),
                value: json!({"tag": tag, "i": i}),
            });
            marks.chain(rows).collect()
        }
    }
}

/// What the model expects of one document record.
#[derive(Default)]
struct Expect {
    incarnation: u32,
    deleted: bool,
    c: Option<i64>,
    hi: Option<i64>,
    lo: Option<i64>,
    st: BTreeSet<&'static str>,
}

fn model_docs(committed: &[Record]) -> BTreeMap<String, Expect> {
    let mut out: BTreeMap<String, Expect> = BTreeMap::new();
    let doc_ops = |r: &Record| {
        let ops: Vec<Op> = r.txn.ops.clone();
        let specs: Vec<Spec> = r
            .specs
            .iter()
            .flat_map(|s| vec![s.clone(); write_ops(s, "").len()])
            .collect();
        ops.into_iter()
            .zip(specs)
            .filter(|(op, _)| op.collection() == "d")
            .collect::<Vec<_>>()
    };
    for r in committed {
        for (op, _) in doc_ops(r) {
            let e = out.entry(op.record_id().to_owned()).or_default();
            if let Op::Doc { incarnation, .. } | Op::Delete { incarnation, .. } = op {
                e.incarnation = e.incarnation.max(incarnation);
            }
        }
    }
    for r in committed {
        for (op, spec) in doc_ops(r) {
            let e = out.get_mut(op.record_id()).unwrap();
            match (op, spec) {
                (Op::Delete { incarnation, .. }, _) if incarnation == e.incarnation => {
                    e.deleted = true
                }
                (Op::Doc { incarnation, .. }, spec) if incarnation == e.incarnation => {
                    apply_spec(e, &spec)
                }
                _ => {}
            }
        }
    }
    out
}

fn apply_spec(e: &mut Expect, spec: &Spec) {
    match spec {
        Spec::Inc { by, .. } => e.c = Some(e.c.unwrap_or(0) + by),
        Spec::Put { hi, lo, st, .. } => {
            e.hi = e.hi.max(*hi);
            e.lo = match (e.lo, *lo) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            e.st.extend(st.map(|s| STATUS[s as usize]));
        }
        _ => {}
    }
}

/// Log rows: per id, the row of the smallest transaction id.
fn model_logs(committed: &[Record]) -> BTreeMap<String, (TxnId, Value)> {
    let mut out: BTreeMap<String, (TxnId, Value)> = BTreeMap::new();
    for r in committed {
        for op in &r.txn.ops {
            if let Op::Append {
                collection,
                id,
                row,
            } = op
                && collection == "logs"
            {
                let candidate = (r.txn.id, serde_json::from_str(row).unwrap());
                let slot = out.entry(id.clone()).or_insert_with(|| candidate.clone());
                if candidate.0 < slot.0 {
                    *slot = candidate;
                }
            }
        }
    }
    out
}

fn check_model(w: &World) {
    let all = |s: &Store, c: &str| s.query(c, &Query::default()).unwrap();
    for c in ["d", "z", "logs", "marks"] {
        let first = all(&w.stores[0], c);
        for s in &w.stores[1..] {
            assert_eq!(all(s, c), first, "collection {c} differs");
        }
    }
    let rows: BTreeMap<String, Value> = all(&w.stores[0], "d")
        .into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_owned(), r))
        .collect();
    for (id, e) in model_docs(&w.committed) {
        let Some(row) = rows.get(&id) else {
            assert!(e.deleted, "{id} missing but live in the model");
            continue;
        };
        assert!(!e.deleted, "{id} visible but deleted in the model");
        assert_eq!(row.get("c").and_then(Value::as_i64), e.c, "{id}.c");
        assert_eq!(row.get("hi").and_then(Value::as_i64), e.hi, "{id}.hi");
        assert_eq!(row.get("lo").and_then(Value::as_i64), e.lo, "{id}.lo");
        match row.get("st").and_then(Value::as_str) {
            Some(st) => assert!(e.st.contains(st), "{id}.st = {st} was never written"),
            None => assert!(e.st.is_empty()),
        }
    }
    let logs: Vec<Value> = model_logs(&w.committed)
        .into_values()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(all(&w.stores[0], "logs"), logs);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_to_the_model((n, acts) in (2usize..=5).prop_flat_map(|n| (Just(n), actions(n)))) {
        let mut w = World::new(n);
        for a in acts {
            match a {
                Action::Local { replica, specs } => w.local(replica, specs),
                Action::Deliver { from, to, seed } if from != to => w.deliver(from, to, seed),
                Action::Deliver { .. } => {}
            }
        }
        w.converge();
        for i in 0..n {
            w.check_atomic(i);
        }
        check_model(&w);
    }

    /// Concurrent priority writes: the best-ranked value wins, whatever the delivery order.
    #[test]
    fn priority_among_concurrent_writes(values in proptest::collection::vec(0usize..4, 2..=5), seed in any::<u64>()) {
        let mut w = World::new(values.len());
        w.local(0, vec![Spec::Put { id: 0, v: None, hi: None, lo: None, st: None, tx: None }]);
        for i in 1..values.len() { w.deliver(0, i, 0); }
        w.converge();
        for (i, v) in values.iter().enumerate() {
            w.local(i, vec![Spec::Put { id: 0, v: None, hi: None, lo: None, st: Some(*v as u8), tx: None }]);
        }
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..values.len() * 2 {
            let (a, b) = (rng.random_range(0..values.len()), rng.random_range(0..values.len()));
            if a != b { w.deliver(a, b, rng.random()); }
        }
        w.converge();
        let best = STATUS[*values.iter().min().unwrap()];
        for s in &w.stores {
            let row = s.get("d", "d0").unwrap().unwrap();
            prop_assert_eq!(row["st"].as_str(), Some(best));
        }
    }
}
