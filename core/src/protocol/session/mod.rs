//! The sync session: a sans-IO state machine for one connection to one peer.
//!
//! The host (QUIC peer actor, simulator, bridge) owns the I/O and the store; the session owns the
//! protocol. The host loop is:
//!
//! 1. [`Session::new`] queues our `Hello`; write whatever [`Session::poll_transmit`] returns.
//! 2. Feed every received chunk to [`Session::handle_bytes`], then drain [`Session::poll_event`]
//!    until `None` and [`Session::poll_transmit`] until `None`.
//! 3. Answer [`Event::NeedTxns`] by loading the ranges from the store and calling
//!    [`Session::send_txns`] (any number of times) and then [`Session::finish_sending`]; apply
//!    [`Event::Received`] transactions and optionally report the new summary with
//!    [`Session::ack`].
//! 4. Arm a timer for [`Session::poll_timeout`] and call [`Session::handle_timeout`] when it
//!    fires. The session never reads the clock: `now` comes in as a parameter.
//!
//! States: `Handshake` (our Hello sent, waiting for the peer's) → `Syncing` (each side sends what
//! the other lacks, then `Done`) → `Established` (both `Done`: [`Event::Complete`]; pushes and
//! acks may continue) → `Closed` or `Failed`. When a side has nothing to send, the session sends
//! its `Done` at once without asking the host, so an idle exchange completes in one round trip.
//!
//! Memory is bounded whatever the peer sends: input is buffered one frame at a time
//! ([`super::FrameDecoder`]), and per-frame events (`Received`, `PeerAck`) are capped in count
//! and bytes ([`SessionConfig`]); a host that stops draining events makes the session fail
//! rather than grow.

use std::collections::VecDeque;
use std::time::Instant;

mod types;

pub use types::{Event, Role, SendError, SessionConfig, SessionError, SessionStats, State};

use super::batch::Batcher;
use super::frame::{EncodeError, Frame, FrameDecoder, Hello, check_summary, encode_frame};
use super::limits::MAX_ERROR_MESSAGE_BYTES;
use super::plan::plan_sync;
use crate::change::{MAX_TXN_BYTES, Txn};
use crate::version::Summary;

/// Frames queued for sending are handed out coalesced up to this many bytes (or one larger frame).
const TRANSMIT_COALESCE_BYTES: usize = 64 * 1024;

/// Our progress in sending the peer what it lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sending {
    /// The peer's Hello has not arrived yet.
    NotPlanned,
    /// `NeedTxns` emitted; the host is sending.
    Requested,
    /// Our `Done` is queued.
    Finished,
}

/// One sync session with one peer. See the module documentation for the host loop.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    role: Role,
    local: Hello,
    peer: Option<Hello>,
    state: State,
    decoder: FrameDecoder,
    outbox: VecDeque<Vec<u8>>,
    outbox_bytes: usize,
    /// Events with, for the capped kinds, the transaction bytes they hold.
    events: VecDeque<(Event, Option<usize>)>,
    event_bytes: usize,
    bounded_events: usize,
    sending: Sending,
    sync_sent: u64,
    sync_received: u64,
    peer_done: bool,
    deadline: Option<Instant>,
    error: Option<SessionError>,
    stats: SessionStats,
}

impl Session {
    /// Starts a session and queues our `Hello`. Fails only if `local` breaks a wire limit (for
    /// example a summary with more than [`super::MAX_SUMMARY_RANGES`] ranges).
    pub fn new(
        config: SessionConfig,
        role: Role,
        local: Hello,
        now: Instant,
    ) -> Result<Self, EncodeError> {
        let hello = encode_frame(&Frame::Hello(local.clone()))?;
        let deadline = Some(now + config.handshake_timeout);
        let mut session = Session {
            config,
            role,
            local,
            peer: None,
            state: State::Handshake,
            decoder: FrameDecoder::new(),
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            events: VecDeque::new(),
            event_bytes: 0,
            bounded_events: 0,
            sending: Sending::NotPlanned,
            sync_sent: 0,
            sync_received: 0,
            peer_done: false,
            deadline,
            error: None,
            stats: SessionStats::default(),
        };
        session.queue_bytes(hello);
        Ok(session)
    }

