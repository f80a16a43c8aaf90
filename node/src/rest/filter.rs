//! Evaluating a [`UrlQuery`] over JSON rows: filters (and `or`/`and` trees), order and
//! paging, in Rust.
//!
//! Cost: the plan runs over the candidate rows `pushdown` reads — one record for `key=eq.v`,
//! the rows top-level equalities on `text`/`integer` columns select through the store (its
//! index for `indexed` columns), else every live row — O(candidates) per request, plus a sort.
//! Pushing `order`, limits and other operators down to the store's SQL is left for later; the
//! semantics below are what any pushdown must preserve.
//!
//! Values compare as `keys` describes (declared types, else JSON types). A JSON path with a
//! final `->>` is text; with `->` it is JSON (compared by the value's own type). A path into a
//! column of another declared type is 42883, as Postgres answers. An operand the type cannot
//! hold is 22P02. A null (or absent) value satisfies no comparison, pattern, `in` or
//! containment, negated or not (SQL's three-valued logic, through `or`/`and`/`not` too); only
//! `is` tests it. Sorting is stable, so ties keep the store's order (insertion order); nulls
//! sort last ascending and first descending unless `nullsfirst`/`nullslast` says otherwise.
//! `match`/`imatch` use the `regex` crate (linear time; Perl-style syntax, close to POSIX for
//! common expressions); an expression it rejects is 2201B.

use std::cmp::Ordering;

use meshlite_core::schema::FieldType;
use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use super::error::RestError;
use super::jsonset::SetOperand;
use super::keys::{Key, coerce, like, row_key, text_of, typed_operand};
use super::logic::{CmpOp, Cond, Filter, IsValue, Op};
use super::query::{OrderTerm, UrlQuery};
use super::table::Table;

/// Largest compiled `match` expression.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A filter bound to a column type.
#[derive(Clone, Debug)]
struct Bound {
    filter: Filter,
    ty: Option<FieldType>,
    /// Typed operands (one for comparisons, the list for `in`); empty for untyped columns.
    operands: Vec<Key>,
    /// The operand of `cs`/`cd`/`ov`.
    set: Option<SetOperand>,
    /// The expression of `match`/`imatch`.
    regex: Option<Regex>,
}

impl Bound {
    fn new(table: &Table, filter: &Filter) -> Result<Self, RestError> {
        let ty = table.ref_type(&filter.column)?;
        let raws: Vec<&str> = match &filter.op {
            Op::Cmp(_, raw) => vec![raw],
            Op::In(list) => list.iter().map(String::as_str).collect(),
            _ => vec![],
        };
        let operands = raws
            .into_iter()
            .filter_map(|r| typed_operand(ty, r).transpose())
            .collect::<Result<_, _>>()?;
        let set = match &filter.op {
            Op::Set(op, raw) => {
                if let Some(t) = ty.filter(|t| *t != FieldType::Json) {
                    return Err(RestError::no_operator(set_symbol(*op), t));
                }
                let parsed =
                    SetOperand::parse(raw).ok_or_else(|| RestError::invalid_input("json", raw))?;
                Some(parsed)
            }
            _ => None,
        };
        let regex = match &filter.op {
            Op::Match {
                pattern,
                case_insensitive,
            } => Some(
                RegexBuilder::new(pattern)
                    .case_insensitive(*case_insensitive)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| RestError::bad_regex(&e.to_string()))?,
            ),
            _ => None,
        };
        Ok(Self {
            filter: filter.clone(),
            ty,
            operands,
            set,
            regex,
        })
    }

    fn operand(&self, i: usize, raw: &str, row: &Key) -> Key {
        self.operands
            .get(i)
            .cloned()
            .unwrap_or_else(|| coerce(raw, row))
    }

    /// SQL three-valued: `None` is unknown (a null value).
    fn eval(&self, row: &Map<String, Value>) -> Option<bool> {
        let v = self.filter.column.resolve(row);
        let result = match (&self.filter.op, &v) {
            (Op::Is(is), v) => Some(match is {
                IsValue::Null | IsValue::Unknown => v.is_null(),
                IsValue::True => v == &Value::Bool(true),
                IsValue::False => v == &Value::Bool(false),
            }),
            (_, Value::Null) => None,
            (Op::Cmp(op, raw), v) => {
                let k = row_key(self.ty, v);
                let o = k.cmp(&self.operand(0, raw, &k));
                Some(match op {
                    CmpOp::Eq => o.is_eq(),
                    CmpOp::Neq => o.is_ne(),
                    CmpOp::Gt => o.is_gt(),
                    CmpOp::Gte => o.is_ge(),
                    CmpOp::Lt => o.is_lt(),
                    CmpOp::Lte => o.is_le(),
                })
            }
            (Op::In(list), v) => {
                let k = row_key(self.ty, v);
                let mut it = list.iter().enumerate();
                Some(it.any(|(i, raw)| k.cmp(&self.operand(i, raw, &k)).is_eq()))
            }
            (
                Op::Like {
                    pattern,
                    case_insensitive,
                },
                v,
            ) => Some(like(&text_of(v), pattern, *case_insensitive)),
            (Op::Match { .. }, v) => self.regex.as_ref().map(|r| r.is_match(&text_of(v))),
            (Op::Set(op, _), v) => self.set.as_ref().map(|s| s.holds(*op, v)),
        };
        result.map(|b| b != self.filter.negate)
    }
}

