//! Bundle files: round trip, truncation at every byte, corruption at every byte, garbage.

use std::io::Cursor;

use crate::ids::ReplicaId;
use crate::protocol::bundle::{
    BUNDLE_FORMAT_VERSION, BUNDLE_MAGIC, BundleHeader, BundleReadError, BundleReader,
    BundleWriteError, BundleWriter,
};
use crate::protocol::testkit::MemReplica;

fn replica(txns: usize, row_bytes: usize) -> MemReplica {
    let mut r = MemReplica::new(ReplicaId([5; 16]));
    r.write_rows(txns, row_bytes);
    r
}

fn header(r: &MemReplica) -> BundleHeader {
    BundleHeader {
        cluster: "c".into(),
        exporter: r.id,
        schema_version: 3,
        summary: r.summary().clone(),
        cut_for: Some(MemReplica::new(ReplicaId([6; 16])).summary().clone()),
    }
}

/// Writes every transaction of `r`, in calls of `per_call`.
fn bundle(r: &MemReplica, per_call: usize) -> Vec<u8> {
    let mut w = BundleWriter::new(Vec::new(), &header(r)).unwrap();
    let all: Vec<Vec<u8>> = r.txns().values().cloned().collect();
    for chunk in all.chunks(per_call) {
        w.write_txns(chunk).unwrap();
    }
    assert_eq!(w.txn_count(), all.len() as u64);
    w.finish().unwrap()
}

fn verify(bytes: &[u8]) -> Result<u64, BundleReadError> {
    BundleReader::new(Cursor::new(bytes))?
        .verify()
        .map(|info| info.txn_count)
}

#[test]
fn round_trip_streams_every_txn_in_order() {
    let r = replica(3000, 200);
    let bytes = bundle(&r, 7);
    let mut reader = BundleReader::new(Cursor::new(&bytes)).unwrap();
    assert_eq!(reader.header(), &header(&r));
    let mut got = Vec::new();
    for batch in reader.by_ref() {
        got.extend(batch.unwrap());
    }
    assert_eq!(got, r.txns().values().cloned().collect::<Vec<_>>());
    assert_eq!(reader.bytes_read(), bytes.len() as u64);
    assert_eq!(reader.txns_read(), 3000);

    let mut progress = Vec::new();
    let info = BundleReader::new(Cursor::new(&bytes))
        .unwrap()
        .verify_with_progress(|n| progress.push(n))
        .unwrap();
    assert_eq!((info.txn_count, info.bytes), (3000, bytes.len() as u64));
    assert!(progress.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(progress.last(), Some(&(bytes.len() as u64)));
    assert!(progress.len() > 2, "several frames: {progress:?}");
}

#[test]
fn empty_bundle_is_valid() {
    let r = MemReplica::new(ReplicaId([5; 16]));
    assert_eq!(verify(&bundle(&r, 1)).unwrap(), 0);
}

#[test]
fn every_truncation_is_refused_as_truncated() {
    let bytes = bundle(&replica(40, 30), 3);
    assert!(matches!(verify(&[]), Err(BundleReadError::NotABundle)));
    for cut in 1..bytes.len() {
        match verify(&bytes[..cut]) {
            Err(BundleReadError::Truncated { offset }) => assert!(offset <= cut as u64),
            other => panic!("cut at {cut} of {}: {other:?}", bytes.len()),
        }
    }
    assert_eq!(verify(&bytes).unwrap(), 40);
}

#[test]
fn every_flipped_byte_is_refused() {
    let bytes = bundle(&replica(20, 30), 4);
    for i in 0..bytes.len() {
        for flip in [0x01, 0x80] {
            let mut bad = bytes.clone();
            bad[i] ^= flip;
            assert!(verify(&bad).is_err(), "flip {flip:#x} at byte {i} accepted");
        }
    }
}

#[test]
fn a_corrupt_txn_payload_is_a_checksum_mismatch() {
    let bytes = bundle(&replica(20, 100), 20);
    let mut bad = bytes.clone();
    // Inside the padding of the last row, before the trailer: still decodes, wrong checksum.
    let at = bad.len() - 40;
    bad[at] = b'y';
    assert!(matches!(
        verify(&bad),
        Err(BundleReadError::ChecksumMismatch { .. })
    ));
}

#[test]
fn garbage_and_foreign_files_are_not_bundles() {
    assert!(matches!(
        verify(b"SQLite format 3\0 and more"),
        Err(BundleReadError::NotABundle)
    ));
    assert!(matches!(
        verify(&[0xff; 100]),
        Err(BundleReadError::NotABundle)
    ));
    let mut future = BUNDLE_MAGIC.to_vec();
    future.push(BUNDLE_FORMAT_VERSION + 1);
    assert!(matches!(
        verify(&future),
        Err(BundleReadError::UnsupportedVersion(2))
    ));
}

#[test]
fn oversized_frame_and_trailing_data_are_refused() {
    let mut bytes = BUNDLE_MAGIC.to_vec();
    bytes.push(BUNDLE_FORMAT_VERSION);
    bytes.extend([0xff; 4]);
    assert!(matches!(
        verify(&bytes),
        Err(BundleReadError::Oversized { offset: 17, .. })
    ));

    let mut bytes = bundle(&replica(3, 10), 3);
    bytes.push(0);
    let err = verify(&bytes).unwrap_err();
    assert!(err.to_string().contains("data after the trailer"), "{err}");
}

#[test]
fn undecodable_txn_fails_verify_but_not_streaming() {
    let r = replica(1, 10);
    let mut w = BundleWriter::new(Vec::new(), &header(&r)).unwrap();
    w.write_txns(&[vec![0xee; 40]]).unwrap();
    let bytes = w.finish().unwrap();
    let err = verify(&bytes).unwrap_err();
    assert!(matches!(err, BundleReadError::Malformed { .. }), "{err}");
    // Streaming hands out the bytes (checksum intact); the importer's verify pass refuses them.
    let batches: Vec<_> = BundleReader::new(Cursor::new(&bytes)).unwrap().collect();
    assert_eq!(batches.len(), 1);
}

#[test]
fn writer_refuses_invalid_txns() {
    let r = replica(1, 10);
    let mut w = BundleWriter::new(Vec::new(), &header(&r)).unwrap();
    let err = w.write_txns(&[vec![1], vec![]]).unwrap_err();
    assert!(matches!(
        err,
        BundleWriteError::InvalidTxn { index: 1, len: 0 }
    ));
    assert_eq!(w.txn_count(), 0);
}
