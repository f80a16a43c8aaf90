use super::*;

const MS: Duration = Duration::from_millis(1);

fn node(me: u32) -> (Overlay<u32>, Instant) {
    let now = Instant::now();
    let o = Overlay::new(me, OverlayConfig::default(), u64::from(me), now).expect("valid config");
    (o, now)
}

fn drain(o: &mut Overlay<u32>) -> Vec<OverlayAction<u32>> {
    std::iter::from_fn(|| o.poll_action()).collect()
}

fn sends(actions: &[OverlayAction<u32>]) -> Vec<(u32, OverlayMessage<u32>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            OverlayAction::Send { to, message } => Some((*to, message.clone())),
            _ => None,
        })
        .collect()
}

/// A node whose active view is exactly `peers` (each accepted a neighbor request).
fn with_active(me: u32, peers: &[u32]) -> (Overlay<u32>, Instant) {
    let (mut o, now) = node(me);
    for &p in peers {
        o.on_message(
            p,
            OverlayMessage::Neighbor {
                priority: Priority::Low,
            },
            now,
        );
    }
    drain(&mut o);
    assert_eq!(o.active(), peers);
    (o, now)
}

#[test]
fn config_validation_names_the_problem() {
    let bad = OverlayConfig {
        passive_walk: 7,
        ..OverlayConfig::default()
    };
    assert_eq!(bad.validate(), Err(OverlayConfigError::PassiveWalk));
    let zero = OverlayConfig {
        active_capacity: 0,
        ..OverlayConfig::default()
    };
    assert!(Overlay::new(1u32, zero, 0, Instant::now()).is_err());
}

#[test]
fn join_is_accepted_symmetrically_and_walks_through_the_other_neighbors() {
    let (mut contact, now) = with_active(1, &[2, 3]);
    let (mut joiner, _) = node(9);
    joiner.join(1, now);
    assert_eq!(sends(&drain(&mut joiner)), [(1, OverlayMessage::Join)]);

    contact.on_message(9, OverlayMessage::Join, now);
    let out = drain(&mut contact);
    assert!(contact.is_active(&9));
    assert!(out.contains(&OverlayAction::NeighborUp(9)));
    let walk = OverlayMessage::ForwardJoin { joiner: 9, ttl: 6 };
    let s = sends(&out);
    assert!(s.contains(&(9, OverlayMessage::Accept)));
    assert!(s.contains(&(2, walk.clone())) && s.contains(&(3, walk)));

    joiner.on_message(1, OverlayMessage::Accept, now);
    assert_eq!(joiner.active(), [1]);
    assert_eq!(joiner.pending(), 0);
}

#[test]
fn forward_join_ends_in_a_high_priority_request_and_passes_the_passive_hop() {
    let (mut lonely, now) = with_active(1, &[2]);
    lonely.on_message(2, OverlayMessage::ForwardJoin { joiner: 9, ttl: 5 }, now);
    let expected = OverlayMessage::Neighbor {
        priority: Priority::High,
    };
    assert_eq!(sends(&drain(&mut lonely)), [(9, expected)]);

    let (mut busy, now) = with_active(1, &[2, 3, 4]);
    busy.on_message(2, OverlayMessage::ForwardJoin { joiner: 9, ttl: 3 }, now);
    let s = sends(&drain(&mut busy));
    assert_eq!(s.len(), 1);
    assert!(matches!(
        s[0],
        (3 | 4, OverlayMessage::ForwardJoin { joiner: 9, ttl: 2 })
    ));
    assert!(
        busy.passive().contains(&9),
        "ttl == passive_walk keeps the joiner"
    );
}

