//! A committed record change rendered as the `data` of a Realtime `postgres_changes` message:
//! `{schema, table, commit_timestamp, type, columns, record, old_record, errors}`, the shape
//! Supabase Realtime sends (realtime-js turns `record`/`old_record` into `new`/`old`).
//!
//! - `record` (INSERT, UPDATE): the merged row as `/rest/v1` shows it with `select=*`: every
//!   declared column, null when the record lacks it.
//! - `old_record`: for UPDATE, the primary key only (what Postgres sends under its default
//!   `REPLICA IDENTITY`: the store's change events carry the new row, not the previous one);
//!   for DELETE, the record's last state, as under `REPLICA IDENTITY FULL`, so that a filter
//!   such as `status=eq.running` also selects the deletes of matching rows (the key alone when
//!   the last state could not be read). Subscribers under an owner rule get the key only in a
//!   DELETE's `old_record` ([`Rendered::key_only`]), as Supabase Realtime sends deletes under
//!   row-level security.
//! - `columns`: `{name, type}` with Postgres type names from the declared types (`int8`,
//!   `float8`, `bool`, `timestamptz`, `uuid`, `text`, `jsonb`); undeclared columns are typed by
//!   their JSON value. realtime-js converts values by these names, and every name chosen here
//!   leaves a JSON value as it is.
//! - `commit_timestamp`: when this node saw the commit (a change from a peer carries no commit
//!   time of its own), UTC with milliseconds as Realtime writes it.
//! - Log collections' appends are INSERTs.

use meshlite_core::schema::{FieldType, Schema};
use meshlite_core::store::{ChangeKind, RecordChange};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::subscription::{EventKind, SCHEMA};
use crate::rest::select::SelectItem;
use crate::rest::table::Table;

/// One change, ready to be matched and sent.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// INSERT, UPDATE or DELETE.
    pub kind: EventKind,
    /// The collection.
    pub table: String,
    /// The row filters are evaluated on: the new row, or a deleted record's last state.
    pub row: Value,
    /// The message's `data`.
    pub data: Value,
    /// For a DELETE, the `data` with the primary key only in `old_record` (and `columns`), for
    /// owner-scoped subscribers.
    pub key_only: Option<Value>,
}

/// The event kind of a store change.
pub fn kind_of(kind: ChangeKind) -> EventKind {
    match kind {
        ChangeKind::Insert | ChangeKind::Append => EventKind::Insert,
        ChangeKind::Update => EventKind::Update,
        ChangeKind::Delete => EventKind::Delete,
    }
}

/// `now` as Realtime writes commit timestamps: `2024-05-01T12:00:00.123Z`.
pub fn commit_timestamp(now: OffsetDateTime) -> String {
    let t = now.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn pg_type(ty: Option<FieldType>, v: Option<&Value>) -> &'static str {
    match (ty, v) {
        (Some(FieldType::Integer), _) => "int8",
        (Some(FieldType::Float), _) => "float8",
        (Some(FieldType::Boolean), _) => "bool",
        (Some(FieldType::Timestamp), _) => "timestamptz",
        (Some(FieldType::Uuid), _) => "uuid",
        (Some(FieldType::Text), _) => "text",
        (Some(FieldType::Json), _) => "jsonb",
        (None, Some(Value::Number(n))) if n.is_i64() || n.is_u64() => "int8",
        (None, Some(Value::Number(_))) => "float8",
        (None, Some(Value::Bool(_))) => "bool",
        (None, Some(Value::Array(_) | Value::Object(_))) => "jsonb",
        (None, _) => "text",
    }
}

/// The key, then the declared columns, then any other column of `row`.
fn columns(table: &Table, row: &Map<String, Value>) -> Value {
    let key = table.key();
    let def = &table.def;
    let mut names: Vec<&String> = vec![];
    let key_name = key.to_owned();
    let declared = def.fields.keys().filter(|f| f.as_str() != key);
    let others = row
        .keys()
        .filter(|k| k.as_str() != key && !def.fields.contains_key(*k));
    let mut out = vec![json!({ "name": key_name, "type": pg_type(def.key_type, row.get(key)) })];
    names.extend(declared.chain(others));
    out.extend(
        names
            .into_iter()
            .map(|n| json!({ "name": n, "type": pg_type(def.field_type(n), row.get(n)) })),
    );
    Value::Array(out)
}

