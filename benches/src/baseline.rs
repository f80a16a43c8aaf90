//! The raw-SQLite baseline: what an application without Meshlite would do with the same rows.
//!
//! One WAL database with a single `(id TEXT PRIMARY KEY, json TEXT)` table (optionally with the
//! same JSON expression indexes the store creates for a collection's declared `indexed` fields),
//! written through
//! cached prepared statements, one transaction per batch, at the same `synchronous` level as the
//! store it is compared with. The timed work includes serializing each `serde_json::Value` to
//! text, because the store receives the same values and serializes them too; given the rows by
//! value (as the store is), it also drops each one after inserting it.

use std::borrow::Borrow;
use std::path::Path;

use meshlite_core::store::Synchronous;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::BenchError;

/// Name of the baseline database file inside its directory.
pub const RAW_DB_FILE: &str = "raw.db";

/// A raw SQLite table of JSON rows keyed by id.
#[derive(Debug)]
pub struct RawTable {
    conn: Connection,
}

impl RawTable {
    /// Opens (creating) `dir/raw.db` in WAL mode at `sync`.
    pub fn open(dir: &Path, sync: Synchronous) -> Result<Self, BenchError> {
        Self::open_indexed(dir, sync, &[])
    }

    /// As [`RawTable::open`], with an index on `json_extract(json, '$.FIELD')` for each of
    /// `indexed`: what the store creates for a collection's declared `indexed` fields.
    pub fn open_indexed(
        dir: &Path,
        sync: Synchronous,
        indexed: &[String],
    ) -> Result<Self, BenchError> {
        std::fs::create_dir_all(dir)?;
        let conn = Connection::open(dir.join(RAW_DB_FILE))?;
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        let level = match sync {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        };
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {level};
             CREATE TABLE IF NOT EXISTS rows (id TEXT PRIMARY KEY, json TEXT NOT NULL);"
        ))?;
        for field in indexed {
            if !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(BenchError::Check(format!("bad index field {field:?}")));
            }
            conn.execute_batch(&format!(
                "CREATE INDEX IF NOT EXISTS rows_{field} ON rows (json_extract(json, '$.{field}'))"
            ))?;
        }
        Ok(Self { conn })
    }

    /// Inserts `rows` (each a JSON object with a string `id`) in one transaction; an existing id
    /// is an error, as for a plain INSERT.
    pub fn insert<R: Borrow<Value>>(
        &mut self,
        rows: impl IntoIterator<Item = R>,
    ) -> Result<(), BenchError> {
        self.write("INSERT INTO rows (id, json) VALUES (?1, ?2)", rows)
    }

    /// Inserts or replaces `rows` in one transaction (`INSERT .. ON CONFLICT DO UPDATE`).
    pub fn upsert<R: Borrow<Value>>(
        &mut self,
        rows: impl IntoIterator<Item = R>,
    ) -> Result<(), BenchError> {
        self.write(
            "INSERT INTO rows (id, json) VALUES (?1, ?2)
             ON CONFLICT (id) DO UPDATE SET json = excluded.json",
            rows,
        )
    }

    fn write<R: Borrow<Value>>(
        &mut self,
        sql: &str,
        rows: impl IntoIterator<Item = R>,
    ) -> Result<(), BenchError> {
        write_batch(&mut self.conn, sql, rows, |stmt, row| {
            stmt.execute(params![row_id(row)?, json_text(row)?])?;
            Ok(())
        })
    }

    /// The stored JSON text of one row.
    pub fn get(&self, id: &str) -> Result<Option<String>, BenchError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT json FROM rows WHERE id = ?1")?;
        Ok(stmt.query_row([id], |r| r.get(0)).optional()?)
    }

    /// Number of rows.
    pub fn len(&self) -> Result<u64, BenchError> {
        count_rows(&self.conn)
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> Result<bool, BenchError> {
        Ok(self.len()? == 0)
    }
}

/// Runs the cached statement `sql` once per row (`exec` binds and executes it) in one
/// transaction: how every raw side writes a batch.
pub(crate) fn write_batch<R: Borrow<Value>>(
    conn: &mut Connection,
    sql: &str,
    rows: impl IntoIterator<Item = R>,
    mut exec: impl FnMut(&mut rusqlite::CachedStatement<'_>, &Value) -> Result<(), BenchError>,
) -> Result<(), BenchError> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(sql)?;
        for row in rows {
            exec(&mut stmt, row.borrow())?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Rows in the table `rows` of `conn`.
pub(crate) fn count_rows(conn: &Connection) -> Result<u64, BenchError> {
    Ok(conn.query_row("SELECT COUNT(*) FROM rows", [], |r| r.get::<_, i64>(0))? as u64)
}

/// A row's JSON text, serialized the fastest way serde_json offers (`io::Write` into a buffer
/// sized for a row), as the store does.
fn json_text(row: &Value) -> Result<String, BenchError> {
    let mut buf = Vec::with_capacity(512);
    serde_json::to_writer(&mut buf, row).map_err(|e| BenchError::Check(e.to_string()))?;
    String::from_utf8(buf).map_err(|e| BenchError::Check(e.to_string()))
}

/// The string `id` of a generated row.
pub fn row_id(row: &Value) -> Result<&str, BenchError> {
    row["id"]
        .as_str()
        .ok_or_else(|| BenchError::Check(format!("row without a string id: {row}")))
}

/// Opens `path` read-only (for the RSS baseline's reads).
pub fn open_read_only(path: &Path) -> Result<Connection, BenchError> {
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Ok(Connection::open_with_flags(path, flags)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn insert_refuses_duplicates_and_upsert_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = RawTable::open(dir.path(), Synchronous::Normal).unwrap();
        t.insert(&[json!({"id": "a", "v": 1}), json!({"id": "b", "v": 2})])
            .unwrap();
        assert!(t.insert(&[json!({"id": "a", "v": 3})]).is_err());
        t.upsert(&[json!({"id": "a", "v": 4})]).unwrap();
        assert_eq!(t.get("a").unwrap().as_deref(), Some(r#"{"id":"a","v":4}"#));
        assert_eq!(t.len().unwrap(), 2);
        assert!(t.insert(&[json!({"v": 1})]).is_err(), "rows need an id");
    }

    #[test]
    fn indexed_tables_use_their_expression_index() {
        let dir = tempfile::tempdir().unwrap();
        let t =
            RawTable::open_indexed(dir.path(), Synchronous::Normal, &["device_id".into()]).unwrap();
        let plan: String = t
            .conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT json FROM rows WHERE json_extract(json, '$.device_id') = 'a'",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("rows_device_id"), "{plan}");
        let bad = RawTable::open_indexed(dir.path(), Synchronous::Normal, &["x'".into()]);
        assert!(bad.is_err());
    }
}
