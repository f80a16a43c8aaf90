//! HS256 JSON Web Tokens: verification as PostgREST does it (its messages, its 30 s clock skew)
//! and signing for `meshlite keys`. The clock is a parameter (`now`, Unix seconds), so every
//! rule is tested without waiting.
//!
//! Verification order: three dot-separated parts; the header's `alg` must be `HS256` (so
//! `alg: none` and every asymmetric or other-size algorithm are refused before any signature
//! code runs); the signature (jsonwebtoken over ring); then the claims: `exp`, `nbf`, `iat` must
//! be numbers when present, `exp` not past, `nbf` and `iat` not in the future; `aud` is not
//! checked (no audience is configured, as PostgREST without `jwt-aud`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use super::Role;

/// Seconds of clock skew tolerated on `exp`, `nbf` and `iat` (PostgREST's allowance).
pub const CLOCK_SKEW_SECONDS: i64 = 30;

/// The shortest accepted secret (PostgREST and GoTrue refuse shorter HS256 secrets).
pub const MIN_SECRET_LEN: usize = 32;

/// Why a token was refused. The messages are PostgREST's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// `Authorization: Bearer` with nothing after it.
    #[error("Empty JWT is sent in Authorization header")]
    Empty,
    /// Not `header.payload.signature`.
    #[error("Expected 3 parts in JWT; got {0}")]
    Parts(usize),
    /// The header is not base64url JSON with an `alg`.
    #[error("JWT couldn't be decoded")]
    Undecodable,
    /// An `alg` other than HS256 (`none` included).
    #[error("Wrong or unsupported encoding algorithm")]
    Algorithm(String),
    /// The signature does not match the secret.
    #[error("JWT cryptographic operation failed")]
    Signature,
    /// The payload is not a JSON object.
    #[error("Parsing claims failed")]
    Claims,
    /// A time claim that is not a number.
    #[error("The JWT '{0}' claim must be a number")]
    NotANumber(&'static str),
    /// `exp` is past.
    #[error("JWT expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("JWT not yet valid")]
    NotYetValid,
    /// `iat` is in the future.
    #[error("JWT issued at future")]
    IssuedInFuture,
}

impl TokenError {
    /// PostgREST's code: PGRST301 for tokens that do not decode or verify, PGRST303 for claims.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Empty
            | TokenError::Parts(_)
            | TokenError::Undecodable
            | TokenError::Algorithm(_)
            | TokenError::Signature => "PGRST301",
            _ => "PGRST303",
        }
    }

    /// PostgREST's `details`, when it gives any.
    pub fn details(&self) -> Option<String> {
        match self {
            TokenError::Algorithm(alg) => Some(format!(
                "alg {alg:?} is not accepted: this node verifies HS256 tokens only"
            )),
            _ => None,
        }
    }
}

/// The claims the node uses from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The `role` claim (`anon` when absent, as Supabase's PostgREST defaults it).
    pub role: RoleClaim,
    /// The `sub` claim (the user id), when it is a string.
    pub sub: Option<String>,
}

/// A `role` claim: one of the three roles, or a name no role has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleClaim {
    /// A known role.
    Known(Role),
    /// Any other value (PostgREST would fail `SET ROLE`).
    Unknown(String),
}

/// Verifies tokens signed with one HS256 secret.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(HS256, secret redacted)")
    }
}

impl Verifier {
    /// A verifier for `secret` (its bytes, as GoTrue and PostgREST use a text secret).
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Time claims are checked in `check_times` with PostgREST's messages and skew.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// The token's claims, when it is a valid HS256 token for this secret at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Verified, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        let parts = token.split('.').count();
        if parts != 3 {
            return Err(TokenError::Parts(parts));
        }
        check_alg(token)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => TokenError::Signature,
            ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => TokenError::Claims,
            _ => TokenError::Undecodable,
        })?;
        let claims = data.claims;
        check_times(&claims, now)?;
        Ok(Verified {
            role: role_of(&claims),
            sub: claims.get("sub").and_then(Value::as_str).map(str::to_owned),
        })
    }
}

/// Refuses any `alg` but HS256, reading the header before the signature is looked at.
fn check_alg(token: &str) -> Result<(), TokenError> {
    let head = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| TokenError::Undecodable)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Undecodable)?;
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "HS256" => Ok(()),
        Some(Value::String(alg)) => Err(TokenError::Algorithm(alg.clone())),
        _ => Err(TokenError::Undecodable),
    }
}

/// `exp`, `nbf`, `iat`: numbers when present, within [`CLOCK_SKEW_SECONDS`] of `now`.
fn check_times(claims: &Map<String, Value>, now: i64) -> Result<(), TokenError> {
    let time = |name: &'static str| -> Result<Option<i64>, TokenError> {
        match claims.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))),
            Some(_) => Err(TokenError::NotANumber(name)),
        }
    };
    if time("exp")?.is_some_and(|exp| now - CLOCK_SKEW_SECONDS > exp) {
        return Err(TokenError::Expired);
    }
    if time("nbf")?.is_some_and(|nbf| now + CLOCK_SKEW_SECONDS < nbf) {
        return Err(TokenError::NotYetValid);
    }
    if time("iat")?.is_some_and(|iat| now + CLOCK_SKEW_SECONDS < iat) {
        return Err(TokenError::IssuedInFuture);
    }
    Ok(())
}

