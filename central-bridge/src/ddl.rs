//! Materialized tables: one typed Postgres table per collection, built from core's [`Schema`].
//!
//! [`tables_from_schema`] turns the schema into [`TableSpec`]s (validated names, a
//! [`ColumnType`] per column); [`table_sql`] renders the idempotent DDL for one table, and
//! [`apply`] runs it for all tables in one transaction under the migrations' advisory lock.
//!
//! # Table shape
//! - document collections: the primary key, one typed column per declared field (fields with a
//!   merge policy and `indexed` fields), `_extra jsonb` holding the undeclared fields of the
//!   record, `_origin text` (hex ReplicaId of the origin of the last change applied to the row)
//!   and `_synced_at timestamptz` (when the bridge last wrote the row). A declared field such as
//!   `updated_at` is an ordinary column; the bridge adds no timestamp of its own beside it.
//! - log collections: an append table with the same columns (`id` is the row id, a random UUID
//!   by default so central inserts may leave it out); its rows are immutable: a trigger keeps the
//!   row on UPDATE/DELETE by anyone but the bridge, warns the editor and captures the attempt,
//!   which the bridge records in `<state>.rejected`. Central INSERTs are captured (below) and
//!   become appends of the bridge that reach the fleet.
//! - `TRUNCATE` is refused on every table (but for the bridge): it fires no row trigger, so it
//!   could not be captured and the table would silently diverge from the fleet.
//! - every declared `indexed` field gets a btree index.
//!
//! Evolution: new collections are `CREATE TABLE IF NOT EXISTS`, new fields `ALTER TABLE ... ADD
//! COLUMN IF NOT EXISTS` (every column is always emitted, so re-running is a no-op). A column
//! whose type differs from the schema's is never altered: [`apply`] fails with every mismatch
//! ([`ApplyError::TypeDrift`]) and changes nothing; the bridge never drops a column.
//!
//! # Capturing central edits: triggers, not logical decoding
//! Each document table gets an `AFTER INSERT OR UPDATE OR DELETE ... FOR EACH ROW` trigger (each
//! log table an `AFTER INSERT` one) that writes the edit into `<state>.outbox` (function
//! `capture_central_edit`, migration 2), skipped when the session set `meshlite.bridge = 'on'` — the bridge does so with `SET LOCAL` in its own
//! write transactions, so its writes are never captured again (no echo loop). Triggers instead
//! of logical decoding because: no replication slot that retains WAL without bound while the
//! bridge is down (ElectricSQL's and PowerSync's operational pain); they work on managed
//! Supabase without superuser or `REPLICATION`; the capture commits or rolls back with the edit
//! itself, so a captured edit always happened and nothing that happened is missed; and the
//! outbox is ordinary SQL the bridge consumes transactionally with its own writes. The costs: one
//! extra row write per edited row in the editor's transaction, and a session can opt out by
//! setting `meshlite.bridge` itself (it already has write access to the table; the row then
//! diverges until the next merged write of that record replaces it).
//!
//! # Supabase
//! When the roles exist, [`Grants::read`] roles (default `anon`, `authenticated`) get `SELECT`
//! and [`Grants::all`] roles (default `service_role`) get `ALL`; roles that do not exist are
//! skipped. Supabase's own default privileges may already grant more on `public`; row-level
//! security is left to the operator. When the publication (default `supabase_realtime`) exists,
//! every materialized table not yet in it is added, so Realtime subscribers see merged rows.

use std::fmt::Write;

use meshlite_core::schema::{CollectionDef, CollectionKind, FieldType, MergePolicy, Schema};
use tokio_postgres::Client;

use crate::migrations::{Schemas, lock_key};
use crate::pg::{Ident, IdentError};

/// Column holding the undeclared fields of a record.
pub const EXTRA_COLUMN: &str = "_extra";
/// Column holding the hex ReplicaId of the origin of the last change applied to the row.
pub const ORIGIN_COLUMN: &str = "_origin";
/// Column holding when the bridge last wrote the row.
pub const SYNCED_AT_COLUMN: &str = "_synced_at";
/// Field names a collection may not declare (they are the bridge's metadata columns).
pub const RESERVED_COLUMNS: &[&str] = &[EXTRA_COLUMN, ORIGIN_COLUMN, SYNCED_AT_COLUMN];

