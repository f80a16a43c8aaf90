//! The bridge's Postgres foundation against a real server (the fixtures' throwaway cluster, or
//! `DATABASE_URL`): migrations, typed tables, hostile names, Supabase grants and publication,
//! the outbox trigger and seed 002's sync_status. Each test gets its own database.

use std::path::PathBuf;

use meshlite_bridge::config::Config;
use meshlite_bridge::ddl::{self, TableSpec};
use meshlite_bridge::migrations::{self, MIGRATIONS, Schemas};
use meshlite_bridge::pg::{PgConn, PgTarget};
use meshlite_bridge::{service, state};
use meshlite_core::schema::{CollectionDef, MergePolicy, Schema};
use meshlite_fixtures::postgres::PgServer;

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(path)
}

/// A fresh database and a configuration pointing at it, with the PMOVES schema.
fn setup(name: &str) -> (String, Config) {
    let url = PgServer::shared().database(name);
    let mut config = Config::default();
    config.postgres.url = Some(url.clone());
    config.bridge.schema = Some(fixture("schemas/pmoves.toml"));
    config.validate().expect("valid test config");
    (url, config)
}

async fn connect(config: &Config) -> PgConn {
    config
        .pg_target()
        .expect("test URL")
        .connect()
        .await
        .expect("connect to the test database")
}

async fn query_strings(conn: &PgConn, sql: &str) -> Vec<String> {
    let rows = conn.client().query(sql, &[]).await.expect(sql);
    rows.iter().map(|r| r.get::<_, String>(0)).collect()
}

/// Task ids for SQL written by hand (the PMOVES tables are keyed by uuid).
const A: &str = "00000000-0000-4000-8000-00000000000a";
const B: &str = "00000000-0000-4000-8000-00000000000b";

/// (table, pk, op, new status, old status) of one outbox row.
type OutboxRow = (String, String, String, Option<String>, Option<String>);

async fn column_types(conn: &PgConn, table: &str) -> Vec<String> {
    let sql = format!(
        "SELECT column_name || ' ' || data_type FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = '{table}' ORDER BY column_name"
    );
    query_strings(conn, &sql).await
}

