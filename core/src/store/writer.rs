//! The writer thread: the only owner of the SQLite write connection.
//!
//! Commands arrive on a bounded channel ([`COMMAND_QUEUE`]). The thread blocks for the first
//! command, opens one SQLite transaction, and keeps draining queued commands into it (group
//! commit) until the queue is empty or the group hits [`GROUP_MAX_COMMANDS`] or
//! [`GROUP_TIME_BUDGET`], so a burst of work never holds the lock long. Each command runs inside
//! its own SAVEPOINT: a failing command is rolled back alone and the others still commit. Replies
//! (tokio oneshot, usable from sync and async code) and [`StoreEvent`]s are sent only after
//! COMMIT returned, so an acknowledged write is durable. Consecutive queued `Transact` commands
//! go further and share one store transaction ([`super::merged`]), each caller in its own nested
//! savepoint.
//!
//! In-memory state (the summary, the parked count, the document cache) mirrors the database:
//! it is updated only after the SQL that persists it succeeded, documents touched by a
//! rolled-back savepoint are evicted, and a failed COMMIT reloads everything from disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::docs::DocCache;
use super::error::{ApplyError, CloseError, WriteError, copy_sql_error};
use super::idempotency::{IdempotencyKey, Once};
use super::merged::{Finished, MergedRun, mergeable};
use super::rows::load_summary;
use super::types::{ApplyReport, Committed, GcReport, RecordChange, StoreEvent, WriteOp};
use crate::change::Txn;
use crate::ids::{ReplicaId, TxnId};
use crate::schema::Schema;
use crate::version::Summary;

/// Capacity of the command channel; senders wait when it is full (back-pressure).
pub const COMMAND_QUEUE: usize = 256;

/// Most commands folded into one SQLite transaction.
pub(crate) const GROUP_MAX_COMMANDS: usize = 512;

/// A group stops taking queued commands once it has run this long.
pub(crate) const GROUP_TIME_BUDGET: Duration = Duration::from_millis(50);

type Reply<T, E> = oneshot::Sender<Result<T, E>>;

/// What the writer has committed since the store opened: groups (SQLite transactions) and the
/// commands they held. Both are counted after COMMIT returned and before any of the group's
/// replies is sent, so a caller holding a reply sees its own group counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Committed groups.
    pub groups: u64,
    /// Commands in those groups (each a caller's transaction, apply, ack, ...).
    pub commands: u64,
}

/// The writer's commit counters, shared with the [`super::Store`] handle.
#[derive(Debug, Default)]
pub(crate) struct CommitCounters {
    groups: AtomicU64,
    commands: AtomicU64,
}

impl CommitCounters {
    fn record(&self, commands: usize) {
        self.commands.fetch_add(commands as u64, Ordering::Relaxed);
        // Release: a reader that sees the group also sees its commands.
        self.groups.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn snapshot(&self) -> CommitStats {
        let groups = self.groups.load(Ordering::Acquire);
        CommitStats {
            groups,
            commands: self.commands.load(Ordering::Relaxed),
        }
    }
}

/// A request to the writer thread.
#[derive(Debug)]
pub(crate) enum Command {
    Transact {
        ops: Vec<WriteOp>,
        reply: Reply<Committed, WriteError>,
    },
    TransactOnce {
        ops: Vec<WriteOp>,
        key: IdempotencyKey,
        reply: Reply<Once, WriteError>,
    },
    Apply {
        txns: Vec<Txn>,
        reply: Reply<ApplyReport, ApplyError>,
    },
    PeerAck {
        peer: ReplicaId,
        held: Summary,
        reply: Reply<(), WriteError>,
    },
    ForgetPeer {
        peer: ReplicaId,
        reply: Reply<(), WriteError>,
    },
    Gc {
        reply: Reply<GcReport, WriteError>,
    },
    Compact {
        max_docs: usize,
        reply: Reply<usize, WriteError>,
    },
    Close {
        reply: Reply<(), CloseError>,
    },
}

/// Where a local transaction's answer goes.
type CommittedReply = Reply<Committed, WriteError>;

/// A command's outcome, held until its group commits.
/// Sends a command's reply once its group's COMMIT outcome is known.
type Finish = Box<dyn FnOnce(Option<&rusqlite::Error>) + Send>;

struct Pending {
    finish: Finish,
    /// Sent before the reply, so a caller that got its reply can already see the event.
    event: Option<StoreEvent>,
}

impl Pending {
    fn new<T: Send + 'static, E: Send + 'static>(
        reply: Reply<T, E>,
        result: Result<T, E>,
        storage: fn(rusqlite::Error) -> E,
        event: Option<StoreEvent>,
    ) -> Self {
        let event = event.filter(|_| result.is_ok());
        let finish = Box::new(move |commit_error: Option<&rusqlite::Error>| {
            let result = match commit_error {
                Some(e) => Err(storage(copy_sql_error(e))),
                None => result,
            };
            let _ = reply.send(result);
        });
        Pending { finish, event }
    }
}

/// State owned by the writer thread.
#[derive(Debug)]
pub(crate) struct Writer {
    pub conn: Connection,
    pub replica: ReplicaId,
    pub schema: Arc<Schema>,
    pub summary: Summary,
    pub docs: DocCache,
    pub rowversion: i64,
    pub parked: u64,
    pub events: broadcast::Sender<StoreEvent>,
    /// Collections kept from remote transactions (`None`: all). See [`super::OpenOptions`].
    pub replicate: Option<std::collections::BTreeSet<String>>,
    /// Groups and commands committed (read by [`super::Store::commit_stats`]).
    pub commits: Arc<CommitCounters>,
    /// The data directory's lock, held for as long as the writer runs (released when the
    /// thread exits, after the last commit); none for an in-memory store.
    #[expect(
        dead_code,
        reason = "held for its lifetime: dropping the file releases the lock"
    )]
    pub dir_lock: Option<std::fs::File>,
}

