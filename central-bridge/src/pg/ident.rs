//! Validated SQL identifiers.
//!
//! Every table, column and schema name the bridge splices into SQL is an [`Ident`]: a name that
//! matches `^[a-z_][a-z0-9_]{0,62}$` (lower case, so the quoted name is the one unquoted SQL,
//! PostgREST and supabase-js use; at most 63 bytes, Postgres' limit, so nothing is silently
//! truncated) and is always written double-quoted. Names that come from a schema file, a
//! configuration or a peer are checked when they enter the bridge; hostile ones (quotes,
//! semicolons, spaces, upper case, empty, too long) are refused with an error naming where the
//! name came from. Quoting on top of validation is belt and braces: it also keeps reserved words
//! such as `user` or `order` usable as column names.

use std::fmt;

/// Longest identifier Postgres keeps without truncation (NAMEDATALEN - 1).
pub const MAX_IDENT_LEN: usize = 63;

/// A name that is safe to splice into SQL once quoted (see the module doc).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ident(String);

/// A name refused by [`Ident::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid identifier {name:?} from {source_name}: {reason} (use 1-{MAX_IDENT_LEN} characters \
     a-z, 0-9 or _, starting with a letter or _)"
)]
pub struct IdentError {
    /// Where the name came from, e.g. `schema collection` or `config postgres.table_schema`.
    pub source_name: String,
    /// The refused name (truncated to 80 characters for display).
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Ident {
    /// Validates `name`; `source` says where it came from, for the error message.
    pub fn new(name: &str, source: &str) -> Result<Ident, IdentError> {
        match problem(name) {
            None => Ok(Ident(name.to_owned())),
            Some(reason) => Err(IdentError {
                source_name: source.to_owned(),
                name: name.chars().take(80).collect(),
                reason,
            }),
        }
    }

    /// The bare name (for catalog lookups and messages; never for splicing).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The quoted form for SQL text: `"name"`.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }

    /// `"schema"."name"`.
    pub fn qualified(schema: &Ident, name: &Ident) -> String {
        format!("{}.{}", schema.quoted(), name.quoted())
    }

    /// The name as a SQL string literal `'name'` (for `regclass` casts and catalog filters).
    /// Safe because a valid identifier holds no quote or backslash.
    pub fn literal(&self) -> String {
        format!("'{}'", self.0)
    }
}

fn problem(name: &str) -> Option<&'static str> {
    let bytes = name.as_bytes();
    let Some(&first) = bytes.first() else {
        return Some("empty");
    };
    if bytes.len() > MAX_IDENT_LEN {
        return Some("longer than 63 bytes");
    }
    if !(first.is_ascii_lowercase() || first == b'_') {
        return Some("must start with a lower-case letter or _");
    }
    if !bytes
        .iter()
        .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Some("contains a character other than a-z, 0-9 or _");
    }
    None
}

impl fmt::Display for Ident {
    /// Displays the quoted form, so `format!("{ident}")` in SQL is always quoted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

impl fmt::Debug for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ident({})", self.0)
    }
}

impl AsRef<str> for Ident {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_plain_names_and_quotes_them() {
        for ok in ["tasks", "_extra", "a", "device_metrics2", &"x".repeat(63)] {
            let id = Ident::new(ok, "test").unwrap();
            assert_eq!(id.quoted(), format!("\"{ok}\""));
            assert_eq!(id.to_string(), id.quoted());
        }
        let s = Ident::new("public", "t").unwrap();
        let t = Ident::new("order", "t").unwrap();
        assert_eq!(Ident::qualified(&s, &t), "\"public\".\"order\"");
    }

    #[test]
    fn refuses_hostile_names_naming_the_source() {
        let long = "x".repeat(64);
        for bad in [
            "",
            "1abc",
            "Tasks",
            "a-b",
            "a b",
            "a;b",
            "a\"b",
            "a'b",
            "robert\"); drop table x;--",
            "tâche",
            "a\0b",
            long.as_str(),
        ] {
            let e = Ident::new(bad, "schema collection").unwrap_err();
            assert!(e.to_string().contains("schema collection"), "{e}");
        }
    }

    proptest! {
        #[test]
        fn valid_iff_pattern(name in "\\PC{0,70}") {
            let ok = Ident::new(&name, "p").is_ok();
            let pattern = !name.is_empty()
                && name.len() <= 63
                && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            prop_assert_eq!(ok, pattern);
        }

        #[test]
        fn quoted_form_has_exactly_two_quotes(name in "[a-z_][a-z0-9_]{0,62}") {
            let q = Ident::new(&name, "p").unwrap().quoted();
            prop_assert_eq!(q.matches('"').count(), 2);
            prop_assert!(!q.contains(';') && !q.contains('\''));
        }
    }
}
