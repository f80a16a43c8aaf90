//! The store reads behind a request: the candidate rows a [`Plan`] is evaluated over, in
//! insertion order (as a fresh Postgres heap returns rows without `ORDER BY`).

use meshlite_core::store::{Query, Store};
use serde_json::Value;

use super::error::RestError;
use super::filter::Plan;
use super::table::Table;

fn insertion_order() -> Query {
    Query {
        insertion_order: true,
        ..Query::default()
    }
}

/// The live rows matching `plan` that the table's scope admits, filtered and sorted: one
/// record when the plan pins a key, else every live row of the table (see the cost note in
/// `filter`).
pub async fn matching(store: &Store, table: &Table, plan: &Plan) -> Result<Vec<Value>, RestError> {
    let read_error = |e| RestError::from_read(&table.name, e);
    let candidates = match plan.pinned_id(table) {
        Some(id) => store
            .get_async(&table.name, &id)
            .await
            .map_err(read_error)?
            .into_iter()
            .collect(),
        None => store
            .query_async(&table.name, &insertion_order())
            .await
            .map_err(read_error)?,
    };
    let visible = candidates
        .into_iter()
        .filter(|r| r.as_object().is_some_and(|o| table.scope.admits(o)))
        .collect();
    Ok(plan.apply(visible))
}
