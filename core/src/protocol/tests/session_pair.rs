//! Two sessions driven against each other with in-memory replicas.

use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};

use crate::ids::{ReplicaId, TxnId};
use crate::protocol::session::{Event, SessionError, State};
use crate::protocol::testkit::{MemReplica, Pair, PairReport, drain, sync_pair};

/// A replica holding `per_origin` transactions (rows of ~`row_bytes`) from each of `origins`.
fn fleet_replica(id: u8, origins: u8, per_origin: usize, row_bytes: usize) -> MemReplica {
    let mut replica = MemReplica::new(ReplicaId([id; 16]));
    for o in 0..origins {
        let mut writer = MemReplica::new(ReplicaId([100 + o; 16]));
        writer.write_rows(per_origin, row_bytes);
        replica.copy_from(&writer, |_| true);
    }
    replica
}

fn with_id(replica: &MemReplica, id: u8) -> MemReplica {
    let mut copy = replica.clone();
    copy.id = ReplicaId([id; 16]);
    copy
}

fn complete_counts(events: &[Event]) -> Option<(u64, u64)> {
    events.iter().find_map(|e| match e {
        Event::Complete { sent, received } => Some((*sent, *received)),
        _ => None,
    })
}

fn assert_converged(a: &MemReplica, b: &MemReplica) {
    assert_eq!(a.summary(), b.summary());
    assert_eq!(a.txns(), b.txns());
}

#[test]
fn idle_exchange_is_one_round_trip_and_under_a_kib() {
    let mut a = fleet_replica(1, 10, 10_000, 100);
    let mut b = with_id(&a, 2);
    let report = sync_pair(&mut a, &mut b);
    eprintln!(
        "idle, 10 origins x 10k txns: {} round trip(s), {} B a->b, {} B b->a",
        report.round_trips(),
        report.bytes_a_to_b,
        report.bytes_b_to_a
    );
    assert!(report.completed(), "{report:?}");
    assert_eq!(report.flights, 2, "Hello both ways, then Done both ways");
    assert!(
        report.total_bytes() < 1024,
        "{} bytes",
        report.total_bytes()
    );
    assert_eq!(complete_counts(&report.events_a), Some((0, 0)));
    assert_eq!((report.applied_a, report.applied_b), (0, 0));
}

/// `a` holds 100k transactions from 10 origins; `b` lacks 1% of them, scattered (gaps).
#[test]
fn one_percent_divergence_moves_exactly_the_missing_txns() {
    let mut a = fleet_replica(1, 10, 10_000, 150);
    let mut rng = StdRng::seed_from_u64(7);
    let ids: Vec<TxnId> = a.txns().keys().copied().collect();
    let missing: Vec<TxnId> = sample(&mut rng, ids.len(), ids.len() / 100)
        .iter()
        .map(|i| ids[i])
        .collect();
    let mut b = MemReplica::new(ReplicaId([2; 16]));
    b.copy_from(&a, |id| !missing.contains(id));
    let raw: u64 = missing.iter().map(|id| a.txns()[id].len() as u64).sum();

    let report = sync_pair(&mut a, &mut b);
    eprintln!(
        "1% divergence: {} missing txns, {raw} raw B; sent {} B a->b, {} B b->a, {} round trip(s)",
        missing.len(),
        report.bytes_a_to_b,
        report.bytes_b_to_a,
        report.round_trips()
    );
    assert!(report.completed());
    assert_eq!(report.round_trips(), 1);
    assert_eq!(report.applied_b, missing.len());
    assert_eq!(
        complete_counts(&report.events_a),
        Some((missing.len() as u64, 0))
    );
    assert_eq!(
        complete_counts(&report.events_b),
        Some((0, missing.len() as u64))
    );
    assert!(
        report.total_bytes() <= 2 * raw,
        "{} bytes for {raw} raw",
        report.total_bytes()
    );
    assert_converged(&a, &b);
}

#[test]
fn both_sides_missing_different_txns_converge_in_one_round_trip() {
    let base = fleet_replica(1, 3, 300, 40);
    let mut rng = StdRng::seed_from_u64(3);
    let mut a = MemReplica::new(ReplicaId([1; 16]));
    let mut b = MemReplica::new(ReplicaId([2; 16]));
    a.copy_from(&base, |_| rng.random_bool(0.8));
    b.copy_from(&base, |_| rng.random_bool(0.8));
    a.write_rows(5, 10);
    b.write_rows(7, 10);
    let report = sync_pair(&mut a, &mut b);
    assert!(report.completed());
    assert_eq!(report.round_trips(), 1);
    assert_converged(&a, &b);
    // A second session finds nothing to do.
    let again = sync_pair(&mut a, &mut b);
    assert_eq!((again.flights, again.applied_a, again.applied_b), (2, 0, 0));
}

