//! What must hold after replicas received an attack mixed with honest transactions.
//!
//! Four fresh replicas: `honest` writes the honest transactions; `early` receives the attack
//! before them and `late` after them; `relay` receives whatever `early` holds, from `early`.
//! Then `early` and `late` run anti-entropy with each other until nothing moves. Every check
//! panics with what differed.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::Value;
use tempfile::TempDir;

use super::SCHEMA;
use super::forge::{Attack, attacked};
use crate::change::Txn;
use crate::schema::Schema;
use crate::store::template::Template;
use crate::store::{ApplyReport, OpenOptions, Query, Store};

/// The four replicas of one run, on temporary directories.
pub struct Replicas {
    _dirs: Vec<TempDir>,
    stores: [Store; 4],
}

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicas").finish_non_exhaustive()
    }
}

impl Default for Replicas {
    fn default() -> Self {
        Self::new()
    }
}

impl Replicas {
    /// Four empty replicas on [`SCHEMA`].
    pub fn new() -> Replicas {
        let mut dirs = Vec::with_capacity(4);
        let stores = [(); 4].map(|()| {
            let (dir, store) = fresh_store();
            dirs.push(dir);
            store
        });
        Replicas {
            _dirs: dirs,
            stores,
        }
    }

    /// The replica that writes the honest transactions.
    pub fn honest(&self) -> &Store {
        &self.stores[0]
    }
}

/// An empty replica on [`SCHEMA`] in a temporary directory (removed when the `TempDir` drops).
/// The schema is parsed and migrated once per process: each replica starts from a copy of that
/// template (see `crate::store::template`).
pub fn fresh_store() -> (TempDir, Store) {
    static TEMPLATE: OnceLock<(OpenOptions, Template)> = OnceLock::new();
    let (opts, template) = TEMPLATE.get_or_init(|| {
        let opts = OpenOptions {
            schema: Some(Schema::from_toml(SCHEMA).expect("the hostile schema parses")),
            doc_cache: 4,
            read_connections: 1,
            ..Default::default()
        };
        let template = Template::new(opts.clone()).expect("the template store opens");
        (opts, template)
    });
    let dir = crate::scratch::dir();
    let store = template
        .open(dir.path(), opts.clone())
        .expect("a fresh temporary store opens");
    (dir, store)
}

/// Delivers `attacks` and `honest` in both orders and checks every property; panics on a
/// violation.
pub fn run(r: &mut Replicas, honest: &[Txn], attacks: &[Attack]) {
    let [source, early, late, relay] = &r.stores;
    let hostile: Vec<Txn> = attacks.iter().map(|a| a.txn.clone()).collect();
    apply(early, &hostile);
    apply(early, honest);
    apply(late, honest);
    apply(late, &hostile);
    resend_applies_nothing(early, &hostile, honest);
    anti_entropy(early, late);
    let names = collections(attacks);
    same_rows(early, late, &names, "early", "late");
    anti_entropy(early, relay);
    same_rows(early, relay, &names, "early", "relay");
    honest_records_intact(source, early, attacks);
}

fn apply(store: &Store, txns: &[Txn]) -> ApplyReport {
    if txns.is_empty() {
        return ApplyReport::default();
    }
    store
        .apply_remote(txns.to_vec())
        .expect("applying to a temporary store answers (a refusal is an answer)")
}

/// Sending again what the replica holds applies nothing: idempotent by transaction id. (What it
/// refused is not held and may apply later, once the record's state allows it.)
fn resend_applies_nothing(store: &Store, hostile: &[Txn], honest: &[Txn]) {
    let held = store.summary().expect("summary");
    let again: Vec<Txn> = hostile
        .iter()
        .chain(honest)
        .filter(|t| held.contains(&t.id))
        .cloned()
        .collect();
    let report = apply(store, &again);
    assert_eq!(
        (report.applied, report.unparked, report.duplicates),
        (0, 0, again.len()),
        "a resent batch of held transactions applied again: {report:?}"
    );
}

/// What `from` holds and `to` lacks, sent once.
fn sync(from: &Store, to: &Store) -> usize {
    let theirs = to.summary().expect("summary");
    let want = from.summary().expect("summary").missing_from(&theirs);
    let batch = from.txns_for(&want, usize::MAX).expect("txns_for");
    let txns: Vec<Txn> = batch
        .txns
        .iter()
        .map(|t| Txn::decode(t).expect("a held transaction decodes"))
        .collect();
    let report = apply(to, &txns);
    if std::env::var_os("HOSTILE_DEBUG").is_some() {
        eprintln!("sync {report:?}");
    }
    report.applied + report.unparked + report.parked
}

/// Both ways until nothing moves (bounded: refusals are not held, so they are offered again).
fn anti_entropy(a: &Store, b: &Store) {
    for _ in 0..8 {
        if sync(a, b) + sync(b, a) == 0 {
            return;
        }
    }
    panic!("anti-entropy still moving transactions after 8 rounds");
}

/// The collections to compare: the schema's, and every name an attack used.
fn collections(attacks: &[Attack]) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = ["t", "k", "free", "events"].map(String::from).into();
    names.extend(attacked(attacks).into_iter().map(|(c, _)| c));
    names
}

fn rows(store: &Store, collection: &str) -> Option<Vec<Value>> {
    store.query(collection, &Query::default()).ok()
}

fn same_rows(a: &Store, b: &Store, names: &BTreeSet<String>, an: &str, bn: &str) {
    assert_eq!(
        a.summary().expect("summary"),
        b.summary().expect("summary"),
        "{an} and {bn} hold different transactions"
    );
    for c in names {
        assert_eq!(
            rows(a, c),
            rows(b, c),
            "{an} and {bn} show different rows of {c:?}"
        );
    }
}

/// Records no attack named show on the attacked replica exactly as on the honest one.
fn honest_records_intact(source: &Store, early: &Store, attacks: &[Attack]) {
    let hit = attacked(attacks);
    for c in ["t", "k"] {
        let keep = |rows: Option<Vec<Value>>| -> Vec<Value> {
            rows.unwrap_or_default()
                .into_iter()
                .filter(|r| !hit.contains(&(c.to_owned(), key_of(r))))
                .collect()
        };
        assert_eq!(
            keep(rows(source, c)),
            keep(rows(early, c)),
            "an attack changed records of {c:?} it did not name"
        );
    }
}

fn key_of(row: &Value) -> String {
    match &row["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
