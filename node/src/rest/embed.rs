//! Embedding related rows one level deep: `select=*,author:users(*)` (many-to-one: an object
//! or null), `select=*,messages(*)` (one-to-many: an array), `!inner` (drop parent rows with
//! nothing related), `!column` to pick one of several relations, and `rel.col=op.v` filters
//! on the embedded rows. Relations come from the schema: a field with `references =
//! "collection"` holds that collection's key.
//!
//! Access: an embedded collection is read as the caller, as Postgres applies the embedded
//! table's privileges and row-level security to the join: a role the schema's
//! `[collections.X.access]` does not let read X gets 42501 for the whole request, and under
//! X's owner rule only the caller's own rows are embedded (a many-to-one embed of another
//! owner's row is null; `!inner` then drops the parent).
//!
//! Cost: each embed reads the related collection once per request (a scan, filtered and
//! indexed here by the joining key), so a request costs O(parent rows + related rows).

use std::collections::HashMap;

use meshlite_core::schema::Schema;
use meshlite_core::store::Store;
use serde_json::{Map, Value};

use super::error::RestError;
use super::filter::Plan;
use super::logic::Cond;
use super::query::UrlQuery;
use super::rows::matching;
use super::select::{Embed, SelectItem};
use super::table::Table;
use crate::auth::{Action, Caller};

/// How the parent and the embedded collection are related.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relation {
    /// The parent's `field` holds the related row's key: one object (or null).
    ManyToOne {
        /// The parent's referencing field.
        field: String,
    },
    /// The related rows' `field` holds the parent's key: an array.
    OneToMany {
        /// The related collection's referencing field.
        field: String,
    },
}

/// One embed bound to its related table.
#[derive(Clone, Debug)]
struct Bound {
    embed: Embed,
    table: Table,
    relation: Relation,
    plan: Plan,
    /// The parent's key column (one-to-many joins on it).
    parent_key: String,
}

/// The embeds of a request, bound.
#[derive(Clone, Debug, Default)]
pub struct Embeds {
    items: Vec<Bound>,
}

/// One parent row with the values of its embeds (key → object, null or array).
pub type Joined = (Value, Map<String, Value>);

impl Embeds {
    /// Binds the embeds of `q.select` and the embedded filters, read as `caller` (42501 for a
    /// collection it may not read): PGRST200 when no relation joins the two collections, PGRST201 when several do and no `!hint` picks one, PGRST108
    /// for a filter on a table the select does not embed.
    pub fn bind(
        schema: &Schema,
        caller: &Caller,
        parent: &Table,
        q: &UrlQuery,
    ) -> Result<Self, RestError> {
        let mut items = Vec::new();
        for item in &q.select {
            let SelectItem::Embed(e) = item else { continue };
            let (target, relation) = relation(schema, parent, e)?;
            let table = Table::resolve(schema, &target)?.authorize(caller, Action::Read)?;
            table.check_select(&e.items)?;
            let filters: Vec<Cond> = q
                .embed_filters
                .iter()
                .filter(|(rel, _)| rel == e.key())
                .map(|(_, f)| Cond::Filter(f.clone()))
                .collect();
            let plan = Plan::bind_filters(&table, &filters, &[])?;
            items.push(Bound {
                embed: e.clone(),
                table,
                relation,
                plan,
                parent_key: parent.key().to_owned(),
            });
        }
        if let Some((rel, _)) = q
            .embed_filters
            .iter()
            .find(|(rel, _)| !items.iter().any(|b| b.embed.key() == rel))
        {
            return Err(RestError::filter_not_embedded(rel));
        }
        Ok(Self { items })
    }

    /// True when the request embeds nothing.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Joins each parent row with its related rows (read from `store`), dropping the parents
    /// an `!inner` embed finds nothing for. Parent order is kept.
    pub async fn join(&self, store: &Store, parents: Vec<Value>) -> Result<Vec<Joined>, RestError> {
        let mut indexes = Vec::with_capacity(self.items.len());
        for b in &self.items {
            let related = matching(store, &b.table, &b.plan).await?;
            indexes.push(b.index(related));
        }
        let joined = parents.into_iter().filter_map(|p| {
            let row = p.as_object()?;
            let mut embedded = Map::new();
            for (b, index) in self.items.iter().zip(&indexes) {
                let v = b.related(row, index);
                let empty = v.is_null() || v.as_array().is_some_and(Vec::is_empty);
                if b.embed.inner && empty {
                    return None;
                }
                embedded.insert(b.embed.key().to_owned(), v);
            }
            Some((p, embedded))
        });
        Ok(joined.collect())
    }
}

impl Bound {
    /// The related rows by joining key (the key for many-to-one, the referencing field's value
    /// for one-to-many), in store order.
    fn index(&self, related: Vec<Value>) -> HashMap<String, Vec<Value>> {
        let mut index: HashMap<String, Vec<Value>> = HashMap::new();
        for r in related {
            let Some(obj) = r.as_object() else { continue };
            let key = match &self.relation {
                Relation::ManyToOne { .. } => self.table.id_of(obj),
                Relation::OneToMany { field } => key_text(obj.get(field)),
            };
            if let Some(k) = key {
                index.entry(k).or_default().push(r);
            }
        }
        index
    }

    fn related(&self, parent: &Map<String, Value>, index: &HashMap<String, Vec<Value>>) -> Value {
        let shape = |r: &Value| {
            r.as_object()
                .map_or(Value::Null, |o| self.table.project(&self.embed.items, o))
        };
        match &self.relation {
            Relation::ManyToOne { field } => key_text(parent.get(field))
                .and_then(|k| index.get(&k)?.first().map(shape))
                .unwrap_or(Value::Null),
            Relation::OneToMany { .. } => {
                let Some(rows) = key_text(parent.get(&self.parent_key)).and_then(|k| index.get(&k))
                else {
                    return Value::Array(Vec::new());
                };
                Value::Array(rows.iter().map(shape).collect())
            }
        }
    }
}

/// A key or referencing value as the store's id text (`7` and `"7"` are the same id).
fn key_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The collection `e` embeds and how it relates to `parent`.
fn relation(schema: &Schema, parent: &Table, e: &Embed) -> Result<(String, Relation), RestError> {
    let hint_ok = |field: &str| e.hint.as_deref().is_none_or(|h| h == field);
    let mut found: Vec<(String, Relation)> = Vec::new();
    // Many-to-one: a field of the parent references `e.name` (or is named `e.name`).
    for (field, f) in &parent.def.fields {
        let Some(target) = &f.references else {
            continue;
        };
        if (target == &e.name || field == &e.name) && hint_ok(field) {
            found.push((
                target.clone(),
                Relation::ManyToOne {
                    field: field.clone(),
                },
            ));
        }
    }
    // One-to-many: a field of `e.name` references the parent.
    if let Some(child) = schema.collections.get(&e.name) {
        for (field, f) in &child.fields {
            if f.references.as_deref() == Some(parent.name.as_str()) && hint_ok(field) {
                let r = Relation::OneToMany {
                    field: field.clone(),
                };
                if !found.iter().any(|(t, x)| t == &e.name && *x == r) {
                    found.push((e.name.clone(), r));
                }
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(RestError::no_relation(&parent.name, &e.name)),
        _ => {
            let columns = found
                .iter()
                .map(|(_, r)| match r {
                    Relation::ManyToOne { field } | Relation::OneToMany { field } => field.clone(),
                })
                .collect::<Vec<_>>();
            Err(RestError::ambiguous_relation(
                &parent.name,
                &e.name,
                &columns,
            ))
        }
    }
}
