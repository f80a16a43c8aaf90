//! A smoke run of the fuzz body on random bytes, and each attack kind run on purpose.

use std::collections::HashSet;

use arbitrary::Unstructured;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::forge::Kind;
use super::*;

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.random()).collect()
}

/// The fuzz body on random bytes: runs without a false alarm. (Campaigns with coverage
/// guidance: `fuzz/README.md`.)
#[test]
fn fuzz_body_on_random_bytes() {
    let mut rng = StdRng::seed_from_u64(0xBAD);
    for _ in 0..12 {
        let len = rng.random_range(64..2048);
        fuzz(&random_bytes(&mut rng, len));
    }
}

/// Every attack kind comes out of the forge for some input: the decoder reaches them all.
#[test]
fn forge_reaches_every_attack_kind() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut kinds = HashSet::new();
    for _ in 0..400 {
        let data = random_bytes(&mut rng, 512);
        let mut u = Unstructured::new(&data);
        if let Ok(attacks) = forge(&mut u, &[]) {
            kinds.extend(attacks.iter().map(|a| format!("{:?}", a.kind)));
        }
    }
    assert_eq!(kinds.len(), 12, "kinds reached: {kinds:?}");
}

/// Runs attacks of one kind against fresh replicas, over several seeds.
fn run_kind(kind: Kind, seeds: u64) {
    for seed in 0..seeds {
        let mut rng = StdRng::seed_from_u64(seed);
        let data = random_bytes(&mut rng, 4096);
        let mut u = Unstructured::new(&data);
        let mut replicas = Replicas::new();
        let honest = honest_txns(&mut u, replicas.honest()).expect("enough bytes");
        let attacks: Vec<Attack> = forge::forge_kind(&mut u, &honest, kind, 3).expect("bytes");
        run(&mut replicas, &honest, &attacks);
    }
}

#[test]
fn a_change_under_the_honest_replicas_actor_is_refused_in_either_order() {
    run_kind(Kind::Impersonate, 6);
}

#[test]
fn foreign_actors_and_absurd_values_converge() {
    run_kind(Kind::ForeignActor, 4);
}

#[test]
fn missing_dependencies_park_without_harm() {
    run_kind(Kind::MissingDeps, 3);
}

#[test]
fn corrupt_and_wrong_kind_changes_are_refused() {
    run_kind(Kind::Corrupt, 4);
    run_kind(Kind::WrongKind, 4);
}

#[test]
fn hostile_names_keys_and_incarnations_are_contained() {
    run_kind(Kind::HostileNames, 3);
    run_kind(Kind::BadKey, 3);
    run_kind(Kind::Incarnation, 3);
}

#[test]
fn replays_reused_ids_gaps_and_huge_changes_are_contained() {
    run_kind(Kind::Replay, 3);
    run_kind(Kind::ReuseId, 3);
    run_kind(Kind::SeqGap, 2);
    run_kind(Kind::HugeOps, 2);
}
