//! A per-source-IP rate limit on inbound QUIC handshakes, applied by the mesh actor before any
//! cryptography (a `quinn::Incoming` over the limit is ignored: no reply, no state kept).
//!
//! Without it, one host sending Initial packets as fast as it can would fill every handshake
//! slot of `max_peers` (each held up to `connect_timeout`) and lock honest peers out. With it, a
//! single source holds at most `burst + rate × connect_timeout` slots at once. Each source has a
//! token bucket (`handshake_burst_per_ip` tokens, refilled at `handshake_rate_per_ip` per
//! second); the table is bounded ([`MAX_TRACKED_SOURCES`]): buckets that have refilled are
//! forgotten first (they are the same as no entry), then the longest unused.
//!
//! Refusals are counted ([`HandshakeLimiter::refused`], the `meshlite_quic_handshakes_rate_limited_total`
//! metric) and logged at most once per [`LOG_EVERY`], with the number refused since the last line,
//! so a flood does not become a flood of log lines.
//!
//! Spoofed sources: the source address of a QUIC Initial is not validated, so a flood from many
//! (spoofed) addresses passes every per-source bucket. Under pressure — at least
//! [`RETRY_ABOVE_IN_FLIGHT`] inbound handshakes in flight — an Initial whose address has not been
//! validated (and within its source's limit) is answered with a stateless QUIC Retry (RFC 9000 §8.1.2) instead of a handshake
//! slot: the node keeps no state for it, the Retry packet is smaller than the Initial (no
//! amplification), and only a client that receives it at its address comes back with the token
//! and is admitted. Honest peers pay one round trip, and only while the node is under pressure.
//! Retries are counted ([`HandshakeLimiter::retried`], the `meshlite_quic_retries_total` metric).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Most source addresses tracked at once.
pub const MAX_TRACKED_SOURCES: usize = 4096;
/// Inbound handshakes in flight from which unvalidated Initials are answered with a Retry.
pub const RETRY_ABOVE_IN_FLIGHT: usize = 8;
/// At most one log line per this interval while handshakes are being refused.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The per-source limit: a burst, then a steady rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HandshakeLimit {
    /// Handshakes a source may start at once.
    pub burst: u32,
    /// Handshakes per second a source may start after its burst.
    pub per_second: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The limiter: one token bucket per source IP, a refusal counter, a throttled log.
#[derive(Debug)]
pub struct HandshakeLimiter {
    limit: HandshakeLimit,
    sources: HashMap<IpAddr, Bucket>,
    refused: Arc<AtomicU64>,
    retried: Arc<AtomicU64>,
    unlogged: u64,
    last_log: Option<Instant>,
}

impl HandshakeLimiter {
    /// A limiter with no history.
    pub fn new(limit: HandshakeLimit) -> Self {
        Self {
            limit,
            sources: HashMap::new(),
            refused: Arc::new(AtomicU64::new(0)),
            retried: Arc::new(AtomicU64::new(0)),
            unlogged: 0,
            last_log: None,
        }
    }

    /// The count of refused handshakes (shared with [`super::NetHandle`] for the metrics).
    pub fn refused(&self) -> Arc<AtomicU64> {
        self.refused.clone()
    }

    /// The count of Initials answered with a Retry (shared with [`super::NetHandle`]).
    pub fn retried(&self) -> Arc<AtomicU64> {
        self.retried.clone()
    }

    /// Whether to answer an admitted Initial with a Retry: its address is not validated yet
    /// (`may_retry`) and `in_flight` inbound handshakes are under way. Counts the Retry. Asked
    /// after [`Self::admit`], so a flood from one source is ignored without a reply, and an
    /// honest peer under pressure spends two tokens (its Initial and the validated one).
    pub fn should_retry(&self, may_retry: bool, in_flight: usize) -> bool {
        let retry = may_retry && in_flight >= RETRY_ABOVE_IN_FLIGHT;
        if retry {
            self.retried.fetch_add(1, Ordering::Relaxed);
        }
        retry
    }

