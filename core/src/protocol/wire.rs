//! Bounded decoding of the collections inside frames.
//!
//! serde's derived `Deserialize` for `Vec`, `BTreeMap` and [`Summary`] accepts any element count
//! the input claims and only afterwards could we check limits. A frame of 4 MiB holding millions
//! of empty entries would then allocate tens of MiB of headers before being refused. The
//! functions here are used with `#[serde(deserialize_with = ...)]`: they refuse an over-long
//! collection as soon as its length (or the running count) exceeds the limit, and they validate
//! summaries while decoding them (origins strictly ascending, ranges sorted, disjoint,
//! non-adjacent, starting at 1 or later). The bytes they accept are exactly what the derived
//! `Serialize` impls produce, which the round-trip property tests check.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::limits::{
    MAX_FILTER_COLLECTIONS, MAX_SUMMARY_ORIGINS, MAX_SUMMARY_RANGES, MAX_TXNS_PER_FRAME,
};
use crate::ids::{ReplicaId, Seq};
use crate::version::{SeqSet, Summary};

/// A `Vec<T>` whose decoding fails once it would hold more than `N` elements.
pub(crate) struct BoundedVec<T, const N: usize>(pub(crate) Vec<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for BoundedVec<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(BoundedVecVisitor::<T, N>(PhantomData))
    }
}

struct BoundedVecVisitor<T, const N: usize>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for BoundedVecVisitor<T, N> {
    type Value = BoundedVec<T, N>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a sequence of at most {N} elements")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let claimed = seq.size_hint().unwrap_or(0);
        if claimed > N {
            return Err(de::Error::invalid_length(claimed, &self));
        }
        // Cap the pre-allocation too: the claim is not yet backed by bytes.
        let mut out = Vec::with_capacity(claimed.min(1024));
        while let Some(item) = seq.next_element()? {
            if out.len() == N {
                return Err(de::Error::invalid_length(N + 1, &self));
            }
            out.push(item);
        }
        Ok(BoundedVec(out))
    }
}

/// Decodes the transaction list of a `Txns`/`Push` frame (at most [`MAX_TXNS_PER_FRAME`]).
pub(crate) fn txn_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
    BoundedVec::<Vec<u8>, MAX_TXNS_PER_FRAME>::deserialize(d).map(|v| v.0)
}

/// Decodes an optional collection filter (at most [`MAX_FILTER_COLLECTIONS`] names).
pub(crate) fn opt_names<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Option::<BoundedVec<String, MAX_FILTER_COLLECTIONS>>::deserialize(d).map(|o| o.map(|v| v.0))
}

/// Decodes and validates a [`Summary`] within [`MAX_SUMMARY_ORIGINS`] and [`MAX_SUMMARY_RANGES`].
pub(crate) fn summary<'de, D: Deserializer<'de>>(d: D) -> Result<Summary, D::Error> {
    let mut budget = MAX_SUMMARY_RANGES;
    SummarySeed {
        budget: &mut budget,
    }
    .deserialize(d)
}

/// Decodes an optional summary with the same limits as [`summary`].
pub(crate) fn opt_summary<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Summary>, D::Error> {
    d.deserialize_option(OptSummaryVisitor)
}

struct OptSummaryVisitor;

impl<'de> Visitor<'de> for OptSummaryVisitor {
    type Value = Option<Summary>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an optional summary")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        summary(d).map(Some)
    }
}

/// `Summary` is a struct with one field, a map from origin to [`SeqSet`]; postcard writes
/// neither struct nor field names, so the struct is a one-element tuple around the map.
struct SummarySeed<'b> {
    budget: &'b mut usize,
}

impl<'de> DeserializeSeed<'de> for SummarySeed<'_> {
    type Value = Summary;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Summary, D::Error> {
        d.deserialize_struct("Summary", &["origins"], self)
    }
}

