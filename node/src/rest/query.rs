//! The PostgREST URL grammar (`url_grammar.rst`) parsed into a typed [`UrlQuery`]: `select=`,
//! column filters `col=[not.]op.value`, `order=`, `limit`, `offset`, and for writes `columns=`
//! and `on_conflict=`; plus the `Range` header. Pure functions over strings: nothing here knows
//! the schema (column checks happen when a query is bound to a table, in `filter`).
//!
//! Hostile input is bounded: names are plain identifiers of at most `lex::MAX_NAME` bytes, at most
//! `lex::MAX_FILTERS` filters and `lex::MAX_LIST` values per `in.()` list; every failure is a
//! PGRST100 [`RestError`], never a panic. Syntax this node does not implement (casts,
//! full-text search, range operators, nested embedding) is refused the same way, naming it.
//! The pieces live in `select` (`select=`), `logic` (filters and `or`/`and` trees), `path`
//! (JSON paths) and `lex` (shared lexing).

use super::error::RestError;
use super::lex::{MAX_FILTERS, clip, parse_name, split_top};
use super::logic::{Cond, Filter, parse_filter, parse_group};
use super::path::ColumnRef;
use super::select::{SelectItem, parse_select};

/// One term of `order=`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderTerm {
    /// The column (or JSON path).
    pub column: ColumnRef,
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
    /// Conditions on the table's rows, all must hold.
    pub filters: Vec<Cond>,
    /// `rel.column=op.value`: filters on the rows embedded under `rel`.
    pub embed_filters: Vec<(String, Filter)>,
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
            embed_filters: Vec::new(),
            order: Vec::new(),
            limit: None,
            offset: 0,
            columns: None,
            on_conflict: None,
        }
    }
}

impl UrlQuery {
    fn leaves(&self) -> usize {
        self.filters.iter().map(Cond::leaves).sum::<usize>() + self.embed_filters.len()
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
            "or" | "and" | "not.or" | "not.and" => q.filters.push(Cond::Group(parse_group(k, v)?)),
            _ => parse_column_key(&mut q, k, v)?,
        }
        if q.leaves() > MAX_FILTERS {
            let d = format!("at most {MAX_FILTERS} filters per request");
            return Err(RestError::parse("too many filters", d));
        }
    }
    Ok(q)
}

/// `col=…` or `rel.col=…` (a filter on embedded rows).
fn parse_column_key(q: &mut UrlQuery, k: &str, v: &str) -> Result<(), RestError> {
    let head = k.split("->").next().unwrap_or(k);
    match head.split_once('.') {
        None => q.filters.push(Cond::Filter(parse_filter(k, v, false)?)),
        Some((raw_rel, rest)) => {
            let rel = parse_name("filter", raw_rel)?;
            if matches!(
                rest,
                "or" | "and" | "not.or" | "not.and" | "order" | "limit" | "offset"
            ) {
                return Err(RestError::unsupported(&format!(
                    "{rest}= on an embedded table ({k})"
                )));
            }
            // After the raw name and its dot: `parse_name` trims, so its result may be shorter
            // (a key starting with U+0085, a Unicode space, made this slice panic mid-character).
            let rest = &k[raw_rel.len() + 1..];
            q.embed_filters.push((rel, parse_filter(rest, v, false)?));
        }
    }
    Ok(())
}

fn parse_names(what: &str, s: &str) -> Result<Vec<String>, RestError> {
    split_top(s)
        .map_err(|d| RestError::parse(format!("failed to parse {what}"), d))?
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

fn parse_order(s: &str) -> Result<Vec<OrderTerm>, RestError> {
    split_top(s)
        .map_err(|d| RestError::parse("failed to parse order", d))?
        .into_iter()
        .map(|term| {
            let mut parts = term.trim().split('.');
            let column = ColumnRef::parse("order", parts.next().unwrap_or(""))?;
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
