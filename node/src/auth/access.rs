//! The schema's per-collection `access` table (`meshlite_core::schema::Access`) applied to a
//! [`Caller`]: which rows it may read or write ([`Scope`]), or why not ([`Denied`]).
//!
//! `service_role` may do everything. `anon` and `authenticated` get their grant (`none`,
//! `read`, `read-write`); lacking it is 403 42501 `permission denied for table X`, as Postgres
//! answers a role without the table privilege. With an `owner_field`, `authenticated` gets
//! [`Scope::Owned`]: reads, updates and deletes see only rows whose owner equals the token's
//! `sub` — other rows are invisible, so a PATCH of someone else's row matches nothing (200 with
//! no rows), as PostgREST over row-level security answers — and a row it writes must carry its
//! own `sub` as owner: an insert without the field gets it, one naming another owner is 403
//! 42501 `new row violates row-level security policy`, as is a PATCH moving a row away.

use meshlite_core::schema::CollectionDef;
use serde_json::{Map, Value};

use super::{Caller, Role};

/// What a request does with a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Select (GET, HEAD; also a Realtime subscription).
    Read,
    /// Insert, update or delete.
    Write,
}

/// The rows a caller may see and write in one collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every row.
    All,
    /// Rows whose `field` equals `owner` (none when the token has no `sub`).
    Owned {
        /// The collection's owner field.
        field: String,
        /// The caller's `sub`.
        owner: Option<String>,
    },
}

/// A refusal: 42501.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Denied {
    message: String,
    details: Option<String>,
}

impl Denied {
    fn table(table: &str, role: Role, action: Action) -> Self {
        let what = match action {
            Action::Read => "read",
            Action::Write => "write",
        };
        Self {
            message: format!("permission denied for table {table}"),
            details: Some(format!(
                "role {} may not {what} {table}: see [collections.{table}.access] in the schema",
                role.as_str()
            )),
        }
    }

    /// The refusal of a row that would belong to another owner.
    pub fn row_policy(table: &str, field: &str) -> Self {
        Self {
            message: format!("new row violates row-level security policy for table \"{table}\""),
            details: Some(format!(
                "{table}.{field} must equal the token's sub (the owner rule)"
            )),
        }
    }

    /// The refusal of a surface only `service_role` may use.
    pub fn service_only(role: Role) -> Self {
        Self {
            message: "permission denied for the native API".into(),
            details: Some(format!(
                "role {} may not use it: only service_role (or a keyless request from loopback) \
                 may use /v1, /status, /peers and /metrics",
                role.as_str()
            )),
        }
    }

    /// The `details` of the error body.
    pub fn details(&self) -> Option<String> {
        self.details.clone()
    }
}

impl Caller {
    /// The scope of `action` on collection `table` (defined by `def`), or 42501.
    pub fn authorize(
        &self,
        table: &str,
        def: &CollectionDef,
        action: Action,
    ) -> Result<Scope, Denied> {
        let access = &def.access;
        let grant = match self.role {
            Role::ServiceRole => return Ok(Scope::All),
            Role::Anon => access.anon,
            Role::Authenticated => access.authenticated,
        };
        let allowed = match action {
            Action::Read => grant.reads(),
            Action::Write => grant.writes(),
        };
        if !allowed {
            return Err(Denied::table(table, self.role, action));
        }
        match (self.role, &access.owner_field) {
            (Role::Authenticated, Some(field)) => Ok(Scope::Owned {
                field: field.clone(),
                owner: self.sub.clone(),
            }),
            _ => Ok(Scope::All),
        }
    }
}

