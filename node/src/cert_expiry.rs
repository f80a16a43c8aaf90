//! How close the node certificate is to its end of validity: shown in `/status`
//! (`certificate`), in `/metrics` (`meshlite_cert_expiry_seconds`) and, within
//! [`WARN_WITHIN`], as a warning log line at start and once a day ([`watch`]).
//!
//! A leaf: the daemon builds a [`CertExpiry`] from the loaded identity, the HTTP handlers and
//! the metrics renderer only read it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshlite_mesh::tasks::Ticker;
use tokio_util::sync::CancellationToken;

/// How long before expiry the daemon starts warning.
pub const WARN_WITHIN: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often the warning repeats.
pub const WARN_EVERY: Duration = Duration::from_secs(24 * 3600);

/// The end of the node certificate's validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertExpiry {
    not_after: SystemTime,
}

impl CertExpiry {
    /// Expiry at `not_after`.
    pub fn new(not_after: SystemTime) -> Self {
        Self { not_after }
    }

    /// `notAfter` in seconds since the Unix epoch.
    pub fn not_after_unix(&self) -> i64 {
        signed_secs(UNIX_EPOCH, self.not_after)
    }

    /// Seconds from `now` until expiry; negative once expired.
    pub fn seconds_left(&self, now: SystemTime) -> i64 {
        signed_secs(now, self.not_after)
    }

    /// Whether `now` is within [`WARN_WITHIN`] of expiry (or past it).
    pub fn expiring_soon(&self, now: SystemTime) -> bool {
        self.seconds_left(now) <= WARN_WITHIN.as_secs() as i64
    }

    /// The `/status` field.
    pub fn to_json(&self, now: SystemTime) -> serde_json::Value {
        serde_json::json!({
            "not_after_unix": self.not_after_unix(),
            "expires_in_s": self.seconds_left(now),
            "expiring_soon": self.expiring_soon(now),
        })
    }

    /// Logs a warning when the certificate expires within [`WARN_WITHIN`]; whether it did.
    pub fn warn_if_soon(&self, now: SystemTime) -> bool {
        if !self.expiring_soon(now) {
            return false;
        }
        let left = self.seconds_left(now);
        let days = left.div_euclid(24 * 3600);
        if left < 0 {
            tracing::warn!(
                not_after_unix = self.not_after_unix(),
                "the node certificate has expired; peers refuse it: renew it \
                 (`meshlite fleet renew FLEET_DIR NAME`) and restart"
            );
        } else {
            tracing::warn!(
                not_after_unix = self.not_after_unix(),
                days_left = days,
                "the node certificate expires in {days} days: renew it \
                 (`meshlite fleet renew FLEET_DIR NAME`), copy node.pem and restart"
            );
        }
        true
    }
}

fn signed_secs(from: SystemTime, to: SystemTime) -> i64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Warns every [`WARN_EVERY`] while the certificate is within [`WARN_WITHIN`] of expiry, until
/// `cancel`. The daemon calls [`CertExpiry::warn_if_soon`] itself at start, before it reports
/// ready, so the first warning precedes the ready line.
pub async fn watch(expiry: CertExpiry, cancel: CancellationToken) {
    let mut ticker = Ticker::every(WARN_EVERY, cancel);
    while ticker.tick().await {
        expiry.warn_if_soon(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_signs() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let soon = CertExpiry::new(now + Duration::from_secs(10 * 24 * 3600));
        assert_eq!(soon.seconds_left(now), 10 * 24 * 3600);
        assert!(soon.expiring_soon(now));
        let later = CertExpiry::new(now + WARN_WITHIN + Duration::from_secs(1));
        assert!(!later.expiring_soon(now));
        let past = CertExpiry::new(now - Duration::from_secs(5));
        assert_eq!(past.seconds_left(now), -5);
        assert!(past.expiring_soon(now));
        assert_eq!(soon.to_json(now)["expiring_soon"], true);
    }
}
