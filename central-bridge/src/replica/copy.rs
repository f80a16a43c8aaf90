//! `COPY` for the set-based batches ([`super::batch`]): the statement shape Postgres loads rows
//! with at the least cost (benches/README.md, "statement shapes": `jsonb_populate_recordset`
//! costs about twice as much per row).
//!
//! - Materialized rows go as `COPY` text ([`rows_text`]). Every JSON value is written as its
//!   column's text input — what `jsonb_populate_record` casts it from on the other paths: a
//!   string as it is, a number or a boolean as its literal, JSON columns and `_extra` as JSON
//!   text, null as `\N` — so a value its column cannot hold fails the statement just the same.
//!   Log rows go straight into their table; document rows into a temporary staging table (one
//!   per table and session, [`stage_name`], emptied at every commit) and from there into the
//!   table with one `INSERT … ON CONFLICT DO UPDATE`.
//! - Stored transactions go as binary `COPY` straight into `txns` ([`txns_binary`]).
//!
//! `COPY` has no `ON CONFLICT`, so it is only used where the keys are new: the transactions are
//! not held (read under their origins' locks), and a log row's id is new unless a peer reuses
//! one. A unique violation ([`is_collision`]) fails the attempt, and the caller applies the
//! batch again with the statements that tolerate existing keys.

use std::io::Write;

use meshlite_core::{ReplicaId, Txn};
use serde_json::{Map, Value};

use super::as_i64;
use crate::ddl::{ColumnType, SYNCED_AT_COLUMN, TableSpec};

/// How a set-based batch writes its rows and stored transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `COPY` where keys are new (see the module doc); the first try.
    Copy,
    /// Statements that tolerate existing keys (`jsonb_populate_recordset`, `unnest`, each with
    /// `ON CONFLICT`): after a [`is_collision`].
    Statements,
}

/// One materialized row to write: its record id, fields (as materialized or appended) and the
/// origin of the transaction that made it.
#[derive(Debug, Clone, Copy)]
pub struct RowRef<'a> {
    /// The record id (the primary key's text form).
    pub id: &'a str,
    /// The record's fields.
    pub fields: &'a Map<String, Value>,
    /// Origin of the change.
    pub origin: &'a ReplicaId,
}

/// The rows in `COPY` text format, columns in the order of [`super::rows::columns`]: the
/// primary key, the declared columns, `_extra` (the undeclared fields but the key and
/// `_synced_at`) and `_origin`.
pub fn rows_text<'a>(table: &TableSpec, rows: impl IntoIterator<Item = RowRef<'a>>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    for row in rows {
        escape_into(&mut out, row.id.as_bytes());
        for column in &table.columns {
            out.push(b'\t');
            cell(
                &mut out,
                column.ty,
                row.fields.get(column.name.as_str()),
                &mut scratch,
            );
        }
        out.push(b'\t');
        extra(&mut out, table, row.fields, &mut scratch);
        out.push(b'\t');
        out.extend_from_slice(row.origin.to_hex().as_bytes());
        out.push(b'\n');
    }
    out
}

/// One value as its column's text input.
fn cell(out: &mut Vec<u8>, ty: ColumnType, value: Option<&Value>, scratch: &mut Vec<u8>) {
    match (ty, value) {
        (_, None | Some(Value::Null)) => out.extend_from_slice(b"\\N"),
        (ColumnType::Jsonb, Some(v)) => json_into(out, v, scratch),
        (_, Some(Value::String(s))) => escape_into(out, s.as_bytes()),
        (_, Some(Value::Number(n))) => {
            let _ = write!(out, "{n}");
        }
        (_, Some(Value::Bool(b))) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        (_, Some(v)) => json_into(out, v, scratch),
    }
}

/// `_extra`: the fields that have no column of their own, as one JSON object.
fn extra(out: &mut Vec<u8>, table: &TableSpec, fields: &Map<String, Value>, scratch: &mut Vec<u8>) {
    scratch.clear();
    scratch.push(b'{');
    let mut first = true;
    for (field, value) in fields {
        let own_column = table.columns.iter().any(|c| c.name.as_str() == field);
        if own_column || field == table.primary_key.name.as_str() || field == SYNCED_AT_COLUMN {
            continue;
        }
        if !first {
            scratch.push(b',');
        }
        first = false;
        // Writing into a Vec cannot fail, nor can serializing a `str` or a `Value`.
        let _ = serde_json::to_writer(&mut *scratch, field);
        scratch.push(b':');
        let _ = serde_json::to_writer(&mut *scratch, value);
    }
    scratch.push(b'}');
    escape_into(out, scratch);
}

fn json_into(out: &mut Vec<u8>, value: &Value, scratch: &mut Vec<u8>) {
    scratch.clear();
    let _ = serde_json::to_writer(&mut *scratch, value);
    escape_into(out, scratch);
}

/// `COPY` text escaping: backslash, tab, newline and carriage return.
fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// The transactions as binary `COPY` rows of `txns (origin, seq, bytes)`, encoded.
pub fn txns_binary<'t>(txns: impl IntoIterator<Item = &'t Txn>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes()); // flags
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for txn in txns {
        out.extend_from_slice(&3i16.to_be_bytes());
        field(&mut out, &txn.id.origin.0);
        field(&mut out, &as_i64(txn.id.seq).to_be_bytes());
        field(&mut out, &txn.encode());
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The session's staging table of `table` (in `pg_temp`): a fixed name of its own per table,
/// short whatever the table's name (FNV-1a of the name).
pub fn stage_name(table: &TableSpec) -> String {
    let hash = table
        .name
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("\"meshlite_stage_{hash:016x}\"")
}

/// A unique violation: a key `COPY` expected to be new exists.
pub fn is_collision(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| db.code().code() == "23505")
}
