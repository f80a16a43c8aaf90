//! Sync planning: what two replicas must exchange, from their summaries alone.

use std::ops::RangeInclusive;

use crate::ids::{ReplicaId, Seq};
use crate::version::Summary;

/// What one side of a sync sends and expects, computed by [`plan_sync`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncPlan {
    /// The transactions `local` holds and `remote` lacks, as per-origin ranges.
    pub send: Vec<(ReplicaId, RangeInclusive<Seq>)>,
    /// How many transactions `send` covers.
    pub send_count: u64,
    /// How many transactions `remote` holds and `local` lacks (an upper bound on what will
    /// arrive: the remote side may filter by collection or have collected some).
    pub receive_count: u64,
}

/// Compares two summaries. Cost is linear in their number of ranges, independent of how many
/// transactions or records they describe.
pub fn plan_sync(local: &Summary, remote: &Summary) -> SyncPlan {
    let send = local.missing_from(remote);
    let send_count = count(&send);
    let receive_count = count(&remote.missing_from(local));
    SyncPlan {
        send,
        send_count,
        receive_count,
    }
}

fn count(ranges: &[(ReplicaId, RangeInclusive<Seq>)]) -> u64 {
    ranges.iter().map(|(_, r)| r.end() - r.start() + 1).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TxnId;

    #[test]
    fn plan_is_symmetric_difference() {
        let (o1, o2) = (ReplicaId([1; 16]), ReplicaId([2; 16]));
        let mut a = Summary::new();
        let mut b = Summary::new();
        for seq in 1..=10 {
            a.insert(TxnId { origin: o1, seq });
        }
        for seq in [1, 2, 9] {
            b.insert(TxnId { origin: o1, seq });
        }
        b.insert(TxnId { origin: o2, seq: 4 });
        let plan = plan_sync(&a, &b);
        assert_eq!(plan.send, vec![(o1, 3..=8), (o1, 10..=10)]);
        assert_eq!((plan.send_count, plan.receive_count), (7, 1));
        assert_eq!(plan_sync(&a, &a), SyncPlan::default());
    }
}
