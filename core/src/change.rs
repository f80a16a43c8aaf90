//! Transactions: the unit of replication.
//!
//! Every local write is one [`Txn`] named by its [`TxnId`] (origin replica, sequence number). A
//! transaction carries one [`Op`] per record it touches; its ops are applied together in one
//! SQLite transaction on every replica, so no replica ever shows half of one. Transactions are
//! stored with their origin so any replica can relay them, and applying one is idempotent: the
//! summary ([`crate::version::Summary`]) records it as held in the same SQLite transaction.
//!
//! Document ops carry the raw bytes of one Automerge change. Its dependencies (earlier changes to
//! the same record) may travel in other transactions that have not arrived yet; such a
//! transaction is parked until they do, so it still becomes visible all at once.

use serde::{Deserialize, Serialize};

use crate::ids::TxnId;

/// Hard limit on the encoded size of one transaction (1 MiB). Larger writes are refused; split
/// them. Keeps any single apply short so the single writer never stalls for long.
pub const MAX_TXN_BYTES: usize = 1024 * 1024;

/// Hard limit on the number of ops in one transaction.
pub const MAX_TXN_OPS: usize = 10_000;

/// A record's incarnation. Incarnation 1 is the first creation; deleting incarnation `k` kills it
/// forever ("delete wins" over any concurrent or late update to `k`); an explicit re-create starts
/// incarnation `k + 1`.
pub type Incarnation = u32;

/// One replicated transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    /// Origin and sequence number.
    pub id: TxnId,
    /// Wall-clock time at the origin in ms since the Unix epoch. Informational only (events,
    /// audit); never used to decide a merge.
    pub timestamp_ms: u64,
    /// The schema version the origin wrote it under.
    pub schema_version: u32,
    /// What it does, one op per record.
    pub ops: Vec<Op>,
}

/// One operation on one record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// An Automerge change to a document record.
    Doc {
        /// Collection name.
        collection: String,
        /// Record id (primary key value).
        id: String,
        /// The incarnation the change belongs to.
        incarnation: Incarnation,
        /// Raw bytes of one Automerge change.
        change: Vec<u8>,
    },
    /// A tombstone: incarnation `incarnation` of the record is deleted.
    Delete {
        /// Collection name.
        collection: String,
        /// Record id.
        id: String,
        /// The incarnation deleted.
        incarnation: Incarnation,
    },
    /// An immutable row appended to a log collection.
    Append {
        /// Collection name.
        collection: String,
        /// Row id (primary key value).
        id: String,
        /// The row as JSON text (an object).
        row: String,
    },
}

impl Op {
    /// The collection the op touches.
    pub fn collection(&self) -> &str {
        match self {
            Op::Doc { collection, .. }
            | Op::Delete { collection, .. }
            | Op::Append { collection, .. } => collection,
        }
    }

    /// The record id the op touches.
    pub fn record_id(&self) -> &str {
        match self {
            Op::Doc { id, .. } | Op::Delete { id, .. } | Op::Append { id, .. } => id,
        }
    }
}

/// Error decoding a transaction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeTxnError {
    /// Larger than [`MAX_TXN_BYTES`].
    #[error("transaction of {0} bytes exceeds the limit of {MAX_TXN_BYTES}")]
    TooLarge(usize),
    /// Not a valid encoding.
    #[error("malformed transaction: {0}")]
    Malformed(#[from] postcard::Error),
    /// Decoded, but breaks an invariant (seq 0, too many ops, empty names).
    #[error("invalid transaction: {0}")]
    Invalid(&'static str),
}

impl Txn {
    /// Encodes with postcard.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("serializing a Txn into a Vec cannot fail")
    }

    /// Decodes and validates bytes from the network or disk. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Txn, DecodeTxnError> {
        if bytes.len() > MAX_TXN_BYTES {
            return Err(DecodeTxnError::TooLarge(bytes.len()));
        }
        let txn: Txn = postcard::from_bytes(bytes)?;
        txn.validate()?;
        Ok(txn)
    }

    /// Checks the invariants every stored transaction satisfies.
    pub fn validate(&self) -> Result<(), DecodeTxnError> {
        if self.id.seq == 0 {
            return Err(DecodeTxnError::Invalid("sequence number 0"));
        }
        if self.ops.is_empty() || self.ops.len() > MAX_TXN_OPS {
            return Err(DecodeTxnError::Invalid("op count out of range"));
        }
        for op in &self.ops {
            if op.collection().is_empty() || op.record_id().is_empty() {
                return Err(DecodeTxnError::Invalid("empty collection or record id"));
            }
            if let Op::Doc { incarnation: 0, .. } | Op::Delete { incarnation: 0, .. } = op {
                return Err(DecodeTxnError::Invalid("incarnation 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ReplicaId;

    fn sample() -> Txn {
        Txn {
            id: TxnId {
                origin: ReplicaId::random(),
                seq: 7,
            },
            timestamp_ms: 1_700_000_000_000,
            schema_version: 1,
            ops: vec![
                Op::Doc {
                    collection: "tasks".into(),
                    id: "a".into(),
                    incarnation: 1,
                    change: vec![1, 2, 3],
                },
                Op::Delete {
                    collection: "tasks".into(),
                    id: "b".into(),
                    incarnation: 2,
                },
                Op::Append {
                    collection: "sensor_data".into(),
                    id: "c".into(),
                    row: "{}".into(),
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let t = sample();
        assert_eq!(Txn::decode(&t.encode()).unwrap(), t);
    }

    #[test]
    fn truncated_and_garbage_are_errors() {
        let bytes = sample().encode();
        for n in 0..bytes.len() {
            assert!(Txn::decode(&bytes[..n]).is_err(), "prefix {n} decoded");
        }
        assert!(Txn::decode(&[0xff; 64]).is_err());
        assert!(matches!(
            Txn::decode(&vec![0; MAX_TXN_BYTES + 1]),
            Err(DecodeTxnError::TooLarge(_))
        ));
    }

    #[test]
    fn invariants_are_checked() {
        let mut t = sample();
        t.id.seq = 0;
        assert!(Txn::decode(&t.encode()).is_err());
        let mut t = sample();
        t.ops.clear();
        assert!(Txn::decode(&t.encode()).is_err());
    }
}
