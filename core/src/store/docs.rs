//! Automerge state per record: a bounded cache of loaded documents in front of `docs` rows.
//!
//! A loaded document costs several KiB even when tiny, so only the hot ones stay in memory;
//! reads never need them (they use materialized rows). A row's `state` is an Automerge `save()`
//! snapshot (or a record's first change) followed by appended change chunks; `Automerge::load`
//! accepts the concatenation. After [`INLINE_COMPACT_CHUNKS`] appended chunks the writer rewrites
//! the state as one `save()` while it has the document in hand.
//!
//! # Lent first changes
//! A row created by a local transaction, or by a remote one as it is received (not when it is
//! unparked: it was stored whole when parked), starts with that transaction's change, which the
//! stored transaction then leaves out (see `txns` in `migrations`): the row records its *lender* (the
//! transaction's id) and the change's length (`lent`), and [`super::rows::unpacked`] reads the
//! change back from the state's prefix when the transaction is relayed, so the change is stored
//! once. Appends keep the prefix. Before anything rewrites or deletes a lending state
//! ([`write_snapshot`], [`free_dead`], GC's sweep through [`give_back_dead`]), the change is put
//! back into the stored transaction ([`super::rows::give_back`]), so what a transaction relays
//! never changes.
//!
//! # Derived first changes
//! A lending row whose change is exactly what its `records` row re-encodes to (see
//! [`super::derived`]) stores a marker as its `state` (a tag byte no Automerge state starts
//! with, the change hash's prefix, its counter fields): the change is re-encoded, and checked
//! against the hash, when it is needed: loading the document ([`stored_state`]), giving it back
//! to a transaction that is still stored, relaying ([`super::rows::unpacked`]). The loaded entry
//! keeps the re-encoded change ([`DocEntry::derived`]) and the next stored change writes both
//! (materializes the row), so a row changes only from a real state; a check that writes nothing
//! leaves the row derived.
//!
//! The cache follows 2Q: a document enters a tiny *probation* segment ([`PROBATION`] documents,
//! on top of the capacity) and moves to the *protected* segment (the capacity) when it is used a
//! second time; the keys of
//! documents recently dropped from probation are remembered (*ghosts*, keys only), and a ghost
//! that is used again is loaded straight into protected. A burst of writes to records touched
//! once (a batch of new records, a pass over old ones) therefore churns only the probation
//! segment and leaves the hot set alone, and it frees documents it built moments ago, still in
//! the CPU's caches: freeing a document evicted after a thousand others cost a third of a new
//! record's insert, most of it cache misses. A working set larger than probation but within the
//! capacity (the same thousand records updated batch after batch) is protected from its second
//! use on, through the ghosts.
//!
//! A remote transaction loads its documents while checking its dependencies and uses them again
//! when applying; the writer widens probation to the transaction's size for that span
//! ([`DocCache::widen`], [`DocCache::narrow`]) so none is dropped and loaded twice.
//!
//! Invariant: at a command boundary, every cached document equals what its row would load to.
//! The writer keeps it by evicting every document touched by a command (or transaction) whose
//! SQLite savepoint is rolled back; [`DocCache::take_touched`] lists them.

use std::num::NonZeroUsize;
use std::ops::RangeInclusive;

use automerge::Automerge;
use lru::LruCache;
use rusqlite::{Connection, OptionalExtension, params};

use serde_json::{Map, Value};

use super::derived;
use super::doc::{self, DocError, View, load_doc, new_doc};
use super::error::LoadError;
use super::rows::give_back;
use crate::change::Incarnation;
use crate::ids::{ReplicaId, Seq, TxnId};

/// Appended chunks after which the writer rewrites a state as one snapshot.
pub(crate) const INLINE_COMPACT_CHUNKS: u32 = 64;

/// Identifies one incarnation of one record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DocKey {
    pub collection: String,
    pub id: String,
    pub incarnation: Incarnation,
}

