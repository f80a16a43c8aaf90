//! The session's public types: configuration, events, counters and errors.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::change::{MAX_TXN_BYTES, Txn};
use crate::ids::{ReplicaId, Seq};
use crate::protocol::frame::{DecodeError, EncodeError, ErrorCode, Hello};
use crate::protocol::limits::TARGET_FRAME_BYTES;
use crate::version::Summary;

/// Tunables of a [`Session`](super::Session). Every field has a documented default ([`Default`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// How long to wait for the peer's `Hello`. Default 10 s.
    pub handshake_timeout: Duration,
    /// Longest silence from the peer while we wait for its sync data (after the handshake, until
    /// its `Done`). `None` disables it. Default 30 s. There is no timeout once the sync is
    /// complete: liveness of a long-lived push connection is the transport's keepalive.
    pub idle_timeout: Option<Duration>,
    /// Bytes of transactions packed into one frame before starting another. Default
    /// [`TARGET_FRAME_BYTES`] (256 KiB); clamped to the frame limit.
    pub target_frame_bytes: usize,
    /// Most undrained per-frame events (`Received`, `PeerAck`). Default 1024.
    pub max_pending_events: usize,
    /// Most bytes of transactions held in undrained `Received` events. Default 32 MiB.
    pub max_pending_event_bytes: usize,
    /// Above this many bytes waiting in the transmit queue, `send_txns` and `push` refuse new
    /// data ([`SendError::QueueFull`]) until the host drains `poll_transmit`. Default 32 MiB.
    pub max_pending_transmit_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(30)),
            target_frame_bytes: TARGET_FRAME_BYTES,
            max_pending_events: 1024,
            max_pending_event_bytes: 32 << 20,
            max_pending_transmit_bytes: 32 << 20,
        }
    }
}

/// Which side opened the connection. Both sides run the same protocol (each sends its `Hello`
/// at once), so the role only labels the session for the host and its logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We dialed.
    Initiator,
    /// The peer dialed.
    Responder,
}

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Our `Hello` is sent; waiting for the peer's.
    Handshake,
    /// Exchanging what each side lacks.
    Syncing,
    /// Both sides sent `Done`; pushes and acks may continue.
    Established,
    /// Closed normally by either side.
    Closed,
    /// Ended by an error; see [`Session::error`](super::Session::error).
    Failed,
}

/// What the session reports to its host.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The peer's `Hello` was accepted.
    PeerHello {
        /// The peer's identity, filter and summary.
        hello: Hello,
        /// How many transactions the peer holds that we lack (an upper bound on what it will
        /// send: it may filter by our collection filter).
        missing: u64,
    },
    /// Send the peer these transactions: load them, then [`Session::send_txns`](super::Session::send_txns) and
    /// [`Session::finish_sending`](super::Session::finish_sending). Only emitted when the peer lacks something.
    NeedTxns {
        /// Per-origin ranges the peer lacks.
        ranges: Vec<(ReplicaId, RangeInclusive<Seq>)>,
        /// The peer's partial replication filter (`None`: it wants every collection). The host
        /// decides what to do with transactions outside it.
        collections: Option<Vec<String>>,
    },
    /// Transactions arrived (sync or push), decoded and validated; apply them.
    Received {
        /// Decoded transactions in arrival order.
        txns: Vec<Txn>,
        /// Why undecodable transactions were dropped (`"txn #i: reason"`).
        rejected: Vec<String>,
    },
    /// The peer reported what it now holds.
    PeerAck {
        /// The peer's summary.
        summary: Summary,
    },
    /// Both sides sent `Done`: this replica now holds everything the peer had for it when the
    /// session began (once the received transactions are applied), and vice versa.
    Complete {
        /// Transactions we sent in the sync.
        sent: u64,
        /// Transactions we received in the sync.
        received: u64,
    },
    /// The peer closed the session.
    Closed,
    /// The session ended with an error; an `Error` frame for the peer may still be queued.
    Failed(SessionError),
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Bytes handed out by `poll_transmit`.
    pub bytes_sent: u64,
    /// Bytes passed to `handle_bytes`.
    pub bytes_received: u64,
    /// Frames queued for sending.
    pub frames_sent: u64,
    /// Frames decoded.
    pub frames_received: u64,
    /// Transactions queued for sending (sync and push).
    pub txns_sent: u64,
    /// Transactions received (sync and push, including rejected ones).
    pub txns_received: u64,
}

/// Why a session failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer sent bytes that are not a valid frame.
    #[error("undecodable frame from peer: {0}")]
    Decode(#[from] DecodeError),
    /// The peer belongs to another cluster.
    #[error("peer belongs to cluster {remote:?}, this node to {local:?}")]
    ClusterMismatch {
        /// Our cluster id.
        local: String,
        /// The peer's cluster id.
        remote: String,
    },
    /// The peer has our replica id: a self-connection, or a data directory copied to a second
    /// device (which breaks convergence; see [`crate::ids`]).
    #[error("peer has this replica's own id {0}: self-connection or copied data directory")]
    SameReplica(ReplicaId),
    /// The peer sent a frame that is not allowed in the current state.
    #[error("protocol violation by peer: {0}")]
    Protocol(&'static str),
    /// The peer was silent for too long.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The host did not drain events, or the peer floods them.
    #[error("{0} queue limit exceeded (is the host draining poll_event?)")]
    Overflow(&'static str),
    /// The peer ended the session with an error.
    #[error("peer reported {code:?}: {message}")]
    Peer {
        /// The peer's code.
        code: ErrorCode,
        /// The peer's message.
        message: String,
    },
    /// The host aborted the session ([`Session::abort`](super::Session::abort)).
    #[error("aborted: {0}")]
    Aborted(String),
}

impl SessionError {
    /// The code to tell the peer, `None` when the peer already knows (it sent the error).
    pub(super) fn reply_code(&self) -> Option<ErrorCode> {
        Some(match self {
            SessionError::Decode(DecodeError::UnsupportedVersion(_)) => {
                ErrorCode::UnsupportedVersion
            }
            SessionError::Decode(DecodeError::Oversized { .. }) => ErrorCode::Limit,
            SessionError::Decode(_) | SessionError::Protocol(_) => ErrorCode::Protocol,
            SessionError::ClusterMismatch { .. } => ErrorCode::ClusterMismatch,
            SessionError::SameReplica(_) => ErrorCode::SameReplica,
            SessionError::Timeout(_) => ErrorCode::Timeout,
            SessionError::Overflow(_) => ErrorCode::Limit,
            SessionError::Aborted(_) => ErrorCode::Internal,
            SessionError::Peer { .. } => return None,
        })
    }
}

/// Why the session refused data or a request from its host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The call is not valid now (for example `send_txns` without a `NeedTxns`).
    #[error("not allowed now: {0}")]
    InvalidState(&'static str),
    /// A transaction is empty or larger than [`MAX_TXN_BYTES`]; nothing was queued.
    #[error("transaction #{index} has {len} bytes (allowed: 1..={MAX_TXN_BYTES}); nothing queued")]
    InvalidTxn {
        /// Its position in the call's list.
        index: usize,
        /// Its length.
        len: usize,
    },
    /// The transmit queue is over its limit; drain `poll_transmit` and retry. Nothing was queued.
    #[error("transmit queue full ({pending} bytes pending); drain poll_transmit and retry")]
    QueueFull {
        /// Bytes waiting.
        pending: usize,
    },
    /// The session is closed or failed.
    #[error("session is closed or failed")]
    Closed,
    /// A frame could not be encoded (for example an ack summary over the limits).
    #[error(transparent)]
    Encode(#[from] EncodeError),
}
