//! Reads: a small pool of read-only connections serving materialized rows.
//!
//! Readers never touch the writer's connection. In WAL mode a reader sees the last committed
//! state and never blocks the writer. Every read is one statement or one read transaction, so it
//! sees a consistent snapshot: either all of a transaction's rows or none.

use std::path::Path;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params_from_iter};
use serde_json::Value;

use super::error::ReadError;
use super::types::Query;
use crate::schema::{CollectionDef, CollectionKind, FieldType, Schema, validate_name};

/// A fixed set of read-only connections handed out one at a time.
#[derive(Debug)]
pub(crate) struct ReadPool {
    idle: Mutex<Vec<Connection>>,
    available: Condvar,
}

impl ReadPool {
    /// Opens `n` connections (at least one); each waits up to `busy_timeout` on a lock held by
    /// a checkpoint or another process before failing as busy.
    #[cfg(test)]
    pub fn open(path: &Path, n: usize, busy_timeout: Duration) -> rusqlite::Result<Self> {
        Self::open_with(path, OpenFlags::empty(), Vec::new(), n, busy_timeout)
    }

    /// [`Self::open`] with `extra` flags (`SQLITE_OPEN_URI` for an in-memory store's name),
    /// starting from `kept` connections to the same database (a closed in-memory store's).
    pub fn open_with(
        path: &Path,
        extra: OpenFlags,
        mut kept: Vec<Connection>,
        n: usize,
        busy_timeout: Duration,
    ) -> rusqlite::Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | extra;
        kept.truncate(n.max(1));
        let opened = (kept.len()..n.max(1)).map(|_| Connection::open_with_flags(path, flags));
        let conns = kept
            .into_iter()
            .map(Ok)
            .chain(opened)
            .map(|c: rusqlite::Result<Connection>| {
                let c = c?;
                c.busy_timeout(busy_timeout)?;
                Ok(c)
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Self {
            idle: Mutex::new(conns),
            available: Condvar::new(),
        })
    }

    /// Runs `f` on an idle connection, waiting for one if all are busy.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, ReadError>,
    ) -> Result<T, ReadError> {
        let conn = self.take();
        let result = f(&conn);
        self.give_back(conn);
        result
    }

    /// An idle connection, waiting for one if all are busy.
    pub(super) fn take(&self) -> Connection {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(c) = idle.pop() {
                return c;
            }
            idle = self
                .available
                .wait(idle)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Every idle connection, taken out of the pool (a closing in-memory store keeps them).
    #[cfg(any(test, feature = "testkit"))]
    pub(super) fn take_all(&self) -> Vec<Connection> {
        std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Returns a connection from [`Self::take`] and wakes one waiting reader.
    pub(super) fn give_back(&self, conn: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        self.available.notify_one();
    }
}

/// Which table holds a collection: its declared kind, else `log` if it has log rows.
pub(crate) fn kind_of(
    conn: &Connection,
    schema: &Schema,
    collection: &str,
) -> Result<CollectionKind, ReadError> {
    if let Some(def) = schema.collections.get(collection) {
        return Ok(def.kind);
    }
    let is_log: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM log_rows WHERE collection = ?1 LIMIT 1")?
        .query_row([collection], |r| r.get(0))
        .optional()?;
    Ok(if is_log.is_some() {
        CollectionKind::Log
    } else {
        CollectionKind::Document
    })
}

/// One live record or log row.
pub(crate) fn get(
    conn: &Connection,
    schema: &Schema,
    collection: &str,
    id: &str,
) -> Result<Option<Value>, ReadError> {
    validate_name("collection", collection)?;
    let sql = match kind_of(conn, schema, collection)? {
        CollectionKind::Log => "SELECT json FROM log_rows WHERE collection = ?1 AND id = ?2",
        CollectionKind::Document => {
            "SELECT json FROM records WHERE collection = ?1 AND id = ?2 AND deleted = 0"
        }
    };
    let json: Option<String> = conn
        .prepare_cached(sql)?
        .query_row([collection, id], |r| r.get(0))
        .optional()?;
    json.map(|j| parse_row(&j)).transpose()
}

/// Rows matching `q`.
pub(crate) fn query(
    conn: &Connection,
    schema: &Schema,
    collection: &str,
    q: &Query,
) -> Result<Vec<Value>, ReadError> {
    validate_name("collection", collection)?;
    let kind = kind_of(conn, schema, collection)?;
    let def = schema.collection_or_default(collection);
    let (sql, params) = build_query(kind, collection, &def, q)?;
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(params), |r| r.get::<_, String>(0))?;
    rows.map(|j| parse_row(&j?)).collect()
}

