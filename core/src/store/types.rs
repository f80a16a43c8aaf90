//! Plain data types of the store API: write operations, queries, results, events and status.

use std::ops::RangeInclusive;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{ReplicaId, Seq, TxnId};
use crate::schema::CollectionKind;
use crate::version::Summary;

/// One operation of a local transaction.
#[derive(Clone, Debug, PartialEq)]
pub enum WriteOp {
    /// Upsert with merge-patch semantics: fields absent from `value` are left alone. Without a
    /// declared `key_type` the primary key may be a string or an integer (stored and shown as its
    /// decimal string); with one it must have that type (an `integer` key is stored as its
    /// decimal string and shown as a number). Absent, a UUIDv7 is generated (never for integer
    /// keys). Declared defaults fill the fields a new record lacks. Refused on a deleted record
    /// unless `recreate` is true, which starts a new incarnation (the deleted state is not
    /// revived: the record starts empty plus `value` and the defaults).
    Put {
        /// Collection name.
        collection: String,
        /// A JSON object.
        value: Value,
        /// Re-create the record if it was deleted.
        recreate: bool,
    },
    /// Creates a record, as SQL's `INSERT` does: a [`WriteOp::Put`] refused with
    /// [`super::WriteError::Duplicate`] when a live record has the id. The writer checks it inside
    /// the transaction, so of two racing inserts of one id on this replica exactly one succeeds
    /// (a peer's insert of the same id still merges: replicas do not coordinate). A deleted record
    /// is re-created (a new incarnation); an absent id is generated as for `Put`.
    Insert {
        /// Collection name.
        collection: String,
        /// A JSON object.
        value: Value,
    },
    /// Merge-patches a live record, as SQL's `UPDATE ... WHERE key = id` does: a
    /// [`WriteOp::Put`] refused with [`super::WriteError::NotFound`] when no live record has the
    /// id (absent or deleted), checked inside the transaction, so the caller needs no read first.
    /// `value` must carry the primary key.
    Update {
        /// Collection name.
        collection: String,
        /// A JSON object with the record's key.
        value: Value,
    },
    /// Adds `by` to a `counter` field (creates the record if it does not exist).
    Increment {
        /// Collection name.
        collection: String,
        /// Record id (for an `integer` key, its decimal string).
        id: String,
        /// A field whose policy is `counter`.
        field: String,
        /// Amount, may be negative.
        by: i64,
    },
    /// Deletes a document record (a tombstone that beats concurrent updates).
    Delete {
        /// Collection name.
        collection: String,
        /// Record id.
        id: String,
    },
    /// Appends an immutable row to a log collection.
    Append {
        /// Collection name.
        collection: String,
        /// A JSON object; its primary key is generated when absent.
        value: Value,
    },
}

/// What one committed local transaction did.
#[derive(Clone, Debug, PartialEq)]
pub struct Committed {
    /// Its id.
    pub txn: TxnId,
    /// One entry per op, in op order.
    pub changes: Vec<RecordChange>,
}

/// The kind of a change to a materialized row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// A record appeared (created, re-created, or first seen).
    Insert,
    /// An existing record changed.
    Update,
    /// A record was deleted.
    Delete,
    /// A log row was appended.
    Append,
}

/// A change to one materialized row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordChange {
    /// Collection name.
    pub collection: String,
    /// Record id.
    pub id: String,
    /// What happened.
    pub kind: ChangeKind,
    /// The merged row after the change; `None` for deletes.
    pub value: Option<Value>,
}

/// Broadcast to subscribers after a SQLite COMMIT. Every subscriber receives its own clone of
/// the event, so its lists are shared (`Arc`), not copied per subscriber.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum StoreEvent {
    /// Transactions became visible.
    Committed {
        /// The transactions (local: one; remote: those applied, including unparked ones).
        txns: Arc<[TxnId]>,
        /// True for a local write.
        local: bool,
        /// The rows they changed.
        changes: Arc<[RecordChange]>,
    },
}

/// A read query over one collection. `Default` is "all live rows ordered by id".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// Equality filters `field = value`, all must hold. Declared `indexed` fields use an index.
    pub filters: Vec<(String, Value)>,
    /// Sort field and descending flag; rows tie-break by id. Default: by id.
    pub order: Option<(String, bool)>,
    /// At most this many rows.
    pub limit: Option<usize>,
    /// Skip this many rows first.
    pub offset: usize,
    /// Also return deleted records (their last state before deletion).
    pub include_deleted: bool,
    /// Without `order`, return rows in insertion order (and break `order` ties by it) instead
    /// of by id: document records in the order this replica first stored them (a local
    /// re-creation after a delete moves to the end; updates keep their place), log rows in
    /// the order they were stored.
    pub insertion_order: bool,
}

