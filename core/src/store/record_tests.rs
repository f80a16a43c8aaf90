use serde_json::{Map, Value, json};

use super::{ChangeOutcome, FieldConflict, First, RecordDoc, RecordError};
use crate::ids::ReplicaId;
use crate::schema::{CollectionDef, MergePolicy, Schema};

fn tasks() -> CollectionDef {
    let schema = Schema::from_toml(
        r#"
        version = 1
        [collections.tasks.fields]
        status = { merge = "priority", order = ["running", "done", "pending"] }
        retry_count = { merge = "counter" }
        "#,
    )
    .expect("schema");
    schema.collections["tasks"].clone()
}

pub(super) fn fields(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

pub(super) const RA: ReplicaId = ReplicaId([0xA; 16]);
pub(super) const RB: ReplicaId = ReplicaId([0xB; 16]);

/// Two replicas start from the same record and edit it concurrently.
fn concurrent_pair(def: &CollectionDef) -> (RecordDoc, RecordDoc, Vec<u8>, Vec<u8>) {
    let (ra, rb) = (RA, RB);
    let mut a = RecordDoc::new(&ra);
    let base = a
        .put(def, &fields(json!({"status": "pending", "title": "t"})))
        .expect("base");
    let mut b = RecordDoc::new(&rb);
    assert_eq!(b.apply(RA, &base), Ok(ChangeOutcome::Applied));
    let ca = a
        .put(
            def,
            &fields(json!({"status": "running", "title": "from a"})),
        )
        .expect("a");
    let cb = b
        .put(def, &fields(json!({"status": "done", "title": "from b"})))
        .expect("b");
    (a, b, ca, cb)
}

#[test]
fn concurrent_edits_merge_by_policy_and_report_conflicts() {
    let def = tasks();
    let (mut a, mut b, ca, cb) = concurrent_pair(&def);
    let inc_a = a.increment("retry_count", 2).expect("inc a");
    let inc_b = b.increment("retry_count", 3).expect("inc b");
    for change in [&cb, &inc_b] {
        assert_eq!(a.apply(RB, change), Ok(ChangeOutcome::Applied));
    }
    for change in [&ca, &inc_a] {
        assert_eq!(b.apply(RA, change), Ok(ChangeOutcome::Applied));
    }
    let (ma, mb) = (a.materialize(&def), b.materialize(&def));
    assert_eq!(ma, mb, "both replicas converge");
    assert_eq!(ma["status"], json!("running"), "running beats done");
    assert_eq!(ma["retry_count"], json!(5), "no increment lost");

    let conflicts = a.conflicts(&def);
    let status = conflicts
        .iter()
        .find(|c| c.field == "status")
        .expect("status");
    let mut candidates = status.candidates.clone();
    candidates.sort_by_key(|v| v.to_string());
    assert_eq!(candidates, [json!("done"), json!("running")]);
    assert_eq!(status.winner, Some(json!("running")));
    assert!(matches!(status.policy, MergePolicy::Priority { .. }));
    let title = conflicts
        .iter()
        .find(|c| c.field == "title")
        .expect("title");
    assert_eq!(title.policy, MergePolicy::Lww);
    assert_eq!(title.winner.as_ref(), ma.get("title"));
    assert!(conflicts.iter().all(|c| c.field != "retry_count"));
}

#[test]
fn only_changes_concurrent_with_the_heads_are_noted_and_can_add_conflicts() {
    let def = tasks();
    let (mut a, mut b, ca, cb) = concurrent_pair(&def);
    // b made cb on top of the base only: for a (which has ca) it is concurrent.
    let (outcome, concurrent) = a.apply_noting_concurrency(RB, &cb, &def).expect("apply");
    assert_eq!(outcome, ChangeOutcome::Applied);
    let concurrent = concurrent.expect("noted as concurrent");
    let new = a.new_conflicts(&def, &concurrent, &a.materialize(&def));
    assert!(!new.is_empty(), "the merge left conflicts");
    assert_eq!(new, a.conflicts(&def), "none was there before");
    // A change made on top of a's heads is not concurrent for b once b has a's history.
    assert_eq!(b.apply(RA, &ca), Ok(ChangeOutcome::Applied));
    let next = a
        .put(&def, &fields(json!({"status": "done", "title": "settled"})))
        .expect("next");
    let applied = b.apply_noting_concurrency(RA, &next, &def).expect("apply");
    assert_eq!(applied, (ChangeOutcome::Applied, None));
    assert!(
        b.conflicts(&def).is_empty(),
        "a sequential change settles them"
    );
    let again = b.apply_noting_concurrency(RA, &next, &def).expect("again");
    assert_eq!(again, (ChangeOutcome::Duplicate, None));
}

/// The conflicts a concurrent change added, by diffing every field's conflicts before and
/// after it (what `new_conflicts` must equal).
fn added_by(
    doc: &mut RecordDoc,
    origin: ReplicaId,
    change: &[u8],
    def: &CollectionDef,
) -> Vec<FieldConflict> {
    let before = doc.conflicts(def);
    let (outcome, concurrent) = doc
        .apply_noting_concurrency(origin, change, def)
        .expect("apply");
    assert_eq!(outcome, ChangeOutcome::Applied);
    let concurrent = concurrent.expect("concurrent");
    let row = doc.materialize(def);
    let mut diffed = doc.conflicts_of(def, &row);
    diffed.retain(|c| {
        !before
            .iter()
            .any(|b| (&b.field, &b.policy, &b.candidates) == (&c.field, &c.policy, &c.candidates))
    });
    assert_eq!(doc.new_conflicts(def, &concurrent, &row), diffed);
    diffed
}

#[test]
fn a_concurrent_change_adds_conflicts_only_in_the_fields_it_wrote() {
    let def = tasks();
    let (mut a, mut b, _, cb) = concurrent_pair(&def);
    let first = added_by(&mut a, RB, &cb, &def);
    let names: Vec<&str> = first.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(names, ["status", "title"]);
    // b writes the title alone, still concurrently with a's change: the status conflict is
    // unchanged and not reported again; the title's has new candidates.
    let title = b
        .put(&def, &fields(json!({"title": "from b again"})))
        .expect("title");
    let second = added_by(&mut a, RB, &title, &def);
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!(second[0].field, "title");
    assert!(second[0].candidates.contains(&json!("from b again")));
}

#[test]
fn a_concurrent_write_inside_a_nested_value_is_looked_for_in_every_field() {
    let def = tasks();
    let mut a = RecordDoc::new(&RA);
    let base = a.put(&def, &fields(json!({"title": "t"}))).expect("base");
    let mut b = RecordDoc::new(&RB);
    assert_eq!(b.apply(RA, &base), Ok(ChangeOutcome::Applied));
    a.put(&def, &fields(json!({"input": {"x": 1}}))).expect("a");
    let cb = b.put(&def, &fields(json!({"input": {"x": 2}}))).expect("b");
    assert_eq!(a.apply(RB, &cb), Ok(ChangeOutcome::Applied));
    assert_eq!(a.conflicts(&def).len(), 1, "two maps at input");
    // b writes inside its own map (an op on a nested object, not on the root): concurrent
    // with a's heads, and it changes the candidates of `input`.
    let nested = b
        .put(&def, &fields(json!({"input": {"x": 3}})))
        .expect("nested");
    let added = added_by(&mut a, RB, &nested, &def);
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(added[0].field, "input");
    assert!(added[0].candidates.contains(&json!({"x": 3})));
}

#[test]
fn a_first_change_materializes_without_a_document_as_the_document_does() {
    let def = tasks();
    let mut a = RecordDoc::new(&RA);
    let written = json!({"status": "pending", "title": "t", "retry_count": 2, "n": 1.5});
    let first = a.put(&def, &fields(written)).expect("first");
    let Ok(First::Row(row)) = RecordDoc::first(&RB, RA, &first, &def) else {
        panic!("plain scalar puts take the row path")
    };
    assert_eq!(row, a.materialize(&def));
    // A change with dependencies builds a document, which lacks them.
    let second = a
        .put(&def, &fields(json!({"status": "done"})))
        .expect("second");
    assert!(matches!(
        RecordDoc::first(&RB, RA, &second, &def),
        Ok(First::Doc(_, ChangeOutcome::MissingDeps))
    ));
    // Nested maps and lists take the row path too.
    let mut c = RecordDoc::new(&RA);
    let nested = c
        .put(&def, &fields(json!({"input": {"x": [1, 2]}})))
        .expect("nested");
    let Ok(First::Row(row)) = RecordDoc::first(&RB, RA, &nested, &def) else {
        panic!("nested maps and lists take the row path")
    };
    assert_eq!(row, c.materialize(&def));
    // A text field takes the document path and materializes the same.
    let text =
        Schema::from_toml("version = 1\n[collections.notes.fields]\nbody = { merge = \"text\" }\n")
            .expect("schema")
            .collections["notes"]
            .clone();
    let mut d = RecordDoc::new(&RA);
    let written = d
        .put(&text, &fields(json!({"body": "hello"})))
        .expect("text");
    let Ok(First::Doc(doc, ChangeOutcome::Applied)) = RecordDoc::first(&RB, RA, &written, &text)
    else {
        panic!("a text field takes the document path")
    };
    assert_eq!(doc.materialize(&text), d.materialize(&text));
    assert!(matches!(
        RecordDoc::first(&RB, RB, &first, &def),
        Err(RecordError::Change(reason)) if reason.contains("actor")
    ));
}

#[test]
fn duplicates_and_missing_dependencies_are_told_apart() {
    let def = tasks();
    let (mut a, _, ca, _) = concurrent_pair(&def);
    let mut fresh = RecordDoc::new(&ReplicaId::random());
    assert_eq!(fresh.apply(RA, &ca), Ok(ChangeOutcome::MissingDeps));
    assert!(fresh.materialize(&def).is_empty(), "nothing applied");
    assert_eq!(
        a.apply(RA, &ca),
        Ok(ChangeOutcome::Duplicate),
        "a's own change"
    );
}

#[test]
fn a_change_under_another_replicas_name_is_refused() {
    let def = tasks();
    let (_, mut b, ca, _) = concurrent_pair(&def);
    assert!(matches!(
        b.apply(RB, &ca),
        Err(RecordError::Change(reason)) if reason.contains("actor")
    ));
    assert_eq!(b.apply(RA, &ca), Ok(ChangeOutcome::Applied));
}

#[test]
fn saved_states_reload_and_garbage_is_an_error() {
    let def = tasks();
    let (mut a, _, _, _) = concurrent_pair(&def);
    let replica = ReplicaId::random();
    let reloaded = RecordDoc::load(&a.save(), &replica).expect("reload");
    assert_eq!(reloaded.materialize(&def), a.materialize(&def));

    assert!(matches!(
        RecordDoc::load(b"not automerge", &replica),
        Err(RecordError::Load(_))
    ));
    assert!(matches!(
        a.apply(RA, &[0x85, 0x6f, 0x4a, 0x83, 1, 2, 3]),
        Err(RecordError::Change(_))
    ));
    let bad = a.put(&def, &fields(json!({"retry_count": "x"})));
    assert!(matches!(bad, Err(RecordError::Policy { .. })), "{bad:?}");
}

#[test]
fn a_record_doc_fed_a_stores_changes_materializes_what_the_store_reads() {
    use crate::change::{Op, Txn};
    use crate::store::{OpenOptions, Store};
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = Schema::from_toml(
        r#"
        version = 1
        [collections.tasks.fields]
        status = { merge = "priority", order = ["running", "done", "pending"] }
        retry_count = { merge = "counter" }
        "#,
    )
    .expect("schema");
    let def = schema.collections["tasks"].clone();
    let opts = OpenOptions {
        schema: Some(schema),
        ..OpenOptions::default()
    };
    let store = Store::open(dir.path(), opts).expect("open");
    store
        .put(
            "tasks",
            json!({"id": "t1", "status": "pending", "n": {"a": 1}}),
        )
        .expect("put");
    store
        .increment("tasks", "t1", "retry_count", 4)
        .expect("incr");
    store
        .put("tasks", json!({"id": "t1", "status": "running"}))
        .expect("put");
    let me = store.replica_id();
    let batch = store.txns_for(&[(me, 1..=3)], usize::MAX).expect("txns");
    let mut doc = RecordDoc::new(&ReplicaId::random());
    for bytes in &batch.txns {
        for op in Txn::decode(bytes).expect("decode").ops {
            let Op::Doc { change, .. } = op else {
                panic!("document op expected")
            };
            assert_eq!(doc.apply(me, &change), Ok(ChangeOutcome::Applied));
        }
    }
    let mut read = store.get("tasks", "t1").expect("get").expect("row");
    read.as_object_mut().expect("object").remove("id");
    assert_eq!(Value::Object(doc.materialize(&def)), read);
    store.close().expect("close");
}
