//! A new record's first change materialized straight from the change, without a document.
//!
//! Building an Automerge document for a record that has none costs more than everything else
//! remote apply does for it (a new document, applying the change, reading the root map back,
//! and later freeing it). A record's first change written by [`super::doc::put_fields`] is, in
//! the common case, a tree of puts: scalars and new maps and lists on the root map's keys,
//! their entries, and their elements written front to back, with no dependencies and no
//! predecessors. The document it would build then holds exactly those values, with no
//! conflicts, and [`super::doc::view`] of it is a function of that tree alone. [`materialize`]
//! computes that function from the decoded operations; anything else (text, deletes,
//! increments, marks, a key written twice, an element inserted out of order, any dependency or
//! predecessor) returns `None` and the caller builds the document as before.
//!
//! The record's stored state is then the change bytes alone (a valid `docs` state: a document
//! loads from a concatenation of changes), and the cache holds no document for it: a later
//! change loads it from that state like any record not in the cache.
//!
//! Debug builds check every result against the document path (`debug_assert_eq!`).

use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::{Change, ScalarValue};
use serde_json::{Map, Value};

use super::doc::{COUNTER_SEP, MAX_DEPTH, scalar_to_json};
use crate::schema::{CollectionDef, MergePolicy};

/// The materialized record (without its primary key) of a document holding only `change`, or
/// `None` when the change is not a tree of puts (see [`tree`]) with no dependencies.
pub(crate) fn materialize(change: &Change, def: &CollectionDef) -> Option<Map<String, Value>> {
    if !change.deps().is_empty() {
        return None;
    }
    let tree = catch_unwind(AssertUnwindSafe(|| tree(change))).ok()??;
    let row = view(&tree, def)?;
    #[cfg(debug_assertions)]
    debug_assert_eq!(
        Some(&row),
        by_document(change, def).as_ref(),
        "first change"
    );
    Some(row)
}

/// A value the change wrote: a scalar, or an object it made (an index into [`Tree::nodes`]).
#[derive(Debug)]
enum Node {
    Scalar(ScalarValue),
    Object(usize),
}

/// An object the change made, with what it put into it.
#[derive(Debug)]
enum Object {
    Map(BTreeMap<String, Node>),
    /// The elements in order, each with its op id (`counter@actor`, what the next one names).
    List(Vec<(String, Node)>),
}

/// The objects of a change that only builds: `nodes[0]` is the root map.
#[derive(Debug)]
struct Tree {
    nodes: Vec<Object>,
}

/// The tree a record's first change builds, if every op of it is a put of a scalar or a new
/// map or list, none with a predecessor: each map key is written once, and each list is
/// written front to back (every insert follows the element inserted just before it, the
/// first one the list's head). That is how [`super::doc::put_fields`] writes a new record;
/// with no concurrent op, such a document holds exactly these values, in this order. Anything
/// else (text, tables, deletes, increments, marks, a key written twice, an insert anywhere
/// else, an op on an object the change did not make) is `None`.
fn tree(change: &Change) -> Option<Tree> {
    let actor = change.actor_id().to_hex_string();
    let start = change.start_op().get();
    let mut nodes = vec![Object::Map(BTreeMap::new())];
    // Each object made so far: its op id, and its index in `nodes`.
    let mut made: HashMap<String, usize> = HashMap::new();
    for (i, op) in change.decode().operations.into_iter().enumerate() {
        if !op.pred.is_empty() {
            return None;
        }
        let node = match action(&op.action)? {
            Action::Set => Node::Scalar(op.primitive_value()?),
            Action::Make(object) => {
                nodes.push(object);
                Node::Object(nodes.len() - 1)
            }
        };
        let id = || format!("{}@{actor}", start + i as u64);
        // Only an object made by an earlier op: a change naming its own op as its object is
        // malformed (Automerge refuses it), and must not make a cycle here.
        let parent = match op.obj.to_string().as_str() {
            "_root" => 0,
            obj => *made.get(obj)?,
        };
        if let Node::Object(index) = node {
            made.insert(id(), index);
        }
        let key = match serde_json::to_value(&op.key) {
            Ok(Value::String(k)) => k,
            _ => return None,
        };
        let slot = match op.insert {
            false if op.key.is_map_key() => Slot::Key(key),
            false => return None,
            true => Slot::After(key, id()),
        };
        place(nodes.get_mut(parent)?, slot, node)?;
    }
    Some(Tree { nodes })
}

