//! The one place Realtime decides who may connect and subscribe: the auth seam.
//!
//! Every credential Realtime sees passes through [`authorize`]: the `apikey` query parameter at
//! connect, the `access_token` of each `phx_join`, and the `access_token` messages realtime-js
//! sends when its session token changes. Today it accepts every credential (as the `/rest/v1`
//! slice does, the listener is loopback by default) and grants [`Grant::ServiceRole`]; the JWT
//! checks of `node/src/auth` plug in here, and the callers already turn a [`Denied`] into the
//! answers Supabase Realtime gives (HTTP 403 at connect, an error reply on join, a `system`
//! error and a closed channel on a refreshed token).

/// What a credential may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Read every collection's changes.
    ServiceRole,
}

/// A refused credential, with the reason sent to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Denied(pub String);

/// Checks the connection's `apikey` and, when given, a user `access_token`.
pub fn authorize(apikey: Option<&str>, access_token: Option<&str>) -> Result<Grant, Denied> {
    let _ = (apikey, access_token);
    Ok(Grant::ServiceRole)
}
