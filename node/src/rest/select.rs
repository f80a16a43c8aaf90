//! The `select=` grammar: `*`, columns with JSON paths, `alias:` renaming, and embedded
//! related tables one level deep, `[alias:]table[!hint][!inner](items)`. Pure parsing; the
//! relation an embed names is found later, against the schema (`embed`).

use super::error::RestError;
use super::lex::{clip, parse_name, split_top};
use super::path::ColumnRef;

/// One item of `select=`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelectItem {
    /// `*`: every column.
    Star,
    /// `col`, `col->a->>b`, or `alias:` either.
    Column {
        /// The value read.
        col: ColumnRef,
        /// The key it is returned under (`None`: the column, or the last path key).
        alias: Option<String>,
    },
    /// `name(items)`: the related rows of another collection.
    Embed(Embed),
}

impl SelectItem {
    /// A plain column, no alias.
    pub fn column(name: &str) -> Self {
        SelectItem::Column {
            col: ColumnRef::plain(name),
            alias: None,
        }
    }
}

/// `[alias:]name[!hint][!inner](items)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Embed {
    /// The related collection (or the referencing column, as PostgREST also accepts).
    pub name: String,
    /// The key the related rows are returned under (`None`: `name`).
    pub alias: Option<String>,
    /// `!column`: which relation, when several join the same two collections.
    pub hint: Option<String>,
    /// `!inner`: keep only parent rows that have a related row.
    pub inner: bool,
    /// What to select of the related rows (no further embedding).
    pub items: Vec<SelectItem>,
}

impl Embed {
    /// The key the embedded value is returned under.
    pub fn key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

/// Parses the whole `select=` value (empty: `*`).
pub fn parse_select(s: &str) -> Result<Vec<SelectItem>, RestError> {
    parse_items(s, true)
}

fn bad(s: &str, details: impl Into<String>) -> RestError {
    RestError::parse(format!("failed to parse select ({})", clip(s)), details)
}

fn parse_items(s: &str, top: bool) -> Result<Vec<SelectItem>, RestError> {
    if s.trim().is_empty() {
        return Ok(vec![SelectItem::Star]);
    }
    split_top(s)
        .map_err(|d| bad(s, d))?
        .into_iter()
        .map(|item| parse_item(item.trim(), top))
        .collect()
}

/// Splits `alias:rest` (not at a `::` cast).
fn split_alias(item: &str) -> (Option<&str>, &str) {
    let head = item.split('(').next().unwrap_or(item);
    match head.find(':') {
        Some(i) if !head[i..].starts_with("::") => (Some(&item[..i]), &item[i + 1..]),
        _ => (None, item),
    }
}

fn parse_item(item: &str, top: bool) -> Result<SelectItem, RestError> {
    if item == "*" {
        return Ok(SelectItem::Star);
    }
    if item.starts_with("...") {
        return Err(RestError::unsupported("spreading embedded tables (...)"));
    }
    let (alias, rest) = split_alias(item);
    let alias = alias.map(|a| parse_name("select", a)).transpose()?;
    if let Some(open) = rest.find('(') {
        if !top {
            return Err(RestError::unsupported(
                "embedding deeper than one level (an embed inside an embed)",
            ));
        }
        return parse_embed(alias, &rest[..open], &rest[open..]).map(SelectItem::Embed);
    }
    if rest.contains("::") {
        return Err(RestError::unsupported("casts (::)"));
    }
    Ok(SelectItem::Column {
        col: ColumnRef::parse("select", rest)?,
        alias,
    })
}

fn parse_embed(alias: Option<String>, head: &str, body: &str) -> Result<Embed, RestError> {
    let inner_items = body
        .strip_prefix('(')
        .and_then(|b| b.strip_suffix(')'))
        .ok_or_else(|| bad(body, "an embed is name(columns)"))?;
    let mut parts = head.split('!');
    let name = parse_name("select", parts.next().unwrap_or(""))?;
    let mut e = Embed {
        name,
        alias,
        hint: None,
        inner: false,
        items: parse_items(inner_items, false)?,
    };
    for hint in parts {
        match hint {
            "inner" => e.inner = true,
            "left" => e.inner = false,
            h if e.hint.is_none() => e.hint = Some(parse_name("select", h)?),
            _ => {
                return Err(bad(
                    head,
                    "at most one relation hint and one of !inner, !left",
                ));
            }
        }
    }
    Ok(e)
}
