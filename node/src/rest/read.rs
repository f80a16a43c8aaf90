//! `GET` (and `HEAD`) `/rest/v1/{table}`: filter, order, join embeds, page, count, shape.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::embed::Embeds;
use super::error::RestError;
use super::filter::Plan;
use super::prefer::Prefer;
use super::query::{UrlQuery, parse_range, parse_raw};
use super::response::{Accept, rows};
use super::rows::matching;
use super::table::Table;
use crate::auth::{Action, Caller};
use crate::state::AppState;

/// The page a request asks for: the intersection of `offset`/`limit` and the `Range` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First row (0-based).
    pub start: u64,
    /// One past the last row, when bounded.
    pub end: Option<u64>,
}

impl Window {
    /// From the URL and the `Range` header.
    pub fn new(q: &UrlQuery, headers: &HeaderMap) -> Result<Self, RestError> {
        let mut w = Window {
            start: q.offset,
            end: q.limit.map(|l| q.offset.saturating_add(l)),
        };
        if let Some(range) = headers.get("range") {
            let range = range.to_str().unwrap_or("");
            let (start, limit) = parse_range(range)?;
            let end = limit.map(|l| start.saturating_add(l));
            w.start = w.start.max(start);
            w.end = match (w.end, end) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(w)
    }

    /// The rows of the page.
    pub fn slice<T>(self, rows: Vec<T>) -> Vec<T> {
        let start = usize::try_from(self.start).unwrap_or(usize::MAX);
        let take = self.end.map_or(usize::MAX, |e| {
            usize::try_from(e.saturating_sub(self.start)).unwrap_or(usize::MAX)
        });
        rows.into_iter().skip(start).take(take).collect()
    }
}

/// `Content-Range` for a page of `len` rows starting at `start`, of `total` when counted.
pub fn content_range(start: u64, len: usize, total: Option<usize>) -> String {
    let total = total.map_or("*".to_owned(), |t| t.to_string());
    match len {
        0 => format!("*/{total}"),
        n => format!("{start}-{}/{total}", start + n as u64 - 1),
    }
}

/// The handler.
pub async fn select(
    State(s): State<AppState>,
    caller: Caller,
    Path(collection): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let schema = s.store.schema();
    let table = Table::resolve(&schema, &collection)?.authorize(&caller, Action::Read)?;
    let q = parse_raw(raw.as_deref())?;
    let plan = Plan::bind(&table, &q)?;
    let embeds = Embeds::bind(&schema, &caller, &table, &q)?;
    let window = Window::new(&q, &headers)?;
    let accept = Accept::from_headers(&headers)?;
    let prefer = Prefer::from_headers(&headers);
    let matched = matching(&s.store, &table, &plan).await?;
    let matched = embeds.join(&s.store, matched).await?;
    let total = matched.len();
    if prefer.count && window.start > total as u64 {
        return Err(RestError::bad_range(format!(
            "An offset of {} was requested, but there are only {total} rows.",
            window.start
        )));
    }
    let page: Vec<Value> = window
        .slice(matched)
        .into_iter()
        .filter_map(|(row, embedded)| {
            let mut out = table.project(&q.select, row.as_object()?);
            if let Value::Object(o) = &mut out {
                o.extend(embedded);
            }
            Some(out)
        })
        .collect();
    let partial = window.start > 0 || window.start + (page.len() as u64) < total as u64;
    let status = if prefer.count && partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let range = content_range(window.start, page.len(), prefer.count.then_some(total));
    let columns = table.column_names(&q.select, page.first());
    rows(status, accept, (columns, page), Some(range))
}