/// A loaded document, its materialized view, and the shape of its stored row.
///
/// The view (the row and the fields with counter parts) is derived from the document. It is
/// built by the first local put after the document was loaded or changed otherwise and kept up
/// to date by local puts ([`DocEntry::put_fields`]); any other change goes through
/// [`DocEntry::doc_mut`], which drops it.
#[derive(Debug)]
pub(crate) struct DocEntry {
    doc: Automerge,
    view: Option<View>,
    /// Chunks appended after the snapshot (0 right after a compaction).
    pub chunks: u32,
    /// False until the row exists.
    pub stored: bool,
    /// The re-encoded first change of a derived row (see [`super::derived`]): the next change
    /// writes it as the state, followed by that change, in one statement.
    pub derived: Option<Vec<u8>>,
}

impl DocEntry {
    /// The document.
    pub fn doc(&self) -> &Automerge {
        &self.doc
    }

    /// The document, to change it: drops the view.
    pub fn doc_mut(&mut self) -> &mut Automerge {
        self.view = None;
        &mut self.doc
    }

    /// Merge-patches `fields` into the document as one local change (as [`doc::put_fields`])
    /// and returns the change's bytes and the materialized row, from the view and brought up to
    /// date with it, so a hot record's put costs the same however long its history.
    pub fn put_fields(
        &mut self,
        def: &crate::schema::CollectionDef,
        fields: &Map<String, Value>,
        replica: &ReplicaId,
    ) -> Result<(Vec<u8>, Map<String, Value>), DocError> {
        let view = self.view.get_or_insert_with(|| doc::view(&self.doc, def));
        let change = doc::put_fields_viewed(&mut self.doc, def, fields, replica, view)?;
        Ok((change, view.row.clone()))
    }
}

/// Documents in the probation segment: few enough that a document it drops was built or loaded
/// moments ago and is still in the CPU's caches (measured: 8 beat both 1 and 64 on inserts, on
/// updates of cached records and on updates of old ones).
pub(crate) const PROBATION: usize = 8;

/// The segmented LRU cache of loaded documents, owned by the writer thread.
#[derive(Debug)]
pub(crate) struct DocCache {
    /// Documents used once since they were loaded or created.
    probation: LruCache<DocKey, DocEntry>,
    /// Documents used again while in probation or remembered as ghosts.
    protected: LruCache<DocKey, DocEntry>,
    /// Keys of documents recently dropped from probation.
    ghosts: LruCache<DocKey, ()>,
    touched: Vec<DocKey>,
    replica: ReplicaId,
}

impl DocCache {
    /// A cache of `capacity` protected documents (at least one) plus its probation segment.
    pub fn new(capacity: usize, replica: ReplicaId) -> Self {
        let capacity = capacity.max(1);
        let size = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        Self {
            probation: LruCache::new(size(PROBATION)),
            protected: LruCache::new(size(capacity)),
            ghosts: LruCache::new(size(capacity)),
            touched: Vec::new(),
            replica,
        }
    }

    /// The document for `key`, loaded from its row or new and empty; marks it touched.
    /// `unstored` tells that the record has no `records` row, hence no `docs` row (both are
    /// written in the same savepoint and records rows are never deleted), so a miss starts an
    /// empty document without reading.
    pub fn entry_or_new(
        &mut self,
        conn: &Connection,
        key: &DocKey,
        unstored: bool,
    ) -> Result<&mut DocEntry, LoadError> {
        self.touched.push(key.clone());
        if self.protected.contains(key) {
            return self.protected.get_mut(key).ok_or_else(lost);
        }
        if let Some((owned, entry)) = self.probation.pop_entry(key) {
            // Used a second time: protected from now on.
            self.protect(owned, entry);
            return self.protected.get_mut(key).ok_or_else(lost);
        }
        let entry = match unstored {
            true => empty_entry(&self.replica),
            false => load(conn, key, &self.replica)?,
        };
        if self.ghosts.pop(key).is_some() {
            self.protect(key.clone(), entry);
            return self.protected.get_mut(key).ok_or_else(lost);
        }
        self.put_on_probation(key.clone(), entry);
        self.probation.get_mut(key).ok_or_else(lost)
    }

