//! The convergence property tests, and a smoke run of the fuzz body on random bytes.

use std::collections::HashSet;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::script::{Action, STATUS, Script, Spec};
use super::{World, fuzz, run};

fn spec() -> impl Strategy<Value = Spec> {
    let id = 0u8..4;
    let put = (
        id.clone(),
        proptest::option::of(0u8..3),
        proptest::option::of(-50i64..50),
        proptest::option::of(-50i64..50),
        proptest::option::of(0u8..4),
        proptest::option::of("[ab]{0,4}"),
    )
        .prop_map(|(id, v, hi, lo, st, tx)| Spec::Put {
            id,
            v,
            hi,
            lo,
            st,
            tx,
        });
    prop_oneof![
        4 => put,
        3 => (id.clone(), -5i64..6).prop_map(|(id, by)| Spec::Inc { id, by }),
        1 => (id.clone(), -5i64..6).prop_map(|(id, by)| Spec::Inc2 { id, by }),
        1 => id.clone().prop_map(|id| Spec::Delete { id }),
        1 => (id, 0u8..3).prop_map(|(id, v)| Spec::Recreate { id, v }),
        2 => (proptest::option::of(0u8..4), 0u8..100).prop_map(|(id, n)| Spec::Append { id, n }),
        2 => (proptest::collection::btree_set(0u8..4, 1..4), 0u8..3)
            .prop_map(|(ids, logs)| Spec::Mark { ids, logs }),
    ]
}

fn actions(n: usize) -> impl Strategy<Value = Vec<Action>> {
    let local = (0..n, proptest::collection::vec(spec(), 1..4))
        .prop_map(|(replica, specs)| Action::Local { replica, specs });
    let deliver =
        (0..n, 0..n, any::<u64>()).prop_map(|(from, to, seed)| Action::Deliver { from, to, seed });
    let bundle = (0..n, 0..n).prop_map(|(from, to)| Action::Bundle { from, to });
    let replica = 0..n;
    let other = (replica, 0u8..3).prop_map(|(replica, k)| match k {
        0 => Action::Restart { replica },
        1 => Action::Gc { replica },
        _ => Action::Upgrade { replica },
    });
    proptest::collection::vec(
        prop_oneof![6 => local, 4 => deliver, 1 => bundle, 1 => other],
        5..30,
    )
}

