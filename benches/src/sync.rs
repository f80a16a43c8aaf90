//! Two real sync sessions wired back to back in memory, each hosted by a real store.
//!
//! [`sync_stores`] is the host loop a node runs, minus the network: the store's summary goes
//! into the `Hello`, `NeedTxns` is answered from `txns_for`, received transactions go to
//! `apply_remote`. Bytes move in lock-step flights (all that each side has queued, then the peer
//! handles it), so a flight is one one-way trip and two flights are one round trip; every byte
//! the sessions hand out is counted.

use std::time::{Duration, Instant};

use meshlite_core::Store;
use meshlite_core::protocol::{Event, Hello, Role, Session, SessionConfig};
use serde_json::{Value, json};

use crate::BenchError;
use crate::workload::export;

/// Cluster id both sides present.
pub const CLUSTER: &str = "meshlite-bench";

/// Bytes of stored transactions read per `txns_for` call while answering `NeedTxns`.
const LOAD_BUDGET: usize = 1 << 20;

/// Flights after which a sync that has not gone quiet is declared stuck.
const MAX_FLIGHTS: u32 = 64;

/// What one sync between two stores cost.
#[derive(Clone, Debug, Default)]
pub struct SyncCosts {
    /// One-way flights until neither side had anything to send.
    pub flights: u32,
    /// Bytes `a` sent.
    pub bytes_a_to_b: u64,
    /// Bytes `b` sent.
    pub bytes_b_to_a: u64,
    /// Frames `a` sent.
    pub frames_a_to_b: u64,
    /// Frames `b` sent.
    pub frames_b_to_a: u64,
    /// Transactions `a` applied.
    pub applied_by_a: usize,
    /// Transactions `b` applied.
    pub applied_by_b: usize,
    /// Wall time of the whole exchange, including loading and applying.
    pub elapsed: Duration,
}

impl SyncCosts {
    /// Round trips: flights / 2, rounded up.
    pub fn round_trips(&self) -> u32 {
        self.flights.div_ceil(2)
    }

    /// Bytes in both directions.
    pub fn total_bytes(&self) -> u64 {
        self.bytes_a_to_b + self.bytes_b_to_a
    }

    /// The costs as a JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "round_trips": self.round_trips(),
            "flights": self.flights,
            "bytes_a_to_b": self.bytes_a_to_b,
            "bytes_b_to_a": self.bytes_b_to_a,
            "bytes_total": self.total_bytes(),
            "frames_a_to_b": self.frames_a_to_b,
            "frames_b_to_a": self.frames_b_to_a,
            "applied_by_a": self.applied_by_a,
            "applied_by_b": self.applied_by_b,
            "elapsed_ms": self.elapsed.as_millis() as u64,
        })
    }
}

/// The `Hello` a node would send for `store` (no collection filter).
pub fn hello(store: &Store) -> Result<Hello, BenchError> {
    Ok(Hello {
        cluster: CLUSTER.into(),
        replica: store.replica_id(),
        schema_version: store.schema().version,
        collections: None,
        summary: store.summary()?,
    })
}

/// Runs one sync session between `a` (initiator) and `b` until both are complete and quiet.
pub fn sync_stores(a: &Store, b: &Store) -> Result<SyncCosts, BenchError> {
    let started = Instant::now();
    let mut now = started;
    let session = |role, store| {
        Session::new(SessionConfig::default(), role, hello(store)?, now)
            .map_err(|e| BenchError::Sync(e.to_string()))
    };
    let (mut sa, mut sb) = (session(Role::Initiator, a)?, session(Role::Responder, b)?);
    let mut costs = SyncCosts::default();
    let (mut done_a, mut done_b) = (false, false);
    loop {
        let (mut ab, mut ba) = (Vec::new(), Vec::new());
        done_a |= serve(a, &mut sa, &mut ab, &mut costs.applied_by_a)?;
        done_b |= serve(b, &mut sb, &mut ba, &mut costs.applied_by_b)?;
        ab.extend(drain(&mut sa));
        ba.extend(drain(&mut sb));
        if ab.is_empty() && ba.is_empty() {
            break;
        }
        if costs.flights == MAX_FLIGHTS {
            return Err(BenchError::Sync(format!(
                "still talking after {MAX_FLIGHTS} flights"
            )));
        }
        costs.flights += 1;
        costs.bytes_a_to_b += ab.len() as u64;
        costs.bytes_b_to_a += ba.len() as u64;
        now += Duration::from_millis(10);
        sb.handle_bytes(now, &ab)
            .map_err(|e| BenchError::Sync(format!("b: {e}")))?;
        sa.handle_bytes(now, &ba)
            .map_err(|e| BenchError::Sync(format!("a: {e}")))?;
    }
    if !(done_a && done_b) {
        return Err(BenchError::Sync(format!(
            "went quiet before completing (a: {done_a}, b: {done_b})"
        )));
    }
    costs.frames_a_to_b = sa.stats().frames_sent;
    costs.frames_b_to_a = sb.stats().frames_sent;
    costs.elapsed = started.elapsed();
    Ok(costs)
}

