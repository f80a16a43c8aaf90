//! The PostgREST URL grammar (`url_grammar.rst`) parsed into a typed [`UrlQuery`]: `select=`,
//! column filters `col=[not.]op.value`, `order=`, `limit`, `offset`, and for writes `columns=`
//! and `on_conflict=`; plus the `Range` header. Pure functions over strings: nothing here knows
//! the schema (column checks happen when a query is bound to a table, in `filter`).
//!
//! Hostile input is bounded: names are plain identifiers of at most [`MAX_NAME`] bytes, at most
//! [`MAX_FILTERS`] filters and [`MAX_LIST`] values per `in.()` list; every failure is a
//! PGRST100 [`RestError`], never a panic. Syntax this node does not implement yet (`or=`,
//! `and=`, JSON paths, casts, embedding, full-text search) is refused the same way, naming it.

use super::error::RestError;

/// Longest column or alias name (Postgres' identifier limit).
pub const MAX_NAME: usize = 63;
/// Most filters in one request.
pub const MAX_FILTERS: usize = 64;
/// Most values in one `in.(...)` list, and most `select`/`order`/`columns` items.
pub const MAX_LIST: usize = 1_000;

/// One item of `select=`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelectItem {
    /// `*`: every column.
    Star,
    /// `name` or `alias:name`.
    Column {
        /// The column read.
        name: String,
        /// The key it is returned under (`None`: its own name).
        alias: Option<String>,
    },
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `eq`
    Eq,
    /// `neq`
    Neq,
    /// `gt`
    Gt,
    /// `gte`
    Gte,
    /// `lt`
    Lt,
    /// `lte`
    Lte,
}

/// The operand of `is.`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsValue {
    /// `is.null`
    Null,
    /// `is.true`
    True,
    /// `is.false`
    False,
    /// `is.unknown` (a null boolean)
    Unknown,
}

/// A filter operator with its raw operand (typed later, against the column's type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `eq`, `neq`, `gt`, `gte`, `lt`, `lte`.
    Cmp(CmpOp, String),
    /// `like` / `ilike` (`*` is accepted for `%`, as PostgREST does).
    Like {
        /// The pattern, `%` and `_` wildcards.
        pattern: String,
        /// `ilike`.
        case_insensitive: bool,
    },
    /// `in.(a,b,"c,d")`.
    In(Vec<String>),
    /// `is.null|true|false|unknown`.
    Is(IsValue),
}

/// `column=[not.]op.value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// The column.
    pub column: String,
    /// `not.` prefix.
    pub negate: bool,
    /// The operator.
    pub op: Op,
}

/// One term of `order=`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderTerm {
    /// The column.
    pub column: String,
    /// `.desc`.
    pub desc: bool,
    /// Nulls first (default: first for `desc`, last for `asc`, as Postgres).
    pub nulls_first: bool,
}

/// A parsed request URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlQuery {
    /// `select=` (absent: `*`).
    pub select: Vec<SelectItem>,
    /// Column filters, all must hold.
    pub filters: Vec<Filter>,
    /// `order=` terms.
    pub order: Vec<OrderTerm>,
    /// `limit=`.
    pub limit: Option<u64>,
    /// `offset=`.
    pub offset: u64,
    /// `columns=` of an insert.
    pub columns: Option<Vec<String>>,
    /// `on_conflict=` of an upsert.
    pub on_conflict: Option<String>,
}

impl Default for UrlQuery {
    fn default() -> Self {
        Self {
            select: vec![SelectItem::Star],
            filters: Vec::new(),
            order: Vec::new(),
            limit: None,
            offset: 0,
            columns: None,
            on_conflict: None,
        }
    }
}

/// Parses the raw query string (percent-encoded `k=v&...`).
pub fn parse_raw(raw: Option<&str>) -> Result<UrlQuery, RestError> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    parse(&pairs)
}

