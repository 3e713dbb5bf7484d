//! A segment: one preallocated, zero-filled file of frames, named after its first seq.
//!
//! Segment header (64 bytes, at offset 0; **do not reorder fields**):
//!
//! ```text
//! offset  size  field
//! 0       8     magic            b"EDGECAPS"
//! 8       4     format_version   u32 LE = 1
//! 12      4     header_bytes     u32 LE = 64
//! 16      8     first_seq        u64 LE, equal to the number in the file name
//! 24      8     segment_bytes    u64 LE, the preallocated file length
//! 32      8     created_wall_ms  i64 LE, informational only
//! 40      20    reserved         zero
//! 60      4     crc32            over bytes 0..60
//! ```
//!
//! Frames (see `record.rs`) follow from offset 64 back to back; the first frame whose length
//! field is zero ends the data. File name: `{first_seq:020}.seg`. Keep in step with FORMAT.md.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::limits::{
    FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES, ZERO_CHUNK_BYTES,
};
use crate::medium::MediumFile;
use crate::record::{decode_header, frame_bytes, frame_crc};

/// Magic bytes at the start of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"EDGECAPS";
/// Current on-disk format version.
pub const FORMAT_VERSION: u32 = 1;
/// Suffix of live segment files.
pub const SEGMENT_SUFFIX: &str = ".seg";
/// Suffix given to a segment set aside by recovery.
pub const QUARANTINE_SUFFIX: &str = ".seg.quarantine";
/// One sparse index point every this many records, to seek without scanning a whole segment.
const INDEX_EVERY_RECORDS: u64 = 64;

/// The decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub first_seq: u64,
    pub segment_bytes: u64,
    pub created_wall_ms: i64,
}

impl SegmentHeader {
    /// The 64 header bytes, CRC included.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut out = [0u8; SEGMENT_HEADER_BYTES as usize];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
        out[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.segment_bytes.to_le_bytes());
        out[32..40].copy_from_slice(&self.created_wall_ms.to_le_bytes());
        let crc = crc32fast::hash(&out[0..60]);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a header; the error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, String> {
        if bytes.len() < SEGMENT_HEADER_BYTES as usize {
            return Err(format!(
                "file is {} bytes, shorter than a header",
                bytes.len()
            ));
        }
        let crc = u32::from_le_bytes(bytes[60..64].try_into().unwrap());
        if crc != crc32fast::hash(&bytes[0..60]) {
            return Err("header CRC mismatch".into());
        }
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err("bad magic".into());
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        if version != FORMAT_VERSION {
            return Err(format!("unsupported format version {version}"));
        }
        let header_bytes = u32::from_le_bytes(bytes[12..16].try_into().unwrap());
        if u64::from(header_bytes) != SEGMENT_HEADER_BYTES {
            return Err(format!("unexpected header size {header_bytes}"));
        }
        Ok(SegmentHeader {
            first_seq: u64::from_le_bytes(bytes[16..24].try_into().unwrap()),
            segment_bytes: u64::from_le_bytes(bytes[24..32].try_into().unwrap()),
            created_wall_ms: i64::from_le_bytes(bytes[32..40].try_into().unwrap()),
        })
    }
}

/// File name of the segment starting at `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

/// The first seq named by a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What reading one frame found.
#[derive(Debug)]
pub(crate) enum FrameRead {
    /// A zero length field, or no room for another header: no more data here.
    End,
    /// A valid frame with the expected seq.
    Frame { payload: Vec<u8>, next_offset: u64 },
    /// Bytes that are not a valid frame; the reason names the check that failed.
    Bad(String),
}

/// Reads and fully checks the frame at `offset`, which must carry `expected_seq`.
pub(crate) fn read_frame(
    file: &dyn MediumFile,
    offset: u64,
    expected_seq: u64,
    record_bytes_max: usize,
) -> io::Result<FrameRead> {
    assert_eq!(offset % FRAME_ALIGN_BYTES, 0);
    let len = file.len();
    if offset + FRAME_HEADER_BYTES > len {
        return Ok(FrameRead::End);
    }
    let mut header = [0u8; FRAME_HEADER_BYTES as usize];
    file.read_at(offset, &mut header)?;
    let (payload_bytes, crc, seq) = decode_header(&header);
    if payload_bytes == 0 {
        return Ok(FrameRead::End);
    }
    if payload_bytes as usize > record_bytes_max
        || offset + frame_bytes(payload_bytes as usize) > len
    {
        return Ok(FrameRead::Bad(format!("impossible length {payload_bytes}")));
    }
    let mut payload = vec![0u8; payload_bytes as usize];
    file.read_at(offset + FRAME_HEADER_BYTES, &mut payload)?;
    if frame_crc(payload_bytes, seq, &payload) != crc {
        return Ok(FrameRead::Bad("CRC mismatch".into()));
    }
    if seq != expected_seq {
        return Ok(FrameRead::Bad(format!(
            "seq {seq} where {expected_seq} was expected (stale or misplaced record)"
        )));
    }
    Ok(FrameRead::Frame {
        payload,
        next_offset: offset + frame_bytes(payload_bytes as usize),
    })
}

