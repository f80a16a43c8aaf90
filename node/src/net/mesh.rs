//! The mesh actor: owns the QUIC endpoint and the table of peer actors; [`NetHandle`] is how
//! the rest of the node talks to it.
//!
//! Its loop selects, in priority order (`biased;`): cancellation, commands from handles, new
//! inbound connections, finished handshakes, finished peer actors. Handshakes (both directions)
//! run as child tasks so a slow peer never stalls the loop; each is bounded by
//! `connect_timeout`. At most `max_peers` connections (established plus handshaking) exist at
//! once; further inbound attempts are refused before any cryptography.
//!
//! **Admission.** In TLS 1.3 the dialer finishes its handshake before the acceptor has checked
//! the dialer's certificate, so a completed handshake does not mean we were admitted. Every peer
//! actor therefore opens its push stream at once with an empty `Push` frame (the *preamble*);
//! the dialer reports success only when the acceptor's preamble arrives, and reports the
//! acceptor's close reason (a TLS alert for a refused certificate) otherwise.
//!
//! **One connection per node.** When two connections to the same node exist (both dialed at
//! once), both ends keep the one dialed by the smaller node id and close the other with
//! [`CLOSE_DUPLICATE`]; both ends decide alike without talking. Two connections dialed by the
//! same side mean the old one is stale (the peer restarted before our side noticed): the newer
//! wins. The dialer never races itself: a dial to an address, or to a node id, that is already
//! in flight joins that dial instead of starting another.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use meshlite_core::protocol::{EncodeError, Frame, SessionConfig, encode_frame};
use quinn::{Connection, Endpoint, VarInt};
use rand::seq::IndexedRandom;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::backend::SyncBackend;
use super::config::{TransportConfig, TransportConfigError};
use super::events::{Direction, EVENTS_CAPACITY, NetEvent, PeerInfo, PushReport, SyncStats};
use super::peer::{
    CLOSE_DENIED, CLOSE_DUPLICATE, CLOSE_REQUESTED, CLOSE_SHUTDOWN, MAX_UNI_STREAMS, PeerActor,
    PeerCommand, PeerContext, PeerHandle, PeerMeta,
};
use super::push::PushFrame;
use super::sync::{SyncError, SyncParams};
use super::tls::{self, PeerPolicy, SERVER_NAME, TlsContext, TlsSetupError};
use crate::fleet::{NodeId, NodeIdentity};

