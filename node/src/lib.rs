//! The Meshlite node: the `meshlite` command-line tool and the `meshlite run` daemon.
//!
//! # How the parts fit
//!
//! - [`cli`]: the command-line interface; every command prints JSON (one object per line for lists)
//!   and reports errors on stderr with a non-zero exit status.
//! - [`config`]: the daemon's TOML configuration with documented defaults and env overrides.
//! - `fleet`: fleet identity (CA, node certificates, cluster id, node ids derived from keys).
//! - `net`: the QUIC transport with mutual TLS, one actor per peer connection.
//! - `discovery`: mDNS, static and Tailscale peers, all feeding one peer table.
//! - `nats`: node announcements, change events and the JetStream relay.
//! - `daemon`: wires the store, transport, discovery, NATS and the HTTP listener together.
//!
//! The store itself (SQLite + Automerge) and the sync protocol live in `meshlite-core`.

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod discovery;
pub mod fleet;
pub mod http;
pub mod httpc;
pub mod metrics;
pub mod nats;
pub mod net;
