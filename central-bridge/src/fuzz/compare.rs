//! What the bridge and a node must agree on after they received the same peer's transactions,
//! shared by the fuzz body ([`super::Harness`]) and the seeded hostile test
//! (`tests/hostile.rs`): both hold the same transactions (but for those Postgres cannot store),
//! resending what a replica holds applies nothing, and every Postgres row equals the node's
//! record field by field. Every check panics with what differed.

use std::collections::{BTreeMap, BTreeSet};

use meshlite_core::store::{Query, Store};
use meshlite_core::{Summary, Txn};
use meshlite_mesh::replica::{Applied, Replica};
use serde_json::Value;
use tokio_postgres::Client;

use crate::pg::Ident;
use crate::replica::{PgReplica, storable};

/// The materialized tables of `meshlite_core::hostile::SCHEMA`.
pub const TABLES: [&str; 4] = ["t", "k", "free", "events"];

/// Anti-entropy rounds before a run counts as not converging (refusals are not held, so they
/// are offered again every round, but apply nothing).
const ROUNDS: usize = 8;

/// Applies `txns` to `r`; panics if it does not answer (a refusal is an answer).
pub async fn apply(r: &impl Replica, txns: &[Txn]) -> Applied {
    if txns.is_empty() {
        return Applied::default();
    }
    let applied = r
        .apply_txns(txns.to_vec())
        .await
        .expect("an apply answers (a refusal is an answer)");
    if std::env::var_os("HOSTILE_DEBUG").is_some() {
        eprintln!("{:?} {applied:?}", r.replica_id());
    }
    applied
}

/// Everything `r` holds.
pub async fn held(r: &impl Replica) -> Summary {
    r.summary().await.expect("summary")
}

/// What `from` holds and `to` lacks, sent once; how many were new to `to`.
async fn sync(from: &impl Replica, to: &impl Replica) -> usize {
    let want = held(from).await.missing_from(&held(to).await);
    let loaded = from.load_txns(want, usize::MAX).await.expect("load");
    let txns: Vec<Txn> = loaded
        .txns
        .iter()
        .map(|t| Txn::decode(t).expect("a held transaction decodes"))
        .collect();
    apply(to, &txns).await.new
}

/// Both ways until nothing moves; panics after [`ROUNDS`] rounds that still moved something.
pub async fn anti_entropy(a: &impl Replica, b: &impl Replica) {
    for _ in 0..ROUNDS {
        if sync(a, b).await + sync(b, a).await == 0 {
            return;
        }
    }
    panic!("anti-entropy still moving transactions after {ROUNDS} rounds");
}

/// Sends `r` again every transaction of `sent` it holds: all duplicates, nothing new.
pub async fn assert_resend_applies_nothing(r: &impl Replica, sent: &[Txn], label: &str) {
    let holds = held(r).await;
    let again: Vec<Txn> = sent
        .iter()
        .filter(|t| holds.contains(&t.id))
        .cloned()
        .collect();
    let report = apply(r, &again).await;
    assert_eq!(
        (report.new, report.duplicates),
        (0, again.len()),
        "{label}: resending held transactions applied again ({:?})",
        r.replica_id()
    );
}

/// After anti-entropy: the bridge holds exactly what the node holds of `sent`, less what
/// Postgres cannot store (a NUL in a name, an id or a log row: the bridge refuses it), and each
/// of [`TABLES`] in schema `tables` shows the node's rows. Left out of the rows: records the
/// refused transactions touched, and records touched under a transaction id `sent` reuses with
/// other content (a replica keeps the first content it received under an id, so two replicas
/// that received them in different orders differ there: ids are trusted to name content, see
/// RELIABILITY.md's threat model).
pub async fn assert_alike(
    bridge: &PgReplica,
    pg: &Client,
    tables: &Ident,
    node: &Store,
    sent: &[Txn],
    label: &str,
) {
    let (on_bridge, on_node) = (held(bridge).await, held(node).await);
    for t in sent {
        // Refused when every content sent under its id is unstorable.
        let refused = sent
            .iter()
            .filter(|u| u.id == t.id)
            .all(|u| storable::unstorable(u).is_some());
        assert_eq!(
            on_bridge.contains(&t.id),
            on_node.contains(&t.id) && !refused,
            "{label}: {:?} held by the node {}, by the bridge {}",
            t.id,
            on_node.contains(&t.id),
            on_bridge.contains(&t.id)
        );
    }
    assert!(
        on_bridge.txn_count() <= on_node.txn_count(),
        "{label}: the bridge holds transactions the node does not"
    );
    let skipped = skipped_records(sent);
    for table in TABLES {
        let mut rows = node_rows(node, table).await;
        rows.retain(|id, _| !skipped.contains(&(table, id.as_str())));
        let mut pg_rows = pg_rows(pg, tables, table).await;
        pg_rows.retain(|id, _| !skipped.contains(&(table, id.as_str())));
        assert_eq!(
            pg_rows, rows,
            "{label}: Postgres and the node show different rows of {table}"
        );
    }
}

/// The records (collection, id) of unstorable transactions and of transactions whose id is
/// sent with more than one content (see [`assert_alike`]).
fn skipped_records(sent: &[Txn]) -> BTreeSet<(&str, &str)> {
    let reused = |t: &Txn| sent.iter().any(|u| u.id == t.id && u != t);
    sent.iter()
        .filter(|t| storable::unstorable(t).is_some() || reused(t))
        .flat_map(|t| &t.ops)
        .map(|op| (op.collection(), op.record_id()))
        .collect()
}

/// The table's rows in the node's shape (typed columns back to JSON, `_extra` merged, metadata
/// and NULLs left out), by id.
async fn pg_rows(pg: &Client, schema: &Ident, table: &str) -> BTreeMap<String, Value> {
    let sql = format!(
        "SELECT id::text, jsonb_strip_nulls(to_jsonb(x) - '_extra' - '_origin' - '_synced_at' \
         || coalesce(x._extra, '{{}}')) FROM {schema}.{table} x"
    );
    let rows = pg.query(&sql, &[]).await.expect("select rows");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

async fn node_rows(store: &Store, table: &str) -> BTreeMap<String, Value> {
    let rows = store
        .query_async(table, &Query::default())
        .await
        .expect("query");
    rows.into_iter()
        .map(|r| {
            let id = match &r["id"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (id, strip_nulls(r))
        })
        .collect()
}

/// `jsonb_strip_nulls`: object members that are null go, recursively (array items stay).
fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}
