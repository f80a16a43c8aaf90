//! `COPY` for the set-based batches (`replica::batch`): the statement shape Postgres loads rows
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
//! - Stored transactions go as binary `COPY` straight into `txns` ([`txns_binary`]), the
//!   conflict audit rows as `COPY` text ([`audit_text`]).
//!
//! `COPY` has no `ON CONFLICT`, so it is only used where the keys are new: the transactions are
//! not held (read under their origins' locks), and a log row's id is new unless a peer reuses
//! one. A unique violation ([`is_collision`]) fails the attempt, and the caller applies the
//! batch again with the statements that tolerate existing keys.

use std::io::Write;

use meshlite_core::store::record::FieldConflict;
use meshlite_core::{ReplicaId, Txn};
use serde_json::{Map, Value};

use super::{as_i64, audit};
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

/// One row of the conflict audit table.
#[derive(Debug, Clone, Copy)]
pub struct AuditCells<'a> {
    /// The record's collection.
    pub collection: &'a str,
    /// The record id.
    pub record_id: &'a str,
    /// Its incarnation, as stored.
    pub incarnation: i32,
    /// The field, its candidates and winner.
    pub conflict: &'a FieldConflict,
}

/// Audit rows as `COPY` text of `conflicts (collection, record_id, incarnation, field, policy,
/// candidates, winner, origins, recorded_by)`: candidates as `[{"value": v, "origin": o}, …]`,
/// `origins` the candidates' writers (hex replica ids: no character needs quoting in an array
/// literal).
pub fn audit_text<'a>(
    rows: impl IntoIterator<Item = AuditCells<'a>>,
    recorded_by: &str,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    for row in rows {
        let c = row.conflict;
        for text in [row.collection, row.record_id] {
            escape_into(&mut out, text.as_bytes());
            out.push(b'\t');
        }
        let _ = write!(out, "{}\t", row.incarnation);
        escape_into(&mut out, c.field.as_bytes());
        out.push(b'\t');
        escape_into(&mut out, c.policy.name().as_bytes());
        out.push(b'\t');
        json_into(&mut out, &audit::candidates(c), &mut scratch);
        out.push(b'\t');
        match &c.winner {
            Some(w) => json_into(&mut out, w, &mut scratch),
            None => out.extend_from_slice(b"\\N"),
        }
        out.push(b'\t');
        origins_literal(&mut out, &audit::origins(c));
        out.push(b'\t');
        escape_into(&mut out, recorded_by.as_bytes());
        out.push(b'\n');
    }
    out
}

