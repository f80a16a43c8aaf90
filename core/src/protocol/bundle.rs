//! Bundle files: sneakernet sync for air-gapped devices.
//!
//! A bundle is a one-way sync session written to a file:
//!
//! ```text
//! "MESHLITE-BUNDLE\n" (16 bytes) | format version (1 byte, BUNDLE_FORMAT_VERSION)
//! frame: Header { cluster, exporter, schema_version, summary, cut_for }
//! frame: Txns { txns }  ... zero or more
//! frame: Trailer { txn_count, crc32 }   crc32 over every byte before the trailer frame
//! EOF
//! ```
//!
//! Frames use the protocol's framing (4-byte big-endian length, version byte, postcard) and its
//! limits, with a message type of their own so a bundle can never be mistaken for a session.
//! The exporter cuts a bundle against the importer's summary (`cut_for`) when it has one, else
//! writes everything it holds.
//!
//! Importing is two passes: [`BundleReader::verify`] reads the whole file — magic, every frame,
//! every transaction, count and checksum — in constant memory, so a truncated or corrupt bundle
//! is refused before anything is written; then a second reader streams the batches into the
//! store. [`BundleReader::bytes_read`] drives a progress bar.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use super::batch::Batcher;
use super::frame::{
    DecodeError, EncodeError, check_len, check_summary, check_txns, decode_message, encode_message,
};
use super::limits::{LEN_PREFIX_BYTES, MAX_CLUSTER_ID_BYTES, TARGET_FRAME_BYTES};
use super::wire;
use crate::change::{MAX_TXN_BYTES, Txn};
use crate::ids::ReplicaId;
use crate::version::Summary;

/// The first 16 bytes of every bundle.
pub const BUNDLE_MAGIC: &[u8; 16] = b"MESHLITE-BUNDLE\n";

/// The bundle format version, the byte after the magic.
pub const BUNDLE_FORMAT_VERSION: u8 = 1;

const PREAMBLE_BYTES: usize = BUNDLE_MAGIC.len() + 1;

/// Who wrote a bundle and what it was cut against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleHeader {
    /// The exporter's cluster id.
    pub cluster: String,
    /// The exporting replica.
    pub exporter: ReplicaId,
    /// The exporter's schema version.
    pub schema_version: u32,
    /// Everything the exporter held when writing.
    #[serde(deserialize_with = "wire::summary")]
    pub summary: Summary,
    /// The importer's summary the bundle was cut against (`--for`); `None`: the bundle holds
    /// everything the exporter had.
    #[serde(deserialize_with = "wire::opt_summary")]
    pub cut_for: Option<Summary>,
}

impl BundleHeader {
    fn validate(&self) -> Result<(), &'static str> {
        if self.cluster.len() > MAX_CLUSTER_ID_BYTES {
            return Err("cluster id too long");
        }
        check_summary(&self.summary)?;
        self.cut_for.as_ref().map_or(Ok(()), check_summary)
    }
}

/// The messages of a bundle file.
#[derive(Debug, Serialize, Deserialize)]
enum BundleFrame {
    Header(BundleHeader),
    Txns {
        #[serde(deserialize_with = "wire::txn_list")]
        txns: Vec<Vec<u8>>,
    },
    Trailer {
        txn_count: u64,
        crc32: u32,
    },
}

