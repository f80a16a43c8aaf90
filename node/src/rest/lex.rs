//! The lexical pieces of PostgREST's URL grammar that every parser shares: bounds, plain
//! identifiers, top-level splitting (commas outside parentheses and double quotes) and
//! unquoting. A leaf: it knows nothing of queries.

use super::error::RestError;

/// Longest column or alias name (Postgres' identifier limit).
pub const MAX_NAME: usize = 63;
/// Most filters in one request (logic-tree leaves included).
pub const MAX_FILTERS: usize = 64;
/// Most values in one `in.(...)` list, and most `select`/`order`/`columns` items.
pub const MAX_LIST: usize = 1_000;
/// Deepest nesting of `or(...)`/`and(...)` and of parentheses in general.
pub const MAX_DEPTH: usize = 16;

/// A plain identifier: `[A-Za-z_][A-Za-z0-9_]*`, at most [`MAX_NAME`] bytes.
/// Double quotes around a name are accepted (postgrest-js quotes `columns=`) but not needed.
pub fn parse_name(what: &str, s: &str) -> Result<String, RestError> {
    let s = s.trim();
    let s = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    let mut chars = s.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let ok_rest = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok_first && ok_rest && s.len() <= MAX_NAME {
        return Ok(s.to_owned());
    }
    if s.contains("::") {
        return Err(RestError::unsupported("casts (::)"));
    }
    Err(RestError::parse(
        format!("failed to parse {what} ({})", clip(s)),
        format!("expected a column name of at most {MAX_NAME} letters, digits and _"),
    ))
}

/// `s` cut to 64 characters for an error message.
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Splits at commas outside parentheses and double quotes (`\` escapes inside quotes).
/// Errors on unbalanced parentheses or quotes, nesting deeper than [`MAX_DEPTH`], or more
/// than [`MAX_LIST`] items.
pub fn split_top(s: &str) -> Result<Vec<&str>, String> {
    let mut items = Vec::new();
    let (mut depth, mut quoted, mut escaped, mut start) = (0usize, false, false, 0);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ if quoted => {}
            '(' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!("nested deeper than {MAX_DEPTH} levels"));
                }
            }
            ')' => depth = depth.checked_sub(1).ok_or("unbalanced \")\"")?,
            ',' if depth == 0 => {
                items.push(&s[start..i]);
                start = i + 1;
                if items.len() > MAX_LIST {
                    return Err(format!("at most {MAX_LIST} items"));
                }
            }
            _ => {}
        }
    }
    if quoted {
        return Err("unterminated double quote".into());
    }
    if depth > 0 {
        return Err("unbalanced \"(\"".into());
    }
    items.push(&s[start..]);
    Ok(items)
}

/// A value as written in a logic tree: `"a, b"` loses its quotes (`\` escapes the next
/// character); anything else is kept as is.
pub fn unquote(s: &str) -> String {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return s.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn splits_respect_parens_and_quotes() {
        assert_eq!(
            split_top(r#"a.eq.1,and(b.gt.2,c.in.("x,y",z)),d.eq."p,q\"""#).unwrap(),
            vec!["a.eq.1", r#"and(b.gt.2,c.in.("x,y",z))"#, r#"d.eq."p,q\"""#]
        );
        assert_eq!(unquote(r#""p,q\"""#), "p,q\"");
        assert!(split_top("a,(b").is_err());
        assert!(split_top("a)").is_err());
        assert!(split_top("\"a").is_err());
        assert!(split_top(&"(".repeat(40)).is_err());
    }
}
