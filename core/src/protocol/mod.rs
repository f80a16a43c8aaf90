//! The sync protocol: sans-IO sessions, frames and bundle files.
//!
//! # How the parts fit
//!
//! - [`frame`]: the messages ([`Frame`]) and their framing on a byte stream: a 4-byte big-endian
//!   length `N`, then `N` bytes of payload = one protocol-version byte ([`PROTOCOL_VERSION`]) and
//!   the postcard encoding of the frame. [`encode_frame`] writes one; [`FrameDecoder`] reads them
//!   from a stream in any chunking.
//! - [`session`]: [`Session`], the state machine of one connection to one peer. It consumes bytes
//!   and `now`, produces bytes, events and a deadline; it never does I/O or reads the clock. The
//!   QUIC peer actor, the central bridge and the deterministic simulator all drive it the same
//!   way. It works on [`crate::Summary`]s and encoded transaction bytes only, and asks its host
//!   (which owns the store) for the transactions to send ([`Event::NeedTxns`]).
//! - [`plan_sync`]: the pure comparison of two summaries behind every session.
//! - [`bundle`]: sneakernet files — a magic header, then the same framing carrying a header
//!   frame, transaction frames and a checksummed trailer.
//! - [`control`]: the `Control` frame's body, the overlay-mode messages of [`crate::epidemic`],
//!   with their own revision number and bounds.
//! - [`limits`]: the hard limits, enforced while decoding.
//!
//! Transactions travel as their encoded bytes ([`crate::Txn::encode`]) and are passed through
//! unchanged: a relay never re-encodes, and a receiver decodes each with [`crate::Txn::decode`]
//! (a bad transaction is rejected alone, not the whole frame).
//!
//! # A session
//!
//! ```text
//!   A                                   B
//!   Hello{cluster, replica, summary} →  ← Hello        (both at once)
//!   Txns* (what B lacks), Done{sent} →  ← Txns*, Done  (each after the other's Hello)
//!   ⇒ Complete                            ⇒ Complete
//!   Push / Ack / Close in either direction for as long as the connection lives
//! ```
//!
//! Each side compares the peer's summary with its own ([`plan_sync`]) and sends exactly the
//! transactions the peer lacks, so one round trip moves everything in both directions. Summaries
//! are per-origin sets of sequence ranges: their size grows with origins and gaps, not with
//! records or transactions.
//!
//! # Costs (measured by `tests/session_pair.rs`)
//!
//! - Idle exchange (nothing to send either way), 10 origins × 10k transactions each: one round
//!   trip, 2 frames each way (`Hello`, `Done`), 237 bytes each way. A contiguous origin costs
//!   about 22 bytes in a summary; each gap adds about 4–8.
//! - 1% divergence (1,000 of 100k transactions missing, scattered, ~200 B each): one round
//!   trip, 206 KB on the wire for 200 KB of missing transactions (1.03×): about 3 bytes of
//!   framing per transaction, the 1,000 gaps in the receiver's `Hello` summary (4 KB), and a few
//!   bytes of frame header per 256 KiB.
//! - Planning is linear in the summaries' ranges, never in records or transactions.
//!
//! # Limits and why
//!
//! - [`MAX_FRAME_BYTES`] (4 MiB): the most a decoder ever buffers per connection; big enough
//!   for the largest transaction ([`crate::change::MAX_TXN_BYTES`], 1 MiB) and the largest valid
//!   summary. A longer length prefix is refused as soon as its 4 bytes arrive.
//! - [`MAX_TXNS_PER_FRAME`], [`MAX_SUMMARY_ORIGINS`], [`MAX_SUMMARY_RANGES`],
//!   [`MAX_FILTER_COLLECTIONS`]: enforced by bounded decoders while decoding, so the memory a
//!   frame costs stays within a small multiple of its bytes and planning stays cheap.
//! - Sessions cap their undrained events and their transmit queue ([`SessionConfig`]): a peer
//!   that floods, or a host that stops draining, makes the session fail instead of growing.
//! - Senders pack transactions into frames of about [`TARGET_FRAME_BYTES`] (256 KiB) so pushes
//!   and acks interleave with a large sync.

mod batch;
pub mod bundle;
pub mod control;
pub mod frame;
pub mod limits;
mod plan;
pub mod session;
mod wire;

pub use bundle::{
    BundleHeader, BundleInfo, BundleReadError, BundleReader, BundleWriteError, BundleWriter,
};
pub use frame::{DecodeError, EncodeError, ErrorCode, Frame, FrameDecoder, Hello, encode_frame};
pub use limits::*;
pub use plan::{SyncPlan, plan_sync};
pub use session::{
    Event, Role, SendError, Session, SessionConfig, SessionError, SessionStats, State,
};

#[cfg(any(test, feature = "testkit"))]
pub mod fuzz_bodies;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

#[cfg(test)]
mod tests;
