//! Typed-table sides of the document figures (issue 13): a raw SQLite table with one column per
//! field (what a Postgres-minded user writes by hand), and the same table made a cr-sqlite CRR.
//!
//! Both get the same rows as the JSON baseline ([`crate::baseline::RawTable`]) and the same
//! indexes (one plain column index per declared `indexed` field instead of a JSON expression
//! index), in WAL mode at the store's `synchronous` level, one transaction per batch, with an
//! `INSERT … ON CONFLICT (id) DO UPDATE` of every column for updates. The timed work includes
//! taking each field out of the `serde_json::Value` and binding it (strings as TEXT, integers
//! as INTEGER, floats as REAL, booleans as 0/1, anything else as its JSON text).
//!
//! cr-sqlite is loaded from the shared library `benches/crsqlite/build.sh` builds (the
//! `@vlcn.io/crsqlite` npm source, `make loadable`); [`CrSqlite::locate`] says why when it is
//! not there, so the bench prints "cr-sqlite unavailable: …" instead of skipping silently.

use std::borrow::Borrow;
use std::path::{Path, PathBuf};

use meshlite_core::store::Synchronous;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params_from_iter};
use serde_json::Value;

use crate::BenchError;
use crate::baseline::{count_rows, row_id, write_batch};

/// Environment variable naming the cr-sqlite loadable extension (`crsqlite.so`).
pub const CRSQLITE_ENV: &str = "MESHLITE_CRSQLITE";

/// Where `benches/crsqlite/build.sh` puts the library by default, relative to the repository.
pub const CRSQLITE_DEFAULT: &str = "target/crsqlite/crsqlite-0.16.3.so";

/// Which engine a typed table runs on.
#[derive(Clone, Debug)]
pub enum Flavor {
    /// Plain SQLite.
    Plain,
    /// A cr-sqlite CRR (`crsql_as_crr`), with the extension loaded from this path.
    CrSqlite(PathBuf),
}

/// The cr-sqlite library to use, or why there is none.
#[derive(Clone, Debug)]
pub enum CrSqlite {
    /// Found at this path.
    At(PathBuf),
    /// Not usable, and why.
    Unavailable(String),
}

impl CrSqlite {
    /// `$MESHLITE_CRSQLITE`, else [`CRSQLITE_DEFAULT`] under the current directory.
    pub fn locate() -> Self {
        let (path, from) = match std::env::var_os(CRSQLITE_ENV) {
            Some(p) => (PathBuf::from(p), CRSQLITE_ENV),
            None => (PathBuf::from(CRSQLITE_DEFAULT), "the default path"),
        };
        match path.is_file() {
            true => CrSqlite::At(path),
            false => CrSqlite::Unavailable(format!(
                "no library at {} ({from}); build it with `bash benches/crsqlite/build.sh` or set {CRSQLITE_ENV}",
                path.display()
            )),
        }
    }
}

/// A table with one typed column per field, keyed by `id`.
#[derive(Debug)]
pub struct TypedTable {
    conn: Connection,
    insert_sql: String,
    upsert_sql: String,
    columns: Vec<String>,
    crr: bool,
}

impl TypedTable {
    /// Opens (creating) `dir/typed.db` with a `rows` table of `columns` (besides `id`; name and
    /// declared type, see [`columns_of`]) and an index on each of `indexed`.
    pub fn open(
        dir: &Path,
        sync: Synchronous,
        columns: &[(String, &'static str)],
        indexed: &[String],
        flavor: &Flavor,
    ) -> Result<Self, BenchError> {
        for name in columns.iter().map(|(c, _)| c).chain(indexed) {
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(BenchError::Check(format!("bad column name {name:?}")));
            }
        }
        std::fs::create_dir_all(dir)?;
        let conn = Connection::open(dir.join("typed.db"))?;
        let crr = matches!(flavor, Flavor::CrSqlite(_));
        if let Flavor::CrSqlite(lib) = flavor {
            load_crsqlite(&conn, lib)?;
        }
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        let level = match sync {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        };
        let defs: Vec<String> = columns.iter().map(|(c, ty)| format!("{c} {ty}")).collect();
        let columns: Vec<String> = columns.iter().map(|(c, _)| c.clone()).collect();
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {level};
             CREATE TABLE IF NOT EXISTS rows (id TEXT PRIMARY KEY NOT NULL, {});",
            defs.join(", ")
        ))?;
        for field in indexed {
            conn.execute_batch(&format!(
                "CREATE INDEX IF NOT EXISTS rows_{field} ON rows ({field})"
            ))?;
        }
        if crr {
            // The two-argument form: cr-sqlite 0.16.3's one-argument form hands the Rust
            // literal "main", which has no NUL terminator, to `CStr::from_ptr`; built with
            // today's compiler the bytes after it are not UTF-8 and it fails with SQLITE_NOMEM.
            let _: Option<String> =
                conn.query_row("SELECT crsql_as_crr('main', 'rows')", [], |r| r.get(0))?;
        }
        let names = columns.join(", ");
        let marks: Vec<String> = (2..=columns.len() + 1).map(|i| format!("?{i}")).collect();
        let sets: Vec<String> = columns
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let insert_sql = format!(
            "INSERT INTO rows (id, {names}) VALUES (?1, {})",
            marks.join(", ")
        );
        let upsert_sql = format!(
            "{insert_sql} ON CONFLICT (id) DO UPDATE SET {}",
            sets.join(", ")
        );
        Ok(Self {
            conn,
            insert_sql,
            upsert_sql,
            columns,
            crr,
        })
    }

    /// Inserts `rows` in one transaction.
    pub fn insert<R: Borrow<Value>>(
        &mut self,
        rows: impl IntoIterator<Item = R>,
    ) -> Result<(), BenchError> {
        self.write(false, rows)
    }

    /// Inserts or updates `rows` in one transaction.
    pub fn upsert<R: Borrow<Value>>(
        &mut self,
        rows: impl IntoIterator<Item = R>,
    ) -> Result<(), BenchError> {
        self.write(true, rows)
    }

    fn write<R: Borrow<Value>>(
        &mut self,
        upsert: bool,
        rows: impl IntoIterator<Item = R>,
    ) -> Result<(), BenchError> {
        let sql = match upsert {
            true => &self.upsert_sql,
            false => &self.insert_sql,
        };
        let columns = &self.columns;
        write_batch(&mut self.conn, sql, rows, |stmt, row| {
            let id = row_id(row)?;
            let values = std::iter::once(SqlValue::Text(id.to_owned()))
                .chain(columns.iter().map(|c| sql_value(&row[c.as_str()])));
            stmt.execute(params_from_iter(values))?;
            Ok(())
        })
    }

    /// Number of rows.
    pub fn len(&self) -> Result<u64, BenchError> {
        count_rows(&self.conn)
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> Result<bool, BenchError> {
        Ok(self.len()? == 0)
    }

    /// Changes cr-sqlite recorded (`crsql_changes` rows); `None` for a plain table.
    pub fn crr_changes(&self) -> Result<Option<u64>, BenchError> {
        if !self.crr {
            return Ok(None);
        }
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM crsql_changes", [], |r| r.get(0))?;
        Ok(Some(n as u64))
    }
}

