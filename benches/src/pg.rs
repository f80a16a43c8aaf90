//! The Postgres side of the bridge bench: a plain baseline over the same server, and the
//! server's CPU time.
//!
//! - [`PlainTable`]: a typed table made `LIKE` one the bridge materializes (same columns,
//!   defaults and indexes; no triggers), written the way a hand-written loader would: rows as
//!   `COPY` text, either straight into the table ([`PlainTable::copy_append`]) or into a staging
//!   table followed by one `INSERT … SELECT … ON CONFLICT DO UPDATE`
//!   ([`PlainTable::staged_upsert`]). Both take the rows as JSON objects, as the bridge does, and
//!   their timed work includes encoding them.
//! - [`ServerCpu`]: CPU time of every process of the Postgres server (the postmaster and its
//!   children: backends, WAL writer, checkpointer, autovacuum), from `/proc/<pid>/schedstat`
//!   (nanoseconds). Only for a server on this machine; a process that starts and exits between
//!   two snapshots is not counted.

use std::collections::HashMap;
use std::io::{Cursor, Write};
use std::time::Duration;

use futures_util::{SinkExt, pin_mut};
use serde_json::Value;
use tokio_postgres::Client;

use crate::BenchError;

/// The bridge's per-row columns that do not come from a record's fields.
const EXTRA: &str = "_extra";
const ORIGIN: &str = "_origin";
const SYNCED_AT: &str = "_synced_at";

/// A baseline table shaped like a materialized one.
#[derive(Debug, Clone)]
pub struct PlainTable {
    /// `schema.table`, quoted.
    name: String,
    /// The staging table for upserts (temporary, emptied at each commit).
    stage: String,
    /// Primary key column.
    key: String,
    /// Columns written, in table order (`_synced_at` is `now()`), with whether they are JSON.
    columns: Vec<(String, bool)>,
    /// `_origin` of every row.
    origin: String,
}

