//! Supabase-style auth for the node's HTTP surfaces: who is calling ([`Caller`]) and what it may
//! do with a collection ([`Scope`]).
//!
//! # How the parts fit
//!
//! - [`jwt`]: HS256 verification with PostgREST's rules and messages, and key signing for
//!   `meshlite keys`. Sans-IO: the clock is a parameter.
//! - [`Auth`] (this file): the node's settings — the `JWT_SECRET` verifier, the configured
//!   `ANON_KEY` / `SERVICE_ROLE_KEY`, whether loopback is trusted — and
//!   [`Auth::authenticate`], which turns [`Credentials`] and the peer's address into a
//!   [`Caller`]. [`Caller`] is also an axum extractor (the peer address comes from the
//!   `ConnectInfo` the HTTP listener attaches to every request), so a handler takes
//!   `caller: Caller` and a bad token is answered before it runs.
//! - [`access`]: the schema's per-collection `access` table applied to a caller:
//!   [`Caller::authorize`] gives the [`Scope`] of rows it may read or write, or [`Denied`].
//! - [`error`]: [`AuthError`], rendered in PostgREST's JSON shape with its codes and statuses.
//!
//! # Who is who
//!
//! | request                                   | auth off (no `JWT_SECRET`) | auth on           |
//! |-------------------------------------------|----------------------------|-------------------|
//! | from loopback, no key                     | `service_role`             | `service_role` (unless `auth.trust_loopback = false`: 401 PGRST302) |
//! | from elsewhere, no key                    | 500 PGRST300 (unreachable: start-up refuses a public listener) | 401 PGRST302 |
//! | any key                                   | `service_role` (not checked) | the token's `role`, 401 when invalid |
//!
//! A request may carry `apikey` (the project key, as Supabase's gateway reads it) and
//! `Authorization: Bearer` (a user's token, as PostgREST reads it); every key present must be
//! valid, and the bearer token's role wins. A configured `ANON_KEY` or `SERVICE_ROLE_KEY`
//! presented verbatim stands for its role (so opaque, non-JWT keys work too); any other key must
//! be a JWT signed with the secret.
//!
//! Other surfaces (Realtime, the service registry) call [`Auth::authenticate`] with the
//! credentials they read (a websocket's `apikey` query parameter, a join payload's
//! `access_token`) and [`Caller::authorize`] for each collection they serve.

pub mod access;
pub mod error;
pub mod jwt;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use access::{Action, Denied, Scope};
pub use error::AuthError;
pub use jwt::{MIN_SECRET_LEN, RoleClaim, TokenError, Verifier};

/// A JWT role, from the token's `role` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The public key: what the schema's `access.anon` grants.
    Anon,
    /// A signed-in user (its `sub` is the user id): `access.authenticated` and the owner rule.
    Authenticated,
    /// Everything, as Supabase's `bypassrls` service role.
    ServiceRole,
}

impl Role {
    /// The claim's text.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Anon => "anon",
            Role::Authenticated => "authenticated",
            Role::ServiceRole => "service_role",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "anon" => Ok(Role::Anon),
            "authenticated" => Ok(Role::Authenticated),
            "service_role" => Ok(Role::ServiceRole),
            _ => Err(()),
        }
    }
}

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Its role.
    pub role: Role,
    /// The user id (`sub` claim), for the owner rule.
    pub sub: Option<String>,
}

impl Caller {
    /// The role every request has when auth is off, and a keyless loopback request has.
    pub fn service() -> Self {
        Self {
            role: Role::ServiceRole,
            sub: None,
        }
    }
}

/// The keys a request presents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Credentials<'a> {
    /// The `apikey` header (or a websocket's `apikey` query parameter).
    pub apikey: Option<&'a str>,
    /// The token of `Authorization: Bearer <token>` (or a join payload's `access_token`).
    pub bearer: Option<&'a str>,
}

impl<'a> Credentials<'a> {
    /// From `apikey` and `Authorization` headers; an `Authorization` of another scheme (Basic)
    /// is not a bearer token and is ignored, as PostgREST ignores it.
    pub fn from_headers(h: &'a HeaderMap) -> Self {
        let text = |name: &str| h.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
        let bearer = text("authorization").and_then(|v| {
            let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        Self {
            apikey: text("apikey").map(str::trim),
            bearer,
        }
    }

    fn is_empty(&self) -> bool {
        self.apikey.is_none() && self.bearer.is_none()
    }
}

/// The node's auth settings (held by the HTTP state, shared by every surface).
#[derive(Debug, Clone)]
pub struct Auth {
    verifier: Option<Verifier>,
    keys: Vec<(String, Role)>,
    trust_loopback: bool,
}

/// A configured key that does not fit the secret or its role.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key was given while auth is off.
    #[error("{env} is set but JWT_SECRET is not")]
    NoSecret {
        /// The key's variable.
        env: &'static str,
    },
    /// A JWT key that does not verify with the secret.
    #[error("{env} is not valid for JWT_SECRET: {source}; regenerate it with `meshlite keys`")]
    Invalid {
        /// The key's variable.
        env: &'static str,
        /// Why.
        source: TokenError,
    },
    /// A JWT key whose role is not its variable's.
    #[error("{env} carries role {found:?}, expected {expected:?}")]
    WrongRole {
        /// The key's variable.
        env: &'static str,
        /// Its role claim.
        found: String,
        /// The role the variable stands for.
        expected: &'static str,
    },
    /// An opaque (non-JWT) key too short to be a secret.
    #[error("{env} is not a JWT and has fewer than {MIN_SECRET_LEN} characters")]
    Short {
        /// The key's variable.
        env: &'static str,
    },
}

impl Auth {
    /// Auth off: every request is `service_role` (the listener must be on loopback).
    pub fn off() -> Self {
        Self {
            verifier: None,
            keys: Vec::new(),
            trust_loopback: true,
        }
    }

