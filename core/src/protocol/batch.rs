//! Packing encoded transactions into frames.

use super::limits::{MAX_FRAME_BYTES, MAX_TXNS_PER_FRAME};

/// Worst-case postcard overhead per transaction: its length varint (3 bytes up to 2 MiB).
const PER_TXN_OVERHEAD: usize = 3;

/// Groups encoded transactions into frame-sized batches.
///
/// A batch holds at most [`MAX_TXNS_PER_FRAME`] transactions and at most `target` bytes of
/// transaction data, except that a single transaction larger than `target` gets a batch of its
/// own (every transaction within [`crate::change::MAX_TXN_BYTES`] fits in a frame).
#[derive(Debug)]
pub(crate) struct Batcher {
    target: usize,
    pending: Vec<Vec<u8>>,
    pending_bytes: usize,
}

impl Batcher {
    /// A batcher aiming at `target` bytes per batch.
    pub(crate) fn new(target: usize) -> Self {
        // Keep room for the frame's own header so a full batch always encodes.
        let target = target.min(MAX_FRAME_BYTES - 64);
        Self {
            target,
            pending: Vec::new(),
            pending_bytes: 0,
        }
    }

    /// Adds one transaction; returns the previous batch if this one did not fit into it.
    pub(crate) fn add(&mut self, txn: Vec<u8>) -> Option<Vec<Vec<u8>>> {
        let cost = txn.len() + PER_TXN_OVERHEAD;
        let full =
            self.pending_bytes + cost > self.target || self.pending.len() == MAX_TXNS_PER_FRAME;
        let flushed = if full { self.take() } else { None };
        self.pending_bytes += cost;
        self.pending.push(txn);
        flushed
    }

    /// The batch being filled, if it holds anything.
    pub(crate) fn take(&mut self) -> Option<Vec<Vec<u8>>> {
        self.pending_bytes = 0;
        let batch = std::mem::take(&mut self.pending);
        (!batch.is_empty()).then_some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(sizes: &[usize], target: usize) -> Vec<Vec<usize>> {
        let mut b = Batcher::new(target);
        let mut out: Vec<Vec<Vec<u8>>> = sizes.iter().filter_map(|&n| b.add(vec![1; n])).collect();
        out.extend(b.take());
        out.iter()
            .map(|batch| batch.iter().map(Vec::len).collect())
            .collect()
    }

    #[test]
    fn packs_up_to_target_and_isolates_big_txns() {
        assert_eq!(batches(&[10, 10, 10], 30), vec![vec![10, 10], vec![10]]);
        assert_eq!(batches(&[5, 100, 5], 30), vec![vec![5], vec![100], vec![5]]);
        assert!(batches(&[], 30).is_empty());
        let many = vec![1; MAX_TXNS_PER_FRAME + 1];
        let out = batches(&many, usize::MAX / 2);
        assert_eq!(
            out.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![MAX_TXNS_PER_FRAME, 1]
        );
    }
}
