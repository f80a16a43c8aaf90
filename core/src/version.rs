//! What a replica holds: per-origin sets of transaction sequence numbers.
//!
//! A [`Summary`] maps each origin to the [`SeqSet`] of that origin's transactions this replica
//! holds. A replica that received every transaction of an origin in order holds one range
//! `1..=max`; transactions that arrived out of order leave gaps, which are just the holes between
//! ranges. The summary is the whole anti-entropy digest: comparing two of them yields exactly the
//! transactions each side lacks, in one round trip, with a size proportional to the number of
//! origins and gaps rather than the number of records.
//!
//! The store persists the summary in the same SQLite transaction as the data it describes, so the
//! two can never disagree after a crash.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::ids::{ReplicaId, Seq, TxnId};

/// A set of sequence numbers, stored as sorted, disjoint, non-adjacent inclusive ranges.
///
/// Deserializing validates and normalizes the ranges (see [`SeqSet::from_ranges`]), so a summary
/// read from a file or the network can never break the invariants the set operations rely on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SeqSetRepr")]
pub struct SeqSet {
    ranges: Vec<(Seq, Seq)>,
}

/// The serialized shape of a [`SeqSet`], before validation.
#[derive(Deserialize)]
struct SeqSetRepr {
    ranges: Vec<(Seq, Seq)>,
}

impl TryFrom<SeqSetRepr> for SeqSet {
    type Error = &'static str;

    fn try_from(repr: SeqSetRepr) -> Result<Self, Self::Error> {
        SeqSet::from_ranges(&repr.ranges).ok_or("invalid sequence range: need 1 <= start <= end")
    }
}

impl SeqSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set `1..=max` (empty when `max` is 0).
    pub fn up_to(max: Seq) -> Self {
        let mut s = Self::new();
        if max > 0 {
            s.insert_range(1, max);
        }
        s
    }

    /// Builds a set from arbitrary ranges (e.g. decoded from the network): ranges with
    /// `start > end` or `start == 0` are rejected.
    pub fn from_ranges(ranges: &[(Seq, Seq)]) -> Option<Self> {
        let mut s = Self::new();
        for &(a, b) in ranges {
            if a == 0 || a > b {
                return None;
            }
            s.insert_range(a, b);
        }
        Some(s)
    }

    /// The ranges, sorted and disjoint.
    pub fn ranges(&self) -> &[(Seq, Seq)] {
        &self.ranges
    }

    /// True when no sequence number is held.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The highest held sequence number, 0 when empty.
    pub fn max(&self) -> Seq {
        self.ranges.last().map_or(0, |r| r.1)
    }

    /// How many sequence numbers are held.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|(a, b)| b - a + 1).sum()
    }

    /// True when `seq` is held.
    pub fn contains(&self, seq: Seq) -> bool {
        let i = self.ranges.partition_point(|r| r.1 < seq);
        self.ranges.get(i).is_some_and(|r| r.0 <= seq)
    }

    /// Adds one sequence number; returns false if it was already held.
    pub fn insert(&mut self, seq: Seq) -> bool {
        if self.contains(seq) {
            return false;
        }
        self.insert_range(seq, seq);
        true
    }

    /// Adds `start..=end`.
    pub fn insert_range(&mut self, start: Seq, end: Seq) {
        debug_assert!(start <= end);
        // First range that could touch [start, end]: its end + 1 >= start.
        let lo = self
            .ranges
            .partition_point(|r| r.1.saturating_add(1) < start);
        // First range entirely after [start, end] (not even adjacent).
        let hi = self
            .ranges
            .partition_point(|r| r.0 <= end.saturating_add(1));
        let (mut s, mut e) = (start, end);
        if lo < hi {
            s = s.min(self.ranges[lo].0);
            e = e.max(self.ranges[hi - 1].1);
        }
        self.ranges.splice(lo..hi, [(s, e)]);
    }

    /// Adds every element of `other`.
    pub fn union_with(&mut self, other: &SeqSet) {
        for &(a, b) in &other.ranges {
            self.insert_range(a, b);
        }
    }

    /// The elements of `self` that are not in `other`, as ranges.
    pub fn difference(&self, other: &SeqSet) -> Vec<RangeInclusive<Seq>> {
        let mut out = Vec::new();
        let mut j = 0;
        for &(a, b) in &self.ranges {
            let mut cur = a;
            while j < other.ranges.len() && other.ranges[j].1 < cur {
                j += 1;
            }
            let mut k = j;
            while cur <= b {
                match other.ranges.get(k) {
                    Some(&(oa, ob)) if oa <= b => {
                        if oa > cur {
                            out.push(cur..=oa - 1);
                        }
                        cur = ob.saturating_add(1).max(cur);
                        if ob >= b {
                            break;
                        }
                        k += 1;
                    }
                    _ => {
                        out.push(cur..=b);
                        break;
                    }
                }
            }
        }
        out
    }

    /// The elements held by both sets.
    pub fn intersection(&self, other: &SeqSet) -> SeqSet {
        let mut out = SeqSet::new();
        let (mut i, mut j) = (0, 0);
        while i < self.ranges.len() && j < other.ranges.len() {
            let (a1, b1) = self.ranges[i];
            let (a2, b2) = other.ranges[j];
            let (s, e) = (a1.max(a2), b1.min(b2));
            if s <= e {
                out.ranges.push((s, e));
            }
            if b1 < b2 { i += 1 } else { j += 1 }
        }
        out
    }

    /// The highest `n` such that `1..=n` is held (0 if 1 is missing).
    pub fn contiguous_max(&self) -> Seq {
        match self.ranges.first() {
            Some(&(1, e)) => e,
            _ => 0,
        }
    }
}

