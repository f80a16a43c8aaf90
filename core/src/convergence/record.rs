//! The fast half of the merge-convergence harness: the merge rules alone, in memory, thousands
//! of executions per second.
//!
//! [`super::run`] drives real stores (SQLite files, writer threads, restarts, bundles, GC), which
//! costs milliseconds per execution. Here 2–5 replicas hold one record as a
//! [`RecordDoc`] each — the very merge code the store and the central bridge run — and a
//! [`RecordScript`] makes local edits of every document policy (lww, nested lww, counter, max,
//! min, priority, text) and delivers the changes between replicas in any order, duplicated,
//! relayed and with gaps (a change whose dependencies have not arrived is parked and retried,
//! as the store parks it). After everything has been delivered everywhere:
//!
//! - every replica materializes the same record (convergence);
//! - counter `c` is the sum of every increment, `hi` the largest value written, `lo` the
//!   smallest, `st` one of the values written (the model of [`super::model`]);
//! - the saved state loads back to the same record, and applying every change again changes
//!   nothing (each is a duplicate).

use std::collections::BTreeSet;

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Value, json};

use super::script::{SCHEMA_V1, STATUS};
use crate::ids::ReplicaId;
use crate::schema::{CollectionDef, Schema};
use crate::store::record::{ChangeOutcome, RecordDoc};

/// Most steps a decoded script runs.
const MAX_STEPS: usize = 64;

/// One step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A local put on `replica` of the fields given.
    Put {
        /// Replica index.
        replica: usize,
        /// An lww value, nested (`v.k`).
        v: Option<u8>,
        /// `max` field.
        hi: Option<i64>,
        /// `min` field.
        lo: Option<i64>,
        /// `priority` field, an index into [`STATUS`].
        st: Option<u8>,
        /// `text` field, written whole.
        tx: Option<u8>,
    },
    /// A local increment of counter `c` on `replica`.
    Inc {
        /// Replica index.
        replica: usize,
        /// Amount (may be negative).
        by: i64,
    },
    /// Change number `change` (modulo how many exist) reaches `to`, whoever made it.
    Deliver {
        /// Receiver.
        to: usize,
        /// Index into every change made so far.
        change: usize,
    },
    /// Everything `from` holds reaches `to`, newest first (the worst order: all but the last
    /// park until their dependencies arrive).
    Sync {
        /// Sender.
        from: usize,
        /// Receiver.
        to: usize,
    },
}

/// A whole script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordScript {
    /// 2 to 5.
    pub replicas: usize,
    /// In order.
    pub steps: Vec<Step>,
}

impl RecordScript {
    /// Decodes a script; stops at [`MAX_STEPS`] or when the bytes run out.
    pub fn decode(u: &mut Unstructured<'_>) -> Result<RecordScript> {
        let replicas = u.int_in_range(2..=5usize)?;
        let mut steps = Vec::new();
        while steps.len() < MAX_STEPS && !u.is_empty() {
            steps.push(decode_step(u, replicas)?);
        }
        Ok(RecordScript { replicas, steps })
    }
}

fn decode_step(u: &mut Unstructured<'_>, replicas: usize) -> Result<Step> {
    let replica = u.int_in_range(0..=replicas - 1)?;
    Ok(match u.int_in_range(0..=3u8)? {
        0 => Step::Put {
            replica,
            v: u.arbitrary()?,
            hi: small(u)?,
            lo: small(u)?,
            st: if u.arbitrary()? {
                Some(u.int_in_range(0..=3)?)
            } else {
                None
            },
            tx: u.arbitrary()?,
        },
        1 => Step::Inc {
            replica,
            by: i64::from(u.int_in_range(-50..=50i8)?),
        },
        2 => Step::Deliver {
            to: replica,
            change: u.arbitrary()?,
        },
        _ => Step::Sync {
            from: u.int_in_range(0..=replicas - 1)?,
            to: replica,
        },
    })
}

fn small(u: &mut Unstructured<'_>) -> Result<Option<i64>> {
    let v: Option<i16> = u.arbitrary()?;
    Ok(v.map(i64::from))
}

/// One replica: its document, and the changes it holds in the order it took them.
struct Replica {
    id: ReplicaId,
    doc: RecordDoc,
    /// Indexes into [`World::changes`] of what `doc` holds.
    holds: Vec<usize>,
    /// Received changes whose dependencies are missing.
    parked: Vec<usize>,
}

/// The replicas, every change made (with its origin), and the model's inputs.
struct World {
    def: CollectionDef,
    replicas: Vec<Replica>,
    changes: Vec<(ReplicaId, Vec<u8>)>,
    counter: i64,
    hi: Option<i64>,
    lo: Option<i64>,
    st: BTreeSet<&'static str>,
}

impl World {
    fn new(n: usize) -> World {
        let schema = Schema::from_toml(SCHEMA_V1).expect("the harness schema parses");
        let replicas = (0..n)
            .map(|i| {
                let id = ReplicaId([u8::try_from(i + 1).unwrap_or(u8::MAX); 16]);
                Replica {
                    id,
                    doc: RecordDoc::new(&id),
                    holds: Vec::new(),
                    parked: Vec::new(),
                }
            })
            .collect();
        World {
            def: schema.collection_or_default("d"),
            replicas,
            changes: Vec::new(),
            counter: 0,
            hi: None,
            lo: None,
            st: BTreeSet::new(),
        }
    }

