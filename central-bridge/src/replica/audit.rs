//! What the conflict audit table (`conflicts`) holds for one resolved field: the candidates,
//! each with the replica that wrote it, and the distinct writers. Both writers of audit rows
//! (the batch path's `COPY` in `copy`, and the row-by-row path's `INSERT` in `rows`) take
//! their cells from here.

use meshlite_core::store::record::FieldConflict;
use serde_json::{Value, json};

/// An audit row's `candidates`: `[{"value": v, "origin": o}, …]`, in Automerge's order.
pub fn candidates(c: &FieldConflict) -> Value {
    let origin = |i: usize| c.origins.get(i).map_or("", String::as_str);
    let candidates =
        (c.candidates.iter().enumerate()).map(|(i, v)| json!({ "value": v, "origin": origin(i) }));
    Value::Array(candidates.collect())
}

/// An audit row's `origins`: the candidates' distinct writers, sorted. Only hex replica ids,
/// so none needs quoting in an array literal.
pub fn origins(c: &FieldConflict) -> Vec<&str> {
    let hex = |o: &&str| !o.is_empty() && o.bytes().all(|b| b.is_ascii_hexdigit());
    let mut distinct: Vec<&str> = c.origins.iter().map(String::as_str).filter(hex).collect();
    distinct.sort_unstable();
    distinct.dedup();
    distinct
}
