//! The bytes of an Automerge change that only puts scalars on the root map, written directly.
//!
//! Automerge 0.6's change chunk (see its `storage::change` and `columnar::encoding`): magic
//! bytes, 4 checksum bytes (the hash's first 4), chunk type 1, the body's length (LEB128), and
//! the body: dependencies, actor, sequence, start op, time, message, other actors, the column
//! table, the column data. Puts on the root map fill six columns: key strings (RLE), insert
//! (boolean), action (RLE), value metadata (RLE of `length << 4 | type`), raw values, and the
//! predecessor group (RLE); empty columns are left out. The hash is SHA-256 of the chunk type,
//! the body length and the body.
//!
//! This is a re-implementation of Automerge's encoder for one shape of change, written so that
//! re-encoding a derived first change (see `derived`) costs microseconds instead of a trip
//! through Automerge's own builder. It is trusted only where it was checked: `derived` keeps a
//! record derived only when these bytes equal the committed change, and verifies the hash on
//! every re-encoding, so a divergence from Automerge costs space, never correctness.

use sha2::{Digest, Sha256};

use crate::ids::ReplicaId;

/// Automerge's chunk magic bytes.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Chunk type of a change.
const CHANGE: u8 = 1;
/// Column specifications (column id << 4 | column type), in the order they are written.
const KEY_STRING: u64 = 0x15;
const INSERT: u64 = 0x34;
const ACTION: u64 = 0x42;
const VALUE_META: u64 = 0x56;
const VALUE_RAW: u64 = 0x57;
const PRED_GROUP: u64 = 0x70;
/// The `set` action.
const SET: u64 = 1;

/// A scalar value as Automerge stores it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Scalar<'a> {
    Null,
    Bool(bool),
    Uint(u64),
    Int(i64),
    F64(f64),
    Str(&'a str),
}

impl Scalar<'_> {
    /// Appends the raw bytes; returns the value metadata (`length << 4 | type`).
    fn write(&self, raw: &mut Vec<u8>) -> u64 {
        let start = raw.len();
        let kind = match *self {
            Scalar::Null => 0,
            Scalar::Bool(false) => 1,
            Scalar::Bool(true) => 2,
            Scalar::Uint(u) => {
                uleb(raw, u);
                3
            }
            Scalar::Int(i) => {
                sleb(raw, i);
                4
            }
            Scalar::F64(f) => {
                raw.extend_from_slice(&f.to_le_bytes());
                5
            }
            Scalar::Str(s) => {
                raw.extend_from_slice(s.as_bytes());
                6
            }
        };
        (((raw.len() - start) as u64) << 4) | kind
    }
}

/// A change's bytes and hash.
pub(crate) struct Encoded {
    pub bytes: Vec<u8>,
    pub hash: [u8; 32],
}

/// The change by `actor` (sequence 1, start op 1, time 0, no message, no dependencies) putting
/// `puts` (key, value) on the root map in this order.
pub(crate) fn encode<'a>(
    actor: &ReplicaId,
    puts: impl ExactSizeIterator<Item = (&'a str, Scalar<'a>)>,
) -> Encoded {
    let n = puts.len();
    let (mut keys, mut metas, mut raw) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::new());
    for (key, value) in puts {
        keys.push(key);
        metas.push(value.write(&mut raw));
    }
    let mut columns: Vec<(u64, Vec<u8>)> = Vec::with_capacity(6);
    columns.push((KEY_STRING, rle(&keys, |out, k| string(out, k))));
    let mut insert = Vec::new();
    if n > 0 {
        uleb(&mut insert, n as u64);
    }
    columns.push((INSERT, insert));
    columns.push((ACTION, rle(&vec![SET; n], |out, v| uleb(out, *v))));
    columns.push((VALUE_META, rle(&metas, |out, v| uleb(out, *v))));
    columns.push((VALUE_RAW, raw));
    columns.push((PRED_GROUP, rle(&vec![0_u64; n], |out, v| uleb(out, *v))));
    columns.retain(|(_, data)| !data.is_empty());
    chunk(actor, &columns)
}

