use serde_json::json;

use super::super::tests::{RA, RB, fields};
use super::super::{ChangeOutcome, RecordDoc};
use super::FlatRecord;
use crate::ids::ReplicaId;
use crate::schema::{CollectionDef, Schema};

fn tasks() -> CollectionDef {
    let schema = Schema::from_toml(
        r#"
        version = 1
        [collections.tasks.fields]
        status = { merge = "priority", order = ["running", "done", "pending"] }
        retry_count = { merge = "counter" }
        created_at = { merge = "min" }
        updated_at = { merge = "max" }
        "#,
    )
    .expect("schema");
    schema.collections["tasks"].clone()
}

const RC: ReplicaId = ReplicaId([0xC; 16]);

/// Applies each (origin, change) to a flat record and to a document; both must agree on the
/// outcome, the row and the new conflicts after every change.
fn same_as_document(def: &CollectionDef, changes: &[(ReplicaId, Vec<u8>)]) -> FlatRecord {
    let mut flat = FlatRecord::default();
    let mut doc = RecordDoc::new(&RC);
    for (origin, change) in changes {
        let applied = flat
            .apply(*origin, change, def)
            .expect("decodes")
            .expect("flat");
        let (outcome, concurrent) = doc
            .apply_noting_concurrency(*origin, change, def)
            .expect("applies");
        assert_eq!(applied.outcome, outcome);
        let (row, by_doc) = (flat.materialize(def), doc.materialize(def));
        assert_eq!(row, by_doc);
        assert_eq!(applied.concurrent.is_some(), concurrent.is_some());
        if let (Some(ours), Some(theirs)) = (&applied.concurrent, &concurrent) {
            let new = flat.new_conflicts(def, ours, &row);
            assert_eq!(new, doc.new_conflicts(def, theirs, &by_doc));
        }
    }
    flat
}

/// A and B edit one record concurrently from a common base, then A edits on top of both.
fn concurrent_history(def: &CollectionDef) -> Vec<(ReplicaId, Vec<u8>)> {
    let mut a = RecordDoc::new(&RA);
    let base = json!({"status": "pending", "title": "t", "retry_count": 0,
        "created_at": "2026-01-02", "updated_at": "2026-01-02"});
    let base = a.put(def, &fields(base)).expect("base");
    let mut b = RecordDoc::new(&RB);
    b.apply(RA, &base).expect("b gets the base");
    let a1 = json!({"status": "running", "title": "from a", "retry_count": 2,
        "created_at": "2026-01-01", "updated_at": "2026-01-03"});
    let a1 = a.put(def, &fields(a1)).expect("a1");
    let b1 = json!({"status": "done", "title": "from b", "retry_count": 3,
        "created_at": "2025-12-31", "updated_at": "2026-01-04"});
    let b1 = b.put(def, &fields(b1)).expect("b1");
    let a2 = json!({"status": "done", "updated_at": "2026-01-05", "title": "again"});
    let a2 = a.put(def, &fields(a2)).expect("a2");
    a.apply(RB, &b1).expect("a merges b");
    let a3 = a.put(def, &fields(json!({"title": "last"}))).expect("a3");
    vec![(RA, base), (RA, a1), (RB, b1), (RA, a2), (RA, a3)]
}

#[test]
fn a_flat_history_merges_as_the_document_does() {
    let def = tasks();
    let history = concurrent_history(&def);
    let flat = same_as_document(&def, &history);
    let row = flat.materialize(&def);
    assert_eq!(
        row["status"],
        json!("done"),
        "A's second write superseded its first"
    );
    assert_eq!(row["retry_count"], json!(5), "counter parts added");
    assert_eq!(row["created_at"], json!("2025-12-31"), "min");
    assert_eq!(row["title"], json!("last"));
    // B first: the same merge in another order of arrival.
    let mut other = history.clone();
    other.swap(1, 2);
    let reordered = same_as_document(&def, &other);
    assert_eq!(reordered.materialize(&def), row);
}