/// Error writing a bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleWriteError {
    /// Writing to the output failed.
    #[error("writing bundle: {0}")]
    Io(#[from] io::Error),
    /// The header breaks a wire limit.
    #[error("invalid bundle header: {0}")]
    InvalidHeader(&'static str),
    /// A transaction is empty or larger than [`MAX_TXN_BYTES`]; nothing of the call was written.
    #[error("transaction #{index} has {len} bytes (allowed: 1..={MAX_TXN_BYTES})")]
    InvalidTxn {
        /// Its position in the call's list.
        index: usize,
        /// Its length.
        len: usize,
    },
    /// A frame could not be encoded (for example a header whose two summaries exceed a frame).
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Writes a bundle as a stream: header at creation, transactions as they come, trailer at
/// [`BundleWriter::finish`]. A bundle without its trailer is refused by the reader, so an
/// interrupted export can never be imported as if complete.
#[derive(Debug)]
pub struct BundleWriter<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
    batcher: Batcher,
    txns: u64,
    bytes: u64,
}

impl<W: Write> BundleWriter<W> {
    /// Writes the magic, format version and header frame.
    pub fn new(out: W, header: &BundleHeader) -> Result<Self, BundleWriteError> {
        header.validate().map_err(BundleWriteError::InvalidHeader)?;
        let mut writer = Self {
            out,
            crc: crc32fast::Hasher::new(),
            batcher: Batcher::new(TARGET_FRAME_BYTES),
            txns: 0,
            bytes: 0,
        };
        let mut preamble = BUNDLE_MAGIC.to_vec();
        preamble.push(BUNDLE_FORMAT_VERSION);
        writer.write_hashed(&preamble)?;
        writer.write_frame(&BundleFrame::Header(header.clone()))?;
        Ok(writer)
    }

    /// Adds encoded transactions (as stored; they are not re-encoded), packing them into frames.
    pub fn write_txns(&mut self, txns: &[Vec<u8>]) -> Result<(), BundleWriteError> {
        if let Some((index, t)) = txns
            .iter()
            .enumerate()
            .find(|(_, t)| t.is_empty() || t.len() > MAX_TXN_BYTES)
        {
            return Err(BundleWriteError::InvalidTxn {
                index,
                len: t.len(),
            });
        }
        for txn in txns {
            self.txns += 1;
            if let Some(batch) = self.batcher.add(txn.clone()) {
                self.write_frame(&BundleFrame::Txns { txns: batch })?;
            }
        }
        Ok(())
    }

    /// Transactions written so far.
    pub fn txn_count(&self) -> u64 {
        self.txns
    }

    /// Bytes written to the output so far (pending transactions not yet framed excluded).
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Writes the last batch and the trailer, flushes, and returns the output (so the caller can
    /// `sync_all` a file before reporting success).
    pub fn finish(mut self) -> Result<W, BundleWriteError> {
        if let Some(batch) = self.batcher.take() {
            self.write_frame(&BundleFrame::Txns { txns: batch })?;
        }
        let trailer = BundleFrame::Trailer {
            txn_count: self.txns,
            crc32: self.crc.clone().finalize(),
        };
        let bytes = encode_message(&trailer)?;
        self.out.write_all(&bytes)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn write_frame(&mut self, frame: &BundleFrame) -> Result<(), BundleWriteError> {
        let bytes = encode_message(frame)?;
        self.write_hashed(&bytes)
    }

    fn write_hashed(&mut self, bytes: &[u8]) -> Result<(), BundleWriteError> {
        self.out.write_all(bytes)?;
        self.crc.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}

/// Error reading or verifying a bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleReadError {
    /// The file does not start with the bundle magic (empty, or another kind of file).
    #[error("not a Meshlite bundle (missing the {:?} header)", String::from_utf8_lossy(BUNDLE_MAGIC).trim_end())]
    NotABundle,
    /// The bundle was written by a newer format.
    #[error(
        "unsupported bundle format version {0} (this build reads version {BUNDLE_FORMAT_VERSION})"
    )]
    UnsupportedVersion(u8),
    /// The file ends early: an interrupted copy or export. Nothing of it should be imported.
    #[error("bundle is truncated at byte {offset}: re-export or re-copy it")]
    Truncated {
        /// Bytes present.
        offset: u64,
    },
    /// The trailer's checksum does not match the content: the file was corrupted.
    #[error(
        "bundle checksum mismatch (trailer {expected:08x}, content {actual:08x}): the file is corrupt"
    )]
    ChecksumMismatch {
        /// The checksum in the trailer.
        expected: u32,
        /// The checksum of the bytes read.
        actual: u32,
    },
    /// A frame claims more bytes than the protocol allows.
    #[error("frame at byte {offset} claims {len} bytes, above the frame limit")]
    Oversized {
        /// Where the frame starts.
        offset: u64,
        /// Its claimed length.
        len: usize,
    },
    /// A frame or transaction does not decode, or frames are out of order.
    #[error("malformed bundle at byte {offset}: {reason}")]
    Malformed {
        /// Where the bad frame starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Reading failed.
    #[error("reading bundle: {0}")]
    Io(#[from] io::Error),
}

/// What [`BundleReader::verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleInfo {
    /// The bundle's header.
    pub header: BundleHeader,
    /// Transactions in the bundle (all of which decode).
    pub txn_count: u64,
    /// Size of the bundle in bytes.
    pub bytes: u64,
}

