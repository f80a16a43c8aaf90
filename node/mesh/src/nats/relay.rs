//! The JetStream relay: every node publishes its local transactions to one stream and consumes
//! everyone's, so nodes that cannot reach each other over QUIC still converge.
//!
//! - Stream `nats.stream` (default `MESHLITE_TXNS`) holds subjects `meshlite.txn.<cluster>.>`
//!   with limits retention (every node's consumer sees every transaction; the server drops them
//!   after `nats.stream_max_age_secs`), file storage, and the server's duplicate window.
//! - Publisher: local transactions go to `meshlite.txn.<cluster>.<origin hex>` as their encoded
//!   bytes with `Nats-Msg-Id` = `TxnId::to_key()`, in seq order, starting after a persisted
//!   cursor (the last local seq the stream acknowledged). It wakes on local commits and polls
//!   the store's head as a fallback, so transactions committed while NATS was down, or while the
//!   process was stopped, go out once the server answers again. Over-publishing after a crash is
//!   deduplicated by the server (within its window) and otherwise harmless.
//! - Consumer: a durable pull consumer per node (`meshlite-<node id>`), explicit ack. Each batch
//!   is decoded (`Txn::decode`; undecodable messages are terminated with a warning) and applied
//!   in one store call; messages are acked only after the store committed them, so a crash
//!   between apply and ack means a harmless redelivery.
//! - Both loops survive server restarts: errors are logged, they back off, re-ensure the stream
//!   and consumer, and go on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, stream};
use futures_util::{FutureExt, StreamExt};
use meshlite_core::{ReplicaId, Seq, Txn, TxnId};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{NatsConfig, NatsContext, config::is_name_token};
use crate::backoff::Backoff;
use crate::replica::{Replica, ReplicaError};

