//! Push path: unsolicited `Push` frames on one unidirectional stream per direction.
//!
//! The sender side is a writer task per peer that owns the peer's bounded push queue
//! ([`PushQueue`]): the mesh enqueues pre-encoded frames with `try_send`, never waiting; when the
//! queue is full in count ([`super::TransportConfig::per_peer_queue`]) or bytes
//! ([`PER_PEER_QUEUE_BYTES`]) the frame is dropped for that peer and anti-entropy delivers it
//! later. A peer that stops reading therefore costs at most one queue, and QUIC flow control
//! bounds what sits in quinn's buffers.
//!
//! The receiver side reads frames through the [`FrameGuard`] and the protocol's
//! [`FrameDecoder`], decodes each transaction, and hands them to the backend. Overlay-mode
//! `Control` frames and `Error` frames share the stream ([`super::control`]): a control message
//! that does not decode is answered with an `Error` frame and skipped. Anything else that is
//! not a well-formed `Push` frame resets the stream; the connection and its syncs carry on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use meshlite_core::Txn;
use meshlite_core::protocol::control::{ControlError, decode_control};
use meshlite_core::protocol::{
    ErrorCode, Frame, FrameDecoder, MAX_ERROR_MESSAGE_BYTES, encode_frame,
};
use quinn::{Connection, RecvStream, SendStream, VarInt};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::apply::Applier;
use super::coalesce::coalesce;
use super::control::OverlayPeer;
use super::events::NetEvent;
use super::frame_guard::FrameGuard;
use super::stats::PeerStats;
use super::sync::{READ_CHUNK_BYTES, STREAM_FRAME_TOO_LARGE};
use crate::fleet::NodeId;
use crate::replica::ReplicaError;

/// Most bytes of push frames queued for one peer.
pub const PER_PEER_QUEUE_BYTES: usize = 16 * 1024 * 1024;

/// Stream error code: the push stream carried something other than valid `Push` frames.
pub const STREAM_BAD_PUSH: VarInt = VarInt::from_u32(0x12);

/// Stream error code: this node could not store the push (a full disk, Postgres down); the
/// sender did nothing wrong, and anti-entropy delivers the transactions once storage is back.
pub const STREAM_RETRY_LATER: VarInt = VarInt::from_u32(0x13);

pub use super::coalesce::PushFrame;

/// Most bytes the writer takes off the queue for one stream write.
pub const WRITE_BATCH_BYTES: usize = 1024 * 1024;

/// The sending half of a peer's push queue.
#[derive(Debug, Clone)]
pub struct PushQueue {
    tx: mpsc::Sender<PushFrame>,
    bytes: Arc<AtomicUsize>,
}

/// The receiving half, owned by the writer task.
#[derive(Debug)]
pub struct PushQueueRx {
    rx: mpsc::Receiver<PushFrame>,
    bytes: Arc<AtomicUsize>,
}

/// A bounded push queue of `capacity` frames and [`PER_PEER_QUEUE_BYTES`] bytes.
pub fn push_queue(capacity: usize) -> (PushQueue, PushQueueRx) {
    let (tx, rx) = mpsc::channel(capacity);
    let bytes = Arc::new(AtomicUsize::new(0));
    (
        PushQueue {
            tx,
            bytes: bytes.clone(),
        },
        PushQueueRx { rx, bytes },
    )
}