/// Where an op puts its value: a map key, or a list element after the named one (with the new
/// element's op id).
enum Slot {
    Key(String),
    After(String, String),
}

/// Puts `node` into `object` at `slot`; `None` when that is not a plain build (a map key written
/// twice, an element inserted anywhere but after the last one, a key of the wrong kind).
fn place(object: &mut Object, slot: Slot, node: Node) -> Option<()> {
    match (object, slot) {
        (Object::Map(entries), Slot::Key(key)) => match entries.insert(key, node) {
            None => Some(()),
            Some(_) => None,
        },
        (Object::List(items), Slot::After(follows, id)) => {
            let last = items.last().map_or("_head", |(last, _)| last.as_str());
            (follows == last).then(|| items.push((id, node)))
        }
        _ => None,
    }
}

/// What an op does, as far as [`tree`] accepts it.
enum Action {
    Set,
    Make(Object),
}

/// The action of a decoded op, read through its JSON name (automerge 0.6.1 does not export
/// the expanded op's types).
fn action(action: &impl serde::Serialize) -> Option<Action> {
    match serde_json::to_value(action).ok()?.as_str()? {
        "set" => Some(Action::Set),
        "makeMap" => Some(Action::Make(Object::Map(BTreeMap::new()))),
        "makeList" => Some(Action::Make(Object::List(Vec::new()))),
        _ => None,
    }
}

impl Tree {
    /// The root map's entries (`nodes[0]`, a map by construction).
    fn root(&self) -> Option<&BTreeMap<String, Node>> {
        match self.nodes.first()? {
            Object::Map(entries) => Some(entries),
            Object::List(_) => None,
        }
    }

    /// The JSON of a value, as the document path's `to_json` renders it (nesting beyond
    /// [`MAX_DEPTH`] becomes null).
    fn json(&self, node: &Node, depth: usize) -> Value {
        if depth > MAX_DEPTH {
            return Value::Null;
        }
        let index = match node {
            Node::Scalar(s) => return scalar_to_json(s),
            Node::Object(index) => *index,
        };
        match &self.nodes[index] {
            Object::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), self.json(v, depth + 1)))
                    .collect(),
            ),
            Object::List(items) => {
                Value::Array(items.iter().map(|(_, v)| self.json(v, depth + 1)).collect())
            }
        }
    }
}

impl Node {
    /// The integer a counter reads from this value (objects read as none).
    fn to_i64(&self) -> Option<i64> {
        match self {
            Node::Scalar(s) => s.to_i64(),
            Node::Object(_) => None,
        }
    }
}

/// [`super::doc::view`]'s row for a root map holding exactly `tree`'s values: one value per
/// key, so every policy's pick among concurrent values is that value.
fn view(tree: &Tree, def: &CollectionDef) -> Option<Map<String, Value>> {
    let root = tree.root()?;
    let mut out = Map::new();
    let mut parts: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (key, value) in root {
        if let Some((field, _)) = key.split_once(COUNTER_SEP) {
            parts.entry(field).or_default().extend(value.to_i64());
            continue;
        }
        let json = match def.policy(key) {
            MergePolicy::Counter => Value::from(value.to_i64().unwrap_or(0)),
            _ => tree.json(value, 0),
        };
        out.insert(key.clone(), json);
    }
    for (field, values) in parts {
        let base = root.get(field).and_then(Node::to_i64).unwrap_or(0);
        let total = values.into_iter().fold(base, i64::saturating_add);
        out.insert(field.to_owned(), Value::from(total));
    }
    Some(out)
}

/// The row the document path materializes (the reference debug builds check against).
#[cfg(debug_assertions)]
fn by_document(change: &Change, def: &CollectionDef) -> Option<Map<String, Value>> {
    let mut doc =
        automerge::Automerge::new_with_encoding(automerge::TextEncoding::UnicodeCodePoint);
    doc.apply_changes([change.clone()]).ok()?;
    Some(super::doc::materialize(&doc, def))
}

#[cfg(test)]
#[path = "first_change_tests.rs"]
mod tests;
