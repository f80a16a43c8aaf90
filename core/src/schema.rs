//! Collection schemas: which collections exist, their kind, and how each field merges.
//!
//! A schema is a TOML file (see `fixtures/schemas/pmoves.toml`):
//!
//! ```toml
//! version = 2            # bump on every change; replicas exchange it in their handshake
//! strict = true          # refuse local writes to undeclared collections (default: true)
//!
//! [collections.tasks]
//! kind = "document"      # or "log"; default "document"
//! primary_key = "id"     # default "id"
//! key_type = "uuid"      # optional: "text", "integer" or "uuid"
//! indexed = ["status"]   # fields with a SQLite expression index for `query --where`
//! [collections.tasks.fields]
//! status = { merge = "priority", order = ["running", "failed", "completed", "pending"], type = "text", default = "pending" }
//! updated_at = { merge = "max", type = "timestamp" }
//! retry_count = { merge = "counter", type = "integer" }
//! input = { type = "json" }   # merge defaults to "lww"
//! owner_id = { type = "uuid", references = "users" }   # holds a key of `users`
//! [collections.tasks.access]  # optional: who may use it through /rest/v1 (see `Access`)
//! anon = "read"
//! owner_field = "agent_id"
//! ```
//!
//! With no schema at all ([`Schema::schemaless`]) any valid collection name is accepted as a
//! document collection whose fields are all `lww`.
//!
//! # Types
//! A field may declare a [`FieldType`]: `text` (a JSON string), `integer` (a JSON integer in the
//! `i64` range; `3.0` is not one), `float` (any JSON number), `boolean`, `timestamp` (an RFC 3339
//! string with an offset, `T` or a space between date and time), `uuid` (the 8-4-4-4-12 hex
//! form) or `json` (anything). `null` is accepted by every type: every column is nullable. An
//! undeclared or untyped field is schemaless JSON. Every write is checked against the types:
//! local writes fail with the field and value named, remote transactions that break them are
//! rejected (the materialized rows always satisfy the types in force). A `counter` needs
//! `integer` or `float`, a `text` merge needs `text`, `max`/`min` cannot be `boolean`.
//!
//! A `default` (any TOML value that satisfies the field's type and policy) fills the field when
//! a local write creates a record (put, increment or append) without it; updates and remote
//! transactions never add it (the writing replica did).
//!
//! `key_type` types the primary key: `text`, `integer` or `uuid`. Ids are stored as strings in
//! their canonical form (decimal without sign or leading zeros, lowercase UUID), but records are
//! returned with the typed key: `{"id": 42}` stays a number. Integer keys are never generated;
//! text and uuid keys are generated (a UUIDv7) when absent. Without `key_type` a key may be a
//! string or an integer and is returned as a string (as before types existed).
//!
//! # Relations
//! `references = "collection"` declares that a field holds the primary key of a record of
//! another declared collection (of any kind, itself included): the `/rest/v1` surface embeds
//! related rows through it (`select=*,users(*)`), many-to-one from the field's collection and
//! one-to-many from the other. It is not enforced on writes (a value may name no record: peers
//! write independently and a delete may race an insert). The target must be declared, a
//! `references` field cannot merge as `counter` or `text`, and, when both types are declared,
//! the field's type must be the target's `key_type`. Adding, changing or removing a reference
//! is always allowed.
//!
//! # Evolution
//! [`Schema::check_upgrade`] allows new collections, new fields, new indexes and new values at the
//! end of a priority order; it refuses changing a collection's kind or primary key (its name or
//! a declared key type), a field's merge policy, reordering priority values, or lowering the
//! version. Adding or changing a field's type, or adding a key type, is allowed when the
//! stored data satisfies it: the store checks every live row when it installs the schema (one
//! scan of the collection, in the upgrade's transaction) and refuses the schema otherwise;
//! `integer` keys can only be added to a collection without rows, because stored rows carry
//! their key as a string. Removing a type is always allowed.
//!
//! Replicas on different versions never corrupt each other because the replicated state
//! (Automerge changes, tombstones, log rows) does not depend on the schema: counters and text are
//! self-describing in the document, and policies only choose among concurrent values when a row
//! is materialized. A replica stores and relays changes to collections and fields it does not
//! know; once it upgrades, it re-materializes them under the new rules.
//!
//! Types are the exception to "never refused": declare a type once every writer writes values
//! that fit it. A replica enforcing a type rejects a peer's transaction that breaks it (and does
//! not hold it, so the peer offers it again), and that peer's later changes to the same record
//! wait behind it (parked) until the schema or the data is fixed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

