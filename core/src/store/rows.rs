//! SQL for materialized rows, held ranges and stored transactions (writer side).

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

use super::derived;
use super::error::LoadError;
use crate::change::{Incarnation, Op, Txn};
use crate::ids::{ReplicaId, Seq, TxnId};
use crate::schema::CollectionDef;
use crate::version::{SeqSet, Summary};

/// The materialized state of a document record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordState {
    /// The newest incarnation seen (live unless `deleted`).
    pub incarnation: Incarnation,
    /// Tombstoned.
    pub deleted: bool,
}

impl RecordState {
    /// True when a change to `incarnation` can never become visible again.
    pub fn is_dead(&self, incarnation: Incarnation) -> bool {
        incarnation < self.incarnation || (incarnation == self.incarnation && self.deleted)
    }
}

pub(crate) fn record_state(
    conn: &Connection,
    collection: &str,
    id: &str,
) -> rusqlite::Result<Option<RecordState>> {
    conn.prepare_cached(
        "SELECT incarnation, deleted FROM records WHERE collection = ?1 AND id = ?2",
    )?
    .query_row(params![collection, id], |r| {
        Ok(RecordState {
            incarnation: r.get(0)?,
            deleted: r.get(1)?,
        })
    })
    .optional()
}

/// Writes a live record row.
pub(crate) fn upsert_record(
    conn: &Connection,
    collection: &str,
    id: &str,
    incarnation: Incarnation,
    json: &str,
    rowversion: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO records (collection, id, incarnation, deleted, json, rowversion)
         VALUES (?1, ?2, ?3, 0, ?4, ?5)
         ON CONFLICT (collection, id) DO UPDATE SET incarnation = excluded.incarnation,
             deleted = 0, json = excluded.json, rowversion = excluded.rowversion",
    )?
    .execute(params![collection, id, incarnation, json, rowversion])?;
    Ok(())
}

/// Rewrites the row of a live record that exists at `incarnation` (a local update): a plain
/// `UPDATE`, cheaper than the upsert's insert attempt and conflict.
pub(crate) fn update_live_record(
    conn: &Connection,
    collection: &str,
    id: &str,
    incarnation: Incarnation,
    json: &str,
    rowversion: i64,
) -> rusqlite::Result<()> {
    let n = conn
        .prepare_cached(
            "UPDATE records SET json = ?4, rowversion = ?5
             WHERE collection = ?1 AND id = ?2 AND incarnation = ?3 AND deleted = 0",
        )?
        .execute(params![collection, id, incarnation, json, rowversion])?;
    if n == 0 {
        // Not the live row it was read as in this command: write it whole.
        upsert_record(conn, collection, id, incarnation, json, rowversion)?;
    }
    Ok(())
}

/// Removes the tombstone row of a record about to be re-created, so that the new incarnation's
/// row gets a new rowid: rowids are the insertion order `Query::insertion_order` reads.
pub(crate) fn drop_tombstone(
    conn: &Connection,
    collection: &str,
    id: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM records WHERE collection = ?1 AND id = ?2 AND deleted = 1")?
        .execute(params![collection, id])?;
    Ok(())
}

/// Tombstones incarnation `incarnation`; the row keeps its last JSON (`stub` if it had none).
pub(crate) fn tombstone(
    conn: &Connection,
    collection: &str,
    id: &str,
    incarnation: Incarnation,
    stub: &str,
    rowversion: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO records (collection, id, incarnation, deleted, json, rowversion)
         VALUES (?1, ?2, ?3, 1, ?4, ?5)
         ON CONFLICT (collection, id) DO UPDATE SET incarnation = excluded.incarnation,
             deleted = 1, rowversion = excluded.rowversion",
    )?
    .execute(params![collection, id, incarnation, stub, rowversion])?;
    Ok(())
}

/// What inserting a log row did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogInsert {
    /// New row.
    Inserted,
    /// Replaced a row with the same id from a larger transaction id.
    Replaced,
    /// An existing row from a smaller (or the same) transaction id was kept.
    Kept,
}

/// Inserts a log row; among rows with one id the one from the smallest [`TxnId`] wins.
///
/// The common case (a new id) is one `INSERT`; the existing row is read only on a conflict.
pub(crate) fn insert_log_row(
    conn: &Connection,
    collection: &str,
    id: &str,
    txn: TxnId,
    json: &str,
    rowversion: i64,
) -> rusqlite::Result<LogInsert> {
    if insert_new_log_row(conn, collection, id, txn, json, rowversion)? {
        return Ok(LogInsert::Inserted);
    }
    match log_row_txn(conn, collection, id)? {
        Some(e) if txn >= e => return Ok(LogInsert::Kept),
        Some(e) => unpack_stored(conn, e)?,
        None => {}
    }
    conn.prepare_cached(
        "UPDATE log_rows SET origin = ?3, seq = ?4, json = ?5, rowversion = ?6
         WHERE collection = ?1 AND id = ?2",
    )?
    .execute(params![
        collection,
        id,
        &txn.origin.0[..],
        txn.seq as i64,
        json,
        rowversion
    ])?;
    Ok(LogInsert::Replaced)
}

