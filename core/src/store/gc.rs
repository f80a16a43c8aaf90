//! Garbage collection of relayed history, and compaction of document states.
//!
//! Every held transaction is kept in `txns` so this replica can relay it. Once every known peer
//! has acknowledged holding it, nobody can ask for it any more, so it can go. The mesh and the
//! bridge call [`super::Store::record_peer_ack`] with the summary a peer reported (in its
//! handshake or after a sync); the acknowledgements are persisted in `peer_acks`.
//! [`super::Store::gc`] computes the horizon = this replica's summary ∩ every known peer's
//! acknowledged summary, deletes the stored transactions inside it and adds the horizon to the
//! persisted GC floor. With no known peer, nothing is collected. A peer that joins later and
//! asks for collected ranges is told so ([`super::TxnBatch::pruned`]) and must be seeded from a
//! replica's snapshot instead. [`super::Store::forget_peer`] removes a peer that left for good
//! (otherwise its stale acknowledgement holds the horizon back forever).
//!
//! Document states of dead incarnations (deleted or superseded by a re-creation) are freed as
//! soon as the tombstone is applied, because no change to a dead incarnation is ever applied
//! again; `gc` also sweeps any that remain. Tombstones themselves (`records` rows with
//! `deleted = 1`) are tiny and kept forever, so a late change can never resurrect a record.

use rusqlite::params;

use super::doc::load_doc;
use super::docs::{DocKey, Stored, give_back_dead, stored_state, write_snapshot};
use super::error::{LoadError, WriteError};
use super::migrations::{meta_get, meta_set};
use super::types::GcReport;
use super::writer::Writer;
use crate::ids::ReplicaId;
use crate::version::Summary;

/// `meta` key of the GC floor.
pub(crate) const GC_FLOOR_KEY: &str = "gc_floor";

impl Writer {
    /// Persists what `peer` acknowledged holding.
    pub fn record_peer_ack(&mut self, peer: &ReplicaId, held: &Summary) -> rusqlite::Result<()> {
        let bytes = postcard::to_stdvec(held).unwrap_or_default();
        self.conn
            .prepare_cached(
                "INSERT INTO peer_acks (peer, summary, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (peer) DO UPDATE SET summary = excluded.summary, updated_at = excluded.updated_at",
            )?
            .execute(params![&peer.0[..], bytes, super::now_ms() as i64])?;
        Ok(())
    }

    /// Drops a peer from the GC horizon.
    pub fn forget_peer(&mut self, peer: &ReplicaId) -> rusqlite::Result<()> {
        self.conn
            .execute("DELETE FROM peer_acks WHERE peer = ?1", [&peer.0[..]])?;
        Ok(())
    }

    /// Deletes stored transactions every known peer holds.
    pub fn gc(&mut self) -> Result<GcReport, WriteError> {
        let acks = self.peer_acks()?;
        if acks.is_empty() {
            return Ok(GcReport::default());
        }
        let horizon = acks
            .iter()
            .fold(self.summary.clone(), |h, a| h.intersection(a));
        let mut txns_deleted = 0;
        let mut delete = self
            .conn
            .prepare_cached("DELETE FROM txns WHERE origin = ?1 AND seq BETWEEN ?2 AND ?3")?;
        for (origin, set) in horizon.iter() {
            for &(a, b) in set.ranges() {
                txns_deleted += delete.execute(params![&origin.0[..], a as i64, b as i64])? as u64;
            }
        }
        drop(delete);
        let mut floor = load_floor(&self.conn)?;
        floor.union_with(&horizon);
        meta_set(
            &self.conn,
            GC_FLOOR_KEY,
            &postcard::to_stdvec(&floor).unwrap_or_default(),
        )?;
        give_back_dead(&self.conn)?;
        let docs_freed = self.conn.execute(
            "DELETE FROM docs WHERE EXISTS (SELECT 1 FROM records r
                 WHERE r.collection = docs.collection AND r.id = docs.id
                   AND (r.incarnation > docs.incarnation OR (r.incarnation = docs.incarnation AND r.deleted)))",
            [],
        )? as u64;
        Ok(GcReport {
            horizon,
            txns_deleted,
            docs_freed,
        })
    }

    fn peer_acks(&self) -> rusqlite::Result<Vec<Summary>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT peer, summary FROM peer_acks")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (peer, bytes) = row?;
            match postcard::from_bytes::<Summary>(&bytes) {
                Ok(s) => out.push(s),
                // An unreadable ack must hold the horizon back, not advance it.
                Err(e) => {
                    tracing::warn!(peer = %hex::encode(peer), "unreadable peer acknowledgement: {e}");
                    out.push(Summary::new());
                }
            }
        }
        Ok(out)
    }

    /// Rewrites the states of up to `max_docs` documents with appended chunks as one snapshot.
    pub fn compact(&mut self, max_docs: usize) -> Result<usize, WriteError> {
        let keys: Vec<DocKey> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT collection, id, incarnation FROM docs WHERE chunks > 1 ORDER BY chunks DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([max_docs.min(i64::MAX as usize) as i64], |r| {
                Ok(DocKey {
                    collection: r.get(0)?,
                    id: r.get(1)?,
                    incarnation: r.get(2)?,
                })
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for key in &keys {
            // A cached document is used as it is; another is loaded for the snapshot only, so
            // compaction neither counts as a use nor fills the cache.
            if let Some(entry) = self.docs.cached_mut(key) {
                write_snapshot(&self.conn, key, entry.doc())?;
                entry.chunks = 0;
                entry.derived = None;
                continue;
            }
            let Some(Stored { state, .. }) = stored_state(&self.conn, key)? else {
                continue;
            };
            let doc = load_doc(&state, &self.replica)
                .map_err(|e| WriteError::Corrupt(format!("{}/{}: {e}", key.collection, key.id)))?;
            write_snapshot(&self.conn, key, &doc)?;
        }
        Ok(keys.len())
    }
}

/// Everything garbage-collected so far.
pub(crate) fn load_floor(conn: &rusqlite::Connection) -> Result<Summary, LoadError> {
    match meta_get(conn, GC_FLOOR_KEY)? {
        None => Ok(Summary::new()),
        Some(b) => {
            postcard::from_bytes(&b).map_err(|e| LoadError::Corrupt(format!("gc floor: {e}")))
        }
    }
}