/// Tables and views the bridge keeps in the table schema itself (seed 002's report table and
/// its health view); no collection may take these names.
pub const RESERVED_TABLES: &[&str] = &["sync_status", "sync_health"];

/// Postgres type of a materialized column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// `text`
    Text,
    /// `bigint`
    BigInt,
    /// `double precision`
    Double,
    /// `boolean`
    Boolean,
    /// `timestamptz`
    Timestamptz,
    /// `uuid`
    Uuid,
    /// `jsonb`
    Jsonb,
}

impl ColumnType {
    /// The type as written in DDL.
    pub fn sql(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::BigInt => "bigint",
            ColumnType::Double => "double precision",
            ColumnType::Boolean => "boolean",
            ColumnType::Timestamptz => "timestamptz",
            ColumnType::Uuid => "uuid",
            ColumnType::Jsonb => "jsonb",
        }
    }
}

impl ColumnType {
    /// The type as `format_type()` prints it in the catalogs.
    pub fn catalog_name(self) -> &'static str {
        match self {
            ColumnType::Timestamptz => "timestamp with time zone",
            other => other.sql(),
        }
    }
}

/// A column whose type in Postgres differs from the one the schema asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeDrift {
    /// The table.
    pub table: String,
    /// The column.
    pub column: String,
    /// What the schema asks for (`format_type` spelling).
    pub expected: &'static str,
    /// What the table has.
    pub found: String,
}

impl std::fmt::Display for TypeDrift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{} is {} but the schema needs {}",
            self.table, self.column, self.found, self.expected
        )
    }
}

/// How a table is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// Rows upserted from merged documents; central edits captured.
    Document,
    /// Rows appended once, immutable.
    Log,
}

/// One typed column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column (= field) name.
    pub name: Ident,
    /// Its type.
    pub ty: ColumnType,
    /// Whether the schema lists the field as `indexed`.
    pub indexed: bool,
}

/// A bridge-side description of one materialized table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// Table (= collection) name.
    pub name: Ident,
    /// Document or log.
    pub kind: TableKind,
    /// The primary key column.
    pub primary_key: Column,
    /// The declared fields, sorted by name, without the primary key.
    pub columns: Vec<Column>,
}

/// A schema the bridge cannot materialize.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DdlError {
    /// A collection or field name is not a safe identifier.
    #[error(transparent)]
    Ident(#[from] IdentError),
    /// A field uses a name reserved for the bridge's metadata columns.
    #[error(
        "collection {collection:?} declares field {field:?}, a name reserved for the bridge's metadata columns ({})",
        RESERVED_COLUMNS.join(", ")
    )]
    Reserved {
        /// The collection.
        collection: String,
        /// The field.
        field: String,
    },
    /// `sync.tables` names a collection the schema does not have.
    #[error("sync.tables names {0:?}, which the schema does not declare")]
    UnknownTable(String),
    /// A collection has the name of one of the bridge's own tables or views.
    #[error(
        "collection {0:?} has the name of the bridge's own table or view in the table schema ({reserved}); rename the collection",
        reserved = RESERVED_TABLES.join(", ")
    )]
    ReservedTable(String),
}

/// The one place that maps core's field definitions to Postgres types.
///
/// A declared type maps one to one (text→text, integer→bigint, float→double precision,
/// boolean→boolean, timestamp→timestamptz, uuid→uuid, json→jsonb). An untyped field follows
/// from what its merge policy guarantees: `counter` is always an integer (`bigint`), `text`
/// always a string (`text`); every other untyped field is `jsonb`, which holds any JSON value
/// without loss.
pub fn column_type(def: &CollectionDef, field: &str) -> ColumnType {
    if let Some(ty) = def.field_type(field) {
        return of_field_type(ty);
    }
    match def.policy(field) {
        MergePolicy::Counter => ColumnType::BigInt,
        MergePolicy::Text => ColumnType::Text,
        _ => ColumnType::Jsonb,
    }
}

