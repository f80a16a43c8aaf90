//! Overlay-mode control messages on the wire: the peer type they name ([`OverlayPeer`]) and
//! their encoding as `Control` frames ([`meshlite_core::protocol::control`]).
//!
//! They travel on the push stream, in order with pushes (an `IHave` never overtakes the push it
//! announces). The receiving side is in [`super::push::PushReader`]: a decoded message is
//! published as [`super::NetEvent::Control`]; a `Control` frame whose body does not decode, or
//! whose revision this build does not speak, is answered with an `Error` frame on our own push
//! stream and skipped, so the stream and the connection carry on. An `Error` frame received on
//! a push stream is published as [`super::NetEvent::PeerError`].

use std::cmp::Ordering;
use std::net::SocketAddr;

use meshlite_core::epidemic::EpidemicMessage;
use meshlite_core::protocol::control::control_frame;
use meshlite_core::protocol::{EncodeError, encode_frame};
use serde::{Deserialize, Serialize};

use crate::fleet::NodeId;

/// A peer as the overlay knows it: its node id, and the address its QUIC endpoint answers on
/// (how a peer learned from a shuffle is dialed). Compared by node id only: the address is a
/// hint, and one node seen at two addresses is one peer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct OverlayPeer {
    /// The node id (checked by TLS when dialed).
    pub id: NodeId,
    /// Where it was last reached.
    pub addr: SocketAddr,
}

impl PartialEq for OverlayPeer {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for OverlayPeer {}

impl PartialOrd for OverlayPeer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OverlayPeer {
    fn cmp(&self, other: &Self) -> Ordering {
        self.id.cmp(&other.id)
    }
}

/// A control message between daemons.
pub type ControlMessage = EpidemicMessage<OverlayPeer>;

/// Encodes `message` as one framed `Control` frame.
pub fn encode_control(message: &ControlMessage) -> Result<Vec<u8>, EncodeError> {
    encode_frame(&control_frame(message)?)
}
