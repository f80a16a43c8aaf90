//! The bridge's own Postgres objects as named, versioned, idempotent migrations.
//!
//! Each migration runs in its own Postgres transaction that first takes a transaction-scoped
//! advisory lock ([`lock_key`], derived from the state schema name), then re-reads
//! `<state>.migrations` and applies the step only if it is not recorded, recording it in the same
//! transaction. Two bridges starting at once therefore apply each step exactly once: the second
//! waits on the lock and then finds the step recorded. Every statement is also written to be
//! idempotent (`IF NOT EXISTS`, `CREATE OR REPLACE`), so a step recorded by hand or half-applied by
//! an operator still converges. Never edit a released step: add a new one.
//!
//! # Where things live
//! - the state schema (default `meshlite`): the bridge's replica state and its operator tables,
//!   documented column by column in the SQL of migration 1 (`state_tables`; `meshlite-bridge
//!   migrate --dry-run` prints it with its comments);
//! - the table schema (default `public`): `sync_status` exactly as seed 002 defines it and the
//!   `sync_health` view with the seed's health query, next to the materialized tables.
//!
//! Requires Postgres 14 or newer (multiranges); Supabase runs 15.

use tokio_postgres::Client;

use crate::pg::Ident;

/// The schemas migrations write into.
#[derive(Debug, Clone)]
pub struct Schemas {
    /// The bridge's own state (`[postgres] state_schema`).
    pub state: Ident,
    /// The materialized tables and `sync_status` (`[postgres] table_schema`).
    pub tables: Ident,
}

/// One step.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version, strictly increasing from 1.
    pub version: i32,
    /// Short name, recorded beside the version.
    pub name: &'static str,
    /// The SQL of the step for the given schemas.
    pub sql: fn(&Schemas) -> String,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "state_tables",
        sql: state_tables,
    },
    Migration {
        version: 2,
        name: "capture_functions",
        sql: capture_functions,
    },
    Migration {
        version: 3,
        name: "sync_status",
        sql: sync_status,
    },
    Migration {
        version: 4,
        name: "central_log_edits",
        sql: central_log_edits,
    },
    Migration {
        version: 5,
        name: "node_names",
        sql: node_names,
    },
    Migration {
        version: 6,
        name: "docs_hot_updates",
        sql: docs_hot_updates,
    },
    Migration {
        version: 7,
        name: "txns_inline",
        sql: txns_inline,
    },
    Migration {
        version: 8,
        name: "conflicts_lighter_indexes",
        sql: conflicts_lighter_indexes,
    },
];

/// Error applying migrations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// A step failed; its transaction was rolled back and nothing of it remains.
    #[error("migration {version} ({name}) failed: {source}")]
    Step {
        /// The step's version.
        version: i32,
        /// The step's name.
        name: &'static str,
        /// Postgres' error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The bookkeeping (lock, migrations table) failed.
    #[error("cannot read or lock {table}: {source}")]
    Bookkeeping {
        /// The table.
        table: String,
        /// Postgres' error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database was migrated by a newer bridge.
    #[error(
        "the database has migration {found} but this bridge knows only up to {known}: upgrade the bridge"
    )]
    TooNew {
        /// Highest recorded version.
        found: i32,
        /// Highest version this build knows.
        known: i32,
    },
}

/// What [`migrate`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateReport {
    /// Versions applied by this call (empty when the database was current).
    pub applied: Vec<i32>,
}

/// The advisory-lock key that serializes bridges migrating the same state schema (also used by
/// DDL). A stable FNV-1a hash, so every bridge build computes the same key.
pub fn lock_key(schemas: &Schemas) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"meshlite-bridge:"
        .iter()
        .chain(schemas.state.as_str().as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

fn bookkeeping_sql(s: &Schemas) -> String {
    let st = &s.state;
    format!(
        "CREATE SCHEMA IF NOT EXISTS {st};
CREATE TABLE IF NOT EXISTS {st}.migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);"
    )
}

