//! Column references with JSON paths: `data`, `data->key`, `data->>key`, `a->b->>c`, `tags->0`
//! (PostgREST's `->` keeps JSON, a final `->>` yields text). Parsing here; [`ColumnRef::resolve`]
//! reads the referenced value out of a row, as Postgres' `->`/`->>` do: a missing key, an index
//! out of range or a step into a scalar is null; on an array, a key that is an integer indexes
//! it (negative from the end).

use serde_json::{Map, Value};

use super::error::RestError;
use super::lex::{MAX_NAME, clip, parse_name};

/// Most steps in one JSON path.
pub const MAX_PATH: usize = 16;

/// A column, optionally followed by a JSON path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnRef {
    /// The column.
    pub column: String,
    /// The keys (or array indexes) of the path, outermost first; empty for a plain column.
    pub path: Vec<String>,
    /// The last step is `->>`: the value is text.
    pub as_text: bool,
}

impl ColumnRef {
    /// A plain column.
    pub fn plain(column: impl Into<String>) -> Self {
        Self {
            column: column.into(),
            path: Vec::new(),
            as_text: false,
        }
    }

    /// Parses `col`, `col->k`, `col->>k`, `col->a->>b`; PGRST100 when malformed.
    pub fn parse(what: &str, s: &str) -> Result<Self, RestError> {
        let s = s.trim();
        let mut pieces = s.split("->");
        let column = parse_name(what, pieces.next().unwrap_or(""))?;
        let mut r = Self::plain(column);
        let bad = |d: &str| {
            RestError::parse(
                format!("failed to parse {what} ({})", clip(s)),
                d.to_owned(),
            )
        };
        for piece in pieces {
            if r.as_text {
                return Err(bad("->> must be the last step of a JSON path"));
            }
            let key = match piece.strip_prefix('>') {
                Some(k) => {
                    r.as_text = true;
                    k
                }
                None => piece,
            };
            r.path.push(parse_key(key).ok_or_else(|| {
                bad("a JSON path step is a key of letters, digits, _ and $ (or \"quoted\"), or an index")
            })?);
            if r.path.len() > MAX_PATH {
                return Err(bad("too many JSON path steps"));
            }
        }
        Ok(r)
    }

    /// The name a selected value is returned under: the last path key, else the column.
    pub fn output_name(&self) -> &str {
        self.path.last().unwrap_or(&self.column)
    }

    /// True when this names the column itself, no path.
    pub fn is_plain(&self) -> bool {
        self.path.is_empty()
    }

    /// The referenced value in `row` (null when absent); `->>` yields a string.
    pub fn resolve(&self, row: &Map<String, Value>) -> Value {
        let mut v = match row.get(&self.column) {
            Some(v) => v,
            None => return Value::Null,
        };
        for key in &self.path {
            let next = match v {
                Value::Object(m) => m.get(key),
                Value::Array(a) => index(a, key),
                _ => None,
            };
            match next {
                Some(n) => v = n,
                None => return Value::Null,
            }
        }
        match (self.as_text, v) {
            (true, Value::String(_)) | (true, Value::Null) | (false, _) => v.clone(),
            (true, other) => Value::String(other.to_string()),
        }
    }
}

fn index<'a>(a: &'a [Value], key: &str) -> Option<&'a Value> {
    let i: i64 = key.parse().ok()?;
    let len = i64::try_from(a.len()).ok()?;
    let i = if i < 0 { len + i } else { i };
    a.get(usize::try_from(i).ok()?)
}

/// A path key: `[A-Za-z0-9_$]+` (a leading `-` for negative indexes) or a double-quoted name.
fn parse_key(s: &str) -> Option<String> {
    if let Some(q) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        return (!q.is_empty() && !q.contains('"') && q.len() <= MAX_NAME).then(|| q.to_owned());
    }
    let body = s.strip_prefix('-').unwrap_or(s);
    let ok = !body.is_empty()
        && s.len() <= MAX_NAME
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && (s == body || body.chars().all(|c| c.is_ascii_digit()));
    ok.then(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_parse_and_resolve() {
        let r = ColumnRef::parse("select", "data->a->>b").unwrap();
        assert_eq!(
            (r.column.as_str(), r.path.len(), r.as_text),
            ("data", 2, true)
        );
        assert_eq!(r.output_name(), "b");
        let row = json!({"data": {"a": {"b": 5, "c": [1, 2, {"d": "x"}]}}});
        let row = row.as_object().unwrap();
        assert_eq!(r.resolve(row), json!("5"));
        let c = ColumnRef::parse("f", "data->a->c->-1->>d").unwrap();
        assert_eq!(c.resolve(row), json!("x"));
        let j = ColumnRef::parse("f", "data->a->c").unwrap();
        assert_eq!(j.resolve(row), json!([1, 2, {"d": "x"}]));
        let missing = ColumnRef::parse("f", "data->z->y").unwrap();
        assert_eq!(missing.resolve(row), Value::Null);
        for bad in ["data->>a->b", "data->", "data->a b", "->a", "data->-x"] {
            assert_eq!(
                ColumnRef::parse("f", bad).unwrap_err().code,
                "PGRST100",
                "{bad}"
            );
        }
    }
}
