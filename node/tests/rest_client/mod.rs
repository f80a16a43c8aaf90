//! A small HTTP client for the `/rest/v1` tests in one process (`rest_auth.rs`,
//! `rest_semantics.rs`): it presents a key as supabase-js does (`apikey` and a bearer token) or
//! none (keyless loopback: `service_role`), and reads the answer's status, headers and JSON body.
//! Each test adds the request shapes it needs in its own `impl Client` block.

#![allow(dead_code)] // Each test binary uses a different subset.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::net::SocketAddr;

use hyper::{HeaderMap, Method, StatusCode};
use meshlite_node::auth::jwt::{sign_claims, sign_key};
use meshlite_node::auth::{Role, unix_now};
use meshlite_node::httpc;
use serde_json::{Value, json};

/// One answer.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// JSON; text that is not JSON (Prometheus `/metrics`) as a string; `Null` when empty.
    pub body: Value,
}

/// A client presenting `key`, or no key.
#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub key: Option<String>,
}

impl Client {
    /// Sends `body` (JSON) with `headers` and the client's key.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let bearer = self.key.as_ref().map(|k| format!("Bearer {k}"));
        let mut all = headers.to_vec();
        if let (Some(k), Some(b)) = (&self.key, &bearer) {
            all.push(("apikey", k.as_str()));
            all.push(("authorization", b.as_str()));
        }
        let body = body.map(|b| b.to_string().into_bytes());
        let (status, headers, bytes) = httpc::request_with(self.addr, method, path, &all, body)
            .await
            .unwrap()
            .into_parts();
        let body = match bytes.is_empty() {
            true => Value::Null,
            false => serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())),
        };
        Answer {
            status,
            headers,
            body,
        }
    }
}

/// A key for `role`, signed with `secret`, valid for an hour.
pub fn role_key(secret: &str, role: Role) -> String {
    sign_key(secret, role, unix_now(), 3600).unwrap()
}

/// An `authenticated` token of user `sub`, signed with `secret`, valid for an hour.
pub fn user_key(secret: &str, sub: &str) -> String {
    let claims = json!({"role": "authenticated", "sub": sub, "exp": unix_now() + 3600});
    sign_claims(secret, &claims).unwrap()
}