impl<'de> Visitor<'de> for SummarySeed<'_> {
    type Value = Summary;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a summary")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Summary, A::Error> {
        let origins = OriginsSeed {
            budget: self.budget,
        };
        seq.next_element_seed(origins)?
            .ok_or_else(|| de::Error::invalid_length(0, &"1 field"))
    }
}

struct OriginsSeed<'b> {
    budget: &'b mut usize,
}

impl<'de> DeserializeSeed<'de> for OriginsSeed<'_> {
    type Value = Summary;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Summary, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OriginsSeed<'_> {
    type Value = Summary;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at most {MAX_SUMMARY_ORIGINS} origins in ascending order"
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Summary, A::Error> {
        let claimed = map.size_hint().unwrap_or(0);
        if claimed > MAX_SUMMARY_ORIGINS {
            return Err(de::Error::invalid_length(claimed, &self));
        }
        let mut out = Summary::new();
        let (mut count, mut prev) = (0usize, None::<ReplicaId>);
        while let Some(origin) = map.next_key::<ReplicaId>()? {
            count += 1;
            if count > MAX_SUMMARY_ORIGINS {
                return Err(de::Error::invalid_length(count, &self));
            }
            if prev.is_some_and(|p| p >= origin) {
                return Err(de::Error::custom(
                    "summary origins not in strictly ascending order",
                ));
            }
            prev = Some(origin);
            let set = map.next_value_seed(SeqSetSeed {
                budget: &mut *self.budget,
            })?;
            out.set(origin, set);
        }
        Ok(out)
    }
}

/// `SeqSet` is a struct with one field, its ranges.
struct SeqSetSeed<'b> {
    budget: &'b mut usize,
}

impl<'de> DeserializeSeed<'de> for SeqSetSeed<'_> {
    type Value = SeqSet;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SeqSet, D::Error> {
        d.deserialize_struct("SeqSet", &["ranges"], self)
    }
}

impl<'de> Visitor<'de> for SeqSetSeed<'_> {
    type Value = SeqSet;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence set")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SeqSet, A::Error> {
        let ranges = RangesSeed {
            budget: self.budget,
        };
        seq.next_element_seed(ranges)?
            .ok_or_else(|| de::Error::invalid_length(0, &"1 field"))
    }
}

struct RangesSeed<'b> {
    budget: &'b mut usize,
}

impl<'de> DeserializeSeed<'de> for RangesSeed<'_> {
    type Value = SeqSet;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SeqSet, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RangesSeed<'_> {
    type Value = SeqSet;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at most {MAX_SUMMARY_RANGES} sorted, disjoint ranges in a summary"
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SeqSet, A::Error> {
        let claimed = seq.size_hint().unwrap_or(0);
        if claimed > *self.budget {
            return Err(de::Error::invalid_length(claimed, &self));
        }
        let mut ranges: Vec<(Seq, Seq)> = Vec::with_capacity(claimed.min(1024));
        while let Some((start, end)) = seq.next_element::<(Seq, Seq)>()? {
            if *self.budget == 0 {
                return Err(de::Error::invalid_length(MAX_SUMMARY_RANGES + 1, &self));
            }
            *self.budget -= 1;
            check_range(ranges.last().copied(), start, end)?;
            ranges.push((start, end));
        }
        // Validated sorted input makes `from_ranges` a sequence of appends.
        SeqSet::from_ranges(&ranges).ok_or_else(|| de::Error::custom("invalid sequence range"))
    }
}

/// A range must be non-empty, start at 1 or later and lie strictly after (and not adjacent to)
/// the previous one: the normalized form [`SeqSet`] always has.
fn check_range<E: de::Error>(prev: Option<(Seq, Seq)>, start: Seq, end: Seq) -> Result<(), E> {
    if start == 0 || start > end {
        return Err(E::custom("invalid sequence range"));
    }
    match prev {
        Some((_, prev_end)) if prev_end.saturating_add(1) >= start => Err(E::custom(
            "sequence ranges not sorted, disjoint and non-adjacent",
        )),
        _ => Ok(()),
    }
}
