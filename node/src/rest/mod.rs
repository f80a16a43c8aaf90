//! The Supabase-compatible REST surface in PostgREST's dialect, under `/rest/v1`, so that
//! `@supabase/supabase-js` and `@supabase/postgrest-js` work unchanged against a node (issue 9;
//! see the README section "Supabase clients").
//!
//! | method and path             | does                                                          |
//! |-----------------------------|---------------------------------------------------------------|
//! | `GET /rest/v1/`             | OpenAPI (Swagger 2.0) description of the collections          |
//! | `GET`/`HEAD /rest/v1/{t}`   | select (columns, JSON paths, aliases, embeds), filters and    |
//! |                             | `or`/`and` trees, order, limit/offset/`Range`, count, single, |
//! |                             | CSV                                                           |
//! | `POST /rest/v1/{t}`         | insert one or many (one transaction), upsert (`insert`)       |
//! | `POST /rest/v1/rpc/{f}`     | the functions of `rpc` (`increment`)                          |
//! | `PATCH /rest/v1/{t}?f`      | update the matching rows                                      |
//! | `DELETE /rest/v1/{t}?f`     | delete the matching rows                                      |
//!
//! | filter operator             | meaning                                                       |
//! |-----------------------------|---------------------------------------------------------------|
//! | `eq neq gt gte lt lte`      | comparisons by the declared type (`keys`)                     |
//! | `like ilike`                | SQL patterns (`*` for `%`)                                    |
//! | `match imatch`              | regular expressions (`regex` crate syntax)                    |
//! | `in is`                     | lists; null/true/false/unknown                                |
//! | `cs cd ov`                  | jsonb containment / overlap; JSON or `{a,b}` operands         |
//! | `not.` `or=` `and=` `not.or=` | negation and nested logic trees                             |
//! | `fts plfts phfts wfts`, ranges | refused (PGRST100, naming them)                            |
//!
//! Auth: every handler takes a [`crate::auth::Caller`] (401 in PostgREST's shape for a bad
//! key) and binds its table with [`access`]'s `Table::authorize` (403 42501 for a role without
//! the schema's grant); the owner rule narrows the rows the request sees and writes.
//!
//! Modules, each depending only on those listed after it:
//! `read`, `insert`, `openapi` (handlers) → `rpc` (functions) → `write` (what writes share;
//! PATCH, DELETE) → `embed` (related rows) → `rows` (store reads) → `pushdown` (which read) →
//! `filter` (evaluation) → `jsonset` (containment), `keys` (comparable values) → `table`
//! (columns, types, shaping) → `query` (URL) → `select`, `logic` (grammars) → `path` (JSON
//! paths) → `lex` (lexing); `prefer` (`Prefer`), `response` (`Accept`, bodies) → `csv`;
//! all → `error`. `fuzz` (feature `testkit`): the body of the fuzz target `rest_query`.

pub mod access;
pub mod csv;
pub mod embed;
pub mod error;
pub mod filter;
#[cfg(any(test, feature = "testkit"))]
pub mod fuzz;
#[cfg(test)]
mod fuzz_tests;
pub mod insert;
pub mod jsonset;
pub mod keys;
pub mod lex;
pub mod logic;
pub mod openapi;
pub mod path;
pub mod prefer;
pub mod pushdown;
pub mod query;
pub mod read;
pub mod response;
pub mod rows;
pub mod rpc;
pub mod select;
pub mod table;
pub mod write;

use axum::Router;
use axum::routing::get;

use crate::state::AppState;

/// The `/rest/v1` routes (`GET` also answers `HEAD`, without a body).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/rest/v1/", get(openapi::describe))
        .route("/rest/v1", get(openapi::describe))
        .route(
            "/rest/v1/rpc/{function}",
            get(rpc::call_read_only).post(rpc::call),
        )
        .route(
            "/rest/v1/{collection}",
            get(read::select)
                .post(insert::insert)
                .patch(write::update)
                .delete(write::delete),
        )
}
