//! The size of a write as the mesh carries it: the bench's rows committed to a scratch store
//! and read back as encoded transactions (`Store::txns_for`, what a push sends), so bytes on
//! the wire can be compared with the transactions themselves as well as with the JSON rows.

use anyhow::bail;
use meshlite_core::store::{OpenOptions, Store};
use serde_json::Value;

/// Mean encoded size in bytes of one transaction per row, each row put into `collection`.
pub fn mean_encoded_bytes(collection: &str, rows: &[Value]) -> anyhow::Result<f64> {
    if rows.is_empty() {
        bail!("no rows to measure");
    }
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), OpenOptions::default())?;
    for row in rows {
        store.put(collection, row.clone())?;
    }
    let want = [(store.replica_id(), 1..=rows.len() as u64)];
    let batch = store.txns_for(&want, usize::MAX)?;
    store.close()?;
    if batch.txns.len() != rows.len() {
        bail!(
            "{} rows written but {} transactions read back",
            rows.len(),
            batch.txns.len()
        );
    }
    Ok(batch.txns.iter().map(Vec::len).sum::<usize>() as f64 / rows.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_carries_its_row() {
        let small = [serde_json::json!({"id": "a", "x": 1})];
        let big = [serde_json::json!({"id": "b", "x": "y".repeat(1000)})];
        let small = mean_encoded_bytes("c", &small).unwrap();
        let big = mean_encoded_bytes("c", &big).unwrap();
        assert!(small > 0.0 && big > small + 1000.0, "{small} {big}");
    }
}
