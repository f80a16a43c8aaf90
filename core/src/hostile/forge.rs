//! Building attacks from bytes: an honest replica's transactions first, then hostile ones under
//! the attacker's own origin that reuse, bend or break them.

use std::collections::BTreeSet;

use arbitrary::{Result, Unstructured};
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ObjId, ObjType, ROOT, ScalarValue};
use serde_json::{Value, json};

use crate::change::{Op, Txn};
use crate::ids::{ReplicaId, Seq, TxnId};
use crate::store::Store;

/// The attacker's origin: a peer with a valid certificate and a replica id of its own.
pub const ATTACKER: ReplicaId = ReplicaId([0xAA; 16]);

/// Record ids the honest replica writes, so that attacks hit records that exist.
const IDS: [&str; 3] = ["r0", "r1", "r2"];

/// Names no peer should be able to slip into SQL or a file path.
const HOSTILE_NAMES: [&str; 7] = [
    "t\"; DROP TABLE records; --",
    "t' OR '1'='1",
    "_meshlite_summary",
    "a.b",
    "ü",
    "sqlite_master",
    "",
];

/// Field names an attacker writes into documents: declared ones (with the wrong types), counter
/// parts of other replicas, and odd ones.
const FIELDS: [&str; 9] = ["n", "st", "hi", "body", "flag", "n~00", "x", "", "a~b~c"];

/// One hostile transaction and what it tries.
#[derive(Clone, Debug)]
pub struct Attack {
    /// What kind of attack built it.
    pub kind: Kind,
    /// The transaction sent.
    pub txn: Txn,
}

/// The attacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A change by an actor of its own on an honest record (a concurrent edit with odd values).
    ForeignActor,
    /// A change whose actor is the honest replica's, with sequence numbers the honest replica
    /// uses for its own changes of the same record.
    Impersonate,
    /// The second change of a document whose first never comes.
    MissingDeps,
    /// One change with thousands of ops.
    HugeOps,
    /// An honest change with bytes flipped or cut.
    Corrupt,
    /// Ops of the wrong kind for their collection, or rows that are not JSON objects.
    WrongKind,
    /// Hostile collection names and record ids.
    HostileNames,
    /// Absurd incarnations.
    Incarnation,
    /// An honest transaction's ops sent again under the attacker's id.
    Replay,
    /// The id of an earlier hostile transaction reused with other content.
    ReuseId,
    /// A sequence number far beyond anything sent before.
    SeqGap,
    /// Ids that are not canonical keys of an integer-keyed collection.
    BadKey,
}

const KINDS: [Kind; 12] = [
    Kind::ForeignActor,
    Kind::Impersonate,
    Kind::MissingDeps,
    Kind::HugeOps,
    Kind::Corrupt,
    Kind::WrongKind,
    Kind::HostileNames,
    Kind::Incarnation,
    Kind::Replay,
    Kind::ReuseId,
    Kind::SeqGap,
    Kind::BadKey,
];

/// Runs 1–8 honest local writes on `store` and returns every transaction it then holds.
pub fn honest_txns(u: &mut Unstructured<'_>, store: &Store) -> Result<Vec<Txn>> {
    for _ in 0..u.int_in_range(1..=8)? {
        honest_write(u, store)?;
    }
    let summary = store.summary().expect("summary of a temporary store");
    let want = summary.missing_from(&crate::version::Summary::new());
    let batch = store
        .txns_for(&want, usize::MAX)
        .expect("txns of a temporary store");
    Ok(batch
        .txns
        .iter()
        .map(|t| Txn::decode(t).expect("own transactions decode"))
        .collect())
}

fn honest_write(u: &mut Unstructured<'_>, store: &Store) -> Result<()> {
    let id = *u.choose(&IDS)?;
    let n: i64 = u.int_in_range(-5..=5)?;
    // Writes the schema refuses are no transaction at all; they are not what this tests.
    let _ = match u.int_in_range(0..=5)? {
        0 => store.put(
            "t",
            json!({"id": id, "st": *u.choose(&["a", "b", "c"])?, "hi": n}),
        ),
        1 => store.increment("t", id, "n", n),
        2 => store.put(
            "t",
            json!({"id": id, "body": format!("text {n}"), "flag": n > 0}),
        ),
        3 => store.delete("t", id).map(|()| Value::Null),
        4 => store.put("k", json!({"id": n, "v": n})),
        _ => store.append("events", json!({"n": n})),
    };
    Ok(())
}

