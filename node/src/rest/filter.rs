//! Evaluating a [`UrlQuery`] over JSON rows: filters, order and paging, in Rust.
//!
//! Cost: a request reads all live rows of the collection and filters them here (O(rows) per
//! request, plus a sort), except `key=eq.v`, which reads that one record ([`Plan::pinned_id`]).
//! Pushing indexed equality filters and `order` down to the store's SQL is left for later; the
//! semantics below are what such a pushdown must preserve.
//!
//! Comparisons follow the column's declared type: numbers as numbers, timestamps as instants,
//! UUIDs case-insensitively, booleans as false < true, text by bytes (Postgres' "C" collation).
//! An operand the type cannot hold is 22P02, as in Postgres. Untyped columns compare as their
//! values do in JSON: a number with a number (when the operand parses as one), a boolean with a
//! boolean, anything else as text. A null (or absent) value satisfies no comparison, `like` or
//! `in`, negated or not (SQL's three-valued logic); only `is` tests it. Sorting is stable, so
//! ties keep the store's order (by key); nulls sort last ascending and first descending unless
//! `nullsfirst`/`nullslast` says otherwise.

use std::cmp::Ordering;

use meshlite_core::schema::FieldType;
use serde_json::{Map, Value};

use super::error::RestError;
use super::query::{CmpOp, Filter, IsValue, Op, OrderTerm, UrlQuery};
use super::table::Table;

/// A comparable form of one value.
#[derive(Clone, Debug, PartialEq)]
enum Key {
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Seconds and nanoseconds since the Unix epoch.
    Time(i64, u32),
    Text(String),
}

impl Key {
    fn rank(&self) -> u8 {
        match self {
            Key::Bool(_) => 0,
            Key::Int(_) | Key::Float(_) => 1,
            Key::Time(..) => 2,
            Key::Text(_) => 3,
        }
    }

    fn cmp(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Key::Bool(a), Key::Bool(b)) => a.cmp(b),
            (Key::Int(a), Key::Int(b)) => a.cmp(b),
            (Key::Int(a), Key::Float(b)) => (*a as f64).total_cmp(b),
            (Key::Float(a), Key::Int(b)) => a.total_cmp(&(*b as f64)),
            (Key::Float(a), Key::Float(b)) => a.total_cmp(b),
            (Key::Time(s1, n1), Key::Time(s2, n2)) => (s1, n1).cmp(&(s2, n2)),
            (Key::Text(a), Key::Text(b)) => a.cmp(b),
            (a, b) => a.rank().cmp(&b.rank()),
        }
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn number_key(n: &serde_json::Number) -> Key {
    n.as_i64()
        .map_or_else(|| Key::Float(n.as_f64().unwrap_or(f64::NAN)), Key::Int)
}

/// The key of a non-null row value in a column of type `ty`.
fn row_key(ty: Option<FieldType>, v: &Value) -> Key {
    match (ty, v) {
        (_, Value::Bool(b)) => Key::Bool(*b),
        (_, Value::Number(n)) => number_key(n),
        (Some(FieldType::Timestamp), Value::String(s)) => {
            timestamp(s).map_or_else(|| Key::Text(s.clone()), |(s, n)| Key::Time(s, n))
        }
        (Some(FieldType::Uuid), Value::String(s)) => Key::Text(s.to_ascii_lowercase()),
        (_, v) => Key::Text(text_of(v)),
    }
}

/// The operand typed for a declared column (22P02 when it cannot be), `None` for untyped ones.
fn typed_operand(ty: Option<FieldType>, raw: &str) -> Result<Option<Key>, RestError> {
    let bad = |name| RestError::invalid_input(name, raw);
    let key = match ty {
        // JSON values compare as untyped ones do: by the row value's own JSON type.
        None | Some(FieldType::Json) => return Ok(None),
        Some(FieldType::Integer) => Key::Int(raw.trim().parse().map_err(|_| bad("bigint"))?),
        Some(FieldType::Float) => Key::Float(
            raw.trim()
                .parse::<f64>()
                .map_err(|_| bad("double precision"))?,
        ),
        Some(FieldType::Boolean) => Key::Bool(parse_bool(raw).ok_or_else(|| bad("boolean"))?),
        Some(FieldType::Timestamp) => {
            let (s, n) = timestamp(raw).ok_or_else(|| bad("timestamp with time zone"))?;
            Key::Time(s, n)
        }
        Some(FieldType::Uuid) => Key::Text(raw.to_ascii_lowercase()),
        Some(FieldType::Text) => Key::Text(raw.to_owned()),
    };
    Ok(Some(key))
}