fn of_field_type(ty: FieldType) -> ColumnType {
    match ty {
        FieldType::Text => ColumnType::Text,
        FieldType::Integer => ColumnType::BigInt,
        FieldType::Float => ColumnType::Double,
        FieldType::Boolean => ColumnType::Boolean,
        FieldType::Timestamp => ColumnType::Timestamptz,
        FieldType::Uuid => ColumnType::Uuid,
        FieldType::Json => ColumnType::Jsonb,
    }
}

/// The type of a collection's primary key: its declared key type (text, integer, uuid), else
/// text (record ids are strings by default).
pub fn primary_key_type(def: &CollectionDef) -> ColumnType {
    def.key_type.map_or(ColumnType::Text, of_field_type)
}

/// The tables for `schema`, restricted to `only` when it is not empty (`sync.tables`).
pub fn tables_from_schema(schema: &Schema, only: &[String]) -> Result<Vec<TableSpec>, DdlError> {
    if let Some(name) = schema
        .collections
        .keys()
        .find(|n| RESERVED_TABLES.contains(&n.as_str()))
    {
        return Err(DdlError::ReservedTable(name.clone()));
    }
    for name in only {
        if !schema.collections.contains_key(name) {
            return Err(DdlError::UnknownTable(name.clone()));
        }
    }
    schema
        .collections
        .iter()
        .filter(|(name, _)| only.is_empty() || only.contains(name))
        .map(|(name, def)| table_spec(name, def))
        .collect()
}

/// The table for one collection.
pub fn table_spec(name: &str, def: &CollectionDef) -> Result<TableSpec, DdlError> {
    let table = Ident::new(name, "schema collection name")?;
    let pk = Ident::new(
        &def.primary_key,
        &format!("primary key of collection {name:?}"),
    )?;
    let mut fields: Vec<&String> = def.fields.keys().chain(&def.indexed).collect();
    fields.sort();
    fields.dedup();
    let mut columns = Vec::with_capacity(fields.len());
    for field in fields.into_iter().filter(|f| **f != def.primary_key) {
        if is_synced_at(def, field) {
            continue; // the seed's own `_synced_at`: the bridge's column, filled by the bridge
        }
        if RESERVED_COLUMNS.contains(&field.as_str()) {
            return Err(DdlError::Reserved {
                collection: name.to_owned(),
                field: field.clone(),
            });
        }
        columns.push(Column {
            name: Ident::new(field, &format!("field of collection {name:?}"))?,
            ty: column_type(def, field),
            indexed: def.indexed.contains(field),
        });
    }
    Ok(TableSpec {
        name: table,
        kind: match def.kind {
            CollectionKind::Document => TableKind::Document,
            CollectionKind::Log => TableKind::Log,
        },
        primary_key: Column {
            name: pk,
            ty: primary_key_type(def),
            indexed: false,
        },
        columns,
    })
}

/// Whether `field` is the seeds' `_synced_at` (declared untyped or as a timestamp): it means
/// what the bridge's own column means — when the row reached central — so the bridge's column
/// stands for it and the bridge fills it; values written on devices are not copied.
pub fn is_synced_at(def: &CollectionDef, field: &str) -> bool {
    field == SYNCED_AT_COLUMN && matches!(def.field_type(field), None | Some(FieldType::Timestamp))
}

/// Roles and publication the tables are exposed to (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    /// Granted `SELECT` when they exist.
    pub read: Vec<Ident>,
    /// Granted `ALL` when they exist.
    pub all: Vec<Ident>,
    /// Publication the tables join when it exists (`None`: never).
    pub publication: Option<Ident>,
}

/// An index name for `table`.`column` that stays within 63 bytes (Postgres would truncate it
/// silently, and two long names could then collide).
fn index_name(table: &Ident, column: &Ident) -> Ident {
    let plain = format!("{}_{}_idx", table.as_str(), column.as_str());
    let name = if plain.len() <= 63 {
        plain
    } else {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in plain.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{}_{h:016x}_idx", &plain[..42])
    };
    Ident::new(&name, "derived index name").expect("derived from valid identifiers")
}

