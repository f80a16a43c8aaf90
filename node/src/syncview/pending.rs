//! What each known peer lacks, without I/O beyond the decoding of transactions handed in: from
//! this replica's summary and a peer's last acknowledgement, the transactions the peer does not
//! hold, and the records (and collections) they touch.
//!
//! The rule: a record's latest state, as this replica holds it, is held by peer P iff P
//! acknowledged every transaction that touched the record and that this replica holds. The
//! transactions P lacks are exactly `held ∖ ack(P)`, so a record is pending for P iff one of
//! them touches it. Transactions already garbage-collected are inside every known peer's
//! acknowledgement (that is the GC horizon), so pruned history never counts as pending.

use std::collections::{BTreeMap, BTreeSet};

use meshlite_core::change::{Op, Txn};
use meshlite_core::ids::{ReplicaId, TxnId};

/// A record: collection and id (an integer key as its decimal string, as the store keys it).
pub type RecordKey = (String, String);

/// What one peer lacks of this replica's history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPending {
    /// Transactions held here that the peer did not acknowledge.
    pub txns: u64,
    /// Records those transactions touch.
    pub records: BTreeSet<RecordKey>,
    /// True when the pending transactions were more than were read (`records` is partial;
    /// `txns` is exact).
    pub truncated: bool,
    /// Pending transactions that could not be decoded (counted, not attributed to records).
    pub undecodable: u64,
}

impl PeerPending {
    /// Adds the transactions read for this peer (encoded, as the store keeps them).
    pub fn absorb(&mut self, encoded: &[Vec<u8>], ids: &[TxnId]) {
        for (bytes, id) in encoded.iter().zip(ids) {
            match Txn::decode(bytes) {
                Ok(txn) => self.records.extend(txn.ops.iter().map(record_of)),
                Err(e) => {
                    tracing::warn!(txn = ?id, error = %e, "stored transaction does not decode");
                    self.undecodable += 1;
                }
            }
        }
    }

    /// Pending records per collection.
    pub fn by_collection(&self) -> BTreeMap<&str, u64> {
        let mut out = BTreeMap::new();
        for (c, _) in &self.records {
            *out.entry(c.as_str()).or_default() += 1;
        }
        out
    }
}

fn record_of(op: &Op) -> RecordKey {
    match op {
        Op::Doc { collection, id, .. }
        | Op::Delete { collection, id, .. }
        | Op::Append { collection, id, .. } => (collection.clone(), id.clone()),
    }
}

/// Where one record stands with every known peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSync {
    /// Peers that hold its latest change.
    pub holders: Vec<ReplicaId>,
    /// Peers that do not (yet).
    pub lacking: Vec<ReplicaId>,
}

/// Splits the known peers into those that hold `record`'s latest change and those that lack it.
/// A peer whose pending set was only partly read counts as lacking every record it might lack
/// (unconfirmed is not synced).
pub fn record_sync(record: &RecordKey, peers: &[(ReplicaId, &PeerPending)]) -> RecordSync {
    let mut sync = RecordSync {
        holders: Vec::new(),
        lacking: Vec::new(),
    };
    for (replica, p) in peers {
        match p.truncated || p.records.contains(record) {
            true => sync.lacking.push(*replica),
            false => sync.holders.push(*replica),
        }
    }
    sync
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshlite_core::ids::Seq;

    fn txn(origin: ReplicaId, seq: Seq, records: &[(&str, &str)]) -> (Vec<u8>, TxnId) {
        let id = TxnId { origin, seq };
        let ops = records
            .iter()
            .map(|(c, i)| Op::Delete {
                collection: (*c).into(),
                id: (*i).into(),
                incarnation: 1,
            })
            .collect();
        let t = Txn {
            id,
            timestamp_ms: 0,
            schema_version: 0,
            ops,
        };
        (t.encode(), id)
    }

    #[test]
    fn pending_records_come_from_the_transactions_a_peer_lacks() {
        let me = ReplicaId::random();
        let (a, ia) = txn(me, 1, &[("tasks", "t1"), ("jobs", "j1")]);
        let (b, ib) = txn(me, 2, &[("tasks", "t2")]);
        let mut p = PeerPending {
            txns: 3,
            ..PeerPending::default()
        };
        p.absorb(&[a, b, vec![0xff, 0x00]], &[ia, ib, ib]);
        assert_eq!(p.undecodable, 1);
        assert_eq!(p.records.len(), 3);
        assert_eq!(
            p.by_collection(),
            BTreeMap::from([("jobs", 1), ("tasks", 2)])
        );

        let (x, y) = (ReplicaId::random(), ReplicaId::random());
        let empty = PeerPending::default();
        let peers = [(x, &p), (y, &empty)];
        let s = record_sync(&("tasks".into(), "t1".into()), &peers);
        assert_eq!((s.holders, s.lacking), (vec![y], vec![x]));
        let s = record_sync(&("tasks".into(), "t9".into()), &peers);
        assert_eq!((s.holders.len(), s.lacking.len()), (2, 0));
    }
}
