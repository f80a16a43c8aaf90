//! The mesh actor: owns the QUIC endpoint and the table of peer actors; [`NetHandle`] is how
//! the rest of the node talks to it.
//!
//! Its loop selects, in priority order (`biased;`): cancellation, commands from handles, new
//! inbound connections, finished handshakes, finished peer actors. Handshakes (both directions)
//! run as child tasks so a slow peer never stalls the loop; each is bounded by
//! `connect_timeout`. At most `max_peers` connections (established plus handshaking) exist at
//! once; further inbound attempts are refused before any cryptography, and a source IP over its
//! handshake rate ([`super::admission`]) is ignored before that.
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

use meshlite_core::protocol::SessionConfig;
use quinn::{Connection, Endpoint, VarInt};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::admission::HandshakeLimiter;
use super::apply::Applier;
use super::config::TransportConfig;
use super::events::{Direction, EVENTS_CAPACITY, NetEvent, PeerInfo, PushReport, SyncStats};
use super::handle::{ConnectError, ConnectReply, MeshCommand, NetHandle, StartError};
use super::peer::{
    CLOSE_DENIED, CLOSE_DUPLICATE, CLOSE_REQUESTED, CLOSE_SHUTDOWN, MAX_UNI_STREAMS, PeerActor,
    PeerCommand, PeerContext, PeerHandle, PeerMeta,
};
use super::push::PushFrame;
use super::sync::{SyncError, SyncParams};
use super::tls::{self, PeerPolicy, SERVER_NAME, TlsContext};
use crate::fleet::{NodeId, NodeIdentity};
use crate::replica::Replica;
use crate::tasks::SHUTDOWN_GRACE;

/// Flow-control window per stream: what one stream may have in flight unread.
pub const STREAM_RECEIVE_WINDOW: u32 = 1024 * 1024;
/// Flow-control window per connection: bounds unread data buffered for one peer.
pub const CONNECTION_RECEIVE_WINDOW: u32 = 8 * 1024 * 1024;
/// Most unacknowledged data we keep in flight to one peer.
pub const SEND_WINDOW: u64 = 8 * 1024 * 1024;

