//! A bounded set of recently seen transaction ids, shared by the dissemination policies: it
//! stops relaying and detects duplicates with memory bounded however long the node runs.

use std::collections::{HashSet, VecDeque};

use crate::ids::TxnId;

/// A set of recent transaction ids with FIFO eviction: bounded memory however long the node runs.
#[derive(Debug)]
pub(crate) struct SeenSet {
    capacity: usize,
    set: HashSet<TxnId>,
    order: VecDeque<TxnId>,
}

impl SeenSet {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Remembers `id`; true if it was not remembered already.
    pub(crate) fn insert(&mut self, id: TxnId) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }

    pub(crate) fn contains(&self, id: &TxnId) -> bool {
        self.set.contains(id)
    }
}