#[tokio::test]
async fn migrations_are_idempotent_and_concurrent_migrators_do_not_conflict() {
    let (_, config) = setup("migrate");
    let schemas = config.schemas().unwrap();
    let (mut a, mut b) = (connect(&config).await, connect(&config).await);
    let (ra, rb) = tokio::join!(
        migrations::migrate(a.client_mut(), &schemas),
        migrations::migrate(b.client_mut(), &schemas)
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let mut all: Vec<i32> = ra.applied.iter().chain(&rb.applied).copied().collect();
    all.sort();
    let expected: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(
        all, expected,
        "each step applied exactly once: {ra:?} {rb:?}"
    );

    let again = migrations::migrate(a.client_mut(), &schemas).await.unwrap();
    assert!(again.applied.is_empty(), "{again:?}");

    // A bridge keeps its origin across restarts, and two processes of one name agree.
    let (id1, id2) = tokio::join!(
        state::bridge_replica_id(a.client(), &schemas, "central-1"),
        state::bridge_replica_id(b.client(), &schemas, "central-1")
    );
    assert_eq!(id1.unwrap(), id2.unwrap());
    let other = state::bridge_replica_id(a.client(), &schemas, "central-2")
        .await
        .unwrap();
    assert_ne!(
        Some(other),
        state::bridge_replica_id(a.client(), &schemas, "central-1")
            .await
            .ok()
    );
    let tables = query_strings(
        &a,
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'meshlite' ORDER BY 1",
    )
    .await;
    for t in [
        "bridges",
        "conflicts",
        "docs",
        "meta",
        "migrations",
        "nodes",
        "origins",
        "outbox",
        "parked",
        "peer_acks",
        "rejected",
        "tombstones",
        "txns",
    ] {
        assert!(
            tables.iter().any(|x| x == t),
            "missing meshlite.{t}: {tables:?}"
        );
    }
    // The held-ranges multirange merges adjacent ranges by itself.
    let held: String = a
        .client()
        .query_one(
            "INSERT INTO meshlite.origins (origin, held) VALUES ($1, \
             '{[1,3]}'::int8multirange + '{[4,4]}'::int8multirange + '{[9,9]}'::int8multirange) \
             RETURNING held::text || ' max ' || max_seq",
            &[&vec![7u8; 16]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, "{[1,5),[9,10)} max 9");
}

#[tokio::test]
async fn tables_are_typed_extended_and_hostile_names_are_refused() {
    let (_, config) = setup("ddl");
    let mut conn = connect(&config).await;
    let tables = service::load_tables(&config).unwrap();
    // A column of another type is reported, and nothing is created.
    conn.client()
        .batch_execute("CREATE TABLE public.jobs (id text PRIMARY KEY, retry_count text)")
        .await
        .unwrap();
    let e = service::prepare(&mut conn, &config, &tables)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("jobs.retry_count is text but the schema needs bigint"),
        "{e}"
    );
    assert!(column_types(&conn, "tasks").await.is_empty());
    conn.client()
        .batch_execute("DROP TABLE public.jobs")
        .await
        .unwrap();
    service::prepare(&mut conn, &config, &tables).await.unwrap();

    let tasks = column_types(&conn, "tasks").await;
    for col in [
        "_extra jsonb",
        "_origin text",
        "_synced_at timestamp with time zone",
        "agent_id uuid",
        "id uuid",
        "input jsonb",
        "notes text",
        "retry_count bigint",
        "status text",
        "updated_at timestamp with time zone",
    ] {
        assert!(
            tasks.iter().any(|c| c == col),
            "tasks lacks {col}: {tasks:?}"
        );
    }
    assert_eq!(
        tasks.iter().filter(|c| c.starts_with("updated_at")).count(),
        1
    );
    let log = column_types(&conn, "device_metrics").await;
    assert!(log.iter().any(|c| c == "device_id jsonb"), "{log:?}");

    // A field added to the schema becomes a column; running again changes nothing else.
    let mut schema = Schema::from_file(&fixture("schemas/pmoves.toml")).unwrap();
    let def = schema.collections.get_mut("tasks").unwrap();
    def.fields
        .insert("attempts".into(), MergePolicy::Counter.into());
    schema
        .collections
        .insert("new_things".into(), CollectionDef::default());
    let tables = ddl::tables_from_schema(&schema, &[]).unwrap();
    let schemas = config.schemas().unwrap();
    let grants = config.grants().unwrap();
    conn.client()
        .batch_execute("INSERT INTO public.tasks (id, status) VALUES ('00000000-0000-4000-8000-00000000000a', 'running')")
        .await
        .unwrap();
    ddl::apply(conn.client_mut(), &schemas, &tables, &grants)
        .await
        .unwrap();
    ddl::apply(conn.client_mut(), &schemas, &tables, &grants)
        .await
        .unwrap();
    assert!(
        column_types(&conn, "tasks")
            .await
            .iter()
            .any(|c| c == "attempts bigint")
    );
    assert_eq!(column_types(&conn, "new_things").await.len(), 4);
    let kept = query_strings(
        &conn,
        &format!("SELECT status::text FROM public.tasks WHERE id = '{A}'"),
    )
    .await;
    assert_eq!(kept, ["running"]);

    // Log rows are immutable for everyone but the bridge: an UPDATE changes nothing and is
    // captured (the bridge records it as refused); an INSERT is captured as an append.
    conn.client()
        .batch_execute("INSERT INTO public.device_metrics (id) VALUES ('m1')")
        .await
        .unwrap();
    let updated = conn
        .client()
        .execute("UPDATE public.device_metrics SET _origin = 'x'", &[])
        .await
        .unwrap();
    assert_eq!(updated, 0, "the row is kept");
    let captured = query_strings(
        &conn,
        "SELECT op || ' ' || pk FROM meshlite.outbox WHERE table_name = 'device_metrics' ORDER BY id",
    )
    .await;
    assert_eq!(captured, ["INSERT m1", "UPDATE m1"]);
    // TRUNCATE fires no row trigger, so it is refused rather than missed.
    let e = conn
        .client()
        .batch_execute("TRUNCATE public.tasks")
        .await
        .unwrap_err();
    assert!(
        e.as_db_error().unwrap().message().contains("TRUNCATE"),
        "{e}"
    );

    // Reserved words are fine (always quoted); hostile names never reach SQL.
    let words = Schema::from_toml(
        "[collections.order]\nprimary_key = \"user\"\n[collections.order.fields]\nselect = { merge = \"max\" }",
    )
    .unwrap();
    let words = ddl::tables_from_schema(&words, &[]).unwrap();
    ddl::apply(conn.client_mut(), &schemas, &words, &grants)
        .await
        .unwrap();
    assert_eq!(column_types(&conn, "order").await.len(), 5);
    // 63-byte names (Postgres' limit) arrive whole; their derived index name stays unique.
    let (t63, f63) = ("t".repeat(63), "f".repeat(63));
    let long = Schema::from_toml(&format!(
        "[collections.{t63}]\nindexed = [\"{f63}\"]\n[collections.{t63}.fields]\n{f63} = {{ merge = \"max\" }}"
    ))
    .unwrap();
    let long = ddl::tables_from_schema(&long, &[]).unwrap();
    ddl::apply(conn.client_mut(), &schemas, &long, &grants)
        .await
        .unwrap();
    assert!(
        column_types(&conn, &t63)
            .await
            .contains(&format!("{f63} jsonb"))
    );
    let indexes = query_strings(
        &conn,
        &format!("SELECT indexname::text FROM pg_indexes WHERE tablename = '{t63}' ORDER BY 1"),
    )
    .await;
    assert_eq!(
        indexes.len(),
        2,
        "primary key + the field's index: {indexes:?}"
    );

    let before = query_strings(&conn, "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'").await;
    for (table, field) in [
        ("tasks\"; DROP TABLE public.jobs; --", "x"),
        ("ok_table", "a b"),
        ("ok_table", "x'); DROP TABLE public.jobs; --"),
        ("ok_table", &"f".repeat(64)),
        ("", "x"),
        ("Tasks", "x"),
    ] {
        let mut def = CollectionDef::default();
        def.fields.insert(field.to_owned(), MergePolicy::Lww.into());
        let refused: Result<TableSpec, _> = ddl::table_spec(table, &def);
        assert!(refused.is_err(), "{table:?}.{field:?} accepted");
    }
    for bad in ["public; DROP SCHEMA meshlite", "Public", ""] {
        let mut c = config.clone();
        c.postgres.table_schema = bad.into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("postgres.table_schema"), "{e}");
    }
    let after = query_strings(&conn, "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'").await;
    assert_eq!(before, after);
}

