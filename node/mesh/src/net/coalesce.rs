//! Outgoing coalescing: what waits in a peer's push queue, and how the writer turns whatever has
//! queued up into one stream write.
//!
//! The mesh queues a [`PushFrame`] for every peer a push goes to: transactions ([`PushFrame::Txns`],
//! encoded once and shared by every queue) or another frame of the push stream
//! ([`PushFrame::Other`]: a control message, an error answer). When the writer task finds several
//! frames waiting (the connection was slower than the pushes), [`coalesce`] merges runs of
//! consecutive `Txns` into one `Push` frame, at most [`MERGE_MAX_BYTES`] of transactions each, and
//! concatenates everything into one buffer: the peer reads one frame and applies its
//! transactions together ([`super::apply`]). Order is kept: an `Other` frame ends a run, so a
//! control message never overtakes the push before it. A lone frame is written as encoded.
//!
//! The wire format is unchanged: a `Push` frame always carried a list of transactions
//! (at most [`MAX_TXNS_PER_FRAME`]), so a peer of an older version reads merged frames as well.

use std::sync::Arc;

use meshlite_core::protocol::encode_frame;
use meshlite_core::protocol::{EncodeError, Frame, MAX_TXNS_PER_FRAME, TARGET_FRAME_BYTES};

/// Most bytes of transactions merged into one `Push` frame (far below the smallest allowed
/// `max_frame_bytes`, so a merged frame never exceeds what a peer accepts).
pub const MERGE_MAX_BYTES: usize = TARGET_FRAME_BYTES;

const _: () = assert!(MERGE_MAX_BYTES + 64 * 1024 <= super::config::MIN_MAX_FRAME_BYTES);

/// Transactions to push: their encoded `Push` frame and the transactions themselves (kept for
/// merging with the frames queued behind it).
#[derive(Debug)]
pub struct EncodedPush {
    frame: Vec<u8>,
    txns: Vec<Vec<u8>>,
    txn_bytes: usize,
}

impl EncodedPush {
    /// Encodes `txns` as one `Push` frame.
    pub fn new(txns: Vec<Vec<u8>>) -> Result<Self, EncodeError> {
        let txn_bytes = txns.iter().map(Vec::len).sum();
        let push = Frame::Push { txns };
        let frame = encode_frame(&push)?;
        let Frame::Push { txns } = push else {
            return Err(EncodeError::Invalid("not a push")); // Built as one just above.
        };
        Ok(Self {
            frame,
            txns,
            txn_bytes,
        })
    }

    /// The encoded frame.
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }
}

/// One entry of a peer's push queue; cheap to clone (shared by every peer it is queued for).
#[derive(Debug, Clone)]
pub enum PushFrame {
    /// Transactions to push.
    Txns(Arc<EncodedPush>),
    /// Any other frame for the push stream, as encoded.
    Other(Arc<Vec<u8>>),
}

impl PushFrame {
    /// Encodes `txns` as a push.
    pub fn txns(txns: Vec<Vec<u8>>) -> Result<Self, EncodeError> {
        EncodedPush::new(txns).map(|p| Self::Txns(Arc::new(p)))
    }

    /// An encoded frame.
    pub fn other(frame: Vec<u8>) -> Self {
        Self::Other(Arc::new(frame))
    }

    /// The encoded frame's length (what goes on the wire when sent alone).
    pub fn frame_len(&self) -> usize {
        match self {
            Self::Txns(p) => p.frame.len(),
            Self::Other(f) => f.len(),
        }
    }

    /// Bytes held while queued (counted against the queue's byte bound).
    pub fn queued_bytes(&self) -> usize {
        match self {
            Self::Txns(p) => p.frame.len() + p.txn_bytes,
            Self::Other(f) => f.len(),
        }
    }
}

/// What one stream write carries.
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// The frames, concatenated.
    pub bytes: Vec<u8>,
    /// How many frames.
    pub frames: u64,
    /// How many `Push` frames are merges of several queued pushes.
    pub merged: u64,
}

