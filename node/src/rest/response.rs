//! Success answers: the negotiated media type (`Accept`) and rows as a JSON array, as one
//! object for `application/vnd.pgrst.object+json` (406 PGRST116 unless exactly one row), or
//! as `text/csv` (`csv`).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::RestError;

const OBJECT: &str = "application/vnd.pgrst.object+json";

/// What the client accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    /// A JSON array of rows.
    Array,
    /// Exactly one row, as an object.
    Object,
    /// `text/csv`.
    Csv,
}

impl Accept {
    /// Reads `Accept`; the first media range this node can produce wins. PGRST107 when none.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, RestError> {
        let Some(accept) = headers.get(header::ACCEPT) else {
            return Ok(Accept::Array);
        };
        let accept = accept.to_str().unwrap_or("");
        for range in accept.split(',') {
            let media = range.split(';').next().unwrap_or("").trim();
            match media {
                OBJECT | "application/vnd.pgrst.object" => return Ok(Accept::Object),
                "text/csv" => return Ok(Accept::Csv),
                "" | "*/*" | "application/*" | "application/json" => return Ok(Accept::Array),
                _ => {}
            }
        }
        Err(RestError::not_acceptable(accept))
    }
}

/// `rows` with `status`, shaped by `accept`, plus a `Content-Range` when given; `columns`
/// orders CSV's columns.
pub fn rows(
    status: StatusCode,
    accept: Accept,
    (columns, rows): (Vec<String>, Vec<Value>),
    content_range: Option<String>,
) -> Result<Response, RestError> {
    if accept == Accept::Csv {
        return Ok(with_headers(
            (status, super::csv::to_csv(&columns, &rows)).into_response(),
            "text/csv; charset=utf-8",
            content_range,
        ));
    }
    let (body, media) = match accept {
        Accept::Array => (Value::Array(rows), "application/json; charset=utf-8"),
        Accept::Object if rows.len() == 1 => {
            let row = rows.into_iter().next().unwrap_or(Value::Null);
            (row, "application/vnd.pgrst.object+json; charset=utf-8")
        }
        Accept::Object | Accept::Csv => return Err(RestError::not_one(rows.len())),
    };
    let r = (status, axum::Json(body)).into_response();
    Ok(with_headers(r, media, content_range))
}

fn with_headers(mut r: Response, media: &'static str, content_range: Option<String>) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    if let Some(range) = content_range.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::CONTENT_RANGE, range);
    }
    r
}

/// No body (`Prefer: return=minimal`).
pub fn empty(status: StatusCode) -> Response {
    status.into_response()
}