/// Builds 1–6 attacks of arbitrary kinds against `honest` (the honest replica's transactions).
pub fn forge(u: &mut Unstructured<'_>, honest: &[Txn]) -> Result<Vec<Attack>> {
    let count = u.int_in_range(1..=6)?;
    build(u, honest, count, None)
}

/// Builds `count` attacks of one kind.
pub fn forge_kind(
    u: &mut Unstructured<'_>,
    honest: &[Txn],
    kind: Kind,
    count: usize,
) -> Result<Vec<Attack>> {
    build(u, honest, count, Some(kind))
}

fn build(
    u: &mut Unstructured<'_>,
    honest: &[Txn],
    count: usize,
    only: Option<Kind>,
) -> Result<Vec<Attack>> {
    let mut forger = Forger {
        u,
        honest,
        seq: 0,
        sent: Vec::new(),
    };
    let mut out = Vec::new();
    for _ in 0..count {
        let kind = match only {
            Some(k) => k,
            None => *forger.u.choose(&KINDS)?,
        };
        let txn = forger.attack(kind)?;
        forger.sent.push(txn.clone());
        out.push(Attack { kind, txn });
    }
    Ok(out)
}

struct Forger<'a, 'u> {
    u: &'a mut Unstructured<'u>,
    honest: &'a [Txn],
    seq: Seq,
    sent: Vec<Txn>,
}

impl Forger<'_, '_> {
    fn attack(&mut self, kind: Kind) -> Result<Txn> {
        let ops = match kind {
            Kind::ForeignActor => vec![self.foreign_change(false)?],
            Kind::Impersonate => vec![self.foreign_change(true)?],
            Kind::MissingDeps => vec![self.missing_deps()?],
            Kind::HugeOps => vec![self.huge_change()?],
            Kind::Corrupt => vec![self.corrupt()?],
            Kind::WrongKind => vec![self.wrong_kind()?],
            Kind::HostileNames => vec![self.hostile_names()?],
            Kind::Incarnation => vec![self.incarnation()?],
            Kind::Replay => self.replay()?,
            Kind::ReuseId => return self.reuse_id(),
            Kind::SeqGap => {
                self.seq = Seq::MAX - u64::from(self.u.int_in_range(0..=3u8)?);
                vec![self.foreign_change(false)?]
            }
            Kind::BadKey => vec![self.bad_key()?],
        };
        Ok(self.txn(ops))
    }

    fn txn(&mut self, ops: Vec<Op>) -> Txn {
        self.seq = self.seq.saturating_add(1);
        Txn {
            id: TxnId {
                origin: ATTACKER,
                seq: self.seq,
            },
            timestamp_ms: 0,
            schema_version: 1,
            ops,
        }
    }

    fn record(&mut self) -> Result<String> {
        Ok((*self.u.choose(&IDS)?).to_owned())
    }

    /// A document change on an honest record written by an actor of the attacker's choosing.
    fn foreign_change(&mut self, impersonate: bool) -> Result<Op> {
        let actor = if impersonate {
            self.honest_origin().map_or_else(
                || ActorId::from(&[1u8; 16][..]),
                |r| ActorId::from(&r.0[..]),
            )
        } else {
            let len = self.u.int_in_range(1..=32)?;
            ActorId::from(self.u.bytes(len)?)
        };
        let mut doc = Automerge::new().with_actor(actor);
        let change = self.edit(&mut doc, 8)?;
        self.doc_op("t", change)
    }

    fn missing_deps(&mut self) -> Result<Op> {
        let mut doc = Automerge::new().with_actor(ActorId::from(&[7u8; 16][..]));
        let _first = self.edit(&mut doc, 2)?;
        let second = self.edit(&mut doc, 2)?;
        self.doc_op("t", second)
    }