/// Per-origin sets of held transactions: the anti-entropy digest of a replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    origins: BTreeMap<ReplicaId, SeqSet>,
}

impl Summary {
    /// The empty summary (a replica that holds nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// The set held for `origin` (empty when unknown).
    pub fn get(&self, origin: &ReplicaId) -> Option<&SeqSet> {
        self.origins.get(origin)
    }

    /// Iterates over origins and their sets.
    pub fn iter(&self) -> impl Iterator<Item = (&ReplicaId, &SeqSet)> {
        self.origins.iter()
    }

    /// Number of origins.
    pub fn origin_count(&self) -> usize {
        self.origins.len()
    }

    /// Total number of transactions held.
    pub fn txn_count(&self) -> u64 {
        self.origins.values().map(SeqSet::len).sum()
    }

    /// True when the transaction is held.
    pub fn contains(&self, id: &TxnId) -> bool {
        self.origins
            .get(&id.origin)
            .is_some_and(|s| s.contains(id.seq))
    }

    /// Records one transaction as held; false if it already was.
    pub fn insert(&mut self, id: TxnId) -> bool {
        self.origins.entry(id.origin).or_default().insert(id.seq)
    }

    /// Replaces the set of one origin.
    pub fn set(&mut self, origin: ReplicaId, set: SeqSet) {
        if set.is_empty() {
            self.origins.remove(&origin);
        } else {
            self.origins.insert(origin, set);
        }
    }

    /// The next free sequence number for `origin` (its max + 1).
    pub fn next_seq(&self, origin: &ReplicaId) -> Seq {
        self.origins.get(origin).map_or(0, SeqSet::max) + 1
    }

    /// Adds everything `other` holds.
    pub fn union_with(&mut self, other: &Summary) {
        for (o, s) in &other.origins {
            self.origins.entry(*o).or_default().union_with(s);
        }
    }

    /// What both hold; used for the garbage-collection horizon (the intersection over all peers).
    pub fn intersection(&self, other: &Summary) -> Summary {
        let mut out = Summary::new();
        for (o, s) in &self.origins {
            if let Some(t) = other.origins.get(o) {
                out.set(*o, s.intersection(t));
            }
        }
        out
    }

    /// What `self` holds and `other` lacks: the transactions to send to `other`.
    pub fn missing_from(&self, other: &Summary) -> Vec<(ReplicaId, RangeInclusive<Seq>)> {
        let empty = SeqSet::new();
        let mut out = Vec::new();
        for (o, s) in &self.origins {
            let theirs = other.origins.get(o).unwrap_or(&empty);
            out.extend(s.difference(theirs).into_iter().map(|r| (*o, r)));
        }
        out
    }

    /// True when `other` holds nothing that `self` lacks.
    pub fn covers(&self, other: &Summary) -> bool {
        other.missing_from(self).is_empty()
    }
}