/// The change chunk holding `columns`.
fn chunk(actor: &ReplicaId, columns: &[(u64, Vec<u8>)]) -> Encoded {
    let data_len: usize = columns.iter().map(|(_, d)| d.len()).sum();
    let mut body = Vec::with_capacity(40 + 4 * columns.len() + data_len);
    body.push(0); // dependencies
    string(&mut body, actor.0);
    body.extend_from_slice(&[1, 1, 0, 0, 0]); // seq, start op, time, message, other actors
    uleb(&mut body, columns.len() as u64);
    for (spec, data) in columns {
        uleb(&mut body, *spec);
        uleb(&mut body, data.len() as u64);
    }
    for (_, data) in columns {
        body.extend_from_slice(data);
    }
    let mut len = Vec::with_capacity(4);
    uleb(&mut len, body.len() as u64);
    let hash: [u8; 32] = Sha256::new()
        .chain_update([CHANGE])
        .chain_update(&len)
        .chain_update(&body)
        .finalize()
        .into();
    let mut bytes = Vec::with_capacity(9 + len.len() + body.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&hash[..4]);
    bytes.push(CHANGE);
    bytes.extend_from_slice(&len);
    bytes.extend_from_slice(&body);
    Encoded { bytes, hash }
}

/// Automerge's run-length encoding: a run of 2 or more equal values as (count, value), other
/// values gathered into literal runs (-count, values...).
fn rle<T: PartialEq>(values: &[T], write: impl Fn(&mut Vec<u8>, &T)) -> Vec<u8> {
    let mut out = Vec::new();
    let mut literal: Vec<&T> = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let run = values[i..].iter().take_while(|v| **v == values[i]).count();
        if run >= 2 {
            flush_literal(&mut out, &mut literal, &write);
            sleb(&mut out, run as i64);
            write(&mut out, &values[i]);
        } else {
            literal.push(&values[i]);
        }
        i += run;
    }
    flush_literal(&mut out, &mut literal, &write);
    out
}

fn flush_literal<T>(out: &mut Vec<u8>, literal: &mut Vec<&T>, write: &impl Fn(&mut Vec<u8>, &T)) {
    if literal.is_empty() {
        return;
    }
    sleb(out, -(literal.len() as i64));
    for v in literal.drain(..) {
        write(out, v);
    }
}

/// Length-prefixed bytes.
fn string(out: &mut Vec<u8>, s: impl AsRef<[u8]>) {
    let s = s.as_ref();
    uleb(out, s.len() as u64);
    out.extend_from_slice(s);
}

fn uleb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn sleb(out: &mut Vec<u8>, mut v: i64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        let done = (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0);
        if done {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{ROOT, ScalarValue};

    use super::*;
    use crate::store::doc::new_doc;

    /// Automerge's own bytes for the same puts, for values at every encoding boundary and
    /// repeated keys' metadata (runs and literal runs mixed).
    #[test]
    fn matches_automerge_for_root_puts() {
        let me = ReplicaId([3; 16]);
        let values = [
            Scalar::Null,
            Scalar::Null,
            Scalar::Bool(true),
            Scalar::Bool(false),
            Scalar::Int(0),
            Scalar::Int(63),
            Scalar::Int(64),
            Scalar::Int(-64),
            Scalar::Int(-65),
            Scalar::Int(i64::MIN),
            Scalar::Int(i64::MAX),
            Scalar::Uint(u64::MAX),
            Scalar::F64(-0.0),
            Scalar::F64(1e300),
            Scalar::Str(""),
            Scalar::Str("é✓"),
            Scalar::Int(1),
            Scalar::Int(2),
            Scalar::Int(3),
        ];
        for take in [0, 1, 2, 3, values.len()] {
            let keys: Vec<String> = (0..take).map(|i| format!("k{i:02}")).collect();
            let puts = keys.iter().map(String::as_str).zip(values.iter().copied());
            let mut doc = new_doc(&me);
            let mut tx = doc.transaction();
            for (key, value) in puts.clone() {
                let v = match value {
                    Scalar::Null => ScalarValue::Null,
                    Scalar::Bool(b) => ScalarValue::Boolean(b),
                    Scalar::Uint(u) => ScalarValue::Uint(u),
                    Scalar::Int(i) => ScalarValue::Int(i),
                    Scalar::F64(f) => ScalarValue::F64(f),
                    Scalar::Str(s) => ScalarValue::Str(s.into()),
                };
                tx.put(ROOT, key, v).unwrap();
            }
            if take == 0 {
                tx.rollback();
                doc.empty_commit(Default::default());
            } else {
                tx.commit();
            }
            let real = doc.get_last_local_change().unwrap();
            let ours = encode(&me, puts);
            assert_eq!(
                hex::encode(&ours.bytes),
                hex::encode(real.raw_bytes()),
                "{take}"
            );
            assert_eq!(ours.hash, real.hash().0);
        }
    }
}
