//! The peer actor: one per established connection.
//!
//! It owns the connection and its inbox, and spawns one child task per stream into its
//! `JoinSet`: sync rounds in both directions ([`super::sync`]), the push writer and push readers
//! ([`super::push`]). Its loop selects, in priority order (`biased;`): cancellation, the
//! connection closing, commands from the mesh, new streams from the peer, finished children.
//! When it ends, its children are aborted with it, so nothing outlives the connection.
//!
//! Bounds: the peer may open at most `max_concurrent_bidi_streams` sync streams and
//! [`MAX_UNI_STREAMS`] push streams at once (quinn enforces both); we run at most
//! [`MAX_OUTBOUND_SYNCS`] rounds of our own with it; pushes to it wait in a bounded queue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use meshlite_core::protocol::Role;
use quinn::{Connection, VarInt};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::apply::Applier;
use super::events::{Direction, NetEvent, PeerInfo, SyncStats};
use super::push::{self, PushQueue, PushQueueRx, PushReader};
use super::stats::PeerStats;
use super::sync::{SyncError, SyncParams, SyncStream};
use crate::fleet::{NodeId, NodeName};
use crate::replica::Replica;

/// Most push streams a peer may have open towards us (it needs one).
pub const MAX_UNI_STREAMS: u32 = 2;
/// Most sync rounds we initiate with one peer at a time.
pub const MAX_OUTBOUND_SYNCS: usize = 1;
/// Capacity of a peer actor's command inbox.
pub const PEER_INBOX_CAPACITY: usize = 16;

/// Application close code: this node is shutting down.
pub const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(0x1);
/// Application close code: a second connection to the same node won.
pub const CLOSE_DUPLICATE: VarInt = VarInt::from_u32(0x2);
/// Application close code: the peer was put on the deny list.
pub const CLOSE_DENIED: VarInt = VarInt::from_u32(0x3);
/// Application close code: the host asked to disconnect.
pub const CLOSE_REQUESTED: VarInt = VarInt::from_u32(0x4);

/// What the mesh may ask of a peer actor.
#[derive(Debug)]
pub enum PeerCommand {
    /// Run one anti-entropy round.
    Sync {
        /// Where the result goes.
        reply: oneshot::Sender<Result<SyncStats, SyncError>>,
    },
}

/// Who the peer is, fixed for the connection's life.
#[derive(Debug, Clone)]
pub struct PeerMeta {
    /// Node id (verified at the handshake).
    pub node_id: NodeId,
    /// Node name from the certificate.
    pub node_name: Option<NodeName>,
    /// Who dialed.
    pub direction: Direction,
    /// When the connection was established.
    pub since: SystemTime,
}

/// The mesh's handle on a running peer actor.
#[derive(Debug)]
pub struct PeerHandle {
    /// Identity and direction.
    pub meta: PeerMeta,
    /// The connection (for stats, rtt and closing).
    pub conn: Connection,
    /// Commands to the actor.
    pub commands: mpsc::Sender<PeerCommand>,
    /// The push queue.
    pub pushes: PushQueue,
    /// Counters.
    pub stats: Arc<PeerStats>,
    /// Cancels the actor and its children.
    pub cancel: CancellationToken,
}

impl PeerHandle {
    /// A snapshot for `peers()`.
    pub fn info(&self) -> PeerInfo {
        let quic = self.conn.stats();
        let s = &self.stats;
        PeerInfo {
            node_id: self.meta.node_id,
            node_name: self.meta.node_name.clone(),
            addr: self.conn.remote_address(),
            replica: s.replica(),
            direction: self.meta.direction,
            connected_since: self.meta.since,
            last_seen: s.last_seen(),
            rtt: self.conn.rtt(),
            bytes_sent: quic.udp_tx.bytes,
            bytes_received: quic.udp_rx.bytes,
            syncs: s.syncs.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            pushes_sent: s.pushes_sent.load(Ordering::Relaxed),
            pushes_merged: s.pushes_merged.load(Ordering::Relaxed),
            pushes_dropped: s.pushes_dropped.load(Ordering::Relaxed),
            pushes_received: s.pushes_received.load(Ordering::Relaxed),
            push_txns_received: s.push_txns_received.load(Ordering::Relaxed),
            queue_depth: self.pushes.depth(),
        }
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }
}

/// Node-wide settings every peer actor shares.
#[derive(Debug)]
pub struct PeerContext<B> {
    /// The replica.
    pub backend: B,
    /// Applies pushed transactions, coalescing those that arrive together.
    pub applier: Applier,
    /// Sync stream parameters.
    pub sync: SyncParams,
    /// Event channel.
    pub events: broadcast::Sender<NetEvent>,
    /// Push queue capacity in frames.
    pub queue_capacity: usize,
}

/// One peer connection's actor.
pub struct PeerActor<B> {
    conn: Connection,
    meta: PeerMeta,
    ctx: Arc<PeerContext<B>>,
    inbox: mpsc::Receiver<PeerCommand>,
    pushes: PushQueue,
    stats: Arc<PeerStats>,
    outbound_syncs: Arc<Semaphore>,
    tasks: JoinSet<()>,
    cancel: CancellationToken,
}