    fn huge_change(&mut self) -> Result<Op> {
        let mut doc = Automerge::new().with_actor(ActorId::from(&[9u8; 16][..]));
        let count = self.u.int_in_range(500..=5000)?;
        let mut tx = doc.transaction();
        for i in 0..count {
            // Keys repeat, so most ops overwrite: the op count grows, the document does not.
            let key = format!("x{}", i % 64);
            tx.put(ROOT, key, i as i64).expect("a put on a fresh map");
        }
        tx.commit();
        let change = last_change(&mut doc);
        self.doc_op("t", change)
    }

    fn corrupt(&mut self) -> Result<Op> {
        let honest: Vec<&Op> = self
            .honest
            .iter()
            .flat_map(|t| &t.ops)
            .filter(|o| matches!(o, Op::Doc { .. }))
            .collect();
        let Some(&Op::Doc {
            collection,
            id,
            incarnation,
            change,
        }) = honest.get(self.u.choose_index(honest.len().max(1))?)
        else {
            return self.wrong_kind();
        };
        let mut bytes = change.clone();
        if self.u.arbitrary()? {
            bytes.truncate(self.u.choose_index(bytes.len().max(1))?);
        } else {
            for _ in 0..self.u.int_in_range(1..=4)? {
                let at = self.u.choose_index(bytes.len().max(1))?;
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= self.u.int_in_range(1..=255)?;
                }
            }
        }
        Ok(Op::Doc {
            collection: collection.clone(),
            id: id.clone(),
            incarnation: *incarnation,
            change: bytes,
        })
    }

    fn wrong_kind(&mut self) -> Result<Op> {
        let id = self.record()?;
        Ok(match self.u.int_in_range(0..=4)? {
            0 => {
                let mut doc = Automerge::new().with_actor(ActorId::from(&[3u8; 16][..]));
                let change = self.edit(&mut doc, 2)?;
                Op::Doc {
                    collection: "events".into(),
                    id,
                    incarnation: 1,
                    change,
                }
            }
            1 => Op::Append {
                collection: "t".into(),
                id,
                row: r#"{"n":1}"#.into(),
            },
            2 => Op::Delete {
                collection: "events".into(),
                id,
                incarnation: 1,
            },
            3 => Op::Append {
                collection: "events".into(),
                id,
                row: self.junk_row()?,
            },
            _ => Op::Append {
                collection: "events".into(),
                id,
                row: format!("{}1{}", "[".repeat(200), "]".repeat(200)),
            },
        })
    }

    fn junk_row(&mut self) -> Result<String> {
        let choices = [
            "",
            "null",
            "[1,2]",
            "\"s\"",
            "{",
            "{\"n\":1e999}",
            "{\"id\":5}",
        ];
        Ok((*self.u.choose(&choices)?).to_owned())
    }

    fn hostile_names(&mut self) -> Result<Op> {
        let collection = (*self.u.choose(&HOSTILE_NAMES)?).to_owned();
        let ids = [
            "\0",
            "..",
            "../../etc/passwd",
            "r0\u{0}x",
            "%00",
            "\u{202e}r0",
        ];
        let id = if self.u.arbitrary()? {
            "x".repeat(self.u.int_in_range(1..=20_000)?)
        } else {
            (*self.u.choose(&ids)?).to_owned()
        };
        let collection = if self.u.arbitrary()? {
            "t".to_owned()
        } else {
            collection
        };
        Ok(Op::Append {
            collection,
            id,
            row: "{}".into(),
        })
    }

    fn incarnation(&mut self) -> Result<Op> {
        let id = self.record()?;
        let incarnation = *self.u.choose(&[2, 3, u32::MAX - 1, u32::MAX])?;
        if self.u.arbitrary()? {
            return Ok(Op::Delete {
                collection: "t".into(),
                id,
                incarnation,
            });
        }
        let mut doc = Automerge::new().with_actor(ActorId::from(&[5u8; 16][..]));
        let change = self.edit(&mut doc, 3)?;
        Ok(Op::Doc {
            collection: "t".into(),
            id,
            incarnation,
            change,
        })
    }

    fn replay(&mut self) -> Result<Vec<Op>> {
        match self
            .honest
            .get(self.u.choose_index(self.honest.len().max(1))?)
        {
            Some(t) => Ok(t.ops.clone()),
            None => Ok(vec![self.wrong_kind()?]),
        }
    }

    fn reuse_id(&mut self) -> Result<Txn> {
        let Some(earlier) = self.sent.get(self.u.choose_index(self.sent.len().max(1))?) else {
            let op = self.foreign_change(false)?;
            return Ok(self.txn(vec![op]));
        };
        let id = earlier.id;
        let op = self.foreign_change(false)?;
        Ok(Txn {
            id,
            timestamp_ms: 1,
            schema_version: 1,
            ops: vec![op],
        })
    }

    fn bad_key(&mut self) -> Result<Op> {
        let ids = ["abc", "01", "-0", "1.5", " 1", "99999999999999999999", "+3"];
        let id = (*self.u.choose(&ids)?).to_owned();
        if self.u.arbitrary()? {
            return Ok(Op::Append {
                collection: "k".into(),
                id,
                row: "{}".into(),
            });
        }
        let mut doc = Automerge::new().with_actor(ActorId::from(&[6u8; 16][..]));
        let change = self.edit(&mut doc, 2)?;
        Ok(Op::Doc {
            collection: "k".into(),
            id,
            incarnation: 1,
            change,
        })
    }

    fn honest_origin(&self) -> Option<ReplicaId> {
        self.honest.first().map(|t| t.id.origin)
    }

    fn doc_op(&mut self, collection: &str, change: Vec<u8>) -> Result<Op> {
        Ok(Op::Doc {
            collection: collection.into(),
            id: self.record()?,
            incarnation: 1,
            change,
        })
    }

    /// One change of up to `max_ops` arbitrary edits of `doc`'s root; returns its bytes.
    fn edit(&mut self, doc: &mut Automerge, max_ops: u32) -> Result<Vec<u8>> {
        let mut tx = doc.transaction();
        let mut objects: Vec<ObjId> = vec![ROOT];
        for _ in 0..self.u.int_in_range(1..=max_ops)? {
            let obj = self.u.choose(&objects)?.clone();
            let key = *self.u.choose(&FIELDS)?;
            match self.u.int_in_range(0..=3)? {
                0 => {
                    let made = tx
                        .put_object(&obj, key, ObjType::Map)
                        .expect("a map in a map");
                    objects.push(made);
                }
                1 => {
                    let text = tx
                        .put_object(&obj, key, ObjType::Text)
                        .expect("a text in a map");
                    let s: String = self.u.arbitrary()?;
                    tx.splice_text(&text, 0, 0, &s).expect("a splice at 0");
                }
                2 => tx.delete(&obj, key).expect("a delete in a map"),
                _ => {
                    let v = self.scalar()?;
                    tx.put(&obj, key, v).expect("a scalar in a map");
                }
            }
        }
        tx.commit();
        Ok(last_change(doc))
    }

    fn scalar(&mut self) -> Result<ScalarValue> {
        Ok(match self.u.int_in_range(0..=8)? {
            0 => ScalarValue::Str(self.u.arbitrary::<String>()?.into()),
            1 => ScalarValue::Int(self.u.arbitrary()?),
            2 => ScalarValue::Uint(self.u.arbitrary()?),
            3 => ScalarValue::F64(*self.u.choose(&[f64::NAN, f64::INFINITY, -0.0, 1.5e300])?),
            4 => ScalarValue::Boolean(self.u.arbitrary()?),
            5 => ScalarValue::Null,
            6 => ScalarValue::Bytes(self.u.arbitrary()?),
            7 => ScalarValue::counter(self.u.arbitrary()?),
            _ => ScalarValue::Timestamp(self.u.arbitrary()?),
        })
    }
}

/// The bytes of the last change made on `doc` (an empty change when the edit was a no-op).
fn last_change(doc: &mut Automerge) -> Vec<u8> {
    doc.get_last_local_change()
        .map(|c| c.raw_bytes().to_vec())
        .unwrap_or_default()
}

/// Every (collection, record id) an attack names.
pub fn attacked(attacks: &[Attack]) -> BTreeSet<(String, String)> {
    attacks
        .iter()
        .flat_map(|a| &a.txn.ops)
        .map(|op| (op.collection().to_owned(), op.record_id().to_owned()))
        .collect()
}