impl PushQueue {
    /// Enqueues `frame` unless the queue is full; never waits.
    pub fn try_push(&self, frame: &PushFrame) -> bool {
        let len = frame.queued_bytes();
        let before = self.bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > PER_PEER_QUEUE_BYTES || self.tx.try_send(frame.clone()).is_err() {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Frames waiting.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// The first frame on every push stream: an empty `Push`. Opening the stream at once tells a
/// dialing peer that we admitted it (see `net::mesh`).
pub fn preamble() -> Vec<u8> {
    // An empty list always encodes; the fallback is never used but avoids a panic path.
    encode_frame(&Frame::Push { txns: Vec::new() }).unwrap_or_default()
}

/// Writes the preamble, then queued push frames, to one unidirectional stream.
pub async fn run_writer(
    conn: Connection,
    mut queue: PushQueueRx,
    stats: Arc<PeerStats>,
    cancel: CancellationToken,
) {
    let mut stream: Option<SendStream> = None;
    let first = preamble();
    let opened = tokio::select! {
        biased;
        () = cancel.cancelled() => return,
        result = write_frame(&conn, &mut stream, &first) => result,
    };
    if let Err(e) = opened {
        tracing::debug!(peer = %stats.node_id, error = %e, "cannot open push stream");
    }
    loop {
        let first = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            frame = queue.rx.recv() => match frame {
                Some(frame) => frame,
                None => return,
            },
        };
        let batch = coalesce(queue.take_queued(first));
        let written = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            result = write_frame(&conn, &mut stream, &batch.bytes) => result,
        };
        match written {
            Ok(()) => {
                stats.pushes_sent.fetch_add(batch.frames, Ordering::Relaxed);
                stats
                    .pushes_merged
                    .fetch_add(batch.merged, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(peer = %stats.node_id, error = %e, "push stream failed");
                stats.errors.fetch_add(1, Ordering::Relaxed);
                // A new stream next time; if the connection is gone the actor ends us.
                stream = None;
            }
        }
    }
}

impl PushQueueRx {
    /// `first` and whatever else is queued now, up to about [`WRITE_BATCH_BYTES`]; their bytes
    /// leave the queue's account.
    fn take_queued(&mut self, first: PushFrame) -> Vec<PushFrame> {
        let mut bytes = first.queued_bytes();
        let mut taken = vec![first];
        while bytes < WRITE_BATCH_BYTES {
            match self.rx.try_recv() {
                Ok(frame) => {
                    bytes += frame.queued_bytes();
                    taken.push(frame);
                }
                Err(_) => break,
            }
        }
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        taken
    }
}

/// Why writing a push frame failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushWriteError {
    /// The push stream could not be opened.
    #[error("cannot open push stream: {0}")]
    Open(#[from] quinn::ConnectionError),
    /// Writing to the stream failed.
    #[error("push stream write: {0}")]
    Write(#[from] quinn::WriteError),
}

/// Why an incoming push stream was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushReadError {
    /// The bytes are not a valid frame.
    #[error("bad frame: {0}")]
    Frame(#[from] meshlite_core::protocol::DecodeError),
    /// A frame other than `Push` arrived on a push stream.
    #[error("{0} frame on a push stream")]
    UnexpectedFrame(&'static str),
    /// A pushed transaction does not decode.
    #[error("pushed txn #{index}: {source}")]
    Txn {
        /// Its position in the frame.
        index: usize,
        /// Why it does not decode.
        source: meshlite_core::change::DecodeTxnError,
    },
    /// The replica could not apply the push.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
}

async fn write_frame(
    conn: &Connection,
    stream: &mut Option<SendStream>,
    frame: &[u8],
) -> Result<(), PushWriteError> {
    let send = match stream {
        Some(send) => send,
        None => stream.insert(conn.open_uni().await?),
    };
    Ok(send.write_all(frame).await?)
}

/// Everything a push reader needs besides its stream.
pub struct PushReader {
    /// The sending peer.
    pub from: NodeId,
    /// Its address (the connection's remote address).
    pub addr: SocketAddr,
    /// Our push queue to the same peer, where answers to bad control frames go.
    pub reply: PushQueue,
    /// Where received transactions go (with those of every other push read in the meantime).
    pub applier: Applier,
    /// The peer's counters.
    pub stats: Arc<PeerStats>,
    /// Where `PushReceived` is published.
    pub events: broadcast::Sender<NetEvent>,
    /// Largest frame accepted.
    pub max_frame_bytes: usize,
}

impl std::fmt::Debug for PushReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushReader")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl PushReader {
    /// Reads `Push` frames until the stream ends, fails, or breaks the rules.
    pub async fn run(self, mut recv: RecvStream, cancel: CancellationToken) {
        let mut guard = FrameGuard::new(self.max_frame_bytes);
        let mut decoder = FrameDecoder::new();
        loop {
            let chunk = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                chunk = recv.read_chunk(READ_CHUNK_BYTES, true) => chunk,
            };
            let chunk = match chunk {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(peer = %self.from, error = %e, "push stream ended");
                    return;
                }
            };
            self.stats.touch();
            if let Err(e) = guard.check(&chunk.bytes) {
                self.refuse(&mut recv, STREAM_FRAME_TOO_LARGE, &e.to_string());
                return;
            }
            if let Err(reason) = self.consume(&mut decoder, &chunk.bytes).await {
                if let PushReadError::Replica(e) = &reason {
                    self.give_up(&mut recv, e);
                } else {
                    self.refuse(&mut recv, STREAM_BAD_PUSH, &reason.to_string());
                }
                return;
            }
        }
    }

    /// Decodes every complete frame in `input` and applies the transactions of all its `Push`
    /// frames together (a `Control` or `Error` frame is handled after the pushes before it).
    async fn consume(
        &self,
        decoder: &mut FrameDecoder,
        mut input: &[u8],
    ) -> Result<(), PushReadError> {
        let mut pending = Vec::new();
        while !input.is_empty() {
            let taken = decoder.push(input);
            input = &input[taken..];
            while let Some(frame) = decoder.next_frame()? {
                match frame {
                    Frame::Push { txns } => self.received(txns, &mut pending),
                    Frame::Control { version, body } => {
                        self.apply(std::mem::take(&mut pending)).await?;
                        self.on_control(version, &body);
                    }
                    Frame::Error { code, message } => {
                        self.apply(std::mem::take(&mut pending)).await?;
                        self.on_peer_error(code, message);
                    }
                    other => return Err(PushReadError::UnexpectedFrame(other.kind())),
                }
            }
        }
        self.apply(pending).await
    }

    /// Counts one `Push` frame and adds its transactions to those awaiting apply.
    fn received(&self, txns: Vec<Vec<u8>>, pending: &mut Vec<Vec<u8>>) {
        if txns.is_empty() {
            return; // The preamble.
        }
        self.stats.pushes_received.fetch_add(1, Ordering::Relaxed);
        self.stats
            .push_txns_received
            .fetch_add(txns.len() as u64, Ordering::Relaxed);
        pending.extend(txns);
    }

    async fn apply(&self, encoded: Vec<Vec<u8>>) -> Result<(), PushReadError> {
        if encoded.is_empty() {
            return Ok(());
        }
        let mut txns = Vec::with_capacity(encoded.len());
        for (i, bytes) in encoded.iter().enumerate() {
            let txn =
                Txn::decode(bytes).map_err(|source| PushReadError::Txn { index: i, source })?;
            txns.push(txn);
        }
        let ids = txns.iter().map(|t| t.id).collect();
        let bytes = encoded.iter().map(Vec::len).sum();
        let applied = self.applier.apply(txns, bytes).await?;
        let failed = self
            .stats
            .pushes_unstored_in_a_row
            .swap(0, Ordering::Relaxed);
        if failed > 0 {
            tracing::info!(peer = %self.from, failures = failed, "storing pushes works again");
        }
        // No subscriber is fine: the data is in the store either way.
        let _ = self.events.send(NetEvent::PushReceived {
            from: self.from,
            txns: ids,
            encoded: Arc::new(encoded),
            applied,
        });
        Ok(())
    }

    /// Publishes a control message, or answers one that does not decode and carries on.
    fn on_control(&self, version: u8, body: &[u8]) {
        match decode_control(version, body) {
            Ok(message) => {
                let from = OverlayPeer {
                    id: self.from,
                    addr: self.addr,
                };
                let _ = self.events.send(NetEvent::Control { from, message });
            }
            Err(e) => {
                tracing::warn!(peer = %self.from, error = %e, "refused a control message");
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                self.answer_error(&e);
            }
        }
    }

    fn answer_error(&self, error: &ControlError) {
        let code = match error {
            ControlError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            _ => ErrorCode::Protocol,
        };
        let mut message = error.to_string();
        if message.len() > MAX_ERROR_MESSAGE_BYTES {
            let mut end = MAX_ERROR_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        match encode_frame(&Frame::Error { code, message }) {
            Ok(frame) => {
                if !self.reply.try_push(&PushFrame::other(frame)) {
                    tracing::debug!(peer = %self.from, "push queue full; error answer dropped");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode an error answer"),
        }
    }

    fn on_peer_error(&self, code: ErrorCode, message: String) {
        tracing::warn!(peer = %self.from, ?code, %message, "peer refused what we sent");
        let from = self.from;
        let _ = self.events.send(NetEvent::PeerError {
            from,
            code,
            message,
        });
    }

    fn refuse(&self, recv: &mut RecvStream, code: VarInt, reason: &str) {
        tracing::warn!(peer = %self.from, %reason, "closing push stream");
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let _ = recv.stop(code);
    }

    /// Our storage failed, not the peer: stop the stream with [`STREAM_RETRY_LATER`] and leave
    /// the peer's error count alone. While storage keeps failing, every push fails the same way,
    /// so the log shows failures 1, 2, 4, 8, … of this node's run, not each one.
    fn give_up(&self, recv: &mut RecvStream, e: &ReplicaError) {
        let run = self
            .stats
            .pushes_unstored_in_a_row
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if run.is_power_of_two() {
            tracing::warn!(peer = %self.from, error = %e, failures = run, "cannot store a push; anti-entropy will deliver it later");
        }
        let _ = recv.stop(STREAM_RETRY_LATER);
    }
}
