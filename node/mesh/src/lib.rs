//! The Meshlite mesh as a library: everything a fleet peer needs to exchange transactions with
//! other peers, over one [`replica::Replica`] trait, so that the node (`meshlite run`, over its
//! SQLite store) and the central bridge (`meshlite-bridge`, over Postgres) run the same code.
//!
//! # How the parts fit
//!
//! ```text
//!   replica::Replica ◄──────────── the store a process serves (core Store, Postgres, ...)
//!      ▲        ▲        ▲
//!      │        │        └── nats   (events, announcements, JetStream relay)
//!      │        └─────────── net    (QUIC + fleet mTLS: sync sessions, pushes)
//!      └──────────────────── gossip (commits → push to the policy's targets; anti-entropy)
//!   dialer ── keeps connections to the peers in discovery::table::PeerTable
//!   epidemic ── overlay mode (large fleets): a bounded active view and broadcast trees over net
//!   mode ── runs gossip + dialer up to direct_push_max_peers known peers, epidemic above
//!   discovery ── static list, Tailscale, and mDNS (feature `mdns`) feed the PeerTable
//!   fleet ── CA, node certificates, cluster and node ids          tasks, backoff ── shared helpers
//!   config ── the config error type and loaders both binaries use
//!   http ── (feature `http`) the bounded HTTP/1.1 listener both binaries serve their APIs with
//! ```
//!
//! Dependency direction (no module imports one that imports it back): `tasks`, `backoff`,
//! `config`, `fleet` and `replica` are leaves; `http` uses `config`; `net` uses `fleet` and `replica`; `discovery` uses `tasks`;
//! `nats` uses `discovery`, `replica` and `tasks`; `gossip` and `dialer` sit on top of `net`,
//! `discovery` and `replica`; so do `epidemic` (over `net`, `discovery`, `replica`) and `mode`
//! (over `gossip`, `dialer` and `epidemic`). Who gets a transaction is decided by the sans-IO policy in
//! `meshlite_core::dissemination`, which `gossip` drives; `net` only sends to the peers it is given.
//! Nothing here knows about the node's CLI, HTTP routes or configuration file.

pub mod backoff;
pub mod config;
pub mod dialer;
pub mod discovery;
pub mod epidemic;
pub mod fleet;
pub mod gossip;
#[cfg(feature = "http")]
pub mod http;
pub mod mode;
pub mod nats;
pub mod net;
pub mod replica;
pub mod tasks;
#[cfg(feature = "testkit")]
pub mod testkit;