    fn step(&mut self, step: &Step) {
        match *step {
            Step::Put {
                replica,
                v,
                hi,
                lo,
                st,
                tx,
            } => self.put(replica, v, hi, lo, st, tx),
            Step::Inc { replica, by } => {
                let change = self.replicas[replica]
                    .doc
                    .increment("c", by)
                    .expect("a local increment");
                self.counter += by;
                self.made(replica, change);
            }
            Step::Deliver { to, change } => {
                if !self.changes.is_empty() {
                    self.receive(to, change % self.changes.len());
                }
            }
            Step::Sync { from, to } => {
                let held = self.replicas[from].holds.clone();
                for k in held.into_iter().rev() {
                    self.receive(to, k);
                }
            }
        }
    }

    fn put(
        &mut self,
        replica: usize,
        v: Option<u8>,
        hi: Option<i64>,
        lo: Option<i64>,
        st: Option<u8>,
        tx: Option<u8>,
    ) {
        let st = st.map(|s| STATUS[usize::from(s)]);
        let fields = [
            ("v", v.map(|v| json!({ "k": v }))),
            ("hi", hi.map(Value::from)),
            ("lo", lo.map(Value::from)),
            ("st", st.map(Value::from)),
            ("tx", tx.map(|t| json!(format!("text {t}")))),
        ];
        let fields: Map<String, Value> = fields
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
            .collect();
        if fields.is_empty() {
            return;
        }
        let change = self.replicas[replica]
            .doc
            .put(&self.def, &fields)
            .expect("a local put of valid fields");
        self.hi = self.hi.max(hi);
        self.lo = match (self.lo, lo) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.st.extend(st);
        self.made(replica, change);
    }

    fn made(&mut self, replica: usize, change: Vec<u8>) {
        let origin = self.replicas[replica].id;
        self.changes.push((origin, change));
        self.replicas[replica].holds.push(self.changes.len() - 1);
    }

    /// Applies change `k` at replica `to`; parks it if its dependencies are missing, and
    /// retries what is parked after each change that lands.
    fn receive(&mut self, to: usize, k: usize) {
        if self.apply(to, k) {
            self.retry_parked(to);
        }
    }

    /// True if the change landed now.
    fn apply(&mut self, to: usize, k: usize) -> bool {
        let (origin, bytes) = &self.changes[k];
        let r = &mut self.replicas[to];
        match r.doc.apply(*origin, bytes) {
            Ok(ChangeOutcome::Applied) => {
                r.holds.push(k);
                true
            }
            Ok(ChangeOutcome::Duplicate) => false,
            Ok(ChangeOutcome::MissingDeps) => {
                if !r.parked.contains(&k) {
                    r.parked.push(k);
                }
                false
            }
            Err(e) => panic!("replica {to} refused change {k} of an honest replica: {e}"),
        }
    }

    fn retry_parked(&mut self, to: usize) {
        loop {
            let parked = std::mem::take(&mut self.replicas[to].parked);
            let mut landed = false;
            for k in parked {
                landed |= self.apply(to, k);
            }
            if !landed {
                return;
            }
        }
    }

    /// Delivers every change to every replica, in the order they were made.
    fn deliver_all(&mut self) {
        for to in 0..self.replicas.len() {
            for k in 0..self.changes.len() {
                self.receive(to, k);
            }
            assert!(
                self.replicas[to].parked.is_empty(),
                "replica {to}: changes still parked once every change was delivered"
            );
        }
    }

    fn check(&mut self) {
        let first = self.replicas[0].doc.materialize(&self.def);
        for (i, r) in self.replicas.iter().enumerate() {
            let got = r.doc.materialize(&self.def);
            assert_eq!(got, first, "replica {i} differs from replica 0");
        }
        self.check_model(&first);
        for (i, r) in self.replicas.iter_mut().enumerate() {
            let saved = r.doc.save();
            let loaded = RecordDoc::load(&saved, &r.id).expect("a saved state loads");
            assert_eq!(loaded.materialize(&self.def), first, "replica {i} reloaded");
        }
        for i in 0..self.replicas.len() {
            for k in 0..self.changes.len() {
                let (origin, bytes) = &self.changes[k];
                let again = self.replicas[i].doc.apply(*origin, bytes);
                assert_eq!(
                    again,
                    Ok(ChangeOutcome::Duplicate),
                    "replica {i} change {k}"
                );
            }
        }
    }

    fn check_model(&self, row: &Map<String, Value>) {
        let field = |k: &str| row.get(k).and_then(Value::as_i64);
        if self.changes.is_empty() {
            return;
        }
        let counted = field("c").unwrap_or(0);
        assert_eq!(counted, self.counter, "counter: {row:?}");
        assert_eq!(field("hi"), self.hi, "max: {row:?}");
        assert_eq!(field("lo"), self.lo, "min: {row:?}");
        let st = row.get("st").and_then(Value::as_str);
        match st {
            Some(s) => assert!(self.st.contains(s), "priority {s} was never written"),
            None => assert!(self.st.is_empty(), "priority lost: {row:?}"),
        }
    }
}

/// Runs a script and checks the merged record. Panics on any violation.
pub fn run(script: &RecordScript) {
    let mut w = World::new(script.replicas);
    for step in &script.steps {
        w.step(step);
    }
    w.deliver_all();
    w.check();
}

/// Fuzz body: decodes a [`RecordScript`] from `data` and runs it.
pub fn fuzz(data: &[u8]) {
    let mut u = Unstructured::new(data);
    if let Ok(script) = RecordScript::decode(&mut u) {
        run(&script);
    }
}
