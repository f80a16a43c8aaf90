//! The replicas of a convergence script and what each [`Action`] does to them.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::script::{Action, SCHEMA_V1, SCHEMA_V2, Spec, write_ops};
use crate::change::Txn;
use crate::protocol::bundle::{BundleHeader, BundleReader, BundleWriter};
use crate::schema::Schema;
use crate::store::memory::{MemoryDb, MemoryTemplate};
use crate::store::{OpenOptions, Query, Store, WriteError};
use crate::version::Summary;

/// A committed local transaction, kept for the model.
#[derive(Debug)]
pub struct Record {
    /// The transaction as replicated.
    pub txn: Txn,
    /// The specs it was made of (those its replica's schema allowed).
    pub specs: Vec<Spec>,
    /// Its tag (see [`Spec::Mark`]).
    pub tag: String,
}

/// 2–5 stores on in-memory databases (`store::memory`), and every transaction committed on any
/// of them.
#[derive(Debug)]
pub struct World {
    dbs: Vec<MemoryDb>,
    stores: Vec<Option<Store>>,
    versions: Vec<u32>,
    /// Every local transaction committed, in commit order.
    pub committed: Vec<Record>,
}

/// The replicas' databases go back to the template's pool, reset, when a world ends.
impl Drop for World {
    fn drop(&mut self) {
        self.stores.clear();
        for db in self.dbs.drain(..) {
            template().recycle(db);
        }
    }
}

/// [`SCHEMA_V1`] or [`SCHEMA_V2`], parsed once per process.
fn schema(version: u32) -> Schema {
    static PARSED: OnceLock<[Schema; 2]> = OnceLock::new();
    let [v1, v2] = PARSED.get_or_init(|| {
        [SCHEMA_V1, SCHEMA_V2].map(|t| Schema::from_toml(t).expect("the harness schemas parse"))
    });
    if version == 1 { v1 } else { v2 }.clone()
}

fn options(schema: Option<Schema>) -> OpenOptions {
    OpenOptions {
        schema,
        doc_cache: 3,
        read_connections: 1,
        ..Default::default()
    }
}

/// Reopens a replica's database (a restart or an upgrade).
fn open(db: &MemoryDb, schema: Option<Schema>) -> Store {
    db.open(options(schema))
        .expect("an in-memory store reopens")
}

/// The per-process [`MemoryTemplate`] of an empty replica on [`SCHEMA_V1`] (the database a first
/// open creates, without running the migrations again for every replica), which also keeps the
/// databases of finished worlds for the next ones.
fn template() -> &'static MemoryTemplate {
    static TEMPLATE: OnceLock<MemoryTemplate> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        MemoryTemplate::new(options(Some(schema(1)))).expect("the template store opens")
    })
}

/// A new empty replica on [`SCHEMA_V1`].
fn create() -> (MemoryDb, Store) {
    let db = template().fresh().expect("a template copy");
    let store = open(&db, Some(schema(1)));
    (db, store)
}

impl World {
    /// `n` empty replicas on [`SCHEMA_V1`].
    pub fn new(n: usize) -> World {
        let (dbs, stores) = (0..n).map(|_| create()).map(|(d, s)| (d, Some(s))).unzip();
        World {
            dbs,
            stores,
            versions: vec![1; n],
            committed: Vec::new(),
        }
    }

    /// Replica `i`.
    pub fn store(&self, i: usize) -> &Store {
        self.stores[i]
            .as_ref()
            .expect("a store is open between actions")
    }

    /// A connection to replica `i`'s database behind its store's back (for tests that tamper).
    pub fn connection(&self, i: usize) -> rusqlite::Connection {
        self.dbs[i].connection().expect("a connection to a replica")
    }

    /// How many replicas.
    pub fn len(&self) -> usize {
        self.stores.len()
    }