#[test]
fn push_and_ack_flow_after_completion() {
    let mut a = MemReplica::new(ReplicaId([1; 16]));
    let mut b = MemReplica::new(ReplicaId([2; 16]));
    let mut pair = Pair::new(a.hello("c"), b.hello("c"));
    pair.ack = true;
    assert!(pair.run(&mut a, &mut b, 8).completed());
    let ids = a.write_rows(3, 20);
    pair.a.push(a.load(&[(a.id, 1..=3)])).unwrap();
    let report = pair.run(&mut a, &mut b, 8);
    assert_eq!(report.applied_b, 3);
    assert!(ids.iter().all(|id| b.summary().contains(id)));
    // b acked its new summary; a sees it.
    let acked = report.events_a.iter().find_map(|e| match e {
        Event::PeerAck { summary } => Some(summary.clone()),
        _ => None,
    });
    assert_eq!(acked.as_ref(), Some(b.summary()));
    assert_eq!(pair.a.state(), State::Established);
}

#[test]
fn collection_filter_reaches_the_host() {
    let mut a = MemReplica::new(ReplicaId([1; 16]));
    a.write_rows(2, 10);
    let b = MemReplica::new(ReplicaId([2; 16]));
    let mut hello_b = b.hello("c");
    hello_b.collections = Some(vec!["tasks".into()]);
    let mut pair = Pair::new(a.hello("c"), hello_b);
    let hello = drain(&mut pair.b);
    pair.a.handle_bytes(pair.now, &hello).unwrap();
    let events: Vec<Event> = std::iter::from_fn(|| pair.a.poll_event()).collect();
    let Some(Event::NeedTxns {
        ranges,
        collections,
    }) = events.get(1)
    else {
        panic!("expected PeerHello then NeedTxns, got {events:?}")
    };
    assert_eq!(ranges, &vec![(a.id, 1..=2)]);
    assert_eq!(collections, &Some(vec!["tasks".to_owned()]));
    assert!(matches!(events[0], Event::PeerHello { missing: 0, .. }));
}

fn failure(events: &[Event]) -> Option<&SessionError> {
    events.iter().find_map(|e| match e {
        Event::Failed(err) => Some(err),
        _ => None,
    })
}

#[test]
fn cluster_mismatch_is_refused_on_both_sides_before_any_data() {
    let mut a = MemReplica::new(ReplicaId([1; 16]));
    let mut b = MemReplica::new(ReplicaId([2; 16]));
    a.write_rows(10, 10);
    b.write_rows(10, 10);
    let mut pair = Pair::new(a.hello("blue"), b.hello("green"));
    let report: PairReport = pair.run(&mut a, &mut b, 8);
    for events in [&report.events_a, &report.events_b] {
        let err = failure(events).expect("failed");
        assert!(matches!(err, SessionError::ClusterMismatch { .. }), "{err}");
        assert!(err.to_string().contains("blue") && err.to_string().contains("green"));
    }
    assert_eq!((a.len(), b.len()), (10, 10), "no data crossed");
    assert_eq!(
        (pair.a.state(), pair.b.state()),
        (State::Failed, State::Failed)
    );
}

#[test]
fn same_replica_id_is_refused() {
    let mut a = MemReplica::new(ReplicaId([1; 16]));
    let mut b = a.clone();
    let mut pair = Pair::new(a.hello("c"), b.hello("c"));
    let report = pair.run(&mut a, &mut b, 8);
    assert!(matches!(
        failure(&report.events_a),
        Some(SessionError::SameReplica(_))
    ));
}

#[test]
fn close_ends_both_sides_quietly() {
    let mut a = MemReplica::new(ReplicaId([1; 16]));
    let mut b = MemReplica::new(ReplicaId([2; 16]));
    let mut pair = Pair::new(a.hello("c"), b.hello("c"));
    assert!(pair.run(&mut a, &mut b, 8).completed());
    pair.a.close();
    let report = pair.run(&mut a, &mut b, 8);
    assert!(report.events_b.iter().any(|e| matches!(e, Event::Closed)));
    assert_eq!(
        (pair.a.state(), pair.b.state()),
        (State::Closed, State::Closed)
    );
    assert!(pair.a.push(vec![vec![1]]).is_err());
}
