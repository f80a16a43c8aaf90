//! [`DocCache`]: merged record documents kept in memory across batches, so a record that comes
//! back while cached is neither fetched from `docs`, parsed by Automerge again, nor freed.
//!
//! The cache only saves work; `docs` stays the truth. An entry is the document exactly as the
//! bridge wrote it to `docs` in a committed batch, with a *version* of that row: the 64-bit id
//! of the Postgres transaction that wrote it (`pg_current_xact_id()`), the chunk count and the
//! state's length. A batch takes its records' entries out of the cache and sends their versions
//! with the query that locks and reads the `docs` rows (`sets::load`, under the records' locks,
//! in the batch's own transaction); the server returns the stored state instead of "unchanged"
//! unless the row's `xmin` is that transaction (its low 32 bits), its chunks and its length are
//! the same. Any other writer of the row — a central edit, the row-by-row path, another bridge,
//! a delete — makes a new row version with another `xmin`, so its change is never missed.
//!
//! Why `xmin` is enough: an entry is only offered while the current transaction id is less than
//! 2^31 past the entry's, so every transaction that could have written the row since lies
//! within 2^31 of it and has other low 32 bits. Freezing keeps the raw `xmin` (Postgres ≥ 9.4),
//! and a mismatch only costs a reload. The cache is emptied whenever the writer connection is
//! replaced (a restored or failed-over server may reuse transaction ids), and it is memory only:
//! a restart (or SIGKILL) starts cold and loads everything from `docs`.
//!
//! Entries are taken out for a batch and put back only after its commit ([`DocCache::put`]); a
//! batch that fails or rolls back drops the ones it took. Least recently used entries go first
//! once the estimated size passes the configured bytes (`sync.doc_cache_mib`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use meshlite_core::store::record::RecordDoc;

use super::sets::{DocKey, Expected};

/// Transaction ids this far apart can share low 32 bits: older entries are not offered.
const XID_HORIZON: u64 = 1 << 31;

/// Estimated memory of a cached document: this many times its stored bytes, plus
/// [`ENTRY_OVERHEAD`] (Automerge's op set keeps every op expanded; measured in benches/README.md).
const BYTES_FACTOR: usize = 4;
/// Fixed part of an entry's estimated size (the key, the document's empty structures).
const ENTRY_OVERHEAD: usize = 1024;

/// The version of a `docs` row as the bridge last wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowVersion {
    /// The full (epoch-extended) id of the transaction that wrote the row.
    pub xid: u64,
    /// The row's `chunks`.
    pub chunks: i32,
    /// `octet_length` of the row's `state`.
    pub len: i64,
}

impl RowVersion {
    /// The row's `xmin` when this version is still in place.
    pub fn xmin(&self) -> i64 {
        i64::from(self.xid as u32)
    }

    /// What [`super::sets::load`] compares the row with.
    pub fn expected(&self) -> Expected {
        Expected {
            xmin: self.xmin(),
            chunks: self.chunks,
            len: self.len,
        }
    }
}

/// A cached document and the row version it matches.
#[derive(Debug)]
pub struct Cached {
    /// The merged document, as loading the row's state would give it.
    pub doc: RecordDoc,
    /// The row it matches.
    pub version: RowVersion,
}

impl Cached {
    fn cost(&self) -> usize {
        let len = usize::try_from(self.version.len).unwrap_or(usize::MAX);
        len.saturating_mul(BYTES_FACTOR)
            .saturating_add(ENTRY_OVERHEAD)
    }
}

#[derive(Debug, Default)]
struct Lru {
    entries: HashMap<DocKey, (Cached, u64)>,
    /// Use ticks, oldest first.
    order: BTreeMap<u64, DocKey>,
    tick: u64,
    bytes: usize,
    hits: u64,
    misses: u64,
}

impl Lru {
    fn remove(&mut self, key: &DocKey) -> Option<Cached> {
        let (cached, tick) = self.entries.remove(key)?;
        self.order.remove(&tick);
        self.bytes -= cached.cost();
        Some(cached)
    }
}

/// Merged documents by record incarnation, bounded by an estimate of their memory (see the
/// module doc). Shared by the writer's batches, one at a time.
#[derive(Debug)]
pub struct DocCache {
    capacity: usize,
    lru: Mutex<Lru>,
}

