//! `POST /rest/v1/rpc/{function}`: the functions a CRDT store can run as one merge-safe store
//! op, called as PostgREST calls a Postgres function (`supabase.rpc(name, args)`): named
//! arguments in a JSON object, the result as the JSON body.
//!
//! | function                                | does                                              |
//! |-----------------------------------------|---------------------------------------------------|
//! | `increment(table, id, column[, by])`    | adds `by` (default 1, may be negative) to counter  |
//! |                                         | `column` of row `id`; returns the new value, or   |
//! |                                         | null (writing nothing) when no row the caller may |
//! |                                         | see has that id                                   |
//!
//! An increment is the store's `WriteOp::Increment`: concurrent increments from clients and
//! peers add up, as `update t set c = c + by` does in Postgres. Functions that would need a
//! read-then-write (appending to a text field, compare-and-set) are not offered: between the
//! read and the write a concurrent edit would be lost, which the CRDT store exists to prevent.
//!
//! A name or argument set that matches no function is PGRST202 (404), worded as PostgREST's;
//! a `GET` of a function (PostgREST runs it read-only) is 25006 (405): `increment` writes. The
//! table must allow the caller to write (42501), and the owner rule hides other owners' rows.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meshlite_core::store::{Store, WriteError, WriteOp};
use serde_json::{Map, Value, json};

use super::error::RestError;
use super::table::Table;
use super::write::read_body;
use crate::auth::{Action, Caller};
use crate::state::AppState;

/// A function this node offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    /// `increment(table, id, column[, by])`.
    Increment,
}

impl Function {
    /// Every function, for lookup and the error hint.
    pub const ALL: [Function; 1] = [Function::Increment];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Function::Increment => "increment",
        }
    }

    /// Its (required, optional) parameters.
    fn params(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Function::Increment => (&["column", "id", "table"], &["by"]),
        }
    }

    /// The signature, as the error hint shows it.
    fn signature(self) -> String {
        let (required, optional) = self.params();
        let optional = optional.iter().map(|p| format!("[{p}]"));
        let all: Vec<String> = required
            .iter()
            .map(|p| p.to_string())
            .chain(optional)
            .collect();
        format!("{}({})", self.name(), all.join(", "))
    }

    /// Its OpenAPI path item (`/rpc/{name}`), as PostgREST describes a function: one `args`
    /// body object with the parameters and their Postgres types.
    pub fn path_item(self) -> Value {
        let (required, optional) = self.params();
        let properties: Map<String, Value> = required
            .iter()
            .chain(optional)
            .map(|p| {
                let (format, ty) = match *p {
                    "by" => ("bigint", "integer"),
                    _ => ("text", "string"),
                };
                (p.to_string(), json!({"format": format, "type": ty}))
            })
            .collect();
        json!({"post": {
            "tags": [format!("(rpc) {}", self.name())],
            "summary": self.signature(),
            "produces": ["application/json"],
            "parameters": [{
                "in": "body", "name": "args", "required": true,
                "schema": {"type": "object", "required": required, "properties": properties},
            }],
            "responses": {"200": {"description": "OK"}},
        }})
    }

    /// The function `name` taking exactly the arguments `keys` (every required one, no
    /// unknown one); PGRST202 otherwise.
    pub fn lookup(name: &str, keys: &BTreeSet<String>) -> Result<Self, RestError> {
        let fits = |f: &Function| {
            let (required, optional) = f.params();
            required.iter().all(|p| keys.contains(*p))
                && keys
                    .iter()
                    .all(|k| required.contains(&k.as_str()) || optional.contains(&k.as_str()))
        };
        Self::ALL
            .into_iter()
            .find(|f| f.name() == name && fits(f))
            .ok_or_else(|| {
                let offered: Vec<String> = Self::ALL.iter().map(|f| f.signature()).collect();
                RestError::no_function(name, keys, &offered.join(", "))
            })
    }
}

/// `POST /rest/v1/rpc/{function}`.
pub async fn call(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RestError> {
    let args = arguments(&read_body(body)?)?;
    let keys = args.keys().cloned().collect();
    match Function::lookup(&name, &keys)? {
        Function::Increment => {
            let inc = Increment::parse(&s, &caller, &args)?;
            let value = inc.run(&s.store).await?;
            Ok((StatusCode::OK, axum::Json(value)).into_response())
        }
    }
}

/// `GET /rest/v1/rpc/{function}?args`: every function here writes, and PostgREST runs a `GET`
/// in a read-only transaction, so a known function is 25006 (405).
pub async fn call_read_only(
    _caller: Caller,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, RestError> {
    let keys = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, _)| k.into_owned())
        .collect();
    let f = Function::lookup(&name, &keys)?;
    Err(RestError::read_only(f.name()))
}

/// The body's named arguments: a JSON object (an empty body is no arguments); PGRST102
/// otherwise.
fn arguments(body: &[u8]) -> Result<Map<String, Value>, RestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(RestError::bad_body(format!(
            "the arguments of a function are a JSON object, got {other}"
        ))),
        Err(e) => Err(RestError::bad_body(e.to_string())),
    }
}

/// A validated `increment` call.
struct Increment {
    table: Table,
    id: String,
    column: String,
    by: i64,
}

impl Increment {
    fn parse(s: &AppState, caller: &Caller, args: &Map<String, Value>) -> Result<Self, RestError> {
        let text = |k: &str| match args.get(k) {
            Some(Value::String(t)) => Ok(t.clone()),
            other => Err(RestError::invalid_input("text", &shown(other))),
        };
        let table =
            Table::resolve(&s.store.schema(), &text("table")?)?.authorize(caller, Action::Write)?;
        if table.is_log() {
            return Err(RestError::log_immutable(&table.name, "update"));
        }
        let column = text("column")?;
        table.write_column(&column)?;
        let id = match args.get("id") {
            Some(Value::String(t)) => t.clone(),
            Some(Value::Number(n)) => n.to_string(),
            other => return Err(RestError::invalid_input("text", &shown(other))),
        };
        let by = match args.get("by") {
            None => 1,
            Some(v) => v
                .as_i64()
                .ok_or_else(|| RestError::invalid_input("bigint", &v.to_string()))?,
        };
        Ok(Self {
            table,
            id,
            column,
            by,
        })
    }

    /// Increments a row the caller may see; its new value, or null when there is none.
    async fn run(self, store: &Store) -> Result<Value, RestError> {
        let name = &self.table.name;
        let row = store
            .get_async(name, &self.id)
            .await
            .map_err(|e| RestError::from_read(name, e))?;
        let visible = row
            .as_ref()
            .and_then(Value::as_object)
            .is_some_and(|r| self.table.scope.admits(r));
        if !visible {
            return Ok(Value::Null);
        }
        let op = WriteOp::Increment {
            collection: name.clone(),
            id: self.id.clone(),
            field: self.column.clone(),
            by: self.by,
        };
        match store.transact_async(vec![op]).await {
            Ok(c) => Ok(c
                .changes
                .into_iter()
                .find_map(|ch| ch.value?.get(&self.column).cloned())
                .unwrap_or(Value::Null)),
            // Deleted since the read: a delete beats a concurrent update.
            Err(WriteError::Deleted { .. }) => Ok(Value::Null),
            Err(e) => Err(RestError::from_write(name, e)),
        }
    }
}

/// An argument as an error message shows it.
fn shown(v: Option<&Value>) -> String {
    v.map_or_else(|| "null".to_owned(), Value::to_string)
}
