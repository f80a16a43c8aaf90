//! The body of a [`Frame::Control`]: one [`EpidemicMessage`] (overlay membership or broadcast
//! tree), encoded with postcard and tagged with its own revision ([`CONTROL_VERSION`]).
//!
//! Control messages have a revision number of their own, inside the frame, so that the sync
//! protocol's version ([`super::PROTOCOL_VERSION`]) need not change when they do: a receiver
//! that does not speak a control revision refuses that one message with
//! [`ControlError::UnsupportedVersion`] and keeps the connection. A build that predates the
//! `Control` variant refuses the whole frame as malformed (its push reader resets the stream,
//! which the sender sees as a stream error; the connection and its syncs carry on).
//!
//! Decoding is bounded: the body is at most [`MAX_CONTROL_BYTES`] (checked with the frame), and
//! a decoded message naming more than [`MAX_CONTROL_PEERS`] peers or [`MAX_CONTROL_IDS`]
//! transaction ids is refused with [`ControlError::Invalid`]. The peer type `P` is the host's
//! (the daemon uses node id plus address); it only has to be serde.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::frame::{EncodeError, Frame};
use super::limits::{MAX_CONTROL_BYTES, MAX_CONTROL_IDS, MAX_CONTROL_PEERS};
use crate::epidemic::EpidemicMessage;
use crate::overlay::OverlayMessage;
use crate::plumtree::TreeMessage;

/// The control revision this build speaks and sends.
pub const CONTROL_VERSION: u8 = 1;

/// Why a control message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The frame carries a control revision this build does not speak.
    #[error("unsupported control revision {0} (this build speaks revision {CONTROL_VERSION})")]
    UnsupportedVersion(u8),
    /// The body is not a valid postcard encoding of a control message.
    #[error("malformed control message: {0}")]
    Malformed(#[from] postcard::Error),
    /// The message decoded but breaks a bound (trailing bytes, too many peers or ids).
    #[error("invalid control message: {0}")]
    Invalid(&'static str),
}

/// Encodes `message` as a `Control` frame of the current revision.
pub fn control_frame<P: Serialize>(message: &EpidemicMessage<P>) -> Result<Frame, EncodeError> {
    check(message).map_err(EncodeError::Invalid)?;
    let body = postcard::to_stdvec(message)?;
    if body.len() > MAX_CONTROL_BYTES {
        return Err(EncodeError::Invalid("control message too long"));
    }
    Ok(Frame::Control {
        version: CONTROL_VERSION,
        body,
    })
}

/// Decodes the body of a `Control` frame.
pub fn decode_control<P: DeserializeOwned>(
    version: u8,
    body: &[u8],
) -> Result<EpidemicMessage<P>, ControlError> {
    if version != CONTROL_VERSION {
        return Err(ControlError::UnsupportedVersion(version));
    }
    let (message, rest) = postcard::take_from_bytes::<EpidemicMessage<P>>(body)?;
    if !rest.is_empty() {
        return Err(ControlError::Invalid(
            "trailing bytes after control message",
        ));
    }
    check(&message).map_err(ControlError::Invalid)?;
    Ok(message)
}

/// The bounds a decoded message must keep.
fn check<P>(message: &EpidemicMessage<P>) -> Result<(), &'static str> {
    match message {
        EpidemicMessage::Overlay(
            OverlayMessage::Shuffle { peers, .. } | OverlayMessage::ShuffleReply { peers },
        ) if peers.len() > MAX_CONTROL_PEERS => Err("too many peers in a shuffle"),
        EpidemicMessage::Tree(TreeMessage::IHave(ids) | TreeMessage::Graft(ids))
            if ids.len() > MAX_CONTROL_IDS =>
        {
            Err("too many transaction ids")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ReplicaId, TxnId};
    use crate::overlay::Priority;
    use crate::protocol::{FrameDecoder, encode_frame};

    fn round_trip(message: EpidemicMessage<u32>) -> Result<EpidemicMessage<u32>, ControlError> {
        let bytes = encode_frame(&control_frame(&message).unwrap()).unwrap();
        let mut decoder = FrameDecoder::new();
        decoder.push(&bytes);
        let Some(Frame::Control { version, body }) = decoder.next_frame().unwrap() else {
            panic!("not a control frame");
        };
        decode_control(version, &body)
    }

    #[test]
    fn every_message_kind_round_trips() {
        let id = TxnId {
            origin: ReplicaId([3; 16]),
            seq: 7,
        };
        let messages = [
            EpidemicMessage::Overlay(OverlayMessage::Join),
            EpidemicMessage::Overlay(OverlayMessage::ForwardJoin { joiner: 4, ttl: 6 }),
            EpidemicMessage::Overlay(OverlayMessage::Neighbor {
                priority: Priority::High,
            }),
            EpidemicMessage::Overlay(OverlayMessage::Shuffle {
                origin: 1,
                peers: vec![2, 3],
                ttl: 2,
            }),
            EpidemicMessage::Tree(TreeMessage::IHave(vec![id])),
            EpidemicMessage::Tree(TreeMessage::Prune),
        ];
        for m in messages {
            assert_eq!(round_trip(m.clone()), Ok(m));
        }
    }

    #[test]
    fn unknown_revision_and_garbage_are_named_errors() {
        assert_eq!(
            decode_control::<u32>(9, &[0]),
            Err(ControlError::UnsupportedVersion(9))
        );
        assert!(matches!(
            decode_control::<u32>(CONTROL_VERSION, &[0xff, 0xff]),
            Err(ControlError::Malformed(_))
        ));
        let mut body =
            postcard::to_stdvec(&EpidemicMessage::<u32>::Tree(TreeMessage::Prune)).unwrap();
        body.push(0);
        assert_eq!(
            decode_control::<u32>(CONTROL_VERSION, &body),
            Err(ControlError::Invalid(
                "trailing bytes after control message"
            ))
        );
    }

    #[test]
    fn oversized_samples_are_refused_both_ways() {
        let big = EpidemicMessage::Overlay(OverlayMessage::ShuffleReply {
            peers: (0..=MAX_CONTROL_PEERS as u32).collect(),
        });
        assert!(matches!(control_frame(&big), Err(EncodeError::Invalid(_))));
        let body = postcard::to_stdvec(&big).unwrap();
        assert_eq!(
            decode_control::<u32>(CONTROL_VERSION, &body),
            Err(ControlError::Invalid("too many peers in a shuffle"))
        );
    }
}
