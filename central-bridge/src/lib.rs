//! `meshlite-bridge`: the central bridge that materializes the fleet's merged state into
//! (Supabase) Postgres as ordinary typed tables and carries central edits back.
//!
//! What exists today is the Postgres foundation; the mesh side (a fleet peer over QUIC, the
//! JetStream relay consumer, materialization, turning outbox rows into CRDT changes) comes next
//! and plugs into [`service`].
//!
//! - [`config`]: TOML + env configuration (`DATABASE_URL`, `SYNC_*`, `NATS_URL`, ...).
//! - [`pg`]: connecting ([`pg::PgTarget`], libpq `sslmode` over rustls) and validated identifiers
//!   ([`pg::Ident`]).
//! - [`migrations`]: the bridge's state schema as versioned, locked, idempotent migrations, plus
//!   seed 002's `sync_status` and its health view.
//! - [`ddl`]: typed materialized tables from core's schema, the capture triggers (and why
//!   triggers), grants and Realtime publication for Supabase.
//! - [`state`]: the bridge's persistent identity and [`state::bridge_transaction`], the only way
//!   the bridge writes materialized tables (its writes are not captured again).
//! - [`peer`]: the bridge as a fleet peer; [`fleet_view`]: `<state>.nodes`, the fleet as the
//!   bridge sees it.
//! - [`service`]: start-up (`prepare`) and the `run` / `migrate` commands; [`http`]: `/healthz`,
//!   `/metrics`; [`cli`]: the command line.
//! - `fuzz` (feature `testkit`): the body of the fuzz target `bridge_txn` and the bridge-vs-node
//!   comparison it shares with the hostile test.
//! - [`Allocator`]: the global allocator of the `meshlite-bridge` binary (and of the benches that
//!   run the bridge's code in their own process, so they measure what ships).
#![deny(missing_docs)]

pub mod cli;
pub mod config;
pub mod ddl;
pub mod fleet_view;
#[cfg(feature = "testkit")]
pub mod fuzz;
pub mod http;
pub mod migrations;
pub mod peer;
pub mod pg;
pub mod replica;
pub mod service;
pub mod state;

/// The `meshlite-bridge` binary's global allocator: mimalloc. A batch creates and frees many
/// small Automerge and JSON objects per change; against glibc's `malloc` mimalloc cut the
/// bridge's client CPU per change by ≈ 25 % (benches/README.md, "Central bridge"). A library
/// cannot set the allocator; each binary does, with
/// `#[global_allocator] static ALLOC: meshlite_bridge::Allocator = meshlite_bridge::Allocator;`.
pub use mimalloc::MiMalloc as Allocator;
