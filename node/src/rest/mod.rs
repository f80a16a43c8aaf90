//! The Supabase-compatible REST surface in PostgREST's dialect, under `/rest/v1`, so that
//! `@supabase/supabase-js` and `@supabase/postgrest-js` work unchanged against a node. First
//! slice of issue 9; see the README section "Supabase clients (first slice)".
//!
//! | method and path             | does                                                        |
//! |-----------------------------|-------------------------------------------------------------|
//! | `GET`/`HEAD /rest/v1/{t}`   | select, filters, order, limit/offset/`Range`, count, single |
//! | `POST /rest/v1/{t}`         | insert one or many (one transaction), upsert                |
//! | `PATCH /rest/v1/{t}?f`      | update the matching rows                                    |
//! | `DELETE /rest/v1/{t}?f`     | delete the matching rows                                    |
//!
//! Auth: every handler takes a [`crate::auth::Caller`] (401 in PostgREST's shape for a bad
//! key) and binds its table with [`access`]'s `Table::authorize` (403 42501 for a role without
//! the schema's grant); the owner rule narrows the rows the request sees and writes.
//!
//! Modules, each depending only on those listed after it:
//! `read`, `write` (handlers) → `rows` (store reads) → `filter` (evaluation) → `table`
//! (columns, types, shaping) →
//! `query` (URL grammar), `prefer` (`Prefer`), `response` (`Accept`, bodies) → `error`.

pub mod access;
pub mod error;
pub mod filter;
pub mod prefer;
pub mod query;
pub mod read;
pub mod response;
pub mod rows;
pub mod table;
pub mod write;

use axum::Router;
use axum::routing::get;

use crate::state::AppState;

/// The `/rest/v1` routes (`GET` also answers `HEAD`, without a body).
pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/rest/v1/{collection}",
        get(read::select)
            .post(write::insert)
            .patch(write::update)
            .delete(write::delete),
    )
}