    /// Feeds bytes received from the peer. Returns the error if the session failed (now or
    /// before); bytes arriving after a close are ignored.
    pub fn handle_bytes(&mut self, now: Instant, mut input: &[u8]) -> Result<(), SessionError> {
        match self.state {
            State::Failed => return Err(self.failure()),
            State::Closed => return Ok(()),
            _ => {}
        }
        if input.is_empty() {
            return Ok(());
        }
        self.stats.bytes_received += input.len() as u64;
        while !input.is_empty() && self.is_open() {
            let taken = self.decoder.push(input);
            input = &input[taken..];
            if let Err(e) = self.drain_frames() {
                return Err(self.fail(e));
            }
        }
        self.rearm(now);
        Ok(())
    }

    /// The next bytes to write to the peer, coalescing small frames.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let mut out = self.outbox.pop_front()?;
        while let Some(next) = self.outbox.front() {
            if out.len() + next.len() > TRANSMIT_COALESCE_BYTES {
                break;
            }
            out.extend_from_slice(next);
            self.outbox.pop_front();
        }
        self.outbox_bytes -= out.len();
        self.stats.bytes_sent += out.len() as u64;
        Some(out)
    }

    /// The next event for the host.
    pub fn poll_event(&mut self) -> Option<Event> {
        let (event, bounded) = self.events.pop_front()?;
        if let Some(bytes) = bounded {
            self.bounded_events -= 1;
            self.event_bytes -= bytes;
        }
        Some(event)
    }

    /// When [`Session::handle_timeout`] should be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Fails the session if its deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| now >= d) {
            let phase = match self.state {
                State::Handshake => "waiting for the peer's Hello",
                _ => "waiting for the peer's sync data",
            };
            self.fail(SessionError::Timeout(phase));
        }
    }

    /// Queues transactions the peer lacks (after [`Event::NeedTxns`]), split into frames.
    pub fn send_txns(&mut self, txns: Vec<Vec<u8>>) -> Result<(), SendError> {
        self.require_sending()?;
        let count = txns.len() as u64;
        self.queue_txns(txns, |txns| Frame::Txns { txns })?;
        self.sync_sent += count;
        Ok(())
    }

    /// Declares that everything the host could send is sent; queues our `Done`.
    pub fn finish_sending(&mut self) -> Result<(), SendError> {
        self.require_sending()?;
        self.queue_done();
        self.maybe_complete();
        Ok(())
    }

    /// Queues new transactions unsolicited (push on write, relay). Allowed once the peer's
    /// `Hello` has been accepted.
    pub fn push(&mut self, txns: Vec<Vec<u8>>) -> Result<(), SendError> {
        self.require_handshake()?;
        self.queue_txns(txns, |txns| Frame::Push { txns })
    }

    /// Tells the peer what we now hold. Allowed once the peer's `Hello` has been accepted.
    pub fn ack(&mut self, summary: Summary) -> Result<(), SendError> {
        self.require_handshake()?;
        check_summary(&summary).map_err(EncodeError::Invalid)?;
        self.queue_frame(&Frame::Ack { summary })?;
        Ok(())
    }

    /// Ends the session normally: queues `Close`. Further input is ignored.
    pub fn close(&mut self) {
        if self.is_open() && self.queue_frame(&Frame::Close).is_ok() {
            self.state = State::Closed;
            self.deadline = None;
        }
    }

    /// Ends the session because the host failed (for example its store could not load the
    /// requested transactions); the peer receives an `Error` frame with `reason`.
    pub fn abort(&mut self, reason: &str) {
        if self.is_open() {
            self.fail(SessionError::Aborted(reason.to_owned()));
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Which side dialed.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Our `Hello`.
    pub fn local(&self) -> &Hello {
        &self.local
    }

    /// The peer's `Hello`, once accepted.
    pub fn peer(&self) -> Option<&Hello> {
        self.peer.as_ref()
    }

    /// Why the session failed, if it did.
    pub fn error(&self) -> Option<&SessionError> {
        self.error.as_ref()
    }

    /// Counters for metrics.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Bytes waiting in the transmit queue.
    pub fn pending_transmit_bytes(&self) -> usize {
        self.outbox_bytes
    }

    /// Bytes buffered from the peer that do not yet form a complete frame.
    pub fn buffered_input_bytes(&self) -> usize {
        self.decoder.buffered()
    }

    fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed | State::Failed)
    }

    fn failure(&self) -> SessionError {
        self.error
            .clone()
            .unwrap_or(SessionError::Protocol("session failed"))
    }

    fn drain_frames(&mut self) -> Result<(), SessionError> {
        while self.is_open() {
            let Some(frame) = self.decoder.next_frame()? else {
                break;
            };
            self.stats.frames_received += 1;
            self.handle_frame(frame)?;
        }
        Ok(())
    }

    fn handle_frame(&mut self, frame: Frame) -> Result<(), SessionError> {
        let syncing = self.state == State::Syncing && !self.peer_done;
        match frame {
            Frame::Error { code, message } => Err(SessionError::Peer { code, message }),
            Frame::Close => {
                self.state = State::Closed;
                self.deadline = None;
                self.emit(Event::Closed);
                Ok(())
            }
            Frame::Hello(hello) if self.state == State::Handshake => self.on_hello(hello),
            _ if self.state == State::Handshake => {
                Err(SessionError::Protocol("first frame is not Hello"))
            }
            Frame::Hello(_) => Err(SessionError::Protocol("second Hello")),
            Frame::Txns { txns } if syncing => self.on_txns(txns, true),
            Frame::Txns { .. } => Err(SessionError::Protocol("Txns after Done")),
            Frame::Done { sent } if syncing => self.on_done(sent),
            Frame::Done { .. } => Err(SessionError::Protocol("second Done")),
            Frame::Push { txns } => self.on_txns(txns, false),
            Frame::Ack { summary } => self.emit_bounded(Event::PeerAck { summary }, 0),
            Frame::Control { .. } => Err(SessionError::Protocol("Control frame in a sync session")),
        }
    }

    fn on_hello(&mut self, hello: Hello) -> Result<(), SessionError> {
        if hello.cluster != self.local.cluster {
            let local = self.local.cluster.clone();
            return Err(SessionError::ClusterMismatch {
                local,
                remote: hello.cluster,
            });
        }
        if hello.replica == self.local.replica {
            return Err(SessionError::SameReplica(hello.replica));
        }
        let plan = plan_sync(&self.local.summary, &hello.summary);
        self.state = State::Syncing;
        self.emit(Event::PeerHello {
            hello: hello.clone(),
            missing: plan.receive_count,
        });
        if plan.send.is_empty() {
            self.queue_done();
        } else {
            self.sending = Sending::Requested;
            let collections = hello.collections.clone();
            self.emit(Event::NeedTxns {
                ranges: plan.send,
                collections,
            });
        }
        self.peer = Some(hello);
        Ok(())
    }

    fn on_txns(&mut self, txns: Vec<Vec<u8>>, sync: bool) -> Result<(), SessionError> {
        let count = txns.len() as u64;
        let bytes = txns.iter().map(Vec::len).sum();
        self.stats.txns_received += count;
        if sync {
            self.sync_received += count;
        }
        if txns.is_empty() {
            return Ok(());
        }
        let (txns, rejected) = decode_txns(&txns);
        self.emit_bounded(Event::Received { txns, rejected }, bytes)
    }

    fn on_done(&mut self, sent: u64) -> Result<(), SessionError> {
        if sent != self.sync_received {
            return Err(SessionError::Protocol(
                "Done count differs from transactions received",
            ));
        }
        self.peer_done = true;
        self.maybe_complete();
        Ok(())
    }

    fn maybe_complete(&mut self) {
        if self.state == State::Syncing && self.peer_done && self.sending == Sending::Finished {
            self.state = State::Established;
            self.deadline = None;
            self.emit(Event::Complete {
                sent: self.sync_sent,
                received: self.sync_received,
            });
        }
    }

    /// Re-arms the timer after input: the handshake deadline stays; while we wait for the
    /// peer's sync data the idle timeout restarts; otherwise no deadline.
    fn rearm(&mut self, now: Instant) {
        if self.state == State::Syncing && !self.peer_done {
            self.deadline = self.config.idle_timeout.map(|t| now + t);
        } else if self.state != State::Handshake {
            self.deadline = None;
        }
    }

    /// Events that happen once per session are never refused.
    fn emit(&mut self, event: Event) {
        self.events.push_back((event, None));
    }

    /// Events that a peer can cause once per frame are capped.
    fn emit_bounded(&mut self, event: Event, bytes: usize) -> Result<(), SessionError> {
        if self.bounded_events >= self.config.max_pending_events {
            return Err(SessionError::Overflow("event"));
        }
        if self.event_bytes + bytes > self.config.max_pending_event_bytes {
            return Err(SessionError::Overflow("received-transaction"));
        }
        self.bounded_events += 1;
        self.event_bytes += bytes;
        self.events.push_back((event, Some(bytes)));
        Ok(())
    }

    /// Moves to `Failed`, replaces the transmit queue by an `Error` frame for the peer (unless
    /// it sent the error) and queues the `Failed` event. Returns the error for convenience.
    fn fail(&mut self, err: SessionError) -> SessionError {
        // Frames not yet handed out are whole, so dropping them keeps the stream well framed;
        // the peer only needs the reason.
        self.outbox.clear();
        self.outbox_bytes = 0;
        if let Some(code) = err.reply_code() {
            let message = truncate(err.to_string(), MAX_ERROR_MESSAGE_BYTES);
            // An Error frame within the limits always encodes.
            let _ = self.queue_frame(&Frame::Error { code, message });
        }
        self.state = State::Failed;
        self.deadline = None;
        self.error = Some(err.clone());
        self.emit(Event::Failed(err.clone()));
        err
    }

    fn require_sending(&self) -> Result<(), SendError> {
        match (self.is_open(), self.sending) {
            (false, _) => Err(SendError::Closed),
            (true, Sending::Requested) => Ok(()),
            (true, Sending::NotPlanned) => {
                Err(SendError::InvalidState("no NeedTxns requested yet"))
            }
            (true, Sending::Finished) => Err(SendError::InvalidState("sending already finished")),
        }
    }

    fn require_handshake(&self) -> Result<(), SendError> {
        match self.state {
            State::Closed | State::Failed => Err(SendError::Closed),
            State::Handshake => Err(SendError::InvalidState("the peer's Hello has not arrived")),
            State::Syncing | State::Established => Ok(()),
        }
    }

    fn queue_done(&mut self) {
        self.sending = Sending::Finished;
        // A Done frame always encodes.
        let _ = self.queue_frame(&Frame::Done {
            sent: self.sync_sent,
        });
    }

    /// Validates every transaction before queueing any, then packs them into frames.
    fn queue_txns(
        &mut self,
        txns: Vec<Vec<u8>>,
        frame: fn(Vec<Vec<u8>>) -> Frame,
    ) -> Result<(), SendError> {
        if self.outbox_bytes >= self.config.max_pending_transmit_bytes {
            return Err(SendError::QueueFull {
                pending: self.outbox_bytes,
            });
        }
        if let Some((index, t)) = txns
            .iter()
            .enumerate()
            .find(|(_, t)| t.is_empty() || t.len() > MAX_TXN_BYTES)
        {
            return Err(SendError::InvalidTxn {
                index,
                len: t.len(),
            });
        }
        self.stats.txns_sent += txns.len() as u64;
        let mut batcher = Batcher::new(self.config.target_frame_bytes);
        for txn in txns {
            if let Some(batch) = batcher.add(txn) {
                self.queue_frame(&frame(batch))?;
            }
        }
        if let Some(batch) = batcher.take() {
            self.queue_frame(&frame(batch))?;
        }
        Ok(())
    }

    fn queue_frame(&mut self, frame: &Frame) -> Result<(), EncodeError> {
        let bytes = encode_frame(frame)?;
        self.queue_bytes(bytes);
        Ok(())
    }

    fn queue_bytes(&mut self, bytes: Vec<u8>) {
        self.stats.frames_sent += 1;
        self.outbox_bytes += bytes.len();
        self.outbox.push_back(bytes);
    }
}

/// Decodes each transaction; failures become human-readable rejections.
fn decode_txns(raw: &[Vec<u8>]) -> (Vec<Txn>, Vec<String>) {
    let mut txns = Vec::with_capacity(raw.len());
    let mut rejected = Vec::new();
    for (i, bytes) in raw.iter().enumerate() {
        match Txn::decode(bytes) {
            Ok(txn) => txns.push(txn),
            Err(e) => rejected.push(format!("txn #{i}: {e}")),
        }
    }
    (txns, rejected)
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let cut = (0..=max)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(cut);
    }
    s
}