/// Parses decoded `(key, value)` pairs, in URL order.
pub fn parse(pairs: &[(String, String)]) -> Result<UrlQuery, RestError> {
    let mut q = UrlQuery::default();
    for (k, v) in pairs {
        match k.as_str() {
            "select" => q.select = parse_select(v)?,
            "order" => q.order = parse_order(v)?,
            "limit" => q.limit = Some(parse_number("limit", v)?),
            "offset" => q.offset = parse_number("offset", v)?,
            "columns" => q.columns = Some(parse_names("columns", v)?),
            "on_conflict" => q.on_conflict = Some(parse_names("on_conflict", v)?.join(",")),
            "or" | "and" | "not.or" | "not.and" => {
                return Err(RestError::unsupported("logical operators (or=, and=)"));
            }
            _ => {
                if q.filters.len() == MAX_FILTERS {
                    let d = format!("at most {MAX_FILTERS} filters per request");
                    return Err(RestError::parse("too many filters", d));
                }
                q.filters.push(parse_filter(k, v)?);
            }
        }
    }
    Ok(q)
}

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
    if s.contains("->") {
        return Err(RestError::unsupported("JSON paths (->, ->>)"));
    }
    if s.contains("::") {
        return Err(RestError::unsupported("casts (::)"));
    }
    if s.contains('(') {
        return Err(RestError::unsupported("embedding related tables"));
    }
    Err(RestError::parse(
        format!("failed to parse {what} ({})", clip(s)),
        format!("expected a column name of at most {MAX_NAME} letters, digits and _"),
    ))
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn split_list<'a>(what: &str, s: &'a str) -> Result<Vec<&'a str>, RestError> {
    let items: Vec<&str> = s.split(',').collect();
    if items.len() > MAX_LIST {
        let d = format!("at most {MAX_LIST} items");
        return Err(RestError::parse(format!("failed to parse {what}"), d));
    }
    Ok(items)
}

fn parse_names(what: &str, s: &str) -> Result<Vec<String>, RestError> {
    split_list(what, s)?
        .into_iter()
        .map(|n| parse_name(what, n))
        .collect()
}

fn parse_number(what: &str, s: &str) -> Result<u64, RestError> {
    s.trim().parse::<u64>().map_err(|_| {
        RestError::parse(
            format!("failed to parse {what} ({})", clip(s)),
            "expected a non-negative integer",
        )
    })
}

fn parse_select(s: &str) -> Result<Vec<SelectItem>, RestError> {
    if s.trim().is_empty() {
        return Ok(vec![SelectItem::Star]);
    }
    if s.contains('(') {
        return Err(RestError::unsupported("embedding related tables"));
    }
    split_list("select", s)?
        .into_iter()
        .map(|item| match item.trim() {
            "*" => Ok(SelectItem::Star),
            item => match item.split_once(':').filter(|(_, r)| !r.starts_with(':')) {
                Some((alias, name)) => Ok(SelectItem::Column {
                    name: parse_name("select", name)?,
                    alias: Some(parse_name("select", alias)?),
                }),
                None => Ok(SelectItem::Column {
                    name: parse_name("select", item)?,
                    alias: None,
                }),
            },
        })
        .collect()
}

fn parse_order(s: &str) -> Result<Vec<OrderTerm>, RestError> {
    split_list("order", s)?
        .into_iter()
        .map(|term| {
            let mut parts = term.trim().split('.');
            let column = parse_name("order", parts.next().unwrap_or(""))?;
            let mut t = OrderTerm {
                column,
                desc: false,
                nulls_first: false,
            };
            let mut nulls = None;
            for p in parts {
                match p {
                    "asc" => t.desc = false,
                    "desc" => t.desc = true,
                    "nullsfirst" => nulls = Some(true),
                    "nullslast" => nulls = Some(false),
                    _ => {
                        return Err(RestError::parse(
                            format!("failed to parse order ({})", clip(term)),
                            "expected column[.asc|.desc][.nullsfirst|.nullslast]",
                        ));
                    }
                }
            }
            t.nulls_first = nulls.unwrap_or(t.desc);
            Ok(t)
        })
        .collect()
}

