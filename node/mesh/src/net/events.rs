//! What the transport reports: events (broadcast), peer snapshots and sync statistics.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshlite_core::protocol::ErrorCode;
use meshlite_core::{ReplicaId, TxnId};
use rustls::CertificateError;
use serde::Serialize;

use super::control::{ControlMessage, OverlayPeer};
use crate::fleet::{CertIdentityError, ClusterId, NodeId, NodeName};

/// Capacity of the event broadcast channel. A subscriber that falls further behind loses the
/// oldest events (`RecvError::Lagged`) instead of holding memory.
pub const EVENTS_CAPACITY: usize = 1024;

/// Which side dialed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The peer dialed us.
    Inbound,
    /// We dialed the peer.
    Outbound,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        })
    }
}

/// Something the transport wants its host to know.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum NetEvent {
    /// A peer connection was established (after mutual TLS and the fleet checks).
    PeerUp {
        /// The peer's node id.
        node_id: NodeId,
        /// Its name, from its certificate.
        node_name: Option<NodeName>,
        /// Its address.
        addr: SocketAddr,
        /// Who dialed.
        direction: Direction,
    },
    /// A peer connection ended.
    PeerDown {
        /// The peer's node id.
        node_id: NodeId,
        /// Why, as quinn reports it.
        reason: String,
    },
    /// A handshake was refused by the fleet checks (the reason is also logged).
    Refused {
        /// Whether the peer dialed us or we dialed it.
        direction: Direction,
        /// Why.
        reason: RefusalReason,
    },
    /// Pushed transactions arrived from a peer and were handed to the store.
    PushReceived {
        /// The sender.
        from: NodeId,
        /// Ids of the transactions, in arrival order.
        txns: Vec<TxnId>,
        /// Their encoded bytes, for relaying without re-reading the store.
        encoded: Arc<Vec<Vec<u8>>>,
        /// How many were new to this node.
        applied: usize,
    },
    /// An overlay-mode control message arrived ([`super::control`]).
    Control {
        /// The sender, at the address its connection comes from.
        from: OverlayPeer,
        /// The message.
        message: ControlMessage,
    },
    /// A peer refused something we sent on the push stream (an `Error` frame came back, for
    /// example for a control message it could not decode).
    PeerError {
        /// The peer.
        from: NodeId,
        /// Its reason code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
}

/// Outcome of one anti-entropy round ([`super::NetHandle::sync_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncStats {
    /// Bytes written on the sync stream.
    pub bytes_sent: u64,
    /// Bytes read from the sync stream.
    pub bytes_received: u64,
    /// Transactions sent to the peer.
    pub txns_sent: u64,
    /// Transactions received from the peer.
    pub txns_received: u64,
    /// Received transactions that were new here (applied or parked).
    pub txns_applied: u64,
    /// Wall time of the round.
    #[serde(serialize_with = "as_millis")]
    pub duration: Duration,
    /// The connection's smoothed round-trip time at the end of the round.
    #[serde(serialize_with = "as_millis")]
    pub rtt: Duration,
    /// The replica the peer serves (from its hello), once it said.
    pub peer_replica: Option<ReplicaId>,
}

/// A snapshot of one connected peer ([`super::NetHandle::peers`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    /// The peer's node id.
    pub node_id: NodeId,
    /// Its name.
    pub node_name: Option<NodeName>,
    /// Its current address.
    pub addr: SocketAddr,
    /// The replica it serves, known after the first completed sync round.
    pub replica: Option<ReplicaId>,
    /// Who dialed.
    pub direction: Direction,
    /// When the connection was established.
    pub connected_since: SystemTime,
    /// Last time anything arrived from the peer (frames on any stream).
    pub last_seen: SystemTime,
    /// Smoothed round-trip time.
    #[serde(serialize_with = "as_millis")]
    pub rtt: Duration,
    /// UDP payload bytes sent on this connection.
    pub bytes_sent: u64,
    /// UDP payload bytes received on this connection.
    pub bytes_received: u64,
    /// Completed sync rounds (either side initiating).
    pub syncs: u64,
    /// Failed sync rounds and refused streams.
    pub errors: u64,
    /// Push frames sent.
    pub pushes_sent: u64,
    /// Of those, frames that merged several queued pushes into one.
    pub pushes_merged: u64,
    /// Push frames dropped because the peer's queue was full.
    pub pushes_dropped: u64,
    /// Push frames received.
    pub pushes_received: u64,
    /// Transactions in the push frames received (more than the frames when the peer merged).
    pub push_txns_received: u64,
    /// Push frames waiting in the peer's queue.
    pub queue_depth: usize,
}

/// What [`super::NetHandle::push`] did with one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PushReport {
    /// Peers whose queue accepted the batch.
    pub queued: Vec<NodeId>,
    /// Peers whose queue was full (the batch was dropped for them; anti-entropy heals it).
    pub dropped: Vec<NodeId>,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// Why a peer was refused during the handshake.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RefusalReason {
    /// The certificate chain failed: unknown issuer (another CA), expired, not yet valid, bad
    /// signature, wrong key usage, ...
    #[error("certificate rejected: {0:?}")]
    Certificate(CertificateError),
    /// The certificate carries no usable Meshlite identity.
    #[error("bad identity: {0}")]
    Identity(#[from] CertIdentityError),
    /// The peer belongs to another cluster.
    #[error("peer is in cluster {presented}, we are in {expected}")]
    WrongCluster {
        /// Our cluster.
        expected: ClusterId,
        /// The peer's.
        presented: ClusterId,
    },
    /// The peer's node id is on the deny list.
    #[error("node {0} is on the deny list")]
    Denied(NodeId),
    /// We dialed a specific node and another one answered.
    #[error("expected node {expected}, but {presented} answered")]
    UnexpectedNode {
        /// The node id we dialed.
        expected: NodeId,
        /// The node id presented.
        presented: NodeId,
    },
    /// The peer presented our own node id (we reached ourselves, or a copied bundle).
    #[error("peer presented our own node id {0}")]
    OwnNode(NodeId),
}