/// Subject prefix of relayed transactions.
pub const TXN_SUBJECT_PREFIX: &str = "meshlite.txn";
/// About this many bytes of transactions are read from the store per publish batch.
const PUBLISH_BUDGET: usize = 1024 * 1024;
/// The publisher checks the store's head at least this often even without a wake-up.
const PUBLISH_POLL: Duration = Duration::from_secs(2);
/// A pull request waits this long for messages before the client issues the next one.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Idle heartbeat of pull requests; two missed ones mean the server is gone.
const PULL_HEARTBEAT: Duration = Duration::from_secs(2);
/// A delivered message not acked within this time is redelivered.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How soon a batch the store could not apply is redelivered.
const NAK_DELAY: Duration = Duration::from_secs(1);
/// Retry delays after failures.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Error of one relay round; the loops log it, back off and retry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// Creating or looking up the stream failed.
    #[error("relay stream: {0}")]
    Stream(#[from] jetstream::context::CreateStreamError),
    /// The stream exists with subjects that do not cover this cluster.
    #[error(
        "stream {stream} exists with subjects {subjects:?}, not {wanted}; give each cluster its own nats.stream"
    )]
    StreamSubjects {
        /// Stream name.
        stream: String,
        /// Its subjects.
        subjects: Vec<String>,
        /// The subject filter this cluster needs.
        wanted: String,
    },
    /// Creating or looking up the consumer failed.
    #[error("relay consumer: {0}")]
    Consumer(#[from] jetstream::stream::ConsumerError),
    /// Starting to pull failed.
    #[error("relay pull: {0}")]
    Pull(#[from] jetstream::consumer::StreamError),
    /// Pulling failed mid-stream.
    #[error("relay messages: {0}")]
    Messages(#[from] jetstream::consumer::pull::MessagesError),
    /// The pull stream ended.
    #[error("relay message stream ended")]
    MessagesEnded,
    /// Publishing or its acknowledgement failed.
    #[error("relay publish: {0}")]
    Publish(#[from] jetstream::context::PublishError),
    /// The replica failed.
    #[error("store: {0}")]
    Store(#[from] ReplicaError),
    /// The cursor file could not be written.
    #[error("relay cursor {path}: {source}")]
    Cursor {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Counters of the relay.
#[derive(Debug, Default)]
pub struct RelayStats {
    published: AtomicU64,
    duplicates: AtomicU64,
    applied: AtomicU64,
    rejected: AtomicU64,
    errors: AtomicU64,
}

impl RelayStats {
    /// Local transactions acknowledged by the stream.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
    /// Of those, ones the stream already had (re-published after a restart).
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }
    /// Transactions received from the stream and committed by the store (including ones it
    /// already held).
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }
    /// Messages terminated: undecodable, or refused by the store.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
    /// Failed rounds (server away, store errors), each followed by a retry.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// The subject of one origin's transactions.
pub fn txn_subject(cluster: &str, origin: &ReplicaId) -> String {
    format!("{TXN_SUBJECT_PREFIX}.{cluster}.{}", origin.to_hex())
}

/// The subject filter of a cluster's transactions.
pub fn cluster_filter(cluster: &str) -> String {
    format!("{TXN_SUBJECT_PREFIX}.{cluster}.>")
}

/// The durable consumer name of a node.
pub fn consumer_name(node_id: &str) -> String {
    let name = format!("meshlite-{node_id}");
    if is_name_token(&name) {
        name
    } else {
        format!("meshlite-{}", hex::encode(node_id))
    }
}

/// The persisted relay cursor: `<replica hex> <seq>\n`. A file naming another replica (a data
/// directory recreated) or unreadable counts as 0: everything is published again, which is safe.
#[derive(Debug, Clone)]
pub struct RelayCursor {
    path: PathBuf,
    replica: ReplicaId,
}

impl RelayCursor {
    /// The cursor of `replica` stored at `path`.
    pub fn new(path: impl Into<PathBuf>, replica: ReplicaId) -> Self {
        Self {
            path: path.into(),
            replica,
        }
    }

    /// The last acknowledged local seq (0: none).
    pub async fn load(&self) -> Seq {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "relay cursor unreadable");
                return 0;
            }
        };
        match parse_cursor(&text) {
            Some((replica, seq)) if replica == self.replica => seq,
            Some(_) => 0,
            None => {
                tracing::warn!(path = %self.path.display(), "relay cursor malformed; republishing");
                0
            }
        }
    }

    /// Persists `seq` atomically (write a temporary file, then rename).
    pub async fn save(&self, seq: Seq) -> Result<(), RelayError> {
        let tmp = tmp_path(&self.path);
        let body = format!("{} {seq}\n", self.replica.to_hex());
        let write = async {
            tokio::fs::write(&tmp, body).await?;
            tokio::fs::rename(&tmp, &self.path).await
        };
        write.await.map_err(|source| RelayError::Cursor {
            path: self.path.clone(),
            source,
        })
    }
}

fn parse_cursor(text: &str) -> Option<(ReplicaId, Seq)> {
    let (replica, seq) = text.trim().split_once(' ')?;
    Some((replica.parse().ok()?, seq.parse().ok()?))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The relay's retry delay: the shared [`Backoff`], logging the first failure of a streak as
/// a warning and the recovery as info.
#[derive(Debug)]
struct Retry(Backoff);

impl Retry {
    fn new() -> Self {
        Self(Backoff::new(BACKOFF_MIN, BACKOFF_MAX))
    }

    fn reset(&mut self) {
        if self.0.failures() > 0 {
            tracing::info!("NATS relay working again");
        }
        self.0.reset();
    }

    /// Logs `e` (a warning for the first failure of a streak) and returns the delay to wait.
    fn fail(&mut self, what: &str, e: &RelayError) -> Duration {
        if self.0.failures() > 0 {
            tracing::debug!(error = %e, "{what} still failing");
        } else {
            tracing::warn!(error = %e, "{what} failed; retrying");
        }
        self.0.fail()
    }
}

/// Sleeps for `d`; false if cancelled first.
async fn pause(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

/// The relay of one node; see the module doc.
#[derive(Debug)]
pub struct Relay<S> {
    js: jetstream::Context,
    store: S,
    stream: String,
    max_age: Duration,
    batch: usize,
    cluster: String,
    consumer: String,
    cursor: RelayCursor,
    stats: Arc<RelayStats>,
}

impl<S: Replica> Relay<S> {
    /// A relay for `ctx`'s node and store with `cfg`'s stream settings.
    pub fn new(cfg: &NatsConfig, ctx: &NatsContext<S>, stats: Arc<RelayStats>) -> Self {
        let js = jetstream::ContextBuilder::new()
            .timeout(cfg.request_timeout())
            .build(ctx.client.clone());
        Self {
            js,
            store: ctx.store.clone(),
            stream: cfg.stream.clone(),
            max_age: cfg.stream_max_age(),
            batch: cfg.relay_batch,
            cluster: ctx.local.cluster.clone(),
            consumer: consumer_name(&ctx.local.node_id),
            cursor: RelayCursor::new(&ctx.cursor_path, ctx.store.replica_id()),
            stats,
        }
    }

    /// Creates the stream if missing and checks that it covers this cluster's subjects.
    pub async fn ensure_stream(&self) -> Result<stream::Stream, RelayError> {
        let wanted = cluster_filter(&self.cluster);
        let config = stream::Config {
            name: self.stream.clone(),
            subjects: vec![wanted.clone()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: self.max_age,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        };
        let stream = self.js.get_or_create_stream(config).await?;
        let subjects = &stream.cached_info().config.subjects;
        if !subjects
            .iter()
            .any(|s| s == &wanted || s == ">" || s == "meshlite.txn.>")
        {
            let subjects = subjects.clone();
            return Err(RelayError::StreamSubjects {
                stream: self.stream.clone(),
                subjects,
                wanted,
            });
        }
        Ok(stream)
    }

    async fn ensure_consumer(&self) -> Result<PullConsumer, RelayError> {
        let stream = self.ensure_stream().await?;
        let config = jetstream::consumer::pull::Config {
            durable_name: Some(self.consumer.clone()),
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            filter_subject: cluster_filter(&self.cluster),
            max_ack_pending: i64::try_from(self.batch * 4).unwrap_or(i64::MAX),
            ..Default::default()
        };
        Ok(stream
            .get_or_create_consumer(&self.consumer, config)
            .await?)
    }

    /// Publishes local transactions after the cursor whenever woken (or every few seconds)
    /// until `cancel`.
    pub async fn run_publisher(
        self: Arc<Self>,
        wake: Arc<Notify>,
        cancel: CancellationToken,
    ) -> Result<(), RelayError> {
        let mut cursor = self.cursor.load().await;
        let mut backoff = Retry::new();
        let mut stream_ready = false;
        loop {
            let round = async {
                if !stream_ready {
                    self.ensure_stream().await?;
                    stream_ready = true;
                }
                self.publish_pending(&mut cursor).await
            };
            let round = tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                round = round => round,
            };
            match round {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    stream_ready = false;
                    if !pause(backoff.fail("relay publish", &e), &cancel).await {
                        return Ok(());
                    }
                    continue;
                }
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                () = wake.notified() => {}
                () = tokio::time::sleep(PUBLISH_POLL) => {}
            }
        }
    }

    /// Publishes every local transaction after `cursor`, advancing and persisting it.
    async fn publish_pending(&self, cursor: &mut Seq) -> Result<(), RelayError> {
        let head = self.store.local_head().await?;
        let me = self.store.replica_id();
        while *cursor < head {
            let want = vec![(me, *cursor + 1..=head)];
            let batch = self.store.load_txns(want, PUBLISH_BUDGET).await?;
            let published = self.publish_batch(&batch.ids, &batch.txns, cursor).await;
            self.cursor.save(*cursor).await?;
            published?;
            if batch.rest.is_empty() {
                // Everything up to `head` was returned or garbage-collected.
                *cursor = head;
                self.cursor.save(head).await?;
            } else if batch.txns.is_empty() {
                tracing::warn!(from = *cursor + 1, "store returned an empty partial batch");
                break;
            }
        }
        Ok(())
    }

    /// Publishes `txns` pipelined, then awaits the acks in order, advancing `cursor` past each.
    async fn publish_batch(
        &self,
        ids: &[TxnId],
        txns: &[Vec<u8>],
        cursor: &mut Seq,
    ) -> Result<(), RelayError> {
        let mut acks = Vec::with_capacity(txns.len());
        for (id, bytes) in ids.iter().zip(txns) {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.to_key().as_str());
            let subject = txn_subject(&self.cluster, &id.origin);
            let ack = self
                .js
                .publish_with_headers(subject, headers, bytes.clone().into())
                .await?;
            acks.push((id.seq, ack));
        }
        for (seq, ack) in acks {
            let ack = ack.await?;
            if ack.duplicate {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            self.stats.published.fetch_add(1, Ordering::Relaxed);
            *cursor = (*cursor).max(seq);
        }
        Ok(())
    }

    /// Consumes the stream into the store until `cancel`.
    pub async fn run_consumer(
        self: Arc<Self>,
        cancel: CancellationToken,
    ) -> Result<(), RelayError> {
        let mut backoff = Retry::new();
        loop {
            let round = async {
                let consumer = self.ensure_consumer().await?;
                self.consume(consumer, &cancel, &mut backoff).await
            };
            let round = tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                round = round => round,
            };
            if let Err(e) = round {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                if !pause(backoff.fail("relay consume", &e), &cancel).await {
                    return Ok(());
                }
            } else {
                return Ok(());
            }
        }
    }

    /// Pulls batches and applies them; returns Ok only when cancelled.
    async fn consume(
        &self,
        consumer: PullConsumer,
        cancel: &CancellationToken,
        backoff: &mut Retry,
    ) -> Result<(), RelayError> {
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.batch)
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await?;
        loop {
            let first = tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                next = messages.next() => next.ok_or(RelayError::MessagesEnded)??,
            };
            let mut batch = vec![first];
            let mut pending_error = None;
            while batch.len() < self.batch {
                match messages.next().now_or_never() {
                    Some(Some(Ok(m))) => batch.push(m),
                    Some(Some(Err(e))) => {
                        pending_error = Some(e);
                        break;
                    }
                    Some(None) | None => break,
                }
            }
            self.handle_batch(batch).await?;
            backoff.reset();
            if let Some(e) = pending_error {
                return Err(e.into());
            }
        }
    }

    /// Decodes, applies and acks one batch. Undecodable and refused messages are terminated.
    async fn handle_batch(&self, batch: Vec<jetstream::Message>) -> Result<(), RelayError> {
        let mut txns = Vec::with_capacity(batch.len());
        let mut accepted = Vec::with_capacity(batch.len());
        for msg in batch {
            match Txn::decode(&msg.payload) {
                Ok(txn) => {
                    accepted.push((txn.id, msg));
                    txns.push(txn);
                }
                Err(e) => {
                    tracing::warn!(subject = %msg.subject, error = %e, "undecodable relay message dropped");
                    self.terminate(&msg).await;
                }
            }
        }
        if txns.is_empty() {
            return Ok(());
        }
        let refused = match self.store.apply_txns(txns).await {
            Ok(applied) => applied.rejected,
            Err(e) => {
                for (_, msg) in &accepted {
                    let _ = msg.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
                }
                return Err(e.into());
            }
        };
        for (id, msg) in accepted {
            if let Some((_, why)) = refused.iter().find(|(r, _)| *r == id) {
                tracing::warn!(txn = ?id, reason = %why, "relayed transaction refused by the store");
                self.terminate(&msg).await;
            } else {
                self.stats.applied.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = msg.ack().await {
                    tracing::debug!(error = %e, "ack lost; the message will be redelivered");
                }
            }
        }
        Ok(())
    }

    async fn terminate(&self, msg: &jetstream::Message) {
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = msg.ack_with(AckKind::Term).await {
            tracing::debug!(error = %e, "term lost; the message will be redelivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_subjects() {
        let origin = ReplicaId([0xab; 16]);
        assert_eq!(
            txn_subject("c1", &origin),
            format!("meshlite.txn.c1.{}", "ab".repeat(16))
        );
        assert_eq!(cluster_filter("c1"), "meshlite.txn.c1.>");
        assert_eq!(consumer_name("00ff"), "meshlite-00ff");
        assert_eq!(consumer_name("a.b"), "meshlite-612e62");
    }

    #[tokio::test]
    async fn cursor_round_trips_and_ignores_other_replicas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.cursor");
        let mine = RelayCursor::new(&path, ReplicaId([1; 16]));
        assert_eq!(mine.load().await, 0);
        mine.save(42).await.unwrap();
        assert_eq!(mine.load().await, 42);
        assert_eq!(RelayCursor::new(&path, ReplicaId([2; 16])).load().await, 0);
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(mine.load().await, 0);
    }
}