#[tokio::test]
async fn supabase_roles_get_grants_and_tables_join_the_realtime_publication() {
    let (url, config) = setup("supabase");
    let shape = std::fs::read_to_string(fixture("sql/supabase_shape.sql")).unwrap();
    PgServer::psql(&url, &shape);
    let mut conn = connect(&config).await;
    // A table already in the publication must not make the bridge fail.
    conn.client()
        .batch_execute(
            "CREATE TABLE public.jobs (id uuid PRIMARY KEY); \
             ALTER PUBLICATION supabase_realtime ADD TABLE public.jobs;",
        )
        .await
        .unwrap();
    let tables = service::load_tables(&config).unwrap();
    service::prepare(&mut conn, &config, &tables).await.unwrap();
    service::prepare(&mut conn, &config, &tables).await.unwrap();

    let privileges = |role: &str, table: &str, privilege: &str| {
        format!("SELECT has_table_privilege('{role}', 'public.{table}', '{privilege}')::text")
    };
    for (role, table, privilege, expected) in [
        ("anon", "tasks", "SELECT", "true"),
        ("anon", "tasks", "INSERT", "false"),
        ("authenticated", "device_metrics", "SELECT", "true"),
        ("authenticated", "jobs", "UPDATE", "false"),
        ("service_role", "tasks", "INSERT", "true"),
        ("service_role", "jobs", "DELETE", "true"),
        ("anon", "sync_health", "SELECT", "true"),
    ] {
        let got = query_strings(&conn, &privileges(role, table, privilege)).await;
        assert_eq!(got, [expected], "{role} {privilege} on {table}");
    }
    let published = query_strings(
        &conn,
        "SELECT tablename::text FROM pg_publication_tables \
         WHERE pubname = 'supabase_realtime' AND schemaname = 'public' ORDER BY 1",
    )
    .await;
    let mut expected: Vec<String> = tables.iter().map(|t| t.name.as_str().to_owned()).collect();
    expected.sort();
    assert_eq!(published, expected);
    let uid = query_strings(&conn, "SELECT coalesce(auth.uid()::text, 'none')").await;
    assert_eq!(uid, ["none"]);
}

