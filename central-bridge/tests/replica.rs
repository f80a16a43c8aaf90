//! The bridge's replica against a real Postgres: transactions written by a real node store are
//! applied, materialized into typed rows equal to what the node reads, held exactly once, served
//! back to peers byte for byte, and merged under the policies when two nodes edit concurrently.

use meshlite_bridge::pg::PgConn;
use meshlite_bridge::replica::PgReplica;
use meshlite_core::Txn;
use meshlite_core::store::{OpenOptions, Store};
use meshlite_fixtures::postgres::PgServer;
use meshlite_fixtures::records::named_id;
use meshlite_mesh::replica::Replica;
use serde_json::{Value, json};

mod support;

use support::{all_txns, blocking, node, pmoves, task_row, two_nodes_with_one_task};

struct Bridge {
    replica: PgReplica,
    conn: PgConn,
}

/// A migrated database with the PMOVES tables and a replica over it.
async fn bridge(name: &str) -> Bridge {
    bridge_on(PgServer::shared().database(name), name).await
}

/// A bridge named `name` on the database at `url`.
async fn bridge_on(url: String, name: &str) -> Bridge {
    let (replica, conn) = support::pg_replica(url, name, &pmoves()).await;
    Bridge { replica, conn }
}

/// The bridge's own transactions 1..=`n` (central edits), decoded.
async fn own_txns(b: &Bridge, n: u64) -> Vec<Txn> {
    let me = b.replica.replica_id();
    let batch = b
        .replica
        .load_txns(vec![(me, 1..=n)], usize::MAX)
        .await
        .expect("bridge txns");
    batch
        .txns
        .iter()
        .map(|t| Txn::decode(t).expect("decode"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_transactions_materialize_once_and_are_served_back() {
    let b = bridge("materialize").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = node(&dir);
    let (t1, t2) = (named_id("t1"), named_id("t2"));
    blocking(|| {
        store.put(
            "tasks",
            json!({"id": t1, "status": "pending", "retry_count": 0, "owner": "pi-01"}),
        )?;
        store.increment("tasks", &t1, "retry_count", 2)?;
        store.put("tasks", json!({"id": t2, "status": "queued"}))?;
        store.delete("tasks", &t2)?;
        store.append(
            "sensor_data",
            json!({"id": "s1", "device_id": "pi-01", "temp_c": 41.5}),
        )?;
        Ok::<_, meshlite_core::store::WriteError>(())
    })
    .expect("node writes");
    let txns = all_txns(&store).await;

    let applied = b.replica.apply_txns(txns.clone()).await.expect("apply");
    assert_eq!((applied.new, applied.duplicates), (txns.len(), 0));
    assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);
    let again = b
        .replica
        .apply_txns(txns.clone())
        .await
        .expect("apply again");
    assert_eq!(
        (again.new, again.duplicates),
        (0, txns.len()),
        "exactly once"
    );

    let expected = blocking(|| store.get("tasks", &t1))
        .expect("get")
        .expect("t1");
    let row = task_row(&b.conn, &t1).await.expect("t1 row");
    assert_eq!(row, expected);
    assert_eq!(
        task_row(&b.conn, &t2).await,
        None,
        "deleted records leave the table"
    );
    let logs: i64 = b
        .conn
        .client()
        .query_one(
            "SELECT count(*) FROM public.sensor_data WHERE id = 's1'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(logs, 1);

    assert_eq!(
        b.replica.summary().await.expect("summary"),
        blocking(|| store.summary()).expect("summary")
    );
    let me = store.replica_id();
    let loaded = b
        .replica
        .load_txns(vec![(me, 1..=txns.len() as u64)], usize::MAX)
        .await
        .expect("load");
    let encoded: Vec<Vec<u8>> = txns.iter().map(Txn::encode).collect();
    assert_eq!(loaded.txns, encoded, "relayed byte for byte");
    blocking(|| store.close().expect("close"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_from_two_nodes_merge_by_policy_and_are_audited() {
    let b = bridge("merge").await;
    let (da, db) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (a, n2, t1) = two_nodes_with_one_task(&da, &db).await;
    blocking(|| {
        a.put(
            "tasks",
            json!({"id": t1, "status": "running", "title": "from a"}),
        )?;
        a.increment("tasks", &t1, "retry_count", 2)?;
        n2.put(
            "tasks",
            json!({"id": t1, "status": "completed", "title": "from b"}),
        )?;
        n2.increment("tasks", &t1, "retry_count", 3)?;
        Ok::<_, meshlite_core::store::WriteError>(())
    })
    .expect("concurrent edits");

    // The bridge hears b first, then a (each sends everything it holds).
    for store in [&n2, &a] {
        let applied = b
            .replica
            .apply_txns(all_txns(store).await)
            .await
            .expect("apply");
        assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);
    }
    // The nodes exchange too, and must agree with the bridge's table.
    let from_b = all_txns(&n2).await;
    blocking(|| a.apply_remote(from_b)).expect("a gets b");
    let merged = blocking(|| a.get("tasks", &t1)).expect("get").expect("t1");
    assert_eq!(
        merged["status"],
        json!("running"),
        "running beats completed"
    );
    assert_eq!(merged["retry_count"], json!(5), "no increment lost");
    let row = task_row(&b.conn, &t1).await.expect("row");
    assert_eq!(row, merged);

    let audit = b
        .conn
        .client()
        .query(
            "SELECT field, policy, winner FROM meshlite.conflicts \
             WHERE collection = 'tasks' AND record_id = $1 ORDER BY field",
            &[&t1],
        )
        .await
        .expect("conflicts");
    let audit: Vec<(String, String, Value)> = audit
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(
        audit.contains(&("status".into(), "priority".into(), json!("running"))),
        "{audit:?}"
    );
    assert!(
        audit.iter().any(|(f, p, _)| f == "title" && p == "lww"),
        "{audit:?}"
    );
    assert!(
        audit.iter().all(|(f, _, _)| f != "retry_count"),
        "counters never conflict"
    );
    // Each candidate names the replica that wrote it; `origins` lists them.
    let status = b
        .conn
        .client()
        .query_one(
            "SELECT candidates, origins FROM meshlite.conflicts \
             WHERE collection = 'tasks' AND record_id = $1 AND field = 'status'",
            &[&t1],
        )
        .await
        .expect("status conflict");
    let (candidates, origins): (Value, Vec<String>) = (status.get(0), status.get(1));
    let (ra, rb) = (a.replica_id().to_hex(), n2.replica_id().to_hex());
    let mut want = vec![ra.clone(), rb.clone()];
    want.sort();
    assert_eq!(origins, want);
    let by_origin = |o: &str| {
        candidates
            .as_array()
            .and_then(|c| c.iter().find(|c| c["origin"] == json!(o)))
            .map(|c| c["value"].clone())
    };
    assert_eq!(by_origin(&ra), Some(json!("running")), "{candidates}");
    assert_eq!(by_origin(&rb), Some(json!("completed")), "{candidates}");
    for s in [a, n2] {
        blocking(|| s.close().expect("close"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bridges_on_one_database_apply_overlapping_changes_once() {
    let url = PgServer::shared().database("two");
    let (b1, b2) = (
        bridge_on(url.clone(), "one").await,
        bridge_on(url, "two").await,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let store = node(&dir);
    blocking(|| {
        for i in 0..40 {
            store.put(
                "tasks",
                json!({"id": named_id(&format!("t{i}")), "status": "queued"}),
            )?;
            store.increment("tasks", &named_id(&format!("t{}", i / 2)), "retry_count", 1)?;
        }
        Ok::<_, meshlite_core::store::WriteError>(())
    })
    .expect("node writes");
    let txns = all_txns(&store).await;
    let (first, second) = (txns[..60].to_vec(), txns[20..].to_vec());
    let (r1, r2) = tokio::join!(b1.replica.apply_txns(first), b2.replica.apply_txns(second));
    let (r1, r2) = (r1.expect("bridge one"), r2.expect("bridge two"));
    assert_eq!(
        r1.new + r2.new,
        txns.len(),
        "each transaction applied by exactly one bridge"
    );
    assert_eq!(
        r1.duplicates + r2.duplicates,
        40,
        "the overlap is a duplicate for one of them"
    );
    for i in 0..40 {
        let id = named_id(&format!("t{i}"));
        let expected = blocking(|| store.get("tasks", &id))
            .expect("get")
            .expect("row");
        assert_eq!(
            task_row(&b1.conn, &id).await.as_ref(),
            Some(&expected),
            "{id}"
        );
    }
    assert_eq!(
        b2.replica.summary().await.expect("summary"),
        blocking(|| store.summary()).expect("summary")
    );
    blocking(|| store.close()).expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_sql_edits_merge_with_offline_node_edits_both_ways() {
    let b = bridge("central").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = node(&dir);
    let (t1, t2) = (named_id("t1"), named_id("t2"));
    blocking(|| {
        store.put(
            "tasks",
            json!({"id": t1, "status": "queued", "retry_count": 0, "title": "a"}),
        )?;
        store.put("tasks", json!({"id": t2, "status": "queued"}))?;
        Ok::<_, meshlite_core::store::WriteError>(())
    })
    .expect("node writes");
    b.replica
        .apply_txns(all_txns(&store).await)
        .await
        .expect("bridge gets the records");

    // Central: plain SQL by another session, while the node is offline and edits too.
    let mut events = b.replica.subscribe();
    b.conn
        .client()
        .batch_execute(&format!(
            "UPDATE public.tasks SET status = 'running', retry_count = retry_count + 1, \
             _extra = _extra || '{{\"title\": \"central\"}}' WHERE id = '{t1}'; \
             DELETE FROM public.tasks WHERE id = '{t2}';"
        ))
        .await
        .expect("central SQL");
    blocking(|| {
        store.increment("tasks", &t1, "retry_count", 2)?;
        store.put("tasks", json!({"id": t1, "status": "completed"}))?;
        store.put("tasks", json!({"id": t2, "status": "failed"}))?;
        Ok::<_, meshlite_core::store::WriteError>(())
    })
    .expect("offline node edits");

    let made = b.replica.consume_outbox(100).await.expect("consume outbox");
    assert_eq!(made, 2, "one transaction per captured row");
    let event = events.recv().await.expect("commit event");
    let meshlite_core::store::StoreEvent::Committed { local, txns, .. } = event else {
        panic!("unexpected event")
    };
    assert!(
        local,
        "central edits are the bridge's own, pushed by gossip"
    );
    assert_eq!(txns.len(), 2);
    assert_eq!(
        b.replica.consume_outbox(100).await.expect("again"),
        0,
        "the bridge's own writes are not captured again"
    );

    // Reconnect: each side gets what the other made.
    let me = b.replica.replica_id();
    let summary = b.replica.summary().await.expect("summary");
    assert_eq!(
        summary.get(&me).map(|set| set.max()),
        Some(2),
        "the bridge's own transactions are in its summary (anti-entropy and the relay offer them)"
    );
    let central = own_txns(&b, 2).await;
    let report = blocking(|| store.apply_remote(central)).expect("node applies central edits");
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let applied = b
        .replica
        .apply_txns(all_txns(&store).await)
        .await
        .expect("apply");
    assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);

    let on_node = blocking(|| store.get("tasks", &t1))
        .expect("get")
        .expect("t1");
    assert_eq!(
        on_node["status"],
        json!("running"),
        "priority: running beats completed"
    );
    assert_eq!(
        on_node["retry_count"],
        json!(3),
        "central +1 and offline +2"
    );
    assert_eq!(
        task_row(&b.conn, &t1).await,
        Some(on_node),
        "Postgres equals the node"
    );
    assert_eq!(
        blocking(|| store.get("tasks", &t2)).expect("get"),
        None,
        "delete wins on the node"
    );
    assert_eq!(task_row(&b.conn, &t2).await, None, "and in Postgres");
    blocking(|| store.close()).expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistyped_changes_are_refused_recorded_and_reported_in_sync_status() {
    let b = bridge("refuse").await;
    // A node on an older, untyped schema writes values the PMOVES types refuse.
    let dir = tempfile::tempdir().expect("tempdir");
    let sloppy = Store::open(dir.path(), OpenOptions::default()).expect("schemaless store");
    let (good, bad) = (named_id("good"), named_id("bad"));
    blocking(|| {
        sloppy.put(
            "tasks",
            json!({"id": good, "status": "queued", "retry_count": 1}),
        )?;
        sloppy.put("tasks", json!({"id": bad, "status": 7, "retry_count": 1}))?;
        sloppy.put("tasks", json!({"id": "not-a-uuid", "status": "queued"}))?;
        Ok::<_, meshlite_core::store::WriteError>(())
    })
    .expect("schemaless writes");
    let applied = b
        .replica
        .apply_txns(all_txns(&sloppy).await)
        .await
        .expect("apply");
    assert_eq!(
        applied.new, 1,
        "only the well-typed record: {:?}",
        applied.rejected
    );
    assert_eq!(applied.rejected.len(), 2, "{:?}", applied.rejected);
    let reasons: Vec<&str> = applied.rejected.iter().map(|(_, r)| r.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("tasks.status") && r.contains('7')),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("not-a-uuid")),
        "{reasons:?}"
    );
    assert!(task_row(&b.conn, &good).await.is_some());
    assert_eq!(task_row(&b.conn, &bad).await, None, "never written");

    let client = b.conn.client();
    let recorded: i64 = client
        .query_one(
            "SELECT count(*) FROM meshlite.rejected WHERE source = 'peer' AND collection = 'tasks'",
            &[],
        )
        .await
        .expect("rejected")
        .get(0);
    assert_eq!(recorded, 2, "operators see what was refused");
    let status = client
        .query_one(
            "SELECT s.last_sync_status, s.failed_records, s.last_error IS NOT NULL, h.health_status \
             FROM public.sync_status s JOIN public.sync_health h USING (service_name, table_name) \
             WHERE s.service_name = meshlite.service_name($1) AND s.table_name = 'tasks'",
            &[&sloppy.replica_id().0.as_slice()],
        )
        .await
        .expect("sync_status row for the node");
    let status: (String, i32, bool, String) =
        (status.get(0), status.get(1), status.get(2), status.get(3));
    assert_eq!(status, ("failed".into(), 2, true, "healthy".into()));
    blocking(|| sloppy.close()).expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_log_inserts_reach_nodes_and_log_rewrites_are_refused_and_recorded() {
    let b = bridge("central-log").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = node(&dir);
    let client = b.conn.client();
    // A central insert that leaves the id to the table, and one that names it (untyped
    // `indexed` fields are jsonb columns).
    client
        .batch_execute(
            "INSERT INTO public.sensor_data (device_id, sensor_type, _extra) \
             VALUES ('\"pi-7\"', '\"temp\"', '{\"value\": 21.5}'); \
             INSERT INTO public.sensor_data (id, device_id, sensor_type) \
             VALUES ('central-1', '\"pi-8\"', '\"humidity\"');",
        )
        .await
        .expect("central inserts");
    assert_eq!(
        b.replica.consume_outbox(100).await.expect("consume"),
        2,
        "each central log insert is an append of the bridge"
    );
    let me = b.replica.replica_id();
    let central = own_txns(&b, 2).await;
    let report = blocking(|| store.apply_remote(central)).expect("node applies");
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let pg_rows = client
        .query(
            "SELECT id, jsonb_strip_nulls(to_jsonb(t) - 'id' - '_extra' - '_origin' - '_synced_at' || t._extra), \
                    _origin FROM public.sensor_data t ORDER BY id",
            &[],
        )
        .await
        .expect("log rows");
    assert_eq!(pg_rows.len(), 2);
    for row in &pg_rows {
        let id: String = row.get(0);
        let on_node = blocking(|| store.get("sensor_data", &id))
            .expect("get")
            .unwrap_or_else(|| panic!("{id} reached the node"));
        // The central append's row names no key; the node shows the op's id as its key, as for
        // every received log row.
        let mut want = row.get::<_, Value>(1);
        want["id"] = Value::String(id.clone());
        assert_eq!(on_node, want, "node equals Postgres, with its key");
        assert_eq!(
            row.get::<_, String>(2),
            me.to_hex(),
            "the bridge is the origin"
        );
    }

    // Rewriting log rows centrally changes nothing and is recorded as refused.
    let updated = client
        .execute("UPDATE public.sensor_data SET device_id = '\"x\"'", &[])
        .await
        .expect("update");
    let deleted = client
        .execute("DELETE FROM public.sensor_data WHERE id = 'central-1'", &[])
        .await
        .expect("delete");
    assert_eq!((updated, deleted), (0, 0), "the rows are kept");
    assert_eq!(
        b.replica.consume_outbox(100).await.expect("consume"),
        0,
        "nothing reaches the fleet"
    );
    let refused: Vec<(String, String)> = client
        .query(
            "SELECT op, reason FROM meshlite.rejected \
             WHERE source = 'central' AND collection = 'sensor_data' ORDER BY id",
            &[],
        )
        .await
        .expect("rejected")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let ops: Vec<&str> = refused.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(ops, ["UPDATE", "UPDATE", "DELETE"], "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|(_, reason)| reason.contains("immutable")),
        "{refused:?}"
    );
    let devices: Vec<String> = client
        .query(
            "SELECT device_id #>> '{}' FROM public.sensor_data ORDER BY id",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(devices.len(), 2);
    assert!(devices.iter().all(|d| d != "x"), "{devices:?}");
    blocking(|| store.close()).expect("close");
}

/// Rows of the conflict audit for one record: (field, policy, winner).
async fn audit_of(conn: &PgConn, id: &str) -> Vec<(String, String, Value)> {
    let rows = conn
        .client()
        .query(
            "SELECT field, policy, winner FROM meshlite.conflicts \
             WHERE collection = 'tasks' AND record_id = $1 ORDER BY id",
            &[&id],
        )
        .await
        .expect("conflicts");
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_changed_by_many_transactions_of_one_batch_merges_once_and_is_audited() {
    let b = bridge("one-batch").await;
    let (da, db) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (a, n2, t1) = two_nodes_with_one_task(&da, &db).await;
    blocking(|| {
        for (i, status) in ["queued", "running"].iter().enumerate() {
            a.put(
                "tasks",
                json!({"id": t1, "status": status, "title": format!("a{i}")}),
            )?;
        }
        n2.put(
            "tasks",
            json!({"id": t1, "status": "completed", "title": "from b"}),
        )?;
        n2.increment("tasks", &t1, "retry_count", 3)?;
        Ok::<_, meshlite_core::store::WriteError>(())
    })
    .expect("concurrent edits");
    // One call, one batch: a's base and two updates interleaved with b's concurrent two.
    let (from_a, from_b) = (all_txns(&a).await, all_txns(&n2).await);
    let mut batch = from_a.clone();
    batch.extend(
        from_b
            .iter()
            .filter(|t| t.id.origin == n2.replica_id())
            .cloned(),
    );
    batch.extend(from_a.iter().take(1).cloned()); // a duplicate inside the batch
    let applied = b.replica.apply_txns(batch.clone()).await.expect("apply");
    assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);
    assert_eq!((applied.new, applied.duplicates), (batch.len() - 1, 1));

    blocking(|| a.apply_remote(from_b)).expect("a gets b");
    let merged = blocking(|| a.get("tasks", &t1)).expect("get").expect("t1");
    assert_eq!(task_row(&b.conn, &t1).await.as_ref(), Some(&merged));
    let audit = audit_of(&b.conn, &t1).await;
    assert!(
        audit.contains(&("status".into(), "priority".into(), merged["status"].clone())),
        "{audit:?}"
    );
    assert!(
        audit.iter().any(|(f, p, _)| f == "title" && p == "lww"),
        "{audit:?}"
    );
    assert!(
        audit.iter().all(|(f, _, _)| f != "retry_count"),
        "{audit:?}"
    );
    // Stored once, as appended change chunks; a second delivery changes nothing.
    let (states, chunks): (i64, i32) = {
        let r = b
            .conn
            .client()
            .query_one(
                "SELECT count(*), max(chunks) FROM meshlite.docs WHERE id = $1",
                &[&t1],
            )
            .await
            .expect("docs");
        (r.get(0), r.get(1))
    };
    assert_eq!(states, 1);
    assert_eq!(chunks as usize, batch.len() - 1, "one chunk per change");
    let again = b.replica.apply_txns(batch.clone()).await.expect("again");
    assert_eq!((again.new, again.duplicates), (0, batch.len()));
    assert_eq!(audit_of(&b.conn, &t1).await, audit, "nothing audited twice");
    for s in [a, n2] {
        blocking(|| s.close().expect("close"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_grow_by_chunks_and_are_compacted_into_snapshots() {
    let b = bridge("chunks").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = node(&dir);
    let t1 = named_id("t1");
    let mut max_chunks = 0;
    for i in 0..80 {
        blocking(|| {
            store.put(
                "tasks",
                json!({"id": t1, "status": "queued", "title": format!("v{i}")}),
            )
        })
        .expect("put");
        let txns = all_txns(&store).await;
        let last = txns.last().cloned().expect("a txn");
        let applied = b.replica.apply_txns(vec![last]).await.expect("apply");
        assert_eq!(applied.new, 1);
        let chunks: i32 = b
            .conn
            .client()
            .query_one("SELECT chunks FROM meshlite.docs WHERE id = $1", &[&t1])
            .await
            .expect("docs")
            .get(0);
        max_chunks = max_chunks.max(chunks);
        let expected = blocking(|| store.get("tasks", &t1)).expect("get");
        assert_eq!(task_row(&b.conn, &t1).await, expected, "after change {i}");
    }
    assert!(
        max_chunks > 1 && max_chunks < meshlite_bridge::replica::batch::COMPACT_CHUNKS,
        "appended, then compacted: {max_chunks}"
    );
    blocking(|| store.close()).expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transaction_among_good_ones_leaves_the_good_ones_applied_exactly_once() {
    let b = bridge("refuse-one").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sloppy = Store::open(dir.path(), OpenOptions::default()).expect("schemaless store");
    let ids: Vec<String> = (0..6).map(|i| named_id(&format!("g{i}"))).collect();
    blocking(|| {
        for (i, id) in ids.iter().enumerate() {
            sloppy.put(
                "tasks",
                json!({"id": id, "status": "queued", "title": "v1"}),
            )?;
            if i == 3 {
                sloppy.put("tasks", json!({"id": named_id("bad"), "status": 7}))?;
            }
            sloppy.put("tasks", json!({"id": id, "title": "v2"}))?;
        }
        Ok::<_, meshlite_core::store::WriteError>(())
    })
    .expect("writes");
    let txns = all_txns(&sloppy).await;
    let applied = b.replica.apply_txns(txns.clone()).await.expect("apply");
    assert_eq!((applied.new, applied.rejected.len()), (txns.len() - 1, 1));
    for id in &ids {
        let expected = blocking(|| sloppy.get("tasks", id)).expect("get");
        let row = task_row(&b.conn, id).await.expect("row");
        assert_eq!(row["title"], json!("v2"), "{id}");
        assert_eq!(Some(&row["title"]), expected.as_ref().map(|e| &e["title"]));
    }
    assert_eq!(task_row(&b.conn, &named_id("bad")).await, None);
    let again = b.replica.apply_txns(txns.clone()).await.expect("again");
    assert_eq!(
        (again.new, again.duplicates, again.rejected.len()),
        (0, txns.len() - 1, 1),
        "the good ones are held once; the bad one is refused again"
    );
    let stored: i64 = b
        .conn
        .client()
        .query_one("SELECT count(*) FROM meshlite.txns", &[])
        .await
        .expect("txns")
        .get(0);
    assert_eq!(stored as usize, txns.len() - 1);
    blocking(|| sloppy.close()).expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bridges_creating_the_same_records_concurrently_lose_no_change() {
    let url = PgServer::shared().database("two-new");
    let (b1, b2) = (
        bridge_on(url.clone(), "new-one").await,
        bridge_on(url, "new-two").await,
    );
    let (da, db) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (a, n2) = (node(&da), node(&db));
    let ids: Vec<String> = (0..60).map(|i| named_id(&format!("n{i}"))).collect();
    blocking(|| {
        for id in &ids {
            a.put(
                "tasks",
                json!({"id": id, "status": "queued", "title": "from a"}),
            )?;
            a.increment("tasks", id, "retry_count", 1)?;
            n2.put(
                "tasks",
                json!({"id": id, "status": "running", "priority": 3}),
            )?;
            n2.increment("tasks", id, "retry_count", 2)?;
        }
        Ok::<_, meshlite_core::store::WriteError>(())
    })
    .expect("writes on both nodes, neither knowing the other's");
    let (from_a, from_b) = (all_txns(&a).await, all_txns(&n2).await);
    let (r1, r2) = tokio::join!(
        b1.replica.apply_txns(from_a.clone()),
        b2.replica.apply_txns(from_b.clone())
    );
    let (r1, r2) = (r1.expect("bridge one"), r2.expect("bridge two"));
    assert_eq!(r1.new + r2.new, from_a.len() + from_b.len());
    blocking(|| a.apply_remote(from_b)).expect("a gets b");
    for id in &ids {
        let merged = blocking(|| a.get("tasks", id)).expect("get").expect("row");
        assert_eq!(merged["retry_count"], json!(3), "{id}");
        assert_eq!(task_row(&b1.conn, id).await.as_ref(), Some(&merged), "{id}");
    }
    for s in [a, n2] {
        blocking(|| s.close().expect("close"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_id_reused_by_another_node_keeps_the_first_row_and_holds_both_transactions() {
    // Log rows and transactions go by COPY, which has no ON CONFLICT: the reused id makes that
    // attempt fail, and the batch goes again with the statements that skip existing ids.
    let b = bridge("log-id-reuse").await;
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (a, z) = (node(&dir_a), node(&dir_b));
    blocking(|| {
        a.append(
            "sensor_data",
            json!({"id": "same", "device_id": "a", "temp_c": 1.0}),
        )?;
        a.append(
            "sensor_data",
            json!({"id": "a2", "device_id": "a", "temp_c": 2.0}),
        )?;
        z.append(
            "sensor_data",
            json!({"id": "same", "device_id": "z", "temp_c": 9.0}),
        )?;
        z.append(
            "sensor_data",
            json!({"id": "z2", "device_id": "z", "temp_c": 3.0}),
        )?;
        Ok::<_, meshlite_core::store::WriteError>(())
    })
    .expect("appends");
    let first = all_txns(&a).await;
    let applied = b.replica.apply_txns(first.clone()).await.expect("first");
    assert_eq!((applied.new, applied.rejected.len()), (2, 0));
    let second = all_txns(&z).await;
    let applied = b.replica.apply_txns(second.clone()).await.expect("second");
    assert_eq!((applied.new, applied.rejected.len()), (2, 0), "{applied:?}");
    let rows = b
        .conn
        .client()
        .query(
            "SELECT id::text, to_jsonb(device_id) #>> '{}' FROM public.sensor_data ORDER BY id",
            &[],
        )
        .await
        .expect("rows");
    let rows: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let want = [("a2", "a"), ("same", "a"), ("z2", "z")];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(i, d)| (i.to_string(), d.to_string()))
        .collect();
    assert_eq!(rows, want, "the first row of an id stays");
    let again = b.replica.apply_txns(second).await.expect("again");
    assert_eq!(
        (again.new, again.duplicates),
        (0, 2),
        "both transactions are held"
    );
    let stored: i64 = b
        .conn
        .client()
        .query_one("SELECT count(*) FROM meshlite.txns", &[])
        .await
        .expect("txns")
        .get(0);
    assert_eq!(stored, 4);
    blocking(|| a.close()).expect("close a");
    blocking(|| z.close()).expect("close z");
}

/// A change to an old incarnation that arrives after the record was re-created (its delete not
/// yet received) is held but never shown: the set-based path finds the later incarnation's
/// state with the same lookup that locks the record's row, and the table keeps the new
/// incarnation's value. The delete, arriving last, settles everything as on the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_change_to_an_old_incarnation_is_held_but_not_shown() {
    let b = bridge("late_incarnation").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = node(&dir);
    let t1 = named_id("t1");
    blocking(|| {
        store.put(
            "tasks",
            json!({"id": t1, "status": "queued", "title": "first"}),
        )?;
        store.put(
            "tasks",
            json!({"id": t1, "status": "running", "title": "old"}),
        )?;
        store.delete("tasks", &t1)?;
        store.recreate(
            "tasks",
            json!({"id": t1, "status": "queued", "title": "second"}),
        )?;
        Ok::<_, meshlite_core::store::WriteError>(())
    })
    .expect("node writes");
    let txns = all_txns(&store).await;
    assert_eq!(txns.len(), 4);
    let (first, late, delete, second) = (&txns[0], &txns[1], &txns[2], &txns[3]);
    let applied = b
        .replica
        .apply_txns(vec![first.clone(), second.clone()])
        .await
        .expect("apply");
    assert_eq!(applied.new, 2);
    let expected = blocking(|| store.get("tasks", &t1)).expect("get");
    assert_eq!(
        task_row(&b.conn, &t1).await,
        expected,
        "the second incarnation"
    );
    let applied = b
        .replica
        .apply_txns(vec![late.clone()])
        .await
        .expect("apply late");
    assert_eq!((applied.new, applied.rejected.len()), (1, 0));
    assert_eq!(
        task_row(&b.conn, &t1).await,
        expected,
        "a change to the old incarnation does not show"
    );
    b.replica
        .apply_txns(vec![delete.clone()])
        .await
        .expect("apply delete");
    assert_eq!(task_row(&b.conn, &t1).await, expected, "still the second");
    assert_eq!(
        b.replica.summary().await.expect("summary"),
        blocking(|| store.summary()).expect("summary")
    );
    blocking(|| store.close()).expect("close");
}
