//! Hostile peers: transactions that a peer holding a valid fleet certificate could send, built to
//! hurt — foreign actors, missing dependencies, huge op counts, corrupted or truncated change
//! bytes, ops of the wrong kind, hostile names, absurd incarnations and sequence numbers, a
//! transaction id reused with other content — mixed with an honest replica's transactions.
//!
//! Behind the `testkit` feature. Drivers: the fuzz target `hostile_txn` (`fuzz/`) through
//! [`fuzz`], this crate's smoke test over random bytes, and the central bridge's test of the same
//! attacks against Postgres, which reuses [`forge`] and [`honest_txns`].
//!
//! The parts: [`forge`] (what an attack is and how one is built from bytes) → [`check`] (what
//! must hold after a replica received them). What must hold is what a fleet needs from every
//! replica, whatever it was sent: no panic; the apply answers (a refusal is an answer); sending
//! the same batch again applies nothing new; the honest records it was not attacked on equal the
//! honest replica's; and whatever the replica holds can be relayed to a fresh replica that then
//! shows exactly the same rows. A failed check panics with what differed.

pub mod check;
pub mod forge;

#[cfg(test)]
mod tests;

use arbitrary::Unstructured;

pub use check::{Replicas, fresh_store, run};
pub use forge::{Attack, Kind, forge, forge_kind, honest_txns};

/// The schema of every replica in these runs: typed fields of several policies, a typed
/// integer key, a schemaless collection and a log collection.
pub const SCHEMA: &str = r#"
version = 1
[collections.t]
key_type = "text"
[collections.t.fields]
n = { merge = "counter", type = "integer" }
st = { merge = "priority", order = ["a", "b", "c"], type = "text" }
hi = { merge = "max", type = "integer" }
body = { merge = "text", type = "text" }
flag = { type = "boolean" }
[collections.k]
key_type = "integer"
[collections.free]
[collections.events]
kind = "log"
"#;

/// Fuzz body: decodes attacks from `data` and runs them against fresh replicas.
pub fn fuzz(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut replicas = Replicas::new();
    let Ok(honest) = honest_txns(&mut u, replicas.honest()) else {
        return;
    };
    let Ok(attacks) = forge(&mut u, &honest) else {
        return;
    };
    run(&mut replicas, &honest, &attacks);
}
