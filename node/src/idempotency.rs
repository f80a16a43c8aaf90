//! The `Idempotency-Key` header of the native API's writes (`/v1`): a client that
//! retries a write after a lost reply sends the same key and the write applies once.
//!
//! [`IdemHeader`] extracts the key with the request's method and URI; the handler adds the body
//! ([`IdemHeader::with_body`]) and the store keeps the key, a BLAKE3 fingerprint of
//! method + URI + body and the JSON answer in the same SQLite transaction as the write
//! (`meshlite_core::store::idempotency`). A retry with the same key and request gets the first
//! answer with `Idempotent-Replayed: true`; the same key with another request is refused with 422.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, Method, StatusCode, Uri};
use meshlite_core::store::{Committed, IdempotencyKey};

/// The request header.
pub static HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// The response header set on a replayed answer.
pub static REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The `Idempotency-Key` of a request (None without the header), with what its fingerprint
/// covers besides the body.
#[derive(Debug, Clone)]
pub struct IdemHeader(Option<(String, Method, Uri)>);

impl<S: Send + Sync> FromRequestParts<S> for IdemHeader {
    type Rejection = (StatusCode, axum::Json<serde_json::Value>);

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(&HEADER) else {
            return Ok(Self(None));
        };
        let key = value.to_str().map_err(|_| {
            let body = serde_json::json!({
                "error": "invalid idempotency key: expected visible ASCII characters"
            });
            (StatusCode::BAD_REQUEST, axum::Json(body))
        })?;
        Ok(Self(Some((
            key.to_owned(),
            parts.method.clone(),
            parts.uri.clone(),
        ))))
    }
}

impl IdemHeader {
    /// The store's key for this request and `body`, rendering answers with `render`; None
    /// without the header.
    pub fn with_body(
        &self,
        body: &[u8],
        render: fn(&Committed) -> Vec<u8>,
    ) -> Option<Result<IdempotencyKey, meshlite_core::store::WriteError>> {
        let (key, method, uri) = self.0.as_ref()?;
        Some(IdempotencyKey::new(
            key,
            fingerprint(method, uri, body),
            render,
        ))
    }
}

/// BLAKE3 of method, URI (path and query) and body, each length-prefixed.
fn fingerprint(method: &Method, uri: &Uri, body: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    let path = uri.path_and_query().map_or("", |p| p.as_str());
    for part in [method.as_str().as_bytes(), path.as_bytes(), body] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_covers_method_uri_and_body() {
        let uri = |s: &str| s.parse::<Uri>().unwrap_or_else(|e| panic!("{e}"));
        let base = fingerprint(&Method::POST, &uri("/v1/t/a/incr"), b"{}");
        assert_eq!(
            base,
            fingerprint(&Method::POST, &uri("/v1/t/a/incr"), b"{}")
        );
        assert_ne!(base, fingerprint(&Method::PUT, &uri("/v1/t/a/incr"), b"{}"));
        assert_ne!(
            base,
            fingerprint(&Method::POST, &uri("/v1/t/b/incr"), b"{}")
        );
        assert_ne!(
            base,
            fingerprint(&Method::POST, &uri("/v1/t/a/incr"), b"{ }")
        );
    }
}