    /// Never true: a world has at least one replica.
    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }

    /// Runs one action.
    pub fn act(&mut self, action: &Action) {
        match *action {
            Action::Local { replica, ref specs } => self.local(replica, specs),
            Action::Deliver { from, to, seed } if from != to => self.deliver(from, to, seed),
            Action::Bundle { from, to } if from != to => self.bundle(from, to),
            Action::Restart { replica } => self.reopen(replica, None),
            Action::Gc { replica } => self.gc(replica),
            Action::Upgrade { replica } => self.upgrade(replica),
            Action::Deliver { .. } | Action::Bundle { .. } => {}
        }
    }

    /// Commits `specs` as one transaction on `replica` (an [`Spec::Inc2`] only once it runs
    /// [`SCHEMA_V2`]). Refusals a user can cause (deleted, missing, existing record) are fine.
    pub fn local(&mut self, replica: usize, specs: &[Spec]) {
        let upgraded = self.versions[replica] > 1;
        let specs: Vec<Spec> = specs
            .iter()
            .filter(|s| upgraded || !matches!(s, Spec::Inc2 { .. }))
            .cloned()
            .collect();
        if specs.is_empty() {
            return;
        }
        let tag = format!("t{}_{}", replica, self.committed.len());
        let ops = specs.iter().flat_map(|s| write_ops(s, &tag)).collect();
        let store = self.store(replica);
        match store.transact(ops) {
            Ok(c) => {
                let own = [(c.txn.origin, c.txn.seq..=c.txn.seq)];
                let batch = store.txns_for(&own, usize::MAX).expect("own txn reads");
                let txn = Txn::decode(&batch.txns[0]).expect("own txn decodes");
                self.committed.push(Record { txn, specs, tag });
            }
            Err(
                WriteError::Deleted { .. }
                | WriteError::NotFound { .. }
                | WriteError::Exists { .. },
            ) => {}
            Err(e) => panic!("unexpected local error: {e}"),
        }
    }

    /// What `to` lacks from `from`, decoded.
    fn missing(&self, from: usize, to: usize, limit: usize) -> Vec<Txn> {
        let held = |i| self.store(i).summary().expect("summary");
        self.missing_between(from, &held(from), &held(to), limit)
    }

    /// What a replica holding `theirs` lacks of `ours`, read from `from` (which holds `ours`
    /// or more), decoded; at most `limit` bytes of it.
    fn missing_between(
        &self,
        from: usize,
        ours: &Summary,
        theirs: &Summary,
        limit: usize,
    ) -> Vec<Txn> {
        let want = ours.missing_from(theirs);
        if want.is_empty() {
            return Vec::new();
        }
        let batch = self.store(from).txns_for(&want, limit).expect("txns_for");
        batch
            .txns
            .iter()
            .map(|t| Txn::decode(t).expect("stored txn decodes"))
            .collect()
    }

    fn apply(&self, to: usize, txns: Vec<Txn>) {
        let report = self.store(to).apply_remote(txns).expect("apply_remote");
        assert!(
            report.rejected.is_empty(),
            "replica {to} rejected: {report:?}"
        );
    }

    /// A random subset of what `to` lacks, with duplicates, shuffled, in random chunks.
    pub fn deliver(&self, from: usize, to: usize, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut txns = self.missing(from, to, usize::MAX);
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
            self.apply(to, txns.drain(..n).collect());
            self.check_atomic(to);
        }
    }

    /// Everything `to` lacks from `from`, through a bundle written and read in memory.
    pub fn bundle(&self, from: usize, to: usize) {
        let (a, b) = (self.store(from), self.store(to));
        let (held, theirs) = (a.summary().expect("summary"), b.summary().expect("summary"));
        let batch = a
            .txns_for(&held.missing_from(&theirs), usize::MAX)
            .expect("txns_for");
        let header = BundleHeader {
            cluster: "fuzz".into(),
            exporter: a.replica_id(),
            schema_version: self.versions[from],
            summary: held,
            cut_for: Some(theirs),
        };
        let mut w = BundleWriter::new(Vec::new(), &header).expect("bundle header");
        w.write_txns(&batch.txns).expect("bundle txns");
        let file = w.finish().expect("bundle trailer");
        let reader = BundleReader::new(file.as_slice()).expect("own bundle reads");
        for frame in reader {
            let txns = frame.expect("own bundle frame");
            self.apply(
                to,
                txns.iter()
                    .map(|t| Txn::decode(t).expect("decodes"))
                    .collect(),
            );
        }
        self.check_atomic(to);
    }

    /// Closes replica `i` and opens it again from its files (with `schema`, or the stored one).
    fn reopen(&mut self, i: usize, schema: Option<Schema>) {
        let store = self.stores[i].take().expect("open");
        store.close().expect("a clean close");
        self.stores[i] = Some(open(&self.dbs[i], schema));
        self.check_atomic(i);
    }

    /// Acknowledges every other replica's true holdings, then collects garbage.
    pub fn gc(&self, i: usize) {
        let store = self.store(i);
        for j in (0..self.len()).filter(|&j| j != i) {
            let peer = self.store(j);
            store
                .record_peer_ack(peer.replica_id(), peer.summary().expect("summary"))
                .expect("ack");
        }
        store.gc().expect("gc");
    }

    /// Moves replica `i` to [`SCHEMA_V2`] (nothing if it already runs it).
    pub fn upgrade(&mut self, i: usize) {
        if self.versions[i] == 1 {
            self.versions[i] = 2;
            self.reopen(i, Some(schema(2)));
        }
    }

    /// Upgrades everyone if anyone upgraded, then anti-entropy until every replica holds every
    /// committed transaction and nothing is parked.
    pub fn converge(&mut self) {
        if self.versions.contains(&2) {
            (0..self.len()).for_each(|i| self.upgrade(i));
        }
        let mut rounds = 0;
        while !self.converged() {
            rounds += 1;
            assert!(rounds < 100, "no convergence after 100 anti-entropy rounds");
            // Each round works from the summaries at its start: a replica that received something
            // earlier in the round may be sent it again (a duplicate, which must apply nothing).
            let held: Vec<Summary> = (0..self.len())
                .map(|i| self.store(i).summary().expect("summary"))
                .collect();
            for from in 0..self.len() {
                for to in (0..self.len()).filter(|&to| to != from) {
                    let txns = self.missing_between(from, &held[from], &held[to], 2048);
                    if !txns.is_empty() {
                        self.apply(to, txns);
                    }
                }
            }
        }
        for i in 0..self.len() {
            assert_eq!(
                self.store(i).status().expect("status").parked,
                0,
                "replica {i} parked"
            );
        }
    }

    fn converged(&self) -> bool {
        let first = self.store(0).summary().expect("summary");
        first.txn_count() == self.committed.len() as u64
            && (1..self.len()).all(|i| self.store(i).summary().expect("summary") == first)
    }

    /// Every tagged multi-record transaction is visible on `replica` entirely or not at all.
    pub fn check_atomic(&self, replica: usize) {
        let s = self.store(replica);
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for z in s.query("z", &Query::default()).expect("query z") {
            for tag in z["marks"].as_object().into_iter().flat_map(|m| m.keys()) {
                *seen.entry(tag.clone()).or_default() += 1;
            }
        }
        for row in s.query("marks", &Query::default()).expect("query marks") {
            let tag = row["tag"].as_str().expect("tagged").to_owned();
            *seen.entry(tag).or_default() += 1;
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
}

/// How many visible parts a transaction's marks have: distinct marked records plus log rows.
fn mark_parts(specs: &[Spec]) -> usize {
    let mut ids: std::collections::BTreeSet<u8> = std::collections::BTreeSet::new();
    let mut logs = 0;
    for s in specs {
        if let Spec::Mark { ids: i, logs: l } = s {
            ids.extend(i);
            logs += usize::from(*l);
        }
    }
    ids.len() + logs
}