fn role_of(claims: &Map<String, Value>) -> RoleClaim {
    match claims.get("role") {
        None | Some(Value::Null) => RoleClaim::Known(Role::Anon),
        Some(Value::String(s)) => s
            .parse()
            .map_or_else(|_| RoleClaim::Unknown(s.clone()), RoleClaim::Known),
        Some(other) => RoleClaim::Unknown(other.to_string()),
    }
}

/// Error signing a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The secret is too short to be safe.
    #[error("the JWT secret has {0} characters; use at least {MIN_SECRET_LEN}")]
    ShortSecret(usize),
    /// The signer failed (never for HS256 with a valid key).
    #[error("cannot sign the key: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// A key for `role` as Supabase's generator writes it: `{"role", "iss": "supabase", "iat",
/// "exp"}`, HS256 with `secret`, valid from `now` for `expiry_seconds`.
pub fn sign_key(
    secret: &str,
    role: Role,
    now: i64,
    expiry_seconds: u64,
) -> Result<String, SignError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(SignError::ShortSecret(secret.len()));
    }
    let exp = now.saturating_add(i64::try_from(expiry_seconds).unwrap_or(i64::MAX));
    let claims = serde_json::json!({
        "role": role.as_str(),
        "iss": "supabase",
        "iat": now,
        "exp": exp,
    });
    sign_claims(secret, &claims)
}

/// Signs arbitrary claims with HS256 (tests sign user tokens with a `sub` this way).
pub fn sign_claims(secret: &str, claims: &Value) -> Result<String, SignError> {
    let key = EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &key,
    )?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    const SECRET: &str = "a-test-secret-of-at-least-32-characters";
    const NOW: i64 = 1_800_000_000;

    fn verify(token: &str) -> Result<Verified, TokenError> {
        Verifier::new(SECRET).verify(token, NOW)
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn a_signed_key_verifies_with_its_role() {
        for role in [Role::Anon, Role::Authenticated, Role::ServiceRole] {
            let key = sign_key(SECRET, role, NOW, 3600).unwrap();
            let v = verify(&key).unwrap();
            assert_eq!(v.role, RoleClaim::Known(role));
            assert_eq!(v.sub, None);
        }
        let user = sign_claims(SECRET, &json!({"role": "authenticated", "sub": "u1"})).unwrap();
        assert_eq!(verify(&user).unwrap().sub.as_deref(), Some("u1"));
        let no_role = sign_claims(SECRET, &json!({"sub": "u1"})).unwrap();
        assert_eq!(verify(&no_role).unwrap().role, RoleClaim::Known(Role::Anon));
        let odd = sign_claims(SECRET, &json!({"role": "postgres"})).unwrap();
        assert_eq!(
            verify(&odd).unwrap().role,
            RoleClaim::Unknown("postgres".into())
        );
    }

    #[test]
    fn time_claims_follow_postgrest_with_its_skew() {
        let at = |claims: Value| verify(&sign_claims(SECRET, &claims).unwrap());
        assert_eq!(at(json!({"exp": NOW - 31})), Err(TokenError::Expired));
        assert!(at(json!({"exp": NOW - 30})).is_ok());
        assert_eq!(at(json!({"nbf": NOW + 31})), Err(TokenError::NotYetValid));
        assert_eq!(
            at(json!({"iat": NOW + 31})),
            Err(TokenError::IssuedInFuture)
        );
        assert_eq!(
            at(json!({"exp": "soon"})),
            Err(TokenError::NotANumber("exp"))
        );
        assert_eq!(TokenError::Expired.code(), "PGRST303");
        let expired = sign_key(SECRET, Role::Anon, NOW - 7200, 3600).unwrap();
        assert_eq!(verify(&expired), Err(TokenError::Expired));
    }

    #[test]
    fn forged_and_malformed_tokens_are_refused() {
        let forged = sign_key(
            "another-secret-of-at-least-32-characters",
            Role::ServiceRole,
            NOW,
            60,
        );
        assert_eq!(verify(&forged.unwrap()), Err(TokenError::Signature));
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&json!({"role": "service_role"}))
        );
        let e = verify(&none).unwrap_err();
        assert_eq!(e, TokenError::Algorithm("none".into()));
        assert_eq!(e.code(), "PGRST301");
        let hs512 = format!("{}.{}.x", b64(&json!({"alg": "HS512"})), b64(&json!({})));
        assert_eq!(verify(&hs512), Err(TokenError::Algorithm("HS512".into())));
        assert_eq!(verify(""), Err(TokenError::Empty));
        assert_eq!(verify("garbage"), Err(TokenError::Parts(1)));
        assert_eq!(verify("a.b"), Err(TokenError::Parts(2)));
        assert_eq!(verify("!!.??.**"), Err(TokenError::Undecodable));
        // A valid signature over a payload that is not a JSON object.
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let list = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &json!([1]), &key);
        assert_eq!(verify(&list.unwrap()), Err(TokenError::Claims));
    }

    #[test]
    fn short_secrets_sign_nothing() {
        assert!(matches!(
            sign_key("short", Role::Anon, NOW, 60),
            Err(SignError::ShortSecret(5))
        ));
    }
}