/// A value as an owner id: strings as they are, numbers in decimal.
fn owner_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Scope {
    /// True when the caller may see `row`.
    pub fn admits(&self, row: &Map<String, Value>) -> bool {
        match self {
            Scope::All => true,
            Scope::Owned { field, owner } => {
                owner.is_some() && row.get(field).and_then(owner_text) == *owner
            }
        }
    }

    /// Makes `obj` (a row to insert into `table`) the caller's: sets the owner field when it is
    /// absent or null, refuses another owner.
    pub fn claim(&self, table: &str, obj: &mut Map<String, Value>) -> Result<(), Denied> {
        let Scope::Owned { field, owner } = self else {
            return Ok(());
        };
        let Some(owner) = owner else {
            return Err(Denied::row_policy(table, field));
        };
        match obj.get(field) {
            None | Some(Value::Null) => {
                obj.insert(field.clone(), Value::String(owner.clone()));
                Ok(())
            }
            Some(v) if owner_text(v).as_ref() == Some(owner) => Ok(()),
            Some(_) => Err(Denied::row_policy(table, field)),
        }
    }

    /// Refuses a patch of `table` that would give a row another owner.
    pub fn check_patch(&self, table: &str, patch: &Map<String, Value>) -> Result<(), Denied> {
        match self {
            Scope::Owned { field, owner } => match patch.get(field) {
                Some(v) if owner_text(v) != *owner => Err(Denied::row_policy(table, field)),
                _ => Ok(()),
            },
            Scope::All => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use meshlite_core::schema::Schema;
    use serde_json::json;

    fn def(access: &str) -> CollectionDef {
        let text = format!("[collections.t.access]\n{access}");
        Schema::from_toml(&text).unwrap().collections["t"].clone()
    }

    fn caller(role: Role, sub: Option<&str>) -> Caller {
        Caller {
            role,
            sub: sub.map(str::to_owned),
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn defaults_deny_anon_and_let_users_and_service_do_everything() {
        let d = def("");
        let anon = caller(Role::Anon, None);
        let e = anon.authorize("t", &d, Action::Read).unwrap_err();
        assert_eq!(e.to_string(), "permission denied for table t");
        for who in [caller(Role::Authenticated, Some("u")), Caller::service()] {
            for action in [Action::Read, Action::Write] {
                assert_eq!(who.authorize("t", &d, action), Ok(Scope::All));
            }
        }
    }

    #[test]
    fn grants_split_reads_from_writes() {
        let d = def("anon = \"read\"\nauthenticated = \"read\"");
        for role in [Role::Anon, Role::Authenticated] {
            let c = caller(role, Some("u"));
            assert_eq!(c.authorize("t", &d, Action::Read), Ok(Scope::All));
            assert!(c.authorize("t", &d, Action::Write).is_err());
        }
        let d = def("authenticated = \"none\"");
        let e = caller(Role::Authenticated, Some("u"))
            .authorize("t", &d, Action::Read)
            .unwrap_err();
        assert!(e.details().unwrap().contains("role authenticated"), "{e:?}");
    }

    #[test]
    fn the_owner_rule_binds_authenticated_only() {
        let d = def("anon = \"read\"\nowner_field = \"user_id\"");
        let me = caller(Role::Authenticated, Some("u1"));
        let scope = me.authorize("t", &d, Action::Write).unwrap();
        assert!(scope.admits(&obj(json!({"user_id": "u1"}))));
        assert!(!scope.admits(&obj(json!({"user_id": "u2"}))));
        assert!(!scope.admits(&obj(json!({"other": 1}))));
        let anon = caller(Role::Anon, None).authorize("t", &d, Action::Read);
        assert_eq!(anon, Ok(Scope::All));
        assert_eq!(
            Caller::service().authorize("t", &d, Action::Write),
            Ok(Scope::All)
        );
        let nobody = caller(Role::Authenticated, None).authorize("t", &d, Action::Read);
        assert!(!nobody.unwrap().admits(&obj(json!({"user_id": null}))));
    }

    #[test]
    fn inserts_are_stamped_and_other_owners_refused() {
        let d = def("owner_field = \"user_id\"");
        let scope = caller(Role::Authenticated, Some("u1"))
            .authorize("t", &d, Action::Write)
            .unwrap();
        let mut row = obj(json!({"id": "a"}));
        scope.claim("t", &mut row).unwrap();
        assert_eq!(row["user_id"], "u1");
        scope
            .claim("t", &mut obj(json!({"user_id": "u1"})))
            .unwrap();
        let e = scope
            .claim("t", &mut obj(json!({"user_id": "u2"})))
            .unwrap_err();
        assert!(e.to_string().contains("row-level security"), "{e}");
        assert!(scope.check_patch("t", &obj(json!({"x": 1}))).is_ok());
        assert!(
            scope
                .check_patch("t", &obj(json!({"user_id": "u1"})))
                .is_ok()
        );
        assert!(
            scope
                .check_patch("t", &obj(json!({"user_id": "u2"})))
                .is_err()
        );
        assert!(
            scope
                .check_patch("t", &obj(json!({"user_id": null})))
                .is_err()
        );
        let anonymous = Scope::Owned {
            field: "user_id".into(),
            owner: None,
        };
        assert!(anonymous.claim("t", &mut obj(json!({}))).is_err());
    }
}