fn script() -> impl Strategy<Value = Script> {
    (2usize..=5).prop_flat_map(|n| {
        actions(n).prop_map(move |actions| Script {
            replicas: n,
            actions,
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_to_the_model(s in script()) {
        run(&s);
    }

    /// Concurrent priority writes: the best-ranked value wins, whatever the delivery order.
    #[test]
    fn priority_among_concurrent_writes(values in proptest::collection::vec(0u8..4, 2..=5), seed in any::<u64>()) {
        let put = |st| vec![Spec::Put { id: 0, v: None, hi: None, lo: None, st, tx: None }];
        let mut w = World::new(values.len());
        w.local(0, &put(None));
        for i in 1..values.len() { w.deliver(0, i, 0); }
        w.converge();
        for (i, v) in values.iter().enumerate() {
            w.local(i, &put(Some(*v)));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..values.len() * 2 {
            let (a, b) = (rng.random_range(0..values.len()), rng.random_range(0..values.len()));
            if a != b { w.deliver(a, b, rng.random()); }
        }
        w.converge();
        let best = STATUS[usize::from(*values.iter().min().expect("two or more"))];
        for i in 0..w.len() {
            let row = w.store(i).get("d", "d0").expect("get").expect("live");
            prop_assert_eq!(row["st"].as_str(), Some(best));
        }
    }
}

/// The fuzz body on random bytes: decodes and runs without a false alarm. (Campaigns with
/// coverage guidance: `fuzz/README.md`.)
#[test]
fn fuzz_body_on_random_bytes() {
    let mut rng = StdRng::seed_from_u64(0xC0DE);
    for _ in 0..40 {
        let len = rng.random_range(0..400);
        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        fuzz(&data);
    }
}

/// Every kind of action decodes from some input: the decoder reaches the whole script space.
#[test]
fn decoder_reaches_every_action_kind() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut kinds = HashSet::new();
    for _ in 0..200 {
        let data: Vec<u8> = (0..200).map(|_| rng.random()).collect();
        let mut u = arbitrary::Unstructured::new(&data);
        let Ok(s) = Script::decode(&mut u) else {
            continue;
        };
        for a in s.actions {
            kinds.insert(std::mem::discriminant(&a));
        }
    }
    assert_eq!(kinds.len(), 6, "decoded kinds: {}", kinds.len());
}

/// A delete concurrent with an update of the same incarnation wins after a restart and a GC.
#[test]
fn delete_wins_across_restart_gc_and_bundle() {
    let put = Spec::Put {
        id: 1,
        v: Some(1),
        hi: Some(3),
        lo: None,
        st: Some(2),
        tx: None,
    };
    run(&Script {
        replicas: 3,
        actions: vec![
            Action::Local {
                replica: 0,
                specs: vec![put],
            },
            Action::Bundle { from: 0, to: 1 },
            Action::Local {
                replica: 1,
                specs: vec![Spec::Delete { id: 1 }],
            },
            Action::Local {
                replica: 0,
                specs: vec![Spec::Inc { id: 1, by: 2 }],
            },
            Action::Restart { replica: 1 },
            Action::Upgrade { replica: 2 },
            Action::Deliver {
                from: 1,
                to: 2,
                seed: 3,
            },
            Action::Gc { replica: 2 },
        ],
    });
}

/// The in-memory record harness on random bytes, and on a script whose deliveries come newest
/// first (every change but one parks).
#[test]
fn record_merge_on_random_bytes_and_reversed_delivery() {
    use super::record::{self, RecordScript, Step};
    let mut rng = StdRng::seed_from_u64(0x5EED);
    for _ in 0..300 {
        let len = rng.random_range(0..600);
        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        record::fuzz(&data);
    }
    let mut steps = Vec::new();
    for i in 0..10 {
        steps.push(Step::Inc { replica: 0, by: i });
        steps.push(Step::Put {
            replica: 1,
            v: Some(1),
            hi: Some(i),
            lo: Some(-i),
            st: Some(u8::try_from(i % 4).unwrap()),
            tx: Some(2),
        });
    }
    steps.push(Step::Sync { from: 0, to: 2 });
    steps.push(Step::Sync { from: 1, to: 2 });
    record::run(&RecordScript { replicas: 3, steps });
}

/// A converged world of three template-made replicas with a counter, a log row and a marked
/// multi-record transaction on every replica.
fn converged_world() -> World {
    let mut w = World::new(3);
    w.local(0, &[Spec::Inc { id: 0, by: 2 }]);
    w.local(1, &[Spec::Inc { id: 0, by: 3 }]);
    w.local(
        2,
        &[
            Spec::Append { id: Some(1), n: 7 },
            Spec::Mark {
                ids: [0, 1].into(),
                logs: 1,
            },
        ],
    );
    w.converge();
    super::model::check(&w);
    w
}

/// The checks still bite on the fast harness (template stores): a model that expects another
/// counter value fails.
#[test]
#[should_panic(expected = "d0.c")]
fn a_wrong_model_is_caught() {
    let mut w = converged_world();
    if let Spec::Inc { by, .. } = &mut w.committed[1].specs[0] {
        *by += 1;
    }
    super::model::check(&w);
}

/// Runs `sql` on replica `i`'s database behind its store's back; it must change one row.
fn tamper(w: &World, i: usize, sql: &str) {
    assert_eq!(w.connection(i).execute(sql, []).unwrap(), 1, "{sql}");
}

/// A replica whose materialized row differs (written behind the store's back, in its SQLite
/// database) fails the cross-replica comparison.
#[test]
#[should_panic(expected = "collection d differs on replica 1")]
fn a_seeded_divergence_is_caught() {
    let w = converged_world();
    tamper(
        &w,
        1,
        "UPDATE records SET json = json_set(json, '$.c', 99) WHERE collection = 'd' AND id = 'd0'",
    );
    super::model::check(&w);
}

/// A multi-record transaction seen in part (one of its marks removed on one replica) fails the
/// atomicity check.
#[test]
#[should_panic(expected = "shows 2 of 3 parts")]
fn a_partly_visible_transaction_is_caught() {
    let w = converged_world();
    tamper(
        &w,
        2,
        "DELETE FROM records WHERE collection = 'z' AND id = 'z1'",
    );
    w.check_atomic(2);
}
