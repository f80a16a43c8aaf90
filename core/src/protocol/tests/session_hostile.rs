//! A single session fed hand-made frames: hostile peers, protocol violations, timeouts, misuse.

use std::time::{Duration, Instant};

use crate::ids::ReplicaId;
use crate::protocol::frame::{DecodeError, ErrorCode, Frame, FrameDecoder, Hello, encode_frame};
use crate::protocol::limits::LEN_PREFIX_BYTES;
use crate::protocol::session::{
    Event, Role, SendError, Session, SessionConfig, SessionError, State,
};
use crate::protocol::testkit::{MemReplica, drain};

fn hello(id: u8, cluster: &str) -> Hello {
    MemReplica::new(ReplicaId([id; 16])).hello(cluster)
}

fn session_with(config: SessionConfig, now: Instant) -> Session {
    let mut s = Session::new(config, Role::Responder, hello(1, "c"), now).unwrap();
    drain(&mut s);
    s
}

fn session(now: Instant) -> Session {
    session_with(SessionConfig::default(), now)
}

/// A session that has accepted the peer's Hello (nothing to send either way).
fn handshaken(now: Instant) -> Session {
    let mut s = session(now);
    s.handle_bytes(now, &encode_frame(&Frame::Hello(hello(2, "c"))).unwrap())
        .unwrap();
    events(&mut s);
    drain(&mut s);
    s
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut d = FrameDecoder::new();
    assert_eq!(d.push(bytes), bytes.len());
    std::iter::from_fn(|| d.next_frame().unwrap()).collect()
}

/// The code of the Error frame the session queued for its peer, if any.
fn sent_error(s: &mut Session) -> Option<ErrorCode> {
    frames(&drain(s)).into_iter().find_map(|f| match f {
        Frame::Error { code, .. } => Some(code),
        _ => None,
    })
}

fn push_frame(txn_len: usize) -> Vec<u8> {
    encode_frame(&Frame::Push {
        txns: vec![vec![0xee; txn_len]],
    })
    .unwrap()
}

#[test]
fn huge_length_prefix_fails_after_four_bytes() {
    let now = Instant::now();
    let mut s = session(now);
    let err = s
        .handle_bytes(now, &[0x7f, 0xff, 0xff, 0xff, 1, 2, 3])
        .unwrap_err();
    assert!(
        matches!(err, SessionError::Decode(DecodeError::Oversized { .. })),
        "{err}"
    );
    assert!(s.buffered_input_bytes() <= FrameDecoder::CAPACITY);
    assert_eq!(s.state(), State::Failed);
    assert_eq!(sent_error(&mut s), Some(ErrorCode::Limit));
    assert!(matches!(events(&mut s).last(), Some(Event::Failed(_))));
    // Later input gets the same error and no new work.
    assert_eq!(s.handle_bytes(now, b"more").unwrap_err(), err);
    assert!(s.poll_transmit().is_none());
}

#[test]
fn unknown_protocol_version_is_named_and_reported_to_the_peer() {
    let now = Instant::now();
    let mut s = session(now);
    let mut bytes = encode_frame(&Frame::Hello(hello(2, "c"))).unwrap();
    bytes[LEN_PREFIX_BYTES] = 2;
    let err = s.handle_bytes(now, &bytes).unwrap_err();
    assert_eq!(
        err,
        SessionError::Decode(DecodeError::UnsupportedVersion(2))
    );
    assert!(
        err.to_string().contains("unsupported protocol version 2"),
        "{err}"
    );
    assert_eq!(sent_error(&mut s), Some(ErrorCode::UnsupportedVersion));
}

#[test]
fn endless_frames_to_a_host_that_does_not_drain_fail_the_session() {
    let now = Instant::now();
    let mut s = handshaken(now);
    let flood: Vec<u8> = (0..5000).flat_map(|_| push_frame(10)).collect();
    let err = s.handle_bytes(now, &flood).unwrap_err();
    assert_eq!(err, SessionError::Overflow("event"));
    assert_eq!(
        s.stats().frames_received,
        1 + 1024 + 1,
        "stopped at the event cap"
    );
    assert_eq!(sent_error(&mut s), Some(ErrorCode::Limit));
}