    /// A second access to `key` within the command whose first access was
    /// [`Self::entry_or_new`] (remote apply checks dependencies, then applies): it finds the
    /// document where it is without counting as a second use, which would protect every
    /// document a remote transaction creates.
    pub fn entry_again(
        &mut self,
        conn: &Connection,
        key: &DocKey,
        unstored: bool,
    ) -> Result<&mut DocEntry, LoadError> {
        if self.protected.contains(key) {
            return self.protected.get_mut(key).ok_or_else(lost);
        }
        if self.probation.contains(key) {
            return self.probation.get_mut(key).ok_or_else(lost);
        }
        // Dropped since the first access (or never loaded): a first use again, ghost or not.
        self.touched.push(key.clone());
        let entry = match unstored {
            true => empty_entry(&self.replica),
            false => load(conn, key, &self.replica)?,
        };
        self.put_on_probation(key.clone(), entry);
        self.probation.get_mut(key).ok_or_else(lost)
    }

    /// Widens probation to hold `docs` documents (at most the capacity, at least [`PROBATION`])
    /// while a remote
    /// transaction is checked and applied, so the documents its check loads are still there when
    /// it is applied. [`Self::narrow`] restores it.
    pub fn widen(&mut self, docs: usize) {
        let want = docs.min(self.protected.cap().get()).max(PROBATION);
        if want > self.probation.cap().get() {
            self.probation
                .resize(NonZeroUsize::new(want).unwrap_or(NonZeroUsize::MIN));
        }
    }

    /// Shrinks probation back to [`PROBATION`] documents; the ones it drops become ghosts.
    pub fn narrow(&mut self) {
        if self.probation.cap().get() == PROBATION {
            return;
        }
        while self.probation.len() > PROBATION {
            if let Some((key, _)) = self.probation.pop_lru() {
                self.ghosts.put(key, ());
            }
        }
        self.probation
            .resize(NonZeroUsize::new(PROBATION).unwrap_or(NonZeroUsize::MIN));
    }

    /// The cached document of `key`, if any, without counting a use (background compaction).
    pub fn cached_mut(&mut self, key: &DocKey) -> Option<&mut DocEntry> {
        if self.protected.contains(key) {
            return self.protected.peek_mut(key);
        }
        self.probation.peek_mut(key)
    }

    /// Puts a document in protected; protected's least recently used document, if it is full,
    /// goes back to probation for one more chance.
    fn protect(&mut self, key: DocKey, entry: DocEntry) {
        if let Some((old, demoted)) = self.protected.push(key, entry) {
            self.put_on_probation(old, demoted);
        }
    }

    /// Puts a document in probation; the one it pushes out is dropped and remembered as a ghost.
    fn put_on_probation(&mut self, key: DocKey, entry: DocEntry) {
        if let Some((old, dropped)) = self.probation.push(key, entry) {
            drop(dropped);
            self.ghosts.put(old, ());
        }
    }

    /// Drops a document from the cache (it will be reloaded from its row).
    pub fn evict(&mut self, key: &DocKey) {
        self.probation.pop(key);
        self.protected.pop(key);
        self.ghosts.pop(key);
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
            self.evict(key);
        }
    }

    /// Forgets every loaded document (after a failed COMMIT).
    pub fn clear(&mut self) {
        self.probation.clear();
        self.protected.clear();
        self.ghosts.clear();
        self.touched.clear();
    }

    /// Documents held (both segments).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.probation.len() + self.protected.len()
    }
}

/// Unreachable (a lookup right after an insert); reported as unreadable state, as before.
fn lost() -> LoadError {
    LoadError::Corrupt("the document cache lost an entry it just inserted".to_owned())
}

/// A new, empty document that has no row yet.
fn empty_entry(replica: &ReplicaId) -> DocEntry {
    DocEntry {
        doc: new_doc(replica),
        view: None,
        chunks: 0,
        stored: false,
        derived: None,
    }
}

/// A `docs` row's state as stored or derived.
pub(crate) struct Stored {
    /// The state (a derived row's re-encoded first change).
    pub state: Vec<u8>,
    /// Appended chunks.
    pub chunks: u32,
    /// The row is derived (its `state` column is a marker, see [`super::derived`]).
    pub derived: bool,
}

