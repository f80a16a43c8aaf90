//! Declared field types: what JSON each accepts, and the error naming the offending value.
//!
//! A type constrains the materialized value of a field; it never changes how the field is
//! encoded or merged (that is the merge policy's job), so replicas that do not know a type still
//! store and relay the same changes. `null` is accepted by every type: every column is nullable,
//! because a field may be absent on some records and a peer on an older schema may clear it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The type of a field, as written in the schema (`type = "integer"`).
///
/// The names are stable and map one to one onto SQL column types (for example the central
/// bridge's Postgres `text`, `bigint`, `double precision`, `boolean`, `timestamptz`, `uuid`,
/// `jsonb`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// A JSON string.
    Text,
    /// A JSON integer in the signed 64-bit range (`3.0` is not an integer).
    Integer,
    /// Any JSON number.
    Float,
    /// `true` or `false`.
    Boolean,
    /// An RFC 3339 date-time string with an offset, e.g. `2024-05-01T12:00:00.5Z` (a space may
    /// replace the `T`, as Postgres writes it).
    Timestamp,
    /// A UUID string in the 8-4-4-4-12 hex form (either case).
    Uuid,
    /// Any JSON value.
    Json,
}

impl FieldType {
    /// Every type, in declaration order.
    pub const ALL: [FieldType; 7] = [
        FieldType::Text,
        FieldType::Integer,
        FieldType::Float,
        FieldType::Boolean,
        FieldType::Timestamp,
        FieldType::Uuid,
        FieldType::Json,
    ];

    /// The types a primary key may have.
    pub const KEY_TYPES: [FieldType; 3] = [FieldType::Text, FieldType::Integer, FieldType::Uuid];

    /// The name as written in the schema file.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Integer => "integer",
            FieldType::Float => "float",
            FieldType::Boolean => "boolean",
            FieldType::Timestamp => "timestamp",
            FieldType::Uuid => "uuid",
            FieldType::Json => "json",
        }
    }

    /// True when `value` is of this type; `null` always is.
    pub fn accepts(self, value: &Value) -> bool {
        match (self, value) {
            (_, Value::Null) | (FieldType::Json, _) => true,
            (FieldType::Text, v) => v.is_string(),
            (FieldType::Integer, v) => v.is_i64(),
            (FieldType::Float, v) => v.is_number(),
            (FieldType::Boolean, v) => v.is_boolean(),
            (FieldType::Timestamp, Value::String(s)) => is_rfc3339(s),
            (FieldType::Uuid, Value::String(s)) => is_uuid(s),
            (FieldType::Timestamp | FieldType::Uuid, _) => false,
        }
    }

    /// True when the record id `id` (the store's internal string form of a key) is the
    /// canonical form of a key of this type: a decimal `i64` without sign or leading zeros for
    /// `integer`, a lowercase UUID for `uuid`. Canonical forms keep one record per key value
    /// (`"042"` and `"42"`, or an upper- and a lowercase UUID, would be two records here but one
    /// row in Postgres).
    pub fn accepts_key(self, id: &str) -> bool {
        match self {
            FieldType::Integer => id.parse::<i64>().is_ok_and(|n| n.to_string() == id),
            FieldType::Uuid => is_uuid(id) && !id.bytes().any(|b| b.is_ascii_uppercase()),
            _ => true,
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FieldType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FieldType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = FieldType::ALL.iter().map(|t| t.as_str()).collect();
                format!("unknown type {s:?}; use one of {}", names.join(", "))
            })
    }
}

/// A value that does not satisfy its field's declared type.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TypeError {
    /// The collection.
    pub collection: String,
    /// The field (the primary key's name for a bad key).
    pub field: String,
    /// The declared type.
    pub expected: FieldType,
    /// The offending value as JSON, shortened when long.
    pub got: String,
    /// True when the value is a primary key.
    pub key: bool,
}

impl fmt::Display for TypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            collection,
            field,
            expected,
            got,
            key,
        } = self;
        let form = if *key { " key in canonical form" } else { "" };
        write!(
            f,
            "{collection}.{field}: expected {expected}{form}, got {got}"
        )
    }
}

impl std::error::Error for TypeError {}

/// Longest rendering of an offending value in a [`TypeError`].
const MAX_SHOWN: usize = 80;

impl TypeError {
    /// A mismatch of `value` in `collection.field`.
    pub fn new(collection: &str, field: &str, expected: FieldType, value: &Value) -> Self {
        let mut got = value.to_string();
        if got.len() > MAX_SHOWN {
            let mut end = MAX_SHOWN;
            while !got.is_char_boundary(end) {
                end -= 1;
            }
            got.truncate(end);
            got.push('…');
        }
        Self {
            collection: collection.to_owned(),
            field: field.to_owned(),
            expected,
            got,
            key: false,
        }
    }
}

