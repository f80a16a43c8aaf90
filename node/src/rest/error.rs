//! PostgREST-shaped errors: `{"code", "message", "details", "hint"}` with the HTTP status
//! PostgREST gives each code (its `errors.rst`). Store errors map onto the Postgres SQLSTATE a
//! Postgres-backed PostgREST would report for the same mistake.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use meshlite_core::store::{ReadError, WriteError};

/// One error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestError {
    /// HTTP status.
    pub status: StatusCode,
    /// PostgREST (`PGRSTxxx`) or Postgres SQLSTATE code.
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
    /// More detail, when there is any.
    pub details: Option<String>,
    /// What to do, when known.
    pub hint: Option<String>,
}

impl RestError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            hint: None,
        }
    }

    fn details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// PGRST100 (400): the URL does not parse.
    pub fn parse(message: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "PGRST100", message).details(details)
    }

    /// PGRST100 (400): valid PostgREST syntax that this node does not implement yet.
    pub fn unsupported(what: &str) -> Self {
        Self::parse(
            format!("{what} is not supported by this node yet"),
            "see the README section \"Supabase clients\"",
        )
    }

    /// PGRST102 (400): the body is not JSON of the expected shape.
    pub fn bad_body(details: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "PGRST102", "Empty or invalid json").details(details)
    }

    /// 54000 (413) for a body over the listener's limit, else PGRST102 (400): the body could
    /// not be read at all.
    pub fn unreadable_body(too_large: bool, details: impl Into<String>) -> Self {
        match too_large {
            true => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "54000", "Payload too large")
                .details(details)
                .hint("split the rows over several requests"),
            false => Self::bad_body(details),
        }
    }

    /// PGRST103 (416): the requested range is empty or inverted.
    pub fn bad_range(details: impl Into<String>) -> Self {
        Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "PGRST103",
            "Requested range not satisfiable",
        )
        .details(details)
    }

    /// PGRST107 (406): an `Accept` media type this node cannot produce.
    pub fn not_acceptable(accept: &str) -> Self {
        Self::new(
            StatusCode::NOT_ACCEPTABLE,
            "PGRST107",
            format!("None of these media types are available: {accept}"),
        )
    }

    /// PGRST116 (406): `Accept: application/vnd.pgrst.object+json` and not exactly one row.
    pub fn not_one(rows: usize) -> Self {
        Self::new(
            StatusCode::NOT_ACCEPTABLE,
            "PGRST116",
            "JSON object requested, multiple (or no) rows returned",
        )
        .details(format!("The result contains {rows} rows"))
    }

    /// PGRST204 (400): a write names a column the table does not declare.
    pub fn unknown_write_column(table: &str, column: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "PGRST204",
            format!("Could not find the '{column}' column of '{table}' in the schema cache"),
        )
    }

    /// 42703 (400): a read names a column the table does not declare.
    pub fn unknown_read_column(table: &str, column: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "42703",
            format!("column {table}.{column} does not exist"),
        )
    }

    /// PGRST205 (404): no such table in the schema.
    pub fn unknown_table(table: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "PGRST205",
            format!("Could not find the table 'public.{table}' in the schema cache"),
        )
    }

    /// 22P02 (400): a filter value that the column's type cannot hold.
    pub fn invalid_input(type_name: &str, value: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "22P02",
            format!("invalid input syntax for type {type_name}: \"{value}\""),
        )
    }

    /// 42883 (404, as PostgREST maps undefined functions): an operator the column's type lacks.
    pub fn no_operator(op: &str, ty: meshlite_core::schema::FieldType) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "42883",
            format!("operator does not exist: {} {op} unknown", pg_type(ty)),
        )
        .hint("No operator matches the given name and argument types. You might need to add explicit type casts.")
    }

    /// 2201B (400): a `match`/`imatch` expression that does not compile.
    pub fn bad_regex(reason: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "2201B",
            format!(
                "invalid regular expression: {}",
                reason.lines().last().unwrap_or(reason)
            ),
        )
    }

    /// PGRST200 (400): `select=` embeds a table with no declared relation to this one.
    pub fn no_relation(from: &str, to: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "PGRST200",
            format!("Could not find a relationship between '{from}' and '{to}' in the schema cache"),
        )
        .details(format!(
            "Searched for a foreign key relationship between '{from}' and '{to}' in the schema 'public', but no matches were found."
        ))
        .hint("declare the relation in the schema: a field with references = \"collection\"")
    }

    /// PGRST201 (300): more than one relation joins the two tables and no hint picks one.
    pub fn ambiguous_relation(from: &str, to: &str, columns: &[String]) -> Self {
        Self::new(
            StatusCode::MULTIPLE_CHOICES,
            "PGRST201",
            format!("Could not embed because more than one relationship was found for '{from}' and '{to}'"),
        )
        .details(format!("relations through the columns {}", columns.join(", ")))
        .hint(format!("Try changing '{to}' to one of: {}", columns.iter().map(|c| format!("'{to}!{c}'")).collect::<Vec<_>>().join(", ")))
    }

    /// PGRST108 (400): a filter names an embedded table the `select=` does not embed.
    pub fn filter_not_embedded(rel: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "PGRST108",
            format!("'{rel}' is not an embedded resource in this request"),
        )
        .hint(format!(
            "Verify that '{rel}' is included in the 'select' query parameter."
        ))
    }

    /// 23505 (409): a plain insert of a live primary key.
    pub fn duplicate(table: &str, key: &str, id: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "23505",
            format!("duplicate key value violates unique constraint \"{table}_pkey\""),
        )
        .details(format!("Key ({key})=({id}) already exists."))
        .hint("upsert with Prefer: resolution=merge-duplicates to merge into the existing row")
    }

    /// 23502 (400): an insert leaves a NOT NULL column (the primary key) null.
    pub fn not_null(table: &str, column: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "23502",
            format!("null value in column \"{column}\" of relation \"{table}\" violates not-null constraint"),
        )
        .hint("give every object the key, or send Prefer: missing=default to generate it")
    }

    /// PGRST202 (404): no function `name` takes the arguments `keys` (PostgREST's wording).
    pub fn no_function(
        name: &str,
        keys: &std::collections::BTreeSet<String>,
        offered: &str,
    ) -> Self {
        let list = keys
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let (params, searched) = match keys.len() {
            0 => (
                " without parameters".to_owned(),
                " without parameters".to_owned(),
            ),
            1 => (format!("({list})"), format!(" with parameter {list}")),
            _ => (format!("({list})"), format!(" with parameters {list}")),
        };
        Self::new(
            StatusCode::NOT_FOUND,
            "PGRST202",
            format!("Could not find the function public.{name}{params} in the schema cache"),
        )
        .details(format!("Searched for the function public.{name}{searched} or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache."))
        .hint(format!("this node offers the functions {offered}"))
    }

    /// 25006 (405): a `GET` of a function that writes (PostgREST runs `GET` read-only).
    pub fn read_only(function: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "25006",
            "cannot execute UPDATE in a read-only transaction",
        )
        .details(format!("{function} writes; call it with POST"))
    }

    /// 42P10 (400): `on_conflict` names something other than the primary key.
    pub fn bad_on_conflict(column: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "42P10",
            "there is no unique or exclusion constraint matching the ON CONFLICT specification",
        )
        .details(format!(
            "on_conflict={column}: only the primary key is unique in a Meshlite collection"
        ))
        .hint("upsert on the primary key (leave out on_conflict), or filter and PATCH")
    }

    /// 42809 (405): update or delete of an append-only log collection.
    pub fn log_immutable(table: &str, op: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "42809",
            format!("cannot {op} rows of log collection \"{table}\": log rows are immutable"),
        )
    }

    /// Maps a store write error.
    pub fn from_write(table: &str, e: WriteError) -> Self {
        let text = e.to_string();
        let (status, code) = match &e {
            // Postgres's disk_full; PostgREST answers class 53 with 503.
            _ if e.is_disk_full() => (StatusCode::SERVICE_UNAVAILABLE, "53100"),
            WriteError::UnknownCollection(_) => return Self::unknown_table(table),
            WriteError::Type(_) | WriteError::InvalidId { .. } => {
                (StatusCode::BAD_REQUEST, "22P02")
            }
            WriteError::PolicyViolation { .. } | WriteError::TooDeep { .. } => {
                (StatusCode::BAD_REQUEST, "22023")
            }
            // Postgres's untranslatable_character, what it answers for a NUL in text or jsonb.
            WriteError::Nul { .. } => (StatusCode::BAD_REQUEST, "22P05"),
            WriteError::InvalidName(_) => (StatusCode::BAD_REQUEST, "PGRST204"),
            WriteError::NotAnObject { .. } | WriteError::InvalidJson(_) => {
                (StatusCode::BAD_REQUEST, "PGRST102")
            }
            WriteError::Exists { .. } | WriteError::Duplicate { .. } => {
                (StatusCode::CONFLICT, "23505")
            }
            WriteError::Deleted { .. } | WriteError::NotFound { .. } => {
                (StatusCode::CONFLICT, "40001")
            }
            WriteError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "54000"),
            WriteError::WrongKind { .. } => (StatusCode::METHOD_NOT_ALLOWED, "42809"),
            WriteError::Corrupt(_) => (StatusCode::INTERNAL_SERVER_ERROR, "XX001"),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "PGRST000"),
        };
        Self::new(status, code, text)
    }

    /// Maps a store read error.
    pub fn from_read(table: &str, e: ReadError) -> Self {
        match e {
            ReadError::InvalidName(_) => Self::unknown_table(table),
            ReadError::InvalidQuery(q) => Self::parse("invalid query", q),
            ReadError::Corrupt(m) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "XX001", m),
            e => Self::new(StatusCode::SERVICE_UNAVAILABLE, "PGRST000", e.to_string()),
        }
    }
}

/// The Postgres name of a declared type, as error messages show it.
pub fn pg_type(ty: meshlite_core::schema::FieldType) -> &'static str {
    use meshlite_core::schema::FieldType as T;
    match ty {
        T::Text => "text",
        T::Integer => "bigint",
        T::Float => "double precision",
        T::Boolean => "boolean",
        T::Timestamp => "timestamp with time zone",
        T::Uuid => "uuid",
        T::Json => "jsonb",
    }
}

impl std::fmt::Display for RestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "code": self.code,
            "details": self.details,
            "hint": self.hint,
            "message": self.message,
        });
        let mut r = (self.status, axum::Json(body)).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        r
    }
}