/// The state of `key`: stored, or re-encoded from its `records` row when the row is derived.
pub(crate) fn stored_state(conn: &Connection, key: &DocKey) -> Result<Option<Stored>, LoadError> {
    type Row = (Vec<u8>, u32, Option<Vec<u8>>, Option<String>);
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT d.state, d.chunks, d.lender_origin, CASE WHEN substr(d.state, 1, 1) = x'00' THEN
                 (SELECT r.json FROM records r WHERE r.collection = d.collection AND r.id = d.id
                    AND r.incarnation = d.incarnation) END
             FROM docs d WHERE d.collection = ?1 AND d.id = ?2 AND d.incarnation = ?3",
        )?
        .query_row(params![key.collection, key.id, key.incarnation], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((state, chunks, origin, json)) = row else {
        return Ok(None);
    };
    if !derived::is_marker(&state) {
        return Ok(Some(Stored {
            state,
            chunks,
            derived: false,
        }));
    }
    let origin = origin.as_deref().and_then(ReplicaId::from_slice);
    let change = origin
        .ok_or_else(|| derived::Underivable::NoRow(key.id.clone()))
        .and_then(|origin| derived::rederive(&key.id, &state, &origin, json.as_deref()))
        .map_err(|e| LoadError::Corrupt(format!("{}/{}: {e}", key.collection, key.id)))?;
    Ok(Some(Stored {
        state: change,
        chunks,
        derived: true,
    }))
}

/// Writes a derived row's re-encoded first change as its state.
fn materialize(conn: &Connection, key: &DocKey, change: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE docs SET state = ?4 WHERE collection = ?1 AND id = ?2 AND incarnation = ?3",
    )?
    .execute(params![key.collection, key.id, key.incarnation, change])?;
    Ok(())
}

/// Materializes every derived row of `collection` (before its rows are re-materialized under
/// a new schema, which may rewrite their JSON).
pub(crate) fn materialize_derived(conn: &Connection, collection: &str) -> Result<(), LoadError> {
    let keys: Vec<(String, Incarnation)> = conn
        .prepare(
            "SELECT id, incarnation FROM docs WHERE collection = ?1 AND substr(state, 1, 1) = x'00'",
        )?
        .query_map([collection], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, incarnation) in keys {
        let key = DocKey {
            collection: collection.to_owned(),
            id,
            incarnation,
        };
        if let Some(Stored {
            state,
            derived: true,
            ..
        }) = stored_state(conn, &key)?
        {
            materialize(conn, &key, &state)?;
        }
    }
    Ok(())
}

/// Loads the document of `key` from its row, or a new empty one when there is no row.
fn load(conn: &Connection, key: &DocKey, replica: &ReplicaId) -> Result<DocEntry, LoadError> {
    match stored_state(conn, key)? {
        None => Ok(empty_entry(replica)),
        Some(Stored {
            state,
            chunks,
            derived,
        }) => {
            let doc = load_doc(&state, replica)
                .map_err(|e| LoadError::Corrupt(format!("{}/{}: {e}", key.collection, key.id)))?;
            Ok(DocEntry {
                doc,
                view: None,
                chunks,
                stored: true,
                derived: derived.then_some(state),
            })
        }
    }
}

/// Persists the change just committed to `entry.doc`: inserts the row, appends the chunk, or
/// rewrites the state as a snapshot once enough chunks accumulated. A row inserted for local
/// transaction `lender` records that it lends its first change (see the module docs); returns
/// whether it does.
pub(crate) fn store_change(
    conn: &Connection,
    key: &DocKey,
    entry: &mut DocEntry,
    change: &[u8],
    lender: Option<TxnId>,
) -> rusqlite::Result<bool> {
    if !entry.stored {
        let lends = insert_first_change(conn, key, change, lender)?;
        entry.stored = true;
        entry.chunks = 1;
        return Ok(lends);
    }
    if entry.chunks + 1 >= INLINE_COMPACT_CHUNKS {
        write_snapshot(conn, key, entry.doc())?;
        entry.chunks = 0;
        entry.derived = None;
    } else if let Some(mut state) = entry.derived.take() {
        // The first change of a derived row, then this one: the row is materialized.
        state.extend_from_slice(change);
        conn.prepare_cached(
            "UPDATE docs SET state = ?4, chunks = chunks + 1
             WHERE collection = ?1 AND id = ?2 AND incarnation = ?3",
        )?
        .execute(params![key.collection, key.id, key.incarnation, state])?;
        entry.chunks += 1;
    } else {
        conn.prepare_cached(
            "UPDATE docs SET state = CAST(state || ?4 AS BLOB), chunks = chunks + 1
             WHERE collection = ?1 AND id = ?2 AND incarnation = ?3",
        )?
        .execute(params![key.collection, key.id, key.incarnation, change])?;
        entry.chunks += 1;
    }
    Ok(false)
}

