//! Hard limits of the wire format.
//!
//! Every limit is checked while decoding, before anything proportional to a claimed size is
//! allocated, so a hostile peer or a corrupt bundle costs at most one frame of memory. The
//! encoder checks the same limits, so a local bug shows up at the sender rather than as a
//! refused session at the receiver.

use crate::change::MAX_TXN_BYTES;

/// The protocol version carried in the first byte of every frame payload.
pub const PROTOCOL_VERSION: u8 = 1;

/// Size of the big-endian length prefix in front of every frame.
pub const LEN_PREFIX_BYTES: usize = 4;

/// Largest frame payload (version byte plus postcard body): 4 MiB. Large enough for one
/// transaction of [`MAX_TXN_BYTES`] and for the largest valid summary; small enough that a
/// decoder never buffers more than this per connection.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Default size a sender packs transactions into before starting a new frame: 256 KiB. Smaller
/// frames interleave better with pushes and acks and keep per-frame events small.
pub const TARGET_FRAME_BYTES: usize = 256 * 1024;

/// Most transactions in one `Txns`/`Push` frame. Bounds the per-frame decode overhead
/// (a `Vec` header per transaction) independently of the byte limit.
pub const MAX_TXNS_PER_FRAME: usize = 8192;

/// Most origins in one summary. Origins are stores ever created in the fleet; 16k is far above
/// any fleet we target while keeping a summary's decode cost bounded.
pub const MAX_SUMMARY_ORIGINS: usize = 16_384;

/// Most sequence ranges in one summary, over all origins. A range is one contiguous run of held
/// transactions; many ranges mean many gaps. Caps the cost of planning a sync.
pub const MAX_SUMMARY_RANGES: usize = 131_072;

/// Most collection names in a partial-replication filter.
pub const MAX_FILTER_COLLECTIONS: usize = 1024;

/// Longest cluster id, in bytes.
pub const MAX_CLUSTER_ID_BYTES: usize = 128;

/// Longest error message carried in an `Error` frame, in bytes. Longer messages are cut by the
/// sender (at a character boundary) and refused by the receiver.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// Largest body of a `Control` frame, in bytes: a shuffle of [`MAX_CONTROL_PEERS`] peers or an
/// announcement of [`MAX_CONTROL_IDS`] transaction ids fits with room to spare.
pub const MAX_CONTROL_BYTES: usize = 64 * 1024;

/// Most peers named in one control message (a shuffle sample or its reply).
pub const MAX_CONTROL_PEERS: usize = 64;

/// Most transaction ids in one control message (`IHave`, `Graft`).
pub const MAX_CONTROL_IDS: usize = 2048;

/// Worst-case postcard size of one summary range: two `u64` varints of 10 bytes each.
const MAX_RANGE_WIRE_BYTES: usize = 20;
/// Worst-case postcard size of one origin entry without its ranges: id plus a length varint.
const MAX_ORIGIN_WIRE_BYTES: usize = 16 + 3;

/// Worst-case encoded size of a summary within the limits above.
pub const MAX_SUMMARY_WIRE_BYTES: usize =
    MAX_SUMMARY_ORIGINS * MAX_ORIGIN_WIRE_BYTES + MAX_SUMMARY_RANGES * MAX_RANGE_WIRE_BYTES + 3;

// A frame must be able to carry the largest transaction and the largest summary.
const _: () = assert!(MAX_FRAME_BYTES >= MAX_TXN_BYTES + 64);
const _: () = assert!(MAX_FRAME_BYTES >= MAX_SUMMARY_WIRE_BYTES + 1024);
const _: () = assert!(TARGET_FRAME_BYTES <= MAX_FRAME_BYTES);
// The length prefix is a u32.
const _: () = assert!(MAX_FRAME_BYTES <= u32::MAX as usize);
