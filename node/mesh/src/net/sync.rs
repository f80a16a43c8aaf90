//! One anti-entropy round on one bidirectional QUIC stream, driving a sans-IO
//! [`Session`] with the stream's bytes.
//!
//! Both ends run the same loop ([`SyncStream::run`]); only the [`Role`] differs. The loop never
//! blocks writing while it could be reading: reads (`read_chunk`) and writes (`write`) are both
//! cancel-safe in quinn and sit in one `select!`, so two peers sending each other large
//! differences cannot deadlock on flow control. Transactions are loaded from the backend only
//! while the session's transmit queue is below [`SEND_LOW_WATER`], so a slow reader bounds what
//! we buffer for it.
//!
//! Sequence: `Hello` both ways → `Txns…` + `Done` both ways (`Complete`) → each side sends an
//! `Ack` with its summary after applying → on the peer's `Ack` (or `Close`), `Close` and finish
//! the stream → wait for the peer's end of stream. Every received byte first passes the
//! [`FrameGuard`]; an oversized frame resets the stream at once.

use std::time::{Duration, Instant};

use meshlite_core::protocol::{
    Event, Hello, Role, SendError, Session, SessionConfig, SessionError, State,
};
use meshlite_core::{ReplicaId, Txn};
use quinn::{RecvStream, SendStream, VarInt};
use tokio_util::sync::CancellationToken;

use super::events::SyncStats;
use super::frame_guard::{FrameGuard, OversizedFrame};
use crate::replica::{Replica, ReplicaError, TxnRanges};

/// Largest chunk read from a stream at once.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Transactions are loaded for the peer only while fewer bytes than this wait to be written.
pub const SEND_LOW_WATER: usize = 1024 * 1024;
/// Byte budget of one backend load.
pub const LOAD_BUDGET_BYTES: usize = 512 * 1024;
/// How long a failing session may take to deliver its `Error` frame before the stream is reset.
pub const ERROR_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Stream error code: the peer sent a frame above our limit.
pub const STREAM_FRAME_TOO_LARGE: VarInt = VarInt::from_u32(0x10);
/// Stream error code: the session failed (protocol error, timeout, storage failure).
pub const STREAM_SESSION_FAILED: VarInt = VarInt::from_u32(0x11);

/// Why a sync round failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// No connection to that peer.
    #[error("not connected to node {0}")]
    NotConnected(crate::fleet::NodeId),
    /// Too many rounds with that peer are already running.
    #[error("a sync with this peer is already running")]
    Busy,
    /// The protocol session failed (either side's fault; see the inner error).
    #[error("sync session: {0}")]
    Session(#[from] SessionError),
    /// Our `Hello` could not be encoded (the local summary breaks a wire limit).
    #[error("cannot start session: {0}")]
    Start(#[from] meshlite_core::protocol::EncodeError),
    /// Queuing data in the session failed.
    #[error("sending: {0}")]
    Send(#[from] SendError),
    /// The peer sent a frame above our limit; the stream was reset.
    #[error(transparent)]
    Oversized(#[from] OversizedFrame),
    /// The QUIC stream or connection failed.
    #[error("stream: {0}")]
    Stream(String),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] ReplicaError),
    /// The round exceeded the configured sync timeout.
    #[error("sync round timed out")]
    Timeout,
    /// The node is shutting down.
    #[error("shutting down")]
    Cancelled,
    /// The transport is gone (shut down, or its actor failed).
    #[error("transport closed")]
    Closed,
}

/// Parameters shared by every sync stream of a node.
#[derive(Debug, Clone)]
pub struct SyncParams {
    /// Our cluster id as text (carried in `Hello`).
    pub cluster: String,
    /// Session tunables.
    pub session: SessionConfig,
    /// Largest frame accepted from the peer.
    pub max_frame_bytes: usize,
    /// Failure guard for the whole round.
    pub timeout: Duration,
}

/// Progress of closing down a completed round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Syncing, or waiting for the peer's ack.
    Running,
    /// `Close` queued; flushing, then finishing our side.
    Closing,
    /// Our side finished; waiting for the peer's end of stream.
    Draining,
}

/// One side of one sync round.
pub struct SyncStream<B> {
    session: Session,
    send: SendStream,
    recv: RecvStream,
    guard: FrameGuard,
    backend: B,
    /// The chunk being written and how much of it is written.
    out: Option<(Vec<u8>, usize)>,
    /// Ranges we still owe the peer (after `NeedTxns`).
    owed: Option<TxnRanges>,
    peer_replica: Option<ReplicaId>,
    complete: bool,
    peer_acked: bool,
    recv_done: bool,
    phase: Phase,
    stats: SyncStats,
}