impl Writer {
    /// Runs until a `Close` command or until every sender is gone.
    pub fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            if let Some(close) = self.group(first, &mut rx) {
                let _ = close.send(self.checkpoint());
                return;
            }
        }
        let _ = self.checkpoint();
    }

    /// Runs the commands queued now, in groups as [`Self::run`] does, on the caller's thread (a
    /// store whose writer runs inline: `store::memory`, feature `testkit`). True once a close
    /// request was answered: the writer is done and should be dropped.
    #[cfg(any(test, feature = "testkit"))]
    pub fn run_queued(&mut self, rx: &mut mpsc::Receiver<Command>) -> bool {
        while let Ok(first) = rx.try_recv() {
            if let Some(close) = self.group(first, rx) {
                let _ = close.send(self.checkpoint());
                return true;
            }
        }
        false
    }

    /// Runs one group of commands in one SQLite transaction; returns a pending close request.
    fn group(
        &mut self,
        first: Command,
        rx: &mut mpsc::Receiver<Command>,
    ) -> Option<Reply<(), CloseError>> {
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            return self.refuse(first, &e);
        }
        // The budget bounds how long the group holds the lock, not how long it waited for it.
        let started = Instant::now();
        let mut done = Vec::new();
        let mut close = None;
        let mut merging: Option<MergedRun<CommittedReply>> = None;
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Close { reply } => {
                    close = Some(reply);
                    break;
                }
                Command::Transact { ops, reply } if mergeable(&ops) => {
                    if let Some(run) = merging.take_if(|run| !run.fits(&ops)) {
                        done.extend(self.finish_run(run));
                    }
                    let run = merging.get_or_insert_with(|| self.begin_merged());
                    self.merge_caller(run, ops, reply);
                }
                cmd => {
                    if let Some(run) = merging.take() {
                        done.extend(self.finish_run(run));
                    }
                    done.push(self.command(cmd));
                }
            }
            let commands = done.len() + merging.as_ref().map_or(0, MergedRun::len);
            if commands >= GROUP_MAX_COMMANDS || started.elapsed() >= GROUP_TIME_BUDGET {
                break;
            }
            next = rx.try_recv().ok();
        }
        if let Some(run) = merging.take() {
            done.extend(self.finish_run(run));
        }
        let commit = self.conn.execute_batch("COMMIT");
        match commit {
            Ok(()) if done.is_empty() => {} // only a close request: nothing was committed
            Ok(()) => self.commits.record(done.len()),
            Err(_) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.resync();
            }
        }
        for p in done {
            if let (Ok(()), Some(event)) = (&commit, p.event) {
                let _ = self.events.send(event);
            }
            (p.finish)(commit.as_ref().err());
        }
        close
    }

    /// Answers a command that could not run because its group could not start.
    fn refuse(&mut self, cmd: Command, e: &rusqlite::Error) -> Option<Reply<(), CloseError>> {
        let err = || copy_sql_error(e);
        match cmd {
            Command::Transact { reply, .. } => drop(reply.send(Err(err().into()))),
            Command::TransactOnce { reply, .. } => drop(reply.send(Err(err().into()))),
            Command::Apply { reply, .. } => drop(reply.send(Err(err().into()))),
            Command::PeerAck { reply, .. } | Command::ForgetPeer { reply, .. } => {
                drop(reply.send(Err(err().into())))
            }
            Command::Gc { reply } => drop(reply.send(Err(err().into()))),
            Command::Compact { reply, .. } => drop(reply.send(Err(err().into()))),
            Command::Close { reply } => return Some(reply),
        }
        None
    }

    fn command(&mut self, cmd: Command) -> Pending {
        match cmd {
            Command::Transact { ops, reply } => match self.savepoint(|w| w.transact(ops)) {
                Ok((c, ev)) => Pending::new(reply, Ok(c), WriteError::Storage, ev),
                Err(e) => Pending::new(reply, Err(e), WriteError::Storage, None),
            },
            Command::TransactOnce { ops, key, reply } => {
                match self.savepoint(|w| w.transact_once(ops, &key)) {
                    Ok((once, ev)) => Pending::new(reply, Ok(once), WriteError::Storage, ev),
                    Err(e) => Pending::new(reply, Err(e), WriteError::Storage, None),
                }
            }
            Command::Apply { txns, reply } => match self.savepoint(|w| w.apply(txns)) {
                Ok((r, ev)) => Pending::new(reply, Ok(r), ApplyError::Storage, ev),
                Err(e) => Pending::new(
                    reply,
                    Err(ApplyError::Storage(e)),
                    ApplyError::Storage,
                    None,
                ),
            },
            Command::PeerAck { peer, held, reply } => {
                let r = self
                    .savepoint(|w| w.record_peer_ack(&peer, &held))
                    .map_err(WriteError::from);
                Pending::new(reply, r, WriteError::Storage, None)
            }
            Command::ForgetPeer { peer, reply } => {
                let r = self
                    .savepoint(|w| w.forget_peer(&peer))
                    .map_err(WriteError::from);
                Pending::new(reply, r, WriteError::Storage, None)
            }
            Command::Gc { reply } => {
                Pending::new(reply, self.savepoint(|w| w.gc()), WriteError::Storage, None)
            }
            Command::Compact { max_docs, reply } => {
                let r = self.savepoint(|w| w.compact(max_docs));
                Pending::new(reply, r, WriteError::Storage, None)
            }
            Command::Close { .. } => unreachable!("close is handled by the group loop"),
        }
    }

    /// Ends a merged run: each caller's reply, or when the merged transaction could not be
    /// stored, each caller run alone.
    fn finish_run(&mut self, run: MergedRun<CommittedReply>) -> Vec<Pending> {
        match self.finish_merged(run) {
            Finished::Stored { txn, callers } => self.merged_replies(txn, callers),
            Finished::Undone { why, callers } => {
                tracing::warn!("a merged transaction failed ({why}); running its callers alone");
                callers
                    .into_iter()
                    .map(|(ops, reply)| self.command(Command::Transact { ops, reply }))
                    .collect()
            }
        }
    }

    /// Each merged caller's reply; one event carries every caller's changes (sent before the
    /// first committed caller's reply).
    fn merged_replies(
        &self,
        txn: TxnId,
        callers: Vec<(Result<Vec<RecordChange>, WriteError>, CommittedReply)>,
    ) -> Vec<Pending> {
        let mut event = self.has_subscribers().then(|| StoreEvent::Committed {
            txns: Arc::from([txn]),
            local: true,
            changes: callers
                .iter()
                .filter_map(|(o, _)| o.as_ref().ok())
                .flatten()
                .cloned()
                .collect(),
        });
        callers
            .into_iter()
            .map(|(outcome, reply)| {
                let result = outcome.map(|changes| Committed { txn, changes });
                let ev = match result.is_ok() {
                    true => event.take(),
                    false => None,
                };
                Pending::new(reply, result, WriteError::Storage, ev)
            })
            .collect()
    }

    /// Runs `f` inside a SAVEPOINT; on error rolls back to it and evicts touched documents.
    fn savepoint<T, E: From<rusqlite::Error>>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<T, E> {
        self.docs.take_touched();
        self.conn.execute_batch("SAVEPOINT cmd")?;
        match f(self) {
            Ok(v) => {
                self.conn.execute_batch("RELEASE cmd")?;
                self.docs.take_touched();
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK TO cmd; RELEASE cmd");
                self.docs.evict_touched_since(0);
                self.resync_counters();
                Err(e)
            }
        }
    }

    /// Reloads the summary and parked count from the database.
    pub(crate) fn resync_counters(&mut self) {
        match load_summary(&self.conn) {
            Ok(s) => self.summary = s,
            Err(e) => tracing::error!("cannot reload the summary after a rollback: {e}"),
        }
        if let Ok(n) = self
            .conn
            .query_row("SELECT COUNT(*) FROM parked", [], |r| r.get::<_, i64>(0))
        {
            self.parked = n as u64;
        }
    }

    /// After a failed COMMIT: nothing of the group happened; reload all in-memory state.
    fn resync(&mut self) {
        self.docs.clear();
        self.resync_counters();
    }

    /// The next rowversion (a local monotonic counter; gaps after rollbacks are harmless).
    pub fn next_rowversion(&mut self) -> i64 {
        self.rowversion += 1;
        self.rowversion
    }

    fn checkpoint(&mut self) -> Result<(), CloseError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// True when someone listens for events (skip building them otherwise).
    pub fn has_subscribers(&self) -> bool {
        self.events.receiver_count() > 0
    }
}
