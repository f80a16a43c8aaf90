//! Frames: the messages of the sync protocol and their framing on a byte stream.
//!
//! On the wire every frame is a 4-byte big-endian length `N` followed by `N` bytes of payload:
//! one byte of protocol version ([`PROTOCOL_VERSION`]) and the postcard encoding of a [`Frame`].
//! The same framing carries bundle files ([`super::bundle`]) with their own message type.
//!
//! [`encode_frame`] produces one framed message; [`FrameDecoder`] accumulates bytes from a stream
//! in whatever chunks they arrive and yields complete frames. Decoding never panics and never
//! allocates in proportion to a claimed size: a length prefix above [`MAX_FRAME_BYTES`] is
//! refused as soon as its four bytes are seen, and the collections inside a frame are decoded
//! with bounded visitors (private module `wire`).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::limits::{
    LEN_PREFIX_BYTES, MAX_CLUSTER_ID_BYTES, MAX_CONTROL_BYTES, MAX_ERROR_MESSAGE_BYTES,
    MAX_FILTER_COLLECTIONS, MAX_FRAME_BYTES, MAX_SUMMARY_ORIGINS, MAX_SUMMARY_RANGES,
    MAX_TXNS_PER_FRAME, PROTOCOL_VERSION, TARGET_FRAME_BYTES,
};
use super::wire;
use crate::change::MAX_TXN_BYTES;
use crate::ids::ReplicaId;
use crate::schema::validate_name;
use crate::version::Summary;

/// The first frame each side sends: who it is and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The cluster id; peers of different clusters refuse each other.
    pub cluster: String,
    /// The sender's replica id.
    pub replica: ReplicaId,
    /// The schema version the sender runs.
    pub schema_version: u32,
    /// Partial replication filter: the collections the sender wants; `None` means all. The
    /// session passes it to the host, which decides what to send.
    #[serde(deserialize_with = "wire::opt_names")]
    pub collections: Option<Vec<String>>,
    /// Everything the sender holds.
    #[serde(deserialize_with = "wire::summary")]
    pub summary: Summary,
}

/// Why a peer ended a session, carried in an [`Frame::Error`].
///
/// Encoded as a `u16` so a peer can receive codes it does not know yet ([`ErrorCode::Other`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "u16", into = "u16")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The peers belong to different clusters.
    ClusterMismatch,
    /// A frame carried a protocol version the receiver does not speak.
    UnsupportedVersion,
    /// A frame was malformed or not expected in the current state.
    Protocol,
    /// A limit was exceeded (frame size, queue length).
    Limit,
    /// The peer waited too long.
    Timeout,
    /// Both ends have the same replica id (a copied data directory, or a self-connection).
    SameReplica,
    /// The host failed (for example its store could not load transactions).
    Internal,
    /// A code this build does not know.
    Other(u16),
}

impl From<u16> for ErrorCode {
    fn from(v: u16) -> Self {
        match v {
            1 => Self::ClusterMismatch,
            2 => Self::UnsupportedVersion,
            3 => Self::Protocol,
            4 => Self::Limit,
            5 => Self::Timeout,
            6 => Self::SameReplica,
            7 => Self::Internal,
            other => Self::Other(other),
        }
    }
}

impl From<ErrorCode> for u16 {
    fn from(c: ErrorCode) -> u16 {
        match c {
            ErrorCode::ClusterMismatch => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::Protocol => 3,
            ErrorCode::Limit => 4,
            ErrorCode::Timeout => 5,
            ErrorCode::SameReplica => 6,
            ErrorCode::Internal => 7,
            ErrorCode::Other(v) => v,
        }
    }
}