/// Inserts the row of a record's first change (the state is the change alone, one chunk),
/// lending it to transaction `lender` if given (see the module docs); returns whether it lends.
pub(crate) fn insert_first_change(
    conn: &Connection,
    key: &DocKey,
    change: &[u8],
    lender: Option<TxnId>,
) -> rusqlite::Result<bool> {
    insert_row(conn, key, change, lender, change.len())?;
    Ok(lender.is_some())
}

/// Inserts the row of a record's first change that `lender` lends and that is derived from
/// its `records` row (see [`super::derived`]): its marker as the state; `lent` is the change's
/// length, the prefix its state will have once materialized.
pub(crate) fn insert_derived(
    conn: &Connection,
    key: &DocKey,
    marker: &derived::Marker,
    change_len: usize,
    lender: TxnId,
) -> rusqlite::Result<()> {
    insert_row(conn, key, &marker.to_bytes(), Some(lender), change_len)
}

fn insert_row(
    conn: &Connection,
    key: &DocKey,
    state: &[u8],
    lender: Option<TxnId>,
    change_len: usize,
) -> rusqlite::Result<()> {
    let origin = lender.map(|t| t.origin.0.to_vec());
    let seq = lender.map(|t| t.seq as i64);
    let lent = lender.map(|_| change_len as i64);
    conn.prepare_cached(
        "INSERT INTO docs (collection, id, incarnation, state, chunks, lender_origin, lender_seq, lent)
         VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7)",
    )?
    .execute(params![
        key.collection,
        key.id,
        key.incarnation,
        state,
        origin,
        seq,
        lent
    ])?;
    Ok(())
}

/// Rewrites a row's state as one `save()` snapshot (giving its lent change back first).
pub(crate) fn write_snapshot(
    conn: &Connection,
    key: &DocKey,
    doc: &Automerge,
) -> rusqlite::Result<()> {
    let incarnations = key.incarnation..=key.incarnation;
    give_back_lent(conn, &key.collection, &key.id, incarnations)?;
    conn.prepare_cached(
        "UPDATE docs SET state = ?4, chunks = 0, lender_origin = NULL, lender_seq = NULL, lent = NULL
         WHERE collection = ?1 AND id = ?2 AND incarnation = ?3",
    )?
    .execute(params![key.collection, key.id, key.incarnation, doc.save()])?;
    Ok(())
}

/// Whether the row of `collection`/`id`/`incarnation` still lends its first change to
/// transaction `lender` (a state rewritten or deleted later in the same transaction no longer
/// does).
pub(crate) fn lends_to(
    conn: &Connection,
    collection: &str,
    id: &str,
    incarnation: Incarnation,
    lender: TxnId,
) -> rusqlite::Result<bool> {
    let found: Option<i64> = conn
        .prepare_cached(
            "SELECT 1 FROM docs WHERE collection = ?1 AND id = ?2 AND incarnation = ?3
             AND lender_seq = ?4 AND lender_origin = ?5",
        )?
        .query_row(
            params![
                collection,
                id,
                incarnation,
                lender.seq as i64,
                &lender.origin.0[..]
            ],
            |r| r.get(0),
        )
        .optional()?;
    Ok(found.is_some())
}

/// A lending row's incarnation, lender, lent change (a marker for a derived row) and, for a
/// derived row, its `records` JSON.
type Lent = (Incarnation, TxnId, Vec<u8>, Option<String>);