/// Stored transactions returned by [`super::Store::txns_for`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TxnBatch {
    /// Encoded [`crate::Txn`]s in (origin, seq) order.
    pub txns: Vec<Vec<u8>>,
    /// The id of each transaction in `txns` (same order and length), read from the store's
    /// keys: callers need not decode a transaction to learn its id.
    pub ids: Vec<TxnId>,
    /// True when the byte budget stopped the batch early: ask again for the rest.
    pub more: bool,
    /// Ranges that were held but have been garbage-collected: they cannot be sent.
    pub pruned: Vec<(ReplicaId, RangeInclusive<Seq>)>,
}

/// Outcome of [`super::Store::apply_remote`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApplyReport {
    /// Transactions applied and visible.
    pub applied: usize,
    /// Transactions already held (skipped).
    pub duplicates: usize,
    /// Transactions stored but waiting for changes they depend on.
    pub parked: usize,
    /// Previously parked transactions applied now.
    pub unparked: usize,
    /// Transactions outside this partial replica's collections: held, not stored.
    pub filtered: usize,
    /// Transactions refused (malformed, unappliable, or breaking a declared type or key type),
    /// with the reason. Not held: a peer with a good copy can still deliver them.
    pub rejected: Vec<(TxnId, String)>,
}

impl ApplyReport {
    pub(crate) fn absorb(&mut self, other: ApplyReport) {
        self.applied += other.applied;
        self.duplicates += other.duplicates;
        self.parked += other.parked;
        self.unparked += other.unparked;
        self.filtered += other.filtered;
        self.rejected.extend(other.rejected);
    }
}

/// Outcome of [`super::Store::gc`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GcReport {
    /// The horizon used: what this replica and every known peer hold.
    pub horizon: Summary,
    /// Stored transactions deleted.
    pub txns_deleted: u64,
    /// Document states of dead incarnations freed.
    pub docs_freed: u64,
}

/// Per-collection counts in [`Status`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CollectionStatus {
    /// Name.
    pub name: String,
    /// Kind (as declared, or inferred for undeclared collections).
    pub kind: CollectionKind,
    /// Live records (all rows for logs).
    pub live: u64,
    /// Deleted records (tombstones).
    pub deleted: u64,
    /// True when the schema declares it.
    pub declared: bool,
}

/// Per-origin held ranges in [`Status`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OriginStatus {
    /// The origin replica.
    pub origin: ReplicaId,
    /// Held sequence numbers as inclusive ranges; more than one range means gaps.
    pub ranges: Vec<(Seq, Seq)>,
    /// Number held.
    pub count: u64,
}

/// A snapshot of the store for `meshlite status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    /// This replica.
    pub replica_id: ReplicaId,
    /// Schema version in force.
    pub schema_version: u32,
    /// Collections with data or declared.
    pub collections: Vec<CollectionStatus>,
    /// What this replica holds, per origin.
    pub origins: Vec<OriginStatus>,
    /// Transactions held (the summary's count).
    pub txn_count: u64,
    /// Transactions stored for relaying (held minus garbage-collected).
    pub stored_txns: u64,
    /// Transactions parked, waiting for dependencies.
    pub parked: u64,
    /// Database size in bytes (main file pages; the WAL is extra).
    pub db_bytes: u64,
    /// Everything garbage-collected so far.
    pub gc_floor: Summary,
    /// Peers whose acknowledgements feed the GC horizon.
    pub known_peers: u64,
    /// Per known peer: how far behind this replica its last acknowledgement was.
    pub peers: Vec<PeerLag>,
}

/// Sync lag of one peer replica, from its last acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerLag {
    /// The peer's replica id.
    pub replica: ReplicaId,
    /// Transactions this replica holds that the peer had not acknowledged.
    pub missing: u64,
    /// When the acknowledgement was recorded, ms since the Unix epoch.
    pub acked_at_ms: u64,
}

/// What one peer replica last acknowledged holding ([`super::Store::peer_acks`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeerAck {
    /// The peer's replica id.
    pub replica: ReplicaId,
    /// Its acknowledged summary (empty when the stored one cannot be read).
    pub held: Summary,
    /// When the acknowledgement was recorded, ms since the Unix epoch.
    pub acked_at_ms: u64,
}

/// This replica's summary and every known peer's acknowledgement, read at one instant.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PeerAcks {
    /// What this replica holds.
    pub held: Summary,
    /// Each known peer's last acknowledgement, by replica id.
    pub peers: Vec<PeerAck>,
}
