//! Filters and logic trees: `col=[not.]op.value` and `or=(...)`, `and=(...)`, `not.or=(...)`,
//! nested (`or=(a.eq.1,and(b.gt.2,c.not.is.null))`). In a tree a value may be double-quoted
//! to hold commas or parentheses (`name.eq."a, (b)"`, `\` escapes inside quotes). Pure parsing:
//! operands stay text until bound to a column's type (`filter`). Every failure is PGRST100.

use super::error::RestError;
use super::lex::{MAX_DEPTH, MAX_FILTERS, MAX_LIST, clip, split_top, unquote};
use super::path::ColumnRef;

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

/// Containment between JSON values (Postgres' jsonb `@>`, `<@` and array `&&`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetOp {
    /// `cs`: the value contains the operand.
    Contains,
    /// `cd`: the value is contained in the operand.
    ContainedIn,
    /// `ov`: the value and the operand share an element.
    Overlaps,
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
    /// `match` / `imatch`: a POSIX-style regular expression search (`~`, `~*`).
    Match {
        /// The expression.
        pattern: String,
        /// `imatch`.
        case_insensitive: bool,
    },
    /// `in.(a,b,"c,d")`.
    In(Vec<String>),
    /// `is.null|true|false|unknown`.
    Is(IsValue),
    /// `cs`, `cd`, `ov` with a JSON operand or an array literal `{a,b}`.
    Set(SetOp, String),
}

/// `column=[not.]op.value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// The column (or JSON path).
    pub column: ColumnRef,
    /// `not.` prefix.
    pub negate: bool,
    /// The operator.
    pub op: Op,
}

/// A condition: one filter or a group of conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    /// `column=op.value`.
    Filter(Filter),
    /// `or(...)` / `and(...)`.
    Group(Group),
}

/// `[not.]or(...)` or `[not.]and(...)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// `or` (any holds) rather than `and` (all hold).
    pub any: bool,
    /// `not.` prefix.
    pub negate: bool,
    /// The members (at least one).
    pub conds: Vec<Cond>,
}

impl Cond {
    /// The number of filters in this condition.
    pub fn leaves(&self) -> usize {
        match self {
            Cond::Filter(_) => 1,
            Cond::Group(g) => g.conds.iter().map(Cond::leaves).sum(),
        }
    }
}

fn bad(what: &str, s: &str, details: impl Into<String>) -> RestError {
    RestError::parse(format!("failed to parse {what} ({})", clip(s)), details)
}

/// The value of a top-level `or=` / `and=` / `not.or=` / `not.and=` parameter.
pub fn parse_group(key: &str, value: &str) -> Result<Group, RestError> {
    let (negate, name) = match key.strip_prefix("not.") {
        Some(k) => (true, k),
        None => (false, key),
    };
    let inner = value
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| {
            bad(
                "logic tree",
                value,
                "expected a parenthesized list: or=(a.eq.1,b.eq.2)",
            )
        })?;
    group(name == "or", negate, inner, 1)
}

fn group(any: bool, negate: bool, inner: &str, depth: usize) -> Result<Group, RestError> {
    if depth > MAX_DEPTH {
        return Err(bad(
            "logic tree",
            inner,
            format!("nested deeper than {MAX_DEPTH}"),
        ));
    }
    let items = split_top(inner).map_err(|d| bad("logic tree", inner, d))?;
    let conds = items
        .into_iter()
        .map(|item| member(item.trim(), depth))
        .collect::<Result<Vec<_>, _>>()?;
    let g = Group { any, negate, conds };
    if Cond::Group(g.clone()).leaves() > MAX_FILTERS {
        let d = format!("at most {MAX_FILTERS} filters per request");
        return Err(bad("logic tree", inner, d));
    }
    Ok(g)
}

/// One member of a tree: `[not.]or(...)`, `[not.]and(...)` or `column.[not.]op.value`.
fn member(item: &str, depth: usize) -> Result<Cond, RestError> {
    let (negate, rest) = match item.strip_prefix("not.") {
        Some(r) if r.starts_with("or(") || r.starts_with("and(") => (true, r),
        _ => (false, item),
    };
    for (name, any) in [("or(", true), ("and(", false)] {
        if let Some(body) = rest.strip_prefix(name) {
            let body = body
                .strip_suffix(')')
                .ok_or_else(|| bad("logic tree", item, "unclosed \"(\""))?;
            return group(any, negate, body, depth + 1).map(Cond::Group);
        }
    }
    let Some((column, condition)) = item.split_once('.') else {
        return Err(bad(
            "logic tree",
            item,
            "expected column.operator.value, or(...) or and(...)",
        ));
    };
    parse_filter(column, condition, true).map(Cond::Filter)
}