/// An untyped column's operand, read the way the row's value is typed.
fn coerce(raw: &str, like: &Key) -> Key {
    let parsed = match like {
        Key::Int(_) | Key::Float(_) => raw
            .trim()
            .parse::<i64>()
            .map(Key::Int)
            .or_else(|_| raw.trim().parse::<f64>().map(Key::Float))
            .ok(),
        Key::Bool(_) => parse_bool(raw).map(Key::Bool),
        _ => None,
    };
    parsed.unwrap_or_else(|| Key::Text(raw.to_owned()))
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "on" | "1" => Some(true),
        "false" | "f" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// RFC 3339 (`T` or a space) to (seconds, nanoseconds) since the epoch; `None` if malformed.
fn timestamp(s: &str) -> Option<(i64, u32)> {
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let d = b.get(r)?;
        (!d.is_empty() && d.iter().all(u8::is_ascii_digit))
            .then(|| d.iter().fold(0i64, |a, c| a * 10 + i64::from(c - b'0')))
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = num(start..i)?;
        let digits = u32::try_from(i - start).ok()?;
        nanos = match digits {
            0 => return None,
            1..=9 => u32::try_from(frac).ok()? * 10u32.pow(9 - digits),
            _ => u32::try_from(num(start..start + 9)?).ok()?,
        };
    }
    let offset = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] if rest.len() == 5 && rest[2] == b':' => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'-' { -m } else { m }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some((
        days * 86_400 + h * 3600 + mi * 60 + sec - offset * 60,
        nanos,
    ))
}