/// The idempotent DDL for one table: create, add missing columns, indexes, triggers.
pub fn table_sql(schemas: &Schemas, t: &TableSpec) -> String {
    let qt = Ident::qualified(&schemas.tables, &t.name);
    let st = &schemas.state;
    let mut sql = String::new();
    let _ = writeln!(
        sql,
        "CREATE TABLE IF NOT EXISTS {qt} (\n    {} {} PRIMARY KEY\n);",
        t.primary_key.name,
        t.primary_key.ty.sql()
    );
    for c in &t.columns {
        let _ = writeln!(
            sql,
            "ALTER TABLE {qt} ADD COLUMN IF NOT EXISTS {} {};",
            c.name,
            c.ty.sql()
        );
    }
    let _ = writeln!(
        sql,
        "ALTER TABLE {qt} ADD COLUMN IF NOT EXISTS \"{EXTRA_COLUMN}\" jsonb NOT NULL DEFAULT '{{}}';\n\
         ALTER TABLE {qt} ADD COLUMN IF NOT EXISTS \"{ORIGIN_COLUMN}\" text;\n\
         ALTER TABLE {qt} ADD COLUMN IF NOT EXISTS \"{SYNCED_AT_COLUMN}\" timestamptz NOT NULL DEFAULT now();"
    );
    for c in t.columns.iter().filter(|c| c.indexed) {
        let _ = writeln!(
            sql,
            "CREATE INDEX IF NOT EXISTS {} ON {qt} ({});",
            index_name(&t.name, &c.name),
            c.name
        );
    }
    // CREATE OR REPLACE TRIGGER needs Postgres 14, which migration 1 requires.
    let _ = writeln!(
        sql,
        "CREATE OR REPLACE TRIGGER meshlite_no_truncate BEFORE TRUNCATE ON {qt}\n    \
         FOR EACH STATEMENT EXECUTE FUNCTION {st}.refuse_truncate();"
    );
    // The capture triggers' WHEN clause keeps the bridge's own writes free of a per-row call.
    match t.kind {
        TableKind::Document => {
            let _ = writeln!(
                sql,
                "CREATE OR REPLACE TRIGGER meshlite_capture AFTER INSERT OR UPDATE OR DELETE ON {qt}\n    \
                 FOR EACH ROW WHEN (current_setting('meshlite.bridge', true) IS DISTINCT FROM 'on')\n    \
                 EXECUTE FUNCTION {st}.capture_central_edit({});",
                t.primary_key.name.literal()
            );
        }
        TableKind::Log => {
            let pk = t.primary_key.name.literal();
            let _ = writeln!(
                sql,
                "CREATE OR REPLACE TRIGGER meshlite_immutable BEFORE UPDATE OR DELETE ON {qt}\n    \
                 FOR EACH ROW EXECUTE FUNCTION {st}.refuse_log_change({pk});\n\
                 CREATE OR REPLACE TRIGGER meshlite_capture AFTER INSERT ON {qt}\n    \
                 FOR EACH ROW WHEN (current_setting('meshlite.bridge', true) IS DISTINCT FROM 'on')\n    \
                 EXECUTE FUNCTION {st}.capture_central_edit({pk});"
            );
            if let Some(default) = generated_key(t.primary_key.ty) {
                let _ = writeln!(
                    sql,
                    "ALTER TABLE {qt} ALTER COLUMN {} SET DEFAULT {default};",
                    t.primary_key.name
                );
            }
        }
    }
    sql
}

/// The default of a log table's key, so a central `INSERT` may leave the id out (as a node's
/// append may): a random UUID, as text for text keys; integer keys have none.
fn generated_key(ty: ColumnType) -> Option<&'static str> {
    match ty {
        ColumnType::Uuid => Some("gen_random_uuid()"),
        ColumnType::Text => Some("gen_random_uuid()::text"),
        _ => None,
    }
}

