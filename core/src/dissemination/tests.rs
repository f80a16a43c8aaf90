use std::collections::BTreeSet;

use super::*;
use crate::ids::ReplicaId;

const SEC: Duration = Duration::from_secs(1);

fn txn(seq: u64) -> TxnId {
    TxnId {
        origin: ReplicaId([7; 16]),
        seq,
    }
}

/// Gossip mode whatever the peer count.
fn config(fanout: usize, round_peers: usize) -> DisseminationConfig {
    DisseminationConfig {
        push_fanout: fanout,
        direct_push_max_peers: 0,
        anti_entropy_peers: round_peers,
        ..DisseminationConfig::default()
    }
}

fn node(cfg: DisseminationConfig, peers: u32, seed: u64) -> (Disseminator<u32>, Instant) {
    let now = Instant::now();
    let mut d = Disseminator::new(cfg, seed, now).expect("valid config");
    for p in 0..peers {
        d.add_peer(p);
    }
    (d, now)
}

/// Fires the due round and returns its peers (sorted) and the time it fired.
fn round(d: &mut Disseminator<u32>) -> (BTreeSet<u32>, Instant) {
    let at = d.poll_timeout().expect("anti-entropy enabled");
    (d.handle_timeout(at).into_iter().collect(), at)
}

#[test]
fn config_validation() {
    assert_eq!(DisseminationConfig::default().validate(), Ok(()));
    let zero = DisseminationConfig {
        anti_entropy_interval: Duration::ZERO,
        ..Default::default()
    };
    assert_eq!(zero.validate(), Err(ConfigError::ZeroInterval));
    let jitter = DisseminationConfig {
        jitter: 10 * SEC,
        ..Default::default()
    };
    assert!(matches!(
        jitter.validate(),
        Err(ConfigError::JitterTooLarge { .. })
    ));
    let seen = DisseminationConfig {
        seen_capacity: 0,
        ..Default::default()
    };
    assert_eq!(seen.validate(), Err(ConfigError::ZeroSeenCapacity));
    assert!(Disseminator::<u32>::new(seen, 1, Instant::now()).is_err());
}

#[test]
fn peers_are_a_sorted_set() {
    let (mut d, _) = node(config(3, 2), 0, 1);
    assert!(d.add_peer(5));
    assert!(d.add_peer(2));
    assert!(!d.add_peer(5));
    assert_eq!(d.peers().copied().collect::<Vec<_>>(), vec![2, 5]);
    assert!(d.remove_peer(&2));
    assert!(!d.remove_peer(&2));
    assert_eq!(d.peer_count(), 1);
    assert!(d.health(&2).is_none());
}

#[test]
fn local_push_picks_distinct_random_peers() {
    let (mut d, _) = node(config(3, 2), 10, 1);
    let mut ever = BTreeSet::new();
    for seq in 1..=200 {
        let targets = d.on_local_txn(txn(seq));
        let distinct: BTreeSet<u32> = targets.iter().copied().collect();
        assert_eq!((targets.len(), distinct.len()), (3, 3));
        ever.extend(distinct);
    }
    assert_eq!(ever.len(), 10, "every peer is eventually chosen");
    let (mut lonely, _) = node(config(3, 2), 2, 1);
    assert_eq!(
        lonely.on_local_txn(txn(1)).len(),
        2,
        "fanout capped by the peer count"
    );
    let (mut alone, _) = node(config(3, 2), 0, 1);
    assert!(alone.on_local_txn(txn(1)).is_empty());
}

#[test]
fn small_fleets_push_directly_to_everyone_and_do_not_relay() {
    let direct = DisseminationConfig {
        direct_push_max_peers: 4,
        ..config(2, 2)
    };
    let (mut d, _) = node(direct, 4, 1);
    assert!(d.is_direct());
    assert_eq!(d.on_local_txn(txn(1)), vec![0, 1, 2, 3]);
    let relay = d.on_remote_txns(&0, &[txn(2)]);
    assert_eq!((relay.txns, relay.targets), (vec![txn(2)], vec![]));
    d.add_peer(4);
    assert!(!d.is_direct(), "a fifth peer switches to gossip");
    assert_eq!(d.on_local_txn(txn(3)).len(), 2);
    assert_eq!(d.on_remote_txns(&0, &[txn(4)]).targets.len(), 2);
}

#[test]
fn relay_only_fresh_txns_and_never_back_to_the_sender() {
    let (mut d, _) = node(config(3, 2), 4, 1);
    d.on_local_txn(txn(1));
    for _ in 0..50 {
        let relay = d.on_remote_txns(&0, &[txn(1)]);
        assert!(relay.txns.is_empty() && relay.targets.is_empty());
    }
    let relay = d.on_remote_txns(&0, &[txn(1), txn(2), txn(3), txn(2)]);
    assert_eq!(relay.txns, vec![txn(2), txn(3)]);
    assert_eq!(
        relay.targets.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([1, 2, 3])
    );
    assert!(d.on_remote_txns(&1, &[txn(3)]).targets.is_empty());
}

#[test]
fn seen_set_is_bounded() {
    let cfg = DisseminationConfig {
        seen_capacity: 4,
        ..config(3, 2)
    };
    let (mut d, _) = node(cfg, 4, 1);
    for seq in 1..=5 {
        assert_eq!(d.on_remote_txns(&0, &[txn(seq)]).txns.len(), 1);
    }
    assert!(!d.has_seen(&txn(1)), "the oldest id was evicted");
    assert!(d.has_seen(&txn(5)));
    assert_eq!(d.on_remote_txns(&0, &[txn(1)]).txns, vec![txn(1)]);
    assert!(d.on_remote_txns(&0, &[txn(5)]).txns.is_empty());
}

