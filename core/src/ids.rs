//! Identifiers: replicas (change origins), transactions and records.
//!
//! A [`ReplicaId`] names one store (one data directory). It is chosen at random when the store is
//! created and doubles as the Automerge actor id of every change the store writes, so two stores
//! must never share one: copying a data directory to a second device and writing on both would
//! break convergence. Restore a backup on one device only, or run `meshlite init` afresh.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Length in bytes of a [`ReplicaId`].
pub const REPLICA_ID_LEN: usize = 16;

/// The id of one replica (one store). Also the Automerge actor id of its changes.
///
/// Serialized as raw bytes in binary formats (postcard) and as 32 hex characters in
/// human-readable ones (JSON, TOML), so it can be a JSON object key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaId(pub [u8; REPLICA_ID_LEN]);

impl Serialize for ReplicaId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for ReplicaId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; REPLICA_ID_LEN]>::deserialize(d).map(Self)
        }
    }
}

impl ReplicaId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// The id from its raw bytes; `None` unless exactly [`REPLICA_ID_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// Lower-case hex, 32 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex characters, for logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplicaId({})", self.short())
    }
}

/// Error parsing a [`ReplicaId`] from hex.
#[derive(Debug, thiserror::Error)]
#[error("invalid replica id {0:?}: expected 32 hex characters")]
pub struct ParseReplicaIdError(String);

impl FromStr for ReplicaId {
    type Err = ParseReplicaIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(s).map_err(|_| ParseReplicaIdError(s.to_owned()))?;
        Self::from_slice(&bytes).ok_or_else(|| ParseReplicaIdError(s.to_owned()))
    }
}

/// The position of a transaction in its origin's sequence. The first transaction is 1.
pub type Seq = u64;

/// Identifies one transaction anywhere in the mesh: its origin replica and its sequence number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxnId {
    /// The replica that made the transaction.
    pub origin: ReplicaId,
    /// Its sequence number at that replica, from 1.
    pub seq: Seq,
}

impl TxnId {
    /// A stable textual form, `<origin hex>-<seq>`; used as the NATS `Nats-Msg-Id` for dedup.
    pub fn to_key(&self) -> String {
        format!("{}-{}", self.origin.to_hex(), self.seq)
    }
}

impl fmt::Debug for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.origin.short(), self.seq)
    }
}

/// A new record id: a UUIDv7 (time-ordered) in its hyphenated form.
pub fn new_record_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_id_hex_round_trip() {
        let id = ReplicaId::random();
        assert_eq!(id.to_hex().parse::<ReplicaId>().unwrap(), id);
        assert!("zz".parse::<ReplicaId>().is_err());
        assert!("00".parse::<ReplicaId>().is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", id.to_hex()));
        assert_eq!(serde_json::from_str::<ReplicaId>(&json).unwrap(), id);
        let bin = postcard::to_stdvec(&id).unwrap();
        assert_eq!(bin.len(), REPLICA_ID_LEN);
        assert_eq!(postcard::from_bytes::<ReplicaId>(&bin).unwrap(), id);
    }

    #[test]
    fn record_ids_are_time_ordered_uuids() {
        let a = new_record_id();
        let b = new_record_id();
        assert_eq!(a.len(), 36);
        assert!(a <= b);
    }
}
