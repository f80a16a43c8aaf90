//! Change events on `supabase.sync.<collection>.<op>`, shaped like the seed's NATSSyncPublisher.
//!
//! [`CommitFeed`] is the NATS service's only subscriber of the store's commit broadcast. For
//! every changed row of every commit (local writes and applied remote transactions) it publishes
//! a [`ChangeEvent`]; for local commits it also wakes the relay publisher. A subscriber that falls
//! behind the broadcast loses events: they are counted in [`EventStats::lost`] and logged, never
//! fatal (core NATS events are best effort anyway; the relay does not depend on them because it
//! publishes from its cursor).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use meshlite_core::store::{ChangeKind, StoreEvent};

use super::{ChangeView, Operation, config::is_name_token, rfc3339_now};

/// Subject prefix of change events.
pub const EVENTS_PREFIX: &str = "supabase.sync";

/// The JSON body of a change event: the seed's `{source, table, operation, data, timestamp}`
/// plus the record id and whether the change was written on this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// The publishing node's name.
    pub source: String,
    /// Collection (table) name.
    pub table: String,
    /// `insert`, `update`, `delete` or `append`.
    pub operation: String,
    /// Record id.
    pub id: String,
    /// The merged row after the change (including its primary key); `null` for deletes.
    pub data: Option<serde_json::Value>,
    /// True when written on the publishing node, false when it arrived from a peer. Every node
    /// publishes every change it commits; consumers wanting one event per change filter on this.
    pub local: bool,
    /// When the publishing node committed it, RFC 3339 UTC.
    pub timestamp: String,
}

/// The subject of a change, `None` if the collection name is not a plain subject token.
pub fn subject(collection: &str, op: &str) -> Option<String> {
    is_name_token(collection).then(|| format!("{EVENTS_PREFIX}.{collection}.{op}"))
}

/// Counters of the commit feed.
#[derive(Debug, Default)]
pub struct EventStats {
    published: AtomicU64,
    lost: AtomicU64,
    failed: AtomicU64,
}

impl EventStats {
    /// Events handed to the client.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Commits missed because the feed lagged behind the store's broadcast.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Events the client refused (closed connection, unusable collection name).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// Error ending the commit feed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitFeedError {
    /// The store closed its broadcast while the node was running.
    #[error("the store's commit broadcast closed")]
    StoreClosed,
}

/// Publishes change events and wakes the relay; see the module doc.
#[derive(Debug)]
pub struct CommitFeed {
    /// Where events go; `None` when events are disabled (the feed then only wakes the relay).
    pub client: Option<async_nats::Client>,
    /// The `source` field.
    pub source: String,
    /// Notified on every local commit (and after lagging), when the relay runs.
    pub relay_wake: Option<Arc<Notify>>,
    /// Counters.
    pub stats: Arc<EventStats>,
}

impl CommitFeed {
    /// Runs until `cancel` (returns Ok) or until the store closes its broadcast (an error).
    pub async fn run(
        self,
        mut rx: broadcast::Receiver<StoreEvent>,
        cancel: CancellationToken,
    ) -> Result<(), CommitFeedError> {
        loop {
            let received = tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                received = rx.recv() => received,
            };
            match received {
                Ok(event) => self.handle(&event).await,
                Err(broadcast::error::RecvError::Lagged(n)) => self.lagged(n),
                Err(broadcast::error::RecvError::Closed) if cancel.is_cancelled() => return Ok(()),
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(CommitFeedError::StoreClosed);
                }
            }
        }
    }

    fn lagged(&self, n: u64) {
        self.stats.lost.fetch_add(n, Ordering::Relaxed);
        tracing::warn!(
            lost = n,
            "change events lost: the NATS feed fell behind the store"
        );
        // Missed commits may have been local; the relay re-reads from its cursor.
        self.wake_relay();
    }

    fn wake_relay(&self) {
        if let Some(wake) = &self.relay_wake {
            wake.notify_one();
        }
    }

    async fn handle(&self, event: &StoreEvent) {
        let (local, changes) = changes(event);
        if local {
            self.wake_relay();
        }
        let Some(client) = &self.client else { return };
        let timestamp = rfc3339_now();
        for change in changes {
            self.publish(client, change, local, &timestamp).await;
        }
    }

    async fn publish(&self, client: &async_nats::Client, c: ChangeView<'_>, local: bool, ts: &str) {
        let op = c.op.as_str();
        let Some(subject) = subject(c.collection, op) else {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                collection = c.collection,
                "collection name unusable in a NATS subject"
            );
            return;
        };
        let event = ChangeEvent {
            source: self.source.clone(),
            table: c.collection.to_owned(),
            operation: op.to_owned(),
            id: c.id.to_owned(),
            data: c.value.cloned(),
            local,
            timestamp: ts.to_owned(),
        };
        let body = match serde_json::to_vec(&event) {
            Ok(body) => body,
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "change event not encodable");
                return;
            }
        };
        match client.publish(subject, body.into()).await {
            Ok(()) => self.stats.published.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!(error = %e, "change event not published");
                self.stats.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

fn operation(kind: ChangeKind) -> Operation {
    match kind {
        ChangeKind::Insert => Operation::Insert,
        ChangeKind::Update => Operation::Update,
        ChangeKind::Delete => Operation::Delete,
        ChangeKind::Append => Operation::Append,
    }
}

/// Whether `event` is a local commit, and the rows it changed.
fn changes(event: &StoreEvent) -> (bool, Vec<ChangeView<'_>>) {
    match event {
        StoreEvent::Committed { local, changes, .. } => {
            let views = changes.iter().map(|c| ChangeView {
                collection: &c.collection,
                id: &c.id,
                op: operation(c.kind),
                value: c.value.as_ref(),
            });
            (*local, views.collect())
        }
        #[allow(unreachable_patterns)]
        _ => (false, Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_seed() {
        assert_eq!(
            subject("jobs", "insert").as_deref(),
            Some("supabase.sync.jobs.insert")
        );
        assert_eq!(subject("a.b", "insert"), None);
        assert_eq!(subject("a>", "insert"), None);
    }

    #[test]
    fn event_json_has_the_seed_fields() {
        let e = ChangeEvent {
            source: "pi5".into(),
            table: "jobs".into(),
            operation: "delete".into(),
            id: "j1".into(),
            data: None,
            local: true,
            timestamp: rfc3339_now(),
        };
        let v = serde_json::to_value(&e).unwrap();
        for key in [
            "source",
            "table",
            "operation",
            "data",
            "timestamp",
            "id",
            "local",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert!(v["data"].is_null());
    }
}