/// True for the 8-4-4-4-12 hex form of a UUID.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// True for an RFC 3339 `date-time`: `YYYY-MM-DD`, `T` (or `t` or a space), `hh:mm:ss`, an
/// optional fraction, and `Z` (or `z`) or `±hh:mm`. Day-of-month is checked against the month
/// (leap years included); second 60 is allowed for leap seconds.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') {
        return false;
    }
    let num = |from: usize, len: usize| -> Option<u32> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0u32, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let seps = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if seps.iter().any(|&(i, c)| b[i] != c) {
        return false;
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(min), Some(sec)) = (
        num(0, 4),
        num(5, 2),
        num(8, 2),
        num(11, 2),
        num(14, 2),
        num(17, 2),
    ) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if day == 0 || day > days || hour > 23 || min > 59 || sec > 60 {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|d| d.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
            };
            matches!((two(*h1, *h2), two(*m1, *m2)), (Some(h), Some(m)) if h <= 23 && m <= 59)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// Per type: values it accepts and values it refuses (null is accepted by all).
    fn table() -> Vec<(FieldType, Vec<Value>, Vec<Value>)> {
        use FieldType::*;
        vec![
            (
                Text,
                vec![json!(""), json!("three")],
                vec![json!(3), json!(true), json!([]), json!({})],
            ),
            (
                Integer,
                vec![json!(0), json!(-7), json!(i64::MAX), json!(i64::MIN)],
                vec![
                    json!("three"),
                    json!(3.0),
                    json!(1.5),
                    json!(u64::MAX),
                    json!(true),
                    json!([1]),
                ],
            ),
            (
                Float,
                vec![json!(1.5), json!(3), json!(-0.0), json!(u64::MAX)],
                vec![json!("1.5"), json!(false), json!({})],
            ),
            (
                Boolean,
                vec![json!(true), json!(false)],
                vec![json!(0), json!("true"), json!([])],
            ),
            (
                Timestamp,
                vec![
                    json!("2024-05-01T00:00:00Z"),
                    json!("2024-05-01t00:00:00z"),
                    json!("2024-05-01 12:30:59.123456+02:00"),
                    json!("2024-02-29T23:59:60-05:30"),
                ],
                vec![
                    json!("2024-05-01"),
                    json!("2024-05-01T00:00:00"),
                    json!("2023-02-29T00:00:00Z"),
                    json!("2024-13-01T00:00:00Z"),
                    json!("2024-04-31T00:00:00Z"),
                    json!("2024-05-01T24:00:00Z"),
                    json!("2024-05-01T00:00:00.Z"),
                    json!("2024-05-01T00:00:00+2:00"),
                    json!("2024-05-01T00:00:00+24:00"),
                    json!(1714521600),
                ],
            ),
            (
                Uuid,
                vec![
                    json!("0190b6a2-7c1e-7d3a-9f00-0123456789ab"),
                    json!("0190B6A2-7C1E-7D3A-9F00-0123456789AB"),
                ],
                vec![
                    json!("t1"),
                    json!("0190b6a27c1e7d3a9f000123456789ab"),
                    json!("{0190b6a2-7c1e-7d3a-9f00-0123456789ab}"),
                    json!("0190b6a2-7c1e-7d3a-9f00-0123456789ag"),
                    json!(42),
                ],
            ),
            (
                Json,
                vec![json!(1), json!("x"), json!([1, {"a": null}]), json!({})],
                vec![],
            ),
        ]
    }

    #[test]
    fn each_type_accepts_its_values_and_null() {
        for (ty, good, bad) in table() {
            assert!(ty.accepts(&Value::Null), "{ty} must accept null");
            for v in &good {
                assert!(ty.accepts(v), "{ty} must accept {v}");
            }
            for v in &bad {
                assert!(!ty.accepts(v), "{ty} must refuse {v}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for ty in FieldType::ALL {
            assert_eq!(ty.as_str().parse::<FieldType>(), Ok(ty));
            let toml = toml::to_string(&std::collections::BTreeMap::from([("t", ty)])).unwrap();
            assert_eq!(toml.trim(), format!("t = \"{ty}\""));
        }
        assert!("int".parse::<FieldType>().unwrap_err().contains("integer"));
    }

    #[test]
    fn keys_must_be_canonical() {
        assert!(FieldType::Integer.accepts_key("42"));
        assert!(FieldType::Integer.accepts_key("-9223372036854775808"));
        for bad in ["042", "+42", "4.2", "", "9223372036854775808", "x"] {
            assert!(!FieldType::Integer.accepts_key(bad), "{bad}");
        }
        assert!(FieldType::Uuid.accepts_key("0190b6a2-7c1e-7d3a-9f00-0123456789ab"));
        assert!(!FieldType::Uuid.accepts_key("0190B6A2-7C1E-7D3A-9F00-0123456789AB"));
        assert!(FieldType::Text.accepts_key("anything"));
    }

    #[test]
    fn error_names_collection_field_and_value() {
        let e = TypeError::new("tasks", "retry_count", FieldType::Integer, &json!("three"));
        assert_eq!(
            e.to_string(),
            "tasks.retry_count: expected integer, got \"three\""
        );
        let long = TypeError::new("t", "f", FieldType::Text, &json!(["é".repeat(100)]));
        assert!(long.got.ends_with('…') && long.got.len() <= MAX_SHOWN + 3);
    }

    proptest! {
        #[test]
        fn formatted_timestamps_are_accepted(
            secs in -62_135_596_800i64..253_402_300_799,
            nanos in 0u32..1_000_000_000,
            offset_min in -1439i32..=1439,
        ) {
            let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap()
                .replace_nanosecond(nanos).unwrap();
            let off = time::UtcOffset::from_whole_seconds(offset_min * 60).unwrap();
            let text = t.to_offset(off).format(&time::format_description::well_known::Rfc3339);
            if let Ok(text) = text {
                prop_assert!(FieldType::Timestamp.accepts(&Value::String(text.clone())), "{}", text);
            }
        }

        #[test]
        fn uuids_are_accepted_and_integers_round_trip(bytes: [u8; 16], n: i64) {
            let id = ::uuid::Uuid::from_bytes(bytes).hyphenated().to_string();
            prop_assert!(FieldType::Uuid.accepts(&Value::String(id.clone())));
            prop_assert!(FieldType::Uuid.accepts_key(&id));
            prop_assert!(FieldType::Integer.accepts(&Value::from(n)));
            prop_assert!(FieldType::Integer.accepts_key(&n.to_string()));
        }

        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,40}") {
            let v = Value::String(s.clone());
            for ty in FieldType::ALL {
                let _ = ty.accepts(&v);
                let _ = ty.accepts_key(&s);
            }
        }
    }
}