mod access;
mod field;
mod field_type;
#[cfg(any(test, feature = "testkit"))]
pub mod fuzz;

pub use access::{Access, Grant};
pub use field::FieldDef;
pub use field_type::{FieldType, TypeError};

/// Longest accepted collection or field name.
pub const MAX_NAME_LEN: usize = 63;

/// How a collection stores its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CollectionKind {
    /// One Automerge document per record; fields merge by policy.
    #[default]
    Document,
    /// Append-only immutable rows (a grow-only set); no Automerge.
    Log,
}

/// How concurrent writes to one field merge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "merge", rename_all = "lowercase", deny_unknown_fields)]
pub enum MergePolicy {
    /// Automerge's deterministic winner among concurrent writes (default).
    #[default]
    Lww,
    /// An integer whose increments from all replicas add up.
    Counter,
    /// The greatest value ever written wins (a local write never lowers it).
    Max,
    /// The least value ever written wins (a local write never raises it).
    Min,
    /// Among concurrent values the one earliest in `order` wins; values not listed rank last.
    Priority {
        /// Values from highest to lowest priority.
        order: Vec<serde_json::Value>,
    },
    /// Collaborative text merged character by character.
    Text,
}

impl MergePolicy {
    /// The names of the policies, as written in the schema file.
    pub const NAMES: [&'static str; 6] = ["lww", "counter", "max", "min", "priority", "text"];

    /// True when the policy can hold `value` (a counter an `i64`, `max`/`min` a number or a
    /// string, `priority` a scalar, `text` a string).
    pub fn accepts(&self, value: &Value) -> bool {
        match self {
            MergePolicy::Lww => true,
            MergePolicy::Counter => value.is_i64(),
            MergePolicy::Max | MergePolicy::Min => value.is_number() || value.is_string(),
            MergePolicy::Priority { .. } => !value.is_object() && !value.is_array(),
            MergePolicy::Text => value.is_string(),
        }
    }

    /// The types this policy can be declared with (`None`: any).
    fn allowed_types(&self) -> Option<&'static [FieldType]> {
        use FieldType::*;
        match self {
            MergePolicy::Counter => Some(&[Integer, Float]),
            MergePolicy::Text => Some(&[Text]),
            MergePolicy::Max | MergePolicy::Min => {
                Some(&[Text, Integer, Float, Timestamp, Uuid, Json])
            }
            MergePolicy::Lww | MergePolicy::Priority { .. } => None,
        }
    }

    /// The policy's name as written in the schema file.
    pub fn name(&self) -> &'static str {
        match self {
            MergePolicy::Lww => "lww",
            MergePolicy::Counter => "counter",
            MergePolicy::Max => "max",
            MergePolicy::Min => "min",
            MergePolicy::Priority { .. } => "priority",
            MergePolicy::Text => "text",
        }
    }
}

/// One collection's definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionDef {
    /// Storage kind.
    #[serde(default)]
    pub kind: CollectionKind,
    /// Name of the primary-key field.
    #[serde(default = "default_primary_key")]
    pub primary_key: String,
    /// Type of the primary key (`text`, `integer` or `uuid`); `None`: a string or an integer,
    /// returned as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_type: Option<FieldType>,
    /// Fields with an expression index.
    #[serde(default)]
    pub indexed: Vec<String>,
    /// Declared fields; undeclared fields are untyped `lww`.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldDef>,
    /// Which JWT roles may read and write it through the node's API (local policy).
    #[serde(default, skip_serializing_if = "Access::is_default")]
    pub access: Access,
}