/// Renders `change`; `last` is a deleted record's last state, when it could be read.
pub fn render(schema: &Schema, change: &RecordChange, last: Option<Value>, at: &str) -> Rendered {
    let table = Table {
        name: change.collection.clone(),
        def: schema.collection_or_default(&change.collection),
        // Rendering only shapes the row; who may see it is decided per subscription.
        scope: crate::auth::Scope::All,
    };
    let kind = kind_of(change.kind);
    let key_only = || {
        let mut m = Map::new();
        m.insert(table.key().to_owned(), table.def.key_value(&change.id));
        Value::Object(m)
    };
    let shaped = |v: &Value| match v.as_object() {
        Some(o) => table.project(&[SelectItem::Star], o),
        None => key_only(),
    };
    let (record, old) = match kind {
        EventKind::Delete => (None, last.as_ref().map_or_else(key_only, shaped)),
        EventKind::Update => (change.value.as_ref().map(shaped), key_only()),
        _ => (change.value.as_ref().map(shaped), Value::Null),
    };
    let row = record.clone().unwrap_or_else(|| old.clone());
    let key_only = (kind == EventKind::Delete).then(|| data(&table, kind, None, key_only(), at));
    Rendered {
        kind,
        table: change.collection.clone(),
        data: data(&table, kind, record, old, at),
        row,
        key_only,
    }
}

/// The message's `data` of a `kind` change with `record` (INSERT, UPDATE) and `old`.
fn data(table: &Table, kind: EventKind, record: Option<Value>, old: Value, at: &str) -> Value {
    let shown = record.as_ref().unwrap_or(&old);
    let cols = columns(table, shown.as_object().unwrap_or(&Map::new()));
    let mut data = Map::new();
    data.insert("schema".into(), SCHEMA.into());
    data.insert("table".into(), table.name.clone().into());
    data.insert("commit_timestamp".into(), at.into());
    data.insert("type".into(), kind.name().into());
    data.insert("columns".into(), cols);
    if let Some(r) = record {
        data.insert("record".into(), r);
    }
    if kind != EventKind::Insert {
        data.insert("old_record".into(), old);
    }
    data.insert("errors".into(), Value::Null);
    Value::Object(data)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn schema() -> Schema {
        Schema::from_toml(
            r#"
version = 1
strict = false
[collections.todos]
key_type = "integer"
[collections.todos.fields]
title = { type = "text" }
done = { type = "boolean" }
"#,
        )
        .unwrap()
    }

    fn change(kind: ChangeKind, value: Option<Value>) -> RecordChange {
        RecordChange {
            collection: "todos".into(),
            id: "7".into(),
            kind,
            value,
        }
    }

    #[test]
    fn insert_update_delete_shapes() {
        let s = schema();
        let ins = render(
            &s,
            &change(ChangeKind::Insert, Some(json!({"id":7,"title":"a"}))),
            None,
            "t",
        );
        assert_eq!(ins.data["type"], "INSERT");
        assert_eq!(ins.data["record"], json!({"id":7,"title":"a","done":null}));
        assert!(ins.data.get("old_record").is_none());
        assert_eq!(
            ins.data["columns"],
            json!([{"name":"id","type":"int8"},{"name":"done","type":"bool"},{"name":"title","type":"text"}])
        );
        let upd = render(
            &s,
            &change(ChangeKind::Update, Some(json!({"id":7,"title":"b"}))),
            None,
            "t",
        );
        assert_eq!(upd.data["old_record"], json!({"id":7}));
        let del = render(
            &s,
            &change(ChangeKind::Delete, None),
            Some(json!({"id":7,"title":"b"})),
            "t",
        );
        assert_eq!(
            del.data["old_record"],
            json!({"id":7,"title":"b","done":null})
        );
        assert!(del.data.get("record").is_none());
        assert_eq!(del.row["title"], "b");
        let hidden = del.key_only.unwrap();
        assert_eq!(hidden["old_record"], json!({"id":7}));
        assert_eq!(
            hidden["columns"],
            json!([{"name":"id","type":"int8"},{"name":"done","type":"bool"},{"name":"title","type":"text"}])
        );
        assert!(ins.key_only.is_none());
        let gone = render(&s, &change(ChangeKind::Delete, None), None, "t");
        assert_eq!(gone.data["old_record"], json!({"id":7}));
    }

    #[test]
    fn undeclared_columns_are_typed_by_value() {
        let s = schema();
        let mut c = change(
            ChangeKind::Append,
            Some(json!({"id":"x","n":1.5,"tags":[1]})),
        );
        c.collection = "logs".into();
        let r = render(&s, &c, None, "t");
        assert_eq!(r.kind, EventKind::Insert);
        assert_eq!(
            r.data["columns"],
            json!([{"name":"id","type":"text"},{"name":"n","type":"float8"},{"name":"tags","type":"jsonb"}])
        );
    }

    #[test]
    fn timestamps_have_milliseconds() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_714_564_800_123_456_789).unwrap();
        assert_eq!(commit_timestamp(t), "2024-05-01T12:00:00.123Z");
    }
}
