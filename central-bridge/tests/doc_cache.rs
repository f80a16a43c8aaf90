//! The writer's document cache (`replica::cache`) against a real Postgres: a cached document is
//! used only while its `docs` row is the version the bridge wrote, so a central edit, another
//! bridge or a restart never loses a change, and the rows are those a cold bridge writes.

use meshlite_bridge::pg::PgConn;
use meshlite_bridge::replica::PgReplica;
use meshlite_core::Txn;
use meshlite_core::store::WriteError;
use meshlite_fixtures::postgres::PgServer;
use meshlite_fixtures::records::named_id;
use meshlite_mesh::replica::Replica;
use serde_json::{Value, json};

mod support;

use support::{all_txns, blocking, node, pmoves, task_row, two_nodes_with_one_task};

const CACHE_MIB: usize = 64;

async fn bridge(url: String, name: &str, mib: usize) -> (PgReplica, PgConn) {
    support::pg_replica_cached(url, name, &pmoves(), mib).await
}

async fn apply(replica: &PgReplica, txns: Vec<Txn>) {
    let applied = replica.apply_txns(txns).await.expect("apply");
    assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_update_between_two_batches_on_a_cached_record_is_merged_not_overwritten() {
    let (replica, conn) = bridge(
        PgServer::shared().database("cache_central"),
        "cc",
        CACHE_MIB,
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = node(&dir);
    let (t1, t2) = (named_id("t1"), named_id("t2"));
    blocking(|| {
        store.put(
            "tasks",
            json!({"id": t1, "status": "queued", "retry_count": 0}),
        )?;
        store.put("tasks", json!({"id": t2, "status": "queued", "title": "a"}))?;
        Ok::<_, WriteError>(())
    })
    .expect("node writes");
    apply(&replica, all_txns(&store).await).await;
    assert_eq!(replica.doc_cache_counts().hits, 0, "nothing cached yet");

    // A central edit of t1 between two batches, turned into the bridge's own change.
    conn.client()
        .batch_execute(&format!(
            "UPDATE public.tasks SET status = 'running', retry_count = retry_count + 1, \
             _extra = _extra || '{{\"title\": \"central\"}}' WHERE id = '{t1}'"
        ))
        .await
        .expect("central SQL");
    assert_eq!(replica.consume_outbox(100).await.expect("outbox"), 1);

    // The node, offline meanwhile, edits both records; the bridge hears it.
    blocking(|| {
        store.increment("tasks", &t1, "retry_count", 2)?;
        store.put("tasks", json!({"id": t1, "status": "completed"}))?;
        store.put("tasks", json!({"id": t2, "status": "failed", "title": "b"}))?;
        Ok::<_, WriteError>(())
    })
    .expect("offline edits");
    apply(&replica, all_txns(&store).await).await;
    let counts = replica.doc_cache_counts();
    assert_eq!(
        (counts.hits, counts.misses),
        (1, 1),
        "t2 came from the cache; t1's row was changed by the central edit, so it was loaded"
    );

    // The node gets the central edit: node, bridge and Postgres agree, nothing overwritten.
    let me = replica.replica_id();
    let central = replica
        .load_txns(vec![(me, 1..=1)], usize::MAX)
        .await
        .expect("central txn");
    let central: Vec<Txn> = central
        .txns
        .iter()
        .map(|t| Txn::decode(t).expect("decode"))
        .collect();
    let report = blocking(|| store.apply_remote(central)).expect("node applies");
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let on_node = blocking(|| store.get("tasks", &t1))
        .expect("get")
        .expect("t1");
    assert_eq!(
        on_node["retry_count"],
        json!(3),
        "central +1 and offline +2"
    );
    assert_eq!(on_node["status"], json!("running"), "priority");
    assert_eq!(task_row(&conn, &t1).await, Some(on_node));
    let t2_node = blocking(|| store.get("tasks", &t2)).expect("get");
    assert_eq!(task_row(&conn, &t2).await, t2_node);
    blocking(|| store.close()).expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_another_bridge_changed_is_loaded_again_not_taken_from_the_cache() {
    let url = PgServer::shared().database("cache_two");
    let (x, conn) = bridge(url.clone(), "x", CACHE_MIB).await;
    let (y, _) = bridge(url, "y", CACHE_MIB).await;
    let (da, db) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (a, b, t1) = two_nodes_with_one_task(&da, &db).await;
    let base = all_txns(&a).await;
    apply(&x, base).await; // x caches t1

    // b's concurrent edit reaches the other bridge only; then a edits again and x hears it.
    blocking(|| b.increment("tasks", &t1, "retry_count", 5)).expect("b edits");
    apply(&y, all_txns(&b).await).await;
    blocking(|| {
        a.increment("tasks", &t1, "retry_count", 2)?;
        a.put("tasks", json!({"id": t1, "status": "running"}))
    })
    .expect("a edits");
    apply(&x, all_txns(&a).await).await;
    assert_eq!(
        x.doc_cache_counts().misses,
        1,
        "y's write made x's entry stale"
    );

    let from_b = all_txns(&b).await;
    blocking(|| a.apply_remote(from_b)).expect("a gets b");
    let merged = blocking(|| a.get("tasks", &t1)).expect("get").expect("t1");
    assert_eq!(merged["retry_count"], json!(7), "no increment lost");
    assert_eq!(
        task_row(&conn, &t1).await,
        Some(merged),
        "y's change is kept"
    );
    for s in [a, b] {
        blocking(|| s.close()).expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_cache_after_a_restart_gives_the_rows_and_states_a_warm_one_gives() {
    let (warm, warm_conn) =
        bridge(PgServer::shared().database("cache_warm"), "warm", CACHE_MIB).await;
    let cold_url = PgServer::shared().database("cache_cold");
    let (da, db) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (a, b) = (node(&da), node(&db));
    let ids: Vec<String> = (0..20).map(|i| named_id(&format!("r{i}"))).collect();
    let mut sent = std::collections::HashSet::new();
    let mut cold_conn = None;
    for round in 0..40 {
        // Both nodes edit every record, concurrently, and exchange every other round; new
        // changes go to both bridges: the warm one keeps its cache, the cold one restarts.
        blocking(|| {
            for (i, id) in ids.iter().enumerate() {
                let node = if (round + i) % 2 == 0 { &a } else { &b };
                node.put(
                    "tasks",
                    json!({"id": id, "status": "queued", "title": format!("{round}")}),
                )?;
                node.increment("tasks", id, "retry_count", 1)?;
            }
            Ok::<_, WriteError>(())
        })
        .expect("edits");
        if round % 2 == 1 {
            let (ta, tb) = (all_txns(&a).await, all_txns(&b).await);
            blocking(|| a.apply_remote(tb)).expect("a gets b");
            blocking(|| b.apply_remote(ta)).expect("b gets a");
        }
        let mut new = all_txns(&b).await;
        new.extend(all_txns(&a).await);
        new.retain(|t| sent.insert(t.id));
        apply(&warm, new.clone()).await;
        let (cold, conn) = bridge(cold_url.clone(), "cold", CACHE_MIB).await;
        apply(&cold, new).await;
        assert_eq!(
            cold.doc_cache_counts().hits,
            0,
            "a restarted bridge starts cold"
        );
        cold_conn = Some(conn);
    }
    let cold_conn = cold_conn.expect("a cold bridge ran");
    assert!(
        warm.doc_cache_counts().hits > 0,
        "the warm bridge used its cache"
    );
    let states = "SELECT jsonb_agg(jsonb_build_array(collection, id, incarnation, chunks, \
                  encode(state, 'hex')) ORDER BY collection, id, incarnation) FROM meshlite.docs";
    let warm_states = one_value(&warm_conn, states).await;
    assert_eq!(warm_states.as_array().map(Vec::len), Some(ids.len()));
    assert_eq!(
        warm_states,
        one_value(&cold_conn, states).await,
        "the same stored states and chunk counts, byte for byte"
    );
    let audit = "SELECT coalesce(jsonb_agg(jsonb_build_array(collection, record_id, incarnation, \
                 field, policy, candidates, winner) ORDER BY collection, record_id, incarnation, \
                 field, candidates::text, winner::text), '[]') FROM meshlite.conflicts";
    let warm_audit = one_value(&warm_conn, audit).await;
    assert_ne!(warm_audit, json!([]), "the concurrent edits were audited");
    assert_eq!(
        warm_audit,
        one_value(&cold_conn, audit).await,
        "the same conflicts recorded"
    );
    let tb = all_txns(&b).await;
    blocking(|| a.apply_remote(tb)).expect("a gets b");
    for id in &ids {
        let on_node = blocking(|| a.get("tasks", id)).expect("get");
        assert_eq!(task_row(&warm_conn, id).await, on_node, "warm {id}");
        assert_eq!(task_row(&cold_conn, id).await, on_node, "cold {id}");
    }
    for s in [a, b] {
        blocking(|| s.close()).expect("close");
    }
}

/// The single JSON value `sql` returns.
async fn one_value(conn: &PgConn, sql: &str) -> Value {
    let row = conn.client().query_one(sql, &[]).await.expect(sql);
    row.get(0)
}

/// The audit rows a bridge recorded, without who recorded them or when, in a stable order.
async fn audit_rows(conn: &PgConn) -> Vec<Value> {
    let rows = conn
        .client()
        .query(
            "SELECT jsonb_build_array(record_id, incarnation, field, policy, candidates, winner, \
             to_jsonb(origins)) FROM meshlite.conflicts ORDER BY id",
            &[],
        )
        .await
        .expect("audit");
    rows.iter().map(|r| r.get(0)).collect()
}

/// Records whose histories are flat (scalar puts on root keys) merge without a document
/// (`FlatRecord`, cache off) exactly as through their documents (cache on: a record the cache
/// holds is merged on its document): three nodes edit four records concurrently, every policy
/// of the PMOVES `tasks` table, over five batches; one record gets a nested value, which leaves
/// the flat path for the document mid-history. Rows, audit rows and states must be equal, and
/// equal to the nodes' once they have exchanged everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flat_histories_merge_as_their_documents_do() {
    let (flat, flat_conn) = bridge(PgServer::shared().database("flat_path"), "fp", 0).await;
    let (docs, docs_conn) = bridge(PgServer::shared().database("doc_path"), "dp", CACHE_MIB).await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (a, b, c) = (node(&dirs[0]), node(&dirs[1]), node(&dirs[2]));
    let ids: Vec<String> = (1..=4).map(|n| named_id(&format!("flat{n}"))).collect();
    let mut batches = Vec::new();
    blocking(|| {
        for id in &ids {
            a.put(
                "tasks",
                json!({"id": id, "status": "pending", "title": "new", "retry_count": 0,
                    "created_at": "2026-01-02T00:00:00+00:00", "updated_at": "2026-01-02T00:00:00+00:00"}),
            )?;
        }
        Ok::<_, WriteError>(())
    })
    .expect("a creates");
    let base = all_txns(&a).await;
    batches.push(base.clone());
    blocking(|| {
        b.apply_remote(base.clone())?;
        c.apply_remote(base)?;
        for id in &ids {
            a.put(
                "tasks",
                json!({"id": id, "status": "running", "title": "a1",
                "updated_at": "2026-01-03T00:00:00+00:00"}),
            )?;
            a.increment("tasks", id, "retry_count", 1)?;
            b.put(
                "tasks",
                json!({"id": id, "status": "completed", "title": "b1",
                "created_at": "2026-01-01T00:00:00+00:00"}),
            )?;
            b.increment("tasks", id, "retry_count", 2)?;
            c.put(
                "tasks",
                json!({"id": id, "status": "failed", "title": "c1",
                "updated_at": "2026-01-04T00:00:00+00:00"}),
            )?;
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })
    .expect("concurrent edits");
    batches.push(all_txns(&b).await);
    batches.push(all_txns(&a).await);
    let (from_b, from_c) = (all_txns(&b).await, all_txns(&c).await);
    blocking(|| {
        a.apply_remote(from_b)?;
        a.apply_remote(from_c)?;
        a.put(
            "tasks",
            json!({"id": ids[0], "title": "a2", "status": "queued"}),
        )?;
        a.put("tasks", json!({"id": ids[3], "input": {"nested": true}}))?;
        a.put("tasks", json!({"id": ids[3], "title": "after nested"}))?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
    .expect("a merges and edits again");
    batches.push(all_txns(&c).await);
    batches.push(all_txns(&a).await);
    for txns in batches {
        apply(&flat, txns.clone()).await;
        apply(&docs, txns).await;
    }
    assert!(
        docs.doc_cache_counts().hits > 0,
        "the cached documents were used"
    );
    for id in &ids {
        let node_row = blocking(|| a.get("tasks", id)).expect("get").expect("row");
        let (f, d) = (
            task_row(&flat_conn, id).await,
            task_row(&docs_conn, id).await,
        );
        assert_eq!(f.as_ref(), Some(&node_row), "flat path vs node, {id}");
        assert_eq!(d.as_ref(), Some(&node_row), "document path vs node, {id}");
    }
    let (fa, da) = (audit_rows(&flat_conn).await, audit_rows(&docs_conn).await);
    assert!(!fa.is_empty(), "concurrent edits were audited");
    assert_eq!(fa, da, "the same conflicts recorded");
    assert_eq!(states(&flat_conn).await, states(&docs_conn).await);
}

/// Every record state a bridge stores, in key order.
async fn states(conn: &PgConn) -> Vec<(String, i32, Vec<u8>, i32)> {
    let rows = conn
        .client()
        .query(
            "SELECT id, incarnation, state, chunks FROM meshlite.docs ORDER BY id, incarnation",
            &[],
        )
        .await
        .expect("states");
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}