/// One protocol message.
///
/// A sync session is `Hello` both ways, then from each side the `Txns` the other lacks and one
/// `Done`. `Push`, `Ack` and `Close` may follow for as long as the connection lives. Transactions
/// travel as their encoded bytes, passed through unchanged (relays never re-encode).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// Identity and summary; the first frame in each direction.
    Hello(Hello),
    /// Encoded [`crate::Txn`]s the receiver lacked, in answer to its `Hello`.
    Txns {
        /// Encoded transactions.
        #[serde(deserialize_with = "wire::txn_list")]
        txns: Vec<Vec<u8>>,
    },
    /// The sender has sent everything it could of what the receiver lacked.
    Done {
        /// How many transactions the sender put in `Txns` frames.
        sent: u64,
    },
    /// What the sender now holds (feeds garbage-collection horizons and lag metrics).
    Ack {
        /// The sender's summary.
        #[serde(deserialize_with = "wire::summary")]
        summary: Summary,
    },
    /// New transactions sent unsolicited (push on write, relay).
    Push {
        /// Encoded transactions.
        #[serde(deserialize_with = "wire::txn_list")]
        txns: Vec<Vec<u8>>,
    },
    /// The sender ends the session because of an error.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable reason.
        message: String,
    },
    /// The sender ends the session normally.
    Close,
    /// A dissemination control message of overlay mode ([`crate::epidemic`]: membership and
    /// broadcast-tree messages), sent on the push stream. `version` is the control revision
    /// ([`super::control::CONTROL_VERSION`]) and `body` the postcard encoding of the message
    /// ([`super::control`]). Builds that predate this variant refuse the frame as malformed;
    /// a build that does not speak `version` answers with an `Error` frame.
    Control {
        /// Control revision of `body`.
        version: u8,
        /// The encoded message, at most [`MAX_CONTROL_BYTES`].
        body: Vec<u8>,
    },
}

impl Frame {
    /// The variant name, for logs and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "Hello",
            Frame::Txns { .. } => "Txns",
            Frame::Done { .. } => "Done",
            Frame::Ack { .. } => "Ack",
            Frame::Push { .. } => "Push",
            Frame::Error { .. } => "Error",
            Frame::Close => "Close",
            Frame::Control { .. } => "Control",
        }
    }

    /// Checks the limits not already enforced while decoding.
    fn validate(&self) -> Result<(), &'static str> {
        match self {
            Frame::Hello(h) => validate_hello(h),
            Frame::Txns { txns } | Frame::Push { txns } => check_txns(txns),
            Frame::Ack { summary } => check_summary(summary),
            Frame::Error { message, .. } if message.len() > MAX_ERROR_MESSAGE_BYTES => {
                Err("error message too long")
            }
            Frame::Control { body, .. } if body.len() > MAX_CONTROL_BYTES => {
                Err("control message too long")
            }
            Frame::Done { .. } | Frame::Error { .. } | Frame::Close | Frame::Control { .. } => {
                Ok(())
            }
        }
    }
}

fn validate_hello(h: &Hello) -> Result<(), &'static str> {
    if h.cluster.len() > MAX_CLUSTER_ID_BYTES {
        return Err("cluster id too long");
    }
    if let Some(names) = &h.collections {
        if names.len() > MAX_FILTER_COLLECTIONS {
            return Err("too many collections in filter");
        }
        if names
            .iter()
            .any(|n| validate_name("collection", n).is_err())
        {
            return Err("invalid collection name in filter");
        }
    }
    check_summary(&h.summary)
}

/// Checks a summary against [`MAX_SUMMARY_ORIGINS`] and [`MAX_SUMMARY_RANGES`].
pub(crate) fn check_summary(summary: &Summary) -> Result<(), &'static str> {
    if summary.origin_count() > MAX_SUMMARY_ORIGINS {
        return Err("too many origins in summary");
    }
    let ranges: usize = summary.iter().map(|(_, s)| s.ranges().len()).sum();
    if ranges > MAX_SUMMARY_RANGES {
        return Err("too many ranges in summary");
    }
    Ok(())
}

/// Checks a transaction list: count, and each entry non-empty and within [`MAX_TXN_BYTES`].
pub(crate) fn check_txns(txns: &[Vec<u8>]) -> Result<(), &'static str> {
    if txns.len() > MAX_TXNS_PER_FRAME {
        return Err("too many transactions in one frame");
    }
    if let Some(bad) = txns
        .iter()
        .find(|t| t.is_empty() || t.len() > MAX_TXN_BYTES)
    {
        return Err(if bad.is_empty() {
            "empty transaction"
        } else {
            "transaction too large"
        });
    }
    Ok(())
}