/// Reads a bundle as a stream of transaction batches; also an [`Iterator`] over them.
///
/// The trailer is checked when the last batch has been read, so a consumer that applies batches
/// as they come must [`BundleReader::verify`] the file first.
#[derive(Debug)]
pub struct BundleReader<R: Read> {
    frames: FrameReader<R>,
    header: BundleHeader,
    txns_read: u64,
    finished: bool,
}

impl<R: Read> BundleReader<R> {
    /// Checks the magic and format version and reads the header.
    pub fn new(mut input: R) -> Result<Self, BundleReadError> {
        let preamble = read_preamble(&mut input)?;
        let mut frames = FrameReader::new(input, &preamble);
        let header = match frames.read_frame()? {
            (BundleFrame::Header(header), _) => header,
            (_, offset) => return Err(malformed(offset, "first frame is not the bundle header")),
        };
        Ok(Self {
            frames,
            header,
            txns_read: 0,
            finished: false,
        })
    }

    /// The bundle's header.
    pub fn header(&self) -> &BundleHeader {
        &self.header
    }

    /// Bytes consumed so far, for progress reporting.
    pub fn bytes_read(&self) -> u64 {
        self.frames.bytes_read
    }

    /// Transactions returned so far.
    pub fn txns_read(&self) -> u64 {
        self.txns_read
    }

    /// The next batch of encoded transactions; `Ok(None)` once the trailer has been read and
    /// checked (count, checksum, nothing after it).
    pub fn next_batch(&mut self) -> Result<Option<Vec<Vec<u8>>>, BundleReadError> {
        if self.finished {
            return Ok(None);
        }
        match self.frames.read_frame()? {
            (BundleFrame::Txns { txns }, _) => {
                self.txns_read += txns.len() as u64;
                Ok(Some(txns))
            }
            (BundleFrame::Trailer { txn_count, crc32 }, offset) => {
                self.check_trailer(offset, txn_count, crc32)?;
                Ok(None)
            }
            (BundleFrame::Header(_), offset) => Err(malformed(offset, "second bundle header")),
        }
    }

    /// Reads the whole bundle and checks everything, holding one frame at a time.
    pub fn verify(self) -> Result<BundleInfo, BundleReadError> {
        self.verify_with_progress(|_| {})
    }

    /// [`BundleReader::verify`], calling `progress` with the bytes read after each frame.
    pub fn verify_with_progress(
        mut self,
        mut progress: impl FnMut(u64),
    ) -> Result<BundleInfo, BundleReadError> {
        loop {
            let offset = self.bytes_read();
            let Some(batch) = self.next_batch()? else {
                break;
            };
            for (i, bytes) in batch.iter().enumerate() {
                Txn::decode(bytes)
                    .map_err(|e| malformed(offset, &format!("transaction #{i} of frame: {e}")))?;
            }
            progress(self.bytes_read());
        }
        let bytes = self.bytes_read();
        progress(bytes);
        Ok(BundleInfo {
            header: self.header,
            txn_count: self.txns_read,
            bytes,
        })
    }

    fn check_trailer(
        &mut self,
        offset: u64,
        count: u64,
        crc32: u32,
    ) -> Result<(), BundleReadError> {
        let actual = self.frames.crc.clone().finalize();
        if crc32 != actual {
            return Err(BundleReadError::ChecksumMismatch {
                expected: crc32,
                actual,
            });
        }
        if count != self.txns_read {
            let reason = format!(
                "trailer counts {count} transactions, bundle holds {}",
                self.txns_read
            );
            return Err(malformed(offset, &reason));
        }
        if !self.frames.at_eof()? {
            return Err(malformed(self.bytes_read(), "data after the trailer"));
        }
        self.finished = true;
        Ok(())
    }
}