fn default_primary_key() -> String {
    "id".to_owned()
}

fn default_strict() -> bool {
    true
}

impl Default for CollectionDef {
    fn default() -> Self {
        Self {
            kind: CollectionKind::Document,
            primary_key: default_primary_key(),
            key_type: None,
            indexed: Vec::new(),
            fields: BTreeMap::new(),
            access: Access::default(),
        }
    }
}

impl CollectionDef {
    /// The policy of `field` (`lww` when undeclared).
    pub fn policy(&self, field: &str) -> &MergePolicy {
        static LWW: MergePolicy = MergePolicy::Lww;
        self.fields.get(field).map_or(&LWW, |f| &f.merge)
    }

    /// The declared type of `field` (`None` when undeclared or untyped).
    pub fn field_type(&self, field: &str) -> Option<FieldType> {
        self.fields.get(field).and_then(|f| f.field_type)
    }

    /// Checks `value` against the declared type of `collection.field`.
    pub fn check_value(
        &self,
        collection: &str,
        field: &str,
        value: &Value,
    ) -> Result<(), TypeError> {
        match self.field_type(field) {
            Some(ty) if !ty.accepts(value) => Err(TypeError::new(collection, field, ty, value)),
            _ => Ok(()),
        }
    }

    /// Checks every typed field present in `row` (a record without its key).
    pub fn check_row(
        &self,
        collection: &str,
        row: &serde_json::Map<String, Value>,
    ) -> Result<(), TypeError> {
        for (field, def) in &self.fields {
            if let (Some(ty), Some(v)) = (def.field_type, row.get(field))
                && !ty.accepts(v)
            {
                return Err(TypeError::new(collection, field, ty, v));
            }
        }
        Ok(())
    }

    /// Checks a record id (the store's string form of a key) against the key type.
    pub fn check_key(&self, collection: &str, id: &str) -> Result<(), TypeError> {
        match self.key_type {
            Some(ty) if !ty.accepts_key(id) => {
                let mut e = TypeError::new(collection, &self.primary_key, ty, &Value::from(id));
                e.key = true;
                Err(e)
            }
            _ => Ok(()),
        }
    }

    /// The key as records show it: a number for `integer` keys, else the id string.
    pub fn key_value(&self, id: &str) -> Value {
        match self.key_type {
            Some(FieldType::Integer) => id
                .parse::<i64>()
                .map_or_else(|_| Value::from(id), Value::from),
            _ => Value::from(id),
        }
    }

    /// Declared fields with a default, and their defaults.
    pub fn defaults(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.fields
            .iter()
            .filter_map(|(name, f)| Some((name, f.default.as_ref()?)))
    }

    /// Checks one field's type against its policy, default and priority order.
    fn validate_field(&self, field: &str, def: &FieldDef) -> Result<(), String> {
        let policy = &def.merge;
        if let (Some(ty), Some(allowed)) = (def.field_type, policy.allowed_types())
            && !allowed.contains(&ty)
        {
            let names: Vec<&str> = allowed.iter().map(|t| t.as_str()).collect();
            return Err(format!(
                "field {field:?}: a {} field cannot have type {ty}; use {}",
                policy.name(),
                names.join(" or ")
            ));
        }
        let ty = def.field_type.unwrap_or(FieldType::Json);
        if let MergePolicy::Priority { order } = policy
            && let Some(v) = order.iter().find(|v| !ty.accepts(v))
        {
            return Err(format!("field {field:?}: priority value {v} is not a {ty}"));
        }
        match &def.default {
            Some(v) if !ty.accepts(v) => Err(format!("field {field:?}: default {v} is not a {ty}")),
            Some(v) if !policy.accepts(v) => Err(format!(
                "field {field:?}: default {v} cannot be held by a {} field",
                policy.name()
            )),
            _ => Ok(()),
        }
    }
}

