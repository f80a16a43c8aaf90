//! What Postgres cannot store: the character U+0000 (NUL), refused by `text` and `jsonb` alike
//! (SQLSTATE 22021 / 22P05). Nodes refuse it in local writes, but a peer's transaction may
//! still carry it (an older node, a hostile peer: remote ids are not checked, so that replicas
//! never diverge). Such a transaction is refused by the bridge before it reaches Postgres —
//! recorded in `rejected` and counted in `sync_status` like any refusal — instead of failing
//! every batch it is part of for ever; and whatever of it the bridge writes about the refusal
//! (collection, record id, reason) goes through [`pg_text`].

use std::borrow::Cow;

use meshlite_core::{Op, Txn};
use serde_json::Value;

/// Why `txn` cannot be stored in Postgres, if it cannot: a NUL in a collection name, a record
/// id or a log row. (A NUL that only appears once a document change is merged fails its write
/// inside the transaction's savepoint and is refused there.)
pub fn unstorable(txn: &Txn) -> Option<String> {
    txn.ops.iter().find_map(|op| {
        let where_ = if op.collection().contains('\0') {
            "a collection name"
        } else if op.record_id().contains('\0') {
            "a record id"
        } else if matches!(op, Op::Append { row, .. } if row_has_nul(row)) {
            "a log row"
        } else {
            return None;
        };
        Some(format!(
            "{where_} holds the character U+0000 (NUL), which Postgres text cannot store"
        ))
    })
}

fn row_has_nul(row: &str) -> bool {
    serde_json::from_str::<Value>(row).is_ok_and(|v| has_nul(&v))
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// `s` as Postgres text can hold it: every NUL replaced by U+FFFD (for names and reasons the
/// bridge records about a refusal, never for data).
pub fn pg_text(s: &str) -> Cow<'_, str> {
    match s.contains('\0') {
        true => Cow::Owned(s.replace('\0', "\u{FFFD}")),
        false => Cow::Borrowed(s),
    }
}

#[cfg(test)]
mod tests {
    use meshlite_core::{ReplicaId, TxnId};

    use super::*;

    fn txn(op: Op) -> Txn {
        Txn {
            id: TxnId {
                origin: ReplicaId([1; 16]),
                seq: 1,
            },
            timestamp_ms: 0,
            schema_version: 1,
            ops: vec![op],
        }
    }

    fn append(collection: &str, id: &str, row: &str) -> Op {
        Op::Append {
            collection: collection.into(),
            id: id.into(),
            row: row.into(),
        }
    }

    #[test]
    fn nul_anywhere_a_peer_controls_is_unstorable() {
        assert!(unstorable(&txn(append("t\0", "a", "{}"))).is_some());
        assert!(unstorable(&txn(append("t", "a\0", "{}"))).is_some());
        let nested = r#"{"k": [1, {"x": "a\u0000"}]}"#;
        assert!(unstorable(&txn(append("t", "a", nested))).is_some());
        assert!(unstorable(&txn(append("t", "a", r#"{"k\u0000": 1}"#))).is_some());
        let fine = r#"{"k": "\\u0000 is only text here"}"#;
        assert_eq!(unstorable(&txn(append("t", "a", fine))), None);
        assert_eq!(pg_text("a\0b"), "a\u{FFFD}b");
        assert!(matches!(pg_text("ab"), Cow::Borrowed("ab")));
    }
}
