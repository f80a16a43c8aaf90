use super::*;
use crate::ids::ReplicaId;

fn txn(seq: u64) -> TxnId {
    TxnId {
        origin: ReplicaId([3; 16]),
        seq,
    }
}

/// Classic Plumtree (prunes down to one eager link) unless a test says otherwise.
fn classic() -> TreeConfig {
    TreeConfig {
        min_eager: 1,
        ..TreeConfig::default()
    }
}

fn tree(eager: &[u32], lazy: &[u32]) -> (Plumtree<u32>, Instant) {
    tree_with(classic(), eager, lazy)
}

fn tree_with(config: TreeConfig, eager: &[u32], lazy: &[u32]) -> (Plumtree<u32>, Instant) {
    let mut t = Plumtree::new(config).expect("valid config");
    for &p in eager.iter().chain(lazy) {
        t.neighbor_up(p);
    }
    for &p in lazy {
        t.on_message(&p, TreeMessage::Prune, Instant::now());
    }
    (t, Instant::now())
}

fn drain(t: &mut Plumtree<u32>) -> Vec<TreeAction<u32>> {
    std::iter::from_fn(|| t.poll_action()).collect()
}

fn push(to: u32, txns: &[TxnId]) -> TreeAction<u32> {
    TreeAction::Push {
        to,
        txns: txns.to_vec(),
    }
}

fn send(to: u32, message: TreeMessage) -> TreeAction<u32> {
    TreeAction::Send { to, message }
}

#[test]
fn config_validation_names_the_problem() {
    let zero = TreeConfig {
        graft_retry: Duration::ZERO,
        ..TreeConfig::default()
    };
    assert_eq!(
        Plumtree::<u32>::new(zero).err(),
        Some(TreeConfigError::ZeroGraftTimer)
    );
}

#[test]
fn broadcast_pushes_to_eager_links_and_announces_to_lazy_ones_in_one_batch() {
    let (mut t, now) = tree(&[1, 2], &[3]);
    t.broadcast(txn(1), now);
    t.broadcast(txn(2), now);
    t.broadcast(txn(1), now);
    let expected = [
        push(1, &[txn(1)]),
        push(2, &[txn(1)]),
        push(1, &[txn(2)]),
        push(2, &[txn(2)]),
    ];
    assert_eq!(drain(&mut t), expected, "a repeated broadcast is a no-op");

    let flush = now + t.config().lazy_delay;
    assert_eq!(t.poll_timeout(), Some(flush));
    t.handle_timeout(flush);
    let ihave = TreeMessage::IHave(vec![txn(1), txn(2)]);
    assert_eq!(drain(&mut t), [send(3, ihave)]);
    assert_eq!(t.poll_timeout(), None);
}

#[test]
fn a_relay_skips_the_sender_and_a_pure_duplicate_prunes_its_link() {
    let (mut t, now) = tree(&[1, 2, 3], &[]);
    assert_eq!(t.on_push(&1, &[txn(5)], now), [txn(5)]);
    assert_eq!(drain(&mut t), [push(2, &[txn(5)]), push(3, &[txn(5)])]);

    assert!(t.on_push(&2, &[txn(5)], now).is_empty());
    assert_eq!(drain(&mut t), [send(2, TreeMessage::Prune)]);
    assert_eq!(t.lazy_peers().collect::<Vec<_>>(), [&2]);

    // The pruned side stops pushing to us.
    let (mut other, now) = tree(&[7], &[]);
    other.on_message(&7, TreeMessage::Prune, now);
    other.broadcast(txn(9), now);
    assert!(drain(&mut other).is_empty());
    assert_eq!(other.lazy_peers().collect::<Vec<_>>(), [&7]);
}

#[test]
fn duplicates_never_prune_below_min_eager() {
    let config = TreeConfig {
        min_eager: 2,
        ..TreeConfig::default()
    };
    let (mut t, now) = tree_with(config, &[1, 2, 3], &[]);
    t.on_push(&1, &[txn(1)], now);
    drain(&mut t);
    t.on_push(&2, &[txn(1)], now);
    assert_eq!(drain(&mut t), [send(2, TreeMessage::Prune)]);
    t.on_push(&3, &[txn(1)], now);
    assert!(drain(&mut t).is_empty(), "two eager links left: no prune");
    assert_eq!(t.eager_peers().count(), 2);
}

#[test]
fn a_missing_transaction_is_grafted_after_the_timeout_then_from_the_next_announcer() {
    let (mut t, now) = tree(&[1], &[2, 3]);
    t.on_message(&2, TreeMessage::IHave(vec![txn(1), txn(2)]), now);
    t.on_message(&3, TreeMessage::IHave(vec![txn(1)]), now);
    assert_eq!(t.missing(), 2);
    let first = now + t.config().graft_timeout;
    assert_eq!(t.poll_timeout(), Some(first));

    // txn 2 arrives by the tree before the timeout: only txn 1 is grafted.
    assert_eq!(t.on_push(&1, &[txn(2)], now), [txn(2)]);
    t.handle_timeout(now + t.config().lazy_delay);
    let announced = drain(&mut t);
    assert_eq!(
        announced.len(),
        2,
        "txn 2 announced to both lazy peers: {announced:?}"
    );
    t.handle_timeout(first);
    assert_eq!(drain(&mut t), [send(2, TreeMessage::Graft(vec![txn(1)]))]);
    assert!(
        t.eager_peers().any(|p| *p == 2),
        "a graft makes the link eager"
    );

    let retry = first + t.config().graft_retry;
    t.handle_timeout(retry);
    assert_eq!(drain(&mut t), [send(3, TreeMessage::Graft(vec![txn(1)]))]);

    // Every announcer asked: the transaction is left to anti-entropy.
    t.handle_timeout(retry + t.config().graft_retry);
    assert!(drain(&mut t).is_empty());
    assert_eq!(t.missing(), 0);
}

#[test]
fn a_graft_is_answered_with_a_push_and_an_eager_link() {
    let (mut t, now) = tree(&[], &[4]);
    t.on_message(&4, TreeMessage::Graft(vec![txn(8)]), now);
    assert_eq!(drain(&mut t), [push(4, &[txn(8)])]);
    assert_eq!(t.eager_peers().collect::<Vec<_>>(), [&4]);
}

#[test]
fn pulled_transactions_are_forwarded_without_touching_the_link_they_came_by() {
    let (mut t, now) = tree(&[1, 2], &[]);
    assert_eq!(t.on_pulled(&9, &[txn(1)], now), [txn(1)]);
    assert_eq!(drain(&mut t), [push(1, &[txn(1)]), push(2, &[txn(1)])]);
    assert!(t.on_pulled(&1, &[txn(1)], now).is_empty());
    assert!(drain(&mut t).is_empty(), "no prune for a pulled duplicate");
    assert_eq!(t.eager_peers().count(), 2);
}

#[test]
fn a_departed_neighbor_is_no_longer_asked() {
    let (mut t, now) = tree(&[1], &[2]);
    t.on_message(&2, TreeMessage::IHave(vec![txn(1)]), now);
    t.neighbor_down(&2);
    t.handle_timeout(now + t.config().graft_timeout);
    assert!(drain(&mut t).is_empty());
    assert_eq!(t.missing(), 0);
    assert!(t.eager_peers().eq([&1]) && t.lazy_peers().next().is_none());
}