/// Drains `session`'s events as a node's host does; returns true once `Complete` was seen.
/// Bytes the session must hand out early (a full transmit queue) are appended to `out`.
fn serve(
    store: &Store,
    session: &mut Session,
    out: &mut Vec<u8>,
    applied: &mut usize,
) -> Result<bool, BenchError> {
    let mut complete = false;
    let mut received = Vec::new();
    while let Some(event) = session.poll_event() {
        match event {
            Event::NeedTxns { ranges, .. } => send_needed(store, session, ranges, out)?,
            Event::Received { txns, rejected } if rejected.is_empty() => received.extend(txns),
            Event::Received { rejected, .. } => {
                return Err(BenchError::Sync(format!("rejected: {rejected:?}")));
            }
            Event::Complete { .. } => complete = true,
            Event::Failed(e) => return Err(BenchError::Sync(e.to_string())),
            _ => {}
        }
    }
    if !received.is_empty() {
        let report = store.apply_remote(received)?;
        if !report.rejected.is_empty() || report.parked > 0 {
            return Err(BenchError::Sync(format!("apply: {report:?}")));
        }
        *applied += report.applied;
    }
    Ok(complete)
}

/// Loads the wanted transactions from the store, `LOAD_BUDGET` bytes at a time, into the session.
fn send_needed(
    store: &Store,
    session: &mut Session,
    ranges: Vec<(
        meshlite_core::ReplicaId,
        std::ops::RangeInclusive<meshlite_core::Seq>,
    )>,
    out: &mut Vec<u8>,
) -> Result<(), BenchError> {
    let txns = export(store, ranges, LOAD_BUDGET)?;
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0;
    for txn in txns {
        chunk_bytes += txn.len();
        chunk.push(txn);
        if chunk_bytes >= LOAD_BUDGET {
            queue(session, std::mem::take(&mut chunk), out)?;
            chunk_bytes = 0;
        }
    }
    queue(session, chunk, out)?;
    session
        .finish_sending()
        .map_err(|e| BenchError::Sync(e.to_string()))
}

/// `send_txns`, first moving queued bytes to `out` if the transmit queue could overflow.
fn queue(session: &mut Session, txns: Vec<Vec<u8>>, out: &mut Vec<u8>) -> Result<(), BenchError> {
    if txns.is_empty() {
        return Ok(());
    }
    if session.pending_transmit_bytes() + LOAD_BUDGET
        > SessionConfig::default().max_pending_transmit_bytes / 2
    {
        out.extend(drain(session));
    }
    session
        .send_txns(txns)
        .map_err(|e| BenchError::Sync(e.to_string()))
}

/// Everything `session` has to send, concatenated.
fn drain(session: &mut Session) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(bytes) = session.poll_transmit() {
        out.extend(bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{TASKS, fill_tasks, open_store};
    use meshlite_fixtures::records::{RecordGen, task_id};

    #[test]
    fn sync_moves_what_each_side_lacks_then_idles_in_one_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let a = open_store(&dir.path().join("a"), 64).unwrap();
        let b = open_store(&dir.path().join("b"), 64).unwrap();
        fill_tasks(&a, &mut RecordGen::new(1, 1), 50, 10).unwrap();
        fill_tasks(&b, &mut RecordGen::new(2, 1), 30, 1).unwrap();
        let first = sync_stores(&a, &b).unwrap();
        assert_eq!(
            (first.applied_by_a, first.applied_by_b, first.round_trips()),
            (30, 5, 1)
        );
        assert_eq!(a.summary().unwrap(), b.summary().unwrap());
        assert_eq!(
            a.get(TASKS, &task_id(2, 29)).unwrap(),
            b.get(TASKS, &task_id(2, 29)).unwrap()
        );
        let idle = sync_stores(&a, &b).unwrap();
        assert_eq!(
            (idle.applied_by_a, idle.applied_by_b, idle.round_trips()),
            (0, 0, 1)
        );
        assert!(idle.total_bytes() < first.total_bytes() / 10);
    }
}
