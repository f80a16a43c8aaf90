//! The reference model: what the merged state of a [`World`] must be, computed from the
//! committed transactions alone.
//!
//! Documents: the latest incarnation of a record wins; a delete of it hides the record; counters
//! are the sum of their increments in that incarnation, `max`/`min` the extreme written, and
//! `priority` one of the values written (concurrent writes pick the best-ranked, checked by the
//! priority property test). Log rows: per id, the row of the smallest transaction id.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::script::{STATUS, Spec, write_ops};
use super::world::{Record, World};
use crate::change::Op;
use crate::ids::TxnId;
use crate::store::Query;

/// What the model expects of one document record.
#[derive(Debug, Default)]
struct Expect {
    incarnation: u32,
    deleted: bool,
    c: Option<i64>,
    c2: Option<i64>,
    hi: Option<i64>,
    lo: Option<i64>,
    st: BTreeSet<&'static str>,
}

/// The ops of `r` on collection `d`, each with the spec that made it.
fn doc_ops(r: &Record) -> Vec<(Op, Spec)> {
    let specs = r
        .specs
        .iter()
        .flat_map(|s| vec![s.clone(); write_ops(s, "").len()]);
    r.txn
        .ops
        .iter()
        .cloned()
        .zip(specs)
        .filter(|(op, _)| op.collection() == "d")
        .collect()
}

fn model_docs(committed: &[Record]) -> BTreeMap<String, Expect> {
    let mut out: BTreeMap<String, Expect> = BTreeMap::new();
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
            let Some(e) = out.get_mut(op.record_id()) else {
                continue;
            };
            match op {
                Op::Delete { incarnation, .. } if incarnation == e.incarnation => e.deleted = true,
                Op::Doc { incarnation, .. } if incarnation == e.incarnation => apply(e, &spec),
                _ => {}
            }
        }
    }
    out
}

fn apply(e: &mut Expect, spec: &Spec) {
    match spec {
        Spec::Inc { by, .. } => e.c = Some(e.c.unwrap_or(0) + by),
        Spec::Inc2 { by, .. } => e.c2 = Some(e.c2.unwrap_or(0) + by),
        Spec::Put { hi, lo, st, .. } => {
            e.hi = e.hi.max(*hi);
            e.lo = match (e.lo, *lo) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            e.st.extend(st.map(|s| STATUS[usize::from(s)]));
        }
        _ => {}
    }
}

/// Log rows of `logs`: per id, the row of the smallest transaction id.
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
                let row = serde_json::from_str(row).expect("a log row is JSON");
                let candidate = (r.txn.id, row);
                let slot = out.entry(id.clone()).or_insert_with(|| candidate.clone());
                if candidate.0 < slot.0 {
                    *slot = candidate;
                }
            }
        }
    }
    out
}

fn rows(w: &World, replica: usize, collection: &str) -> Vec<Value> {
    w.store(replica)
        .query(collection, &Query::default())
        .expect("query")
}

/// Every replica shows the same rows, and they agree with the model. Panics otherwise.
pub fn check(w: &World) {
    for c in ["d", "z", "logs", "marks"] {
        let first = rows(w, 0, c);
        for i in 1..w.len() {
            assert_eq!(
                rows(w, i, c),
                first,
                "collection {c} differs on replica {i}"
            );
        }
    }
    let docs: BTreeMap<String, Value> = rows(w, 0, "d")
        .into_iter()
        .map(|r| (r["id"].as_str().expect("string id").to_owned(), r))
        .collect();
    for (id, e) in model_docs(&w.committed) {
        let Some(row) = docs.get(&id) else {
            assert!(e.deleted, "{id} missing but live in the model");
            continue;
        };
        assert!(!e.deleted, "{id} visible but deleted in the model");
        let int = |f: &str| row.get(f).and_then(Value::as_i64);
        assert_eq!(int("c"), e.c, "{id}.c");
        assert_eq!(int("c2"), e.c2, "{id}.c2");
        assert_eq!(int("hi"), e.hi, "{id}.hi");
        assert_eq!(int("lo"), e.lo, "{id}.lo");
        match row.get("st").and_then(Value::as_str) {
            Some(st) => assert!(e.st.contains(st), "{id}.st = {st} was never written"),
            None => assert!(e.st.is_empty(), "{id}.st missing"),
        }
    }
    let logs: Vec<Value> = model_logs(&w.committed)
        .into_values()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(rows(w, 0, "logs"), logs, "log rows differ from the model");
}
