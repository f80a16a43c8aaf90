//! One `postgres_changes` entry of a `phx_join` config — `{event, schema, table, filter}` —
//! checked against the store's schema and matched against committed changes.
//!
//! - `event`: `*`, `INSERT`, `UPDATE` or `DELETE` (any case).
//! - `schema`: `public` (or `*`): the node's collections are the tables of one schema.
//! - `table`: a collection, or `*`/absent for all of them.
//! - `filter`: one PostgREST filter `column=op.value`, as Realtime accepts: `eq`, `neq`, `lt`,
//!   `lte`, `gt`, `gte`, `in.(a,b)`, and also `like`, `ilike`, `is` and `not.`, compared by the
//!   column's declared type exactly as `/rest/v1` compares (the same parser and evaluator). A
//!   filter needs a table.
//!
//! - Row visibility ([`Scope`], from [`super::access::may_read`]): under an owner rule an
//!   `authenticated` subscriber receives only changes to its own rows, as Supabase Realtime
//!   checks each change against the subscriber's row-level security:
//!   - INSERT and UPDATE when the new row's owner field equals the token's `sub`. An UPDATE that
//!     gives a row to someone else (only the service role or a peer can) reaches the new owner
//!     and not the old one — Supabase checks the new row only, and so does this node (the
//!     store's events carry no previous row).
//!   - DELETE: Supabase cannot check a deleted row, so it sends every delete to every
//!     subscriber, with the primary key only. This node reads the deleted record's last state
//!     and sends the delete only to its owner (never leaking other users' keys), still with
//!     the primary key only in `old_record` (Supabase's shape under RLS); a delete whose last
//!     state cannot be read is not sent to owner-scoped subscribers.
//!
//! Each entry gets an id, a hash of its parameters (as Realtime's `phash2`): identical entries
//! share it, and a change is sent once per channel with the ids of every entry it matches.

use meshlite_core::schema::Schema;
use serde_json::{Map, Value};

use crate::auth::Scope;
use crate::rest::error::RestError;
use crate::rest::filter::Plan;
use crate::rest::query::parse;
use crate::rest::table::Table;

/// The schema name every collection lives in.
pub const SCHEMA: &str = "public";

/// Which change kinds an entry wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `*`
    All,
    /// `INSERT`
    Insert,
    /// `UPDATE`
    Update,
    /// `DELETE`
    Delete,
}

impl EventKind {
    fn parse(s: &str) -> Option<EventKind> {
        match s.to_ascii_uppercase().as_str() {
            "*" => Some(EventKind::All),
            "INSERT" => Some(EventKind::Insert),
            "UPDATE" => Some(EventKind::Update),
            "DELETE" => Some(EventKind::Delete),
            _ => None,
        }
    }

    /// True when a change of kind `kind` is wanted.
    pub fn wants(self, kind: EventKind) -> bool {
        self == EventKind::All || self == kind
    }

    /// `INSERT`, `UPDATE` or `DELETE` (`*` for [`EventKind::All`]).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::All => "*",
            EventKind::Insert => "INSERT",
            EventKind::Update => "UPDATE",
            EventKind::Delete => "DELETE",
        }
    }
}

/// Why a `postgres_changes` entry was refused (sent as the join's error reason).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubscriptionError {
    /// The entry is not an object.
    #[error("each postgres_changes entry must be an object {{event, schema, table, filter}}")]
    NotAnObject,
    /// A key of the wrong type.
    #[error("postgres_changes.{0} must be a string")]
    NotText(&'static str),
    /// A missing or unknown event.
    #[error("postgres_changes.event must be one of *, INSERT, UPDATE, DELETE; got {0:?}")]
    Event(String),
    /// A schema other than `public`.
    #[error(
        "schema {0:?} does not exist: this node's collections are the tables of schema \"public\""
    )]
    Schema(String),
    /// A table the store's schema does not declare.
    #[error("table {0:?}: {1}")]
    Table(String, String),
    /// A filter that does not parse or does not fit its column.
    #[error("invalid filter {0:?}: {1}")]
    Filter(String, String),
    /// A filter without a table.
    #[error("a filter needs a table (got filter {0:?} on every table)")]
    FilterWithoutTable(String),
}