    /// Auth on with `secret` (HS256); keyless loopback requests are trusted unless
    /// [`Auth::trust_loopback`] says otherwise.
    pub fn with_secret(secret: &str) -> Self {
        Self {
            verifier: Some(Verifier::new(secret)),
            keys: Vec::new(),
            trust_loopback: true,
        }
    }

    /// Whether a keyless request from loopback is `service_role`.
    pub fn trust_loopback(mut self, trust: bool) -> Self {
        self.trust_loopback = trust;
        self
    }

    /// True when tokens are checked.
    pub fn is_on(&self) -> bool {
        self.verifier.is_some()
    }

    /// Accepts `key` (the value of `env`, e.g. `ANON_KEY`) verbatim as `role`. A key that looks
    /// like a JWT must verify at `now` and carry `role`; an opaque key must be long.
    pub fn add_key(
        &mut self,
        env: &'static str,
        role: Role,
        key: &str,
        now: i64,
    ) -> Result<(), KeyError> {
        let verifier = self.verifier.as_ref().ok_or(KeyError::NoSecret { env })?;
        if key.split('.').count() == 3 {
            let v = verifier
                .verify(key, now)
                .map_err(|source| KeyError::Invalid { env, source })?;
            if v.role != RoleClaim::Known(role) {
                let found = match v.role {
                    RoleClaim::Known(r) => r.as_str().to_owned(),
                    RoleClaim::Unknown(s) => s,
                };
                let expected = role.as_str();
                return Err(KeyError::WrongRole {
                    env,
                    found,
                    expected,
                });
            }
        } else if key.len() < MIN_SECRET_LEN {
            return Err(KeyError::Short { env });
        }
        self.keys.push((key.to_owned(), role));
        Ok(())
    }

    /// Who a request presenting `creds` from `peer` is, at `now` (Unix seconds). `peer` is
    /// `None` when unknown, which is never trusted as loopback.
    pub fn authenticate(
        &self,
        creds: &Credentials<'_>,
        peer: Option<IpAddr>,
        now: i64,
    ) -> Result<Caller, AuthError> {
        let loopback = peer.is_some_and(|ip| ip.is_loopback());
        let Some(verifier) = &self.verifier else {
            return match loopback {
                true => Ok(Caller::service()),
                false => Err(AuthError::SecretMissing),
            };
        };
        if creds.is_empty() {
            return match loopback && self.trust_loopback {
                true => Ok(Caller::service()),
                false => Err(AuthError::Required),
            };
        }
        let apikey = creds
            .apikey
            .map(|k| self.identify(verifier, k, now))
            .transpose()?;
        let bearer = creds
            .bearer
            .map(|k| self.identify(verifier, k, now))
            .transpose()?;
        bearer.or(apikey).ok_or(AuthError::Required)
    }

    /// The caller a single key stands for.
    fn identify(&self, verifier: &Verifier, key: &str, now: i64) -> Result<Caller, AuthError> {
        if let Some((_, role)) = self.keys.iter().find(|(k, _)| same(k, key)) {
            return Ok(Caller {
                role: *role,
                sub: None,
            });
        }
        let v = verifier.verify(key, now)?;
        match v.role {
            RoleClaim::Known(role) => Ok(Caller { role, sub: v.sub }),
            RoleClaim::Unknown(name) => Err(AuthError::UnknownRole(name)),
        }
    }
}

/// Compares two keys in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<Auth>: FromRef<S>,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AuthError> {
        let auth = Arc::<Auth>::from_ref(state);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        auth.authenticate(&Credentials::from_headers(&parts.headers), peer, unix_now())
    }
}