/// The full encoding of a packed transaction (see `txns` in `migrations`): its appends' rows
/// put back from `log_rows`, and the changes it left out put back from the prefixes of the
/// `docs` states that lend them, or re-encoded from the rows of derived ones (see `docs`). A
/// derived change that does not re-encode to its hash is [`LoadError::Corrupt`], never relayed.
pub(crate) fn unpacked(conn: &Connection, bytes: &[u8]) -> Result<Vec<u8>, LoadError> {
    let mut txn = Txn::decode(bytes).map_err(|e| bad_stored(e.to_string()))?;
    let mut rows =
        conn.prepare_cached("SELECT json FROM log_rows WHERE collection = ?1 AND id = ?2")?;
    // A derived row (a marker state) re-encodes its change from the record's row (`derived`).
    let mut lent = conn.prepare_cached(
        "SELECT substr(d.state, 1, d.lent), CASE WHEN substr(d.state, 1, 1) = x'00' THEN
             (SELECT r.json FROM records r WHERE r.collection = d.collection AND r.id = d.id
                AND r.incarnation = d.incarnation) END
         FROM docs d WHERE d.collection = ?1 AND d.id = ?2
         AND d.incarnation = ?3 AND d.lender_seq = ?4 AND d.lender_origin = ?5",
    )?;
    let (origin, seq) = (&txn.id.origin.0[..], txn.id.seq as i64);
    for op in &mut txn.ops {
        match op {
            Op::Append {
                collection,
                id,
                row,
            } if row.is_empty() => {
                *row = rows
                    .query_row(params![&*collection, &*id], |r| r.get(0))
                    .optional()?
                    .ok_or_else(|| bad_stored(format!("log row {collection}/{id} is missing")))?;
            }
            Op::Doc {
                collection,
                id,
                incarnation,
                change,
            } if change.is_empty() => {
                let (prefix, json): (Vec<u8>, Option<String>) = lent
                    .query_row(
                        params![&*collection, &*id, *incarnation, seq, origin],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?
                    .ok_or_else(|| {
                        bad_stored(format!("lent change of {collection}/{id} is missing"))
                    })?;
                *change = match derived::is_marker(&prefix) {
                    true => derived::rederive(id, &prefix, &txn.id.origin, json.as_deref())
                        .map_err(|e| LoadError::Corrupt(format!("{collection}: {e}")))?,
                    false => prefix,
                };
            }
            _ => {}
        }
    }
    Ok(txn.encode())
}

/// A stored transaction that cannot be read back.
fn bad_stored(what: String) -> rusqlite::Error {
    let what = format!("stored transaction: {what}");
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, what.into())
}

/// Before the `docs` state that lends `change` to transaction `lender` is rewritten or deleted:
/// puts the change back into the stored transaction (which stays packed for what else it left
/// out), so the bytes it is relayed as never change. A transaction that is not stored (GC'd, or
/// the one being written) is left alone.
pub(crate) fn give_back(
    conn: &Connection,
    lender: TxnId,
    collection: &str,
    id: &str,
    incarnation: Incarnation,
    change: impl FnOnce() -> rusqlite::Result<Vec<u8>>,
) -> rusqlite::Result<()> {
    let key = params![&lender.origin.0[..], lender.seq as i64];
    let packed: Option<Vec<u8>> = conn
        .prepare_cached("SELECT bytes FROM txns WHERE origin = ?1 AND seq = ?2 AND packed = 1")?
        .query_row(key, |r| r.get(0))
        .optional()?;
    let Some(bytes) = packed else {
        return Ok(());
    };
    let mut txn = Txn::decode(&bytes).map_err(|e| bad_stored(e.to_string()))?;
    let slot = txn.ops.iter_mut().find_map(|op| match op {
        Op::Doc {
            collection: c,
            id: i,
            incarnation: n,
            change: lent,
        } if lent.is_empty() && c == collection && i == id && *n == incarnation => Some(lent),
        _ => None,
    });
    if let Some(slot) = slot {
        *slot = change()?;
        conn.prepare_cached("UPDATE txns SET bytes = ?3 WHERE origin = ?1 AND seq = ?2")?
            .execute(params![
                &lender.origin.0[..],
                lender.seq as i64,
                txn.encode()
            ])?;
    }
    Ok(())
}

