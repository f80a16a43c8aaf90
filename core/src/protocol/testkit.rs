//! Test support: in-memory replicas and a driver that runs two sessions against each other.
//!
//! Enabled for this crate's tests and, for other crates (simulator, benches, fuzz), by the
//! `testkit` feature. A [`MemReplica`] is the protocol's view of a store — encoded transactions
//! by id plus the summary — without SQLite or Automerge, so thousands of them fit in one
//! process. [`serve`] plays the host of one session (answers `NeedTxns`, applies `Received`);
//! [`Pair`] moves bytes between two sessions in lock-step "flights" of one one-way latency each
//! on virtual time, so round trips and bytes can be counted exactly.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use super::frame::Hello;
use super::session::{Event, Role, Session, SessionConfig};
use crate::change::{DecodeTxnError, Op, Txn};
use crate::ids::{ReplicaId, Seq, TxnId};
use crate::version::Summary;

/// An in-memory replica: encoded transactions by id and the summary of what it holds.
#[derive(Clone, Debug)]
pub struct MemReplica {
    /// This replica's id (the origin of its own writes).
    pub id: ReplicaId,
    txns: BTreeMap<TxnId, Vec<u8>>,
    summary: Summary,
}

impl MemReplica {
    /// An empty replica.
    pub fn new(id: ReplicaId) -> Self {
        Self {
            id,
            txns: BTreeMap::new(),
            summary: Summary::new(),
        }
    }

    /// What it holds.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The encoded transactions it holds.
    pub fn txns(&self) -> &BTreeMap<TxnId, Vec<u8>> {
        &self.txns
    }

    /// Number of transactions held.
    pub fn len(&self) -> usize {
        self.txns.len()
    }

    /// True when it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    /// Writes a local transaction with the next sequence number of this replica's origin.
    pub fn write(&mut self, ops: Vec<Op>) -> TxnId {
        let id = TxnId {
            origin: self.id,
            seq: self.summary.next_seq(&self.id),
        };
        let txn = Txn {
            id,
            timestamp_ms: 0,
            schema_version: 1,
            ops,
        };
        self.apply(&txn);
        id
    }

    /// Writes `count` local transactions, each appending one row of about `row_bytes` bytes to
    /// the `sensor_data` log.
    pub fn write_rows(&mut self, count: usize, row_bytes: usize) -> Vec<TxnId> {
        (0..count)
            .map(|_| self.write(vec![self.row_op(row_bytes)]))
            .collect()
    }

    fn row_op(&self, row_bytes: usize) -> Op {
        let seq = self.summary.next_seq(&self.id);
        let pad = "x".repeat(row_bytes.saturating_sub(8));
        Op::Append {
            collection: "sensor_data".into(),
            id: format!("{}-{seq}", self.id.short()),
            row: format!("{{\"v\":\"{pad}\"}}"),
        }
    }

    /// Stores a decoded transaction; false if already held.
    pub fn apply(&mut self, txn: &Txn) -> bool {
        if !self.summary.insert(txn.id) {
            return false;
        }
        self.txns.insert(txn.id, txn.encode());
        true
    }

    /// Decodes and stores an encoded transaction; `Ok(false)` if already held.
    pub fn insert_encoded(&mut self, bytes: &[u8]) -> Result<bool, DecodeTxnError> {
        Txn::decode(bytes).map(|txn| self.apply(&txn))
    }

    /// Copies the transactions of `other` for which `keep` holds.
    pub fn copy_from(&mut self, other: &MemReplica, mut keep: impl FnMut(&TxnId) -> bool) {
        for (id, bytes) in other.txns.iter().filter(|(id, _)| keep(id)) {
            if self.summary.insert(*id) {
                self.txns.insert(*id, bytes.clone());
            }
        }
    }

    /// Loads the encoded transactions in `ranges` that it holds.
    pub fn load(&self, ranges: &[(ReplicaId, RangeInclusive<Seq>)]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (origin, r) in ranges {
            let lo = TxnId {
                origin: *origin,
                seq: *r.start(),
            };
            let hi = TxnId {
                origin: *origin,
                seq: *r.end(),
            };
            out.extend(self.txns.range(lo..=hi).map(|(_, b)| b.clone()));
        }
        out
    }

    /// A `Hello` describing this replica (schema version 1, no collection filter).
    pub fn hello(&self, cluster: &str) -> Hello {
        Hello {
            cluster: cluster.into(),
            replica: self.id,
            schema_version: 1,
            collections: None,
            summary: self.summary.clone(),
        }
    }
}

/// What [`serve`] did besides handling events.
#[derive(Debug, Default)]
pub struct Served {
    /// Events a store-owning host does not handle itself (`PeerHello`, `Complete`, `PeerAck`,
    /// `Closed`, `Failed`), in order.
    pub events: Vec<Event>,
    /// Transactions newly applied, in arrival order (what a node would relay onward).
    pub applied: Vec<TxnId>,
    /// Transactions that failed to decode.
    pub rejected: usize,
}

