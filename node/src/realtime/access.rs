//! The one place Realtime decides who may connect and subscribe: the auth seam.
//!
//! Every credential Realtime sees passes through a [`Gate`]: the `apikey` query parameter at
//! connect, the `access_token` of each `phx_join`, and the `access_token` messages realtime-js
//! sends when its session token changes. The gate runs the same checks as `/rest/v1`
//! ([`crate::auth::Auth::authenticate`]: keyless loopback requests are `service_role` unless
//! configured otherwise, keys and JWTs are verified with `JWT_SECRET`), and each subscription's
//! table must be readable by the caller's role per the schema's `access` table
//! ([`may_read`], which answers with the [`Scope`] of rows the caller sees). The callers turn a
//! [`Denied`] into the answers Supabase Realtime gives (HTTP 403 at connect, an error reply on
//! join, a `system` error and a closed channel on a refreshed token).
//!
//! A table under an owner rule is streamed per row, as Supabase Realtime applies row-level
//! security to each subscriber: the subscription keeps its [`Scope`], and delivers a change
//! only when the row (the new one, or a deleted record's last state) belongs to the caller; the
//! `subscription` module says what happens to deletes and to updates that move a row out of
//! sight.

use std::net::IpAddr;
use std::sync::Arc;

use meshlite_core::schema::Schema;

use crate::auth::{Action, Auth, Caller, Credentials, Role, Scope, unix_now};

/// A refused credential or subscription, with the reason sent to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Denied(pub String);

/// The checks of one socket: the node's keys and the peer's address.
#[derive(Clone, Debug)]
pub struct Gate {
    auth: Arc<Auth>,
    peer: Option<IpAddr>,
}

impl Gate {
    /// A gate for a socket from `peer`.
    pub fn new(auth: Arc<Auth>, peer: Option<IpAddr>) -> Self {
        Gate { auth, peer }
    }

    /// Who the connection's `apikey` and, when given, a user `access_token` are.
    pub fn caller(
        &self,
        apikey: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<Caller, Denied> {
        let creds = Credentials {
            apikey,
            bearer: access_token,
        };
        self.auth
            .authenticate(&creds, self.peer, unix_now())
            .map_err(|e| Denied(e.to_string()))
    }
}

/// Whether `caller` may follow the changes of `table` (`None`: every table), and which of its
/// rows.
pub fn may_read(caller: &Caller, schema: &Schema, table: Option<&str>) -> Result<Scope, Denied> {
    let Some(table) = table else {
        return match caller.role {
            Role::ServiceRole => Ok(Scope::All),
            _ => Err(Denied(
                "subscribing to every table needs the service_role; name a table".into(),
            )),
        };
    };
    let def = schema.collection_or_default(table);
    caller
        .authorize(table, &def, Action::Read)
        .map_err(|d| Denied(d.to_string()))
}
