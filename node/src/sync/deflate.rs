//! Frame-level deflate for sync messages that carry a whole document (a record's first offer).
//!
//! Automerge's `save` deflates every column over 256 bytes on its own, and each column pays
//! for a fresh deflate state: on the hub that was a quarter of its CPU per record delivered.
//! A first offer is instead saved uncompressed and the whole encoded message is deflated once,
//! with one compressor per thread reused from message to message. The receiver inflates it
//! within [`MAX_INFLATED`] before anything else reads it, and then reads plain columns: its own
//! guard and Automerge no longer inflate each column in turn.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The most a deflated message may inflate to: the largest frame either side accepts.
pub const MAX_INFLATED: usize = super::MAX_FRAME_BYTES;

/// Why a peer's deflated message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    #[error("deflated sync message does not inflate: {0}")]
    Corrupt(String),
    #[error("deflated sync message inflates past {limit} bytes")]
    TooLarge { limit: usize },
    #[error("deflated sync message ends before its last block")]
    Truncated,
}

thread_local! {
    // Raw deflate (no zlib header: the frame says what it is). Level 1, zlib-rs's quick
    // strategy: on the benchmark's records a first offer made this way takes 14 µs against
    // Automerge's 29 µs, and is 11% larger (1,760 bytes against 1,584); levels 2 to 9 match
    // Automerge's size but take 31 to 35 µs (`cargo run --release -p linkage-tests --example
    // costs`). CPU is the scarcer of the two for the hub.
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
    static DECOMPRESSOR: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// Deflates `plain` with this thread's compressor.
pub fn deflate(plain: &[u8]) -> Vec<u8> {
    COMPRESSOR.with_borrow_mut(|compressor| {
        compressor.reset();
        let mut out = Vec::with_capacity(plain.len() / 2 + 64);
        loop {
            let consumed = compressor.total_in() as usize;
            let status = compressor
                .compress_vec(&plain[consumed..], &mut out, FlushCompress::Finish)
                .expect("deflating a buffer in memory cannot fail");
            if status == Status::StreamEnd {
                return out;
            }
            out.reserve(out.capacity().max(64));
        }
    })
}

/// Inflates a peer's deflated message, refusing it once it passes [`MAX_INFLATED`] bytes.
pub fn inflate(deflated: &[u8]) -> Result<Vec<u8>, InflateError> {
    inflate_within(deflated, MAX_INFLATED)
}

fn inflate_within(deflated: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    DECOMPRESSOR.with_borrow_mut(|decompressor| {
        decompressor.reset(false);
        let mut out = Vec::with_capacity((deflated.len() * 4).min(limit + 1));
        loop {
            let consumed = decompressor.total_in() as usize;
            let produced = decompressor.total_out();
            let status = decompressor
                .decompress_vec(&deflated[consumed..], &mut out, FlushDecompress::Finish)
                .map_err(|e| InflateError::Corrupt(e.to_string()))?;
            if out.len() > limit {
                return Err(InflateError::TooLarge { limit });
            }
            match status {
                Status::StreamEnd => return Ok(out),
                // Neither input taken nor output made with room left: the input is spent.
                _ if decompressor.total_in() as usize == consumed
                    && decompressor.total_out() == produced
                    && out.len() < out.capacity() =>
                {
                    return Err(InflateError::Truncated);
                }
                _ => {}
            }
            if out.len() == out.capacity() {
                // One byte past the limit is enough to know it is too large.
                let room = (limit + 1).saturating_sub(out.len());
                out.reserve(out.capacity().max(1024).min(room));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(len: usize) -> Vec<u8> {
        "北戴河区综合行政执法局 shares the day's enforcement information. "
            .bytes()
            .cycle()
            .take(len)
            .collect()
    }

    #[test]
    fn what_is_deflated_inflates_to_the_same_bytes_again_and_again() {
        // The same thread's compressor and decompressor are reused: each message stands alone.
        for len in [0, 1, 300, 70_000, 1 << 20] {
            let plain = text(len);
            let deflated = deflate(&plain);
            assert!(
                len < 300 || deflated.len() < plain.len() / 2,
                "{len} bytes compress"
            );
            assert_eq!(inflate(&deflated).unwrap(), plain, "{len} bytes round trip");
        }
    }

    #[test]
    fn a_message_inflating_past_the_limit_is_refused_naming_the_limit() {
        // A peer may deflate at any level; the best makes the smallest bomb.
        let bomb = {
            use std::io::Write;
            let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), Compression::best());
            encoder.write_all(&vec![0u8; 10 << 20]).unwrap();
            encoder.finish().unwrap()
        };
        assert!(bomb.len() < 20_000, "ten zero mebibytes deflate small");
        let error = inflate(&bomb).unwrap_err();
        assert_eq!(
            error,
            InflateError::TooLarge {
                limit: MAX_INFLATED
            }
        );
        assert!(error.to_string().contains(&MAX_INFLATED.to_string()));
        // Exactly at the limit is allowed.
        let full = deflate(&vec![7u8; 4096]);
        assert_eq!(inflate_within(&full, 4096).unwrap().len(), 4096);
        assert!(inflate_within(&full, 4095).is_err());
    }

    #[test]
    fn garbage_and_cut_messages_are_refused_not_misread() {
        let error = inflate(&[0xff; 64]).unwrap_err();
        assert!(matches!(error, InflateError::Corrupt(_)), "{error:?}");

        let whole = deflate(&text(50_000));
        let cut = &whole[..whole.len() / 2];
        assert_eq!(inflate(cut).unwrap_err(), InflateError::Truncated);
        // A refusal leaves the thread's decompressor fit for the next message.
        assert_eq!(inflate(&whole).unwrap(), text(50_000));
    }
}
