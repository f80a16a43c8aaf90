//! What a convergence script is made of, and how one is decoded from a fuzzer's bytes.

use std::collections::BTreeSet;

use arbitrary::{Result, Unstructured};
use serde_json::{Value, json};

use crate::store::WriteOp;

/// The schema every replica starts with: document fields of every merge policy, a plain
/// collection for multi-record transactions, and two log collections.
pub const SCHEMA_V1: &str = r#"
version = 1
[collections.d.fields]
c = { merge = "counter" }
hi = { merge = "max" }
lo = { merge = "min" }
st = { merge = "priority", order = ["s0", "s1", "s2", "s3"] }
tx = { merge = "text" }
[collections.z]
[collections.logs]
kind = "log"
[collections.marks]
kind = "log"
"#;

/// The upgrade a replica may take mid-script: a second counter field.
pub const SCHEMA_V2: &str = r#"
version = 2
[collections.d.fields]
c = { merge = "counter" }
c2 = { merge = "counter" }
hi = { merge = "max" }
lo = { merge = "min" }
st = { merge = "priority", order = ["s0", "s1", "s2", "s3"] }
tx = { merge = "text" }
[collections.z]
[collections.logs]
kind = "log"
[collections.marks]
kind = "log"
"#;

/// The priority order of field `st`, best first.
pub const STATUS: [&str; 4] = ["s0", "s1", "s2", "s3"];

/// Record ids per collection are drawn from a small set, so that edits collide.
pub const IDS: u8 = 4;

/// One op of a local transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    /// A put of `d{id}` with some of its fields.
    Put {
        /// Record.
        id: u8,
        /// An lww value (an object, so that nested maps merge too).
        v: Option<u8>,
        /// `max` field.
        hi: Option<i64>,
        /// `min` field.
        lo: Option<i64>,
        /// `priority` field, as an index into [`STATUS`].
        st: Option<u8>,
        /// `text` field, written whole.
        tx: Option<String>,
    },
    /// An increment of counter `c`.
    Inc {
        /// Record.
        id: u8,
        /// Amount (may be negative).
        by: i64,
    },
    /// An increment of counter `c2`, declared only by [`SCHEMA_V2`]; skipped on a replica still
    /// on version 1.
    Inc2 {
        /// Record.
        id: u8,
        /// Amount.
        by: i64,
    },
    /// A delete of `d{id}` (a tombstone of its current incarnation).
    Delete {
        /// Record.
        id: u8,
    },
    /// An explicit re-creation of `d{id}` (a new incarnation).
    Recreate {
        /// Record.
        id: u8,
        /// An lww value.
        v: u8,
    },
    /// A log append, with an explicit id (`a{id}`, may collide) or a generated one.
    Append {
        /// Explicit row id.
        id: Option<u8>,
        /// Payload.
        n: u8,
    },
    /// Marks several `z` records and appends `logs` rows to `marks`, all tagged by the txn: the
    /// atomicity probe.
    Mark {
        /// Records marked.
        ids: BTreeSet<u8>,
        /// Rows appended.
        logs: u8,
    },
}

/// One step of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A local transaction on a replica.
    Local {
        /// Replica index.
        replica: usize,
        /// Its ops.
        specs: Vec<Spec>,
    },
    /// Sends a random part of what `to` lacks from `from`: lost, duplicated and reordered
    /// transactions, in random chunks; `seed` drives the choices.
    Deliver {
        /// Sender.
        from: usize,
        /// Receiver.
        to: usize,
        /// Randomness.
        seed: u64,
    },
    /// Everything `to` lacks from `from`, through a bundle file written and read in memory.
    Bundle {
        /// Exporter.
        from: usize,
        /// Importer.
        to: usize,
    },
    /// Closes the store and opens it again from its files.
    Restart {
        /// Replica index.
        replica: usize,
    },
    /// Records every other replica's true summary as acknowledged, then collects garbage.
    Gc {
        /// Replica index.
        replica: usize,
    },
    /// Reopens the replica with [`SCHEMA_V2`] (once; the others follow before the final check).
    Upgrade {
        /// Replica index.
        replica: usize,
    },
}

/// A whole script: how many replicas, and what happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    /// 2 to 5.
    pub replicas: usize,
    /// In order.
    pub actions: Vec<Action>,
}

/// Most actions a decoded script runs: keeps one fuzz execution short.
const MAX_ACTIONS: usize = 40;

impl Script {
    /// Decodes a script; stops at [`MAX_ACTIONS`] or when the bytes run out.
    pub fn decode(u: &mut Unstructured<'_>) -> Result<Script> {
        let replicas = u.int_in_range(2..=5usize)?;
        let mut actions = Vec::new();
        while actions.len() < MAX_ACTIONS && !u.is_empty() {
            actions.push(decode_action(u, replicas)?);
        }
        Ok(Script { replicas, actions })
    }
}

