//! The QUIC transport: fleet mutual TLS, one actor per peer connection, anti-entropy rounds and
//! pushes carried as sync-protocol frames.
//!
//! # How the parts fit
//!
//! ```text
//!     handle::NetHandle (cloneable; connect, sync_with, push, peers, subscribe, shutdown)
//!                │ bounded command channel
//!                ▼
//!   mesh::MeshActor ── owns the quinn Endpoint, the peer table, handshake tasks
//!                │ spawns one per established connection
//!                ▼
//!   peer::PeerActor ── owns the Connection; child tasks per stream:
//!        ├─ sync::SyncStream  (bidi stream: one anti-entropy round, a core Session)
//!        ├─ push::run_writer  (uni stream out: queued Push frames, bounded queue; what has
//!        │                     queued up goes out as one write, pushes merged: coalesce)
//!        └─ push::PushReader  (uni stream in: Push frames → apply::Applier → the replica;
//!                              the node's one applier applies concurrent pushes together)
//! ```
//!
//! - [`tls`]: rustls configurations (ring only) and the verifiers that refuse foreign CAs,
//!   expired certificates, other clusters and denied node ids (see its module doc).
//! - [`config`]: [`TransportConfig`], with every default documented.
//! - [`backend`]: [`Replica`], what the transport needs from the replica;
//!   [`store_backend`] implements it for `meshlite_core::store::Store`.
//! - [`mesh`]: also how a dial learns it was admitted (the push-stream preamble) and how
//!   duplicate connections between two nodes are resolved.
//! - [`frame_guard`]: refuses oversized frames from their length prefix.
//! - [`control`]: overlay-mode control messages (`Control` frames on the push stream) and the
//!   peer type they name; sent with [`NetHandle::send_control`], received as
//!   [`NetEvent::Control`]. Whom to send them to is `crate::epidemic`'s business.
//! - [`events`]: [`NetEvent`], [`PeerInfo`], [`SyncStats`], [`RefusalReason`].
//! - Pushes go to the peers the caller names ([`NetHandle::push_to`]); whom to send to is the
//!   dissemination policy's decision (`meshlite_core::dissemination`, driven by
//!   [`crate::gossip`]).
//!
//! # Bounds (why a slow or hostile peer cannot grow our memory)
//!
//! - Handshakes: at most `max_peers` connections (established + handshaking), each handshake
//!   bounded by `connect_timeout`; refused peers never get an application byte in. One source
//!   IP may start `handshake_burst_per_ip`, then `handshake_rate_per_ip` per second
//!   ([`admission`]), so one flooding host cannot take every slot.
//! - Per connection: QUIC flow-control windows ([`mesh::CONNECTION_RECEIVE_WINDOW`]), at most
//!   `max_concurrent_bidi_streams` sync streams and [`peer::MAX_UNI_STREAMS`] push streams.
//! - Per stream: one frame of at most `max_frame_bytes` buffered; the session's own event and
//!   transmit queues are capped ([`meshlite_core::protocol::SessionConfig`]).
//! - Outbound pushes: a per-peer queue bounded in frames (`per_peer_queue`) and bytes
//!   ([`push::PER_PEER_QUEUE_BYTES`]); when full, the push is dropped for that peer and
//!   anti-entropy heals the gap.
//!
//! # Shutdown
//!
//! Cancelling the token given to [`start`] (or [`NetHandle::shutdown`]) cancels every actor and
//! stream task through child tokens; connections are closed with [`peer::CLOSE_SHUTDOWN`] and
//! the endpoint drains, each step bounded by [`crate::tasks::SHUTDOWN_GRACE`].

pub mod admission;
pub mod apply;
pub mod coalesce;
pub mod config;
pub mod control;
pub mod events;
pub mod frame_guard;
pub mod handle;
pub mod mesh;
pub mod peer;
pub mod push;
pub mod stats;
pub mod sync;
pub mod tls;

pub use config::{TransportConfig, TransportConfigError};
pub use events::{Direction, NetEvent, PeerInfo, PushReport, RefusalReason, SyncStats};
pub use handle::{ConnectError, NetHandle, PushError, StartError};
pub use mesh::start;
pub use sync::SyncError;
pub use tls::{ALPN, install_crypto_provider};