/// One checked entry.
#[derive(Clone, Debug)]
pub struct Subscription {
    /// The id sent back in the join reply and with every matching change.
    pub id: u32,
    /// Wanted change kinds.
    pub event: EventKind,
    /// The collection (`None`: all).
    pub table: Option<String>,
    /// The filter bound to the table.
    filter: Option<Plan>,
    /// The rows of the table the subscriber sees (set by the session from the caller).
    pub scope: Scope,
    /// The parameters as the client sent them, with `id` (the join reply echoes them: the
    /// client matches them against its own bindings).
    pub echo: Value,
}

fn rest_reason(e: RestError) -> String {
    match e.details {
        Some(d) => format!("{} {} ({d})", e.code, e.message),
        None => format!("{} {}", e.code, e.message),
    }
}

fn text<'a>(
    o: &'a Map<String, Value>,
    key: &'static str,
) -> Result<Option<&'a str>, SubscriptionError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(SubscriptionError::NotText(key)),
    }
}

/// A stable id of the parameters (the first 4 bytes of their BLAKE3 hash).
fn id_of(params: &Map<String, Value>) -> u32 {
    let canonical = Value::Object(params.clone()).to_string();
    let h = blake3::hash(canonical.as_bytes());
    let b = h.as_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// `column=op.value` bound to `table`.
fn bind_filter(table: &Table, filter: &str) -> Result<Plan, SubscriptionError> {
    let bad = |why: String| SubscriptionError::Filter(filter.to_owned(), why);
    let (column, condition) = filter
        .split_once('=')
        .ok_or_else(|| bad("expected column=op.value, e.g. status=eq.running".into()))?;
    let q = parse(&[(column.to_owned(), condition.to_owned())]).map_err(|e| bad(rest_reason(e)))?;
    if q.filters.len() != 1 {
        return Err(bad(format!("{column:?} is not a column filter")));
    }
    Plan::bind(table, &q).map_err(|e| bad(rest_reason(e)))
}

impl Subscription {
    /// Checks one entry against `schema`.
    pub fn parse(schema: &Schema, entry: &Value) -> Result<Subscription, SubscriptionError> {
        let o = entry.as_object().ok_or(SubscriptionError::NotAnObject)?;
        let event_text = text(o, "event")?.unwrap_or("");
        let event = EventKind::parse(event_text)
            .ok_or_else(|| SubscriptionError::Event(event_text.to_owned()))?;
        match text(o, "schema")? {
            None | Some(SCHEMA) | Some("*") => {}
            Some(other) => return Err(SubscriptionError::Schema(other.to_owned())),
        }
        let table = match text(o, "table")? {
            None | Some("*") => None,
            Some(name) => Some(
                Table::resolve(schema, name)
                    .map_err(|e| SubscriptionError::Table(name.to_owned(), rest_reason(e)))?,
            ),
        };
        let filter = match (text(o, "filter")?, &table) {
            (None | Some(""), _) => None,
            (Some(f), None) => return Err(SubscriptionError::FilterWithoutTable(f.to_owned())),
            (Some(f), Some(t)) => Some(bind_filter(t, f)?),
        };
        let mut params = Map::new();
        for key in ["event", "schema", "table", "filter"] {
            if let Some(v) = o.get(key) {
                params.insert(key.to_owned(), v.clone());
            }
        }
        let id = id_of(&params);
        params.insert("id".into(), id.into());
        Ok(Subscription {
            id,
            event,
            table: table.map(|t| t.name),
            filter,
            scope: Scope::All,
            echo: Value::Object(params),
        })
    }

    /// True when the entry wants a `kind` change to `table` whose row (the new one, or the
    /// last one of a deleted record) is `row`, and the subscriber may see that row.
    pub fn matches(&self, kind: EventKind, table: &str, row: &Value) -> bool {
        self.event.wants(kind)
            && self.table.as_deref().is_none_or(|t| t == table)
            && self.visible(row)
            && self.filter.as_ref().is_none_or(|p| p.matches(row))
    }

    /// True when the subscriber's scope admits `row`.
    fn visible(&self, row: &Value) -> bool {
        match (&self.scope, row.as_object()) {
            (Scope::All, _) => true,
            (scope, Some(o)) => scope.admits(o),
            (Scope::Owned { .. }, None) => false,
        }
    }

    /// True when the subscriber sees only some rows (deletes then carry the key only).
    pub fn owner_scoped(&self) -> bool {
        matches!(self.scope, Scope::Owned { .. })
    }

    /// True when the entry reads rows of `table` through a filter (a delete then needs the
    /// record's last state to be matched).
    pub fn filters(&self, table: &str) -> bool {
        self.filter.is_some() && self.table.as_deref() == Some(table)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn schema() -> Schema {
        Schema::from_toml(
            r#"
version = 1
strict = true
[collections.tasks.fields]
status = { type = "text" }
n = { type = "integer" }
"#,
        )
        .unwrap()
    }

    fn sub(v: Value) -> Result<Subscription, SubscriptionError> {
        Subscription::parse(&schema(), &v)
    }

    #[test]
    fn filters_follow_the_column_type() {
        let s = sub(
            json!({"event":"*","schema":"public","table":"tasks","filter":"status=eq.running"}),
        )
        .unwrap();
        assert!(s.matches(
            EventKind::Insert,
            "tasks",
            &json!({"id":"a","status":"running"})
        ));
        assert!(!s.matches(
            EventKind::Insert,
            "tasks",
            &json!({"id":"a","status":"queued"})
        ));
        assert!(!s.matches(EventKind::Insert, "jobs", &json!({"status":"running"})));
        let n =
            sub(json!({"event":"UPDATE","schema":"public","table":"tasks","filter":"n=in.(1,10)"}))
                .unwrap();
        assert!(n.matches(EventKind::Update, "tasks", &json!({"n":10})));
        assert!(!n.matches(EventKind::Insert, "tasks", &json!({"n":10})));
        let gt =
            sub(json!({"event":"*","schema":"public","table":"tasks","filter":"n=gt.9"})).unwrap();
        assert!(gt.matches(EventKind::Delete, "tasks", &json!({"n":10})));
        assert!(!gt.matches(EventKind::Delete, "tasks", &json!({"n":9})));
    }

    #[test]
    fn bad_entries_are_refused() {
        let cases = [
            json!("x"),
            json!({"event":"TRUNCATE","schema":"public"}),
            json!({"schema":"public"}),
            json!({"event":"*","schema":"auth"}),
            json!({"event":"*","schema":"public","table":"nope"}),
            json!({"event":"*","schema":"public","table":"tasks","filter":"status"}),
            json!({"event":"*","schema":"public","table":"tasks","filter":"nope=eq.1"}),
            json!({"event":"*","schema":"public","table":"tasks","filter":"n=eq.x"}),
            json!({"event":"*","schema":"public","table":"tasks","filter":"order=n.desc"}),
            json!({"event":"*","schema":"public","filter":"n=eq.1"}),
            json!({"event":"*","schema":"public","table":7}),
        ];
        for c in cases {
            assert!(sub(c.clone()).is_err(), "{c}");
        }
    }

    #[test]
    fn an_owner_scope_admits_only_the_owners_rows() {
        let mut s = sub(json!({"event":"*","schema":"public","table":"tasks"})).unwrap();
        s.scope = Scope::Owned {
            field: "status".into(),
            owner: Some("u1".into()),
        };
        assert!(s.matches(EventKind::Insert, "tasks", &json!({"id":"a","status":"u1"})));
        assert!(!s.matches(EventKind::Update, "tasks", &json!({"id":"a","status":"u2"})));
        assert!(!s.matches(EventKind::Delete, "tasks", &json!({"id":"a"})));
        assert!(!s.matches(EventKind::Delete, "tasks", &Value::Null));
        assert!(s.owner_scoped());
        s.scope = Scope::Owned {
            field: "status".into(),
            owner: None,
        };
        assert!(!s.matches(EventKind::Insert, "tasks", &json!({"id":"a","status":"u1"})));
    }

    #[test]
    fn ids_are_stable_and_echoed() {
        let p = json!({"event":"*","schema":"public","table":"tasks"});
        let (a, b) = (sub(p.clone()).unwrap(), sub(p).unwrap());
        assert_eq!(a.id, b.id);
        assert_eq!(a.echo["id"], json!(a.id));
        assert_eq!(a.echo["table"], "tasks");
        let all = sub(json!({"event":"*","schema":"*"})).unwrap();
        assert_ne!(all.id, a.id);
        assert!(all.matches(EventKind::Delete, "anything", &Value::Null));
    }
}