/// Reads length-prefixed frames, counting and checksumming the bytes.
#[derive(Debug)]
struct FrameReader<R> {
    input: R,
    crc: crc32fast::Hasher,
    bytes_read: u64,
    payload: Vec<u8>,
}

impl<R: Read> FrameReader<R> {
    fn new(input: R, preamble: &[u8]) -> Self {
        let mut crc = crc32fast::Hasher::new();
        crc.update(preamble);
        Self {
            input,
            crc,
            bytes_read: preamble.len() as u64,
            payload: Vec::new(),
        }
    }

    /// Reads one frame; returns it with its offset. Every frame but the trailer is checksummed.
    fn read_frame(&mut self) -> Result<(BundleFrame, u64), BundleReadError> {
        let offset = self.bytes_read;
        let mut prefix = [0u8; LEN_PREFIX_BYTES];
        read_exact_or_truncated(&mut self.input, &mut prefix, offset)?;
        let len = check_len(prefix).map_err(|e| frame_error(offset, e))?;
        self.payload.clear();
        // `take` + `read_to_end` grows the buffer with the data actually present, so a lying
        // prefix on a short file costs no more than the file.
        let got = (&mut self.input)
            .take(len as u64)
            .read_to_end(&mut self.payload)?;
        if got < len {
            let end = offset + (LEN_PREFIX_BYTES + got) as u64;
            return Err(BundleReadError::Truncated { offset: end });
        }
        self.bytes_read += (LEN_PREFIX_BYTES + len) as u64;
        let frame: BundleFrame =
            decode_message(&self.payload).map_err(|e| frame_error(offset, e))?;
        if let BundleFrame::Txns { txns } = &frame {
            check_txns(txns).map_err(|e| malformed(offset, e))?;
        }
        if !matches!(frame, BundleFrame::Trailer { .. }) {
            self.crc.update(&prefix);
            self.crc.update(&self.payload);
        }
        Ok((frame, offset))
    }

    fn at_eof(&mut self) -> io::Result<bool> {
        Ok(read_full(&mut self.input, &mut [0u8; 1])? == 0)
    }
}

impl<R: Read> Iterator for BundleReader<R> {
    type Item = Result<Vec<Vec<u8>>, BundleReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.next_batch();
        if item.is_err() {
            // A stream that failed cannot be resumed.
            self.finished = true;
        }
        item.transpose()
    }
}

fn read_preamble(input: &mut impl Read) -> Result<[u8; PREAMBLE_BYTES], BundleReadError> {
    let mut preamble = [0u8; PREAMBLE_BYTES];
    let n = read_full(input, &mut preamble)?;
    let magic_seen = n.min(BUNDLE_MAGIC.len());
    if n == 0 || preamble[..magic_seen] != BUNDLE_MAGIC[..magic_seen] {
        return Err(BundleReadError::NotABundle);
    }
    if n < PREAMBLE_BYTES {
        return Err(BundleReadError::Truncated { offset: n as u64 });
    }
    match preamble[BUNDLE_MAGIC.len()] {
        BUNDLE_FORMAT_VERSION => Ok(preamble),
        other => Err(BundleReadError::UnsupportedVersion(other)),
    }
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn read_exact_or_truncated(
    input: &mut impl Read,
    buf: &mut [u8],
    offset: u64,
) -> Result<(), BundleReadError> {
    let n = read_full(input, buf)?;
    if n < buf.len() {
        return Err(BundleReadError::Truncated {
            offset: offset + n as u64,
        });
    }
    Ok(())
}

fn frame_error(offset: u64, e: DecodeError) -> BundleReadError {
    match e {
        DecodeError::Oversized { len, .. } => BundleReadError::Oversized { offset, len },
        other => malformed(offset, &other.to_string()),
    }
}

fn malformed(offset: u64, reason: &str) -> BundleReadError {
    BundleReadError::Malformed {
        offset,
        reason: reason.to_owned(),
    }
}