#[test]
fn endless_large_frames_are_capped_by_bytes() {
    let now = Instant::now();
    let mut s = handshaken(now);
    let frame = push_frame(crate::change::MAX_TXN_BYTES);
    let mut failed_at = None;
    for i in 0..64 {
        if let Err(e) = s.handle_bytes(now, &frame) {
            assert_eq!(e, SessionError::Overflow("received-transaction"));
            failed_at = Some(i);
            break;
        }
    }
    // 32 MiB of undrained events hold 32 frames of 1 MiB.
    assert_eq!(failed_at, Some(32));
}

#[test]
fn endless_frames_to_a_draining_host_keep_memory_flat() {
    let now = Instant::now();
    let mut s = handshaken(now);
    let frame = push_frame(200);
    for chunk in frame.repeat(20_000).chunks(1500) {
        s.handle_bytes(now, chunk).unwrap();
        for event in events(&mut s) {
            let Event::Received { txns, rejected } = event else {
                panic!("{event:?}")
            };
            assert_eq!(
                (txns.len(), rejected.len()),
                (0, 1),
                "0xee.. is not a transaction"
            );
        }
        assert!(s.buffered_input_bytes() < frame.len());
    }
    assert_eq!(s.stats().txns_received, 20_000);
    assert_eq!(
        s.state(),
        State::Syncing,
        "pushes do not replace the peer's Done"
    );
}

#[test]
fn silent_peer_times_out_in_handshake_and_while_syncing() {
    let now = Instant::now();
    let mut s = session(now);
    let deadline = s.poll_timeout().unwrap();
    assert_eq!(deadline, now + Duration::from_secs(10));
    s.handle_timeout(deadline - Duration::from_millis(1));
    assert_eq!(s.state(), State::Handshake);
    s.handle_timeout(deadline);
    assert_eq!(
        s.error(),
        Some(&SessionError::Timeout("waiting for the peer's Hello"))
    );
    assert_eq!(sent_error(&mut s), Some(ErrorCode::Timeout));

    // The peer says Hello, then sends half a frame and stalls before Done.
    let mut s = session(now);
    let mut peer = MemReplica::new(ReplicaId([2; 16]));
    peer.write_rows(1, 10);
    s.handle_bytes(now, &encode_frame(&Frame::Hello(peer.hello("c"))).unwrap())
        .unwrap();
    let later = now + Duration::from_secs(5);
    s.handle_bytes(later, &push_frame(10)[..5]).unwrap();
    assert_eq!(s.poll_timeout(), Some(later + Duration::from_secs(30)));
    s.handle_timeout(later + Duration::from_secs(30));
    assert_eq!(s.state(), State::Failed);
}