impl PlainTable {
    /// Creates `schema.name` `LIKE` the bridge's `source` table (`INCLUDING ALL`: columns,
    /// defaults, constraints, indexes), and a staging table for it on this session.
    pub async fn create_like(
        client: &Client,
        source: &str,
        schema: &str,
        name: &str,
        key: &str,
    ) -> Result<Self, BenchError> {
        let qualified = format!("\"{schema}\".\"{name}\"");
        let stage = format!("\"stage_{name}\"");
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
                 CREATE TABLE {qualified} (LIKE {source} INCLUDING ALL);
                 CREATE TEMP TABLE {stage} (LIKE {qualified} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;"
            ))
            .await?;
        let rows = client
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                &[&schema, &name],
            )
            .await?;
        let columns = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .filter(|(c, _)| c != SYNCED_AT)
            .map(|(c, ty)| (c, ty == "jsonb" || ty == "json"))
            .collect();
        Ok(Self {
            name: qualified,
            stage,
            key: key.to_owned(),
            columns,
            origin: "baseline".into(),
        })
    }

    /// Upserts `rows` (each a record's JSON object): `COPY` into the staging table, then one
    /// `INSERT … SELECT … ON CONFLICT DO UPDATE` of every column, in one transaction.
    pub async fn staged_upsert(
        &self,
        client: &mut Client,
        rows: Vec<Value>,
    ) -> Result<usize, BenchError> {
        let n = rows.len();
        let list = self.column_list();
        let set: Vec<String> = self
            .columns
            .iter()
            .filter(|(c, _)| *c != self.key)
            .map(|(c, _)| format!("\"{c}\" = EXCLUDED.\"{c}\""))
            .collect();
        let tx = client.transaction().await?;
        copy(
            &tx,
            &format!("COPY {} ({list}) FROM STDIN", self.stage),
            self.copy_text(rows),
        )
        .await?;
        tx.execute(
            &format!(
                "INSERT INTO {} ({list}, \"{SYNCED_AT}\") SELECT {list}, now() FROM {} \
                 ON CONFLICT (\"{}\") DO UPDATE SET {}, \"{SYNCED_AT}\" = now()",
                self.name,
                self.stage,
                self.key,
                set.join(", ")
            ),
            &[],
        )
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Appends `rows` with one `COPY` straight into the table.
    pub async fn copy_append(
        &self,
        client: &Client,
        rows: Vec<Value>,
    ) -> Result<usize, BenchError> {
        let n = rows.len();
        let sql = format!("COPY {} ({}) FROM STDIN", self.name, self.column_list());
        copy(client, &sql, self.copy_text(rows)).await?;
        Ok(n)
    }

    /// Appends `rows` in one transaction, shaped as `shape` says (see [`Shape`]).
    pub async fn append_shaped(
        &self,
        client: &mut Client,
        rows: Vec<Value>,
        shape: Shape,
    ) -> Result<usize, BenchError> {
        let n = rows.len();
        if shape == Shape::Copy {
            return self.copy_append(client, rows).await;
        }
        let list = self.column_list();
        let insert = |source: &str| {
            format!(
                "INSERT INTO {t} ({list}, \"{SYNCED_AT}\") SELECT {list}, now() \
                 FROM {source}(NULL::{t}, $1::jsonb) ON CONFLICT (\"{k}\") DO NOTHING",
                t = self.name,
                k = self.key,
            )
        };
        let tx = client.transaction().await?;
        match shape {
            Shape::Copy => {}
            Shape::RowEach => {
                let sql = insert("jsonb_populate_record");
                for row in rows {
                    tx.execute(sql.as_str(), &[&self.populate_json(row)])
                        .await?;
                }
            }
            Shape::RowEachPrepared => {
                let statement = tx.prepare(&insert("jsonb_populate_record")).await?;
                for row in rows {
                    tx.execute(&statement, &[&self.populate_json(row)]).await?;
                }
            }
            Shape::Recordset => {
                let all: Vec<Value> = rows.into_iter().map(|r| self.populate_json(r)).collect();
                let sql = insert("jsonb_populate_recordset");
                tx.execute(sql.as_str(), &[&Value::Array(all)]).await?;
            }
        }
        tx.commit().await?;
        Ok(n)
    }

    /// A row as `jsonb_populate_record` input, as the bridge builds it: declared columns by
    /// name, the other fields in `_extra`, and `_origin`.
    fn populate_json(&self, row: Value) -> Value {
        let Value::Object(mut fields) = row else {
            return row;
        };
        fields.remove(SYNCED_AT);
        let mut out = serde_json::Map::new();
        for (column, _) in &self.columns {
            if let Some(v) = fields.remove(column) {
                out.insert(column.clone(), v);
            }
        }
        out.insert(EXTRA.into(), Value::Object(fields));
        out.insert(ORIGIN.into(), Value::String(self.origin.clone()));
        Value::Object(out)
    }

    fn column_list(&self) -> String {
        let quoted: Vec<String> = self
            .columns
            .iter()
            .map(|(c, _)| format!("\"{c}\""))
            .collect();
        quoted.join(", ")
    }

    /// The rows in `COPY` text format: declared columns from the fields of the same name, the
    /// other fields in `_extra`, as the bridge splits them.
    fn copy_text(&self, rows: Vec<Value>) -> Vec<u8> {
        let mut out = Vec::with_capacity(rows.len() * 320);
        for row in rows {
            let Value::Object(mut fields) = row else {
                continue;
            };
            fields.remove(SYNCED_AT);
            let mut cells: Vec<(Option<Value>, bool)> = Vec::with_capacity(self.columns.len());
            for (column, json) in &self.columns {
                cells.push((fields.remove(column), *json));
            }
            let extra = Value::Object(std::mem::take(&mut fields));
            for (i, ((column, _), (value, json))) in self.columns.iter().zip(cells).enumerate() {
                if i > 0 {
                    out.push(b'\t');
                }
                match column.as_str() {
                    EXTRA => write_cell(&mut out, &extra, true),
                    ORIGIN => escape_into(&mut out, &self.origin),
                    _ => match value {
                        None | Some(Value::Null) => out.extend_from_slice(b"\\N"),
                        Some(v) => write_cell(&mut out, &v, json),
                    },
                }
            }
            out.push(b'\n');
        }
        out
    }
}

/// How [`PlainTable::append_shaped`] writes a batch of log rows: the statement shapes behind
/// the bridge's cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One `COPY` (the baseline).
    Copy,
    /// One `INSERT … FROM jsonb_populate_record($1)` per row, parsed and planned each time
    /// (what the bridge's `rows::append` does: the driver prepares a `&str` statement on every
    /// call, one extra round trip).
    RowEach,
    /// The same statement prepared once per batch.
    RowEachPrepared,
    /// One `INSERT … FROM jsonb_populate_recordset($1)` for the whole batch.
    Recordset,
}