/// Error decoding a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix exceeds the limit; refused before reading the payload.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// The claimed payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A length prefix of zero: every payload has at least its version byte.
    #[error("empty frame")]
    Empty,
    /// The payload's version byte names a protocol this build does not speak.
    #[error("unsupported protocol version {0} (this build speaks version {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// The payload is not a valid postcard encoding of a frame.
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    /// The payload decoded but breaks a rule (trailing bytes, bad names, empty transactions).
    #[error("invalid frame: {0}")]
    Invalid(&'static str),
}

/// Error encoding a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded payload would exceed [`MAX_FRAME_BYTES`].
    #[error("frame of {len} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes")]
    TooLarge {
        /// The encoded payload length.
        len: usize,
    },
    /// The frame breaks a limit its receiver would refuse it for.
    #[error("invalid frame: {0}")]
    Invalid(&'static str),
    /// postcard failed (cannot happen for these types; kept rather than panicking).
    #[error("serializing frame: {0}")]
    Serialize(#[from] postcard::Error),
}

/// Encodes one frame with its length prefix and version byte, ready to write to a stream.
pub fn encode_frame(frame: &Frame) -> Result<Vec<u8>, EncodeError> {
    frame.validate().map_err(EncodeError::Invalid)?;
    encode_message(frame)
}

/// Frames any message: length prefix, version byte, postcard body.
pub(crate) fn encode_message<T: Serialize>(msg: &T) -> Result<Vec<u8>, EncodeError> {
    let mut head = vec![0u8; LEN_PREFIX_BYTES + 1];
    head[LEN_PREFIX_BYTES] = PROTOCOL_VERSION;
    let mut out = postcard::to_extend(msg, head)?;
    let len = out.len() - LEN_PREFIX_BYTES;
    let prefix = u32::try_from(len)
        .ok()
        .filter(|_| len <= MAX_FRAME_BYTES)
        .ok_or(EncodeError::TooLarge { len })?;
    out[..LEN_PREFIX_BYTES].copy_from_slice(&prefix.to_be_bytes());
    Ok(out)
}

/// Reads a length prefix and checks it against the limit.
pub(crate) fn check_len(prefix: [u8; LEN_PREFIX_BYTES]) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(prefix) as usize;
    match len {
        0 => Err(DecodeError::Empty),
        n if n > MAX_FRAME_BYTES => Err(DecodeError::Oversized {
            len: n,
            max: MAX_FRAME_BYTES,
        }),
        n => Ok(n),
    }
}

/// Decodes a payload (version byte and postcard body) into any message type.
pub(crate) fn decode_message<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    let (&version, body) = payload.split_first().ok_or(DecodeError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let (msg, rest) = postcard::take_from_bytes::<T>(body)?;
    if !rest.is_empty() {
        return Err(DecodeError::Invalid("trailing bytes after frame"));
    }
    Ok(msg)
}

fn decode_frame_payload(payload: &[u8]) -> Result<Frame, DecodeError> {
    let frame: Frame = decode_message(payload)?;
    frame.validate().map_err(DecodeError::Invalid)?;
    Ok(frame)
}

/// Accumulates bytes from a stream and yields complete frames.
///
/// Memory is bounded: [`FrameDecoder::push`] accepts at most [`FrameDecoder::CAPACITY`] buffered
/// bytes (one maximal frame), so a caller loops `push` / [`FrameDecoder::next_frame`] until its
/// input is consumed. A full buffer always holds a complete frame, so the loop always progresses.
///
/// After [`DecodeError::Oversized`] or [`DecodeError::Empty`] the stream cannot be re-synchronized
/// and `next_frame` keeps returning that error. Other errors consume the bad frame; the next
/// frame can still be decoded.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    pos: usize,
}

