//! The Meshlite node: the `meshlite` command-line tool and the `meshlite run` daemon.
//!
//! # How the parts fit
//!
//! - [`cli`]: the command-line interface; every command prints JSON (one object per line for lists)
//!   and reports errors on stderr with a non-zero exit status.
//! - [`config`]: the daemon's TOML configuration with documented defaults and env overrides.
//! - [`daemon`]: wires the store, the mesh (transport, discovery, gossip, NATS) and the HTTP
//!   listener together.
//! - [`auth`]: who a request is (`apikey` / `Authorization: Bearer` JWTs, `JWT_SECRET`) and
//!   what its role may do with each collection (the schema's `access` tables).
//! - [`state`]: what the HTTP handlers share; [`http`] serves `/healthz`, `/metrics`, `/peers`,
//!   `/status` and mounts [`api`] (`/v1`), [`rest`] (`/rest/v1`, the PostgREST dialect) and
//!   [`realtime`] (`/realtime/v1/websocket`, Supabase Realtime's `postgres_changes`);
//!   [`registry`] is seed 003's service registry (`/api/services`, over a replicated `services`
//!   collection); [`syncview`] answers which peers hold each record's latest change
//!   (`/api/sync`); [`sneakernet`] serves `/summary` and `/bundle/{export,import}` on [`bundles`]
//!   (shared with the CLI); [`endpoint`] records the daemon's HTTP address in its data directory
//!   so the CLI finds it; [`cert_expiry`] tracks the node certificate's end; [`metrics`] renders Prometheus text; [`httpc`] is the client the CLI uses to ask a running
//!   daemon.
//!
//! Layers, each depending only on the ones below it:
//!
//! ```text
//!   meshlite-node   cli → daemon → http → api, realtime, rest, registry, syncview, sneakernet,
//!                   metrics → state → auth → config   (realtime → rest; bundles, endpoint,
//!                   cert_expiry, httpc: leaves)
//!        │
//!   meshlite-mesh   (node/mesh) fleet, net, discovery (+mDNS), gossip, dialer, nats, replica
//!        │
//!   meshlite-core   store (SQLite + Automerge), sync protocol, dissemination policy
//! ```

pub mod api;
pub mod auth;
pub mod bundles;
pub mod cert_expiry;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod endpoint;
pub mod http;
pub mod httpc;
pub mod idempotency;
pub mod metrics;
pub mod realtime;
pub mod registry;
pub mod rest;
pub mod sneakernet;
pub mod state;
pub mod syncview;