impl Shape {
    /// Every shape, baseline first.
    pub const ALL: [Shape; 4] = [
        Shape::Copy,
        Shape::RowEach,
        Shape::RowEachPrepared,
        Shape::Recordset,
    ];

    /// Its name in results.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Copy => "copy",
            Shape::RowEach => "insert_per_row",
            Shape::RowEachPrepared => "insert_per_row_prepared",
            Shape::Recordset => "insert_recordset",
        }
    }
}

/// Sends `data` through `COPY … FROM STDIN`.
async fn copy(
    client: &impl tokio_postgres::GenericClient,
    sql: &str,
    data: Vec<u8>,
) -> Result<u64, BenchError> {
    let sink = client.client().copy_in::<_, Cursor<Vec<u8>>>(sql).await?;
    pin_mut!(sink);
    sink.send(Cursor::new(data)).await?;
    Ok(sink.finish().await?)
}

/// One value as a `COPY` text cell: strings as they are, JSON columns as JSON text.
fn write_cell(out: &mut Vec<u8>, value: &Value, json: bool) {
    match value {
        Value::String(s) if !json => escape_into(out, s),
        Value::Number(n) if !json => {
            let _ = write!(out, "{n}");
        }
        Value::Bool(b) if !json => out.extend_from_slice(if *b { b"t" } else { b"f" }),
        other => {
            let text = serde_json::to_string(other).unwrap_or_default();
            escape_into(out, &text);
        }
    }
}

/// `COPY` text escaping: backslash, tab, newline and carriage return.
fn escape_into(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// The processes of a Postgres server running on this machine.
#[derive(Debug, Clone, Copy)]
pub struct ServerCpu {
    postmaster: u32,
}

/// On-CPU nanoseconds of each server process at one moment.
pub type CpuSnapshot = HashMap<u32, u64>;

impl ServerCpu {
    /// The server behind `client`, found from its backend's parent; `None` if that process is
    /// not visible here (a server on another machine or in another PID namespace).
    pub async fn find(client: &Client) -> Result<Option<Self>, BenchError> {
        let backend: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .get(0);
        let Ok(backend) = u32::try_from(backend) else {
            return Ok(None);
        };
        Ok(parent_of(backend).map(|postmaster| Self { postmaster }))
    }

    /// CPU time so far of the postmaster and its children.
    pub fn snapshot(&self) -> CpuSnapshot {
        let mut out = CpuSnapshot::new();
        let mut add = |pid: u32| {
            if let Some(ns) = on_cpu_ns(pid) {
                out.insert(pid, ns);
            }
        };
        add(self.postmaster);
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return out;
        };
        for entry in entries.filter_map(Result::ok) {
            let pid = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok());
            if let Some(pid) = pid.filter(|&p| parent_of(p) == Some(self.postmaster)) {
                add(pid);
            }
        }
        out
    }

    /// CPU time the server spent from `before` to `after` (processes started meanwhile count
    /// from zero).
    pub fn between(before: &CpuSnapshot, after: &CpuSnapshot) -> Duration {
        let ns = after
            .iter()
            .map(|(pid, ns)| ns.saturating_sub(before.get(pid).copied().unwrap_or(0)))
            .sum();
        Duration::from_nanos(ns)
    }
}

/// The parent pid from `/proc/<pid>/stat` (the field after the state, after the last `)`).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// On-CPU nanoseconds of a (single-threaded) process.
fn on_cpu_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn copy_text_splits_declared_columns_from_extra_and_escapes() {
        let table = PlainTable {
            name: "t".into(),
            stage: "s".into(),
            key: "id".into(),
            columns: vec![
                ("id".into(), false),
                ("tags".into(), true),
                ("note".into(), false),
                (EXTRA.into(), true),
                (ORIGIN.into(), false),
            ],
            origin: "o".into(),
        };
        let row = json!({"id": "a", "note": "x\ty\\", "tags": {"k": 1}, "n": 2, "_synced_at": "z"});
        let text = String::from_utf8(table.copy_text(vec![row, json!({"id": "b"})])).unwrap();
        assert_eq!(
            text,
            "a\t{\"k\":1}\tx\\ty\\\\\t{\"n\":2}\to\nb\t\\N\t\\N\t{}\to\n"
        );
    }

    #[test]
    fn this_process_has_a_parent_and_cpu_time() {
        assert_eq!(
            parent_of(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
        assert!(on_cpu_ns(std::process::id()).is_some_and(|ns| ns > 0));
    }
}