/// `column` = `[not.]op.value`. In a logic tree (`in_tree`) a value may be double-quoted.
pub fn parse_filter(column: &str, value: &str, in_tree: bool) -> Result<Filter, RestError> {
    let column = ColumnRef::parse("filter", column)?;
    let bad = |details: &str| bad("filter", value, details.to_owned());
    let (negate, rest) = match value.strip_prefix("not.") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let Some((op, operand)) = rest.split_once('.') else {
        return Err(bad("expected [not.]operator.value, e.g. eq.5"));
    };
    let operand = match in_tree && op != "in" {
        true => unquote(operand),
        false => operand.to_owned(),
    };
    let op = match op {
        "eq" => Op::Cmp(CmpOp::Eq, operand),
        "neq" => Op::Cmp(CmpOp::Neq, operand),
        "gt" => Op::Cmp(CmpOp::Gt, operand),
        "gte" => Op::Cmp(CmpOp::Gte, operand),
        "lt" => Op::Cmp(CmpOp::Lt, operand),
        "lte" => Op::Cmp(CmpOp::Lte, operand),
        "like" | "ilike" => Op::Like {
            pattern: operand.replace('*', "%"),
            case_insensitive: op == "ilike",
        },
        "match" | "imatch" => Op::Match {
            pattern: operand,
            case_insensitive: op == "imatch",
        },
        "in" => Op::In(parse_in_list(&operand).map_err(|d| bad(&d))?),
        "is" => Op::Is(match operand.to_ascii_lowercase().as_str() {
            "null" => IsValue::Null,
            "true" => IsValue::True,
            "false" => IsValue::False,
            "unknown" => IsValue::Unknown,
            _ => return Err(bad("is. takes null, true, false or unknown")),
        }),
        "cs" => Op::Set(SetOp::Contains, operand),
        "cd" => Op::Set(SetOp::ContainedIn, operand),
        "ov" => Op::Set(SetOp::Overlaps, operand),
        "fts" | "plfts" | "phfts" | "wfts" => {
            return Err(RestError::unsupported(&format!(
                "full-text search ({op}): this node has no text search configuration"
            )));
        }
        "sl" | "sr" | "nxl" | "nxr" | "adj" => {
            return Err(RestError::unsupported(&format!("the range operator {op}")));
        }
        "isdistinct" | "all" | "any" => {
            return Err(RestError::unsupported(&format!("the {op} operator")));
        }
        _ => {
            return Err(bad(
                "unknown operator; expected eq, neq, gt, gte, lt, lte, like, ilike, match, imatch, in, is, cs, cd or ov",
            ));
        }
    };
    Ok(Filter { column, negate, op })
}

/// `(a,b,"c,d")`: values may be double-quoted (then `\` escapes the next character).
pub fn parse_in_list(s: &str) -> Result<Vec<String>, String> {
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or("in. takes a parenthesized list, e.g. in.(1,2,3)")?;
    parse_list(inner)
}

/// Comma-separated values, each possibly double-quoted (then `\` escapes the next character).
pub fn parse_list(inner: &str) -> Result<Vec<String>, String> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn nested_trees_parse() {
        let g = parse_group(
            "or",
            r#"(a.eq.1,and(b.gt.2,c.not.is.null),not.or(d.in.("x,y",z),e.eq."p, (q)"))"#,
        )
        .unwrap();
        assert!(g.any && !g.negate);
        assert_eq!(g.conds.len(), 3);
        let Cond::Group(and) = &g.conds[1] else {
            panic!()
        };
        assert!(!and.any);
        let Cond::Filter(c) = &and.conds[1] else {
            panic!()
        };
        assert!(c.negate);
        let Cond::Group(not_or) = &g.conds[2] else {
            panic!()
        };
        assert!(not_or.negate && not_or.any);
        let Cond::Filter(d) = &not_or.conds[0] else {
            panic!()
        };
        assert_eq!(d.op, Op::In(vec!["x,y".into(), "z".into()]));
        let Cond::Filter(e) = &not_or.conds[1] else {
            panic!()
        };
        assert_eq!(e.op, Op::Cmp(CmpOp::Eq, "p, (q)".into()));
        let j = parse_group("not.and", "(data->>k.eq.v,data->n.gt.3)").unwrap();
        assert!(j.negate);
        for bad in [
            "a.eq.1",
            "(a.eq.1",
            "(a)",
            "(a.zz.1)",
            "(or(a.eq.1)",
            "(a.eq.\"x)",
            "()",
        ] {
            assert_eq!(
                parse_group("or", bad).unwrap_err().code,
                "PGRST100",
                "{bad}"
            );
        }
        let deep = format!("({}a.eq.1{})", "or(".repeat(30), ")".repeat(30));
        assert_eq!(parse_group("or", &deep).unwrap_err().code, "PGRST100");
    }
}