/// Middleware for surfaces without per-collection rules (the native `/v1` API, `/status`,
/// `/peers`, `/metrics`): only `service_role` passes (keyless loopback requests are that role
/// by default); other roles get 403 42501.
pub async fn require_service_role(caller: Caller, request: Request, next: Next) -> Response {
    match caller.role {
        Role::ServiceRole => next.run(request).await,
        role => AuthError::Denied(Denied::service_only(role)).into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::jwt::{sign_claims, sign_key};
    use super::*;
    use serde_json::json;

    const SECRET: &str = "a-test-secret-of-at-least-32-characters";
    const NOW: i64 = 1_800_000_000;
    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    const REMOTE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));

    fn creds<'a>(apikey: Option<&'a str>, bearer: Option<&'a str>) -> Credentials<'a> {
        Credentials { apikey, bearer }
    }

    #[test]
    fn auth_off_serves_loopback_as_service_role_only() {
        let auth = Auth::off();
        let any = creds(Some("whatever"), Some("x"));
        assert_eq!(auth.authenticate(&any, LOCAL, NOW), Ok(Caller::service()));
        let e = auth.authenticate(&any, REMOTE, NOW).unwrap_err();
        assert_eq!(e, AuthError::SecretMissing);
        assert_eq!(
            auth.authenticate(&any, None, NOW),
            Err(AuthError::SecretMissing)
        );
    }

    #[test]
    fn keyless_requests_are_trusted_from_loopback_only() {
        let auth = Auth::with_secret(SECRET);
        let none = Credentials::default();
        assert_eq!(auth.authenticate(&none, LOCAL, NOW), Ok(Caller::service()));
        assert_eq!(
            auth.authenticate(&none, REMOTE, NOW),
            Err(AuthError::Required)
        );
        let strict = Auth::with_secret(SECRET).trust_loopback(false);
        assert_eq!(
            strict.authenticate(&none, LOCAL, NOW),
            Err(AuthError::Required)
        );
    }

    #[test]
    fn the_bearer_role_wins_and_every_key_must_be_valid() {
        let auth = Auth::with_secret(SECRET);
        let anon = sign_key(SECRET, Role::Anon, NOW, 60).unwrap();
        let user = sign_claims(SECRET, &json!({"role": "authenticated", "sub": "u1"})).unwrap();
        let c = auth
            .authenticate(&creds(Some(&anon), Some(&user)), REMOTE, NOW)
            .unwrap();
        assert_eq!(
            (c.role, c.sub.as_deref()),
            (Role::Authenticated, Some("u1"))
        );
        let c = auth.authenticate(&creds(Some(&anon), None), LOCAL, NOW);
        assert_eq!(
            c.unwrap().role,
            Role::Anon,
            "a key from loopback is still checked"
        );
        let bad = auth.authenticate(&creds(Some("garbage"), Some(&user)), REMOTE, NOW);
        assert_eq!(bad, Err(AuthError::Token(TokenError::Parts(1))));
        let odd = sign_claims(SECRET, &json!({"role": "postgres"})).unwrap();
        let e = auth.authenticate(&creds(None, Some(&odd)), REMOTE, NOW);
        assert_eq!(e, Err(AuthError::UnknownRole("postgres".into())));
    }

    #[test]
    fn configured_keys_stand_for_their_role() {
        let mut auth = Auth::with_secret(SECRET);
        let opaque = "sb_secret_0123456789abcdefghijklmnopqrstuv";
        auth.add_key("SERVICE_ROLE_KEY", Role::ServiceRole, opaque, NOW)
            .unwrap();
        let anon = sign_key(SECRET, Role::Anon, NOW, 60).unwrap();
        auth.add_key("ANON_KEY", Role::Anon, &anon, NOW).unwrap();
        let c = auth.authenticate(&creds(Some(opaque), None), REMOTE, NOW);
        assert_eq!(c.unwrap().role, Role::ServiceRole);
        let e = auth
            .add_key("ANON_KEY", Role::ServiceRole, &anon, NOW)
            .unwrap_err();
        assert!(e.to_string().contains("expected \"service_role\""), "{e}");
        let forged = sign_key("x".repeat(40).as_str(), Role::Anon, NOW, 60).unwrap();
        let e = auth
            .add_key("ANON_KEY", Role::Anon, &forged, NOW)
            .unwrap_err();
        assert!(e.to_string().contains("not valid for JWT_SECRET"), "{e}");
        let e = auth
            .add_key("ANON_KEY", Role::Anon, "short", NOW)
            .unwrap_err();
        assert!(matches!(e, KeyError::Short { .. }), "{e}");
        let e = Auth::off().add_key("ANON_KEY", Role::Anon, &anon, NOW);
        assert!(matches!(e, Err(KeyError::NoSecret { .. })));
    }

    #[test]
    fn headers_give_credentials() {
        let mut h = HeaderMap::new();
        h.insert("apikey", " k1 ".parse().unwrap());
        h.insert("authorization", "bearer t1".parse().unwrap());
        assert_eq!(Credentials::from_headers(&h), creds(Some("k1"), Some("t1")));
        h.insert("authorization", "Basic dTpw".parse().unwrap());
        assert_eq!(Credentials::from_headers(&h).bearer, None);
        h.insert("authorization", "Bearer".parse().unwrap());
        assert_eq!(Credentials::from_headers(&h).bearer, Some(""));
    }
}