/// Grants and publication membership for `tables` (names in the table schema), as a `DO` block
/// that checks the catalogs when it runs, so the same SQL suits Supabase and plain Postgres.
pub fn exposure_sql(schemas: &Schemas, tables: &[&Ident], grants: &Grants) -> String {
    let list = |ids: &mut dyn Iterator<Item = &Ident>| {
        let items: Vec<String> = ids.map(Ident::literal).collect();
        format!("ARRAY[{}]::text[]", items.join(", "))
    };
    let tables_arr = list(&mut tables.iter().copied());
    let read = list(&mut grants.read.iter());
    let all = list(&mut grants.all.iter());
    let publication = grants
        .publication
        .as_ref()
        .map_or("NULL".to_owned(), Ident::literal);
    format!(
        r#"DO $$
DECLARE
    sch text := {schema};
    tbl text;
    r text;
    pub text := {publication};
BEGIN
    FOREACH tbl IN ARRAY {tables_arr} LOOP
        FOREACH r IN ARRAY {read} LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
                EXECUTE format('GRANT SELECT ON %I.%I TO %I', sch, tbl, r);
            END IF;
        END LOOP;
        FOREACH r IN ARRAY {all} LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
                EXECUTE format('GRANT ALL ON %I.%I TO %I', sch, tbl, r);
            END IF;
        END LOOP;
        IF pub IS NOT NULL
           AND EXISTS (SELECT 1 FROM pg_publication WHERE pubname = pub)
           AND NOT EXISTS (SELECT 1 FROM pg_publication_tables
                           WHERE pubname = pub AND schemaname = sch AND tablename = tbl)
           AND NOT (SELECT puballtables FROM pg_publication WHERE pubname = pub) THEN
            EXECUTE format('ALTER PUBLICATION %I ADD TABLE %I.%I', pub, sch, tbl);
        END IF;
    END LOOP;
END $$;
"#,
        schema = schemas.tables.literal(),
    )
}

/// All DDL for `tables`: each table, then grants and publication for them and `sync_status`.
pub fn schema_sql(schemas: &Schemas, tables: &[TableSpec], grants: &Grants) -> String {
    let mut sql = format!("CREATE SCHEMA IF NOT EXISTS {};\n", schemas.tables);
    for t in tables {
        let _ = write!(
            sql,
            "\n-- {} ({:?})\n{}",
            t.name.as_str(),
            t.kind,
            table_sql(schemas, t)
        );
    }
    let names: Vec<&Ident> = tables.iter().map(|t| &t.name).collect();
    sql.push_str(
        "\n-- grants and Realtime publication (only where the roles / publication exist)\n",
    );
    sql.push_str(&exposure_sql(schemas, &names, grants));
    sql.push_str(&sync_status_grants(schemas, grants));
    sql
}

/// `sync_status` and `sync_health` are readable by the read roles too (no publication).
fn sync_status_grants(schemas: &Schemas, grants: &Grants) -> String {
    let status = Ident::new("sync_status", "builtin").expect("valid");
    let health = Ident::new("sync_health", "builtin").expect("valid");
    let no_pub = Grants {
        publication: None,
        ..grants.clone()
    };
    exposure_sql(schemas, &[&status, &health], &no_pub)
}

/// Columns of `tables` whose existing type differs from the spec (the bridge never alters a
/// column's type itself: converting stored values is an operator's decision).
pub async fn type_drift(
    client: &impl tokio_postgres::GenericClient,
    schemas: &Schemas,
    tables: &[TableSpec],
) -> Result<Vec<TypeDrift>, tokio_postgres::Error> {
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let rows = client
        .query(
            "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod)
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = ANY($2) AND a.attnum > 0 AND NOT a.attisdropped",
            &[&schemas.tables.as_str(), &names],
        )
        .await?;
    let mut drift = Vec::new();
    for row in rows {
        let (table, column, found): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let Some(spec) = tables.iter().find(|t| t.name.as_str() == table) else {
            continue;
        };
        let expected = std::iter::once(&spec.primary_key)
            .chain(&spec.columns)
            .find(|c| c.name.as_str() == column)
            .map(|c| c.ty.catalog_name());
        if let Some(expected) = expected.filter(|e| *e != found) {
            drift.push(TypeDrift {
                table,
                column,
                expected,
                found,
            });
        }
    }
    drift.sort_by(|a, b| (&a.table, &a.column).cmp(&(&b.table, &b.column)));
    Ok(drift)
}

/// Error applying DDL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// Postgres refused a statement; the whole transaction was rolled back.
    #[error("cannot create or update the materialized tables in schema {schema}: {source}")]
    Postgres {
        /// The table schema.
        schema: String,
        /// Postgres' error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Existing columns have other types than the schema needs; nothing was changed.
    #[error(
        "existing columns do not have the types the schema needs (convert them, e.g. ALTER TABLE \
         ... ALTER COLUMN ... TYPE ... USING ..., or change the schema): {}",
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    TypeDrift(Vec<TypeDrift>),
}

