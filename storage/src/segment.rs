//! A segment: one preallocated, zero-filled file of frames, named after its first seq.
//!
//! Segment header (64 bytes, at offset 0; **do not reorder fields**):
//!
//! ```text
//! offset  size  field
//! 0       8     magic            b"EDGECAPS"
//! 8       4     format_version   u32 LE = 2 (1 is still read)
//! 12      4     header_bytes     u32 LE = 64
//! 16      8     first_seq        u64 LE, equal to the number in the file name
//! 24      8     segment_bytes    u64 LE, the preallocated file length
//! 32      8     created_wall_ms  i64 LE, informational only
//! 40      4     unsynced_kib     u32 LE: the writer never wrote more than this many KiB past
//!                                the end of data at its last completed sync (0: no promise)
//! 44      16    reserved         zero
//! 60      4     crc32            over bytes 0..60
//! ```
//!
//! v2 layout: the header has page 0 to itself; frames (see `record.rs`) follow back to back
//! from offset 4096 up to `segment_bytes - 16384`; the last 16 KiB hold two tail-page slots
//! (`tail.rs`). v1 frames start at 64 and run to the end of the file. The first frame whose
//! length field is zero, with only zeros after it, ends the data. File name:
//! `{first_seq:020}.seg`. Keep in step with FORMAT.md.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::limits::{
    SEGMENT_DATA_START, SEGMENT_DATA_START_V1, SEGMENT_HEADER_BYTES, SEGMENT_TRAILER_BYTES,
    ZERO_CHUNK_BYTES,
};
use crate::medium::MediumFile;
use crate::recovery::SeqRange;

/// Magic bytes at the start of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"EDGECAPS";
/// Current on-disk format version: 2 (tail-page slots, header page of its own).
pub const FORMAT_VERSION: u32 = 2;
/// The first format, still read: its segments are sealed on open, never appended to.
pub const FORMAT_VERSION_V1: u32 = 1;
/// Suffix of live segment files.
pub const SEGMENT_SUFFIX: &str = ".seg";
/// Suffix given to a segment set aside by recovery.
pub const QUARANTINE_SUFFIX: &str = ".seg.quarantine";
/// One sparse index point every this many records, to seek without scanning a whole segment.
const INDEX_EVERY_RECORDS: u64 = 64;

/// The decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub version: u32,
    pub first_seq: u64,
    pub segment_bytes: u64,
    pub created_wall_ms: i64,
    /// Bytes past the end of data at the last completed sync within which every write of this
    /// segment's writer stayed (a multiple of 1024; 0: no promise, e.g. an older build or a
    /// rebuilt header): how far a repairing open must look for stale bytes.
    pub unsynced_window_bytes: u64,
}

