//! A declared field as written in the schema file, `{ merge = "counter", type = "integer",
//! default = 0 }` or `{ type = "integer", references = "users" }`, and its conversion from and
//! to TOML.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{FieldType, MergePolicy};

/// One declared field: its merge policy, and optionally its type and default.
///
/// Written inline in the schema: `{ merge = "counter", type = "integer", default = 0 }`; every
/// key is optional (`merge` defaults to `lww`).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "RawField", into = "RawField")]
pub struct FieldDef {
    /// How concurrent writes merge.
    pub merge: MergePolicy,
    /// The type of its values; `None`: any JSON.
    pub field_type: Option<FieldType>,
    /// The value a new record gets when a local write creates it without this field.
    pub default: Option<Value>,
    /// The collection whose primary key this field holds (a relation, like a foreign key
    /// without enforcement: a dangling value is allowed, as replicas merge independently).
    pub references: Option<String>,
}

impl From<MergePolicy> for FieldDef {
    fn from(merge: MergePolicy) -> Self {
        Self {
            merge,
            ..Self::default()
        }
    }
}

/// A field definition as written in TOML.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    merge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    order: Option<Vec<Value>>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    field_type: Option<FieldType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    references: Option<String>,
}

impl TryFrom<RawField> for FieldDef {
    type Error = String;

    fn try_from(raw: RawField) -> Result<Self, String> {
        let merge = match (raw.merge.as_deref().unwrap_or("lww"), raw.order) {
            ("priority", Some(order)) => MergePolicy::Priority { order },
            ("priority", None) => return Err("merge = \"priority\" needs an `order`".into()),
            (_, Some(_)) => return Err("`order` only goes with merge = \"priority\"".into()),
            ("lww", None) => MergePolicy::Lww,
            ("counter", None) => MergePolicy::Counter,
            ("max", None) => MergePolicy::Max,
            ("min", None) => MergePolicy::Min,
            ("text", None) => MergePolicy::Text,
            (other, None) => {
                let names = MergePolicy::NAMES.join(", ");
                return Err(format!(
                    "unknown merge policy {other:?}; use one of {names}"
                ));
            }
        };
        Ok(FieldDef {
            merge,
            field_type: raw.field_type,
            default: raw.default.map(toml_to_json).transpose()?,
            references: raw.references,
        })
    }
}

impl From<FieldDef> for RawField {
    fn from(def: FieldDef) -> Self {
        let (merge, order) = match def.merge {
            MergePolicy::Priority { order } => ("priority", Some(order)),
            other => (other.name(), None),
        };
        RawField {
            merge: Some(merge.to_owned()),
            order,
            field_type: def.field_type,
            default: def.default.as_ref().and_then(json_to_toml),
            references: def.references,
        }
    }
}

/// A TOML value as JSON; datetimes become their RFC 3339 text.
fn toml_to_json(v: toml::Value) -> Result<Value, String> {
    Ok(match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or("a default cannot be NaN or infinite")?,
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => {
            Value::Array(a.into_iter().map(toml_to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(t) => Value::Object(
            t.into_iter()
                .map(|(k, v)| Ok((k, toml_to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// JSON as a TOML value (`None` for `null` and integers beyond `i64`, which a default parsed
/// from TOML never holds).
fn json_to_toml(v: &Value) -> Option<toml::Value> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None if n.is_f64() => toml::Value::Float(n.as_f64()?),
            None => return None,
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(a) => toml::Value::Array(a.iter().map(json_to_toml).collect::<Option<_>>()?),
        Value::Object(m) => toml::Value::Table(
            m.iter()
                .map(|(k, v)| Some((k.clone(), json_to_toml(v)?)))
                .collect::<Option<_>>()?,
        ),
    })
}