/// Before a log row of transaction `owner` is replaced: if `owner` is stored packed, stores it
/// whole, with the rows it has now, so the bytes it is relayed as never change (and never grow
/// past the size limit with a bigger winning row).
fn unpack_stored(conn: &Connection, owner: TxnId) -> rusqlite::Result<()> {
    let key = params![&owner.origin.0[..], owner.seq as i64];
    let packed: Option<Vec<u8>> = conn
        .prepare_cached("SELECT bytes FROM txns WHERE origin = ?1 AND seq = ?2 AND packed = 1")?
        .query_row(key, |r| r.get(0))
        .optional()?;
    if let Some(bytes) = packed {
        let full = unpacked(conn, &bytes).map_err(|e| match e {
            LoadError::Storage(e) => e,
            LoadError::Corrupt(what) => bad_stored(what),
        })?;
        conn.prepare_cached(
            "UPDATE txns SET bytes = ?3, packed = 0 WHERE origin = ?1 AND seq = ?2",
        )?
        .execute(params![&owner.origin.0[..], owner.seq as i64, full])?;
    }
    Ok(())
}

/// Inserts a log row unless its id exists; returns whether it was inserted.
pub(crate) fn insert_new_log_row(
    conn: &Connection,
    collection: &str,
    id: &str,
    txn: TxnId,
    json: &str,
    rowversion: i64,
) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached(
            "INSERT INTO log_rows (collection, id, origin, seq, json, rowversion)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (collection, id) DO NOTHING",
        )?
        .execute(params![
            collection,
            id,
            &txn.origin.0[..],
            txn.seq as i64,
            json,
            rowversion
        ])?;
    Ok(n == 1)
}

/// The transaction that wrote log row `id`, if it exists.
pub(crate) fn log_row_txn(
    conn: &Connection,
    collection: &str,
    id: &str,
) -> rusqlite::Result<Option<TxnId>> {
    let row: Option<(Vec<u8>, i64)> = conn
        .prepare_cached("SELECT origin, seq FROM log_rows WHERE collection = ?1 AND id = ?2")?
        .query_row(params![collection, id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.and_then(|(o, seq)| {
        Some(TxnId {
            origin: ReplicaId::from_slice(&o)?,
            seq: seq as Seq,
        })
    }))
}

/// Stores an encoded transaction for relaying; `packed` when the rows of its appends were left
/// out because they are in `log_rows` (see `migrations`).
pub(crate) fn insert_txn(
    conn: &Connection,
    id: TxnId,
    bytes: &[u8],
    packed: bool,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO txns (origin, seq, bytes, packed) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![&id.origin.0[..], id.seq as i64, bytes, packed])?;
    Ok(())
}

/// Rewrites the held ranges of one origin.
pub(crate) fn save_held(
    conn: &Connection,
    origin: &ReplicaId,
    set: &SeqSet,
) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM held WHERE origin = ?1")?
        .execute([&origin.0[..]])?;
    let mut insert =
        conn.prepare_cached("INSERT INTO held (origin, start, end) VALUES (?1, ?2, ?3)")?;
    for &(a, b) in set.ranges() {
        insert.execute(params![&origin.0[..], a as i64, b as i64])?;
    }
    Ok(())
}

/// Reads the summary of held transactions.
pub(crate) fn load_summary(conn: &Connection) -> Result<Summary, LoadError> {
    let corrupt = |what: &str| LoadError::Corrupt(format!("held: {what}"));
    let mut stmt =
        conn.prepare_cached("SELECT origin, start, end FROM held ORDER BY origin, start")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut summary = Summary::new();
    for row in rows {
        let (origin, a, b) = row?;
        let origin = ReplicaId::from_slice(&origin).ok_or_else(|| corrupt("bad origin id"))?;
        let range =
            SeqSet::from_ranges(&[(a as Seq, b as Seq)]).ok_or_else(|| corrupt("bad range"))?;
        let mut set = summary.get(&origin).cloned().unwrap_or_default();
        set.union_with(&range);
        summary.set(origin, set);
    }
    Ok(summary)
}

/// The highest rowversion in use (the writer continues from it).
pub(crate) fn max_rowversion(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "SELECT MAX(COALESCE((SELECT MAX(rowversion) FROM records), 0),
                    COALESCE((SELECT MAX(rowversion) FROM log_rows), 0))",
    )?
    .query_row([], |r| r.get(0))
}

/// A row's JSON text. Written through `io::Write` into one buffer sized for a typical row:
/// `Value::to_string` goes through `fmt::Write` and regrows its string several times per row.
pub(crate) fn json_text(value: &Value) -> String {
    let mut buf = Vec::with_capacity(512);
    if serde_json::to_writer(&mut buf, value).is_err() {
        // Unreachable for a `Value` (string keys, finite numbers); keep the old path anyway.
        return value.to_string();
    }
    String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A record's JSON with its primary key added (typed by the collection's key type).
pub(crate) fn with_pk(mut fields: Map<String, Value>, def: &CollectionDef, id: &str) -> Value {
    fields.insert(def.primary_key.clone(), def.key_value(id));
    Value::Object(fields)
}