/// A set of collection definitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// Schema version; 0 for schemaless.
    #[serde(default)]
    pub version: u32,
    /// Refuse local writes to undeclared collections.
    #[serde(default = "default_strict")]
    pub strict: bool,
    /// Collections by name.
    #[serde(default)]
    pub collections: BTreeMap<String, CollectionDef>,
}

/// Error loading or validating a schema.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The file could not be read.
    #[error("cannot read schema file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML or not the expected shape.
    #[error("invalid schema: {0}")]
    Parse(String),
    /// A name is not a valid identifier.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A definition is inconsistent.
    #[error("invalid schema: collection {collection:?}: {reason}")]
    Invalid {
        /// The collection.
        collection: String,
        /// What is wrong.
        reason: String,
    },
    /// The new schema cannot replace the stored one.
    #[error("incompatible schema change: {0}")]
    Incompatible(String),
}

/// A collection or field name that is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {what} name {name:?}: use 1-{MAX_NAME_LEN} characters a-z, A-Z, 0-9 or _, starting with a letter or _"
)]
pub struct NameError {
    /// "collection" or "field".
    pub what: &'static str,
    /// The rejected name.
    pub name: String,
}

/// Checks that `name` is a plain identifier, safe to use as a SQL and Postgres table or column
/// name and a NATS subject token.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(NameError {
            what,
            name: name.to_owned(),
        })
    }
}

impl Default for Schema {
    fn default() -> Self {
        Self::schemaless()
    }
}

impl Schema {
    /// No schema: every valid collection name is a document collection with `lww` fields.
    pub fn schemaless() -> Self {
        Self {
            version: 0,
            strict: false,
            collections: BTreeMap::new(),
        }
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Schema, SchemaError> {
        let schema: Schema = toml::from_str(text).map_err(|e| SchemaError::Parse(e.to_string()))?;
        schema.validate()?;
        Ok(schema)
    }

    /// Reads, parses and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Schema, SchemaError> {
        let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Serializes to TOML (stored in the database so a reopened store needs no file).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a validated schema always serializes")
    }