#[tokio::test]
async fn outbox_captures_central_edits_but_not_the_bridges_own() {
    let (url, config) = setup("outbox");
    let mut conn = connect(&config).await;
    let tables = service::load_tables(&config).unwrap();
    service::prepare(&mut conn, &config, &tables).await.unwrap();

    // Another session (psql) edits the table with plain SQL.
    PgServer::psql(
        &url,
        "INSERT INTO public.tasks (id, status, retry_count) VALUES ('00000000-0000-4000-8000-00000000000a', 'pending', 0); \
         UPDATE public.tasks SET status = 'running', retry_count = 1 WHERE id = '00000000-0000-4000-8000-00000000000a';",
    );
    // The bridge's own writes (SET LOCAL meshlite.bridge = 'on') are not captured.
    let tx = state::bridge_transaction(conn.client_mut()).await.unwrap();
    tx.batch_execute(
        "UPDATE public.tasks SET status = 'failed' WHERE id = '00000000-0000-4000-8000-00000000000a'; \
         INSERT INTO public.tasks (id) VALUES ('00000000-0000-4000-8000-00000000000b');",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    PgServer::psql(
        &url,
        "BEGIN; SET LOCAL meshlite.bridge = 'on'; UPDATE public.tasks SET retry_count = 2; COMMIT;",
    );
    // ... and the setting does not leak into the session's next transaction.
    PgServer::psql(
        &url,
        "DELETE FROM public.tasks WHERE id = '00000000-0000-4000-8000-00000000000b'",
    );

    let rows = conn
        .client()
        .query(
            "SELECT table_name, pk, op, new_row->>'status', old_row->>'status', db_user \
             FROM meshlite.outbox ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<OutboxRow> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        got,
        [
            (
                "tasks".into(),
                A.into(),
                "INSERT".into(),
                s("pending"),
                None
            ),
            (
                "tasks".into(),
                A.into(),
                "UPDATE".into(),
                s("running"),
                s("pending")
            ),
            ("tasks".into(), B.into(), "DELETE".into(), None, None),
        ]
    );
    // The bridge session's later transaction (without SET LOCAL) is captured again.
    conn.client()
        .batch_execute("UPDATE public.tasks SET retry_count = 5 WHERE id = '00000000-0000-4000-8000-00000000000a'")
        .await
        .unwrap();
    let n: i64 = conn
        .client()
        .query_one("SELECT count(*) FROM meshlite.outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4);
}

#[tokio::test]
async fn sync_status_is_the_seeds_table_with_its_health_view() {
    let (_, config) = setup("status");
    let mut conn = connect(&config).await;
    service::prepare(&mut conn, &config, &[]).await.unwrap();
    let cols = column_types(&conn, "sync_status").await;
    assert_eq!(
        cols,
        [
            "failed_records integer",
            "id uuid",
            "last_error text",
            "last_sync_at timestamp without time zone",
            "last_sync_status text",
            "pending_records integer",
            "service_name text",
            "table_name text",
            "updated_at timestamp without time zone",
        ]
    );
    conn.client()
        .batch_execute(
            "INSERT INTO public.sync_status (service_name, table_name, last_sync_at, pending_records, failed_records) VALUES \
             ('n1', 'jobs', now() - interval '10 minutes', 0, 0), \
             ('n1', 'tasks', now(), 0, 101), \
             ('n2', 'jobs', now(), 1001, 0), \
             ('n2', 'tasks', now(), 3, 1);",
        )
        .await
        .unwrap();
    let health = query_strings(
        &conn,
        "SELECT service_name || '/' || table_name || '=' || health_status FROM public.sync_health",
    )
    .await;
    assert_eq!(
        health,
        [
            "n1/jobs=stale",
            "n1/tasks=failing",
            "n2/jobs=lagging",
            "n2/tasks=healthy"
        ]
    );
    // One row per (node, table): the bridge upserts.
    let dup = conn
        .client()
        .batch_execute(
            "INSERT INTO public.sync_status (service_name, table_name) VALUES ('n1', 'jobs')",
        )
        .await;
    assert!(dup.is_err());
}

#[test]
fn the_url_forms_supabase_prints_are_accepted() {
    let t = std::time::Duration::from_secs(1);
    for url in [
        "postgresql://postgres:pw@db.abc.supabase.co:5432/postgres",
        "postgres://postgres.abc:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres?sslmode=require",
    ] {
        PgTarget::parse(url, t).unwrap();
    }
    let _: Schemas = Config::default().schemas().unwrap();
}

/// Migration 7 on a database left at migration 6 with transactions in it: the stored bytes
/// stay as they were, new transactions of a few KB are stored inline and uncompressed, and
/// running the migrations again does nothing.
#[tokio::test]
async fn txns_inline_migration_upgrades_a_populated_v6_database() {
    let (_, config) = setup("txns_inline");
    let schemas = config.schemas().unwrap();
    let mut conn = connect(&config).await;
    let previous: Vec<_> = MIGRATIONS.iter().filter(|m| m.version <= 6).collect();
    assert_eq!(previous.len(), 6, "migrations 1..=6 exist");
    let c = conn.client_mut();
    c.batch_execute(
        "CREATE SCHEMA meshlite; CREATE TABLE meshlite.migrations (version integer PRIMARY KEY, \
         name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .unwrap();
    for m in &previous {
        let tx = c.transaction().await.unwrap();
        tx.batch_execute(&(m.sql)(&schemas)).await.unwrap();
        tx.execute(
            "INSERT INTO meshlite.migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    // A compressible transaction of ≈ 3 KB, stored under the old layout.
    let old: Vec<u8> = (0..3000u32).map(|i| (i % 7) as u8).collect();
    let insert = "INSERT INTO meshlite.txns (origin, seq, bytes) VALUES ($1, $2, $3)";
    c.execute(insert, &[&vec![1u8; 16], &1i64, &old])
        .await
        .unwrap();
    let report = migrations::migrate(c, &schemas).await.unwrap();
    let later: Vec<i32> = MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|v| *v >= 7)
        .collect();
    assert_eq!(report.applied, later);
    let options = query_strings(
        &conn,
        "SELECT array_to_string(reloptions, ',') FROM pg_class \
         WHERE oid = 'meshlite.txns'::regclass",
    )
    .await;
    assert_eq!(options, vec!["toast_tuple_target=8160".to_owned()]);
    let c = conn.client_mut();
    c.execute(insert, &[&vec![1u8; 16], &2i64, &old])
        .await
        .unwrap();
    let rows = c
        .query(
            "SELECT seq, bytes, coalesce(pg_column_compression(bytes), 'none') \
             FROM meshlite.txns ORDER BY seq",
            &[],
        )
        .await
        .unwrap();
    let seen: Vec<(i64, Vec<u8>, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, old.clone(), "pglz".to_owned()),
            (2, old.clone(), "none".to_owned())
        ],
        "the old row as it was, the new one inline and uncompressed"
    );
    let again = migrations::migrate(conn.client_mut(), &schemas)
        .await
        .unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
}

/// Migration 8: the audit table keeps the B-trees its queries use (a record's, a field's
/// conflicts), a BRIN for time ranges, and no index on the `origins` the bridge leaves empty.
#[tokio::test]
async fn the_conflict_audit_keeps_the_indexes_its_queries_use() {
    let (_, config) = setup("conflict_indexes");
    let schemas = config.schemas().unwrap();
    let mut conn = connect(&config).await;
    migrations::migrate(conn.client_mut(), &schemas)
        .await
        .unwrap();
    let indexes = query_strings(
        &conn,
        "SELECT indexname || ' ' || split_part(indexdef, ' USING ', 2) FROM pg_indexes \
         WHERE schemaname = 'meshlite' AND tablename = 'conflicts' ORDER BY 1",
    )
    .await;
    assert_eq!(
        indexes,
        [
            "conflicts_field btree (collection, field, recorded_at DESC)",
            "conflicts_pkey btree (id)",
            "conflicts_record btree (collection, record_id, recorded_at DESC)",
            "conflicts_recorded_at brin (recorded_at)",
        ]
    );
}