/// The part of `want` (ranges in (origin, seq) order, as [`Summary::missing_from`] returns them)
/// that comes after transaction `last`: where to continue after a batch that ended at `last`.
pub fn ranges_after(
    want: &[(ReplicaId, RangeInclusive<Seq>)],
    last: TxnId,
) -> Vec<(ReplicaId, RangeInclusive<Seq>)> {
    want.iter()
        .filter_map(|(origin, range)| match origin.cmp(&last.origin) {
            std::cmp::Ordering::Less => None,
            std::cmp::Ordering::Equal if *range.end() <= last.seq => None,
            std::cmp::Ordering::Equal => {
                Some((*origin, (*range.start()).max(last.seq + 1)..=*range.end()))
            }
            std::cmp::Ordering::Greater => Some((*origin, range.clone())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn model(set: &SeqSet) -> BTreeSet<u64> {
        set.ranges().iter().flat_map(|&(a, b)| a..=b).collect()
    }

    proptest! {
        #[test]
        fn seqset_matches_btreeset(a in prop::collection::vec(1u64..200, 0..80),
                                   b in prop::collection::vec(1u64..200, 0..80)) {
            let (mut sa, mut sb) = (SeqSet::new(), SeqSet::new());
            let ma: BTreeSet<u64> = a.iter().copied().collect();
            let mb: BTreeSet<u64> = b.iter().copied().collect();
            for x in &a { sa.insert(*x); }
            for x in &b { sb.insert(*x); }
            prop_assert_eq!(model(&sa), ma.clone());
            // ranges are normalized: sorted, disjoint, non-adjacent
            for w in sa.ranges().windows(2) { prop_assert!(w[0].1 + 1 < w[1].0); }
            let diff: BTreeSet<u64> = sa.difference(&sb).into_iter().flatten().collect();
            prop_assert_eq!(diff, ma.difference(&mb).copied().collect::<BTreeSet<_>>());
            let inter = model(&sa.intersection(&sb));
            prop_assert_eq!(inter, ma.intersection(&mb).copied().collect::<BTreeSet<_>>());
            let mut u = sa.clone(); u.union_with(&sb);
            prop_assert_eq!(model(&u), ma.union(&mb).copied().collect::<BTreeSet<_>>());
            for x in 0..210 { prop_assert_eq!(sa.contains(x), ma.contains(&x)); }
        }
    }

    #[test]
    fn summary_missing_from() {
        let o = ReplicaId::random();
        let mut a = Summary::new();
        let mut b = Summary::new();
        for s in 1..=10 {
            a.insert(TxnId { origin: o, seq: s });
        }
        for s in [1, 2, 3, 7] {
            b.insert(TxnId { origin: o, seq: s });
        }
        assert_eq!(a.missing_from(&b), vec![(o, 4..=6), (o, 8..=10)]);
        assert!(b.missing_from(&a).is_empty());
        assert!(a.covers(&b));
        assert!(!b.covers(&a));
        assert_eq!(a.next_seq(&o), 11);
        assert_eq!(a.intersection(&b).txn_count(), 4);
    }

    #[test]
    fn deserializing_validates_ranges() {
        let ok: SeqSet = serde_json::from_str(r#"{"ranges":[[5,9],[1,4]]}"#).unwrap();
        assert_eq!(ok.ranges(), &[(1, 9)]);
        for bad in [
            r#"{"ranges":[[0,3]]}"#,
            r#"{"ranges":[[9,3]]}"#,
            r#"{"ranges":"x"}"#,
        ] {
            assert!(serde_json::from_str::<SeqSet>(bad).is_err(), "{bad}");
        }
        let s = SeqSet::from_ranges(&[(1, 3), (7, 7)]).unwrap();
        let bin = postcard::to_stdvec(&s).unwrap();
        assert_eq!(postcard::from_bytes::<SeqSet>(&bin).unwrap(), s);
    }

    #[test]
    fn ranges_after_skips_what_was_sent() {
        let (a, b, c) = (ReplicaId([1; 16]), ReplicaId([2; 16]), ReplicaId([3; 16]));
        let want = vec![(a, 1..=10), (b, 1..=3), (b, 7..=9), (c, 5..=6)];
        let rest = ranges_after(&want, TxnId { origin: b, seq: 2 });
        assert_eq!(rest, vec![(b, 3..=3), (b, 7..=9), (c, 5..=6)]);
        assert!(ranges_after(&rest, TxnId { origin: c, seq: 6 }).is_empty());
    }

    #[test]
    fn from_ranges_rejects_bad_input() {
        assert!(SeqSet::from_ranges(&[(0, 3)]).is_none());
        assert!(SeqSet::from_ranges(&[(5, 3)]).is_none());
        let s = SeqSet::from_ranges(&[(5, 9), (1, 4), (20, 20)]).unwrap();
        assert_eq!(s.ranges(), &[(1, 9), (20, 20)]);
        assert_eq!(s.contiguous_max(), 9);
    }
}
