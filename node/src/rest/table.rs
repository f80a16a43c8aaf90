//! A collection seen as a PostgREST table: its columns (the primary key plus the declared
//! fields), their types, and rows shaped by `select=`.
//!
//! A collection that declares fields has a closed column set: other names are 42703 in reads and
//! PGRST204 in writes, as Postgres would answer. A collection without declared fields (or any
//! collection of a non-strict schema that is not declared) is open: every name is a column, and
//! a record lacking it reads as null.

use meshlite_core::schema::{CollectionDef, CollectionKind, FieldType, Schema, validate_name};
use serde_json::{Map, Value};

use super::error::RestError;
use super::path::ColumnRef;
use super::select::SelectItem;
use crate::auth::Scope;

/// A collection bound for one request.
#[derive(Clone, Debug)]
pub struct Table {
    /// The collection name.
    pub name: String,
    /// Its definition (the default one for undeclared collections of a non-strict schema).
    pub def: CollectionDef,
    /// The rows the caller may see and write (every row until [`Table::authorize`] narrows it).
    pub scope: Scope,
}

impl Table {
    /// The table `name`; PGRST205 when the schema does not allow it.
    pub fn resolve(schema: &Schema, name: &str) -> Result<Table, RestError> {
        if validate_name("collection", name).is_err() {
            return Err(RestError::unknown_table(name));
        }
        let def = schema
            .collection(name)
            .ok_or_else(|| RestError::unknown_table(name))?;
        Ok(Table {
            name: name.to_owned(),
            def,
            scope: Scope::All,
        })
    }

    /// True for an append-only log collection.
    pub fn is_log(&self) -> bool {
        self.def.kind == CollectionKind::Log
    }

    /// The primary-key column.
    pub fn key(&self) -> &str {
        &self.def.primary_key
    }

    fn closed(&self) -> bool {
        !self.def.fields.is_empty()
    }

    /// `Some(type)` for a known column (`None` inside: untyped); `None` for an unknown one.
    fn column(&self, column: &str) -> Option<Option<FieldType>> {
        if column == self.def.primary_key {
            return Some(self.def.key_type);
        }
        match self.def.fields.get(column) {
            Some(f) => Some(f.field_type),
            None if self.closed() => None,
            None => Some(None),
        }
    }

    /// The type of a column a read names; 42703 when unknown.
    pub fn read_column(&self, column: &str) -> Result<Option<FieldType>, RestError> {
        self.column(column)
            .ok_or_else(|| RestError::unknown_read_column(&self.name, column))
    }

    /// The type a column reference has: the column's, or text (`->>`) / JSON (`->`) through a
    /// path; 42883 for a path into a column of another declared type, 42703 when unknown.
    pub fn ref_type(&self, col: &ColumnRef) -> Result<Option<FieldType>, RestError> {
        let ty = self.read_column(&col.column)?;
        match (col.is_plain(), ty) {
            (true, ty) => Ok(ty),
            (false, None | Some(FieldType::Json)) if col.as_text => Ok(Some(FieldType::Text)),
            (false, None | Some(FieldType::Json)) => Ok(Some(FieldType::Json)),
            (false, Some(t)) => {
                let op = if col.as_text { "->>" } else { "->" };
                Err(RestError::no_operator(op, t))
            }
        }
    }

    /// Checks a column a write names; PGRST204 when unknown.
    pub fn write_column(&self, column: &str) -> Result<(), RestError> {
        match self.column(column) {
            Some(_) => Ok(()),
            None => Err(RestError::unknown_write_column(&self.name, column)),
        }
    }

    /// Checks the names of `select=`; 42703 for an unknown one.
    pub fn check_select(&self, select: &[SelectItem]) -> Result<(), RestError> {
        for item in select {
            if let SelectItem::Column { col, .. } = item {
                self.ref_type(col)?;
            }
        }
        Ok(())
    }

    /// The store id of a row or a written object: its key as a string (`None` when absent).
    pub fn id_of(&self, row: &Map<String, Value>) -> Option<String> {
        match row.get(self.key())? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// The names of the columns `select` yields, in table order (the key, then the declared
    /// fields, then, for an open table, the other keys of `sample`): CSV's header order.
    pub fn column_names(&self, select: &[SelectItem], sample: Option<&Value>) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let mut push = |n: &str| {
            if !names.iter().any(|x| x == n) {
                names.push(n.to_owned());
            }
        };
        for item in select {
            match item {
                SelectItem::Star => {
                    push(self.key());
                    self.def.fields.keys().for_each(|f| push(f));
                    let extra = sample
                        .and_then(Value::as_object)
                        .into_iter()
                        .flat_map(|o| o.keys());
                    extra.for_each(|k| push(k));
                }
                SelectItem::Column { col, alias } => {
                    push(alias.as_deref().unwrap_or(col.output_name()))
                }
                SelectItem::Embed(e) => push(e.key()),
            }
        }
        names
    }

    /// `row` shaped by `select`: `*` is the key, every declared field (null when the record
    /// lacks it) and any other field the record holds; a JSON path is returned under its alias,
    /// else its last key. Embeds are left to `embed`.
    pub fn project(&self, select: &[SelectItem], row: &Map<String, Value>) -> Value {
        let mut out = Map::new();
        for item in select {
            match item {
                SelectItem::Star => {
                    for (k, v) in row {
                        out.insert(k.clone(), v.clone());
                    }
                    for f in self.def.fields.keys() {
                        out.entry(f.clone()).or_insert(Value::Null);
                    }
                }
                SelectItem::Column { col, alias } => {
                    let key = alias.as_deref().unwrap_or(col.output_name());
                    out.insert(key.to_owned(), col.resolve(row));
                }
                SelectItem::Embed(_) => {}
            }
        }
        Value::Object(out)
    }
}