fn set_symbol(op: super::logic::SetOp) -> &'static str {
    match op {
        super::logic::SetOp::Contains => "@>",
        super::logic::SetOp::ContainedIn => "<@",
        super::logic::SetOp::Overlaps => "&&",
    }
}

/// A condition bound to a table.
#[derive(Clone, Debug)]
enum BoundCond {
    Leaf(Bound),
    Group {
        any: bool,
        negate: bool,
        conds: Vec<BoundCond>,
    },
}

impl BoundCond {
    fn new(table: &Table, c: &Cond) -> Result<Self, RestError> {
        Ok(match c {
            Cond::Filter(f) => BoundCond::Leaf(Bound::new(table, f)?),
            Cond::Group(g) => BoundCond::Group {
                any: g.any,
                negate: g.negate,
                conds: g
                    .conds
                    .iter()
                    .map(|c| BoundCond::new(table, c))
                    .collect::<Result<_, _>>()?,
            },
        })
    }

    /// SQL's three-valued `AND`/`OR`/`NOT`.
    fn eval(&self, row: &Map<String, Value>) -> Option<bool> {
        let BoundCond::Group { any, negate, conds } = self else {
            let BoundCond::Leaf(b) = self else {
                return None;
            };
            return b.eval(row);
        };
        let mut unknown = false;
        for c in conds {
            match c.eval(row) {
                Some(v) if v == *any => return Some(*any != *negate),
                Some(_) => {}
                None => unknown = true,
            }
        }
        (!unknown).then_some(*any == *negate)
    }
}

/// A top-level `column=eq.value` filter of a [`Plan`].
#[derive(Clone, Copy, Debug)]
pub struct Equality<'a> {
    /// The column.
    pub column: &'a str,
    /// Its declared type.
    pub ty: Option<FieldType>,
    /// The operand typed for the column (`None` for untyped columns).
    pub operand: Option<&'a Key>,
    /// The operand as the URL gave it.
    pub raw: &'a str,
}

/// A [`UrlQuery`] bound to a table: column names checked, operands typed.
#[derive(Clone, Debug)]
pub struct Plan {
    filters: Vec<BoundCond>,
    order: Vec<(OrderTerm, Option<FieldType>)>,
}

impl Plan {
    /// Binds `q` to `table`: 42703 for an unknown column, 22P02 for an operand of the wrong type.
    /// Embedded selections and filters are bound by `embed`, not here.
    pub fn bind(table: &Table, q: &UrlQuery) -> Result<Self, RestError> {
        table.check_select(&q.select)?;
        Self::bind_filters(table, &q.filters, &q.order)
    }

    /// Binds conditions and order terms only.
    pub fn bind_filters(
        table: &Table,
        filters: &[Cond],
        order: &[OrderTerm],
    ) -> Result<Self, RestError> {
        let filters = filters
            .iter()
            .map(|c| BoundCond::new(table, c))
            .collect::<Result<_, _>>()?;
        let order = order
            .iter()
            .map(|t| Ok((t.clone(), table.ref_type(&t.column)?)))
            .collect::<Result<_, RestError>>()?;
        Ok(Self { filters, order })
    }

    /// The plain `column=eq.value` filters at the top level (every row the plan keeps satisfies
    /// each of them): what `pushdown` may hand to the store.
    pub fn top_equalities(&self) -> Vec<Equality<'_>> {
        self.filters
            .iter()
            .filter_map(|c| {
                let BoundCond::Leaf(b) = c else { return None };
                let Op::Cmp(CmpOp::Eq, raw) = &b.filter.op else {
                    return None;
                };
                (!b.filter.negate && b.filter.column.is_plain()).then(|| Equality {
                    column: &b.filter.column.column,
                    ty: b.ty,
                    operand: b.operands.first(),
                    raw,
                })
            })
            .collect()
    }

    /// True when every filter holds for `row`.
    pub fn matches(&self, row: &Value) -> bool {
        let Some(row) = row.as_object() else {
            return false;
        };
        self.filters.iter().all(|f| f.eval(row) == Some(true))
    }

    /// Keeps the matching rows, then sorts them (stably) by `order`.
    pub fn apply(&self, rows: Vec<Value>) -> Vec<Value> {
        let mut rows: Vec<Value> = rows.into_iter().filter(|r| self.matches(r)).collect();
        if !self.order.is_empty() {
            rows.sort_by(|a, b| self.compare(a, b));
        }
        rows
    }

    fn compare(&self, a: &Value, b: &Value) -> Ordering {
        for (term, ty) in &self.order {
            let get = |r: &Value| {
                r.as_object()
                    .map(|r| term.column.resolve(r))
                    .filter(|v| !v.is_null())
            };
            let o = match (get(a), get(b)) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) if term.nulls_first => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) if term.nulls_first => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(x), Some(y)) => {
                    let o = row_key(*ty, &x).cmp(&row_key(*ty, &y));
                    if term.desc { o.reverse() } else { o }
                }
            };
            if o.is_ne() {
                return o;
            }
        }
        Ordering::Equal
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
