//! The bridge against a hostile peer: the attacks of `meshlite_core::hostile` (foreign and
//! impersonated actors, missing dependencies, huge changes, corrupt bytes, wrong kinds, hostile
//! names and keys, absurd incarnations, replays, reused ids, sequence gaps) mixed with an honest
//! node's transactions, on a real Postgres. The bridge receives the attack first, a node store
//! after the honest transactions; then the two run anti-entropy through the `Replica` trait
//! until nothing moves. Then the checks of `meshlite_bridge::fuzz::compare` (shared with the
//! fuzz target `bridge_txn`, which also tries every other delivery order): every answer was an
//! answer (no error, no panic), both hold the same transactions, resending what the bridge
//! holds applies nothing, and every Postgres row equals the node's record field by field.

use std::io::Write;

use arbitrary::Unstructured;
use meshlite_bridge::fuzz::compare::{
    anti_entropy, apply, assert_alike, assert_resend_applies_nothing,
};
use meshlite_bridge::pg::{Ident, PgConn};
use meshlite_bridge::replica::PgReplica;
use meshlite_core::Txn;
use meshlite_core::hostile::{self, Attack};
use meshlite_fixtures::postgres::PgServer;
use rand::rngs::StdRng;

mod support;
use rand::{Rng, SeedableRng};

/// A bridge on a fresh database with the hostile schema's tables.
async fn bridge(name: &str, schema: &std::path::Path) -> (PgReplica, PgConn) {
    support::pg_replica(PgServer::shared().database(name), name, schema).await
}

/// One run: seed → honest writes and attacks → both orders → anti-entropy → checks.
async fn run(seed: u64, schema: &std::path::Path) {
    let mut rng = StdRng::seed_from_u64(seed);
    let data: Vec<u8> = (0..4096).map(|_| rng.random()).collect();
    let mut u = Unstructured::new(&data);
    // Opening a store blocks (it waits for its writer thread).
    let (_honest_dir, honest_store) = tokio::task::block_in_place(hostile::fresh_store);
    let (_late_dir, late) = tokio::task::block_in_place(hostile::fresh_store);
    let honest = tokio::task::block_in_place(|| hostile::honest_txns(&mut u, &honest_store))
        .expect("honest writes");
    let attacks: Vec<Attack> = hostile::forge(&mut u, &honest).expect("attacks");
    let hostile: Vec<Txn> = attacks.iter().map(|a| a.txn.clone()).collect();
    let kinds: Vec<_> = attacks.iter().map(|a| a.kind).collect();

    let (bridge, conn) = bridge(&format!("hostile{seed}"), schema).await;
    apply(&bridge, &hostile).await;
    apply(&bridge, &honest).await;
    apply(&late, &honest).await;
    apply(&late, &hostile).await;

    let label = format!("seed {seed} {kinds:?}");
    let sent: Vec<Txn> = hostile.iter().chain(&honest).cloned().collect();
    assert_resend_applies_nothing(&bridge, &sent, &label).await;
    anti_entropy(&bridge, &late).await;
    let public = Ident::new("public", "test").expect("public");
    assert_alike(&bridge, conn.client(), &public, &late, &sent, &label).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_transactions_are_refused_or_merged_alike_by_the_bridge_and_a_node() {
    let mut file = tempfile::NamedTempFile::new().expect("schema file");
    file.write_all(hostile::SCHEMA.as_bytes()).expect("write");
    for seed in 0..16 {
        run(seed, file.path()).await;
    }
}
