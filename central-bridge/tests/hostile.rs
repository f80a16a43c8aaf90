//! The bridge against a hostile peer: the attacks of `meshlite_core::hostile` (foreign and
//! impersonated actors, missing dependencies, huge changes, corrupt bytes, wrong kinds, hostile
//! names and keys, absurd incarnations, replays, reused ids, sequence gaps) mixed with an honest
//! node's transactions, on a real Postgres. The bridge receives the attack first, a node store
//! after the honest transactions; then the two run anti-entropy through the `Replica` trait
//! until nothing moves. Then: every answer was an answer (no error, no panic), both hold the
//! same transactions, resending what the bridge holds applies nothing, and every Postgres row
//! equals the node's record field by field.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use arbitrary::Unstructured;
use meshlite_bridge::pg::PgConn;
use meshlite_bridge::replica::{PgReplica, storable};
use meshlite_core::hostile::{self, Attack};
use meshlite_core::store::{OpenOptions, Query, Store};
use meshlite_core::{Schema, Summary, Txn};
use meshlite_fixtures::postgres::PgServer;
use meshlite_mesh::replica::{Applied, Replica};
use rand::rngs::StdRng;

mod support;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// A bridge on a fresh database with the hostile schema's tables.
async fn bridge(name: &str, schema: &std::path::Path) -> (PgReplica, PgConn) {
    support::pg_replica(PgServer::shared().database(name), name, schema).await
}

fn store(dir: &tempfile::TempDir) -> Store {
    let opts = OpenOptions {
        schema: Some(Schema::from_toml(hostile::SCHEMA).expect("schema")),
        ..OpenOptions::default()
    };
    Store::open(dir.path(), opts).expect("open store")
}

async fn apply(r: &impl Replica, txns: &[Txn]) -> Applied {
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

/// What `from` holds and `to` lacks, sent once; how many were new to `to`.
async fn sync(from: &impl Replica, to: &impl Replica) -> usize {
    let theirs = to.summary().await.expect("summary");
    let want = from.summary().await.expect("summary").missing_from(&theirs);
    let loaded = from.load_txns(want, usize::MAX).await.expect("load");
    let txns: Vec<Txn> = loaded
        .txns
        .iter()
        .map(|t| Txn::decode(t).expect("a held transaction decodes"))
        .collect();
    apply(to, &txns).await.new
}

async fn anti_entropy(a: &impl Replica, b: &impl Replica) {
    for _ in 0..8 {
        if sync(a, b).await + sync(b, a).await == 0 {
            return;
        }
    }
    panic!("anti-entropy still moving transactions after 8 rounds");
}

/// The table's rows in the node's shape (typed columns back to JSON, `_extra` merged, metadata
/// and NULLs left out), by id.
async fn pg_rows(conn: &PgConn, table: &str) -> BTreeMap<String, Value> {
    let sql = format!(
        "SELECT id::text, jsonb_strip_nulls(to_jsonb(x) - '_extra' - '_origin' - '_synced_at' \
         || coalesce(x._extra, '{{}}')) FROM public.{table} x"
    );
    let rows = conn.client().query(&sql, &[]).await.expect("select rows");
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

async fn held(r: &impl Replica) -> Summary {
    r.summary().await.expect("summary")
}

/// One run: seed → honest writes and attacks → both orders → anti-entropy → checks.
async fn run(seed: u64, schema: &std::path::Path) {
    let mut rng = StdRng::seed_from_u64(seed);
    let data: Vec<u8> = (0..4096).map(|_| rng.random()).collect();
    let mut u = Unstructured::new(&data);
    let tempdir = || tempfile::tempdir().expect("tempdir");
    let (honest_dir, late_dir) = (tempdir(), tempdir());
    let (honest_store, late) = (store(&honest_dir), store(&late_dir));
    let honest = tokio::task::block_in_place(|| hostile::honest_txns(&mut u, &honest_store))
        .expect("honest writes");
    let attacks: Vec<Attack> = hostile::forge(&mut u, &honest).expect("attacks");
    let hostile: Vec<Txn> = attacks.iter().map(|a| a.txn.clone()).collect();
    let kinds: Vec<_> = attacks.iter().map(|a| a.kind).collect();

    let (bridge, conn) = bridge(&format!("hostile{seed}"), schema).await;
    apply(&bridge, &hostile).await;
    apply(&bridge, &honest).await;
    apply(&late, &honest).await;
    apply(&late, &hostile).await;

    let holds = held(&bridge).await;
    let again: Vec<Txn> = hostile
        .iter()
        .chain(&honest)
        .filter(|t| holds.contains(&t.id))
        .cloned()
        .collect();
    let report = apply(&bridge, &again).await;
    assert_eq!(
        (report.new, report.duplicates),
        (0, again.len()),
        "seed {seed} {kinds:?}: resending held transactions applied again"
    );

    anti_entropy(&bridge, &late).await;
    // What Postgres cannot store (a NUL in a name, an id or a log row) the bridge refuses;
    // everything else both must hold alike.
    let unstorable: Vec<&Txn> = hostile
        .iter()
        .filter(|t| storable::unstorable(t).is_some())
        .collect();
    let (on_bridge, on_node) = (held(&bridge).await, held(&late).await);
    for t in hostile.iter().chain(&honest) {
        let refused = unstorable.iter().any(|u| u.id == t.id);
        assert_eq!(
            on_bridge.contains(&t.id),
            on_node.contains(&t.id) && !refused,
            "seed {seed} {kinds:?}: {:?} held by the node {}, by the bridge {}",
            t.id,
            on_node.contains(&t.id),
            on_bridge.contains(&t.id)
        );
    }
    assert!(
        on_bridge.txn_count() <= on_node.txn_count(),
        "seed {seed}: the bridge holds transactions the node does not"
    );
    let skipped: BTreeSet<(&str, &str)> = unstorable
        .iter()
        .flat_map(|t| &t.ops)
        .map(|op| (op.collection(), op.record_id()))
        .collect();
    for table in ["t", "k", "free", "events"] {
        let mut node = node_rows(&late, table).await;
        node.retain(|id, _| !skipped.contains(&(table, id.as_str())));
        assert_eq!(
            pg_rows(&conn, table).await,
            node,
            "seed {seed} {kinds:?}: Postgres and the node show different rows of {table}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_transactions_are_refused_or_merged_alike_by_the_bridge_and_a_node() {
    let mut file = tempfile::NamedTempFile::new().expect("schema file");
    file.write_all(hostile::SCHEMA.as_bytes()).expect("write");
    for seed in 0..16 {
        run(seed, file.path()).await;
    }
}
