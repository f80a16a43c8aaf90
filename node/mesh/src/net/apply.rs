//! Inbound coalescing: pushes that arrive together, from one peer or from many, are applied in
//! one replica call, so a burst costs one writer command, one SQLite transaction and one store
//! event (one wake-up of every change subscriber) instead of one per push.
//!
//! Every push reader ([`super::push::PushReader`]) hands the transactions it decoded to the
//! node's one [`Applier`] and waits for the outcome before it reads on (so QUIC flow control
//! still pushes back on a fast sender). The applier's task takes the first job, then whatever
//! else is queued at that moment ("whatever is queued", no timer: an idle node applies a lone
//! push at once), up to [`APPLY_BATCH_BYTES`], drops transactions that appear twice in the
//! batch (the same change relayed by two peers), and makes one [`Replica::apply_txns`] call;
//! up to [`APPLY_IN_FLIGHT`] such calls run at once.
//! Only after it returned (committed) does each reader get its answer and publish its
//! `PushReceived`, so nothing is relayed before it is stored. If the call fails, every job of
//! the batch gets the error and its stream stops with `STREAM_RETRY_LATER`; anti-entropy
//! delivers those transactions later, as before.
//!
//! Memory: at most [`APPLY_QUEUE`] jobs wait (readers block when it is full), each bounded by
//! what one read of a push stream holds (a chunk plus one frame).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use meshlite_core::{Txn, TxnId};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::replica::{Replica, ReplicaError};

/// Jobs that may wait for the applier; push readers wait when it is full.
pub const APPLY_QUEUE: usize = 64;

/// Most bytes of encoded transactions in one batch (the first job is always taken whole). Kept
/// small: one batch is one writer command whose replies all wait for its commit, so a large one
/// holds up every push behind it.
pub const APPLY_BATCH_BYTES: usize = 256 * 1024;

/// Batches handed to the replica at once: while one commits, the next is already queued at the
/// writer, so the writer never waits for the applier between batches. Transactions of a later
/// batch that depend on an earlier one's are parked and unparked by the store as usual.
pub const APPLY_IN_FLIGHT: usize = 2;

/// Counters of the applier, exported on `/metrics` by the node.
#[derive(Debug, Default)]
pub struct ApplyStats {
    batches: AtomicU64,
    jobs: AtomicU64,
    txns: AtomicU64,
}

/// A snapshot of [`ApplyStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ApplyCounts {
    /// Replica calls (each one writer command and one store event).
    pub batches: u64,
    /// Push reads handed in (each one or more `Push` frames).
    pub jobs: u64,
    /// Transactions handed to the replica (after dropping duplicates within a batch).
    pub txns: u64,
}

impl ApplyStats {
    /// The counters now.
    pub fn snapshot(&self) -> ApplyCounts {
        ApplyCounts {
            batches: self.batches.load(Ordering::Relaxed),
            jobs: self.jobs.load(Ordering::Relaxed),
            txns: self.txns.load(Ordering::Relaxed),
        }
    }
}

/// One push read's transactions and where its outcome goes: how many were new here.
struct Job {
    txns: Vec<Txn>,
    bytes: usize,
    reply: oneshot::Sender<Result<usize, ReplicaError>>,
}

/// The node's handle on its applier task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Applier {
    jobs: mpsc::Sender<Job>,
    stats: Arc<ApplyStats>,
}

impl Applier {
    /// Spawns the applier task for `backend`; it stops when `cancel` fires (waiting callers
    /// then get [`ReplicaError::Closed`]).
    pub fn start<B: Replica>(backend: B, cancel: CancellationToken) -> Self {
        let (jobs, rx) = mpsc::channel(APPLY_QUEUE);
        let stats = Arc::new(ApplyStats::default());
        tokio::spawn(run(backend, rx, stats.clone(), cancel));
        Self { jobs, stats }
    }

    /// Applies `txns` (`bytes` encoded) together with whatever else is queued; returns how
    /// many of them were new here (an attribution: the batch's count of new transactions is
    /// shared out over its jobs in order, so the sum over jobs is exact).
    pub async fn apply(&self, txns: Vec<Txn>, bytes: usize) -> Result<usize, ReplicaError> {
        let (reply, rx) = oneshot::channel();
        let job = Job { txns, bytes, reply };
        self.jobs
            .send(job)
            .await
            .map_err(|_| ReplicaError::Closed)?;
        rx.await.map_err(|_| ReplicaError::Closed)?
    }

    /// The counters.
    pub fn stats(&self) -> Arc<ApplyStats> {
        self.stats.clone()
    }
}

async fn run<B: Replica>(
    backend: B,
    mut rx: mpsc::Receiver<Job>,
    stats: Arc<ApplyStats>,
    cancel: CancellationToken,
) {
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            job = rx.recv(), if open && in_flight.len() < APPLY_IN_FLIGHT => match job {
                Some(first) => {
                    let jobs = take_queued(&mut rx, first);
                    in_flight.push(apply_batch(&backend, jobs, &stats));
                }
                None => open = false,
            },
        }
    }
}

/// `first` and whatever else is queued now, up to about [`APPLY_BATCH_BYTES`].
fn take_queued(rx: &mut mpsc::Receiver<Job>, first: Job) -> Vec<Job> {
    let mut bytes = first.bytes;
    let mut jobs = vec![first];
    while bytes < APPLY_BATCH_BYTES {
        match rx.try_recv() {
            Ok(job) => {
                bytes += job.bytes;
                jobs.push(job);
            }
            Err(_) => break,
        }
    }
    jobs
}

/// One replica call for `jobs`, then every job's answer.
async fn apply_batch<B: Replica>(backend: &B, jobs: Vec<Job>, stats: &ApplyStats) {
    let mut seen: HashSet<TxnId> = HashSet::new();
    let mut all = Vec::new();
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs {
        let before = all.len();
        all.extend(job.txns.into_iter().filter(|t| seen.insert(t.id)));
        let ids: Vec<TxnId> = all[before..].iter().map(|t| t.id).collect();
        replies.push((job.reply, ids));
    }
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats
        .jobs
        .fetch_add(replies.len() as u64, Ordering::Relaxed);
    stats.txns.fetch_add(all.len() as u64, Ordering::Relaxed);
    match backend.apply_txns(all).await {
        Ok(applied) => {
            let rejected: HashSet<TxnId> = applied.rejected.iter().map(|(id, _)| *id).collect();
            let mut left = applied.new;
            for (reply, ids) in replies {
                let accepted = ids.iter().filter(|id| !rejected.contains(id)).count();
                let share = accepted.min(left);
                left -= share;
                let _ = reply.send(Ok(share));
            }
        }
        Err(e) => {
            for (reply, _) in replies {
                let _ = reply.send(Err(copy_error(&e)));
            }
        }
    }
}

/// The same failure for each job of a failed batch.
fn copy_error(e: &ReplicaError) -> ReplicaError {
    match e {
        ReplicaError::Closed => ReplicaError::Closed,
        ReplicaError::Corrupt(m) => ReplicaError::Corrupt(m.clone()),
        ReplicaError::Unavailable(source) => {
            ReplicaError::unavailable(std::io::Error::other(source.to_string()))
        }
    }
}