impl Drop for TypedTable {
    fn drop(&mut self) {
        if self.crr {
            // cr-sqlite asks for this before a connection with its extension closes.
            let _ = self.conn.query_row("SELECT crsql_finalize()", [], |r| {
                r.get::<_, Option<String>>(0)
            });
        }
    }
}

/// Loads the cr-sqlite extension into `conn`.
#[allow(unsafe_code)]
fn load_crsqlite(conn: &Connection, lib: &Path) -> Result<(), BenchError> {
    // SAFETY: loading a trusted extension built from cr-sqlite's own source by
    // benches/crsqlite/build.sh; enabled only for this call.
    unsafe {
        let _guard = rusqlite::LoadExtensionGuard::new(conn)?;
        conn.load_extension(lib, Some("sqlite3_crsqlite_init"))?;
    }
    Ok(())
}

/// A JSON field as the SQL value a typed column gets.
fn sql_value(v: &Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => SqlValue::Text(s.clone()),
        other => SqlValue::Text(other.to_string()),
    }
}

/// The fields of a row besides `id`, sorted, with the SQL type of their value in `row` (the
/// typed table's columns).
pub fn columns_of(row: &Value) -> Vec<(String, &'static str)> {
    let ty = |v: &Value| match v {
        Value::Bool(_) => "INTEGER",
        Value::Number(n) if n.is_i64() || n.is_u64() => "INTEGER",
        Value::Number(_) => "REAL",
        _ => "TEXT",
    };
    row.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| *k != "id")
                .map(|(k, v)| (k.clone(), ty(v)))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_rows_are_written_and_updated() {
        let dir = tempfile::tempdir().unwrap();
        let row =
            json!({"id": "a", "status": "queued", "n": 1, "f": 0.5, "ok": true, "o": {"x": 1}});
        let cols = columns_of(&row);
        let mut t = TypedTable::open(
            dir.path(),
            Synchronous::Normal,
            &cols,
            &["status".into()],
            &Flavor::Plain,
        )
        .unwrap();
        t.insert([&row]).unwrap();
        assert!(
            t.insert([&row]).is_err(),
            "a plain insert refuses a duplicate"
        );
        let next = json!({"id": "a", "status": "done", "n": 2, "f": 0.5, "ok": false, "o": null});
        t.upsert([
            &next,
            &json!({"id": "b", "status": "queued", "n": 3, "f": 1.0, "ok": true, "o": []}),
        ])
        .unwrap();
        assert_eq!(t.len().unwrap(), 2);
        let (status, n): (String, i64) = t
            .conn
            .query_row("SELECT status, n FROM rows WHERE id = 'a'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((status.as_str(), n), ("done", 2));
        assert_eq!(t.crr_changes().unwrap(), None);
        let bad = [("x'".to_owned(), "TEXT")];
        assert!(
            TypedTable::open(dir.path(), Synchronous::Normal, &bad, &[], &Flavor::Plain).is_err()
        );
    }

    #[test]
    fn a_missing_crsqlite_library_says_why() {
        let missing = Path::new("/nonexistent/crsqlite.so");
        let dir = tempfile::tempdir().unwrap();
        let flavor = Flavor::CrSqlite(missing.to_owned());
        assert!(TypedTable::open(dir.path(), Synchronous::Normal, &[], &[], &flavor).is_err());
    }
}
