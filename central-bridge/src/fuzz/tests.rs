//! The `bridge_txn` fuzz body on seeded random inputs and mutations of them, on the test
//! process's Postgres (`meshlite_fixtures::postgres`), and every committed crash input.

use meshlite_fixtures::postgres::PgServer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::Harness;

/// Seed inputs: random bytes of lengths that decode to short and long scripts.
fn seeds() -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(0xB21D6E);
    [64, 256, 512, 1024, 2048, 4096]
        .iter()
        .map(|&len| (0..len).map(|_| rng.random()).collect())
        .collect()
}

/// A seed with 1–8 bytes overwritten, inserted or removed.
fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..rng.random_range(1..=8) {
        let at = rng.random_range(0..=bytes.len());
        match rng.random_range(0..3) {
            0 => bytes.insert(at, rng.random()),
            1 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ if at < bytes.len() => bytes[at] = rng.random(),
            _ => bytes.push(rng.random()),
        }
    }
    bytes
}

fn harness(tag: &str) -> Harness {
    Harness::new(&PgServer::shared().database("bridge_fuzz"), tag)
}

#[test]
fn seeds_and_their_mutations_hold_every_property() {
    let h = harness("smoke");
    let seeds = seeds();
    for seed in &seeds {
        h.run(seed);
    }
    let mut rng = StdRng::seed_from_u64(0x5EED);
    for _ in 0..MUTATIONS {
        let seed = &seeds[rng.random_range(0..seeds.len())];
        h.run(&mutate(&mut rng, seed));
    }
}

/// Mutations per `cargo test` run: each execution is a few dozen Postgres round trips and two
/// SQLite stores, about 0.1 s in a debug build, so this stays a smoke run (campaigns:
/// `fuzz/README.md`). The first 300 mutations of this seed found both bridge/node
/// disagreements now in `fuzz/regressions/bridge_txn/`.
const MUTATIONS: usize = 60;

/// Every input a campaign found crashing (`fuzz/regressions/bridge_txn/`, committed) now holds.
#[test]
fn committed_crashes_hold() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/regressions/bridge_txn"
    );
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let h = harness("regressions");
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        h.run(&std::fs::read(&path).expect("a regression input"));
    }
}