/// Capacity of the mesh actor's command inbox; callers wait when it is full.
pub const MESH_INBOX_CAPACITY: usize = 64;
/// How long shutdown waits for peer actors and the endpoint before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Flow-control window per stream: what one stream may have in flight unread.
pub const STREAM_RECEIVE_WINDOW: u32 = 1024 * 1024;
/// Flow-control window per connection: bounds unread data buffered for one peer.
pub const CONNECTION_RECEIVE_WINDOW: u32 = 8 * 1024 * 1024;
/// Most unacknowledged data we keep in flight to one peer.
pub const SEND_WINDOW: u64 = 8 * 1024 * 1024;

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] TransportConfigError),
    /// The TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The listen address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Why dialing a peer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The TLS client configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// quinn refused to start the connection (bad address, endpoint closing).
    #[error("cannot dial: {0}")]
    Dial(#[from] quinn::ConnectError),
    /// The handshake failed; a refusal by our fleet checks is also published as
    /// [`NetEvent::Refused`].
    #[error("handshake failed: {0}")]
    Handshake(#[from] quinn::ConnectionError),
    /// The peer closed the connection instead of admitting us (its checks refused our
    /// certificate, or it is at its peer limit).
    #[error("refused by peer: {0}")]
    Refused(quinn::ConnectionError),
    /// No handshake within `connect_timeout`.
    #[error("handshake timed out")]
    Timeout,
    /// `max_peers` connections exist already.
    #[error("peer limit reached")]
    TooManyPeers,
    /// The peer presented no usable identity (cannot happen after our verifier accepted it).
    #[error("peer identity unavailable")]
    NoIdentity,
    /// The transport is shut down.
    #[error("transport closed")]
    Closed,
    /// This call joined a dial already in flight to the same address or node, which failed.
    #[error("dial failed: {0}")]
    Failed(String),
}

/// Why a push could not be sent at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The transactions do not fit in one `Push` frame (or one is empty or over the size limit).
    #[error("cannot encode push: {0}")]
    Encode(#[from] EncodeError),
    /// The frame exceeds the transport's `max_frame_bytes`.
    #[error("push of {len} bytes exceeds max_frame_bytes {max}")]
    TooLarge {
        /// Encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The transport is shut down.
    #[error("transport closed")]
    Closed,
}

enum MeshCommand {
    Connect {
        addr: SocketAddr,
        expected: Option<NodeId>,
        reply: oneshot::Sender<Result<NodeId, ConnectError>>,
    },
    Sync {
        peer: NodeId,
        reply: oneshot::Sender<Result<SyncStats, SyncError>>,
    },
    Push {
        frame: PushFrame,
        targets: Option<Vec<NodeId>>,
        reply: oneshot::Sender<PushReport>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    Disconnect {
        peer: NodeId,
        reply: oneshot::Sender<bool>,
    },
    EnforceDenyList,
}

/// A cloneable handle on a running transport.
#[derive(Clone)]
pub struct NetHandle {
    commands: mpsc::Sender<MeshCommand>,
    events: broadcast::Sender<NetEvent>,
    policy: Arc<PeerPolicy>,
    node_id: NodeId,
    local_addr: SocketAddr,
    max_frame_bytes: usize,
    cancel: CancellationToken,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for NetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetHandle")
            .field("node_id", &self.node_id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Starts the transport: binds `cfg.listen`, accepts fleet peers, and serves `backend` to them.
/// Runs until `shutdown` is cancelled or [`NetHandle::shutdown`] is called. Must be called
/// inside a tokio runtime. Installs the ring crypto provider as the process default.
pub fn start<B: SyncBackend>(
    identity: NodeIdentity,
    cfg: TransportConfig,
    backend: B,
    shutdown: CancellationToken,
) -> Result<NetHandle, StartError> {
    cfg.validate()?;
    tls::install_crypto_provider();
    let (events, _) = broadcast::channel(EVENTS_CAPACITY);
    let policy = Arc::new(PeerPolicy::new(
        &identity,
        cfg.deny_nodes.iter().copied(),
        events.clone(),
    ));
    let node_id = identity.node_id();
    let cluster = identity.cluster_id().to_string();
    let tls = TlsContext::new(identity, policy.clone())?;
    let quic = Arc::new(quic_transport(&cfg));
    let endpoint = bind(&cfg, &tls, &quic)?;
    let local_addr = endpoint.local_addr().map_err(|source| StartError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let ctx = Arc::new(PeerContext {
        backend,
        sync: SyncParams {
            cluster,
            session: session_config(&cfg),
            max_frame_bytes: cfg.max_frame_bytes,
            timeout: cfg.sync_timeout,
        },
        events: events.clone(),
        queue_capacity: cfg.per_peer_queue,
    });
    let (commands, inbox) = mpsc::channel(MESH_INBOX_CAPACITY);
    let cancel = shutdown.child_token();
    let actor = MeshActor {
        endpoint,
        tls,
        quic,
        max_peers: cfg.max_peers,
        connect_timeout: cfg.connect_timeout,
        push_fanout: cfg.push_fanout,
        node_id,
        ctx,
        inbox,
        inbox_open: true,
        peers: HashMap::new(),
        handshakes: JoinSet::new(),
        dials: Vec::new(),
        actors: JoinSet::new(),
        events: events.clone(),
        cancel: cancel.clone(),
    };
    tracing::info!(%node_id, %local_addr, "QUIC transport listening");
    let task = tokio::spawn(actor.run());
    Ok(NetHandle {
        commands,
        events,
        policy,
        node_id,
        local_addr,
        max_frame_bytes: cfg.max_frame_bytes,
        cancel,
        task: Arc::new(Mutex::new(Some(task))),
    })
}

fn bind(
    cfg: &TransportConfig,
    tls: &TlsContext,
    quic: &Arc<quinn::TransportConfig>,
) -> Result<Endpoint, StartError> {
    let mut server = quinn::ServerConfig::with_crypto(tls.server_crypto()?);
    server.transport_config(quic.clone());
    server.max_incoming(cfg.max_peers);
    Endpoint::server(server, cfg.listen).map_err(|source| StartError::Bind {
        addr: cfg.listen,
        source,
    })
}

/// QUIC limits derived from the configuration (see the constants for the windows).
fn quic_transport(cfg: &TransportConfig) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(cfg.max_concurrent_bidi_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
        .keep_alive_interval(Some(cfg.keepalive))
        // validate() bounds the idle timeout far below QUIC's 2^62 ms limit.
        .max_idle_timeout(quinn::IdleTimeout::try_from(cfg.idle_timeout).ok())
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW))
        .send_window(SEND_WINDOW)
        .datagram_receive_buffer_size(None);
    t
}

fn session_config(cfg: &TransportConfig) -> SessionConfig {
    SessionConfig {
        handshake_timeout: cfg.connect_timeout,
        ..SessionConfig::default()
    }
}

impl NetHandle {
    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The bound UDP address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Subscribes to transport events (from now on).
    pub fn subscribe(&self) -> broadcast::Receiver<NetEvent> {
        self.events.subscribe()
    }

    /// Connects to `addr` (or returns at once if `expected` is already connected). With
    /// `expected`, the handshake fails unless that node answers.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<NodeId>,
    ) -> Result<NodeId, ConnectError> {
        let (reply, rx) = oneshot::channel();
        self.send(MeshCommand::Connect {
            addr,
            expected,
            reply,
        })
        .await
        .map_err(|()| ConnectError::Closed)?;
        rx.await.map_err(|_| ConnectError::Closed)?
    }

    /// Runs one anti-entropy round with a connected peer.
    pub async fn sync_with(&self, peer: NodeId) -> Result<SyncStats, SyncError> {
        let (reply, rx) = oneshot::channel();
        self.send(MeshCommand::Sync { peer, reply })
            .await
            .map_err(|()| SyncError::Closed)?;
        rx.await.map_err(|_| SyncError::Closed)?
    }

    /// Pushes encoded transactions to `push_fanout` random connected peers.
    pub async fn push(&self, txns: Vec<Vec<u8>>) -> Result<PushReport, PushError> {
        self.push_frame(txns, None).await
    }

    /// Pushes encoded transactions to the given peers (those connected).
    pub async fn push_to(
        &self,
        peers: Vec<NodeId>,
        txns: Vec<Vec<u8>>,
    ) -> Result<PushReport, PushError> {
        self.push_frame(txns, Some(peers)).await
    }

    async fn push_frame(
        &self,
        txns: Vec<Vec<u8>>,
        targets: Option<Vec<NodeId>>,
    ) -> Result<PushReport, PushError> {
        let frame = encode_frame(&Frame::Push { txns })?;
        if frame.len() > self.max_frame_bytes {
            return Err(PushError::TooLarge {
                len: frame.len(),
                max: self.max_frame_bytes,
            });
        }
        let (reply, rx) = oneshot::channel();
        let frame = Arc::new(frame);
        self.send(MeshCommand::Push {
            frame,
            targets,
            reply,
        })
        .await
        .map_err(|()| PushError::Closed)?;
        rx.await.map_err(|_| PushError::Closed)
    }

    /// A snapshot of the connected peers, by node id. Empty once shut down.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        let (reply, rx) = oneshot::channel();
        if self.send(MeshCommand::Peers { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Closes the connection to `peer`; false if there was none.
    pub async fn disconnect(&self, peer: NodeId) -> bool {
        let (reply, rx) = oneshot::channel();
        if self
            .send(MeshCommand::Disconnect { peer, reply })
            .await
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Replaces the deny list: new handshakes see it at once, and connected peers now on it are
    /// disconnected.
    pub async fn set_deny_list(&self, deny: Vec<NodeId>) {
        self.policy.set_deny_list(deny);
        let _ = self.send(MeshCommand::EnforceDenyList).await;
    }

    /// Stops the transport: closes every connection and the endpoint (bounded by
    /// [`SHUTDOWN_GRACE`] each) and waits for the actor to end.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let task = match self.task.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "mesh actor failed");
        }
    }

    async fn send(&self, command: MeshCommand) -> Result<(), ()> {
        self.commands.send(command).await.map_err(|_| ())
    }
}

/// What a successful handshake task produced.
enum Established {
    /// A connection to register; for a dial, with the acceptor's preamble stream.
    Admitted {
        conn: Connection,
        first_push: Option<quinn::RecvStream>,
    },
    /// The acceptor kept another connection with us (simultaneous dials).
    Duplicate { node_id: NodeId },
}

/// Completes a dial: the handshake, then the acceptor's preamble (see the module doc).
async fn dial_and_admit(connecting: quinn::Connecting) -> Result<Established, ConnectError> {
    let conn = connecting.await?;
    match conn.accept_uni().await {
        Ok(recv) => Ok(Established::Admitted {
            conn,
            first_push: Some(recv),
        }),
        Err(quinn::ConnectionError::ApplicationClosed(close))
            if close.error_code == CLOSE_DUPLICATE =>
        {
            let node_id = tls::peer_identity(&conn)
                .ok_or(ConnectError::NoIdentity)?
                .node_id;
            Ok(Established::Duplicate { node_id })
        }
        Err(e) => Err(ConnectError::Refused(e)),
    }
}

/// The outcome of one handshake task.
struct Handshake {
    result: Result<Established, ConnectError>,
    direction: Direction,
    remote: SocketAddr,
    reply: Option<ConnectReply>,
}

type ConnectReply = oneshot::Sender<Result<NodeId, ConnectError>>;

/// A dial in flight, and the callers that joined it.
struct PendingDial {
    task: tokio::task::Id,
    addr: SocketAddr,
    expected: Option<NodeId>,
    joined: Vec<ConnectReply>,
}

struct MeshActor<B> {
    endpoint: Endpoint,
    tls: TlsContext,
    quic: Arc<quinn::TransportConfig>,
    max_peers: usize,
    connect_timeout: Duration,
    push_fanout: usize,
    node_id: NodeId,
    ctx: Arc<PeerContext<B>>,
    inbox: mpsc::Receiver<MeshCommand>,
    inbox_open: bool,
    peers: HashMap<NodeId, PeerHandle>,
    handshakes: JoinSet<Handshake>,
    dials: Vec<PendingDial>,
    /// Peer actors; each yields (node id, connection stable id, why it ended).
    actors: JoinSet<(NodeId, usize, String)>,
    events: broadcast::Sender<NetEvent>,
    cancel: CancellationToken,
}

impl<B: SyncBackend> MeshActor<B> {
    async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                command = self.inbox.recv(), if self.inbox_open => match command {
                    Some(command) => self.on_command(command),
                    // Every handle is gone; keep serving peers until cancelled.
                    None => self.inbox_open = false,
                },
                incoming = self.endpoint.accept() => match incoming {
                    Some(incoming) => self.on_incoming(incoming),
                    None => break,
                },
                Some(done) = self.handshakes.join_next_with_id() => match done {
                    Ok((_, handshake)) => self.on_handshake(handshake),
                    Err(e) => self.on_handshake_panic(e),
                },
                Some(ended) = self.actors.join_next() => match ended {
                    Ok((node_id, conn_id, reason)) => self.on_peer_ended(node_id, conn_id, reason),
                    Err(e) => tracing::error!(error = %e, "peer actor failed"),
                },
            }
        }
        self.close_all().await;
    }

    fn on_command(&mut self, command: MeshCommand) {
        match command {
            MeshCommand::Connect {
                addr,
                expected,
                reply,
            } => self.dial(addr, expected, reply),
            MeshCommand::Sync { peer, reply } => self.request_sync(peer, reply),
            MeshCommand::Push {
                frame,
                targets,
                reply,
            } => {
                let _ = reply.send(self.push(&frame, targets));
            }
            MeshCommand::Peers { reply } => {
                let mut peers: Vec<PeerInfo> = self.peers.values().map(PeerHandle::info).collect();
                peers.sort_by_key(|p| p.node_id);
                let _ = reply.send(peers);
            }
            MeshCommand::Disconnect { peer, reply } => {
                let found = self.drop_peer(&peer, CLOSE_REQUESTED, b"disconnect requested");
                let _ = reply.send(found);
            }
            MeshCommand::EnforceDenyList => self.enforce_deny_list(),
        }
    }

    fn at_capacity(&self) -> bool {
        self.peers.len() + self.handshakes.len() >= self.max_peers
    }

    fn on_incoming(&mut self, incoming: quinn::Incoming) {
        let remote = incoming.remote_address();
        if self.at_capacity() {
            tracing::warn!(%remote, "refusing connection: peer limit reached");
            incoming.refuse();
            return;
        }
        let connecting = match incoming.accept() {
            Ok(connecting) => connecting,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "dropped incoming connection");
                return;
            }
        };
        let timeout = self.connect_timeout;
        self.handshakes.spawn(async move {
            let result = match tokio::time::timeout(timeout, connecting).await {
                Ok(Ok(conn)) => Ok(Established::Admitted {
                    conn,
                    first_push: None,
                }),
                Ok(Err(e)) => Err(ConnectError::from(e)),
                Err(_) => Err(ConnectError::Timeout),
            };
            Handshake {
                result,
                direction: Direction::Inbound,
                remote,
                reply: None,
            }
        });
    }

    fn dial(&mut self, addr: SocketAddr, expected: Option<NodeId>, reply: ConnectReply) {
        if let Some(id) = expected.filter(|id| self.peers.contains_key(id)) {
            let _ = reply.send(Ok(id));
            return;
        }
        let joinable =
            |p: &&mut PendingDial| p.addr == addr || (expected.is_some() && p.expected == expected);
        if let Some(pending) = self.dials.iter_mut().find(joinable) {
            pending.joined.push(reply);
            return;
        }
        if self.at_capacity() {
            let _ = reply.send(Err(ConnectError::TooManyPeers));
            return;
        }
        let connecting = match self
            .client_config(expected)
            .and_then(|config| Ok(self.endpoint.connect_with(config, addr, SERVER_NAME)?))
        {
            Ok(connecting) => connecting,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let timeout = self.connect_timeout;
        let task = self.handshakes.spawn(async move {
            let result = tokio::time::timeout(timeout, dial_and_admit(connecting))
                .await
                .unwrap_or(Err(ConnectError::Timeout));
            Handshake {
                result,
                direction: Direction::Outbound,
                remote: addr,
                reply: Some(reply),
            }
        });
        self.dials.push(PendingDial {
            task: task.id(),
            addr,
            expected,
            joined: Vec::new(),
        });
    }

    fn client_config(&self, expected: Option<NodeId>) -> Result<quinn::ClientConfig, ConnectError> {
        let mut config = quinn::ClientConfig::new(self.tls.client_crypto(expected)?);
        config.transport_config(self.quic.clone());
        Ok(config)
    }

    fn on_handshake(&mut self, handshake: Handshake) {
        let Handshake {
            result,
            direction,
            remote,
            reply,
        } = handshake;
        let outcome = result.and_then(|established| match established {
            Established::Admitted { conn, first_push } => {
                self.register(conn, direction, first_push)
            }
            Established::Duplicate { node_id } => Ok(node_id),
        });
        if let Err(e) = &outcome {
            tracing::info!(%remote, %direction, error = %e, "peer handshake failed");
        }
        if direction == Direction::Outbound {
            self.answer_joined(remote, &outcome);
        }
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }

    /// A handshake task died (cannot happen short of a bug): free its dial slot.
    fn on_handshake_panic(&mut self, error: tokio::task::JoinError) {
        tracing::error!(%error, "handshake task failed");
        if let Some(i) = self.dials.iter().position(|p| p.task == error.id()) {
            let addr = self.dials[i].addr;
            self.answer_joined(addr, &Err(ConnectError::Failed(error.to_string())));
        }
    }

    /// Answers the callers that joined the dial to `addr`.
    fn answer_joined(&mut self, addr: SocketAddr, outcome: &Result<NodeId, ConnectError>) {
        let Some(i) = self.dials.iter().position(|p| p.addr == addr) else {
            return;
        };
        for reply in self.dials.swap_remove(i).joined {
            let shared = match outcome {
                Ok(id) => Ok(*id),
                Err(e) => Err(ConnectError::Failed(e.to_string())),
            };
            let _ = reply.send(shared);
        }
    }

    /// Adds an established connection to the peer table (resolving duplicates).
    fn register(
        &mut self,
        conn: Connection,
        direction: Direction,
        first_push: Option<quinn::RecvStream>,
    ) -> Result<NodeId, ConnectError> {
        let Some(identity) = tls::peer_identity(&conn) else {
            conn.close(CLOSE_REQUESTED, b"no identity");
            return Err(ConnectError::NoIdentity);
        };
        let node_id = identity.node_id;
        // The deny list may have changed since the certificate was checked.
        if self.tls.policy().is_denied(&node_id) {
            conn.close(CLOSE_DENIED, b"denied");
            return Ok(node_id);
        }
        let replaced = match self.peers.get(&node_id) {
            Some(existing) if self.keep_existing(&existing.meta, direction) => {
                conn.close(CLOSE_DUPLICATE, b"duplicate connection");
                return Ok(node_id);
            }
            Some(_) => self.peers.remove(&node_id).map(|old| {
                old.cancel.cancel();
                old.conn.close(CLOSE_DUPLICATE, b"duplicate connection");
            }),
            None => None,
        };
        let meta = PeerMeta {
            node_id,
            node_name: identity.node_name.clone(),
            direction,
            since: SystemTime::now(),
        };
        self.spawn_peer(conn, meta, first_push);
        if replaced.is_none() {
            let addr = self.peers.get(&node_id).map(PeerHandle::addr);
            tracing::info!(peer = %node_id, name = ?identity.node_name, ?addr, %direction, "peer up");
            if let Some(addr) = addr {
                let _ = self.events.send(NetEvent::PeerUp {
                    node_id,
                    node_name: identity.node_name,
                    addr,
                    direction,
                });
            }
        }
        Ok(node_id)
    }

    /// Of two connections to one peer, keep the existing one? See the module doc.
    fn keep_existing(&self, existing: &PeerMeta, direction: Direction) -> bool {
        if existing.direction == direction {
            return false;
        }
        let dialer = |d: Direction| match d {
            Direction::Outbound => self.node_id,
            Direction::Inbound => existing.node_id,
        };
        dialer(existing.direction) < dialer(direction)
    }

    fn spawn_peer(
        &mut self,
        conn: Connection,
        meta: PeerMeta,
        first_push: Option<quinn::RecvStream>,
    ) {
        let node_id = meta.node_id;
        let conn_id = conn.stable_id();
        let cancel = self.cancel.child_token();
        let (actor, handle, push_rx) = PeerActor::new(conn, meta, self.ctx.clone(), cancel);
        self.peers.insert(node_id, handle);
        self.actors.spawn(async move {
            let reason = actor.run(push_rx, first_push).await;
            (node_id, conn_id, reason)
        });
    }

    fn on_peer_ended(&mut self, node_id: NodeId, conn_id: usize, reason: String) {
        let current = self
            .peers
            .get(&node_id)
            .is_some_and(|p| p.conn.stable_id() == conn_id);
        if !current {
            return; // A replaced duplicate.
        }
        self.peers.remove(&node_id);
        tracing::info!(peer = %node_id, %reason, "peer down");
        let _ = self.events.send(NetEvent::PeerDown { node_id, reason });
    }

    fn request_sync(&mut self, peer: NodeId, reply: oneshot::Sender<Result<SyncStats, SyncError>>) {
        let Some(handle) = self.peers.get(&peer) else {
            let _ = reply.send(Err(SyncError::NotConnected(peer)));
            return;
        };
        if let Err(e) = handle.commands.try_send(PeerCommand::Sync { reply }) {
            let (mpsc::error::TrySendError::Full(PeerCommand::Sync { reply })
            | mpsc::error::TrySendError::Closed(PeerCommand::Sync { reply })) = e;
            let _ = reply.send(Err(SyncError::Busy));
        }
    }

    fn push(&mut self, frame: &PushFrame, targets: Option<Vec<NodeId>>) -> PushReport {
        let targets = targets.unwrap_or_else(|| self.random_peers(self.push_fanout));
        let mut report = PushReport::default();
        for node_id in targets {
            let Some(peer) = self.peers.get(&node_id) else {
                continue;
            };
            if peer.pushes.try_push(frame) {
                report.queued.push(node_id);
            } else {
                peer.stats
                    .pushes_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                report.dropped.push(node_id);
            }
        }
        report
    }

    fn random_peers(&self, n: usize) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.peers.keys().copied().collect();
        ids.sort();
        ids.choose_multiple(&mut rand::rng(), n).copied().collect()
    }

    fn drop_peer(&mut self, peer: &NodeId, code: VarInt, reason: &[u8]) -> bool {
        let Some(handle) = self.peers.get(peer) else {
            return false;
        };
        // The actor sees the close and ends; `on_peer_ended` removes it and reports PeerDown.
        handle.conn.close(code, reason);
        true
    }

    fn enforce_deny_list(&mut self) {
        let denied: Vec<NodeId> = self
            .peers
            .keys()
            .filter(|id| self.tls.policy().is_denied(id))
            .copied()
            .collect();
        for node_id in denied {
            tracing::warn!(peer = %node_id, "disconnecting peer now on the deny list");
            self.drop_peer(&node_id, CLOSE_DENIED, b"denied");
        }
    }

    /// Closes every connection and the endpoint, each bounded by [`SHUTDOWN_GRACE`].
    async fn close_all(&mut self) {
        self.handshakes.abort_all();
        for peer in self.peers.values() {
            peer.cancel.cancel();
        }
        let drain = async { while self.actors.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::warn!("peer actors did not stop in time; aborting them");
            self.actors.abort_all();
        }
        self.peers.clear();
        self.endpoint.close(CLOSE_SHUTDOWN, b"shutdown");
        if tokio::time::timeout(SHUTDOWN_GRACE, self.endpoint.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!("QUIC endpoint did not drain in time");
        }
        tracing::info!(node_id = %self.node_id, "QUIC transport stopped");
    }
}