/// Drains `session`'s events as a host would: answers `NeedTxns` from `replica` in one call,
/// applies `Received` transactions and, when `ack` is set and something new arrived, acks the
/// new summary. Returns everything else.
pub fn serve(replica: &mut MemReplica, session: &mut Session, ack: bool) -> Served {
    let mut served = Served::default();
    while let Some(event) = session.poll_event() {
        match event {
            Event::NeedTxns { ranges, .. } => {
                let sent = session.send_txns(replica.load(&ranges));
                if let Err(e) = sent.and_then(|()| session.finish_sending()) {
                    session.abort(&e.to_string());
                }
            }
            Event::Received { txns, rejected } => {
                served.rejected += rejected.len();
                let new = txns.iter().filter(|t| replica.apply(t)).map(|t| t.id);
                served.applied.extend(new);
            }
            other => served.events.push(other),
        }
    }
    if ack && !served.applied.is_empty() {
        // An ack within limits only fails on a closed session, which needs no ack.
        let _ = session.ack(replica.summary().clone());
    }
    served
}

/// Counts from a [`Pair::run`].
#[derive(Debug, Default)]
pub struct PairReport {
    /// One-way flights until neither side had anything to send (2 = one round trip).
    pub flights: u32,
    /// Bytes from `a` to `b`.
    pub bytes_a_to_b: u64,
    /// Bytes from `b` to `a`.
    pub bytes_b_to_a: u64,
    /// Unhandled events of `a` (see [`Served::events`]).
    pub events_a: Vec<Event>,
    /// Unhandled events of `b`.
    pub events_b: Vec<Event>,
    /// Transactions `a` applied.
    pub applied_a: usize,
    /// Transactions `b` applied.
    pub applied_b: usize,
}

impl PairReport {
    /// Round trips: flights / 2, rounded up.
    pub fn round_trips(&self) -> u32 {
        self.flights.div_ceil(2)
    }

    /// Bytes in both directions.
    pub fn total_bytes(&self) -> u64 {
        self.bytes_a_to_b + self.bytes_b_to_a
    }

    /// True when both sides reported `Complete`.
    pub fn completed(&self) -> bool {
        let done = |ev: &[Event]| ev.iter().any(|e| matches!(e, Event::Complete { .. }));
        done(&self.events_a) && done(&self.events_b)
    }
}

/// Two sessions wired back to back on virtual time.
#[derive(Debug)]
pub struct Pair {
    /// The initiator's session.
    pub a: Session,
    /// The responder's session.
    pub b: Session,
    /// Virtual time; advances by `latency` per flight.
    pub now: Instant,
    /// One-way latency.
    pub latency: Duration,
    /// Whether hosts ack what they applied.
    pub ack: bool,
}

impl Pair {
    /// Sessions for two hellos with the default configuration, 10 ms one-way latency, no acks.
    /// Panics if a hello breaks a wire limit (test input).
    pub fn new(a: Hello, b: Hello) -> Self {
        Self::with_config(SessionConfig::default(), a, b)
    }

    /// Sessions for two hellos with `config` on both sides.
    pub fn with_config(config: SessionConfig, a: Hello, b: Hello) -> Self {
        let now = Instant::now();
        let session = |role, hello| {
            Session::new(config.clone(), role, hello, now).expect("test hello within limits")
        };
        Self {
            a: session(Role::Initiator, a),
            b: session(Role::Responder, b),
            now,
            latency: Duration::from_millis(10),
            ack: false,
        }
    }

    /// Runs flights until neither side has anything to send or `max_flights` is reached; the
    /// replicas serve their sessions between flights.
    pub fn run(
        &mut self,
        ra: &mut MemReplica,
        rb: &mut MemReplica,
        max_flights: u32,
    ) -> PairReport {
        let mut report = PairReport::default();
        loop {
            self.serve_both(ra, rb, &mut report);
            let (ab, ba) = (drain(&mut self.a), drain(&mut self.b));
            if (ab.is_empty() && ba.is_empty()) || report.flights == max_flights {
                return report;
            }
            report.flights += 1;
            report.bytes_a_to_b += ab.len() as u64;
            report.bytes_b_to_a += ba.len() as u64;
            self.now += self.latency;
            // Errors also arrive as `Failed` events.
            let _ = self.b.handle_bytes(self.now, &ab);
            let _ = self.a.handle_bytes(self.now, &ba);
        }
    }

    fn serve_both(&mut self, ra: &mut MemReplica, rb: &mut MemReplica, report: &mut PairReport) {
        let sa = serve(ra, &mut self.a, self.ack);
        let sb = serve(rb, &mut self.b, self.ack);
        report.applied_a += sa.applied.len();
        report.applied_b += sb.applied.len();
        report.events_a.extend(sa.events);
        report.events_b.extend(sb.events);
    }
}

/// Everything `session` has to send, concatenated.
pub fn drain(session: &mut Session) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(bytes) = session.poll_transmit() {
        out.extend(bytes);
    }
    out
}

/// Syncs two replicas of cluster `"test"` in one session and returns the counts.
pub fn sync_pair(a: &mut MemReplica, b: &mut MemReplica) -> PairReport {
    let mut pair = Pair::new(a.hello("test"), b.hello("test"));
    pair.run(a, b, 64)
}