/// Capacity of the mesh actor's command inbox; callers wait when it is full.
pub const MESH_INBOX_CAPACITY: usize = 64;
/// How long a stopping endpoint lingers after closing its connections. Each connection's
/// CONNECTION_CLOSE leaves at once; QUIC then keeps a closed connection for three probe
/// timeouts to answer late packets, which for a handshake still in flight to an unreachable
/// peer (no round-trip sample yet, so Quinn's 333 ms initial estimate) is about 3 s: a node
/// with one offline peer took 3 s to stop. A close lost on the way is covered by the peer's
/// idle timeout.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Starts the transport: binds `cfg.listen`, accepts fleet peers, and serves `backend` to them.
/// Runs until `shutdown` is cancelled or [`NetHandle::shutdown`] is called. Must be called
/// inside a tokio runtime. Installs the ring crypto provider as the process default.
pub fn start<B: Replica>(
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
    let endpoint_config = endpoint_config(&identity);
    let tls = TlsContext::new(identity, policy.clone())?;
    let quic = Arc::new(quic_transport(&cfg));
    let endpoint = bind(&cfg, endpoint_config, &tls, &quic)?;
    let local_addr = endpoint.local_addr().map_err(|source| StartError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let cancel = shutdown.child_token();
    let applier = Applier::start(backend.clone(), cancel.clone());
    let apply_stats = applier.stats();
    let ctx = Arc::new(PeerContext {
        backend,
        applier,
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
    let limiter = HandshakeLimiter::new(cfg.handshake_limit());
    let handshakes_rate_limited = limiter.refused();
    let handshakes_retried = limiter.retried();
    let actor = MeshActor {
        endpoint,
        tls,
        quic,
        max_peers: cfg.max_peers,
        limiter,
        connect_timeout: cfg.connect_timeout,
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
        handshakes_rate_limited,
        handshakes_retried,
        apply_stats,
        cancel,
        task: Arc::new(Mutex::new(Some(task))),
    })
}

fn bind(
    cfg: &TransportConfig,
    endpoint_config: quinn::EndpointConfig,
    tls: &TlsContext,
    quic: &Arc<quinn::TransportConfig>,
) -> Result<Endpoint, StartError> {
    let mut server = quinn::ServerConfig::with_crypto(tls.server_crypto()?);
    server.transport_config(quic.clone());
    server.max_incoming(cfg.max_peers);
    let bind_error = |source| StartError::Bind {
        addr: cfg.listen,
        source,
    };
    let runtime = quinn::default_runtime()
        .ok_or_else(|| bind_error(std::io::Error::other("no async runtime found")))?;
    let socket = std::net::UdpSocket::bind(cfg.listen).map_err(bind_error)?;
    Endpoint::new(endpoint_config, Some(server), socket, runtime).map_err(bind_error)
}

/// Endpoint keys derived from the node's private key, so they survive a restart: a node that
/// crashed and came back (same key, same port) answers packets of its previous incarnation's
/// connections with a valid *stateless reset* (RFC 9000 §10.3), and its peers drop those stale
/// connections at once instead of after the idle timeout. Until they do, the duplicate rule
/// (keep the connection dialed by the smaller node id) can make a peer keep the stale
/// connection and turn the restarted node's dials away.
fn endpoint_config(identity: &NodeIdentity) -> quinn::EndpointConfig {
    let key = identity.private_key();
    let secret = key.secret_der();
    let reset = blake3::derive_key("meshlite 2025 quic stateless reset key", secret);
    let cids = blake3::derive_key("meshlite 2025 quic connection id key", secret);
    let cid_key = u64::from_le_bytes([
        cids[0], cids[1], cids[2], cids[3], cids[4], cids[5], cids[6], cids[7],
    ]);
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &reset);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
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
    limiter: HandshakeLimiter,
    connect_timeout: Duration,
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

impl<B: Replica> MeshActor<B> {
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
        if !self.limiter.admit(remote.ip(), std::time::Instant::now()) {
            incoming.ignore();
            return;
        }
        if self
            .limiter
            .should_retry(incoming.may_retry(), self.handshakes.len())
        {
            if let Err(e) = incoming.retry() {
                e.into_incoming().ignore();
            }
            return;
        }
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
        // A closed connection may still be listed until its actor's end is processed.
        let live = |p: &&PeerHandle| p.conn.close_reason().is_none();
        let connected = match expected {
            Some(id) => self.peers.get(&id).filter(live).map(|_| id),
            None => self
                .peers
                .values()
                .find(|p| p.addr() == addr && live(p))
                .map(|p| p.meta.node_id),
        };
        if let Some(id) = connected {
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
            return Err(ConnectError::Denied(node_id));
        }
        let is_new = match self.peers.get(&node_id) {
            Some(existing) if self.keep_existing(&existing.meta, direction) => {
                conn.close(CLOSE_DUPLICATE, b"duplicate connection");
                return Ok(node_id);
            }
            Some(_) => {
                self.retire(&node_id);
                false
            }
            None => true,
        };
        let addr = conn.remote_address();
        let meta = PeerMeta {
            node_id,
            node_name: identity.node_name,
            direction,
            since: SystemTime::now(),
        };
        if is_new {
            tracing::info!(peer = %node_id, name = ?meta.node_name, %addr, %direction, "peer up");
            let _ = self.events.send(NetEvent::PeerUp {
                node_id,
                node_name: meta.node_name.clone(),
                addr,
                direction,
            });
        }
        self.spawn_peer(conn, meta, first_push);
        Ok(node_id)
    }

    /// Removes the losing connection of a duplicate pair without reporting the node down.
    fn retire(&mut self, node_id: &NodeId) {
        if let Some(old) = self.peers.remove(node_id) {
            old.cancel.cancel();
            old.conn.close(CLOSE_DUPLICATE, b"duplicate connection");
        }
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

    fn push(&mut self, frame: &PushFrame, targets: Vec<NodeId>) -> PushReport {
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

    /// Closes every connection (peer actors bounded by [`SHUTDOWN_GRACE`]) and the endpoint
    /// (bounded by [`CLOSE_LINGER`]).
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
        if tokio::time::timeout(CLOSE_LINGER, self.endpoint.wait_idle())
            .await
            .is_err()
        {
            tracing::debug!("closed QUIC connections still lingering; not waiting for them");
        }
        tracing::info!(node_id = %self.node_id, "QUIC transport stopped");
    }
}
