//! A streaming check of frame length prefixes, run on received bytes before anything buffers
//! them.
//!
//! The protocol's decoder refuses frames above the protocol limit (4 MiB); the transport may be
//! configured lower (`max_frame_bytes`, for small devices). The guard walks frame boundaries in
//! O(1) memory — four bytes of pending prefix — so an oversized frame is refused as soon as its
//! prefix arrives and the stream is closed without reading the body.

use meshlite_core::protocol::limits::LEN_PREFIX_BYTES;

/// A frame whose announced length breaks the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {len} bytes announced, the limit is {max} bytes")]
pub struct OversizedFrame {
    /// The announced payload length (0 is refused too: a payload holds at least its version).
    pub len: usize,
    /// The configured limit.
    pub max: usize,
}

/// Tracks where frames begin in a byte stream.
#[derive(Debug, Clone)]
pub struct FrameGuard {
    max: usize,
    prefix: [u8; LEN_PREFIX_BYTES],
    prefix_len: usize,
    /// Payload bytes of the current frame still to come.
    remaining: usize,
}

impl FrameGuard {
    /// A guard refusing payloads longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            prefix: [0; LEN_PREFIX_BYTES],
            prefix_len: 0,
            remaining: 0,
        }
    }

    /// Checks the next received bytes. After an error the stream must be abandoned.
    pub fn check(&mut self, mut input: &[u8]) -> Result<(), OversizedFrame> {
        while !input.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(input.len());
                self.remaining -= skip;
                input = &input[skip..];
                continue;
            }
            let take = (LEN_PREFIX_BYTES - self.prefix_len).min(input.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&input[..take]);
            self.prefix_len += take;
            input = &input[take..];
            if self.prefix_len == LEN_PREFIX_BYTES {
                self.prefix_len = 0;
                self.remaining = self.announced()?;
            }
        }
        Ok(())
    }

    /// True when the bytes so far end exactly at a frame boundary.
    pub fn at_boundary(&self) -> bool {
        self.prefix_len == 0 && self.remaining == 0
    }

    fn announced(&self) -> Result<usize, OversizedFrame> {
        let len = u32::from_be_bytes(self.prefix) as usize;
        if len == 0 || len > self.max {
            return Err(OversizedFrame { len, max: self.max });
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: u32) -> Vec<u8> {
        let mut out = len.to_be_bytes().to_vec();
        out.resize(4 + len as usize, 7);
        out
    }

    #[test]
    fn accepts_frames_split_anywhere() {
        let bytes: Vec<u8> = [frame(5), frame(1), frame(100)].concat();
        for split in 0..bytes.len() {
            let mut guard = FrameGuard::new(100);
            assert_eq!(guard.check(&bytes[..split]), Ok(()));
            assert_eq!(guard.check(&bytes[split..]), Ok(()));
            assert!(guard.at_boundary());
        }
    }

    #[test]
    fn refuses_an_oversized_prefix_before_its_body() {
        let mut guard = FrameGuard::new(100);
        assert_eq!(guard.check(&frame(3)), Ok(()));
        assert_eq!(guard.check(&[0, 0]), Ok(()));
        let err = guard.check(&[0, 101]).expect_err("oversized");
        assert_eq!(err, OversizedFrame { len: 101, max: 100 });
        assert!(FrameGuard::new(100).check(&[0, 0, 0, 0]).is_err());
    }
}
