//! The store reads behind a request: the candidate rows a [`Plan`] is evaluated over, in
//! insertion order (as a fresh Postgres heap returns rows without `ORDER BY`), narrowed by
//! `pushdown`.

use meshlite_core::store::Store;
use serde_json::Value;

use super::error::RestError;
use super::filter::Plan;
use super::pushdown::Access;
use super::table::Table;

/// The live rows matching `plan` that the table's scope admits, filtered and sorted: the
/// candidates are read as [`Access::of`] decides (one record, the rows an equality selects
/// through the store, or every live row).
pub async fn matching(store: &Store, table: &Table, plan: &Plan) -> Result<Vec<Value>, RestError> {
    let read_error = |e| RestError::from_read(&table.name, e);
    let candidates = match Access::of(plan, table) {
        Access::Get(id) => store
            .get_async(&table.name, &id)
            .await
            .map_err(read_error)?
            .into_iter()
            .collect(),
        access => store
            .query_async(&table.name, &access.query())
            .await
            .map_err(read_error)?,
    };
    let visible = candidates
        .into_iter()
        .filter(|r| r.as_object().is_some_and(|o| table.scope.admits(o)))
        .collect();
    Ok(plan.apply(visible))
}