    /// Sources currently tracked (bounded by [`MAX_TRACKED_SOURCES`]).
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    /// Whether a handshake from `source` may start at `now`; counts and logs a refusal.
    pub fn admit(&mut self, source: IpAddr, now: Instant) -> bool {
        if self.take(source, now) {
            return true;
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.unlogged += 1;
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            tracing::warn!(
                %source,
                refused = self.unlogged,
                burst = self.limit.burst,
                per_second = self.limit.per_second,
                "ignoring QUIC handshakes over the per-source rate limit (count since the last such line)"
            );
            self.unlogged = 0;
            self.last_log = Some(now);
        }
        false
    }

    /// Takes one token from `source`'s bucket if it has one.
    fn take(&mut self, source: IpAddr, now: Instant) -> bool {
        let full = f64::from(self.limit.burst);
        if !self.sources.contains_key(&source) && self.sources.len() >= MAX_TRACKED_SOURCES {
            self.make_room(now);
        }
        let rate = f64::from(self.limit.per_second);
        let bucket = self.sources.entry(source).or_insert(Bucket {
            tokens: full,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(full);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets refilled buckets; if none, the least recently used one.
    fn make_room(&mut self, now: Instant) {
        let full = f64::from(self.limit.burst);
        let rate = f64::from(self.limit.per_second);
        self.sources.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < full
        });
        if self.sources.len() < MAX_TRACKED_SOURCES {
            return;
        }
        let stalest = self
            .sources
            .iter()
            .min_by_key(|(_, b)| b.at)
            .map(|(ip, _)| *ip);
        if let Some(ip) = stalest {
            self.sources.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const LIMIT: HandshakeLimit = HandshakeLimit {
        burst: 3,
        per_second: 2,
    };

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut l = HandshakeLimiter::new(LIMIT);
        let t0 = Instant::now();
        let admitted = (0..10).filter(|_| l.admit(ip(1), t0)).count();
        assert_eq!(admitted, 3);
        assert_eq!(l.refused().load(Ordering::Relaxed), 7);
        // Half a second refills one token at 2 per second.
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.admit(ip(1), t1));
        assert!(!l.admit(ip(1), t1));
    }

    #[test]
    fn unvalidated_initials_are_retried_only_under_pressure() {
        let l = HandshakeLimiter::new(LIMIT);
        assert!(!l.should_retry(true, RETRY_ABOVE_IN_FLIGHT - 1));
        assert!(l.should_retry(true, RETRY_ABOVE_IN_FLIGHT));
        assert!(
            !l.should_retry(false, 1000),
            "a validated address is never retried again"
        );
        assert_eq!(l.retried().load(Ordering::Relaxed), 1);
    }

    #[test]
    fn one_source_over_its_limit_does_not_affect_another() {
        let mut l = HandshakeLimiter::new(LIMIT);
        let t0 = Instant::now();
        for _ in 0..100 {
            l.admit(ip(1), t0);
        }
        assert!(l.admit(ip(2), t0));
    }

    #[test]
    fn the_table_stays_bounded_under_many_sources() {
        let mut l = HandshakeLimiter::new(LIMIT);
        let t0 = Instant::now();
        for n in 0..(MAX_TRACKED_SOURCES as u32 + 64) {
            // Each source spends its whole burst, so no bucket is full when room is needed.
            for _ in 0..3 {
                assert!(l.admit(ip(n), t0 + Duration::from_micros(u64::from(n))));
            }
        }
        assert!(l.tracked() <= MAX_TRACKED_SOURCES, "{}", l.tracked());
    }

    #[test]
    fn refilled_buckets_are_forgotten_first() {
        let mut l = HandshakeLimiter::new(LIMIT);
        let t0 = Instant::now();
        for n in 0..MAX_TRACKED_SOURCES as u32 {
            l.admit(ip(n), t0);
        }
        // Much later every bucket is full again: one new source clears them all.
        let later = t0 + Duration::from_secs(60);
        assert!(l.admit(ip(1 << 20), later));
        assert_eq!(l.tracked(), 1);
    }
}
