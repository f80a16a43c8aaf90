//! Codec properties: round trips, length prefixes, arbitrary chunking, garbage.

use proptest::prelude::*;

use crate::ids::{ReplicaId, TxnId};
use crate::protocol::frame::{DecodeError, ErrorCode, Frame, FrameDecoder, Hello, encode_frame};
use crate::protocol::limits::{LEN_PREFIX_BYTES, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use crate::version::Summary;

fn summary() -> impl Strategy<Value = Summary> {
    let origin = any::<[u8; 16]>().prop_map(ReplicaId);
    let seqs = prop::collection::vec(1u64..500, 0..30);
    prop::collection::vec((origin, seqs), 0..6).prop_map(|entries| {
        let mut s = Summary::new();
        for (origin, seqs) in entries {
            for seq in seqs {
                s.insert(TxnId { origin, seq });
            }
        }
        s
    })
}

fn hello() -> impl Strategy<Value = Hello> {
    let names = prop::collection::vec("[a-z_][a-z0-9_]{0,12}", 0..5);
    (
        "[a-z0-9-]{0,24}",
        any::<[u8; 16]>(),
        any::<u32>(),
        prop::option::of(names),
        summary(),
    )
        .prop_map(
            |(cluster, id, schema_version, collections, summary)| Hello {
                cluster,
                replica: ReplicaId(id),
                schema_version,
                collections,
                summary,
            },
        )
}

fn txns() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 1..64), 0..8)
}

pub(super) fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        hello().prop_map(Frame::Hello),
        txns().prop_map(|txns| Frame::Txns { txns }),
        any::<u64>().prop_map(|sent| Frame::Done { sent }),
        summary().prop_map(|summary| Frame::Ack { summary }),
        txns().prop_map(|txns| Frame::Push { txns }),
        (any::<u16>(), ".{0,40}").prop_map(|(code, message)| Frame::Error {
            code: ErrorCode::from(code),
            message
        }),
        Just(Frame::Close),
    ]
}

/// Feeds `bytes` to a decoder in chunks of the given sizes (cycled); returns the frames and the
/// bytes left buffered (an incomplete last frame).
fn decode_lenient(bytes: &[u8], chunks: &[usize]) -> Result<(Vec<Frame>, usize), DecodeError> {
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut rest = bytes;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let size = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        let mut chunk = &rest[..size];
        rest = &rest[size..];
        while !chunk.is_empty() {
            let taken = decoder.push(chunk);
            chunk = &chunk[taken..];
            while let Some(frame) = decoder.next_frame()? {
                frames.push(frame);
            }
        }
    }
    Ok((frames, decoder.buffered()))
}

/// [`decode_lenient`] for input made of complete frames: nothing may be left buffered.
fn decode_chunked(bytes: &[u8], chunks: &[usize]) -> Result<Vec<Frame>, DecodeError> {
    let (frames, left) = decode_lenient(bytes, chunks)?;
    assert_eq!(left, 0, "complete input leaves nothing buffered");
    Ok(frames)
}

