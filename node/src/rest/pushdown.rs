//! Which store read a [`Plan`] needs: the candidate rows it is evaluated over, narrowed by the
//! store where that is exact, so a point read or an equality filter does not read the whole
//! collection.
//!
//! - [`Access::Get`]: a top-level `key=eq.v` reads that one record (`Store::get`). Integer keys
//!   by their decimal form, text keys as given, UUID keys lowercased (the store keeps UUID keys
//!   in lowercase only, and `/rest/v1` compares UUIDs case-insensitively).
//! - [`Access::Equal`]: top-level `column=eq.v` filters on declared `text` and `integer`
//!   columns become the store query's equality filters (`Store::query` with
//!   `insertion_order`), which use the partial index of a declared `indexed` column. For a
//!   value of the column's declared type, the store's SQL equality and `/rest/v1`'s comparison
//!   (`keys`) agree: text by bytes, integers as `i64`. The store refuses values of another type
//!   on every local write, so the narrowed set holds every row the plan keeps.
//! - [`Access::Scan`]: anything else reads every live row.
//!
//! The plan is still evaluated whole over the candidates (`rows::matching`): the pushdown only
//! narrows, it never decides a match on its own. Order is preserved (insertion order, filtered).
//! `pushdown_tests` checks, over random rows and filters, that both reads answer alike.

use meshlite_core::schema::FieldType;
use meshlite_core::store::Query;
use serde_json::Value;

use super::filter::{Equality, Plan};
use super::keys::Key;
use super::table::Table;

/// How a read fetches its candidate rows.
#[derive(Clone, Debug, PartialEq)]
pub enum Access {
    /// The one record with this id.
    Get(String),
    /// The live rows satisfying these equality filters, in insertion order.
    Equal(Vec<(String, Value)>),
    /// Every live row, in insertion order.
    Scan,
}

impl Access {
    /// The access `plan` needs on `table`.
    pub fn of(plan: &Plan, table: &Table) -> Access {
        let eqs = plan.top_equalities();
        if let Some(id) = eqs.iter().find_map(|e| key_id(table, e)) {
            return Access::Get(id);
        }
        let pushed: Vec<(String, Value)> =
            eqs.iter().filter_map(|e| field_value(table, e)).collect();
        match pushed.is_empty() {
            true => Access::Scan,
            false => Access::Equal(pushed),
        }
    }

    /// The store query of [`Access::Equal`] and [`Access::Scan`].
    pub fn query(&self) -> Query {
        let filters = match self {
            Access::Equal(f) => f.clone(),
            _ => Vec::new(),
        };
        Query {
            filters,
            insertion_order: true,
            ..Query::default()
        }
    }
}

/// The record id an equality on the key pins.
fn key_id(table: &Table, e: &Equality<'_>) -> Option<String> {
    if e.column != table.key() {
        return None;
    }
    match (e.ty, e.operand) {
        (Some(FieldType::Integer), Some(Key::Int(i))) => Some(i.to_string()),
        (Some(FieldType::Uuid), Some(Key::Text(lower))) => Some(lower.clone()),
        (None | Some(FieldType::Text), _) => Some(e.raw.to_owned()),
        _ => None,
    }
}

/// The store filter of an equality on a declared `text` or `integer` column.
fn field_value(table: &Table, e: &Equality<'_>) -> Option<(String, Value)> {
    if e.column == table.key() || !table.def.fields.contains_key(e.column) {
        return None;
    }
    let value = match (e.ty, e.operand) {
        (Some(FieldType::Text), Some(Key::Text(s))) => Value::String(s.clone()),
        (Some(FieldType::Integer), Some(Key::Int(i))) => Value::from(*i),
        _ => return None,
    };
    Some((e.column.to_owned(), value))
}

#[cfg(test)]
#[path = "pushdown_tests.rs"]
mod tests;