/// Applies every migration not yet recorded, each in its own locked transaction.
pub async fn migrate(
    client: &mut Client,
    schemas: &Schemas,
) -> Result<MigrateReport, MigrateError> {
    let table = format!("{}.migrations", schemas.state.as_str());
    let books = |source| MigrateError::Bookkeeping {
        table: table.clone(),
        source,
    };
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    let mut report = MigrateReport::default();
    for m in MIGRATIONS {
        let tx = client.transaction().await.map_err(books)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schemas)])
            .await
            .map_err(books)?;
        tx.batch_execute(&bookkeeping_sql(schemas))
            .await
            .map_err(books)?;
        let found: Option<i32> = tx
            .query_one(
                &format!("SELECT max(version) FROM {}.migrations", schemas.state),
                &[],
            )
            .await
            .map_err(books)?
            .get(0);
        if let Some(found) = found.filter(|f| *f > known) {
            return Err(MigrateError::TooNew { found, known });
        }
        let done = tx
            .query_opt(
                &format!(
                    "SELECT 1 FROM {}.migrations WHERE version = $1",
                    schemas.state
                ),
                &[&m.version],
            )
            .await
            .map_err(books)?
            .is_some();
        if done {
            continue;
        }
        let step = |source| MigrateError::Step {
            version: m.version,
            name: m.name,
            source,
        };
        tx.batch_execute(&(m.sql)(schemas)).await.map_err(step)?;
        tx.execute(
            &format!(
                "INSERT INTO {}.migrations (version, name) VALUES ($1, $2)",
                schemas.state
            ),
            &[&m.version, &m.name],
        )
        .await
        .map_err(step)?;
        tx.commit().await.map_err(step)?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
        report.applied.push(m.version);
    }
    Ok(report)
}

/// The SQL of every migration, for `meshlite-bridge migrate --dry-run`: what would run against an
/// empty database, one commented block per step, each as its own transaction.
pub fn dry_run_sql(schemas: &Schemas) -> String {
    let mut out = format!(
        "-- meshlite-bridge migrations for state schema {} and table schema {}\n\
         -- Each block runs in its own transaction after SELECT pg_advisory_xact_lock({}),\n\
         -- and only if its version is not yet in {}.migrations.\n\n\
         BEGIN;\n{}\nCOMMIT;\n",
        schemas.state,
        schemas.tables,
        lock_key(schemas),
        schemas.state,
        bookkeeping_sql(schemas)
    );
    for m in MIGRATIONS {
        out.push_str(&format!(
            "\n-- migration {} ({})\nBEGIN;\n{}\nINSERT INTO {}.migrations (version, name) VALUES ({}, '{}');\nCOMMIT;\n",
            m.version,
            m.name,
            (m.sql)(schemas).trim(),
            schemas.state,
            m.version,
            m.name
        ));
    }
    out
}