#[test]
fn a_full_view_refuses_low_priority_and_evicts_for_high_priority() {
    let (mut o, now) = with_active(1, &[2, 3, 4, 5, 6]);
    o.on_message(
        7,
        OverlayMessage::Neighbor {
            priority: Priority::Low,
        },
        now,
    );
    let out = drain(&mut o);
    assert!(!o.is_active(&7) && o.passive().contains(&7));
    assert!(sends(&out).contains(&(7, OverlayMessage::Disconnect { alive: true })));
    assert!(out.contains(&OverlayAction::Close(7)));

    o.on_message(
        8,
        OverlayMessage::Neighbor {
            priority: Priority::High,
        },
        now,
    );
    let out = drain(&mut o);
    assert!(o.is_active(&8));
    assert_eq!(o.active().len(), 5, "the view stays bounded");
    let evicted: Vec<u32> = out
        .iter()
        .filter_map(|a| match a {
            OverlayAction::NeighborDown(p) => Some(*p),
            _ => None,
        })
        .collect();
    assert_eq!(evicted.len(), 1);
    assert!(
        o.passive().contains(&evicted[0]),
        "an evicted peer stays a candidate"
    );
    assert!(out.contains(&OverlayAction::Close(evicted[0])));
}

#[test]
fn a_failed_neighbor_is_replaced_from_the_passive_view() {
    let (mut o, now) = with_active(1, &[2, 3, 4, 5, 6]);
    for p in 10..15 {
        o.add_known(p, now);
    }
    assert!(drain(&mut o).is_empty(), "no free slot, no request");
    o.on_peer_failed(&2, now);
    let s = sends(&drain(&mut o));
    assert_eq!(s.len(), 1);
    let (candidate, message) = s[0].clone();
    assert!((10..15).contains(&candidate));
    let low = OverlayMessage::Neighbor {
        priority: Priority::Low,
    };
    assert_eq!(message, low);
    assert!(!o.passive().contains(&2), "a failed peer is forgotten");

    o.on_message(candidate, OverlayMessage::Accept, now);
    assert!(o.is_active(&candidate) && o.active().len() == 5);
}

#[test]
fn an_unanswered_request_times_out_and_the_next_candidate_is_tried() {
    let (mut o, now) = with_active(1, &[]);
    o.add_known(10, now);
    let high = OverlayMessage::Neighbor {
        priority: Priority::High,
    };
    assert_eq!(sends(&drain(&mut o)), [(10, high.clone())]);
    o.add_known(11, now);
    assert_eq!(sends(&drain(&mut o)), [(11, high)]);

    let deadline = now + o.config().neighbor_timeout;
    assert_eq!(o.poll_timeout(), deadline);
    o.handle_timeout(deadline - MS);
    assert!(drain(&mut o).is_empty(), "early wake-up does nothing");
    o.handle_timeout(deadline);
    let out = drain(&mut o);
    assert!(out.contains(&OverlayAction::Close(10)) && out.contains(&OverlayAction::Close(11)));
    assert!(o.passive().is_empty() && o.pending() == 0);

    // A late answer is undone on the other side.
    o.on_message(10, OverlayMessage::Accept, deadline);
    let s = sends(&drain(&mut o));
    assert_eq!(s, [(10, OverlayMessage::Disconnect { alive: true })]);
    assert!(!o.is_active(&10));
}

#[test]
fn a_closed_connection_keeps_the_peer_as_a_candidate_and_refills() {
    let (mut o, now) = with_active(1, &[2, 3, 4, 5, 6]);
    o.on_connection_closed(&2, now);
    let out = drain(&mut o);
    assert!(out.contains(&OverlayAction::NeighborDown(2)));
    // The only candidate is the peer itself: asked again (it may have only restarted).
    assert!(sends(&out).contains(&(
        2,
        OverlayMessage::Neighbor {
            priority: Priority::Low
        }
    )));
}

