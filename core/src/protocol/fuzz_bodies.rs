//! Bodies of the fuzz targets in `fuzz/fuzz_targets/`, one function per target.
//!
//! They live here, behind the `testkit` feature, so that the fuzz crate stays a thin shell and a
//! regular test in this crate runs every body on thousands of random and mutated inputs: the
//! bodies keep compiling on stable and stay panic-free between fuzzing campaigns. A panic in a
//! body is a bug: either decoding panicked or a decoded value broke a round-trip invariant.

use std::io::Cursor;
use std::time::{Duration, Instant};

use super::bundle::BundleReader;
use super::frame::{DecodeError, Frame, FrameDecoder, encode_frame};
use super::session::{Role, Session, SessionConfig};
use super::testkit::{MemReplica, drain, serve};
use crate::change::Txn;
use crate::ids::ReplicaId;

/// Target `frame_decode`: the first byte picks a chunk size, the rest is a byte stream fed to a
/// [`FrameDecoder`] in chunks. Every decoded frame must re-encode and decode to itself.
pub fn frame_decode(data: &[u8]) {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let mut decoder = FrameDecoder::new();
    for mut piece in stream.chunks(usize::from(chunk).max(1)) {
        while !piece.is_empty() {
            let taken = decoder.push(piece);
            piece = &piece[taken..];
            if !drain_decoder(&mut decoder) {
                return;
            }
        }
    }
}

/// Decodes all complete frames; false once the stream cannot continue.
fn drain_decoder(decoder: &mut FrameDecoder) -> bool {
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => assert_round_trip(&frame),
            Ok(None) => return true,
            // A bad length prefix cannot be skipped: the stream is lost.
            Err(DecodeError::Oversized { .. } | DecodeError::Empty) => return false,
            // The bad frame was consumed; the next one may be fine.
            Err(_) => {}
        }
    }
}

fn assert_round_trip(frame: &Frame) {
    let bytes = encode_frame(frame).expect("a decoded frame re-encodes");
    let mut decoder = FrameDecoder::new();
    assert_eq!(decoder.push(&bytes), bytes.len());
    assert_eq!(decoder.next_frame(), Ok(Some(frame.clone())));
}

/// Target `txn_decode`: [`Txn::decode`] on arbitrary bytes; a decoded transaction must
/// re-encode and decode to itself.
pub fn txn_decode(data: &[u8]) {
    if let Ok(txn) = Txn::decode(data) {
        assert_eq!(Txn::decode(&txn.encode()).ok(), Some(txn));
    }
}

/// Target `bundle_read`: [`BundleReader::verify`] and streaming iteration on arbitrary bytes.
pub fn bundle_read(data: &[u8]) {
    if let Ok(reader) = BundleReader::new(Cursor::new(data)) {
        let verified = reader.verify();
        if let Ok(info) = &verified {
            assert_eq!(
                info.bytes,
                data.len() as u64,
                "a verified bundle is read to its end"
            );
        }
        // Streaming must agree with verify on whether the frames are sound.
        let mut stream_ok = true;
        if let Ok(reader) = BundleReader::new(Cursor::new(data)) {
            stream_ok = reader.into_iter().all(|batch| batch.is_ok());
        }
        assert!(verified.is_err() || stream_ok);
    }
}

/// Target `session`: arbitrary bytes as a peer's stream into a [`Session`] whose host serves it
/// from a small in-memory replica. The first byte picks the chunk size (high bits) and whether
/// a valid peer `Hello` goes first (low bit), so the fuzzer reaches the post-handshake states.
pub fn session(data: &[u8]) {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let now = Instant::now();
    let mut replica = MemReplica::new(ReplicaId([1; 16]));
    replica.write_rows(3, 16);
    let config = SessionConfig {
        max_pending_events: 8,
        ..SessionConfig::default()
    };
    let hello = replica.hello("fuzz");
    let mut s = Session::new(config, Role::Responder, hello, now).expect("valid local hello");
    if mode & 1 == 1 {
        let peer = MemReplica::new(ReplicaId([2; 16])).hello("fuzz");
        let bytes = encode_frame(&Frame::Hello(peer)).expect("valid peer hello");
        s.handle_bytes(now, &bytes)
            .expect("a valid Hello is accepted");
    }
    for (i, piece) in stream.chunks(usize::from(mode >> 1).max(1)).enumerate() {
        let t = now + Duration::from_millis(100 * i as u64);
        let _ = s.handle_bytes(t, piece);
        serve(&mut replica, &mut s, true);
        drain(&mut s);
        s.handle_timeout(t);
        assert!(s.buffered_input_bytes() <= FrameDecoder::CAPACITY);
    }
}