/// Gives the lent first changes of the rows of `collection`/`id` in `incarnations` back to
/// their stored transactions, before those states are rewritten or deleted. A derived row's
/// change is re-encoded from its `records` row, which still holds the incarnation's JSON, and
/// only when its transaction is still stored (never after GC).
fn give_back_lent(
    conn: &Connection,
    collection: &str,
    id: &str,
    incarnations: RangeInclusive<Incarnation>,
) -> rusqlite::Result<()> {
    let lent: Vec<Lent> = conn
        .prepare_cached(
            "SELECT incarnation, lender_origin, lender_seq, substr(state, 1, lent),
                 CASE WHEN substr(state, 1, 1) = x'00' THEN
                     (SELECT r.json FROM records r WHERE r.collection = docs.collection
                        AND r.id = docs.id AND r.incarnation = docs.incarnation) END
             FROM docs
             WHERE collection = ?1 AND id = ?2 AND incarnation BETWEEN ?3 AND ?4
               AND lender_seq IS NOT NULL",
        )?
        .query_map(
            params![collection, id, incarnations.start(), incarnations.end()],
            lent_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    for (incarnation, lender, change, json) in lent {
        let change = || match derived::is_marker(&change) {
            true => Ok(derived::rederive(
                id,
                &change,
                &lender.origin,
                json.as_deref(),
            )?),
            false => Ok(change),
        };
        give_back(conn, lender, collection, id, incarnation, change)?;
    }
    Ok(())
}

/// Reads a [`Lent`] row (`None` for an unreadable lender id, which no stored transaction has).
fn lent_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Lent>> {
    let origin: Vec<u8> = r.get(1)?;
    let Some(origin) = ReplicaId::from_slice(&origin) else {
        return Ok(None);
    };
    let lender = TxnId {
        origin,
        seq: r.get::<_, i64>(2)? as Seq,
    };
    Ok(Some((r.get(0)?, lender, r.get(3)?, r.get(4)?)))
}

/// Frees the states of incarnations `..=upto` of a record (they are dead: deleted or superseded
/// by a re-creation, and no change to them is ever applied again).
pub(crate) fn free_dead(
    conn: &Connection,
    collection: &str,
    id: &str,
    upto: Incarnation,
) -> rusqlite::Result<usize> {
    give_back_lent(conn, collection, id, 0..=upto)?;
    conn.prepare_cached("DELETE FROM docs WHERE collection = ?1 AND id = ?2 AND incarnation <= ?3")?
        .execute(params![collection, id, upto])
}

/// Before GC's sweep deletes the states of dead incarnations: gives their lent changes back.
pub(crate) fn give_back_dead(conn: &Connection) -> rusqlite::Result<()> {
    let dead: Vec<(String, String, Incarnation)> = conn
        .prepare(
            "SELECT collection, id, incarnation FROM docs WHERE lender_seq IS NOT NULL AND EXISTS (
                 SELECT 1 FROM records r WHERE r.collection = docs.collection AND r.id = docs.id
                   AND (r.incarnation > docs.incarnation
                        OR (r.incarnation = docs.incarnation AND r.deleted)))",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (collection, id, incarnation) in dead {
        give_back_lent(conn, &collection, &id, incarnation..=incarnation)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "lend_tests.rs"]
mod lend_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> DocKey {
        DocKey {
            collection: "c".into(),
            id: n.to_string(),
            incarnation: 1,
        }
    }

    fn cached(cache: &DocCache, n: u32) -> bool {
        cache.probation.contains(&key(n)) || cache.protected.contains(&key(n))
    }

    /// A burst of documents used once churns the probation segment only: documents used twice
    /// stay, and the cache never holds more than its capacity.
    #[test]
    fn documents_used_once_do_not_evict_the_hot_set() {
        let conn = Connection::open_in_memory().unwrap();
        let mut cache = DocCache::new(32, ReplicaId([1; 16]));
        for n in 0..8 {
            cache.entry_or_new(&conn, &key(n), true).unwrap();
            cache.entry_or_new(&conn, &key(n), true).unwrap();
        }
        for n in 100..1100 {
            cache.entry_or_new(&conn, &key(n), true).unwrap();
            assert!(cache.len() <= 32 + PROBATION);
        }
        assert!((0..8).all(|n| cached(&cache, n)), "the hot set stayed");
        assert!(cached(&cache, 1099) && !cached(&cache, 100));
        // Re-used documents fill protected; its least recently used ones fall back to probation.
        for n in 200..260 {
            cache.entry_or_new(&conn, &key(n), true).unwrap();
            cache.entry_or_new(&conn, &key(n), true).unwrap();
            assert!(cache.len() <= 32 + PROBATION);
        }
        assert!(cached(&cache, 259) && !cached(&cache, 0));
        cache.evict(&key(259));
        assert!(!cached(&cache, 259));
    }

    /// A working set larger than probation but within the capacity, used again and again, ends
    /// up in protected through the ghosts.
    #[test]
    fn a_working_set_within_capacity_is_protected_from_its_second_use() {
        let conn = Connection::open_in_memory().unwrap();
        let mut cache = DocCache::new(32, ReplicaId([1; 16]));
        for round in 0..3 {
            for n in 0..24 {
                cache.entry_or_new(&conn, &key(n), true).unwrap();
            }
            let protected = (0..24)
                .filter(|&n| cache.protected.contains(&key(n)))
                .count();
            match round {
                0 => assert_eq!(protected, 0),
                _ => assert_eq!(protected, 24, "round {round}"),
            }
        }
    }

    /// A second access in the same command does not protect a document.
    #[test]
    fn a_second_access_in_one_command_is_not_a_second_use() {
        let conn = Connection::open_in_memory().unwrap();
        let mut cache = DocCache::new(4, ReplicaId([1; 16]));
        cache.entry_or_new(&conn, &key(1), true).unwrap().chunks = 3;
        assert_eq!(cache.entry_again(&conn, &key(1), true).unwrap().chunks, 3);
        assert!(cache.probation.contains(&key(1)));
        cache.entry_or_new(&conn, &key(1), true).unwrap();
        assert!(cache.protected.contains(&key(1)));
        assert_eq!(cache.entry_again(&conn, &key(1), true).unwrap().chunks, 3);
        cache.entry_again(&conn, &key(2), true).unwrap();
        assert!(
            cache.probation.contains(&key(2)),
            "a miss loads as a first use"
        );
    }

    /// While widened, probation keeps every document of a large transaction; narrowing turns
    /// the extra ones into ghosts (a later use protects them) and restores the bound.
    #[test]
    fn widened_probation_keeps_a_transactions_documents() {
        let conn = Connection::open_in_memory().unwrap();
        let mut cache = DocCache::new(64, ReplicaId([1; 16]));
        cache.entry_or_new(&conn, &key(0), true).unwrap();
        cache.entry_or_new(&conn, &key(0), true).unwrap();
        cache.widen(40);
        for n in 1..=40 {
            cache.entry_or_new(&conn, &key(n), true).unwrap().chunks = n;
        }
        for n in 1..=40 {
            assert_eq!(cache.entry_again(&conn, &key(n), true).unwrap().chunks, n);
        }
        assert!((1..=40).all(|n| cache.probation.contains(&key(n))));
        cache.narrow();
        assert_eq!(cache.probation.len(), PROBATION);
        assert!(
            cache.protected.contains(&key(0)),
            "the hot set is untouched"
        );
        assert!(cache.ghosts.contains(&key(1)));
        cache.widen(100_000);
        assert_eq!(cache.probation.cap().get(), 64, "never beyond the capacity");
        cache.narrow();
        assert_eq!(cache.probation.cap().get(), PROBATION);
        let mut tiny = DocCache::new(2, ReplicaId([1; 16]));
        tiny.widen(50);
        assert_eq!(
            tiny.probation.cap().get(),
            PROBATION,
            "a capacity below probation's"
        );
        tiny.narrow();
    }

    /// A document in the cache is the one written: a second use returns the same document.
    #[test]
    fn a_promoted_document_keeps_its_state() {
        let conn = Connection::open_in_memory().unwrap();
        let mut cache = DocCache::new(4, ReplicaId([1; 16]));
        let entry = cache.entry_or_new(&conn, &key(1), true).unwrap();
        entry.chunks = 7;
        assert_eq!(cache.entry_or_new(&conn, &key(1), true).unwrap().chunks, 7);
        assert!(cache.protected.contains(&key(1)));
        assert_eq!(cache.entry_or_new(&conn, &key(1), true).unwrap().chunks, 7);
    }
}