/// Creates or extends every table in one transaction under the migrations' advisory lock
/// (concurrent `CREATE TABLE IF NOT EXISTS` can otherwise fail in the catalog). Run after
/// [`crate::migrations::migrate`], which creates the trigger functions.
pub async fn apply(
    client: &mut Client,
    schemas: &Schemas,
    tables: &[TableSpec],
    grants: &Grants,
) -> Result<(), ApplyError> {
    let fail = |source| ApplyError::Postgres {
        schema: schemas.tables.as_str().to_owned(),
        source,
    };
    let tx = client.transaction().await.map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schemas)])
        .await
        .map_err(fail)?;
    tx.batch_execute(&schema_sql(schemas, tables, grants))
        .await
        .map_err(fail)?;
    let drift = type_drift(&tx, schemas, tables).await.map_err(fail)?;
    if !drift.is_empty() {
        // Dropping the transaction rolls back: a half-usable set of tables is worse than none.
        return Err(ApplyError::TypeDrift(drift));
    }
    tx.commit().await.map_err(fail)?;
    tracing::info!(
        tables = tables.len(),
        schema = schemas.tables.as_str(),
        "materialized tables ready"
    );
    Ok(())
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

    fn pmoves() -> Schema {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/schemas/pmoves.toml"
        );
        Schema::from_file(std::path::Path::new(path)).unwrap()
    }

    #[test]
    fn pmoves_tables_have_typed_columns() {
        let tables = tables_from_schema(&pmoves(), &[]).unwrap();
        let tasks = tables.iter().find(|t| t.name.as_str() == "tasks").unwrap();
        assert_eq!(tasks.kind, TableKind::Document);
        let col = |n: &str| tasks.columns.iter().find(|c| c.name.as_str() == n).unwrap();
        assert_eq!(col("retry_count").ty, ColumnType::BigInt);
        assert_eq!(col("notes").ty, ColumnType::Text);
        assert_eq!(col("status").ty, ColumnType::Text, "declared type");
        assert_eq!(col("agent_id").ty, ColumnType::Uuid);
        assert_eq!(col("input").ty, ColumnType::Jsonb);
        assert_eq!(tasks.primary_key.ty, ColumnType::Uuid, "key_type");
        assert!(col("agent_id").indexed);
        let metrics = tables
            .iter()
            .find(|t| t.name.as_str() == "device_metrics")
            .unwrap();
        assert_eq!(metrics.kind, TableKind::Log);
        let sql = table_sql(&schemas(), tasks);
        assert!(
            sql.contains("ADD COLUMN IF NOT EXISTS \"retry_count\" bigint"),
            "{sql}"
        );
        assert!(sql.contains("capture_central_edit('id')"), "{sql}");
        let only = tables_from_schema(&pmoves(), &["jobs".into()]).unwrap();
        assert_eq!(only.len(), 1);
        assert!(matches!(
            tables_from_schema(&pmoves(), &["nope".into()]),
            Err(DdlError::UnknownTable(_))
        ));
    }

    #[test]
    fn reserved_and_hostile_names_are_refused() {
        let s = Schema::from_toml("[collections.t.fields]\n_origin = { merge = \"max\" }").unwrap();
        assert!(matches!(
            tables_from_schema(&s, &[]),
            Err(DdlError::Reserved { .. })
        ));
        // Core accepts upper case; the bridge does not (PostgREST would need quoted names).
        let s = Schema::from_toml("[collections.Tasks]").unwrap();
        let e = tables_from_schema(&s, &[]).unwrap_err();
        assert!(e.to_string().contains("Tasks"), "{e}");
    }

    #[test]
    fn long_index_names_stay_unique_and_short() {
        let t = Ident::new(&"t".repeat(60), "t").unwrap();
        let a = index_name(&t, &Ident::new("aaaa_1", "t").unwrap());
        let b = index_name(&t, &Ident::new("aaaa_2", "t").unwrap());
        assert!(a.as_str().len() <= 63 && b.as_str().len() <= 63);
        assert_ne!(a, b);
    }
}
