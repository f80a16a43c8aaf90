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
//! indexed = ["status"]   # fields with a SQLite expression index for `query --where`
//! [collections.tasks.fields]
//! status = { merge = "priority", order = ["running", "failed", "completed", "pending"] }
//! updated_at = { merge = "max" }
//! retry_count = { merge = "counter" }
//! ```
//!
//! With no schema at all ([`Schema::schemaless`]) any valid collection name is accepted as a
//! document collection whose fields are all `lww`.
//!
//! # Evolution
//! [`Schema::check_upgrade`] allows new collections, new fields, new indexes and new values at the
//! end of a priority order; it refuses changing a collection's kind or primary key, a field's
//! merge policy, reordering priority values, or lowering the version. Replicas on different
//! versions never corrupt each other because the replicated state (Automerge changes, tombstones,
//! log rows) does not depend on the schema: counters and text are self-describing in the
//! document, and policies only choose among concurrent values when a row is materialized. A
//! replica stores and relays changes to collections and fields it does not know; once it
//! upgrades, it re-materializes them under the new rules.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

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
    /// Fields with an expression index.
    #[serde(default)]
    pub indexed: Vec<String>,
    /// Declared fields and their policies; undeclared fields are `lww`.
    #[serde(default)]
    pub fields: BTreeMap<String, MergePolicy>,
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
            indexed: Vec::new(),
            fields: BTreeMap::new(),
        }
    }
}

impl CollectionDef {
    /// The policy of `field` (`lww` when undeclared).
    pub fn policy(&self, field: &str) -> &MergePolicy {
        static LWW: MergePolicy = MergePolicy::Lww;
        self.fields.get(field).unwrap_or(&LWW)
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
            if def.kind == CollectionKind::Log && !def.fields.is_empty() {
                let has_merge = def.fields.values().any(|p| *p != MergePolicy::Lww);
                if has_merge {
                    return Err(bad(
                        "log rows are immutable: fields take no merge policy".into()
                    ));
                }
            }
            if def.fields.contains_key(&def.primary_key) {
                return Err(bad(format!(
                    "primary key {:?} cannot have a merge policy",
                    def.primary_key
                )));
            }
            for (field, policy) in &def.fields {
                if let MergePolicy::Priority { order } = policy {
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
            for (field, policy) in &old.fields {
                match (policy, def.fields.get(field)) {
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
}