/// Builds the SQL of a query. Collection and field names are validated identifiers, so they
/// are inlined: the literal `collection = '<name>'` lets SQLite use the partial expression
/// indexes created for declared `indexed` fields. The first filter on an indexed field forces
/// its index (`INDEXED BY`): without statistics SQLite would rather scan the primary key for
/// its order. Integer keys order as numbers (a sort: the primary key index orders ids as text).
pub(crate) fn build_query(
    kind: CollectionKind,
    collection: &str,
    def: &CollectionDef,
    q: &Query,
) -> Result<(String, Vec<SqlValue>), ReadError> {
    let (pk, indexed) = (def.primary_key.as_str(), &def.indexed);
    let id_order = match def.key_type {
        Some(FieldType::Integer) => "CAST(id AS INTEGER)",
        _ => "id",
    };
    let table = table_of(kind);
    let index = q
        .filters
        .iter()
        .find(|(f, _)| f != pk && indexed.contains(f));
    let hint = index.map_or(String::new(), |(f, _)| {
        format!(" INDEXED BY {}", index_name(table, collection, f))
    });
    let mut sql = format!(
        "SELECT json FROM {table}{hint} WHERE collection = {}",
        sql_literal(collection)
    );
    if kind == CollectionKind::Document && !q.include_deleted {
        sql.push_str(" AND deleted = 0");
    }
    let mut params = Vec::new();
    for (field, value) in &q.filters {
        validate_name("field", field)?;
        push_filter(
            &mut sql,
            &mut params,
            field_expr(field, pk),
            field == pk,
            value,
        )?;
    }
    let tie = match q.insertion_order {
        true => "rowid",
        false => id_order,
    };
    match &q.order {
        Some((field, desc)) => {
            validate_name("field", field)?;
            let dir = if *desc { "DESC" } else { "ASC" };
            let by = match field == pk {
                true => id_order.to_owned(),
                false => field_expr(field, pk),
            };
            sql.push_str(&format!(" ORDER BY {by} {dir}, {tie} {dir}"));
        }
        None => sql.push_str(&format!(" ORDER BY {tie}")),
    }
    // Limit and offset are inlined: SQLite plans `LIMIT ? OFFSET ?` for the values bound, so
    // binding them expires the statement and every run of a cached query compiled it anew
    // (measured: one re-prepare per run, even with the same values). Inlined, a repeated query
    // stays compiled in the connection's statement cache; each new page compiles once, as
    // before. A query without either leaves the clause out.
    if q.limit.is_some() || q.offset > 0 {
        let limit = q.limit.map_or(-1, |l| l.min(i64::MAX as usize) as i64);
        let offset = q.offset.min(i64::MAX as usize) as i64;
        sql.push_str(&format!(" LIMIT {limit} OFFSET {offset}"));
    }
    Ok((sql, params))
}

fn field_expr(field: &str, pk: &str) -> String {
    if field == pk {
        "id".to_owned()
    } else {
        format!("json_extract(json, '$.{field}')")
    }
}

fn push_filter(
    sql: &mut String,
    params: &mut Vec<SqlValue>,
    expr: String,
    is_pk: bool,
    value: &Value,
) -> Result<(), ReadError> {
    let param = match value {
        Value::Null => {
            sql.push_str(&format!(" AND {expr} IS NULL"));
            return Ok(());
        }
        Value::String(s) => SqlValue::Text(s.clone()),
        Value::Number(n) if is_pk => SqlValue::Text(n.to_string()),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().unwrap_or(0.0)),
        },
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Array(_) | Value::Object(_) => {
            sql.push_str(&format!(" AND {expr} = json(?)"));
            params.push(SqlValue::Text(value.to_string()));
            return Ok(());
        }
    };
    sql.push_str(&format!(" AND {expr} = ?"));
    params.push(param);
    Ok(())
}

/// A single-quoted SQL string literal.
pub(crate) fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn parse_row(json: &str) -> Result<Value, ReadError> {
    serde_json::from_str(json)
        .map_err(|e| ReadError::Corrupt(format!("stored row is not JSON: {e}")))
}

/// Creates the partial expression index of every declared indexed field (idempotent).
pub(crate) fn ensure_indexes(conn: &Connection, schema: &Schema) -> rusqlite::Result<()> {
    for (name, def) in &schema.collections {
        let table = table_of(def.kind);
        for field in &def.indexed {
            conn.execute_batch(&format!(
                "CREATE INDEX IF NOT EXISTS {} ON {table} (json_extract(json, '$.{field}'))
                 WHERE collection = {}",
                index_name(table, name, field),
                sql_literal(name)
            ))?;
        }
    }
    Ok(())
}

fn table_of(kind: CollectionKind) -> &'static str {
    match kind {
        CollectionKind::Log => "log_rows",
        CollectionKind::Document => "records",
    }
}

/// The quoted name of the index of `field` in `collection`.
fn index_name(table: &str, collection: &str, field: &str) -> String {
    format!("\"ix_{table}_{collection}_{field}\"")
}
