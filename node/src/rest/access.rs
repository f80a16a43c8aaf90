//! The caller's rights applied to a request's [`Table`] (see [`crate::auth::access`]): the
//! handler binds the table with [`Table::authorize`] (42501 when the role lacks the grant), and
//! the table's [`Scope`] then filters the rows every read, update and delete sees
//! (`rows::matching`), stamps inserted rows with their owner, and refuses patches and upserts
//! that would touch another owner's row.

use axum::http::StatusCode;
use meshlite_core::store::Store;
use serde_json::{Map, Value};

use super::error::RestError;
use super::prefer::Resolution;
use super::table::Table;
use crate::auth::{Action, Caller, Denied, Scope};

impl From<Denied> for RestError {
    fn from(d: Denied) -> Self {
        RestError {
            status: StatusCode::FORBIDDEN,
            code: "42501",
            message: d.to_string(),
            details: d.details(),
            hint: None,
        }
    }
}

impl Table {
    /// This table as `caller` may use it for `action`; 42501 when its role may not.
    pub fn authorize(mut self, caller: &Caller, action: Action) -> Result<Table, RestError> {
        self.scope = caller.authorize(&self.name, &self.def, action)?;
        Ok(self)
    }

    /// Makes every object to insert the caller's (the owner rule); 42501 for another owner.
    pub fn claim_all(&self, objs: &mut [Map<String, Value>]) -> Result<(), RestError> {
        for o in objs {
            self.scope.claim(&self.name, o)?;
        }
        Ok(())
    }

    /// Refuses a patch that would hand rows to another owner.
    pub fn check_patch(&self, patch: &Map<String, Value>) -> Result<(), RestError> {
        Ok(self.scope.check_patch(&self.name, patch)?)
    }

    /// Under the owner rule, a merging upsert may not overwrite a live row the caller does not
    /// own (Postgres' `ON CONFLICT DO UPDATE` under row-level security refuses it too).
    pub async fn check_upsert(
        &self,
        store: &Store,
        resolution: Resolution,
        objs: &[Map<String, Value>],
    ) -> Result<(), RestError> {
        let Scope::Owned { field, .. } = &self.scope else {
            return Ok(());
        };
        if resolution != Resolution::MergeDuplicates {
            return Ok(());
        }
        for id in objs.iter().filter_map(|o| self.id_of(o)) {
            let existing = store
                .get_async(&self.name, &id)
                .await
                .map_err(|e| RestError::from_read(&self.name, e))?;
            if let Some(row) = existing.as_ref().and_then(Value::as_object)
                && !self.scope.admits(row)
            {
                return Err(Denied::row_policy(&self.name, field).into());
            }
        }
        Ok(())
    }
}