fn decode_action(u: &mut Unstructured<'_>, n: usize) -> Result<Action> {
    let replica = u.int_in_range(0..=n - 1)?;
    Ok(match u.int_in_range(0..=15u8)? {
        0..=6 => {
            let len = u.int_in_range(1..=3usize)?;
            let specs = (0..len).map(|_| decode_spec(u)).collect::<Result<_>>()?;
            Action::Local { replica, specs }
        }
        7..=11 => Action::Deliver {
            from: replica,
            to: u.int_in_range(0..=n - 1)?,
            seed: u.arbitrary()?,
        },
        12 => Action::Bundle {
            from: replica,
            to: u.int_in_range(0..=n - 1)?,
        },
        13 => Action::Restart { replica },
        14 => Action::Gc { replica },
        _ => Action::Upgrade { replica },
    })
}

fn id(u: &mut Unstructured<'_>) -> Result<u8> {
    u.int_in_range(0..=IDS - 1)
}

fn opt<T>(
    u: &mut Unstructured<'_>,
    f: impl FnOnce(&mut Unstructured<'_>) -> Result<T>,
) -> Result<Option<T>> {
    Ok(if u.arbitrary::<bool>()? {
        Some(f(u)?)
    } else {
        None
    })
}

fn decode_spec(u: &mut Unstructured<'_>) -> Result<Spec> {
    Ok(match u.int_in_range(0..=11u8)? {
        0..=3 => Spec::Put {
            id: id(u)?,
            v: opt(u, |u| u.int_in_range(0..=2))?,
            hi: opt(u, |u| u.int_in_range(-50..=50))?,
            lo: opt(u, |u| u.int_in_range(-50..=50))?,
            st: opt(u, |u| u.int_in_range(0..=3))?,
            tx: opt(u, |u| {
                let len = u.int_in_range(0..=4usize)?;
                (0..len)
                    .map(|_| Ok(if u.arbitrary::<bool>()? { 'a' } else { 'b' }))
                    .collect()
            })?,
        },
        4..=5 => Spec::Inc {
            id: id(u)?,
            by: u.int_in_range(-5..=5)?,
        },
        6 => Spec::Inc2 {
            id: id(u)?,
            by: u.int_in_range(-5..=5)?,
        },
        7 => Spec::Delete { id: id(u)? },
        8 => Spec::Recreate {
            id: id(u)?,
            v: u.int_in_range(0..=2)?,
        },
        9..=10 => Spec::Append {
            id: opt(u, id)?,
            n: u.int_in_range(0..=99)?,
        },
        _ => {
            let mut ids = BTreeSet::new();
            for _ in 0..u.int_in_range(1..=3)? {
                ids.insert(id(u)?);
            }
            Spec::Mark {
                ids,
                logs: u.int_in_range(0..=2)?,
            }
        }
    })
}

/// The store ops of one spec; `tag` names the transaction (for [`Spec::Mark`]).
pub fn write_ops(spec: &Spec, tag: &str) -> Vec<WriteOp> {
    let put = |value: Value, recreate| WriteOp::Put {
        collection: "d".into(),
        value,
        recreate,
    };
    let inc = |id: &u8, field: &str, by: &i64| WriteOp::Increment {
        collection: "d".into(),
        id: format!("d{id}"),
        field: field.into(),
        by: *by,
    };
    match spec {
        Spec::Put {
            id,
            v,
            hi,
            lo,
            st,
            tx,
        } => {
            let mut m = serde_json::Map::new();
            m.insert("id".into(), json!(format!("d{id}")));
            let fields = [
                ("v", v.map(|v| json!({"k": v}))),
                ("hi", hi.map(Value::from)),
                ("lo", lo.map(Value::from)),
                ("st", st.map(|s| json!(STATUS[usize::from(s)]))),
                ("tx", tx.clone().map(Value::from)),
            ];
            for (k, val) in fields {
                if let Some(val) = val {
                    m.insert(k.into(), val);
                }
            }
            vec![put(Value::Object(m), false)]
        }
        Spec::Inc { id, by } => vec![inc(id, "c", by)],
        Spec::Inc2 { id, by } => vec![inc(id, "c2", by)],
        Spec::Delete { id } => vec![WriteOp::Delete {
            collection: "d".into(),
            id: format!("d{id}"),
        }],
        Spec::Recreate { id, v } => vec![put(json!({"id": format!("d{id}"), "v": {"r": v}}), true)],
        Spec::Append { id, n } => {
            let mut row = json!({"n": n});
            if let Some(id) = id {
                row["id"] = json!(format!("a{id}"));
            }
            vec![WriteOp::Append {
                collection: "logs".into(),
                value: row,
            }]
        }
        Spec::Mark { ids, logs } => {
            let marks = ids.iter().map(|i| WriteOp::Put {
                collection: "z".into(),
                value: json!({"id": format!("z{i}"), "marks": {tag: true}}),
                recreate: false,
            });
            let rows = (0..*logs).map(|i| WriteOp::Append {
                collection: "marks".into(),
                value: json!({"tag": tag, "i": i}),
            });
            marks.chain(rows).collect()
        }
    }
}