impl<B> std::fmt::Debug for PeerActor<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerActor")
            .field("peer", &self.meta.node_id)
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl<B: Replica> PeerActor<B> {
    /// Creates the actor and the mesh's handle on it; the caller spawns [`PeerActor::run`].
    pub fn new(
        conn: Connection,
        meta: PeerMeta,
        ctx: Arc<PeerContext<B>>,
        cancel: CancellationToken,
    ) -> (Self, PeerHandle, PushQueueRx) {
        let (commands, inbox) = mpsc::channel(PEER_INBOX_CAPACITY);
        let (pushes, push_rx) = push::push_queue(ctx.queue_capacity);
        let stats = Arc::new(PeerStats::new(meta.node_id));
        let handle = PeerHandle {
            meta: meta.clone(),
            conn: conn.clone(),
            commands,
            pushes: pushes.clone(),
            stats: stats.clone(),
            cancel: cancel.clone(),
        };
        let actor = Self {
            conn,
            meta,
            ctx,
            inbox,
            pushes,
            stats,
            outbound_syncs: Arc::new(Semaphore::new(MAX_OUTBOUND_SYNCS)),
            tasks: JoinSet::new(),
            cancel,
        };
        (actor, handle, push_rx)
    }

    /// Runs until the connection closes or the actor is cancelled; returns why it ended.
    /// `first_push` is the peer's push stream when the dial already accepted it.
    pub async fn run(
        mut self,
        push_rx: PushQueueRx,
        first_push: Option<quinn::RecvStream>,
    ) -> String {
        if let Some(recv) = first_push {
            self.spawn_push_reader(recv);
        }
        self.tasks.spawn(push::run_writer(
            self.conn.clone(),
            push_rx,
            self.stats.clone(),
            self.cancel.child_token(),
        ));
        let reason = self.select_loop().await;
        self.tasks.shutdown().await;
        tracing::debug!(peer = %self.meta.node_id, %reason, "peer actor ended");
        reason
    }

    async fn select_loop(&mut self) -> String {
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => {
                    self.conn.close(CLOSE_SHUTDOWN, b"shutdown");
                    return "shutdown".into();
                }
                error = self.conn.closed() => return error.to_string(),
                command = self.inbox.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => return "mesh dropped the peer".into(),
                },
                stream = self.conn.accept_bi() => match stream {
                    Ok(stream) => self.spawn_sync(Role::Responder, Some(stream), None),
                    Err(e) => return e.to_string(),
                },
                stream = self.conn.accept_uni() => match stream {
                    Ok(recv) => self.spawn_push_reader(recv),
                    Err(e) => return e.to_string(),
                },
                Some(joined) = self.tasks.join_next() => {
                    if let Err(e) = joined.map_err(|e| e.is_panic().then_some(e)) {
                        tracing::error!(peer = %self.meta.node_id, error = ?e, "peer task panicked");
                    }
                }
            }
        }
    }

    fn on_command(&mut self, command: PeerCommand) {
        match command {
            PeerCommand::Sync { reply } => self.spawn_sync(Role::Initiator, None, Some(reply)),
        }
    }

    /// Spawns one sync round: on `stream` (peer-initiated) or on a new stream we open.
    fn spawn_sync(
        &mut self,
        role: Role,
        stream: Option<(quinn::SendStream, quinn::RecvStream)>,
        reply: Option<oneshot::Sender<Result<SyncStats, SyncError>>>,
    ) {
        let permit = match role {
            Role::Initiator => match self.outbound_syncs.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(SyncError::Busy));
                    }
                    return;
                }
            },
            Role::Responder => None,
        };
        let round = SyncRound {
            conn: self.conn.clone(),
            ctx: self.ctx.clone(),
            stats: self.stats.clone(),
            cancel: self.cancel.child_token(),
        };
        self.tasks.spawn(async move {
            let result = round.run(role, stream).await;
            drop(permit);
            if let Some(reply) = reply {
                // The requester may have given up waiting; the round still counted.
                let _ = reply.send(result);
            }
        });
    }

    fn spawn_push_reader(&mut self, recv: quinn::RecvStream) {
        let reader = PushReader {
            from: self.meta.node_id,
            addr: self.conn.remote_address(),
            reply: self.pushes.clone(),
            applier: self.ctx.applier.clone(),
            stats: self.stats.clone(),
            events: self.ctx.events.clone(),
            max_frame_bytes: self.ctx.sync.max_frame_bytes,
        };
        self.tasks
            .spawn(reader.run(recv, self.cancel.child_token()));
    }
}

/// One sync round's task state.
struct SyncRound<B> {
    conn: Connection,
    ctx: Arc<PeerContext<B>>,
    stats: Arc<PeerStats>,
    cancel: CancellationToken,
}

impl<B: Replica> SyncRound<B> {
    async fn run(
        self,
        role: Role,
        stream: Option<(quinn::SendStream, quinn::RecvStream)>,
    ) -> Result<SyncStats, SyncError> {
        let result = self.exchange(role, stream).await;
        let peer = self.stats.node_id;
        match &result {
            Ok(stats) => {
                self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                if let Some(replica) = stats.peer_replica {
                    self.stats.set_replica(replica);
                }
                tracing::debug!(%peer, ?role, ?stats, "sync round complete");
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, ?role, error = %e, "sync round failed");
            }
        }
        result
    }

    async fn exchange(
        &self,
        role: Role,
        stream: Option<(quinn::SendStream, quinn::RecvStream)>,
    ) -> Result<SyncStats, SyncError> {
        let stream = match stream {
            Some(stream) => stream,
            None => self
                .conn
                .open_bi()
                .await
                .map_err(|e| SyncError::Stream(e.to_string()))?,
        };
        let params = &self.ctx.sync;
        let sync = SyncStream::start(role, stream, self.ctx.backend.clone(), params).await?;
        let stats = self.stats.clone();
        let touch = move || stats.touch();
        let mut result = sync.run(&self.cancel, params.timeout, &touch).await?;
        result.rtt = self.conn.rtt();
        Ok(result)
    }
}