#[test]
fn a_stored_state_loads_as_its_changes_applied_one_by_one() {
    let def = tasks();
    let history = concurrent_history(&def);
    let state: Vec<u8> = history.iter().flat_map(|(_, c)| c.clone()).collect();
    let loaded = FlatRecord::load(&state).expect("flat state");
    let applied = same_as_document(&def, &history);
    assert_eq!(loaded.materialize(&def), applied.materialize(&def));
    // A compacted state (a document chunk) is not flat: the caller loads the document.
    let mut doc = RecordDoc::load(&state, &RC).expect("loads");
    assert!(FlatRecord::load(&doc.save()).is_none());
    assert!(
        FlatRecord::load(&state[..state.len() - 1]).is_none(),
        "truncated"
    );
}

#[test]
fn duplicates_and_missing_dependencies_are_told_as_the_document_tells_them() {
    let def = tasks();
    let history = concurrent_history(&def);
    let mut flat = FlatRecord::default();
    let (origin, a1) = &history[1];
    let early = flat
        .apply(*origin, a1, &def)
        .expect("decodes")
        .expect("flat");
    assert_eq!(early.outcome, ChangeOutcome::MissingDeps);
    let (origin, base) = &history[0];
    for want in [ChangeOutcome::Applied, ChangeOutcome::Duplicate] {
        let applied = flat.apply(*origin, base, &def).expect("decodes");
        assert_eq!(applied.expect("flat").outcome, want);
    }
}

#[test]
fn nested_values_and_text_are_left_to_the_document() {
    let schema = Schema::from_toml(
        r#"
        version = 1
        [collections.notes.fields]
        body = { merge = "text" }
        "#,
    )
    .expect("schema");
    let def = schema.collections["notes"].clone();
    let mut a = RecordDoc::new(&RA);
    let base = a.put(&def, &fields(json!({"title": "t"}))).expect("base");
    let nested = a
        .put(&def, &fields(json!({"config": {"depth": 1}})))
        .expect("nested");
    let mut b = RecordDoc::load(&base, &RB).expect("loads");
    let text = b
        .put(&def, &fields(json!({"body": "hello"})))
        .expect("text");
    let mut flat = FlatRecord::default();
    let applied = flat.apply(RA, &base, &def).expect("decodes");
    assert_eq!(applied.expect("flat").outcome, ChangeOutcome::Applied);
    let before = flat.materialize(&def);
    for (name, origin, change) in [("nested", RA, &nested), ("text", RB, &text)] {
        let applied = flat.apply(origin, change, &def).expect("decodes");
        assert!(applied.is_none(), "{name}: {applied:?}");
        assert_eq!(flat.materialize(&def), before, "nothing applied");
    }
    let state = [base, nested].concat();
    assert!(FlatRecord::load(&state).is_none());
}

#[test]
fn a_replica_forking_its_own_history_is_left_to_the_document() {
    let def = tasks();
    let mut a = RecordDoc::new(&RA);
    let base = a.put(&def, &fields(json!({"title": "t"}))).expect("base");
    // A second document of the same replica, from the same base: its next change has the
    // same sequence number and op counters as A's own next change.
    let mut fork = RecordDoc::load(&base, &RA).expect("loads");
    let one = a.put(&def, &fields(json!({"title": "one"}))).expect("one");
    let two = fork
        .put(&def, &fields(json!({"title": "two"})))
        .expect("two");
    let mut flat = FlatRecord::default();
    for change in [&base, &one] {
        let applied = flat.apply(RA, change, &def).expect("decodes");
        assert_eq!(applied.expect("flat").outcome, ChangeOutcome::Applied);
    }
    assert!(flat.apply(RA, &two, &def).expect("decodes").is_none());
}

#[test]
fn a_change_by_another_actor_than_its_origin_is_refused() {
    let def = tasks();
    let mut a = RecordDoc::new(&RA);
    let base = a.put(&def, &fields(json!({"title": "t"}))).expect("base");
    let mut flat = FlatRecord::default();
    assert!(flat.apply(RB, &base, &def).is_err());
}
