//! The record frame: how one event sits in a segment.
//!
//! ```text
//! offset  size  field
//! 0       4     payload_bytes  u32 LE; 0 = end of data in this segment
//! 4       4     crc32          u32 LE; CRC-32 (IEEE, crc32fast) over bytes 0..4 ++ 8..16+payload_bytes
//! 8       8     seq            u64 LE
//! 16      n     payload        postcard-encoded `Event`
//! 16+n    pad   zero bytes up to the next multiple of 8
//! ```
//!
//! The CRC covers the length, the seq and the payload: everything in the frame but itself and
//! the padding. A frame is accepted only if its length is possible (non-zero, at most the record
//! limit, inside the segment), its CRC matches, and its seq is the one expected next.
//! Keep this table in step with `storage/FORMAT.md`.

use crate::limits::{FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES};

/// Bytes a frame with `payload_bytes` of payload occupies, padding included.
pub fn frame_bytes(payload_bytes: usize) -> u64 {
    let raw = FRAME_HEADER_BYTES + payload_bytes as u64;
    raw.div_ceil(FRAME_ALIGN_BYTES) * FRAME_ALIGN_BYTES
}

/// CRC of a frame: over the length field, the seq field and the payload.
pub fn frame_crc(payload_bytes: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&payload_bytes.to_le_bytes());
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Appends a whole frame (header, payload, padding) for `seq` to `out`.
pub fn encode_frame(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let payload_bytes = u32::try_from(payload.len()).expect("payload bounded by record limit");
    assert!(payload_bytes > 0, "a record payload is never empty");
    let start = out.len();
    out.extend_from_slice(&payload_bytes.to_le_bytes());
    out.extend_from_slice(&frame_crc(payload_bytes, seq, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    let total = frame_bytes(payload.len()) as usize;
    out.resize(start + total, 0);
    debug_assert_eq!(decode_header(&out[start..start + 16]).0, payload_bytes);
}

/// Splits a 16-byte frame header into (payload_bytes, crc, seq).
pub fn decode_header(header: &[u8]) -> (u32, u32, u64) {
    assert_eq!(header.len() as u64, FRAME_HEADER_BYTES);
    let payload_bytes = u32::from_le_bytes(header[0..4].try_into().unwrap());
    let crc = u32::from_le_bytes(header[4..8].try_into().unwrap());
    let seq = u64::from_le_bytes(header[8..16].try_into().unwrap());
    (payload_bytes, crc, seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_padding() {
        for n in 1..40usize {
            let payload: Vec<u8> = (0..n as u8).collect();
            let mut out = Vec::new();
            encode_frame(7, &payload, &mut out);
            assert_eq!(out.len() as u64, frame_bytes(n));
            assert_eq!(out.len() % 8, 0);
            let (len, crc, seq) = decode_header(&out[..16]);
            assert_eq!((len as usize, seq), (n, 7));
            assert_eq!(crc, frame_crc(len, seq, &out[16..16 + n]));
            assert!(out[16 + n..].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn crc_covers_length_seq_and_payload() {
        let base = frame_crc(3, 9, b"abc");
        assert_ne!(base, frame_crc(4, 9, b"abc"));
        assert_ne!(base, frame_crc(3, 10, b"abc"));
        assert_ne!(base, frame_crc(3, 9, b"abd"));
    }
}
