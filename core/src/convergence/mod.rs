//! The merge-convergence harness: 2–5 real stores (on in-memory SQLite databases, writer inline:
//! `store::memory`) run a script of local transactions of every op kind and policy, exchange
//! them with loss, duplication, reordering and bundles, restart, collect garbage and upgrade
//! their schema; then every replica must show the same rows, equal to a reference model where
//! one exists.
//!
//! Behind the `testkit` feature (always on in this crate's own tests). Three drivers share it:
//! - the fuzz target `merge_convergence` (`fuzz/`), through [`fuzz`], which decodes a script from
//!   the fuzzer's bytes with [`arbitrary::Unstructured`];
//! - this crate's property test (`convergence::tests`), which generates scripts with proptest;
//! - the same tests' smoke run of [`fuzz`] over random bytes, so the fuzz body stays panic-free
//!   between campaigns.
//!
//! [`record`] is the fast half: the merge rules alone on in-memory documents (no SQLite), behind
//! the fuzz target `record_merge` at thousands of executions per second.
//!
//! The parts: [`script`] (what can happen: [`script::Spec`] ops and [`script::Action`]s, and
//! their decoding from bytes) → [`world`] (the replicas and how actions run on them) →
//! [`model`] (what the merged state must be). A failed check panics with what differed: a
//! panic is the failure report, as fuzzers expect.

pub mod model;
pub mod record;
pub mod script;
pub mod world;

#[cfg(test)]
mod tests;

use arbitrary::Unstructured;

pub use script::{Action, Script, Spec};
pub use world::World;

/// Fuzz body: decodes a [`Script`] from `data` (too few bytes end the script early) and runs it.
pub fn fuzz(data: &[u8]) {
    let mut u = Unstructured::new(data);
    if let Ok(script) = Script::decode(&mut u) {
        run(&script);
    }
}

/// Runs a script and checks convergence, atomicity and the model. Panics on any violation.
pub fn run(script: &Script) {
    let mut w = World::new(script.replicas);
    for action in &script.actions {
        w.act(action);
    }
    w.converge();
    for i in 0..script.replicas {
        w.check_atomic(i);
    }
    model::check(&w);
}
