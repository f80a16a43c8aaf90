//! [`NetHandle`]: the cloneable handle the node uses to drive the transport, and the errors of
//! its operations. Every call becomes a `MeshCommand` for the mesh actor (`net::mesh`) on
//! a bounded channel; calls wait when the actor is busy rather than queueing without bound.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use meshlite_core::protocol::EncodeError;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::apply::{ApplyCounts, ApplyStats};
use super::config::TransportConfigError;
use super::control::{ControlMessage, encode_control};
use super::events::{NetEvent, PeerInfo, PushReport, SyncStats};
use super::push::PushFrame;
use super::sync::SyncError;
use super::tls::{PeerPolicy, TlsSetupError};
use crate::fleet::NodeId;

/// Where the answer to a connect request goes.
pub(super) type ConnectReply = oneshot::Sender<Result<NodeId, ConnectError>>;

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] TransportConfigError),
    /// The TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The listen address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Why dialing a peer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The TLS client configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// quinn refused to start the connection (bad address, endpoint closing).
    #[error("cannot dial: {0}")]
    Dial(#[from] quinn::ConnectError),
    /// The handshake failed; a refusal by our fleet checks is also published as
    /// [`NetEvent::Refused`].
    #[error("handshake failed: {0}")]
    Handshake(#[from] quinn::ConnectionError),
    /// The peer closed the connection instead of admitting us (its checks refused our
    /// certificate, or it is at its peer limit).
    #[error("refused by peer: {0}")]
    Refused(quinn::ConnectionError),
    /// No handshake within `connect_timeout`.
    #[error("handshake timed out")]
    Timeout,
    /// `max_peers` connections exist already.
    #[error("peer limit reached")]
    TooManyPeers,
    /// The peer presented no usable identity (cannot happen after our verifier accepted it).
    #[error("peer identity unavailable")]
    NoIdentity,
    /// The transport is shut down.
    #[error("transport closed")]
    Closed,
    /// The node was put on the deny list while the handshake ran.
    #[error("node {0} is on the deny list")]
    Denied(NodeId),
    /// This call joined a dial already in flight to the same address or node, which failed.
    #[error("dial failed: {0}")]
    Failed(String),
}

/// Why a push could not be sent at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The transactions do not fit in one `Push` frame (or one is empty or over the size limit).
    #[error("cannot encode push: {0}")]
    Encode(#[from] EncodeError),
    /// The frame exceeds the transport's `max_frame_bytes`.
    #[error("push of {len} bytes exceeds max_frame_bytes {max}")]
    TooLarge {
        /// Encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The transport is shut down.
    #[error("transport closed")]
    Closed,
}

pub(super) enum MeshCommand {
    Connect {
        addr: SocketAddr,
        expected: Option<NodeId>,
        reply: ConnectReply,
    },
    Sync {
        peer: NodeId,
        reply: oneshot::Sender<Result<SyncStats, SyncError>>,
    },
    Push {
        frame: PushFrame,
        targets: Vec<NodeId>,
        reply: oneshot::Sender<PushReport>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    Disconnect {
        peer: NodeId,
        reply: oneshot::Sender<bool>,
    },
    EnforceDenyList,
}

/// A cloneable handle on a running transport.
#[derive(Clone)]
pub struct NetHandle {
    pub(super) commands: mpsc::Sender<MeshCommand>,
    pub(super) events: broadcast::Sender<NetEvent>,
    pub(super) policy: Arc<PeerPolicy>,
    pub(super) node_id: NodeId,
    pub(super) local_addr: SocketAddr,
    pub(super) max_frame_bytes: usize,
    /// Inbound handshakes ignored by the per-source rate limit.
    pub(super) handshakes_rate_limited: Arc<std::sync::atomic::AtomicU64>,
    /// Inbound Initials answered with a QUIC Retry (address validation under pressure).
    pub(super) handshakes_retried: Arc<std::sync::atomic::AtomicU64>,
    /// The push applier's counters ([`super::apply`]).
    pub(super) apply_stats: Arc<ApplyStats>,
    pub(super) cancel: CancellationToken,
    pub(super) task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for NetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetHandle")
            .field("node_id", &self.node_id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl NetHandle {
    /// Inbound handshakes ignored so far by the per-source rate limit
    /// ([`super::admission`]).
    pub fn handshakes_rate_limited(&self) -> u64 {
        self.handshakes_rate_limited
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Inbound Initials answered so far with a QUIC Retry ([`super::admission`]).
    pub fn handshakes_retried(&self) -> u64 {
        self.handshakes_retried
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How pushed transactions were applied so far: replica calls (writer transactions) vs
    /// transactions ([`super::apply`]).
    pub fn push_apply_counts(&self) -> ApplyCounts {
        self.apply_stats.snapshot()
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The bound UDP address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Subscribes to transport events (from now on).
    pub fn subscribe(&self) -> broadcast::Receiver<NetEvent> {
        self.events.subscribe()
    }

    /// Connects to `addr` (or returns at once if `expected` is already connected). With
    /// `expected`, the handshake fails unless that node answers.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<NodeId>,
    ) -> Result<NodeId, ConnectError> {
        let (reply, rx) = oneshot::channel();
        self.send(MeshCommand::Connect {
            addr,
            expected,
            reply,
        })
        .await
        .map_err(|()| ConnectError::Closed)?;
        rx.await.map_err(|_| ConnectError::Closed)?
    }

    /// Runs one anti-entropy round with a connected peer.
    pub async fn sync_with(&self, peer: NodeId) -> Result<SyncStats, SyncError> {
        let (reply, rx) = oneshot::channel();
        self.send(MeshCommand::Sync { peer, reply })
            .await
            .map_err(|()| SyncError::Closed)?;
        rx.await.map_err(|_| SyncError::Closed)?
    }

    /// Pushes encoded transactions to `peers` (those connected; others are skipped). Whom to
    /// push to is the dissemination policy's decision (`meshlite_core::dissemination`), not the
    /// transport's.
    pub async fn push_to(
        &self,
        peers: Vec<NodeId>,
        txns: Vec<Vec<u8>>,
    ) -> Result<PushReport, PushError> {
        self.push_frame(txns, peers).await
    }

    async fn push_frame(
        &self,
        txns: Vec<Vec<u8>>,
        targets: Vec<NodeId>,
    ) -> Result<PushReport, PushError> {
        let frame = PushFrame::txns(txns)?;
        self.queue_frame(frame, targets).await
    }

    async fn queue_frame(
        &self,
        frame: PushFrame,
        targets: Vec<NodeId>,
    ) -> Result<PushReport, PushError> {
        if frame.frame_len() > self.max_frame_bytes {
            return Err(PushError::TooLarge {
                len: frame.frame_len(),
                max: self.max_frame_bytes,
            });
        }
        let (reply, rx) = oneshot::channel();
        self.send(MeshCommand::Push {
            frame,
            targets,
            reply,
        })
        .await
        .map_err(|()| PushError::Closed)?;
        rx.await.map_err(|_| PushError::Closed)
    }

    /// Queues an overlay-mode control message for `peer` on its push stream; `Ok(false)` if
    /// the peer is not connected or its queue is full (the message is dropped; the overlay's
    /// timers recover).
    pub async fn send_control(
        &self,
        peer: NodeId,
        message: &ControlMessage,
    ) -> Result<bool, PushError> {
        let frame = PushFrame::other(encode_control(message)?);
        let report = self.queue_frame(frame, vec![peer]).await?;
        Ok(!report.queued.is_empty())
    }

    /// A snapshot of the connected peers, by node id. Empty once shut down.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        let (reply, rx) = oneshot::channel();
        if self.send(MeshCommand::Peers { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Closes the connection to `peer`; false if there was none.
    pub async fn disconnect(&self, peer: NodeId) -> bool {
        let (reply, rx) = oneshot::channel();
        if self
            .send(MeshCommand::Disconnect { peer, reply })
            .await
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Replaces the deny list: new handshakes see it at once, and connected peers now on it are
    /// disconnected.
    pub async fn set_deny_list(&self, deny: Vec<NodeId>) {
        self.policy.set_deny_list(deny);
        let _ = self.send(MeshCommand::EnforceDenyList).await;
    }

    /// Stops the transport: closes every connection and the endpoint (bounded by
    /// [`crate::tasks::SHUTDOWN_GRACE`] each) and waits for the actor to end.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let task = match self.task.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "mesh actor failed");
        }
    }

    async fn send(&self, command: MeshCommand) -> Result<(), ()> {
        self.commands.send(command).await.map_err(|_| ())
    }
}