impl<B> std::fmt::Debug for SyncStream<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncStream")
            .field("role", &self.session.role())
            .field("state", &self.session.state())
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl<B: Replica> SyncStream<B> {
    /// Prepares a round: reads our state from the backend and queues our `Hello`.
    pub async fn start(
        role: Role,
        (send, recv): (SendStream, RecvStream),
        backend: B,
        params: &SyncParams,
    ) -> Result<Self, SyncError> {
        let local = backend.local_state().await?;
        let hello = Hello {
            cluster: params.cluster.clone(),
            replica: local.replica,
            schema_version: local.schema_version,
            collections: None,
            summary: local.summary,
        };
        let session = Session::new(params.session.clone(), role, hello, Instant::now())?;
        Ok(Self {
            session,
            send,
            recv,
            guard: FrameGuard::new(params.max_frame_bytes),
            backend,
            out: None,
            owed: None,
            peer_replica: None,
            complete: false,
            peer_acked: false,
            recv_done: false,
            phase: Phase::Running,
            stats: SyncStats::default(),
        })
    }

    /// Runs the round to its end. `on_activity` is called whenever bytes arrive (peer liveness).
    pub async fn run(
        mut self,
        cancel: &CancellationToken,
        timeout: Duration,
        on_activity: &(dyn Fn() + Send + Sync),
    ) -> Result<SyncStats, SyncError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let result = self.drive(cancel, deadline, on_activity).await;
        self.stats.duration = started.elapsed();
        self.stats.peer_replica = self.peer_replica;
        match result {
            Ok(()) => Ok(self.stats),
            Err(e) => {
                self.fail(&e).await;
                Err(e)
            }
        }
    }

    async fn drive(
        &mut self,
        cancel: &CancellationToken,
        deadline: tokio::time::Instant,
        on_activity: &(dyn Fn() + Send + Sync),
    ) -> Result<(), SyncError> {
        loop {
            self.pump().await?;
            if self.phase == Phase::Draining && self.recv_done {
                return Ok(());
            }
            let wake = self
                .session
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let wake = wake.map_or(deadline, |w| w.min(deadline));
            let out = self.out.as_ref().map(|(buf, pos)| &buf[*pos..]);
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(SyncError::Cancelled),
                written = write_some(&mut self.send, out), if out.is_some() => {
                    self.advance_out(written?);
                }
                chunk = self.recv.read_chunk(READ_CHUNK_BYTES, true), if !self.recv_done => {
                    let chunk = chunk.map_err(|e| SyncError::Stream(e.to_string()))?;
                    on_activity();
                    self.on_chunk(chunk.as_ref().map(|c| &c.bytes[..]))?;
                }
                () = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(SyncError::Timeout);
                    }
                    self.session.handle_timeout(Instant::now());
                }
            }
        }
    }

    /// Feeds received bytes (or the end of the stream) to the session.
    fn on_chunk(&mut self, chunk: Option<&[u8]>) -> Result<(), SyncError> {
        let Some(bytes) = chunk else {
            self.recv_done = true;
            if !self.complete {
                return Err(SyncError::Stream("peer ended the stream early".into()));
            }
            // A peer that finishes without acking has nothing more to say: close too.
            self.peer_acked = true;
            return Ok(());
        };
        self.stats.bytes_received += bytes.len() as u64;
        if self.phase == Phase::Draining {
            // After our Close the session ignores input; the guard still bounds it.
            return Ok(self.guard.check(bytes)?);
        }
        self.guard.check(bytes)?;
        Ok(self.session.handle_bytes(Instant::now(), bytes)?)
    }

    /// Drains session events and output, loads owed transactions, and advances the close-down.
    async fn pump(&mut self) -> Result<(), SyncError> {
        loop {
            while let Some(event) = self.session.poll_event() {
                self.on_event(event).await?;
            }
            if !self.feed_owed().await? {
                break;
            }
        }
        if self.out.is_none() {
            self.out = self.session.poll_transmit().map(|b| (b, 0));
        }
        self.advance_phase().await
    }

    async fn on_event(&mut self, event: Event) -> Result<(), SyncError> {
        match event {
            Event::PeerHello { hello, .. } => self.peer_replica = Some(hello.replica),
            Event::NeedTxns { ranges, .. } => self.owed = Some(ranges),
            Event::Received { txns, rejected } => self.apply(txns, rejected.len()).await?,
            Event::PeerAck { summary } => {
                self.peer_acked = true;
                if let Some(peer) = self.peer_replica {
                    self.backend.peer_summary(peer, summary).await?;
                }
            }
            Event::Complete { .. } => self.on_complete().await?,
            Event::Closed => self.peer_acked = true,
            Event::Failed(e) => return Err(e.into()),
            // Future event kinds carry nothing this driver needs.
            _ => {}
        }
        Ok(())
    }

    async fn apply(&mut self, txns: Vec<Txn>, rejected: usize) -> Result<(), SyncError> {
        self.stats.txns_received += (txns.len() + rejected) as u64;
        if txns.is_empty() {
            return Ok(());
        }
        let applied = self.backend.apply_txns(txns).await?;
        self.stats.txns_applied += applied.new as u64;
        Ok(())
    }

    /// Everything is exchanged and applied: tell the peer what we hold now.
    async fn on_complete(&mut self) -> Result<(), SyncError> {
        self.complete = true;
        let local = self.backend.local_state().await?;
        match self.session.ack(local.summary) {
            // An ack is an optimization (GC horizons); a summary over the wire limits is not
            // worth failing the round for.
            // The peer then waits for our `Close` instead of our ack.
            Err(SendError::Encode(e)) => {
                tracing::debug!(error = %e, "ack not sent");
                self.peer_acked = true;
            }
            other => other?,
        }
        Ok(())
    }

    /// Loads the next batch of owed transactions if the transmit queue has room. Returns
    /// whether it did anything (new events may follow).
    async fn feed_owed(&mut self) -> Result<bool, SyncError> {
        if self.session.pending_transmit_bytes() >= SEND_LOW_WATER {
            return Ok(false);
        }
        let Some(ranges) = self.owed.take() else {
            return Ok(false);
        };
        let batch = self.backend.load_txns(ranges, LOAD_BUDGET_BYTES).await?;
        self.stats.txns_sent += batch.txns.len() as u64;
        if !batch.txns.is_empty() {
            self.session.send_txns(batch.txns)?;
        }
        if batch.rest.is_empty() {
            self.session.finish_sending()?;
        } else {
            self.owed = Some(batch.rest);
        }
        Ok(true)
    }

    async fn advance_phase(&mut self) -> Result<(), SyncError> {
        let flushed = self.out.is_none() && self.session.pending_transmit_bytes() == 0;
        match self.phase {
            Phase::Running if self.complete && self.peer_acked => {
                self.session.close();
                self.phase = Phase::Closing;
                if self.out.is_none() {
                    self.out = self.session.poll_transmit().map(|b| (b, 0));
                }
            }
            Phase::Closing if flushed => {
                self.send
                    .finish()
                    .map_err(|e| SyncError::Stream(e.to_string()))?;
                self.phase = Phase::Draining;
            }
            _ => {}
        }
        Ok(())
    }

    fn advance_out(&mut self, written: usize) {
        self.stats.bytes_sent += written as u64;
        if let Some((buf, pos)) = &mut self.out {
            *pos += written;
            if *pos >= buf.len() {
                self.out = self.session.poll_transmit().map(|b| (b, 0));
            }
        }
    }

    /// Ends a failed round: deliver the session's `Error` frame if there is one (bounded), then
    /// stop reading; reset our side unless the error frame went out with a clean finish.
    async fn fail(&mut self, error: &SyncError) {
        let code = match error {
            SyncError::Oversized(_) => STREAM_FRAME_TOO_LARGE,
            _ => STREAM_SESSION_FAILED,
        };
        let mut flushed = false;
        if !matches!(error, SyncError::Oversized(_) | SyncError::Stream(_)) {
            if let SyncError::Backend(e) = error {
                self.session.abort(&e.to_string());
            }
            flushed = tokio::time::timeout(ERROR_FLUSH_TIMEOUT, self.flush_error())
                .await
                .unwrap_or(false);
        }
        let _ = self.recv.stop(code);
        if !flushed {
            let _ = self.send.reset(code);
        }
    }

    /// Writes what the failed session still has queued (its `Error` frame) and finishes.
    async fn flush_error(&mut self) -> bool {
        if self.session.state() != State::Failed {
            return false;
        }
        let mut pending: Vec<u8> = self
            .out
            .take()
            .map(|(buf, pos)| buf[pos..].to_vec())
            .unwrap_or_default();
        while let Some(more) = self.session.poll_transmit() {
            pending.extend_from_slice(&more);
        }
        self.send.write_all(&pending).await.is_ok() && self.send.finish().is_ok()
    }
}

/// Writes part of `buf` (cancel-safe); only polled when there is something to write.
async fn write_some(send: &mut SendStream, buf: Option<&[u8]>) -> Result<usize, SyncError> {
    let buf = buf.unwrap_or_default();
    send.write(buf)
        .await
        .map_err(|e| SyncError::Stream(e.to_string()))
}
