//! Meshlite core: an embedded CRDT store and the transport-independent sync protocol.
//!
//! # How the parts fit
//!
//! - [`ids`]: replica ids (change origins, also Automerge actor ids), transaction ids, record ids.
//! - [`version`]: per-origin sets of held transactions ([`version::Summary`]), the anti-entropy
//!   digest two replicas compare to find what each lacks.
//! - [`change`]: the replicated unit, a [`change::Txn`] of per-record [`change::Op`]s.
//! - [`schema`]: collections, their kind (`document` or `log`) and per-field merge policies.
//! - [`store`]: the SQLite + Automerge store. One thread owns the write connection; reads use their
//!   own connections and are served from materialized rows.
//! - [`dissemination`]: the sans-IO gossip policy (push fanout, relay, anti-entropy peer choice
//!   and backoff) shared by the daemon and the deterministic simulator.
//! - [`overlay`], [`plumtree`], [`epidemic`]: dissemination for large fleets, sans-IO like the
//!   policy above: a bounded-degree membership overlay (HyParView), epidemic broadcast trees
//!   (Plumtree) over it, and the two wired together with the anti-entropy scheduler.
//! - [`protocol`]: sans-IO sync sessions (bytes in, bytes out, time passed in) and the bundle file
//!   format for sneakernet sync; shared by QUIC peers, the NATS relay and the central bridge.
//! - `convergence` (feature `testkit`): the merge-convergence harness behind the fuzz target
//!   `merge_convergence` and the convergence property tests.
//! - `hostile` (feature `testkit`): transactions a hostile peer with a valid certificate could
//!   send, behind the fuzz target `hostile_txn` and the bridge's test of the same attacks.
//! - `scratch` (feature `testkit`): the throwaway directories both harnesses open stores in.
//!
//! See ARCHITECTURE.md at the repository root for the invariants.
#![deny(missing_docs)]

pub mod change;
#[cfg(any(test, feature = "testkit"))]
pub mod convergence;
pub mod dissemination;
pub mod epidemic;
#[cfg(any(test, feature = "testkit"))]
pub mod hostile;
pub mod ids;
pub mod overlay;
pub mod plumtree;
pub mod protocol;
pub mod schema;
#[cfg(any(test, feature = "testkit"))]
pub mod scratch;
mod seen;
pub mod store;
pub mod version;

pub use change::{Op, Txn};
pub use ids::{ReplicaId, Seq, TxnId};
pub use schema::Schema;
pub use store::Store;
pub use version::{SeqSet, Summary};
