//! The fast path against the document path: same rows, and `None` outside its scope.

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ROOT, ScalarValue};
use serde_json::json;

use super::*;
use crate::ids::ReplicaId;
use crate::store::doc::tests::def;
use crate::store::doc::{self, new_doc};

/// The first change `put_fields` writes for `fields`, and the row its document materializes.
fn first(fields: serde_json::Value) -> (Change, Map<String, Value>) {
    let r = ReplicaId([5; 16]);
    let mut d = new_doc(&r);
    let bytes = doc::put_fields(&mut d, &def(), fields.as_object().unwrap(), &r).unwrap();
    (
        Change::from_bytes(bytes).unwrap(),
        doc::materialize(&d, &def()),
    )
}

/// One change holding whatever `f` writes into an empty document.
fn written(f: impl FnOnce(&mut automerge::transaction::Transaction<'_>)) -> Change {
    let mut d = Automerge::new();
    let mut tx = d.transaction();
    f(&mut tx);
    tx.commit();
    d.get_changes(&[]).pop().unwrap().clone()
}

#[test]
fn scalar_first_changes_materialize_as_their_document_does() {
    for fields in [
        json!({"title": "t", "done": false, "score": 1.5, "big": u64::MAX, "neg": -3, "none": null}),
        json!({"status": "failed", "hi": 7, "lo": -7, "n": 0}),
        json!({"n": 41}),
        json!({}),
    ] {
        let (change, want) = first(fields.clone());
        assert_eq!(materialize(&change, &def()), Some(want), "{fields}");
    }
}

#[test]
fn counter_parts_fold_onto_their_base() {
    let change = written(|tx| {
        tx.put(ROOT, "n", 10).unwrap();
        tx.put(ROOT, "n~0101", 5).unwrap();
        tx.put(ROOT, "n~0202", ScalarValue::counter(-2)).unwrap();
        tx.put(ROOT, "m~0303", "not a number").unwrap();
        tx.put(ROOT, "c", ScalarValue::counter(3)).unwrap();
    });
    let mut d = Automerge::new();
    d.apply_changes([change.clone()]).unwrap();
    let got = materialize(&change, &def()).unwrap();
    assert_eq!(got, doc::materialize(&d, &def()));
    assert_eq!(got["n"], json!(13));
    assert_eq!(got["m"], json!(0));
}

#[test]
fn nested_first_changes_materialize_as_their_document_does() {
    for fields in [
        json!({"tags": ["fleet", "bench"], "x": 1}),
        json!({"meta": {"a": 1, "b": {"c": [1, 2.5, "three", null, true]}}}),
        json!({"rows": [{"k": 1}, [], [[]], {}], "empty": {}, "none": []}),
        json!({"deep": (0..30).fold(json!(["bottom"]), |v, i| if i % 2 == 0 { json!([v]) } else { json!({"k": v}) })}),
    ] {
        let (change, want) = first(fields.clone());
        assert_eq!(materialize(&change, &def()), Some(want), "{fields}");
    }
    let made = written(|tx| {
        tx.put_object(ROOT, "m", ObjType::Map).unwrap();
    });
    assert_eq!(
        materialize(&made, &def()),
        Some(json!({"m": {}}).as_object().unwrap().clone())
    );
}

#[test]
fn nesting_beyond_the_limit_reads_as_null_on_both_paths() {
    let change = written(|tx| {
        let mut obj = ROOT;
        for _ in 0..40 {
            obj = tx.put_object(&obj, "nest", ObjType::Map).unwrap();
        }
        tx.put(&obj, "leaf", 1).unwrap();
    });
    let mut d = Automerge::new();
    d.apply_changes([change.clone()]).unwrap();
    let got = materialize(&change, &def()).unwrap();
    assert_eq!(got, doc::materialize(&d, &def()));
    assert!(
        Value::Object(got.clone()).to_string().contains("null"),
        "{got:?}"
    );
}

#[test]
fn anything_but_a_tree_of_puts_takes_the_document_path() {
    let (_, _) = first(json!({"x": 1}));
    let text = first(json!({"notes": "hello"})).0;
    let twice = written(|tx| {
        tx.put(ROOT, "a", 1).unwrap();
        tx.put(ROOT, "a", 2).unwrap();
    });
    let deleted = written(|tx| {
        tx.put(ROOT, "a", 1).unwrap();
        tx.delete(ROOT, "a").unwrap();
    });
    let incremented = written(|tx| {
        tx.put(ROOT, "a", ScalarValue::counter(1)).unwrap();
        tx.increment(ROOT, "a", 2).unwrap();
    });
    let nested_twice = written(|tx| {
        let m = tx.put_object(ROOT, "m", ObjType::Map).unwrap();
        tx.put(&m, "k", 1).unwrap();
        tx.put(&m, "k", 2).unwrap();
    });
    // Elements inserted before the last one: the order is Automerge's to decide.
    let out_of_order = written(|tx| {
        let l = tx.put_object(ROOT, "l", ObjType::List).unwrap();
        tx.insert(&l, 0, "b").unwrap();
        tx.insert(&l, 0, "a").unwrap();
    });
    let overwritten_element = written(|tx| {
        let l = tx.put_object(ROOT, "l", ObjType::List).unwrap();
        tx.insert(&l, 0, "a").unwrap();
        tx.put(&l, 0, "b").unwrap();
    });
    let table = written(|tx| {
        tx.put_object(ROOT, "t", ObjType::Table).unwrap();
    });
    for change in [
        text,
        twice,
        deleted,
        incremented,
        nested_twice,
        out_of_order,
        overwritten_element,
        table,
    ] {
        assert_eq!(materialize(&change, &def()), None, "{:?}", change.decode());
    }
    // A change with a dependency (a record's second change).
    let r = ReplicaId([5; 16]);
    let mut d = new_doc(&r);
    doc::put_fields(&mut d, &def(), json!({"a": 1}).as_object().unwrap(), &r).unwrap();
    let second = doc::put_fields(&mut d, &def(), json!({"b": 2}).as_object().unwrap(), &r).unwrap();
    assert_eq!(
        materialize(&Change::from_bytes(second).unwrap(), &def()),
        None
    );
}
