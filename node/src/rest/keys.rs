//! Comparable forms of values ([`Key`]) and the scalar predicates filters use: typed operands
//! (22P02 when a declared type cannot hold one), timestamps as instants, `like` patterns.
//!
//! Comparisons follow the column's declared type: numbers as numbers, timestamps as instants,
//! UUIDs case-insensitively, booleans as false < true, text by bytes (Postgres' "C" collation).
//! Untyped columns compare as their values do in JSON: a number with a number (when the operand
//! parses as one), a boolean with a boolean, anything else as text.

use std::cmp::Ordering;

use meshlite_core::schema::FieldType;
use serde_json::Value;

use super::error::RestError;

/// A comparable form of one value.
#[derive(Clone, Debug, PartialEq)]
pub enum Key {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Seconds and nanoseconds since the Unix epoch.
    Time(i64, u32),
    /// Text, by bytes.
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

    /// Total order: like types by value, unlike ones by type rank (not `Ord`: floats).
    #[allow(clippy::should_implement_trait)]
    pub fn cmp(&self, other: &Key) -> Ordering {
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

/// A value as text: a string as is, anything else as its JSON.
pub fn text_of(v: &Value) -> String {
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
pub fn row_key(ty: Option<FieldType>, v: &Value) -> Key {
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
pub fn typed_operand(ty: Option<FieldType>, raw: &str) -> Result<Option<Key>, RestError> {
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
pub fn coerce(raw: &str, like: &Key) -> Key {
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

/// Postgres' boolean input forms.
pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "on" | "1" => Some(true),
        "false" | "f" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// RFC 3339 (`T` or a space) to (seconds, nanoseconds) since the epoch; `None` if malformed.
pub fn timestamp(s: &str) -> Option<(i64, u32)> {
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
pub fn like(text: &str, pattern: &str, case_insensitive: bool) -> bool {
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