fn parse_filter(key: &str, value: &str) -> Result<Filter, RestError> {
    let column = parse_name("filter", key)?;
    let bad = |details: &str| {
        RestError::parse(
            format!("failed to parse filter ({})", clip(value)),
            details.to_owned(),
        )
    };
    let (negate, rest) = match value.strip_prefix("not.") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let Some((op, operand)) = rest.split_once('.') else {
        return Err(bad("expected [not.]operator.value, e.g. eq.5"));
    };
    let cmp = |c| Ok(Op::Cmp(c, operand.to_owned()));
    let op = match op {
        "eq" => cmp(CmpOp::Eq),
        "neq" => cmp(CmpOp::Neq),
        "gt" => cmp(CmpOp::Gt),
        "gte" => cmp(CmpOp::Gte),
        "lt" => cmp(CmpOp::Lt),
        "lte" => cmp(CmpOp::Lte),
        "like" | "ilike" => Ok(Op::Like {
            pattern: operand.replace('*', "%"),
            case_insensitive: op == "ilike",
        }),
        "in" => parse_in_list(operand).map(Op::In).map_err(|d| bad(&d)),
        "is" => match operand.to_ascii_lowercase().as_str() {
            "null" => Ok(Op::Is(IsValue::Null)),
            "true" => Ok(Op::Is(IsValue::True)),
            "false" => Ok(Op::Is(IsValue::False)),
            "unknown" => Ok(Op::Is(IsValue::Unknown)),
            _ => Err(bad("is. takes null, true, false or unknown")),
        },
        "cs" | "cd" | "ov" | "sl" | "sr" | "nxl" | "nxr" | "adj" | "match" | "imatch" | "fts"
        | "plfts" | "phfts" | "wfts" | "isdistinct" | "all" | "any" => {
            Err(RestError::unsupported(&format!("the {op} operator")))
        }
        _ => Err(bad(
            "unknown operator; expected eq, neq, gt, gte, lt, lte, like, ilike, in or is",
        )),
    }?;
    Ok(Filter { column, negate, op })
}

/// `(a,b,"c,d")`: values may be double-quoted (then `\` escapes the next character).
fn parse_in_list(s: &str) -> Result<Vec<String>, String> {
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or("in. takes a parenthesized list, e.g. in.(1,2,3)")?;
    let mut values = Vec::new();
    let mut chars = inner.chars().peekable();
    if inner.is_empty() {
        return Ok(values);
    }
    loop {
        let mut v = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => v.extend(chars.next()),
                    Some('"') => break,
                    Some(c) => v.push(c),
                    None => return Err("unterminated quoted value".into()),
                }
            }
            if !matches!(chars.peek(), None | Some(',')) {
                return Err("text after a quoted value".into());
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                v.push(c);
            }
        }
        values.push(v);
        if values.len() > MAX_LIST {
            return Err(format!("at most {MAX_LIST} values in a list"));
        }
        if chars.next().is_none() {
            return Ok(values);
        }
    }
}

/// The `Range` header (`Range-Unit: items`): `first-[last]` as (offset, limit).
pub fn parse_range(header: &str) -> Result<(u64, Option<u64>), RestError> {
    let bad = || RestError::bad_range(format!("invalid Range header {:?}", clip(header)));
    let (first, last) = header.trim().split_once('-').ok_or_else(bad)?;
    let first: u64 = first.parse().map_err(|_| bad())?;
    if last.is_empty() {
        return Ok((first, None));
    }
    let last: u64 = last.parse().map_err(|_| bad())?;
    if last < first {
        return Err(bad());
    }
    Ok((first, Some(last - first + 1)))
}

#[cfg(test)]
#[path = "query_tests.rs"]
mod tests;