/// Offset one past the last non-zero byte in `from..file.len()`, if any byte there is non-zero.
pub(crate) fn last_nonzero_end(file: &dyn MediumFile, from: u64) -> io::Result<Option<u64>> {
    let len = file.len();
    let mut buf = vec![0u8; ZERO_CHUNK_BYTES];
    let mut found = None;
    let mut offset = from;
    while offset < len {
        let step = (len - offset).min(ZERO_CHUNK_BYTES as u64) as usize;
        file.read_at(offset, &mut buf[..step])?;
        if let Some(pos) = buf[..step].iter().rposition(|&b| b != 0) {
            found = Some(offset + pos as u64 + 1);
        }
        offset += step as u64;
    }
    Ok(found)
}

/// Counts the CRC-valid frames (any seq) that start on frame boundaries in `from..to`: what a
/// tail cut throws away, for the recovery report.
pub(crate) fn count_valid_frames(
    file: &dyn MediumFile,
    from: u64,
    to: u64,
    record_bytes_max: usize,
) -> io::Result<u64> {
    let mut count = 0;
    let mut offset = from;
    let mut header = [0u8; FRAME_HEADER_BYTES as usize];
    while offset + FRAME_HEADER_BYTES <= to {
        file.read_at(offset, &mut header)?;
        let (payload_bytes, crc, seq) = decode_header(&header);
        // `to` is the end of the last non-zero byte: a frame's zero padding may lie past it.
        let frame = frame_bytes(payload_bytes as usize);
        let unpadded_end = offset + FRAME_HEADER_BYTES + u64::from(payload_bytes);
        if payload_bytes > 0
            && payload_bytes as usize <= record_bytes_max
            && unpadded_end <= to
            && offset + frame <= file.len()
        {
            let mut payload = vec![0u8; payload_bytes as usize];
            file.read_at(offset + FRAME_HEADER_BYTES, &mut payload)?;
            if frame_crc(payload_bytes, seq, &payload) == crc {
                count += 1;
                offset += frame;
                continue;
            }
        }
        offset += FRAME_ALIGN_BYTES;
    }
    Ok(count)
}

/// Damage found inside a segment that is not the last one: records from `lost_from` to
/// `lost_to` (inclusive) cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub lost_from: u64,
    pub lost_to: u64,
    pub reason: String,
}

/// An open segment, shared by the writer and readers.
#[derive(Debug)]
pub(crate) struct Segment {
    pub name: String,
    pub first_seq: u64,
    pub file: Box<dyn MediumFile>,
    /// Offset one past the last valid frame.
    end_offset: AtomicU64,
    /// Seq of the last valid frame; `first_seq - 1` while empty.
    last_seq: AtomicU64,
    /// Sparse (seq, offset) points, ascending.
    index: Mutex<Vec<(u64, u64)>>,
    pub damage: Option<Damage>,
}

impl Segment {
    pub fn new(name: String, first_seq: u64, file: Box<dyn MediumFile>) -> Segment {
        assert!(first_seq >= 1);
        Segment {
            name,
            first_seq,
            file,
            end_offset: AtomicU64::new(SEGMENT_HEADER_BYTES),
            last_seq: AtomicU64::new(first_seq - 1),
            index: Mutex::new(Vec::new()),
            damage: None,
        }
    }

    pub fn end_offset(&self) -> u64 {
        self.end_offset.load(Ordering::Acquire)
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    pub fn record_count(&self) -> u64 {
        self.last_seq() + 1 - self.first_seq
    }

    /// Records that the frame of `seq` starts at `offset` and ends at `end`.
    pub fn note_frame(&self, seq: u64, offset: u64, end: u64) {
        assert_eq!(seq, self.last_seq() + 1, "frames are noted in seq order");
        if (seq - self.first_seq) % INDEX_EVERY_RECORDS == 0 {
            self.index
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((seq, offset));
        }
        self.end_offset.store(end, Ordering::Release);
        self.last_seq.store(seq, Ordering::Release);
    }

    /// The best known (seq, offset) at or before `seq`.
    pub fn seek_point(&self, seq: u64) -> (u64, u64) {
        let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        match index.partition_point(|&(s, _)| s <= seq) {
            0 => (self.first_seq, SEGMENT_HEADER_BYTES),
            i => index[i - 1],
        }
    }
}
