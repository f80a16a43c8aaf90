//! Automerge state per record: a bounded LRU cache of loaded documents in front of `docs` rows.
//!
//! A loaded document costs several KiB even when tiny, so only the hot ones stay in memory;
//! reads never need them (they use materialized rows). A row's `state` is an Automerge `save()`
//! snapshot (or a record's first change) followed by appended change chunks; `Automerge::load`
//! accepts the concatenation. After [`INLINE_COMPACT_CHUNKS`] appended chunks the writer rewrites
//! the state as one `save()` while it has the document in hand.
//!
//! Invariant: at a command boundary, every cached document equals what its row would load to.
//! The writer keeps it by evicting every document touched by a command (or transaction) whose
//! SQLite savepoint is rolled back; [`DocCache::take_touched`] lists them.

use std::num::NonZeroUsize;

use automerge::Automerge;
use lru::LruCache;
use rusqlite::{Connection, OptionalExtension, params};

use super::doc::{load_doc, new_doc};
use crate::change::Incarnation;
use crate::ids::ReplicaId;

/// Appended chunks after which the writer rewrites a state as one snapshot.
pub(crate) const INLINE_COMPACT_CHUNKS: u32 = 64;

/// Identifies one incarnation of one record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DocKey {
    pub collection: String,
    pub id: String,
    pub incarnation: Incarnation,
}

/// A loaded document and the shape of its stored row.
#[derive(Debug)]
pub(crate) struct DocEntry {
    pub doc: Automerge,
    /// Chunks appended after the snapshot (0 right after a compaction).
    pub chunks: u32,
    /// False until the row exists.
    pub stored: bool,
}

/// The LRU cache of loaded documents, owned by the writer thread.
#[derive(Debug)]
pub(crate) struct DocCache {
    lru: LruCache<DocKey, DocEntry>,
    touched: Vec<DocKey>,
    replica: ReplicaId,
}

impl DocCache {
    pub fn new(capacity: usize, replica: ReplicaId) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            lru: LruCache::new(cap),
            touched: Vec::new(),
            replica,
        }
    }

    /// The document for `key`, loaded from its row or new and empty. Marks it touched.
    pub fn entry(&mut self, conn: &Connection, key: &DocKey) -> Result<&mut DocEntry, String> {
        self.entry_or_new(conn, key, false)
    }

    /// As [`Self::entry`]; `unstored` tells that the record has no `records` row, hence no
    /// `docs` row (both are written in the same savepoint and records rows are never deleted),
    /// so a miss starts an empty document without reading.
    pub fn entry_or_new(
        &mut self,
        conn: &Connection,
        key: &DocKey,
        unstored: bool,
    ) -> Result<&mut DocEntry, String> {
        self.touched.push(key.clone());
        let replica = self.replica;
        // One lookup on a hit; on a miss the key is cloned once, into the cache.
        self.lru.try_get_or_insert_mut_ref(key, || {
            if unstored {
                Ok(empty_entry(&replica))
            } else {
                load(conn, key, &replica)
            }
        })
    }

    /// Drops a document from the cache (it will be reloaded from its row).
    pub fn evict(&mut self, key: &DocKey) {
        self.lru.pop(key);
    }

    /// Keys touched since the last call; the caller evicts them after a rollback.
    pub fn take_touched(&mut self) -> Vec<DocKey> {
        std::mem::take(&mut self.touched)
    }

    /// Number of keys touched so far (a mark for [`Self::evict_touched_since`]).
    pub fn touched_mark(&self) -> usize {
        self.touched.len()
    }

    /// Evicts every document touched after `mark` (a rolled-back transaction's documents).
    pub fn evict_touched_since(&mut self, mark: usize) {
        let keys: Vec<DocKey> = self.touched.drain(mark.min(self.touched.len())..).collect();
        for key in &keys {
            self.lru.pop(key);
        }
    }

    /// Forgets every loaded document (after a failed COMMIT).
    pub fn clear(&mut self) {
        self.lru.clear();
        self.touched.clear();
    }
}

/// A new, empty document that has no row yet.
fn empty_entry(replica: &ReplicaId) -> DocEntry {
    DocEntry {
        doc: new_doc(replica),
        chunks: 0,
        stored: false,
    }
}

/// Loads the document of `key` from its row, or a new empty one when there is no row.
fn load(conn: &Connection, key: &DocKey, replica: &ReplicaId) -> Result<DocEntry, String> {
    let row: Option<(Vec<u8>, u32)> = conn
        .prepare_cached(
            "SELECT state, chunks FROM docs WHERE collection = ?1 AND id = ?2 AND incarnation = ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![key.collection, key.id, key.incarnation], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(|e| e.to_string())?;
    match row {
        None => Ok(empty_entry(replica)),
        Some((state, chunks)) => {
            let doc = load_doc(&state, replica)
                .map_err(|e| format!("{}/{}: {e}", key.collection, key.id))?;
            Ok(DocEntry {
                doc,
                chunks,
                stored: true,
            })
        }
    }
}

/// Persists the change just committed to `entry.doc`: inserts the row, appends the chunk, or
/// rewrites the state as a snapshot once enough chunks accumulated.
pub(crate) fn store_change(
    conn: &Connection,
    key: &DocKey,
    entry: &mut DocEntry,
    change: &[u8],
) -> rusqlite::Result<()> {
    if !entry.stored {
        conn.prepare_cached(
            "INSERT INTO docs (collection, id, incarnation, state, chunks) VALUES (?1, ?2, ?3, ?4, 1)",
        )?
        .execute(params![key.collection, key.id, key.incarnation, change])?;
        entry.stored = true;
        entry.chunks = 1;
    } else if entry.chunks + 1 >= INLINE_COMPACT_CHUNKS {
        write_snapshot(conn, key, &entry.doc)?;
        entry.chunks = 0;
    } else {
        conn.prepare_cached(
            "UPDATE docs SET state = CAST(state || ?4 AS BLOB), chunks = chunks + 1
             WHERE collection = ?1 AND id = ?2 AND incarnation = ?3",
        )?
        .execute(params![key.collection, key.id, key.incarnation, change])?;
        entry.chunks += 1;
    }
    Ok(())
}

/// Rewrites a row's state as one `save()` snapshot.
pub(crate) fn write_snapshot(
    conn: &Connection,
    key: &DocKey,
    doc: &Automerge,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE docs SET state = ?4, chunks = 0 WHERE collection = ?1 AND id = ?2 AND incarnation = ?3",
    )?
    .execute(params![key.collection, key.id, key.incarnation, doc.save()])?;
    Ok(())
}

/// Frees the states of incarnations `..=upto` of a record (they are dead: deleted or superseded
/// by a re-creation, and no change to them is ever applied again).
pub(crate) fn free_dead(
    conn: &Connection,
    collection: &str,
    id: &str,
    upto: Incarnation,
) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM docs WHERE collection = ?1 AND id = ?2 AND incarnation <= ?3")?
        .execute(params![collection, id, upto])
}
