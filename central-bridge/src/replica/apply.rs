//! Applying received transactions to Postgres: one database transaction per batch, and how a
//! batch chooses its path.
//!
//! A batch first goes the set-based way ([`super::batch`]: every record it touches loaded and
//! locked at once, merged in memory, one statement per table). What that path does not take on
//! (deletes, a transaction touching a record twice, a transaction parked half-way) runs row by
//! row ([`super::rowwise`]) without savepoints; a transaction refused on its merits (a type, a
//! value its column cannot hold) on either path aborts that attempt, and the batch runs again
//! row by row with a savepoint per transaction, so only the refused ones are rolled back,
//! recorded in `rejected` and reported. Only after COMMIT is the commit event broadcast.
//!
//! A deadlock or serialization failure (two bridges racing) retries the batch a few times;
//! other transient errors (the connection, the server's resources) fail it and peers resend.
//!
//! Deletes win: a tombstone of incarnation *k* makes every change to *k* (earlier or later) a
//! no-op for the table, and the row disappears unless a later incarnation is alive.

use meshlite_core::Txn;
use tokio_postgres::Client;

use super::cache::DocCache;
use super::copy::Via;
use super::db::Prepared;
use super::rowwise::{BatchOutcome, attempt, pg_reason};
use super::storable::unstorable;
use super::{Context, batch};

/// Times a batch is tried again after a deadlock or a serialization failure (two bridges
/// racing); after that the error fails the batch and peers resend it.
const CONCURRENCY_RETRIES: usize = 3;

/// Applies `txns` in one Postgres transaction.
///
/// Set-based first ([`batch`]): one statement per table for the whole batch. A batch that path
/// does not take on runs row by row without savepoints; a transaction refused on its merits
/// (on either path) aborts that attempt, and the batch is applied again row by row with a
/// savepoint per transaction, which rolls back and records only the refused ones. A deadlock
/// or serialization failure retries the batch.
pub async fn apply_batch(
    client: &mut Client,
    prepared: &Prepared,
    ctx: &Context,
    txns: Vec<Txn>,
    cache: &DocCache,
) -> Result<BatchOutcome, tokio_postgres::Error> {
    let mut retries = 0;
    loop {
        match apply_batch_once(client, prepared, ctx, &txns, cache).await {
            Err(e) if retries < CONCURRENCY_RETRIES && concurrency_failure(&e) => {
                retries += 1;
                tracing::info!(error = %pg_reason(&e), retries, "batch raced another writer; retrying");
            }
            result => return result,
        }
    }
}

/// The set-based path: with `COPY` first, with statements that tolerate existing keys after a
/// collision. `Err(refused)` when the batch needs the row-by-row path.
async fn set_based(
    client: &mut Client,
    prepared: &Prepared,
    ctx: &Context,
    txns: &[Txn],
    cache: &DocCache,
) -> Result<Result<BatchOutcome, bool>, tokio_postgres::Error> {
    for via in [Via::Copy, Via::Statements] {
        match batch::apply(client, prepared, ctx, txns, via, cache).await? {
            batch::Attempt::Done(out) => return Ok(Ok(out)),
            batch::Attempt::Refused => return Ok(Err(true)),
            batch::Attempt::Unsuited => return Ok(Err(false)),
            batch::Attempt::Collided => {}
        }
    }
    Ok(Err(true))
}

/// A deadlock or a serialization failure: trying again can succeed.
fn concurrency_failure(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| ["40P01", "40001"].contains(&db.code().code()))
}

async fn apply_batch_once(
    client: &mut Client,
    prepared: &Prepared,
    ctx: &Context,
    txns: &[Txn],
    cache: &DocCache,
) -> Result<BatchOutcome, tokio_postgres::Error> {
    // A transaction Postgres cannot store is refused on the careful path, alone.
    if txns.iter().any(|t| unstorable(t).is_some()) {
        let careful = attempt(client, prepared, ctx, txns, true).await?;
        return Ok(careful.unwrap_or_default());
    }
    let refused = match batch::suited(txns) {
        true => match set_based(client, prepared, ctx, txns, cache).await? {
            Ok(out) => return Ok(out),
            Err(refused) => refused,
        },
        false => false,
    };
    if !refused && let Some(out) = attempt(client, prepared, ctx, txns, false).await? {
        return Ok(out);
    }
    let careful = attempt(client, prepared, ctx, txns, true).await?;
    Ok(careful.unwrap_or_default())
}