#[test]
fn shuffle_walks_and_the_reply_fills_both_passive_views() {
    let (mut o, now) = with_active(1, &[2]);
    o.add_known(20, now);
    // 20 refuses to be a neighbor (its view is full) but stays a passive candidate.
    o.on_message(20, OverlayMessage::Disconnect { alive: true }, now);
    drain(&mut o);
    o.handle_timeout(now + o.config().shuffle_interval);
    let s = sends(&drain(&mut o));
    let Some((
        2,
        OverlayMessage::Shuffle {
            origin: 1,
            peers,
            ttl: 6,
        },
    )) = s.last().cloned()
    else {
        panic!("expected a shuffle to the only neighbor, got {s:?}");
    };
    assert!(peers.contains(&1) && peers.contains(&20));

    // At the end of the walk (a node with one neighbor) the shuffle is answered.
    let (mut end, _) = with_active(5, &[4]);
    for p in 30..40 {
        end.add_known(p, now);
    }
    drain(&mut end);
    let shuffle = OverlayMessage::Shuffle {
        origin: 1,
        peers: peers.clone(),
        ttl: 3,
    };
    end.on_message(4, shuffle, now);
    let s = sends(&drain(&mut end));
    let Some((1, OverlayMessage::ShuffleReply { peers: reply })) = s.last().cloned() else {
        panic!("expected a reply to the origin, got {s:?}");
    };
    assert_eq!(reply.len(), peers.len());
    assert!(end.passive().contains(&20) && end.passive().contains(&1));

    o.on_message(
        5,
        OverlayMessage::ShuffleReply {
            peers: reply.clone(),
        },
        now,
    );
    assert!(reply.iter().all(|p| o.passive().contains(p)));
    assert!(o.passive().len() <= o.config().passive_capacity);
}

#[test]
fn graceful_leave_tells_every_neighbor() {
    let (mut o, now) = with_active(1, &[2, 3]);
    o.leave();
    let s = sends(&drain(&mut o));
    let bye = OverlayMessage::Disconnect { alive: false };
    assert_eq!(s, [(2, bye.clone()), (3, bye.clone())]);
    let (mut peer, _) = with_active(2, &[1, 7]);
    peer.on_message(1, bye, now);
    assert!(!peer.is_active(&1) && !peer.passive().contains(&1));
}

#[test]
fn a_refused_request_is_retried_at_the_next_refill_tick() {
    let (mut o, now) = with_active(1, &[2, 3, 4, 5]);
    o.add_known(20, now);
    drain(&mut o);
    o.on_message(20, OverlayMessage::Disconnect { alive: true }, now);
    assert!(drain(&mut o).is_empty(), "a refusal is not retried at once");
    let tick = now + o.config().refill_interval;
    assert!(o.poll_timeout() <= tick);
    o.handle_timeout(tick);
    let s = sends(&drain(&mut o));
    assert!(s.contains(&(
        20,
        OverlayMessage::Neighbor {
            priority: Priority::Low
        }
    )));
}

#[test]
fn an_oversized_shuffle_from_the_network_is_cut_to_the_configured_length() {
    let (mut o, now) = with_active(1, &[2]);
    let flood: Vec<u32> = (100..1100).collect();
    o.on_message(
        3,
        OverlayMessage::ShuffleReply {
            peers: flood.clone(),
        },
        now,
    );
    o.on_message(
        2,
        OverlayMessage::Shuffle {
            origin: 4,
            peers: flood,
            ttl: 0,
        },
        now,
    );
    let s = sends(&drain(&mut o));
    let Some((4, OverlayMessage::ShuffleReply { peers })) = s.last().cloned() else {
        panic!("expected a reply to the origin, got {s:?}");
    };
    assert_eq!(
        peers.len(),
        8,
        "answered with as many as a valid shuffle carries"
    );
    assert!(o.passive().len() <= 16);
}

#[test]
fn a_node_two_slots_short_asks_with_high_priority_one_slot_short_with_low() {
    let priorities = |active: &[u32]| {
        let (mut o, now) = with_active(1, active);
        o.add_known(9, now);
        sends(&drain(&mut o))
            .into_iter()
            .filter_map(|(to, m)| match m {
                OverlayMessage::Neighbor { priority } if to == 9 => Some(priority),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // The paper's rule asked an island of three (two links each) to be refused forever.
    assert_eq!(priorities(&[]), [Priority::High]);
    assert_eq!(priorities(&[2, 3]), [Priority::High]);
    assert_eq!(priorities(&[2, 3, 4]), [Priority::High]);
    assert_eq!(priorities(&[2, 3, 4, 5]), [Priority::Low]);
    assert_eq!(
        priorities(&[2, 3, 4, 5, 6]),
        Vec::<Priority>::new(),
        "no free slot"
    );
}
