//! [`AuthError`]: every way a request can fail authentication or authorization, answered in
//! PostgREST's JSON shape `{code, message, details, hint}` with its codes and statuses
//! (PostgREST `Error.hs`): PGRST300 (500) no secret, PGRST301 (401) a token that does not
//! decode or verify, PGRST302 (401) no key where one is required, PGRST303 (401) bad claims,
//! 22023 (401) a role that does not exist, 42501 (403) a role without the permission. 401s
//! carry PostgREST's `WWW-Authenticate` header.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::access::Denied;
use super::jwt::TokenError;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A request that needs a key came from outside loopback while auth is off (the start-up
    /// check makes this unreachable unless the listener was bound behind its back).
    #[error("Server lacks JWT secret")]
    SecretMissing,
    /// No key, and keyless requests are not trusted from where it came.
    #[error("Anonymous access is disabled")]
    Required,
    /// A key or token that is not valid.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A valid token whose `role` is none of `anon`, `authenticated`, `service_role`.
    #[error("role \"{0}\" does not exist")]
    UnknownRole(String),
    /// The caller's role may not do this.
    #[error(transparent)]
    Denied(#[from] Denied),
}

impl AuthError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::SecretMissing => StatusCode::INTERNAL_SERVER_ERROR,
            AuthError::Denied(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The PostgREST or SQLSTATE code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::SecretMissing => "PGRST300",
            AuthError::Required => "PGRST302",
            AuthError::Token(t) => t.code(),
            AuthError::UnknownRole(_) => "22023",
            AuthError::Denied(_) => "42501",
        }
    }

    /// PostgREST's `details`.
    pub fn details(&self) -> Option<String> {
        match self {
            AuthError::Token(t) => t.details(),
            AuthError::Denied(d) => d.details(),
            _ => None,
        }
    }

    /// What to do next, when it is not obvious.
    pub fn hint(&self) -> Option<String> {
        match self {
            AuthError::Required => {
                Some("send the anon or service_role key as `apikey` (see `meshlite keys`)".into())
            }
            AuthError::SecretMissing => {
                Some("set JWT_SECRET or keep the listener on loopback".into())
            }
            _ => None,
        }
    }

    /// PostgREST's `WWW-Authenticate` for 401s.
    fn www_authenticate(&self) -> Option<String> {
        match self {
            AuthError::Required => Some("Bearer".into()),
            AuthError::Token(t) => Some(format!(
                "Bearer error=\"invalid_token\", error_description={:?}",
                t.to_string()
            )),
            _ => None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "code": self.code(),
            "details": self.details(),
            "hint": self.hint(),
            "message": self.to_string(),
        })
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let mut r = (self.status(), axum::Json(self.body())).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if let Some(v) = self
            .www_authenticate()
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            h.insert(header::WWW_AUTHENTICATE, v);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_are_postgrests() {
        let expired = AuthError::Token(TokenError::Expired);
        assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(expired.code(), "PGRST303");
        assert_eq!(expired.body()["message"], "JWT expired");
        assert_eq!(
            expired.www_authenticate().as_deref(),
            Some("Bearer error=\"invalid_token\", error_description=\"JWT expired\"")
        );
        let forged = AuthError::Token(TokenError::Signature);
        assert_eq!(forged.code(), "PGRST301");
        assert_eq!(AuthError::Required.code(), "PGRST302");
        assert_eq!(
            AuthError::SecretMissing.status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let role = AuthError::UnknownRole("postgres".into());
        assert_eq!(
            (role.status(), role.code()),
            (StatusCode::UNAUTHORIZED, "22023")
        );
        assert_eq!(role.body()["message"], "role \"postgres\" does not exist");
    }
}
