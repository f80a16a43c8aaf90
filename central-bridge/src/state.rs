//! Small typed accessors over the state schema that every bridge component needs: the bridge's
//! own identity, and transactions whose writes the capture triggers ignore.

use meshlite_core::ReplicaId;
use tokio_postgres::{Client, Transaction};

use crate::migrations::Schemas;

/// Error reading or writing the bridge's state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Postgres refused or failed.
    #[error("bridge state in schema {schema}: {source}")]
    Postgres {
        /// The state schema.
        schema: String,
        /// Postgres' error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A stored value is not what the bridge wrote (edited by hand?).
    #[error("bridge state in schema {schema}: {what}")]
    Invalid {
        /// The state schema.
        schema: String,
        /// What is wrong.
        what: String,
    },
}

/// The replica id (origin) of the bridge named `name`: created on first start and kept in
/// `<state>.bridges`, so a bridge whose host lost its disk comes back as the same origin.
/// Race-safe: two processes starting with one name get the same id. Also stamps
/// `last_started_at`.
pub async fn bridge_replica_id(
    client: &Client,
    schemas: &Schemas,
    name: &str,
) -> Result<ReplicaId, StateError> {
    let schema = schemas.state.as_str().to_owned();
    let fresh = ReplicaId::random();
    let sql = format!(
        "INSERT INTO {}.bridges (name, replica_id, last_started_at) VALUES ($1, $2, now())
         ON CONFLICT (name) DO UPDATE SET last_started_at = now()
         RETURNING replica_id",
        schemas.state
    );
    let row = client
        .query_one(&sql, &[&name, &fresh.0.as_slice()])
        .await
        .map_err(|source| StateError::Postgres {
            schema: schema.clone(),
            source,
        })?;
    let bytes: Vec<u8> = row.get(0);
    ReplicaId::from_slice(&bytes).ok_or_else(|| StateError::Invalid {
        schema,
        what: format!(
            "bridges.replica_id of {name:?} has {} bytes, not 16",
            bytes.len()
        ),
    })
}

/// Begins a transaction whose writes to materialized tables are *not* captured into the outbox
/// (`SET LOCAL meshlite.bridge = 'on'`; the setting ends with the transaction). Every bridge
/// write to a materialized table must go through one, or it would echo back as a central edit.
pub async fn bridge_transaction(
    client: &mut Client,
) -> Result<Transaction<'_>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL meshlite.bridge = 'on'").await?;
    Ok(tx)
}