proptest! {
    #[test]
    fn frame_round_trips_with_exact_length_prefix(frame in frame()) {
        let bytes = encode_frame(&frame).unwrap();
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        prop_assert_eq!(len, bytes.len() - LEN_PREFIX_BYTES);
        prop_assert_eq!(bytes[LEN_PREFIX_BYTES], PROTOCOL_VERSION);
        prop_assert_eq!(decode_chunked(&bytes, &[bytes.len()]).unwrap(), vec![frame]);
    }

    #[test]
    fn any_chunking_yields_the_same_frames(
        frames in prop::collection::vec(frame(), 1..6),
        chunks in prop::collection::vec(1usize..40, 1..10),
    ) {
        let bytes: Vec<u8> = frames.iter().flat_map(|f| encode_frame(f).unwrap()).collect();
        prop_assert_eq!(decode_chunked(&bytes, &chunks).unwrap(), frames);
    }

    #[test]
    fn a_strict_prefix_never_yields_a_frame(frame in frame(), cut in any::<prop::sample::Index>()) {
        let bytes = encode_frame(&frame).unwrap();
        let cut = cut.index(bytes.len());
        let mut decoder = FrameDecoder::new();
        decoder.push(&bytes[..cut]);
        prop_assert_eq!(decoder.next_frame(), Ok(None));
        prop_assert_eq!(decoder.buffered(), cut);
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512),
                            chunks in prop::collection::vec(1usize..64, 1..4)) {
        // Any outcome but a panic is fine; decoded frames must re-encode to equal frames.
        if let Ok((frames, _)) = decode_lenient(&bytes, &chunks) {
            for f in frames {
                let again = decode_chunked(&encode_frame(&f).unwrap(), &[usize::MAX]).unwrap();
                prop_assert_eq!(again, vec![f]);
            }
        }
    }

    #[test]
    fn flipped_bytes_never_panic(frame in frame(), at in any::<prop::sample::Index>(), x in 1u8..) {
        let mut bytes = encode_frame(&frame).unwrap();
        let i = at.index(bytes.len());
        bytes[i] ^= x;
        let _ = decode_lenient(&bytes, &[7]);
    }
}

#[test]
fn oversized_prefix_is_refused_before_the_payload_arrives() {
    let len = u32::try_from(MAX_FRAME_BYTES + 1).unwrap();
    let err = decode_chunked(&len.to_be_bytes(), &[4]).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Oversized {
            len: MAX_FRAME_BYTES + 1,
            max: MAX_FRAME_BYTES
        }
    );
    let err = decode_chunked(&u32::MAX.to_be_bytes(), &[1]).unwrap_err();
    assert!(matches!(err, DecodeError::Oversized { .. }));
}

#[test]
fn decoder_memory_is_bounded_by_one_frame() {
    let mut decoder = FrameDecoder::new();
    let big = vec![0u8; FrameDecoder::CAPACITY + 100];
    // A zero prefix is refused; what matters here is the push bound.
    assert_eq!(decoder.push(&big), FrameDecoder::CAPACITY);
    assert_eq!(decoder.push(&big), 0);
    assert_eq!(decoder.next_frame(), Err(DecodeError::Empty));
}

#[test]
fn largest_transaction_fits_in_one_frame() {
    let txn = vec![7u8; crate::change::MAX_TXN_BYTES];
    let frame = Frame::Txns { txns: vec![txn] };
    let bytes = encode_frame(&frame).unwrap();
    assert_eq!(decode_chunked(&bytes, &[65536]).unwrap(), vec![frame]);
}

#[test]
fn unsorted_or_overlapping_summaries_are_refused() {
    // Hand-encode an Ack whose summary has one origin with ranges (5,9),(1,2): unsorted.
    let mut payload = vec![PROTOCOL_VERSION, 3, 1];
    payload.extend([9u8; 16]);
    payload.extend([2, 5, 9, 1, 2]);
    let mut bytes = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    bytes.extend(&payload);
    assert!(matches!(
        decode_chunked(&bytes, &[100]),
        Err(DecodeError::Malformed(_))
    ));
    // The same with sorted ranges decodes.
    let last = bytes.len() - 4;
    bytes[last..].copy_from_slice(&[1, 2, 5, 9]);
    let frames = decode_chunked(&bytes, &[100]).unwrap();
    let Frame::Ack { summary } = &frames[0] else {
        panic!("expected Ack, got {frames:?}")
    };
    assert_eq!(summary.txn_count(), 7);
}

#[test]
fn claimed_counts_above_limits_are_refused_without_allocating() {
    // A Push frame claiming u32::MAX transactions in a handful of bytes.
    let payload = [PROTOCOL_VERSION, 4, 0xff, 0xff, 0xff, 0xff, 0x0f];
    let mut bytes = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    bytes.extend(payload);
    assert!(matches!(
        decode_chunked(&bytes, &[100]),
        Err(DecodeError::Malformed(_))
    ));
}