    /// Checks names and per-collection consistency.
    pub fn validate(&self) -> Result<(), SchemaError> {
        for (name, def) in &self.collections {
            validate_name("collection", name)?;
            validate_name("field", &def.primary_key)?;
            let bad = |reason: String| SchemaError::Invalid {
                collection: name.clone(),
                reason,
            };
            for f in def.fields.keys().chain(&def.indexed) {
                validate_name("field", f)?;
            }
            if let Some(ty) = def.key_type
                && !FieldType::KEY_TYPES.contains(&ty)
            {
                return Err(bad(format!(
                    "key_type {ty} is not allowed; use text, integer or uuid"
                )));
            }
            if def.kind == CollectionKind::Log && !def.fields.is_empty() {
                let has_merge = def.fields.values().any(|f| f.merge != MergePolicy::Lww);
                if has_merge {
                    return Err(bad(
                        "log rows are immutable: fields take no merge policy".into()
                    ));
                }
            }
            if def.fields.contains_key(&def.primary_key) {
                return Err(bad(format!(
                    "primary key {:?} cannot be declared as a field; type it with key_type",
                    def.primary_key
                )));
            }
            def.access.validate(def).map_err(bad)?;
            for (field, f) in &def.fields {
                def.validate_field(field, f).map_err(bad)?;
                self.validate_reference(field, f).map_err(bad)?;
                if let MergePolicy::Priority { order } = &f.merge {
                    if order.is_empty() {
                        return Err(bad(format!(
                            "field {field:?}: priority needs a non-empty order"
                        )));
                    }
                    let mut seen = order.clone();
                    seen.dedup();
                    if seen.len() != order.len() {
                        return Err(bad(format!(
                            "field {field:?}: priority order repeats a value"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks a field's `references`: a declared target whose key type matches the field's.
    fn validate_reference(&self, field: &str, f: &FieldDef) -> Result<(), String> {
        let Some(target) = &f.references else {
            return Ok(());
        };
        let Some(t) = self.collections.get(target) else {
            return Err(format!(
                "field {field:?}: references {target:?}, which is not a declared collection"
            ));
        };
        if matches!(f.merge, MergePolicy::Counter | MergePolicy::Text) {
            return Err(format!(
                "field {field:?}: a {} field cannot reference another collection",
                f.merge.name()
            ));
        }
        match (f.field_type, t.key_type) {
            (Some(ft), Some(kt)) if ft != kt => Err(format!(
                "field {field:?} has type {ft} but references {target:?}, whose key_type is {kt}"
            )),
            _ => Ok(()),
        }
    }

    /// The definition that applies to `collection`: the declared one, or (when not strict) the
    /// default document definition. `None` when the collection is not allowed for local writes.
    pub fn collection(&self, collection: &str) -> Option<CollectionDef> {
        match self.collections.get(collection) {
            Some(def) => Some(def.clone()),
            None if !self.strict => Some(CollectionDef::default()),
            None => None,
        }
    }

    /// The definition used to materialize remote data: declared, else the default. Remote data
    /// for undeclared collections is kept and shown with `lww` fields, never dropped.
    pub fn collection_or_default(&self, collection: &str) -> CollectionDef {
        self.collections
            .get(collection)
            .cloned()
            .unwrap_or_default()
    }

    /// Checks that `new` may replace `self` for a store that already holds data.
    pub fn check_upgrade(&self, new: &Schema) -> Result<(), SchemaError> {
        let incompatible = |m: String| Err(SchemaError::Incompatible(m));
        if new.version < self.version {
            return incompatible(format!(
                "version {} is older than the stored version {}",
                new.version, self.version
            ));
        }
        for (name, old) in &self.collections {
            let Some(def) = new.collections.get(name) else {
                return incompatible(format!(
                    "collection {name:?} was removed; stored data would be orphaned"
                ));
            };
            if def.kind != old.kind {
                return incompatible(format!(
                    "collection {name:?} changes kind from {:?} to {:?}",
                    old.kind, def.kind
                ));
            }
            if def.primary_key != old.primary_key {
                return incompatible(format!("collection {name:?} changes its primary key"));
            }
            if old.key_type.is_some() && def.key_type != old.key_type {
                return incompatible(format!(
                    "collection {name:?} changes its key type from {} to {}; stored ids and peers' records keep the old one",
                    old.key_type.map_or("untyped", FieldType::as_str),
                    def.key_type.map_or("untyped", FieldType::as_str),
                ));
            }
            for (field, f) in &old.fields {
                let policy = &f.merge;
                match (policy, def.fields.get(field).map(|f| &f.merge)) {
                    (
                        MergePolicy::Priority { order: a },
                        Some(MergePolicy::Priority { order: b }),
                    ) if b.starts_with(a) => {}
                    (p, Some(q)) if p == q => {}
                    (p, q) => {
                        let q = q.map_or("lww (undeclared)", MergePolicy::name);
                        return incompatible(format!(
                            "field {name}.{field} changes merge policy from {} to {q}{}",
                            p.name(),
                            if matches!(p, MergePolicy::Priority { .. }) {
                                " or reorders its values"
                            } else {
                                ""
                            }
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
version = 1
[collections.tasks]
indexed = ["status"]
[collections.tasks.fields]
status = { merge = "priority", order = ["running", "failed", "done"] }
retries = { merge = "counter" }
[collections.sensor_data]
kind = "log"
"#;

    #[test]
    fn parses_and_defaults() {
        let s = Schema::from_toml(BASE).unwrap();
        assert!(s.strict);
        let t = s.collection("tasks").unwrap();
        assert_eq!(t.primary_key, "id");
        assert_eq!(t.policy("retries"), &MergePolicy::Counter);
        assert_eq!(t.policy("other"), &MergePolicy::Lww);
        assert!(s.collection("nope").is_none());
        assert_eq!(
            s.collection_or_default("nope").kind,
            CollectionKind::Document
        );
        assert_eq!(Schema::from_toml(&s.to_toml()).unwrap(), s);
    }

    #[test]
    fn shipped_pmoves_schema_is_valid() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/schemas/pmoves.toml"
        );
        let s = Schema::from_file(Path::new(path)).unwrap();
        for t in ["jobs", "tasks", "agents", "results", "metrics", "workers"] {
            assert_eq!(s.collections[t].kind, CollectionKind::Document, "{t}");
        }
        for t in [
            "device_metrics",
            "ai_inference_results",
            "sensor_data",
            "analytics_events",
        ] {
            assert_eq!(s.collections[t].kind, CollectionKind::Log, "{t}");
        }
        let MergePolicy::Priority { order } = s.collections["tasks"].policy("status") else {
            panic!("tasks.status must be a priority field");
        };
        assert_eq!(order[0], "running");
        // Seed 002's column types.
        let ty = |c: &str, f: &str| s.collections[c].field_type(f);
        assert_eq!(ty("tasks", "agent_id"), Some(FieldType::Uuid));
        assert_eq!(ty("tasks", "retry_count"), Some(FieldType::Integer));
        assert_eq!(ty("tasks", "input"), Some(FieldType::Json));
        assert_eq!(ty("jobs", "updated_at"), Some(FieldType::Timestamp));
        assert_eq!(ty("agents", "config"), Some(FieldType::Json));
        assert_eq!(ty("metrics", "max_value"), Some(FieldType::Float));
        assert_eq!(ty("jobs", "_synced"), Some(FieldType::Boolean));
        assert_eq!(s.collections["tasks"].key_type, Some(FieldType::Uuid));
        // sync_status is the central bridge's own report table, not a replicated collection.
        assert!(!s.collections.contains_key("sync_status"));
    }

    const TYPED: &str = r#"
version = 1
[collections.tasks]
key_type = "uuid"
[collections.tasks.fields]
status = { merge = "priority", order = ["running", "done"], type = "text", default = "done" }
retries = { merge = "counter", type = "integer", default = 0 }
due = { type = "timestamp", default = 2024-05-01T00:00:00Z }
input = { type = "json", default = { a = [1, 2.5] } }
plain = {}
"#;

    #[test]
    fn parses_types_and_defaults() {
        let s = Schema::from_toml(TYPED).unwrap();
        let t = &s.collections["tasks"];
        assert_eq!(t.key_type, Some(FieldType::Uuid));
        assert_eq!(t.field_type("retries"), Some(FieldType::Integer));
        assert_eq!(t.field_type("plain"), None);
        assert_eq!(t.field_type("undeclared"), None);
        assert_eq!(t.policy("plain"), &MergePolicy::Lww);
        assert_eq!(t.policy("retries"), &MergePolicy::Counter);
        let defaults: BTreeMap<&str, &serde_json::Value> =
            t.defaults().map(|(k, v)| (k.as_str(), v)).collect();
        assert_eq!(defaults.len(), 4);
        assert_eq!(defaults["due"], &serde_json::json!("2024-05-01T00:00:00Z"));
        assert_eq!(defaults["input"], &serde_json::json!({"a": [1, 2.5]}));
        assert_eq!(Schema::from_toml(&s.to_toml()).unwrap(), s);
        assert_eq!(t.key_value("7"), serde_json::json!("7"));
        let ints = Schema::from_toml("[collections.n]\nkey_type = \"integer\"").unwrap();
        assert_eq!(ints.collections["n"].key_value("7"), serde_json::json!(7));
    }

    #[test]
    fn references_name_a_declared_collection_of_the_same_key_type() {
        let ok = r#"
[collections.users]
key_type = "integer"
[collections.posts.fields]
author_id = { type = "integer", references = "users" }
parent = { references = "posts" }
"#;
        let s = Schema::from_toml(ok).unwrap();
        let f = &s.collections["posts"].fields["author_id"];
        assert_eq!(f.references.as_deref(), Some("users"));
        assert_eq!(Schema::from_toml(&s.to_toml()).unwrap(), s);
        for (bad, why) in [
            (
                r#"a = { references = "nope" }"#,
                "not a declared collection",
            ),
            (
                r#"a = { type = "text", references = "users" }"#,
                "key_type is integer",
            ),
            (
                r#"a = { merge = "counter", references = "users" }"#,
                "counter",
            ),
        ] {
            let text = format!(
                "[collections.users]\nkey_type = \"integer\"\n[collections.t.fields]\n{bad}"
            );
            let err = Schema::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn rejects_inconsistent_types_and_defaults() {
        for (bad, why) in [
            (r#"x = { merge = "counter", type = "text" }"#, "counter"),
            (r#"x = { merge = "text", type = "integer" }"#, "text field"),
            (r#"x = { merge = "max", type = "boolean" }"#, "max"),
            (r#"x = { type = "integer", default = "three" }"#, "default"),
            (
                r#"x = { type = "timestamp", default = "2024-05-01" }"#,
                "default",
            ),
            (r#"x = { merge = "counter", default = 1.5 }"#, "default"),
            (
                r#"x = { merge = "priority", order = [1, "a"], type = "integer" }"#,
                "priority value",
            ),
            (r#"x = { type = "int" }"#, "int"),
            (r#"x = { merge = "lww", order = [1] }"#, "order"),
            (r#"x = { merge = "priority" }"#, "order"),
            (r#"x = { typo = 1 }"#, "typo"),
        ] {
            let text = format!("[collections.t.fields]\n{bad}");
            let err = Schema::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        for key in ["float", "json", "timestamp", "boolean"] {
            let text = format!("[collections.t]\nkey_type = \"{key}\"");
            assert!(Schema::from_toml(&text).is_err(), "{key}");
        }
        let pk = "[collections.t.fields]\nid = { type = \"uuid\" }";
        assert!(
            Schema::from_toml(pk)
                .unwrap_err()
                .to_string()
                .contains("key_type")
        );
    }

    #[test]
    fn type_upgrade_rules() {
        let old = Schema::from_toml(TYPED).unwrap();
        // Field types may be added, changed or removed here: the store checks stored data.
        for ok in [
            TYPED.replace(r#"type = "timestamp", "#, ""),
            TYPED
                .replace(r#"type = "json""#, r#"type = "text""#)
                .replace("{ a = [1, 2.5] }", "\"x\""),
            TYPED.replace("plain = {}", r#"plain = { type = "boolean" }"#),
        ] {
            old.check_upgrade(&Schema::from_toml(&ok).unwrap()).unwrap();
        }
        let untyped = TYPED.replace("key_type = \"uuid\"\n", "");
        Schema::from_toml(&untyped)
            .unwrap()
            .check_upgrade(&old)
            .unwrap();
        for bad in [
            untyped,
            TYPED.replace(r#"key_type = "uuid""#, r#"key_type = "text""#),
        ] {
            let err = old
                .check_upgrade(&Schema::from_toml(&bad).unwrap())
                .unwrap_err();
            assert!(err.to_string().contains("key type"), "{err}");
        }
    }

    #[test]
    fn unknown_keys_in_a_field_declaration_are_named() {
        let err = Schema::from_toml("[collections.t.fields]\nx = { merge = \"lww\", odrer = 1 }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("odrer"), "{err}");
    }

    #[test]
    fn schemaless_accepts_any_valid_name() {
        let s = Schema::schemaless();
        assert!(s.collection("anything").is_some());
    }

    #[test]
    fn rejects_bad_names_and_policies() {
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "robert'); drop table x;--",
            &"x".repeat(64),
        ] {
            assert!(validate_name("collection", bad).is_err(), "{bad:?}");
        }
        assert!(Schema::from_toml("[collections.\"bad-name\"]").is_err());
        assert!(Schema::from_toml("[collections.t.fields]\nx = { merge = \"nope\" }").is_err());
        assert!(
            Schema::from_toml("[collections.t.fields]\nx = { merge = \"priority\", order = [] }")
                .is_err()
        );
        assert!(
            Schema::from_toml(
                "[collections.t]\nkind = \"log\"\n[collections.t.fields]\nx = { merge = \"max\" }"
            )
            .is_err()
        );
        assert!(Schema::from_toml("bogus = 1").is_err());
    }

    #[test]
    fn upgrade_rules() {
        let old = Schema::from_toml(BASE).unwrap();
        let ok = BASE.replace("version = 1", "version = 2").replace(
            "order = [\"running\", \"failed\", \"done\"]",
            "order = [\"running\", \"failed\", \"done\", \"archived\"]",
        ) + "\n[collections.new_one]\n";
        old.check_upgrade(&Schema::from_toml(&ok).unwrap()).unwrap();

        let reorder = BASE.replace(
            "[\"running\", \"failed\", \"done\"]",
            "[\"failed\", \"running\", \"done\"]",
        );
        let kind = BASE.replace("kind = \"log\"", "kind = \"document\"");
        let policy = BASE.replace("merge = \"counter\"", "merge = \"max\"");
        let dropped = "version = 1\n[collections.tasks]\n";
        for bad in [reorder.as_str(), kind.as_str(), policy.as_str(), dropped] {
            let err = old
                .check_upgrade(&Schema::from_toml(bad).unwrap())
                .unwrap_err();
            assert!(matches!(err, SchemaError::Incompatible(_)), "{bad}");
        }
        let older = Schema {
            version: 0,
            ..old.clone()
        };
        assert!(old.check_upgrade(&older).is_err());
    }

    /// The `schema_parse` fuzz body on seeds of every construct and on random mutations.
    #[test]
    fn schema_fuzz_body_on_seeds_and_mutations() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let seeds = [
            BASE,
            "version = 2\nstrict = true\n[collections.k]\nkey_type = \"integer\"\nprimary_key = \"n\"\n[collections.k.fields]\nx = { type = \"float\", default = 1.5 }\n",
            "version = 1\n[collections.t.fields]\nd = { type = \"json\", default = { a = [1, \"x\", { b = true }] } }\nat = { merge = \"max\", type = \"timestamp\", default = \"2024-01-01T00:00:00Z\" }\n",
            "version = 1\n[collections.t.fields]\nf = { type = \"float\", default = nan }\ng = { default = inf }\n",
            "version = 1\n[collections.t.access]\nanon = \"read\"\nauthenticated = \"read-write\"\nowner_field = \"o\"\n[collections.t.fields]\no = { type = \"uuid\" }\nr = { references = \"u\" }\n[collections.u]\n",
        ];
        for seed in seeds {
            fuzz::schema_parse(seed.as_bytes());
        }
        let alphabet = b"[]{}=\",.\n 0123456789abcdefghiklmnoprstuvxyz_-";
        let mut rng = StdRng::seed_from_u64(0x5C4E);
        for _ in 0..3000 {
            let mut bytes = seeds[rng.random_range(0..seeds.len())].as_bytes().to_vec();
            for _ in 0..rng.random_range(1..5) {
                let at = rng.random_range(0..bytes.len());
                let b = alphabet[rng.random_range(0..alphabet.len())];
                match rng.random_range(0..3) {
                    0 => bytes.insert(at, b),
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes[at] = b,
                }
            }
            fuzz::schema_parse(&bytes);
        }
    }
}
