//! Idempotency keys of local writes ([`super::Store::transact_once`]): a client that retries a
//! write after a lost reply sends the same key, and the write applies once.
//!
//! The key, a fingerprint of the request and the answer given are stored in the table
//! `idempotency` **in the same SQLite transaction as the write**: a crash between the write and
//! the reply leaves both or neither, so a retry after any failure either finds the remembered
//! answer or applies the write for the first time. A write that fails stores nothing (a retry
//! runs again). The same key with another fingerprint (another body, path or method) is refused
//! with [`WriteError::IdempotencyKeyReused`]. Keys are remembered for [`KEY_TTL`] and at most
//! [`MAX_KEYS`] of them (the oldest go first); both bounds are enforced when a key is stored.
//!
//! What the fingerprint covers and how the answer is rendered is the caller's business (the HTTP
//! API hashes method, path and body and stores its JSON answer): the store keeps opaque bytes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use super::error::WriteError;
use super::types::{Committed, StoreEvent, WriteOp};
use super::writer::Writer;

/// How long a key is remembered.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most keys remembered at once.
pub const MAX_KEYS: usize = 100_000;
/// Longest accepted key, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// An idempotency key with the fingerprint of its request and how to render the answer to keep.
#[derive(Clone)]
pub struct IdempotencyKey {
    key: String,
    fingerprint: [u8; 32],
    render: fn(&Committed) -> Vec<u8>,
}

impl std::fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyKey")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl IdempotencyKey {
    /// A key of 1..=[`MAX_KEY_LEN`] visible ASCII characters (as HTTP headers carry them).
    pub fn new(
        key: &str,
        fingerprint: [u8; 32],
        render: fn(&Committed) -> Vec<u8>,
    ) -> Result<Self, WriteError> {
        let ok = !key.is_empty()
            && key.len() <= MAX_KEY_LEN
            && key.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(WriteError::InvalidIdempotencyKey {
                reason: format!("expected 1..={MAX_KEY_LEN} visible ASCII characters"),
            });
        }
        Ok(Self {
            key: key.to_owned(),
            fingerprint,
            render,
        })
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// What [`super::Store::transact_once`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Once {
    /// The write applied now; `answer` is what was remembered.
    Applied {
        /// The commit.
        committed: Committed,
        /// The rendered answer, as stored.
        answer: Vec<u8>,
    },
    /// The key was seen before with the same fingerprint: nothing applied, the first answer.
    Replayed {
        /// The answer given the first time.
        answer: Vec<u8>,
    },
}

impl Once {
    /// The answer, applied or replayed.
    pub fn answer(&self) -> &[u8] {
        match self {
            Once::Applied { answer, .. } | Once::Replayed { answer } => answer,
        }
    }
}

/// Creates the table (a migration step).
pub(crate) fn create_table(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS idempotency (
             key TEXT PRIMARY KEY, fingerprint BLOB NOT NULL, answer BLOB NOT NULL,
             created_ms INTEGER NOT NULL) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency(created_ms);",
    )
}

fn now_ms() -> i64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn cutoff_ms(now: i64) -> i64 {
    now.saturating_sub(KEY_TTL.as_millis() as i64)
}

/// The fingerprint and answer remembered under `key`, if not expired.
fn lookup(conn: &Connection, key: &str, now: i64) -> rusqlite::Result<Option<(Vec<u8>, Vec<u8>)>> {
    conn.prepare_cached(
        "SELECT fingerprint, answer FROM idempotency WHERE key = ?1 AND created_ms >= ?2",
    )?
    .query_row(params![key, cutoff_ms(now)], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()
}

/// Remembers `key`, then drops expired keys and the oldest beyond `max_keys`.
fn remember(
    conn: &Connection,
    key: &IdempotencyKey,
    answer: &[u8],
    now: i64,
    max_keys: usize,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO idempotency (key, fingerprint, answer, created_ms)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![key.key, key.fingerprint.as_slice(), answer, now])?;
    conn.prepare_cached("DELETE FROM idempotency WHERE created_ms < ?1")?
        .execute(params![cutoff_ms(now)])?;
    conn.prepare_cached(
        "DELETE FROM idempotency WHERE created_ms < (
             SELECT created_ms FROM idempotency ORDER BY created_ms DESC LIMIT 1 OFFSET ?1)",
    )?
    .execute(params![max_keys.saturating_sub(1) as i64])?;
    Ok(())
}

impl Writer {
    /// [`Writer::transact`] under an idempotency key (see the module doc).
    pub(crate) fn transact_once(
        &mut self,
        ops: Vec<WriteOp>,
        key: &IdempotencyKey,
    ) -> Result<(Once, Option<StoreEvent>), WriteError> {
        let now = now_ms();
        if let Some((fingerprint, answer)) = lookup(&self.conn, &key.key, now)? {
            if fingerprint != key.fingerprint {
                return Err(WriteError::IdempotencyKeyReused {
                    key: key.key.clone(),
                });
            }
            return Ok((Once::Replayed { answer }, None));
        }
        let (committed, event) = self.transact(ops)?;
        let answer = (key.render)(&committed);
        remember(&self.conn, key, &answer, now, MAX_KEYS)?;
        Ok((Once::Applied { committed, answer }, event))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn table() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        let tx = conn.transaction().unwrap();
        create_table(&tx).unwrap();
        tx.commit().unwrap();
        conn
    }

    fn key(k: &str) -> IdempotencyKey {
        IdempotencyKey::new(k, [7; 32], |_| b"answer".to_vec()).unwrap()
    }

    #[test]
    fn keys_are_bounded_in_number_and_time() {
        let conn = table();
        let now = 1_000_000_000_000;
        let max = 50;
        let old = now - KEY_TTL.as_millis() as i64 - 1;
        remember(&conn, &key("old"), b"a", old, max).unwrap();
        assert!(
            lookup(&conn, "old", now).unwrap().is_none(),
            "expired keys are not seen"
        );
        for i in 0..max + 5 {
            remember(&conn, &key(&format!("k{i}")), b"a", now + i as i64, max).unwrap();
        }
        let n: i64 = conn
            .query_row("SELECT count(*) FROM idempotency", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, max as i64);
        assert!(
            lookup(&conn, "k0", now + 10).unwrap().is_none(),
            "the oldest went first"
        );
        let newest = format!("k{}", max + 4);
        assert!(lookup(&conn, &newest, now + 10).unwrap().is_some());
    }

    #[test]
    fn keys_must_be_visible_ascii() {
        for bad in ["", "a b", "é", &"x".repeat(MAX_KEY_LEN + 1)] {
            assert!(
                IdempotencyKey::new(bad, [0; 32], |_| Vec::new()).is_err(),
                "{bad:?}"
            );
        }
        assert!(IdempotencyKey::new("retry-7f3a", [0; 32], |_| Vec::new()).is_ok());
    }
}