impl SegmentHeader {
    /// The 64 header bytes, CRC included.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut out = [0u8; SEGMENT_HEADER_BYTES as usize];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&self.version.to_le_bytes());
        out[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
        out[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.segment_bytes.to_le_bytes());
        out[32..40].copy_from_slice(&self.created_wall_ms.to_le_bytes());
        let kib = u32::try_from(self.unsynced_window_bytes / 1024).unwrap_or(0);
        out[40..44].copy_from_slice(&kib.to_le_bytes());
        let crc = crc32fast::hash(&out[0..60]);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Where frames start and end in a segment of this version and length.
    pub fn data_range(&self) -> (u64, u64) {
        data_range(self.version, self.segment_bytes)
    }

    /// The header a v2 segment named `first_seq` of `segment_bytes` must have, apart from its
    /// informational creation time: what recovery rebuilds a damaged header from.
    pub fn rebuilt(first_seq: u64, segment_bytes: u64) -> SegmentHeader {
        SegmentHeader {
            version: FORMAT_VERSION,
            first_seq,
            segment_bytes,
            created_wall_ms: 0,
            unsynced_window_bytes: 0,
        }
    }

    /// The header of a new v2 segment, with the unsynced-bytes promise of this build.
    pub fn new_v2(first_seq: u64, segment_bytes: u64, created_wall_ms: i64) -> SegmentHeader {
        SegmentHeader {
            version: FORMAT_VERSION,
            first_seq,
            segment_bytes,
            created_wall_ms,
            unsynced_window_bytes: crate::limits::UNSYNCED_WINDOW_BYTES.next_multiple_of(1024),
        }
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
        if version != FORMAT_VERSION && version != FORMAT_VERSION_V1 {
            return Err(format!("unsupported format version {version}"));
        }
        let header_bytes = u32::from_le_bytes(bytes[12..16].try_into().unwrap());
        if u64::from(header_bytes) != SEGMENT_HEADER_BYTES {
            return Err(format!("unexpected header size {header_bytes}"));
        }
        Ok(SegmentHeader {
            version,
            first_seq: u64::from_le_bytes(bytes[16..24].try_into().unwrap()),
            segment_bytes: u64::from_le_bytes(bytes[24..32].try_into().unwrap()),
            created_wall_ms: i64::from_le_bytes(bytes[32..40].try_into().unwrap()),
            unsynced_window_bytes: if version == FORMAT_VERSION {
                u64::from(u32::from_le_bytes(bytes[40..44].try_into().unwrap())) * 1024
            } else {
                0
            },
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
    digits
        .parse()
        .ok()
        .filter(|&seq| crate::limits::plausible_seq(seq))
}

/// Where frames start and end in a segment of `version` that is `segment_bytes` long.
pub fn data_range(version: u32, segment_bytes: u64) -> (u64, u64) {
    if version == FORMAT_VERSION_V1 {
        (SEGMENT_DATA_START_V1, segment_bytes)
    } else {
        (
            SEGMENT_DATA_START,
            segment_bytes.saturating_sub(SEGMENT_TRAILER_BYTES),
        )
    }
}

/// Offset one past the last non-zero byte in `from..to`, if any byte there is non-zero. Reads
/// with `read_uncached`: an unreadable chunk counts as non-zero (it is not known to be empty).
pub(crate) fn last_nonzero_end(file: &dyn MediumFile, from: u64, to: u64) -> Option<u64> {
    let mut buf = vec![0u8; ZERO_CHUNK_BYTES];
    let mut found = None;
    let mut offset = from;
    while offset < to {
        let step = (to - offset).min(ZERO_CHUNK_BYTES as u64) as usize;
        match file.read_uncached(offset, &mut buf[..step]) {
            Ok(()) => {
                if let Some(pos) = buf[..step].iter().rposition(|&b| b != 0) {
                    found = Some(offset + pos as u64 + 1);
                }
            }
            Err(_) => found = Some(offset + step as u64),
        }
        offset += step as u64;
    }
    found
}

/// Damage found inside a segment: records from `lost_from` to `lost_to` (inclusive) cannot be
/// read.
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
    pub version: u32,
    /// Frames live in `data_start..data_end`.
    pub data_start: u64,
    pub data_end: u64,
    /// From the header: how far past the end of data stale bytes can lie (0: anywhere).
    pub unsynced_window: u64,
    /// End of data at the last completed sync of this segment by this process (or as
    /// recovered): no write goes more than `UNSYNCED_BYTES_MAX` past it unsynced.
    pub synced_end: AtomicU64,
    pub file: Box<dyn MediumFile>,
    /// Offset one past the last valid frame.
    end_offset: AtomicU64,
    /// Seq of the last valid frame; `first_seq - 1` while empty.
    last_seq: AtomicU64,
    /// Sparse (seq, offset) points, ascending.
    index: Mutex<Vec<(u64, u64)>>,
    /// Seq ranges inside this segment that cannot be read (damage), ascending.
    holes: Mutex<Vec<SeqRange>>,
    /// Generation of the newest tail-page slot written (0: none yet).
    pub tail_generation: AtomicU64,
    /// Serializes slot writes (a sync and a rotation may write the trailer at once).
    slots: Mutex<()>,
    /// Set when recovery took the end from a seal: never appended to again.
    pub sealed: bool,
    pub damage: Option<Damage>,
}

impl Segment {
    pub fn new(name: String, header: &SegmentHeader, file: Box<dyn MediumFile>) -> Segment {
        assert!(header.first_seq >= 1);
        let (data_start, data_end) = header.data_range();
        assert!(data_start >= SEGMENT_HEADER_BYTES && data_start <= data_end);
        Segment {
            name,
            first_seq: header.first_seq,
            version: header.version,
            data_start,
            data_end,
            unsynced_window: header.unsynced_window_bytes,
            synced_end: AtomicU64::new(data_start),
            file,
            end_offset: AtomicU64::new(data_start),
            last_seq: AtomicU64::new(header.first_seq - 1),
            index: Mutex::new(Vec::new()),
            holes: Mutex::new(Vec::new()),
            tail_generation: AtomicU64::new(0),
            slots: Mutex::new(()),
            sealed: false,
            damage: None,
        }
    }

    /// True when appends may go here (v2 has the tail-page slots that make them safe).
    pub fn appendable(&self) -> bool {
        self.version == FORMAT_VERSION && self.damage.is_none() && !self.sealed
    }

    /// Held while a trailer slot is written.
    pub fn lock_slots(&self) -> std::sync::MutexGuard<'_, ()> {
        lock_ignoring_poison(&self.slots)
    }

    /// Takes the end of a sealed segment from its seal instead of a scan: `last_seq` and
    /// `end_offset` as the seal says, no index points (seeks scan from the start), no holes
    /// known until a reader meets one.
    pub fn trust_seal(&mut self, last_seq: u64, end_offset: u64) {
        assert!(last_seq + 1 >= self.first_seq);
        assert!(end_offset >= self.data_start && end_offset <= self.data_end);
        self.last_seq.store(last_seq, Ordering::Release);
        self.end_offset.store(end_offset, Ordering::Release);
        self.sealed = true;
    }

    /// Records that seqs `lost.from..=lost.to` are unreadable and the frame of `lost.to + 1`
    /// starts at `offset`: readers jump the hole, seeks never cross it.
    pub fn note_hole(&self, lost: SeqRange, offset: u64) {
        assert!(lost.from == self.last_seq() + 1 && lost.to >= lost.from);
        lock_ignoring_poison(&self.holes).push(lost);
        lock_ignoring_poison(&self.index).push((lost.to + 1, offset));
        self.last_seq.store(lost.to, Ordering::Release);
        self.end_offset.store(offset, Ordering::Release);
    }

    /// The unreadable range holding `seq`, if any.
    pub fn hole_at(&self, seq: u64) -> Option<SeqRange> {
        lock_ignoring_poison(&self.holes)
            .iter()
            .find(|h| h.from <= seq && seq <= h.to)
            .copied()
    }

    /// Marks `lost` unreadable after a read-time check failed and the reader found the next
    /// good frame at `offset` (or none: then `lost` runs to the segment's last seq).
    pub fn note_read_damage(&self, lost: SeqRange, resume: Option<u64>) {
        {
            let mut holes = lock_ignoring_poison(&self.holes);
            match holes
                .iter_mut()
                .find(|h| h.from <= lost.from && lost.from <= h.to)
            {
                // Met again (e.g. frames appended after a hole that ran to the end): widen it.
                Some(hole) => hole.to = hole.to.max(lost.to),
                None => {
                    holes.push(lost);
                    holes.sort_by_key(|h| h.from);
                }
            }
        }
        if let Some(offset) = resume {
            // A seek point past the hole, so no walk from before it meets the bad frame again.
            let key = lost.to + 1;
            let mut index = lock_ignoring_poison(&self.index);
            let at = index.partition_point(|&(s, _)| s < key);
            if index.get(at).map(|&(s, _)| s) != Some(key) {
                index.insert(at, (key, offset));
            }
        }
    }

    pub fn end_offset(&self) -> u64 {
        self.end_offset.load(Ordering::Acquire)
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// Readable records: the seq span minus the holes in it.
    pub fn record_count(&self) -> u64 {
        let last = self.last_seq();
        let unreadable: u64 = lock_ignoring_poison(&self.holes)
            .iter()
            .filter(|h| h.from <= last)
            .map(|h| h.to.min(last) + 1 - h.from)
            .sum();
        (last + 1 - self.first_seq) - unreadable
    }

    /// Records that the frame of `seq` starts at `offset` and ends at `end`.
    pub fn note_frame(&self, seq: u64, offset: u64, end: u64) {
        assert_eq!(seq, self.last_seq() + 1, "frames are noted in seq order");
        assert!(offset >= self.data_start && end <= self.data_end);
        if (seq - self.first_seq) % INDEX_EVERY_RECORDS == 0 {
            lock_ignoring_poison(&self.index).push((seq, offset));
        }
        self.end_offset.store(end, Ordering::Release);
        self.last_seq.store(seq, Ordering::Release);
    }

    /// The best known (seq, offset) at or before `seq`.
    pub fn seek_point(&self, seq: u64) -> (u64, u64) {
        let index = lock_ignoring_poison(&self.index);
        match index.partition_point(|&(s, _)| s <= seq) {
            0 => (self.first_seq, self.data_start),
            i => index[i - 1],
        }
    }
}

fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
