//! Merged local transactions: the [`super::Store::transact`] calls the writer takes back to back
//! within one group commit become ONE store transaction (one [`crate::change::Txn`], one `txns`
//! row, one held-set update). A run ends at the group's end, at another kind of command, or at
//! [`MERGE_MAX_CALLERS`] callers / [`MAX_TXN_OPS`] ops; a caller with more than
//! [`MERGE_MAX_OPS`] ops runs alone.
//!
//! Group commit already shares the SQLite COMMIT between queued commands; merging also shares
//! the per-transaction work (the encoded transaction row, the held set), so single-row writes
//! from many HTTP clients come closer to a batch's cost (benches/README.md, issue 13).
//!
//! How each caller keeps its own outcome:
//! - Each caller's ops run inside their own nested SAVEPOINT. A caller whose ops are refused
//!   (validation, a duplicate key, a policy) is rolled back alone, its ops are cut from the
//!   transaction being built ([`Built::cut_back`]) and the documents it touched are evicted; it
//!   gets its own error and the others go on, exactly as if it had run by itself.
//! - A failure of the merged transaction as a whole (storing it: a SQL error, or the encoded
//!   transaction exceeding [`crate::change::MAX_TXN_BYTES`]) rolls everything back and the writer
//!   runs each caller alone ([`Finished::Undone`]), so no caller fails for another's size.
//! - Replies are sent only after the group's COMMIT, as for every command.
//!
//! What changes for replication: the callers' writes travel as one transaction (one sequence
//! number, applied atomically by every peer), and each caller's [`super::Committed::txn`] names
//! that shared transaction. Each caller's own writes stay atomic (they are all in it or, when
//! refused, none is). Transactions with idempotency keys ([`super::Store::transact_once`]) are
//! never merged.

use super::error::WriteError;
use super::local::Built;
use super::types::{RecordChange, WriteOp};
use super::writer::Writer;
use crate::change::MAX_TXN_OPS;
use crate::ids::TxnId;

/// Most callers merged into one transaction.
pub(crate) const MERGE_MAX_CALLERS: usize = 64;

/// A caller with more ops than this runs alone: a large write amortizes its own transaction.
pub(crate) const MERGE_MAX_OPS: usize = 64;

/// Whether a caller's `ops` may join a merged transaction.
pub(crate) fn mergeable(ops: &[WriteOp]) -> bool {
    !ops.is_empty() && ops.len() <= MERGE_MAX_OPS
}

/// A merged transaction being built: callers join it one by one, as the writer takes them from
/// its queue, until [`Writer::finish_merged`].
pub(crate) struct MergedRun<R> {
    txn: TxnId,
    out: Built,
    /// Each caller's ops, kept for running it alone if the transaction cannot be stored.
    kept: Vec<Vec<WriteOp>>,
    replies: Vec<R>,
    outcomes: Vec<Result<Vec<RecordChange>, WriteError>>,
    ops: usize,
    /// The document cache's touched mark when the run began.
    touched: usize,
    /// Set when a savepoint statement failed: the run takes no one else and is rolled back.
    broken: Option<WriteError>,
}

impl<R> MergedRun<R> {
    /// Callers so far.
    pub(crate) fn len(&self) -> usize {
        self.replies.len()
    }

    /// Whether a caller with `ops` may still join.
    pub(crate) fn fits(&self, ops: &[WriteOp]) -> bool {
        self.broken.is_none()
            && self.len() < MERGE_MAX_CALLERS
            && self.ops.saturating_add(ops.len()) <= MAX_TXN_OPS
    }
}

/// How a merged transaction ended.
pub(crate) enum Finished<R> {
    /// Stored (it commits with the group): its id, and each caller's changes or refusal with
    /// its reply, in the callers' order.
    Stored {
        txn: TxnId,
        callers: Vec<(Result<Vec<RecordChange>, WriteError>, R)>,
    },
    /// Rolled back whole (`why`): the writer runs each caller alone.
    Undone {
        why: WriteError,
        callers: Vec<(Vec<WriteOp>, R)>,
    },
}

impl Writer {
    /// Starts a merged transaction (inside the writer's open group).
    pub(crate) fn begin_merged<R>(&mut self) -> MergedRun<R> {
        self.docs.take_touched();
        let broken = run_sql(&self.conn, "SAVEPOINT merged")
            .err()
            .map(Into::into);
        MergedRun {
            txn: self.next_txn_id(),
            out: Built::default(),
            kept: Vec::new(),
            replies: Vec::new(),
            outcomes: Vec::new(),
            ops: 0,
            touched: self.docs.touched_mark(),
            broken,
        }
    }

    /// Runs one caller's ops as part of `run` (check [`MergedRun::fits`] first).
    pub(crate) fn merge_caller<R>(&mut self, run: &mut MergedRun<R>, ops: Vec<WriteOp>, reply: R) {
        run.ops = run.ops.saturating_add(ops.len());
        run.kept.push(ops.clone());
        run.replies.push(reply);
        let outcome = match run.broken {
            Some(_) => Err(WriteError::Empty), // never answered: the run is rolled back
            None => self.run_nested(ops, run.txn, &mut run.out),
        };
        match outcome {
            Ok(own) => run.outcomes.push(own),
            Err(e) => {
                run.broken.get_or_insert(e);
                run.outcomes.push(Err(WriteError::Empty));
            }
        }
    }

    /// Stores the merged transaction, or rolls it back whole when it cannot be stored.
    pub(crate) fn finish_merged<R>(&mut self, run: MergedRun<R>) -> Finished<R> {
        let MergedRun {
            txn,
            out,
            kept,
            replies,
            outcomes,
            touched,
            broken,
            ..
        } = run;
        let stored = match broken {
            Some(e) => Err(e),
            None if out.is_empty() => Ok(()),
            None => self.record_built(txn, out),
        };
        let released = stored.and_then(|()| Ok(run_sql(&self.conn, "RELEASE merged")?));
        match released {
            Ok(()) => {
                self.docs.take_touched();
                Finished::Stored {
                    txn,
                    callers: outcomes.into_iter().zip(replies).collect(),
                }
            }
            Err(why) => {
                let _ = self
                    .conn
                    .execute_batch("ROLLBACK TO merged; RELEASE merged");
                self.docs.evict_touched_since(touched);
                self.resync_counters();
                Finished::Undone {
                    why,
                    callers: kept.into_iter().zip(replies).collect(),
                }
            }
        }
    }

    /// One caller's ops in a nested savepoint: its changes, or its refusal with everything it
    /// wrote rolled back. `Err` only when the savepoint itself fails.
    fn run_nested(
        &mut self,
        ops: Vec<WriteOp>,
        txn: TxnId,
        out: &mut Built,
    ) -> Result<Result<Vec<RecordChange>, WriteError>, WriteError> {
        let mark = out.mark();
        let touched = self.docs.touched_mark();
        run_sql(&self.conn, "SAVEPOINT caller")?;
        match self.run_ops(ops, txn, out) {
            Ok(changes) => {
                run_sql(&self.conn, "RELEASE caller")?;
                Ok(Ok(changes))
            }
            Err(refused) => {
                self.conn
                    .execute_batch("ROLLBACK TO caller; RELEASE caller")?;
                out.cut_back(mark);
                self.docs.evict_touched_since(touched);
                Ok(Err(refused))
            }
        }
    }
}

/// Runs one statement through the connection's statement cache (these run once per caller:
/// `execute_batch` would parse them every time).
fn run_sql(conn: &rusqlite::Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

#[cfg(test)]
#[path = "merged_tests.rs"]
mod tests;