#[test]
fn same_seed_same_decisions() {
    let run = |seed| {
        let (mut d, _) = node(config(3, 2), 20, seed);
        let mut out = Vec::new();
        for seq in 1..=20 {
            out.push(d.on_local_txn(txn(seq)));
            let (peers, at) = round(&mut d);
            for p in &peers {
                d.on_sync_result(p, seq % 3 != 0, at);
            }
            out.push(peers.into_iter().collect());
        }
        out
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
}

#[test]
fn rounds_are_scheduled_interval_plus_minus_jitter() {
    let (mut d, start) = node(config(3, 2), 3, 4);
    let first = d.poll_timeout().expect("anti-entropy enabled");
    assert!(first >= start && first <= start + 10 * SEC);
    assert!(
        d.handle_timeout(first - Duration::from_millis(1))
            .is_empty(),
        "not due yet"
    );
    assert_eq!(d.poll_timeout(), Some(first));
    let mut at = first;
    for _ in 0..50 {
        assert_eq!(d.handle_timeout(at).len(), 2);
        let next = d.poll_timeout().expect("anti-entropy enabled");
        assert!(
            next >= at + 9 * SEC && next <= at + 11 * SEC,
            "{:?}",
            next - at
        );
        for p in 0..3 {
            d.on_sync_result(&p, true, at);
        }
        at = next;
    }
}

#[test]
fn anti_entropy_can_be_disabled() {
    let (mut d, start) = node(config(3, 0), 3, 4);
    assert_eq!(d.poll_timeout(), None);
    assert!(d.handle_timeout(start + 1000 * SEC).is_empty());
}

#[test]
fn rounds_prefer_peers_not_synced_recently() {
    let (mut d, _) = node(config(3, 2), 4, 2);
    let (a, at) = round(&mut d);
    for p in &a {
        d.on_sync_result(p, true, at);
    }
    let (b, _) = round(&mut d);
    assert_eq!(a.len() + b.len(), 4);
    assert!(
        a.is_disjoint(&b),
        "the second round goes to the two peers not yet synced"
    );
}

#[test]
fn peers_in_flight_are_skipped() {
    let (mut d, _) = node(config(3, 2), 3, 3);
    let (a, _) = round(&mut d);
    let (b, at) = round(&mut d);
    assert_eq!((a.len(), b.len()), (2, 1));
    assert!(
        round(&mut d).0.is_empty(),
        "every peer has a round in flight"
    );
    assert!(
        d.health(b.first().expect("one peer"))
            .expect("known peer")
            .in_flight
    );
    d.on_sync_result(b.first().expect("one peer"), true, at);
    assert_eq!(round(&mut d).0, b);
}

#[test]
fn failing_peers_back_off_exponentially_but_are_never_starved() {
    let cfg = DisseminationConfig {
        backoff_max: 35 * SEC,
        ..config(3, 1)
    };
    let (mut d, start) = node(cfg, 1, 5);
    let expected = [10, 20, 35, 35];
    for secs in expected {
        let (peers, at) = round(&mut d);
        assert_eq!(
            peers,
            BTreeSet::from([0]),
            "the only peer is tried even while failing"
        );
        d.on_sync_result(&0, false, at);
        assert_eq!(
            d.health(&0).expect("known peer").retry_at,
            Some(at + secs * SEC)
        );
    }
    assert_eq!(d.health(&0).expect("known peer").failures, 4);
    d.clear_backoff(&0);
    let health = d.health(&0).expect("known peer");
    assert_eq!((health.failures, health.retry_at), (0, None));
    d.on_sync_result(&0, false, start);
    d.on_sync_result(&0, true, start);
    let health = d.health(&0).expect("known peer");
    assert_eq!((health.failures, health.retry_at), (0, None));
}

#[test]
fn failing_peers_rank_last_until_their_backoff_expires() {
    let (mut d, start) = node(config(3, 1), 3, 6);
    d.on_sync_result(&1, false, start - SEC);
    let mut order = Vec::new();
    for _ in 0..2 {
        let (peers, at) = round(&mut d);
        order.extend(peers.iter().copied());
        d.on_sync_result(peers.first().expect("one peer"), true, at);
    }
    assert_eq!(
        order.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([0, 2])
    );
    // Its backoff (10 s) has expired and it is now the least recently synced.
    let (peers, _) = round(&mut d);
    assert_eq!(peers, BTreeSet::from([1]));
}

#[test]
fn push_prefers_healthy_peers() {
    let (mut d, now) = node(config(3, 2), 5, 7);
    d.on_sync_result(&0, false, now);
    d.on_sync_result(&4, false, now);
    for seq in 1..=100 {
        let targets: BTreeSet<u32> = d.on_local_txn(txn(seq)).into_iter().collect();
        assert_eq!(targets, BTreeSet::from([1, 2, 3]));
    }
    let relay = d.on_remote_txns(&1, &[txn(1000)]);
    assert_eq!(relay.targets.len(), 3, "one failing peer fills the fanout");
    assert!(relay.targets.contains(&2) && relay.targets.contains(&3));
}
