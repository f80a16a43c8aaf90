//! Containment between JSON values, as Postgres' jsonb `@>` (`cs`) and `<@` (`cd`) define it,
//! and overlap (`ov`, arrays sharing an element). An operand is JSON (`{"a":1}`, `[1,2]`) or a
//! Postgres array literal (`{a,b}`, `{"x, y",NULL}`), whose elements are text: a text element
//! matches a string equal to it or a number or boolean written the same way.

use serde_json::Value;

use super::logic::{SetOp, parse_list};

/// A `cs`/`cd`/`ov` operand.
#[derive(Clone, Debug, PartialEq)]
pub struct SetOperand {
    value: Value,
    /// From an array literal: elements are text and match scalars by their text.
    loose: bool,
}

impl SetOperand {
    /// Reads JSON, else a `{a,b}` array literal; `None` when it is neither.
    pub fn parse(raw: &str) -> Option<Self> {
        if let Ok(value) = serde_json::from_str::<Value>(raw) {
            return Some(Self {
                value,
                loose: false,
            });
        }
        let inner = raw.trim().strip_prefix('{')?.strip_suffix('}')?;
        let items = parse_list(inner).ok()?;
        let value = items
            .into_iter()
            .map(|s| match s.as_str() {
                "NULL" | "null" => Value::Null,
                _ => Value::String(s),
            })
            .collect();
        Some(Self { value, loose: true })
    }

    /// Whether `v` (a non-null value) relates to the operand by `op`.
    pub fn holds(&self, op: SetOp, v: &Value) -> bool {
        match op {
            SetOp::Contains => contains(v, &self.value, self.loose, true),
            SetOp::ContainedIn => contains(&self.value, v, self.loose, true),
            SetOp::Overlaps => overlaps(v, &self.value, self.loose),
        }
    }
}

fn scalar_eq(a: &Value, b: &Value, loose: bool) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (x, Value::String(s)) | (Value::String(s), x) if loose && !x.is_string() => {
            matches!(x, Value::Number(_) | Value::Bool(_))
                && serde_json::from_str::<Value>(s).ok().as_ref() == Some(x)
        }
        (x, y) => x == y,
    }
}

/// jsonb `a @> b`: objects contain objects key by key, arrays contain arrays element by
/// element (in any order, with repeats), and at the top level an array contains a scalar.
fn contains(a: &Value, b: &Value, loose: bool, top: bool) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => y
            .iter()
            .all(|(k, bv)| x.get(k).is_some_and(|av| contains(av, bv, loose, false))),
        (Value::Array(x), Value::Array(y)) => y.iter().all(|bv| {
            x.iter().any(|av| {
                (both_containers(av, bv) && contains(av, bv, loose, false))
                    || scalar_eq(av, bv, loose)
            })
        }),
        (Value::Array(x), b) if top && !b.is_object() => x.iter().any(|av| scalar_eq(av, b, loose)),
        (Value::Object(_) | Value::Array(_), _) | (_, Value::Object(_) | Value::Array(_)) => false,
        (a, b) => scalar_eq(a, b, loose),
    }
}

fn both_containers(a: &Value, b: &Value) -> bool {
    matches!(
        (a, b),
        (Value::Array(_), Value::Array(_)) | (Value::Object(_), Value::Object(_))
    )
}

/// Arrays sharing an element (a scalar counts as a one-element array).
fn overlaps(a: &Value, b: &Value, loose: bool) -> bool {
    let items = |v: &Value| match v {
        Value::Array(x) => x.clone(),
        v => vec![v.clone()],
    };
    let (x, y) = (items(a), items(b));
    x.iter().any(|av| {
        !av.is_null()
            && y.iter()
                .any(|bv| scalar_eq(av, bv, loose) || (both_containers(av, bv) && av == bv))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn holds(op: SetOp, v: Value, raw: &str) -> bool {
        SetOperand::parse(raw).unwrap().holds(op, &v)
    }

    #[test]
    fn jsonb_containment() {
        use SetOp::*;
        assert!(holds(
            Contains,
            json!({"a": 1, "b": {"c": [1, 2]}}),
            r#"{"b":{"c":[2]}}"#
        ));
        assert!(!holds(Contains, json!({"a": 1}), r#"{"a":2}"#));
        assert!(holds(Contains, json!(["a", "b", "c"]), "{a,c}"));
        assert!(holds(Contains, json!(["a", "b"]), r#"["b","b"]"#));
        assert!(holds(Contains, json!([1, 2]), "{2}"));
        assert!(!holds(Contains, json!(["1"]), "[1]"));
        assert!(holds(Contains, json!(["a"]), r#""a""#));
        assert!(holds(ContainedIn, json!(["a"]), "{a,b}"));
        assert!(!holds(ContainedIn, json!(["a", "z"]), "{a,b}"));
        assert!(holds(ContainedIn, json!({"a": 1}), r#"{"a":1,"b":2}"#));
        assert!(holds(Overlaps, json!(["a", "z"]), "{z,q}"));
        assert!(!holds(Overlaps, json!(["a"]), "{z,q}"));
        assert!(holds(Contains, json!([["x", "y"]]), r#"[["y"]]"#));
        assert!(holds(Contains, json!(["x, y"]), r#"{"x, y"}"#));
        assert!(SetOperand::parse("{a,").is_none());
        assert!(SetOperand::parse("nope").is_none());
    }
}
