//! Runs every fuzz target body on random and mutated inputs (see `fuzz_bodies`).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::ids::ReplicaId;
use crate::protocol::bundle::{BundleHeader, BundleWriter};
use crate::protocol::frame::{Frame, encode_frame};
use crate::protocol::fuzz_bodies;
use crate::protocol::testkit::MemReplica;

const RUNS: usize = 3000;

fn sample_replica() -> MemReplica {
    let mut r = MemReplica::new(ReplicaId([9; 16]));
    r.write_rows(6, 24);
    r
}

fn frame_stream() -> Vec<u8> {
    let r = sample_replica();
    let frames = [
        Frame::Hello(r.hello("fuzz")),
        Frame::Txns {
            txns: r.txns().values().cloned().collect(),
        },
        Frame::Done { sent: 6 },
        Frame::Ack {
            summary: r.summary().clone(),
        },
        Frame::Close,
    ];
    frames
        .iter()
        .flat_map(|f| encode_frame(f).unwrap())
        .collect()
}

fn bundle_file() -> Vec<u8> {
    let r = sample_replica();
    let header = BundleHeader {
        cluster: "fuzz".into(),
        exporter: r.id,
        schema_version: 1,
        summary: r.summary().clone(),
        cut_for: None,
    };
    let mut w = BundleWriter::new(Vec::new(), &header).unwrap();
    w.write_txns(&r.txns().values().cloned().collect::<Vec<_>>())
        .unwrap();
    w.finish().unwrap()
}

/// Flips, truncates, inserts or splices random bytes.
fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..rng.random_range(1..4) {
        let at = rng.random_range(0..=out.len());
        match rng.random_range(0..4) {
            0 if at < out.len() => out[at] ^= 1 << rng.random_range(0..8),
            1 => out.truncate(at),
            2 => out.insert(at, rng.random()),
            _ => out
                .splice(at..at, seed[..rng.random_range(0..=seed.len())].to_vec())
                .for_each(drop),
        }
    }
    out
}

fn run(target: fn(&[u8]), seed: &[u8], prefix: fn(&mut StdRng) -> Vec<u8>) {
    let mut rng = StdRng::seed_from_u64(0xF022);
    target(&[prefix(&mut rng), seed.to_vec()].concat());
    for i in 0..RUNS {
        let body = if i % 3 == 0 {
            (0..rng.random_range(0..600))
                .map(|_| rng.random())
                .collect()
        } else {
            mutate(&mut rng, seed)
        };
        target(&[prefix(&mut rng), body].concat());
    }
}

fn no_prefix(_: &mut StdRng) -> Vec<u8> {
    Vec::new()
}

fn mode_byte(rng: &mut StdRng) -> Vec<u8> {
    vec![rng.random()]
}

#[test]
fn frame_decode_body() {
    run(fuzz_bodies::frame_decode, &frame_stream(), mode_byte);
}

#[test]
fn txn_decode_body() {
    let txn = sample_replica().txns().values().next().cloned().unwrap();
    run(fuzz_bodies::txn_decode, &txn, no_prefix);
}

#[test]
fn bundle_read_body() {
    run(fuzz_bodies::bundle_read, &bundle_file(), no_prefix);
}

#[test]
fn session_body() {
    run(fuzz_bodies::session, &frame_stream(), mode_byte);
}