/// How often the cache answered, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// Records whose cached document was still current.
    pub hits: u64,
    /// Records loaded from `docs` (not cached, or changed by another writer).
    pub misses: u64,
}

impl DocCache {
    /// A cache of at most about `capacity` bytes (0 disables it).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            lru: Mutex::default(),
        }
    }

    fn lru(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes out the entries of `keys` that may still be current in a transaction whose id is
    /// `now_xid` (older entries are dropped). The caller must check each against its row.
    pub fn take(&self, keys: &[DocKey], now_xid: u64) -> HashMap<DocKey, Cached> {
        let mut lru = self.lru();
        let mut out = HashMap::new();
        for key in keys {
            if let Some(cached) = lru.remove(key)
                && now_xid.wrapping_sub(cached.version.xid) < XID_HORIZON
            {
                out.insert(key.clone(), cached);
            }
        }
        out
    }

    /// Counts how the last batch's offers turned out.
    pub fn count(&self, hits: u64, misses: u64) {
        let mut lru = self.lru();
        lru.hits += hits;
        lru.misses += misses;
    }

    /// Hits and misses so far.
    pub fn counts(&self) -> CacheCounts {
        let lru = self.lru();
        CacheCounts {
            hits: lru.hits,
            misses: lru.misses,
        }
    }

    /// Puts back documents a committed batch wrote (or found current), most recent last,
    /// evicting the least recently used beyond the capacity.
    pub fn put(&self, entries: impl IntoIterator<Item = (DocKey, Cached)>) {
        if self.capacity == 0 {
            return;
        }
        let mut lru = self.lru();
        for (key, cached) in entries {
            lru.remove(&key);
            let cost = cached.cost();
            if cost > self.capacity {
                continue;
            }
            lru.tick += 1;
            let tick = lru.tick;
            lru.bytes += cost;
            lru.order.insert(tick, key.clone());
            lru.entries.insert(key, (cached, tick));
        }
        while lru.bytes > self.capacity {
            let Some((_, key)) = lru.order.pop_first() else {
                break;
            };
            if let Some((cached, _)) = lru.entries.remove(&key) {
                lru.bytes -= cached.cost();
            }
        }
    }

    /// Forgets every entry (the connection was replaced: see the module doc).
    pub fn clear(&self) {
        let mut lru = self.lru();
        lru.entries.clear();
        lru.order.clear();
        lru.bytes = 0;
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lru().entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshlite_core::ReplicaId;

    fn key(id: &str) -> DocKey {
        DocKey {
            collection: "tasks".into(),
            id: id.into(),
            incarnation: 1,
        }
    }

    fn cached(xid: u64, len: i64) -> Cached {
        Cached {
            doc: RecordDoc::new(&ReplicaId([7; 16])),
            version: RowVersion {
                xid,
                chunks: 1,
                len,
            },
        }
    }

    #[test]
    fn an_entry_is_taken_once_and_only_while_its_xid_is_within_the_horizon() {
        let cache = DocCache::new(1 << 20);
        cache.put([(key("a"), cached(100, 10)), (key("b"), cached(100, 10))]);
        assert_eq!(cache.take(&[key("a")], 200).len(), 1);
        assert!(cache.take(&[key("a")], 200).is_empty(), "taken out");
        assert!(cache.take(&[key("b")], 100 + XID_HORIZON).is_empty());
        assert!(cache.is_empty(), "the stale entry is dropped");
    }

    #[test]
    fn the_least_recently_put_entries_go_first_beyond_the_capacity() {
        let one = cached(1, 100).cost();
        let cache = DocCache::new(one * 2);
        cache.put([(key("a"), cached(1, 100)), (key("b"), cached(1, 100))]);
        cache.put([(key("c"), cached(1, 100))]);
        assert_eq!(cache.len(), 2);
        assert!(cache.take(&[key("a")], 2).is_empty());
        assert_eq!(cache.take(&[key("b"), key("c")], 2).len(), 2);
    }

    #[test]
    fn version_xmin_is_the_low_32_bits() {
        let v = RowVersion {
            xid: (3 << 32) | 17,
            chunks: 0,
            len: 0,
        };
        assert_eq!(v.xmin(), 17);
    }

    #[test]
    fn a_zero_capacity_holds_nothing() {
        let cache = DocCache::new(0);
        cache.put([(key("a"), cached(1, 1))]);
        assert!(cache.is_empty());
    }
}
