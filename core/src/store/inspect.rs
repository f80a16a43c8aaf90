//! Read-side views for replication and operations: the summary, stored transactions for a
//! peer, and the status report.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use rusqlite::{Connection, params};

use super::error::ReadError;
use super::gc::load_floor;
use super::rows::load_summary;
use super::types::{CollectionStatus, OriginStatus, PeerAck, PeerAcks, PeerLag, Status, TxnBatch};
use crate::ids::{ReplicaId, Seq, TxnId};
use crate::schema::{CollectionKind, Schema};
use crate::version::{SeqSet, Summary};

/// What this replica holds (one consistent read).
pub(crate) fn summary(conn: &Connection) -> Result<Summary, ReadError> {
    Ok(load_summary(conn)?)
}

/// Normalizes requested ranges (invalid ones are ignored) into a summary.
fn wanted(want: &[(ReplicaId, RangeInclusive<Seq>)]) -> Summary {
    let mut out = Summary::new();
    for (origin, range) in want {
        let (a, b) = (*range.start(), *range.end());
        if a >= 1 && a <= b && b <= i64::MAX as Seq {
            let mut set = out.get(origin).cloned().unwrap_or_default();
            set.insert_range(a, b);
            out.set(*origin, set);
        }
    }
    out
}

/// Stored transactions in `want`, in (origin, seq) order, up to `byte_budget` (at least one).
pub(crate) fn txns_for(
    conn: &Connection,
    want: &[(ReplicaId, RangeInclusive<Seq>)],
    byte_budget: usize,
) -> Result<TxnBatch, ReadError> {
    let want = wanted(want);
    let tx = conn.unchecked_transaction()?;
    let floor = load_floor(&tx)?;
    let mut batch = TxnBatch::default();
    let mut used = 0usize;
    let mut stmt = tx.prepare_cached(
        "SELECT bytes, packed, seq FROM txns WHERE origin = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq",
    )?;
    'outer: for (origin, set) in want.iter() {
        for &(a, b) in set.ranges() {
            let mut rows = stmt.query(params![&origin.0[..], a as i64, b as i64])?;
            while let Some(row) = rows.next()? {
                let seq = row.get::<_, i64>(2)? as Seq;
                let mut bytes: Vec<u8> = row.get(0)?;
                if row.get::<_, bool>(1)? {
                    bytes = super::rows::unpacked(&tx, &bytes)?;
                }
                if !batch.txns.is_empty() && used.saturating_add(bytes.len()) > byte_budget {
                    batch.more = true;
                    break 'outer;
                }
                used += bytes.len();
                batch.txns.push(bytes);
                batch.ids.push(TxnId {
                    origin: *origin,
                    seq,
                });
            }
        }
    }
    drop(stmt);
    tx.finish()?;
    for (origin, set) in want.intersection(&floor).iter() {
        batch
            .pruned
            .extend(set.ranges().iter().map(|&(a, b)| (*origin, a..=b)));
    }
    Ok(batch)
}

/// The status report.
pub(crate) fn status(
    conn: &Connection,
    schema: &Schema,
    replica: ReplicaId,
) -> Result<Status, ReadError> {
    let tx = conn.unchecked_transaction()?;
    let held = summary(&tx)?;
    let count = |sql: &str| -> Result<u64, ReadError> {
        Ok(tx
            .prepare_cached(sql)?
            .query_row([], |r| r.get::<_, i64>(0))? as u64)
    };
    let page_bytes =
        count("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")?;
    let status = Status {
        replica_id: replica,
        schema_version: schema.version,
        collections: collection_counts(&tx, schema)?,
        origins: held.iter().map(|(o, s)| origin_status(*o, s)).collect(),
        txn_count: held.txn_count(),
        stored_txns: count("SELECT COUNT(*) FROM txns")?,
        parked: count("SELECT COUNT(*) FROM parked")?,
        db_bytes: page_bytes,
        gc_floor: load_floor(&tx)?,
        known_peers: count("SELECT COUNT(*) FROM peer_acks")?,
        peers: peer_lags(&tx, &held)?,
    };
    tx.finish()?;
    Ok(status)
}

/// This replica's summary and every known peer's acknowledgement (one consistent read).
pub(crate) fn peer_acks(conn: &Connection) -> Result<PeerAcks, ReadError> {
    let tx = conn.unchecked_transaction()?;
    let acks = PeerAcks {
        held: summary(&tx)?,
        peers: load_acks(&tx)?,
    };
    tx.finish()?;
    Ok(acks)
}

/// Every known peer's acknowledgement. An unreadable one counts as holding nothing, so the
/// peer is reported as lagging by everything rather than skipped.
fn load_acks(conn: &Connection) -> Result<Vec<PeerAck>, ReadError> {
    let mut stmt =
        conn.prepare_cached("SELECT peer, summary, updated_at FROM peer_acks ORDER BY peer")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (peer, bytes, at) = row?;
        let Some(replica) = ReplicaId::from_slice(&peer) else {
            continue;
        };
        out.push(PeerAck {
            replica,
            held: postcard::from_bytes(&bytes).unwrap_or_default(),
            acked_at_ms: at.max(0) as u64,
        });
    }
    Ok(out)
}

/// Lag of every known peer against `held`.
fn peer_lags(conn: &Connection, held: &Summary) -> Result<Vec<PeerLag>, ReadError> {
    let lags = load_acks(conn)?.into_iter().map(|ack| PeerLag {
        replica: ack.replica,
        missing: held
            .missing_from(&ack.held)
            .iter()
            .map(|(_, r)| r.end() - r.start() + 1)
            .sum(),
        acked_at_ms: ack.acked_at_ms,
    });
    Ok(lags.collect())
}

fn origin_status(origin: ReplicaId, set: &SeqSet) -> OriginStatus {
    OriginStatus {
        origin,
        ranges: set.ranges().to_vec(),
        count: set.len(),
    }
}

fn collection_counts(
    conn: &Connection,
    schema: &Schema,
) -> Result<Vec<CollectionStatus>, ReadError> {
    let mut out: BTreeMap<String, CollectionStatus> = schema
        .collections
        .iter()
        .map(|(name, def)| {
            let s = CollectionStatus {
                name: name.clone(),
                kind: def.kind,
                live: 0,
                deleted: 0,
                declared: true,
            };
            (name.clone(), s)
        })
        .collect();
    let sources = [
        (
            "SELECT collection, SUM(deleted = 0), SUM(deleted) FROM records GROUP BY collection",
            CollectionKind::Document,
        ),
        (
            "SELECT collection, COUNT(*), 0 FROM log_rows GROUP BY collection",
            CollectionKind::Log,
        ),
    ];
    for (sql, kind) in sources {
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (name, live, deleted) = row?;
            let entry = out.entry(name.clone()).or_insert(CollectionStatus {
                name,
                kind,
                live: 0,
                deleted: 0,
                declared: false,
            });
            entry.live += live as u64;
            entry.deleted += deleted as u64;
        }
    }
    Ok(out.into_values().collect())
}