/// Turns queued frames, in order, into one write: runs of consecutive pushes become one `Push`
/// frame each (bounded by [`MERGE_MAX_BYTES`] and [`MAX_TXNS_PER_FRAME`]).
pub fn coalesce(queued: Vec<PushFrame>) -> WriteBatch {
    let mut out = WriteBatch::default();
    let mut run: Vec<Arc<EncodedPush>> = Vec::new();
    for frame in queued {
        match frame {
            PushFrame::Txns(push) => {
                let bytes: usize = run.iter().map(|p| p.txn_bytes).sum();
                let count: usize = run.iter().map(|p| p.txns.len()).sum();
                if bytes + push.txn_bytes > MERGE_MAX_BYTES
                    || count + push.txns.len() > MAX_TXNS_PER_FRAME
                {
                    flush(&mut run, &mut out);
                }
                run.push(push);
            }
            PushFrame::Other(frame) => {
                flush(&mut run, &mut out);
                out.bytes.extend_from_slice(&frame);
                out.frames += 1;
            }
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Writes `run` as one frame (as encoded when it is a single push).
fn flush(run: &mut Vec<Arc<EncodedPush>>, out: &mut WriteBatch) {
    match run.len() {
        0 => return,
        1 => out.bytes.extend_from_slice(&run[0].frame),
        _ => {
            let txns: Vec<Vec<u8>> = run.iter().flat_map(|p| p.txns.iter().cloned()).collect();
            match encode_frame(&Frame::Push { txns }) {
                Ok(frame) => {
                    out.bytes.extend_from_slice(&frame);
                    out.merged += 1;
                }
                Err(e) => {
                    // Every part encoded alone and the bounds keep the merge valid; should it
                    // still fail, the parts go out one by one.
                    tracing::warn!(error = %e, "cannot merge queued pushes; sending them apart");
                    for push in run.iter() {
                        out.bytes.extend_from_slice(&push.frame);
                        out.frames += 1;
                    }
                    run.clear();
                    return;
                }
            }
        }
    }
    out.frames += 1;
    run.clear();
}

#[cfg(test)]
mod tests {
    use meshlite_core::protocol::FrameDecoder;

    use super::*;

    fn push(txns: &[&[u8]]) -> PushFrame {
        PushFrame::txns(txns.iter().map(|t| t.to_vec()).collect()).expect("encode")
    }

    fn frames(bytes: &[u8]) -> Vec<Frame> {
        let mut decoder = FrameDecoder::new();
        assert_eq!(decoder.push(bytes), bytes.len());
        std::iter::from_fn(|| decoder.next_frame().expect("decode")).collect()
    }

    #[test]
    fn consecutive_pushes_merge_in_order_and_other_frames_split_runs() {
        let control = encode_frame(&Frame::Close).expect("encode");
        let queued = vec![
            push(&[b"a"]),
            push(&[b"b", b"c"]),
            PushFrame::other(control.clone()),
            push(&[b"d"]),
        ];
        let batch = coalesce(queued);
        assert_eq!((batch.frames, batch.merged), (3, 1));
        let got = frames(&batch.bytes);
        assert_eq!(
            got,
            vec![
                Frame::Push {
                    txns: vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
                },
                Frame::Close,
                Frame::Push {
                    txns: vec![b"d".to_vec()]
                },
            ]
        );
    }

    #[test]
    fn a_lone_push_is_written_as_encoded() {
        let one = push(&[b"x"]);
        let batch = coalesce(vec![one.clone()]);
        assert_eq!((batch.frames, batch.merged), (1, 0));
        let PushFrame::Txns(p) = one else {
            panic!("a push")
        };
        assert_eq!(batch.bytes, p.frame());
    }

    #[test]
    fn merges_stop_at_the_byte_bound() {
        let big = vec![7u8; MERGE_MAX_BYTES / 2 + 1];
        let batch = coalesce(vec![push(&[&big]), push(&[&big]), push(&[b"s"])]);
        // The second half does not fit beside the first; the small one joins the second.
        assert_eq!((batch.frames, batch.merged), (2, 1));
        let got = frames(&batch.bytes);
        assert!(matches!(&got[0], Frame::Push { txns } if txns.len() == 1));
        assert!(matches!(&got[1], Frame::Push { txns } if txns.len() == 2));
    }
}