impl FrameDecoder {
    /// Most bytes the decoder buffers: one length prefix plus one maximal payload.
    pub const CAPACITY: usize = LEN_PREFIX_BYTES + MAX_FRAME_BYTES;

    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Buffers as much of `input` as fits and returns how many bytes were taken.
    pub fn push(&mut self, input: &[u8]) -> usize {
        self.compact();
        let n = input.len().min(Self::CAPACITY - self.buf.len());
        self.buf.extend_from_slice(&input[..n]);
        n
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        let avail = &self.buf[self.pos..];
        let Some(prefix) = avail.first_chunk::<LEN_PREFIX_BYTES>() else {
            return Ok(None);
        };
        let len = check_len(*prefix)?;
        if avail.len() < LEN_PREFIX_BYTES + len {
            return Ok(None);
        }
        let start = self.pos + LEN_PREFIX_BYTES;
        // Consume before decoding: a bad payload must not wedge the stream.
        self.pos = start + len;
        decode_frame_payload(&self.buf[start..self.pos]).map(Some)
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Drops consumed bytes; releases a large buffer once it is empty so an idle connection
    /// does not keep a maximal frame's worth of memory.
    fn compact(&mut self) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            if self.buf.capacity() > TARGET_FRAME_BYTES {
                self.buf = Vec::new();
            }
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
        }
        self.pos = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_through_u16() {
        for v in 0..20u16 {
            assert_eq!(u16::from(ErrorCode::from(v)), v);
        }
    }

    #[test]
    fn oversized_prefix_is_refused_after_four_bytes() {
        let mut d = FrameDecoder::new();
        let prefix = u32::try_from(MAX_FRAME_BYTES + 1).unwrap().to_be_bytes();
        assert_eq!(d.push(&prefix), 4);
        assert!(matches!(d.next_frame(), Err(DecodeError::Oversized { .. })));
        // The stream stays refused.
        assert!(matches!(d.next_frame(), Err(DecodeError::Oversized { .. })));
        assert!(matches!(
            FrameDecoder::new().push_then_next(&[0, 0, 0, 0]),
            Err(DecodeError::Empty)
        ));
    }

    #[test]
    fn unknown_version_is_named() {
        let mut bytes = encode_frame(&Frame::Close).unwrap();
        bytes[LEN_PREFIX_BYTES] = 9;
        let err = FrameDecoder::new().push_then_next(&bytes).unwrap_err();
        assert_eq!(err, DecodeError::UnsupportedVersion(9));
        assert!(err.to_string().contains("version 9"));
    }

    #[test]
    fn bad_payload_does_not_wedge_the_stream() {
        let mut bytes = vec![0, 0, 0, 2, PROTOCOL_VERSION, 200];
        bytes.extend(encode_frame(&Frame::Done { sent: 3 }).unwrap());
        let mut d = FrameDecoder::new();
        d.push(&bytes);
        assert!(matches!(d.next_frame(), Err(DecodeError::Malformed(_))));
        assert_eq!(d.next_frame().unwrap(), Some(Frame::Done { sent: 3 }));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn trailing_bytes_and_empty_txns_are_invalid() {
        let mut bytes = encode_frame(&Frame::Close).unwrap();
        bytes.push(0);
        bytes[3] += 1;
        assert_eq!(
            FrameDecoder::new().push_then_next(&bytes),
            Err(DecodeError::Invalid("trailing bytes after frame"))
        );
        let bad = Frame::Push { txns: vec![vec![]] };
        assert!(matches!(encode_frame(&bad), Err(EncodeError::Invalid(_))));
        let raw = encode_message(&bad).unwrap();
        assert_eq!(
            FrameDecoder::new().push_then_next(&raw),
            Err(DecodeError::Invalid("empty transaction"))
        );
    }

    impl FrameDecoder {
        fn push_then_next(&mut self, bytes: &[u8]) -> Result<Option<Frame>, DecodeError> {
            assert_eq!(self.push(bytes), bytes.len());
            self.next_frame()
        }
    }
}