/// A `text[]` literal of `origins` (`{a,b}`).
fn origins_literal(out: &mut Vec<u8>, origins: &[&str]) {
    out.push(b'{');
    out.extend_from_slice(origins.join(",").as_bytes());
    out.push(b'}');
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

/// The error that explains a failed group of pipelined statements: the first one that is not
/// "current transaction is aborted" (which every statement after the failed one gets), or that.
///
/// The group's statements are all awaited to their end (`join`, not `try_join`): dropping a
/// `COPY` half-way would leave its answer unread, and whichever statement's error is polled
/// first is not necessarily the cause (a unique violation must be told apart, [`is_collision`]).
pub fn settle(errors: Vec<tokio_postgres::Error>) -> Option<tokio_postgres::Error> {
    let aborted = |e: &tokio_postgres::Error| {
        e.as_db_error()
            .is_some_and(|db| db.code().code() == "25P02")
    };
    let first = errors.iter().position(|e| !aborted(e)).unwrap_or(0);
    errors.into_iter().nth(first)
}

/// A unique violation: a key `COPY` expected to be new exists.
pub fn is_collision(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| db.code().code() == "23505")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ddl::{Column, TableKind};
    use crate::pg::Ident;
    use serde_json::json;

    fn column(name: &str, ty: ColumnType) -> Column {
        Column {
            name: Ident::new(name, "test").unwrap(),
            ty,
            indexed: false,
        }
    }

    fn table() -> TableSpec {
        TableSpec {
            name: Ident::new("notes", "test").unwrap(),
            kind: TableKind::Document,
            primary_key: column("id", ColumnType::Text),
            columns: vec![
                column("done", ColumnType::Boolean),
                column("meta", ColumnType::Jsonb),
                column("n", ColumnType::BigInt),
                column("title", ColumnType::Text),
            ],
        }
    }

    #[test]
    fn rows_are_column_text_with_the_rest_in_extra_and_escaped() {
        let fields = json!({
            "done": true, "meta": {"a": "x\ty"}, "n": 42, "title": "a\\b\nc",
            "other": [1, "two"], "id": "ignored", "_synced_at": "ignored"
        });
        let origin = ReplicaId([7; 16]);
        let row = RowRef {
            id: "r\t1",
            fields: fields.as_object().unwrap(),
            origin: &origin,
        };
        let text = String::from_utf8(rows_text(&table(), [row])).unwrap();
        let want = format!(
            "r\\t1\ttrue\t{{\"a\":\"x\\\\ty\"}}\t42\ta\\\\b\\nc\t{{\"other\":[1,\"two\"]}}\t{}\n",
            origin.to_hex()
        );
        assert_eq!(text, want);
    }

    #[test]
    fn missing_and_null_fields_are_sql_null_but_a_json_null_in_a_jsonb_column_too() {
        let fields = json!({ "title": null });
        let origin = ReplicaId([1; 16]);
        let row = RowRef {
            id: "x",
            fields: fields.as_object().unwrap(),
            origin: &origin,
        };
        let text = String::from_utf8(rows_text(&table(), [row])).unwrap();
        assert!(text.starts_with("x\t\\N\t\\N\t\\N\t\\N\t{}\t"), "{text}");
    }

    #[test]
    fn binary_txns_have_the_copy_header_one_tuple_each_and_the_trailer() {
        let txn = Txn {
            id: meshlite_core::TxnId {
                origin: ReplicaId([2; 16]),
                seq: 5,
            },
            timestamp_ms: 0,
            schema_version: 1,
            ops: Vec::new(),
        };
        let bytes = txns_binary([&txn]);
        assert!(bytes.starts_with(b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0"));
        assert!(bytes.ends_with(&(-1i16).to_be_bytes()));
        let encoded = txn.encode();
        let tuple = 2 + (4 + 16) + (4 + 8) + (4 + encoded.len());
        assert_eq!(bytes.len(), 19 + tuple + 2);
        assert_eq!(&bytes[19..21], &3i16.to_be_bytes());
    }

    #[test]
    fn audit_rows_carry_candidates_as_values_and_a_missing_winner_as_null() {
        let conflict = FieldConflict {
            field: "title".into(),
            policy: meshlite_core::schema::MergePolicy::Lww,
            candidates: vec![json!("a"), json!("b")],
            origins: vec!["0b".into(), "0a".into()],
            winner: None,
        };
        let row = AuditCells {
            collection: "notes",
            record_id: "r1",
            incarnation: 0,
            conflict: &conflict,
        };
        let text = String::from_utf8(audit_text([row], "central")).unwrap();
        let want = "notes\tr1\t0\ttitle\tlww\t\
            [{\"origin\":\"0b\",\"value\":\"a\"},{\"origin\":\"0a\",\"value\":\"b\"}]\t\
            \\N\t{0a,0b}\tcentral\n";
        assert_eq!(text, want);
    }

    #[test]
    fn stage_names_are_fixed_per_table_and_short() {
        let (a, mut b) = (table(), table());
        assert_eq!(stage_name(&a), stage_name(&b));
        b.name = Ident::new(&"x".repeat(60), "test").unwrap();
        assert_ne!(stage_name(&a), stage_name(&b));
        assert!(stage_name(&b).len() < 40);
    }
}