/// Migration 1: the replica state and the operator tables in the state schema.
fn state_tables(s: &Schemas) -> String {
    let st = &s.state;
    format!(
        r#"DO $$ BEGIN
    IF current_setting('server_version_num')::int < 140000 THEN
        RAISE EXCEPTION 'meshlite-bridge needs Postgres 14 or newer (found %)', version();
    END IF;
END $$;

-- The bridges writing this database, one row per bridge process identity.
CREATE TABLE IF NOT EXISTS {st}.bridges (
    name        text PRIMARY KEY,              -- [bridge] name of the process
    replica_id  bytea NOT NULL UNIQUE CHECK (octet_length(replica_id) = 16),
                                               -- its origin for central edits (ReplicaId bytes)
    next_seq    bigint NOT NULL DEFAULT 1 CHECK (next_seq >= 1),
                                               -- next seq it will give a transaction of its own
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_started_at timestamptz                -- when it last started (operator information)
);

-- Key/value facts about this database: e.g. 'schema' (the schema TOML the tables were built
-- for), 'gc_floor' (postcard Summary of garbage-collected history).
CREATE TABLE IF NOT EXISTS {st}.meta (
    key        text PRIMARY KEY,
    value      bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The anti-entropy summary: per origin, the set of transaction seqs held.
CREATE TABLE IF NOT EXISTS {st}.origins (
    origin     bytea PRIMARY KEY CHECK (octet_length(origin) = 16),  -- ReplicaId bytes
    held       int8multirange NOT NULL DEFAULT '{{}}',
               -- seqs held; a discrete multirange, so adding [n,n] merges adjacent ranges and
               -- gaps are int8multirange(int8range(1, upper(held))) - held
    max_seq    bigint GENERATED ALWAYS AS (coalesce(upper(held), 1) - 1) STORED,
                                               -- greatest seq held (0: none), for lag; derived,
                                               -- so it can never disagree with held
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_txn_at   timestamptz                  -- when a transaction of it was last stored
);
COMMENT ON TABLE {st}.origins IS
    'Per-origin summary; lock the row (SELECT ... FOR UPDATE) to extend held in the same transaction as the data';

-- Every held transaction, encoded (core::change::Txn postcard), for relaying to peers.
CREATE TABLE IF NOT EXISTS {st}.txns (
    origin      bytea NOT NULL CHECK (octet_length(origin) = 16),
    seq         bigint NOT NULL CHECK (seq >= 1),
    bytes       bytea NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (origin, seq)                 -- idempotency: a transaction is stored once
);

-- Held transactions whose Automerge changes wait for dependencies not yet received.
CREATE TABLE IF NOT EXISTS {st}.parked (
    origin    bytea NOT NULL CHECK (octet_length(origin) = 16),
    seq       bigint NOT NULL CHECK (seq >= 1),
    bytes     bytea NOT NULL,                  -- the encoded transaction
    parked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (origin, seq)
);

-- Merged Automerge state of each record incarnation: a save() snapshot followed by `chunks`
-- appended change chunks (Automerge::load reads the concatenation). Merge under the row lock.
CREATE TABLE IF NOT EXISTS {st}.docs (
    collection  text NOT NULL,
    id          text NOT NULL,                 -- the record's primary key as text
    incarnation integer NOT NULL CHECK (incarnation >= 1),
    state       bytea NOT NULL,
    chunks      integer NOT NULL DEFAULT 0 CHECK (chunks >= 0),  -- compaction hint
    deleted     boolean NOT NULL DEFAULT false,  -- tombstoned: the row is gone from the table
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, id, incarnation)
);
CREATE INDEX IF NOT EXISTS docs_compaction ON {st}.docs (chunks) WHERE chunks > 16;

-- Deleted incarnations, kept forever ("delete wins"): may arrive before any state of it.
CREATE TABLE IF NOT EXISTS {st}.tombstones (
    collection  text NOT NULL,
    id          text NOT NULL,
    incarnation integer NOT NULL CHECK (incarnation >= 1),
    origin      bytea NOT NULL CHECK (octet_length(origin) = 16),  -- transaction that deleted it
    seq         bigint NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, id, incarnation)
);

-- What each known peer acknowledged holding (for relaying and garbage collection).
CREATE TABLE IF NOT EXISTS {st}.peer_acks (
    peer       bytea PRIMARY KEY CHECK (octet_length(peer) = 16),  -- the peer's ReplicaId
    summary    bytea NOT NULL,                 -- postcard core Summary
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Edits made centrally (SQL, PostgREST) to materialized document tables, captured by trigger in
-- the editing transaction. Consume by deleting processed rows in the transaction that stores
-- the resulting CRDT change (not by a high-water mark: ids are assigned before commit, so a
-- smaller id can become visible later). One consumer at a time keeps per-record order.
CREATE TABLE IF NOT EXISTS {st}.outbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_schema text NOT NULL,
    table_name   text NOT NULL,
    pk           text,                         -- primary key value (NEW's, else OLD's) as text;
                                               -- an UPDATE of the key itself keeps the old key
                                               -- in old_row (treat it as delete + insert)
    op           text NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE')),
    new_row      jsonb,                        -- to_jsonb(NEW); NULL for DELETE
    old_row      jsonb,                        -- to_jsonb(OLD); NULL for INSERT
    txid         bigint NOT NULL,              -- txid_current(): one SQL transaction's edits
    db_user      text NOT NULL,                -- session_user that made the edit
    captured_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS outbox_record ON {st}.outbox (table_name, pk, id);

-- Inputs refused and why: central edits that violate the schema, peer transactions that are
-- malformed or unauthorized. Nothing refused is dropped silently.
CREATE TABLE IF NOT EXISTS {st}.rejected (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      text NOT NULL CHECK (source IN ('central', 'peer', 'relay')),
    collection  text,                          -- table / collection, when known
    record_id   text,
    op          text,                          -- INSERT / UPDATE / DELETE, or the txn op kind
    payload     jsonb,                         -- the refused row or a description of the input
    origin      bytea,                         -- peer inputs: origin and seq of the transaction
    seq         bigint,
    peer        text,                          -- who sent it (node id or address)
    reason      text NOT NULL,                 -- human-readable: what rule it broke
    rejected_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS rejected_recent ON {st}.rejected (rejected_at DESC);
CREATE INDEX IF NOT EXISTS rejected_record ON {st}.rejected (collection, record_id);

-- Conflict audit: one row per field where concurrent values were merged.
CREATE TABLE IF NOT EXISTS {st}.conflicts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    collection  text NOT NULL,
    record_id   text NOT NULL,
    incarnation integer NOT NULL,
    field       text NOT NULL,
    policy      text NOT NULL CHECK (policy IN ('lww', 'counter', 'max', 'min', 'priority', 'text')),
    candidates  jsonb NOT NULL,  -- [{{"value": v, "origin": "<32 hex>", "seq": n}}, ...]
    winner      jsonb,           -- the merged value written to the table (NULL: field removed)
    origins     text[] NOT NULL, -- hex ReplicaIds of the candidates, for filtering
    recorded_by text,            -- the bridge that merged it ({st}.bridges.name)
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS conflicts_record ON {st}.conflicts (collection, record_id, recorded_at DESC);
CREATE INDEX IF NOT EXISTS conflicts_field ON {st}.conflicts (collection, field, recorded_at DESC);
CREATE INDEX IF NOT EXISTS conflicts_recent ON {st}.conflicts (recorded_at DESC);
CREATE INDEX IF NOT EXISTS conflicts_origins ON {st}.conflicts USING gin (origins);

-- The fleet as the bridge sees it (announcements, QUIC sessions, NATS).
CREATE TABLE IF NOT EXISTS {st}.nodes (
    node_id      text PRIMARY KEY,             -- fleet node id (its certificate name)
    name         text,                         -- human-readable name it announces
    replica_id   bytea UNIQUE CHECK (octet_length(replica_id) = 16),
    last_seen_at timestamptz,                  -- last announcement or session
    addresses    text[] NOT NULL DEFAULT '{{}}', -- host:port it announced or was reached at
    version      text,                         -- meshlite version it runs
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
"#
    )
}

/// Migration 2: the trigger functions the materialized tables use (see `ddl`).
fn capture_functions(s: &Schemas) -> String {
    let st = &s.state;
    format!(
        r#"-- Captures a central edit into the outbox unless the bridge itself is writing
-- (it runs SET LOCAL meshlite.bridge = 'on' in its own transactions). SECURITY DEFINER with a
-- fixed search_path: API roles that may edit the tables need no right on the outbox.
-- TG_ARGV[0]: the table's primary key column.
CREATE OR REPLACE FUNCTION {st}.capture_central_edit() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    new_row jsonb;
    old_row jsonb;
BEGIN
    IF current_setting('meshlite.bridge', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN new_row := to_jsonb(NEW); END IF;
    IF TG_OP <> 'INSERT' THEN old_row := to_jsonb(OLD); END IF;
    INSERT INTO {st}.outbox (table_schema, table_name, pk, op, new_row, old_row, txid, db_user)
    VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME,
            coalesce(new_row ->> TG_ARGV[0], old_row ->> TG_ARGV[0]),
            TG_OP, new_row, old_row, txid_current(), session_user);
    RETURN NULL;
END
$fn$;

-- Log rows are immutable: refuse UPDATE and DELETE by anyone but the bridge, with a reason.
CREATE OR REPLACE FUNCTION {st}.refuse_log_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF current_setting('meshlite.bridge', true) = 'on' THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION 'meshlite: rows of log table %.% are immutable (% refused)',
        TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'append a new row instead; log collections are grow-only';
END
$fn$;

-- TRUNCATE fires no row trigger, so it could not be captured: refuse it (but for the bridge).
CREATE OR REPLACE FUNCTION {st}.refuse_truncate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF current_setting('meshlite.bridge', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'meshlite: TRUNCATE of %.% is refused: it cannot be synced to the fleet',
        TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation',
              HINT = 'DELETE the rows instead; each delete is captured and synced';
END
$fn$;
"#
    )
}

/// Migration 3: seed 002's `sync_status` (columns and types exactly as the seed) and its health
/// query as a view, in the table schema.
fn sync_status(s: &Schemas) -> String {
    let t = &s.tables;
    format!(
        r#"CREATE SCHEMA IF NOT EXISTS {t};
CREATE TABLE IF NOT EXISTS {t}.sync_status (
    id uuid primary key default gen_random_uuid(),
    service_name text not null,
    table_name text not null,
    last_sync_at timestamp,
    last_sync_status text,
    pending_records int default 0,
    failed_records int default 0,
    last_error text,
    updated_at timestamp default now()
);
-- One row per (node, table) so the bridge can upsert (ON CONFLICT); not in the seed's DDL.
CREATE UNIQUE INDEX IF NOT EXISTS sync_status_service_table_key
    ON {t}.sync_status (service_name, table_name);
COMMENT ON TABLE {t}.sync_status IS
    'Seed 002 sync status, one row per node (service_name) and table; kept current by meshlite-bridge';

-- The seed's health query, verbatim.
CREATE OR REPLACE VIEW {t}.sync_health AS
SELECT
    service_name,
    table_name,
    last_sync_at,
    pending_records,
    failed_records,
    CASE
        WHEN last_sync_at < now() - interval '5 minutes' THEN 'stale'
        WHEN failed_records > 100 THEN 'failing'
        WHEN pending_records > 1000 THEN 'lagging'
        ELSE 'healthy'
    END as health_status
FROM {t}.sync_status
ORDER BY service_name, table_name;
"#
    )
}

/// Migration 4: central edits of log tables. An INSERT is captured like a document edit (the
/// tables' `meshlite_capture` trigger, see `ddl`); an UPDATE or DELETE by anyone but the bridge
/// leaves the row as it is, warns the editor, and is captured so the bridge records it in
/// `rejected` (an exception would roll the record back with the edit).
fn central_log_edits(s: &Schemas) -> String {
    let st = &s.state;
    format!(
        r#"-- Log rows are immutable: an UPDATE or DELETE by anyone but the bridge changes nothing
-- (RETURN NULL), tells the editor why (WARNING), and is captured into the outbox, where the
-- bridge turns it into a row of {st}.rejected with the reason. SECURITY DEFINER for the outbox.
-- TG_ARGV[0]: the table's primary key column.
CREATE OR REPLACE FUNCTION {st}.refuse_log_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF current_setting('meshlite.bridge', true) = 'on' THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE WARNING 'meshlite: rows of log table %.% are immutable (% refused and recorded in the bridge''s rejected table)',
        TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
        USING HINT = 'append a new row instead; log collections are grow-only';
    INSERT INTO {st}.outbox (table_schema, table_name, pk, op, new_row, old_row, txid, db_user)
    VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, to_jsonb(OLD) ->> TG_ARGV[0], TG_OP,
            CASE WHEN TG_OP = 'UPDATE' THEN to_jsonb(NEW) END, to_jsonb(OLD),
            txid_current(), session_user);
    RETURN NULL;
END
$fn$;
"#,
    )
}

/// Migration 5: the name seed 002's `sync_status.service_name` gives a node — its name as the
/// fleet knows it (certificate name, else node id) from `<state>.nodes`, which the bridge keeps
/// with the replica each node serves (`fleet_view`); the origin's hex id while the bridge has
/// not met the node.
fn node_names(s: &Schemas) -> String {
    let st = &s.state;
    format!(
        r#"CREATE OR REPLACE FUNCTION {st}.service_name(origin bytea) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT coalesce(
        (SELECT coalesce(n.name, n.node_id) FROM {st}.nodes n WHERE n.replica_id = origin),
        encode(origin, 'hex'))
$fn$;
COMMENT ON TABLE {st}.nodes IS
    'The fleet as the bridge sees it: connected peers and announced nodes, the replica each serves (learned in sync sessions), addresses, version, last seen.';
"#
    )
}

/// Lets a batch's state writes be HOT updates (no new index entry, less WAL): `chunks` is no
/// longer indexed (nothing queried that index) and `docs` pages keep room for a new version.
fn docs_hot_updates(s: &Schemas) -> String {
    let st = &s.state;
    format!(
        r#"DROP INDEX IF EXISTS {st}.docs_compaction;
ALTER TABLE {st}.docs SET (fillfactor = 70);
"#
    )
}

/// Keeps a stored transaction's bytes inline and uncompressed up to a heap page: the default
/// TOAST target (2 KB) made Postgres try to `pglz`-compress every transaction of ten changes
/// (≈ 2.4 KB), ≈ 3 % of the bridge's server CPU per change, for bytes read only to relay them.
/// Larger transactions are still compressed or moved out of line. Existing rows stay as they are.
fn txns_inline(s: &Schemas) -> String {
    let st = &s.state;
    format!(
        r#"ALTER TABLE {st}.txns SET (toast_tuple_target = 8160);
"#
    )
}

/// Fewer indexes for every audit row to pay. `origins` was not filled when this migration was
/// written (every row held an empty array), and filtering audit rows by a writer is rare enough
/// for a scan of a record's or field's rows, so its GIN index goes; the B-tree on
/// `recorded_at` becomes a BRIN index (rows are appended in time order, so time ranges are
/// still served; "the latest N" is `ORDER BY id DESC`, the primary key). A record's and a
/// field's conflicts keep their B-trees.
fn conflicts_lighter_indexes(s: &Schemas) -> String {
    let st = &s.state;
    format!(
        r#"DROP INDEX IF EXISTS {st}.conflicts_origins;
DROP INDEX IF EXISTS {st}.conflicts_recent;
CREATE INDEX IF NOT EXISTS conflicts_recorded_at ON {st}.conflicts USING brin (recorded_at);
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schemas() -> Schemas {
        Schemas {
            state: Ident::new("meshlite", "t").unwrap(),
            tables: Ident::new("public", "t").unwrap(),
        }
    }

    #[test]
    fn versions_increase_and_names_are_unique() {
        for w in MIGRATIONS.windows(2) {
            assert_eq!(w[1].version, w[0].version + 1);
            assert_ne!(w[0].name, w[1].name);
        }
        assert_eq!(MIGRATIONS[0].version, 1);
    }

    #[test]
    fn dry_run_names_every_step_and_quotes_schemas() {
        let sql = dry_run_sql(&schemas());
        for m in MIGRATIONS {
            assert!(sql.contains(&format!("-- migration {} ({})", m.version, m.name)));
        }
        assert!(
            sql.contains("CREATE TABLE IF NOT EXISTS \"meshlite\".\"migrations\"")
                || sql.contains("CREATE TABLE IF NOT EXISTS \"meshlite\".migrations")
        );
        assert!(sql.contains("\"public\".sync_status"));
    }

    #[test]
    fn lock_key_depends_on_the_state_schema_only() {
        let a = schemas();
        let mut b = schemas();
        b.tables = Ident::new("other", "t").unwrap();
        assert_eq!(lock_key(&a), lock_key(&b));
        b.state = Ident::new("meshlite2", "t").unwrap();
        assert_ne!(lock_key(&a), lock_key(&b));
    }
}
