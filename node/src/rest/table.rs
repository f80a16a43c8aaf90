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
use super::query::SelectItem;
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
            if let SelectItem::Column { name, .. } = item {
                self.read_column(name)?;
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

    /// `row` shaped by `select`: `*` is the key, every declared field (null when the record
    /// lacks it) and any other field the record holds.
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
                SelectItem::Column { name, alias } => {
                    let v = row.get(name).cloned().unwrap_or(Value::Null);
                    out.insert(alias.as_ref().unwrap_or(name).clone(), v);
                }
            }
        }
        Value::Object(out)
    }
}