#[test]
fn no_deadline_once_complete() {
    let now = Instant::now();
    let s = handshaken(now);
    // Idle peers: our Done went out at once; theirs has not arrived, so we wait for it.
    assert!(s.poll_timeout().is_some());
    let mut s = s;
    s.handle_bytes(now, &encode_frame(&Frame::Done { sent: 0 }).unwrap())
        .unwrap();
    assert!(matches!(
        events(&mut s)[..],
        [Event::Complete {
            sent: 0,
            received: 0
        }]
    ));
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn protocol_violations_fail_with_a_reason() {
    let now = Instant::now();
    let cases: Vec<(Vec<Frame>, &str)> = vec![
        (vec![Frame::Done { sent: 0 }], "first frame is not Hello"),
        (
            vec![Frame::Hello(hello(2, "c")), Frame::Hello(hello(2, "c"))],
            "second Hello",
        ),
        (
            vec![Frame::Hello(hello(2, "c")), Frame::Done { sent: 3 }],
            "Done count",
        ),
        (
            vec![
                Frame::Hello(hello(2, "c")),
                Frame::Done { sent: 0 },
                Frame::Txns {
                    txns: vec![vec![1]],
                },
            ],
            "Txns after Done",
        ),
    ];
    for (frames, reason) in cases {
        let mut s = session(now);
        let bytes: Vec<u8> = frames
            .iter()
            .flat_map(|f| encode_frame(f).unwrap())
            .collect();
        let err = s.handle_bytes(now, &bytes).unwrap_err();
        assert!(matches!(err, SessionError::Protocol(_)), "{err}");
        assert!(err.to_string().contains(reason), "{err} lacks {reason}");
        assert_eq!(sent_error(&mut s), Some(ErrorCode::Protocol));
    }
}

#[test]
fn failure_drops_queued_data_and_sends_only_the_reason() {
    let now = Instant::now();
    let mut s = handshaken(now);
    s.push(vec![vec![1; 1000]; 10]).unwrap();
    s.handle_timeout(now + Duration::from_secs(3600));
    let sent = frames(&drain(&mut s));
    assert!(
        matches!(
            &sent[..],
            [Frame::Error {
                code: ErrorCode::Timeout,
                ..
            }]
        ),
        "{sent:?}"
    );
    assert_eq!(s.pending_transmit_bytes(), 0);
}

#[test]
fn peer_error_is_reported_without_a_reply() {
    let now = Instant::now();
    let mut s = session(now);
    let frame = Frame::Error {
        code: ErrorCode::Internal,
        message: "disk full".into(),
    };
    let err = s
        .handle_bytes(now, &encode_frame(&frame).unwrap())
        .unwrap_err();
    assert_eq!(
        err,
        SessionError::Peer {
            code: ErrorCode::Internal,
            message: "disk full".into()
        }
    );
    assert_eq!(sent_error(&mut s), None);
}

#[test]
fn host_misuse_is_refused_without_side_effects() {
    let now = Instant::now();
    let mut s = session(now);
    assert!(matches!(
        s.send_txns(vec![vec![1]]),
        Err(SendError::InvalidState(_))
    ));
    assert!(matches!(
        s.push(vec![vec![1]]),
        Err(SendError::InvalidState(_))
    ));
    let mut peer = MemReplica::new(ReplicaId([2; 16]));
    peer.write_rows(1, 10);
    let mut mine = MemReplica::new(ReplicaId([1; 16]));
    mine.write_rows(1, 10);
    let mut s = Session::new(
        SessionConfig::default(),
        Role::Initiator,
        mine.hello("c"),
        now,
    )
    .unwrap();
    s.handle_bytes(now, &encode_frame(&Frame::Hello(peer.hello("c"))).unwrap())
        .unwrap();
    drain(&mut s);
    let err = s.send_txns(vec![vec![1], vec![], vec![2]]).unwrap_err();
    assert!(
        matches!(err, SendError::InvalidTxn { index: 1, len: 0 }),
        "{err}"
    );
    assert!(s.poll_transmit().is_none(), "nothing queued");
    s.send_txns(mine.load(&[(mine.id, 1..=1)])).unwrap();
    s.finish_sending().unwrap();
    assert!(matches!(
        s.finish_sending(),
        Err(SendError::InvalidState(_))
    ));
    let sent = frames(&drain(&mut s));
    assert!(
        matches!(&sent[..], [Frame::Txns { txns }, Frame::Done { sent: 1 }] if txns.len() == 1)
    );
}

#[test]
fn full_transmit_queue_pushes_back() {
    let now = Instant::now();
    let config = SessionConfig {
        max_pending_transmit_bytes: 1000,
        ..SessionConfig::default()
    };
    let mut s = session_with(config, now);
    s.handle_bytes(now, &encode_frame(&Frame::Hello(hello(2, "c"))).unwrap())
        .unwrap();
    s.push(vec![vec![1; 2000]]).unwrap();
    let err = s.push(vec![vec![1; 10]]).unwrap_err();
    assert!(matches!(err, SendError::QueueFull { .. }), "{err}");
    drain(&mut s);
    s.push(vec![vec![1; 10]]).unwrap();
}

#[test]
fn large_sends_are_split_into_frames_within_limits() {
    let now = Instant::now();
    let mut s = handshaken(now);
    let txns: Vec<Vec<u8>> = (0..40).map(|i| vec![i; 100_000]).collect();
    s.push(txns.clone()).unwrap();
    let bytes = drain(&mut s);
    let got = frames(&bytes);
    assert!(got.len() >= 16, "4 MB in 256 KiB frames: {}", got.len());
    let mut flat = Vec::new();
    for f in got {
        let Frame::Push { txns } = f else {
            panic!("{f:?}")
        };
        flat.extend(txns);
    }
    assert_eq!(flat, txns);
}

#[test]
fn input_after_close_is_ignored() {
    let now = Instant::now();
    let mut s = handshaken(now);
    s.handle_bytes(now, &encode_frame(&Frame::Close).unwrap())
        .unwrap();
    assert!(matches!(events(&mut s)[..], [Event::Closed]));
    s.handle_bytes(now, b"garbage after close").unwrap();
    assert_eq!(s.state(), State::Closed);
}
