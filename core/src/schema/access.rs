//! Who may read and write a collection through the node's Supabase-compatible API: a grant per
//! JWT role and an optional owner rule, written in the schema as
//!
//! ```toml
//! [collections.tasks.access]
//! anon = "read"                  # none | read | read-write   (default: none)
//! authenticated = "read-write"   # none | read | read-write   (default: read-write)
//! owner_field = "user_id"        # optional: `authenticated` sees and writes only its own rows
//! ```
//!
//! `service_role` always reads and writes everything (Supabase's `bypassrls` role); it is not
//! configurable. The defaults follow what a Supabase project does once row-level security is
//! on: the public `anon` key reads nothing until a collection opts in, a signed-in user
//! (`authenticated`) may use every collection. With `owner_field`, an `authenticated` caller
//! sees only rows whose owner field equals its token's `sub` (Supabase's
//! `auth.uid() = user_id` policy): its reads and updates skip other rows, and an insert gets
//! the field set to `sub` (or is refused when it names another owner). The owner rule binds
//! only `authenticated`; an `anon` grant covers every row.
//!
//! The schema only declares the rule; the node enforces it (`node/src/auth`). It is local
//! policy, not replicated data: changing it never conflicts with peers.

use serde::{Deserialize, Serialize};

use super::{CollectionDef, FieldType, validate_name};

/// What one role may do with a collection's rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Grant {
    /// Nothing: every request is refused (403, `permission denied for table ...`).
    None,
    /// Select only.
    Read,
    /// Select, insert, update and delete.
    ReadWrite,
}

impl Grant {
    /// True when the grant allows reads.
    pub fn reads(self) -> bool {
        self >= Grant::Read
    }

    /// True when the grant allows writes.
    pub fn writes(self) -> bool {
        self == Grant::ReadWrite
    }
}

/// A collection's access rule (the `[collections.NAME.access]` table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// The grant of the `anon` role (the public key); default `none`.
    #[serde(default = "Access::default_anon")]
    pub anon: Grant,
    /// The grant of the `authenticated` role (a signed-in user); default `read-write`.
    #[serde(default = "Access::default_authenticated")]
    pub authenticated: Grant,
    /// The field holding a row's owner (a user id, compared with the token's `sub`); when set,
    /// `authenticated` reads and writes only its own rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_field: Option<String>,
}

impl Default for Access {
    fn default() -> Self {
        Self {
            anon: Self::default_anon(),
            authenticated: Self::default_authenticated(),
            owner_field: None,
        }
    }
}

impl Access {
    fn default_anon() -> Grant {
        Grant::None
    }

    fn default_authenticated() -> Grant {
        Grant::ReadWrite
    }

    /// True when this is the default rule (it is then left out of the serialized schema).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the rule against its collection: the owner field must be a valid name, the key
    /// or a declared field when the collection declares fields, hold text or uuid values, and
    /// apply to a role that can use the collection.
    pub(super) fn validate(&self, def: &CollectionDef) -> Result<(), String> {
        let Some(owner) = &self.owner_field else {
            return Ok(());
        };
        validate_name("field", owner).map_err(|e| format!("access.owner_field: {e}"))?;
        let ty = match def.fields.get(owner) {
            _ if *owner == def.primary_key => def.key_type,
            Some(f) => f.field_type,
            None if def.fields.is_empty() => None,
            None => {
                return Err(format!(
                    "access.owner_field {owner:?} is neither the primary key nor a declared field"
                ));
            }
        };
        if let Some(ty) = ty.filter(|t| !matches!(t, FieldType::Text | FieldType::Uuid)) {
            return Err(format!(
                "access.owner_field {owner:?} has type {ty}; an owner is a user id (text or uuid)"
            ));
        }
        if self.authenticated == Grant::None {
            return Err(
                "access.owner_field applies to the authenticated role, whose grant is \"none\""
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schema;

    fn schema(access: &str) -> Result<Schema, String> {
        let text = format!(
            "[collections.t]\n[collections.t.fields]\nuser_id = {{ type = \"uuid\" }}\nn = {{ type = \"integer\" }}\n[collections.t.access]\n{access}"
        );
        Schema::from_toml(&text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_round_trip() {
        let s = Schema::from_toml("[collections.t]").unwrap();
        let a = &s.collections["t"].access;
        assert_eq!(a, &Access::default());
        assert!(!a.anon.reads() && a.authenticated.writes());
        assert!(!s.to_toml().contains("access"), "{}", s.to_toml());
        let s = schema("anon = \"read\"\nowner_field = \"user_id\"").unwrap();
        let a = &s.collections["t"].access;
        assert!(a.anon.reads() && !a.anon.writes());
        assert_eq!(a.owner_field.as_deref(), Some("user_id"));
        assert_eq!(Schema::from_toml(&s.to_toml()).unwrap(), s);
    }

    #[test]
    fn the_key_or_an_open_collections_field_may_own() {
        let key =
            "[collections.p]\nkey_type = \"uuid\"\n[collections.p.access]\nowner_field = \"id\"";
        Schema::from_toml(key).unwrap();
        let open = "[collections.p.access]\nowner_field = \"anything\"";
        Schema::from_toml(open).unwrap();
    }

    #[test]
    fn inconsistent_rules_are_refused_with_the_reason() {
        for (bad, why) in [
            ("anon = \"write\"", "unknown variant"),
            ("owner = \"user_id\"", "unknown field"),
            ("owner_field = \"nope\"", "neither the primary key"),
            ("owner_field = \"n\"", "has type integer"),
            ("owner_field = \"bad-name\"", "invalid field name"),
            (
                "authenticated = \"none\"\nowner_field = \"user_id\"",
                "whose grant is \"none\"",
            ),
        ] {
            let err = schema(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
