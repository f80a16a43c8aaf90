//! `meshlite-bridge`: the central bridge that materializes the fleet's merged state into
//! (Supabase) Postgres as ordinary typed tables and carries central edits back.
//!
//! - [`pg`]: connecting ([`pg::PgTarget`], libpq `sslmode` over rustls) and validated identifiers
//!   ([`pg::Ident`]).
#![deny(missing_docs)]

pub mod pg;