/// `%` any run, `_` any one character, `\` escapes the next; whole-string match.
fn like(text: &str, pattern: &str, case_insensitive: bool) -> bool {
    let fold = |s: &str| -> Vec<char> {
        if case_insensitive {
            s.to_lowercase().chars().collect()
        } else {
            s.chars().collect()
        }
    };
    let (t, p) = (fold(text), fold(pattern));
    // Iterative matcher with one backtrack point: linear in practice, O(t * p) at worst.
    let (mut ti, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('%') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some('\\') if p.get(pi + 1) == Some(&t[ti]) => (ti, pi) = (ti + 1, pi + 2),
            Some('_') => (ti, pi) = (ti + 1, pi + 1),
            Some(c) if *c != '\\' && *c == t[ti] => (ti, pi) = (ti + 1, pi + 1),
            _ => match star {
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    (ti, pi) = (st + 1, sp + 1);
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '%')
}

/// A filter bound to a column type.
#[derive(Clone, Debug)]
struct Bound {
    filter: Filter,
    ty: Option<FieldType>,
    /// Typed operands (one for comparisons, the list for `in`); empty for untyped columns.
    operands: Vec<Key>,
}

impl Bound {
    fn new(table: &Table, filter: &Filter) -> Result<Self, RestError> {
        let ty = table.read_column(&filter.column)?;
        let raws: Vec<&str> = match &filter.op {
            Op::Cmp(_, raw) => vec![raw],
            Op::In(list) => list.iter().map(String::as_str).collect(),
            Op::Like { .. } | Op::Is(_) => vec![],
        };
        let operands = raws
            .into_iter()
            .filter_map(|r| typed_operand(ty, r).transpose())
            .collect::<Result<_, _>>()?;
        Ok(Self {
            filter: filter.clone(),
            ty,
            operands,
        })
    }

    fn operand(&self, i: usize, raw: &str, row: &Key) -> Key {
        self.operands
            .get(i)
            .cloned()
            .unwrap_or_else(|| coerce(raw, row))
    }

    /// SQL three-valued: `None` is unknown (a null value).
    fn eval(&self, row: &Map<String, Value>) -> Option<bool> {
        let v = row.get(&self.filter.column).unwrap_or(&Value::Null);
        let result = match (&self.filter.op, v) {
            (Op::Is(is), v) => Some(match is {
                IsValue::Null | IsValue::Unknown => v.is_null(),
                IsValue::True => v == &Value::Bool(true),
                IsValue::False => v == &Value::Bool(false),
            }),
            (_, Value::Null) => None,
            (Op::Cmp(op, raw), v) => {
                let k = row_key(self.ty, v);
                let o = k.cmp(&self.operand(0, raw, &k));
                Some(match op {
                    CmpOp::Eq => o.is_eq(),
                    CmpOp::Neq => o.is_ne(),
                    CmpOp::Gt => o.is_gt(),
                    CmpOp::Gte => o.is_ge(),
                    CmpOp::Lt => o.is_lt(),
                    CmpOp::Lte => o.is_le(),
                })
            }
            (Op::In(list), v) => {
                let k = row_key(self.ty, v);
                let mut it = list.iter().enumerate();
                Some(it.any(|(i, raw)| k.cmp(&self.operand(i, raw, &k)).is_eq()))
            }
            (
                Op::Like {
                    pattern,
                    case_insensitive,
                },
                v,
            ) => Some(like(&text_of(v), pattern, *case_insensitive)),
        };
        result.map(|b| b != self.filter.negate)
    }
}

/// A [`UrlQuery`] bound to a table: column names checked, operands typed.
#[derive(Clone, Debug)]
pub struct Plan {
    filters: Vec<Bound>,
    order: Vec<(OrderTerm, Option<FieldType>)>,
}

impl Plan {
    /// Binds `q` to `table`: 42703 for an unknown column, 22P02 for an operand of the wrong type.
    pub fn bind(table: &Table, q: &UrlQuery) -> Result<Self, RestError> {
        table.check_select(&q.select)?;
        let filters = q
            .filters
            .iter()
            .map(|f| Bound::new(table, f))
            .collect::<Result<_, _>>()?;
        let order = q
            .order
            .iter()
            .map(|t| Ok((t.clone(), table.read_column(&t.column)?)))
            .collect::<Result<_, RestError>>()?;
        Ok(Self { filters, order })
    }

    /// The one record id a plain `key=eq.v` filter pins (integer and text keys), so that a
    /// read can fetch that record instead of scanning; [`Plan::apply`] still runs over it.
    /// UUID keys compare case-insensitively, so they are not pinned to one spelling.
    pub fn pinned_id(&self, table: &Table) -> Option<String> {
        self.filters
            .iter()
            .find_map(|b| match (&b.filter.op, b.ty) {
                _ if b.filter.negate || b.filter.column != table.key() => None,
                (Op::Cmp(CmpOp::Eq, _), Some(FieldType::Integer)) => match b.operands.first() {
                    Some(Key::Int(i)) => Some(i.to_string()),
                    _ => None,
                },
                (Op::Cmp(CmpOp::Eq, raw), None | Some(FieldType::Text)) => Some(raw.clone()),
                _ => None,
            })
    }

    /// True when every filter holds for `row`.
    pub fn matches(&self, row: &Value) -> bool {
        let Some(row) = row.as_object() else {
            return false;
        };
        self.filters.iter().all(|f| f.eval(row) == Some(true))
    }

    /// Keeps the matching rows, then sorts them (stably) by `order`.
    pub fn apply(&self, rows: Vec<Value>) -> Vec<Value> {
        let mut rows: Vec<Value> = rows.into_iter().filter(|r| self.matches(r)).collect();
        if !self.order.is_empty() {
            rows.sort_by(|a, b| self.compare(a, b));
        }
        rows
    }

    fn compare(&self, a: &Value, b: &Value) -> Ordering {
        for (term, ty) in &self.order {
            let get = |r: &Value| r.get(&term.column).filter(|v| !v.is_null()).cloned();
            let o = match (get(a), get(b)) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) if term.nulls_first => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) if term.nulls_first => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(x), Some(y)) => {
                    let o = row_key(*ty, &x).cmp(&row_key(*ty, &y));
                    if term.desc { o.reverse() } else { o }
                }
            };
            if o.is_ne() {
                return o;
            }
        }
        Ordering::Equal
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
