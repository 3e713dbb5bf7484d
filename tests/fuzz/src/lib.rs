//! Shared by the fuzz targets: how fuzzer bytes become a data directory or a cursor file, and
//! what every target does with a data directory (what `edgecap log verify` and `log dump` do).
//!
//! Random bytes almost never pass a CRC, so most inputs carry flags that let the harness put
//! the bytes into the shape recovery expects (a segment of a valid length, the trailer slots
//! where they belong) and recompute the CRCs after the fuzzer's edits. Everything the fuzzer
//! does not ask to be fixed stays exactly as it wrote it. `seeds.py` writes the seed corpus in
//! these layouts. Reading past the end of the input yields zeros, so every input is valid.
//!
//! # `segment_recovery`: a data directory
//!
//! ```text
//! u8   control   bits 0-1  files: 1 + min(bits, 2), i.e. 1..=3
//!                bit  2    a cursor file `forward.cursor` follows the files
//!                bit  3    after the read-only pass: a repairing open, an append, a reread
//!                bits 4-5  kind of the LAST file: 0 segment `{seq:020}.seg`, 1 quarantine
//!                          `{seq:020}.seg.quarantine`, 2 cut file `{seq:020}-000000004096.cut`,
//!                          3 temp file `{seq:020}.seg.tmp`
//! per file:
//! u8   flags     see [`file_flags`]
//! u8   seq       first_seq = the previous file's + seq (the first file: seq), or
//!                u64::MAX - seq with HUGE_SEQ
//! u16  body_len  (LE) then body_len bytes: the whole file, or with SHAPED its header and data
//! u16  tail_len  (LE, SHAPED only) then tail_len bytes: the two trailer slots, half each
//! cursor (control bit 2):
//! u8   flags     see [`cursor_flags`]
//! u16  len       (LE) then len bytes
//! ```
//!
//! # `cursor_file`
//!
//! `u8 flags` ([`cursor_flags`]), then the rest of the input as the cursor bytes.

use std::io;
use std::path::Path;

use edgecap_storage::cursor::{
    slot_bytes_for, CURSOR_FILE_BYTES, CURSOR_FILE_BYTES_V1, CURSOR_MAGIC,
};
use edgecap_storage::limits::{
    CURSOR_SLOT_BYTES, CURSOR_SLOT_BYTES_V1, FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES, PAGE_BYTES,
    RECORD_PAYLOAD_BYTES_MAX_FORMAT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_DATA_START,
    SEGMENT_HEADER_BYTES, SEGMENT_TRAILER_BYTES, TAIL_SLOT_HEADER_BYTES,
};
use edgecap_storage::medium::MediumFile;
use edgecap_storage::record::{decode_header, frame_bytes, frame_crc};
use edgecap_storage::segment::{
    data_range, segment_name, SegmentHeader, FORMAT_VERSION, FORMAT_VERSION_V1,
};
use edgecap_storage::tail::{slot_offset, SEAL_MAGIC, TAIL_MAGIC, TAIL_SLOT_BYTES};
use edgecap_storage::{Event, Log, LogOptions, RecoveryReport};

/// Name of the cursor file the harness writes.
pub const CURSOR_NAME: &str = "forward";

/// Takes bytes off the front of the fuzzer's input; past its end, reads give zeros or nothing.
#[derive(Debug)]
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { rest: data }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&byte, rest)) => {
                self.rest = rest;
                byte
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        let low = self.u8();
        let high = self.u8();
        u16::from_le_bytes([low, high])
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }
}

/// Flags of one file of a `segment_recovery` input.
pub mod file_flags {
    /// The file is a v2-shaped segment, 24 KiB plus EXTRA pages: the body's first 64 bytes at
    /// offset 0 (the header), the rest from 4096 (the data region, clipped to it), the tail's
    /// first half in trailer slot 0 and its second half in slot 1 (with V1 the body goes
    /// from offset 0: a v1 segment has its frames right after the header). Without SHAPED the
    /// body is the whole file, whatever its length.
    pub const SHAPED: u8 = 0x01;
    /// Rewrite the header as valid for this file (magic, version, size 64, first_seq from the
    /// name, segment_bytes = the file's length, CRC), keeping its creation time. Segments only.
    pub const FIX_HEADER: u8 = 0x02;
    /// Recompute the CRC of every frame from the start of data, as long as lengths are
    /// possible (seqs and payloads stay as written).
    pub const FIX_FRAMES: u8 = 0x04;
    /// Recompute the CRC of a tail-page copy or seal in each trailer slot that has its magic.
    pub const FIX_TRAILER: u8 = 0x08;
    /// Format v1: FIX_HEADER writes version 1, frames start at 64, there is no trailer.
    pub const V1: u8 = 0x10;
    /// first_seq = u64::MAX - seq.
    pub const HUGE_SEQ: u8 = 0x20;
    /// Bits 6-7: pages added to a SHAPED segment's 24 KiB (0..=3).
    pub const EXTRA_PAGES_SHIFT: u32 = 6;
}

/// Flags of a cursor file.
pub mod cursor_flags {
    /// Bits 0-1: 0 the bytes are the file; 1 (and 3) a v2 file of 8192 bytes, the bytes' first
    /// half in slot 0 (offset 0) and the second half in slot 1 (offset 4096); 2 the same for a
    /// v1 file of 1024 bytes with 512-byte slots.
    pub const SHAPE_MASK: u8 = 0x03;
    /// Recompute the CRC of each slot that starts with the cursor magic.
    pub const FIX_CRC: u8 = 0x04;
}

/// What the last file of a `segment_recovery` input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Segment,
    Quarantine,
    Cut,
    Temp,
}

/// A data directory made from fuzzer bytes (the `segment_recovery` layout above).
#[derive(Debug, Default)]
pub struct DataDir {
    /// (file name, bytes)
    pub files: Vec<(String, Vec<u8>)>,
    pub cursor: Option<Vec<u8>>,
    /// Also run a repairing open after the read-only one.
    pub repair: bool,
}

impl DataDir {
    pub fn parse(data: &[u8]) -> DataDir {
        let mut input = Input::new(data);
        let control = input.u8();
        let count = usize::from(control & 0x03).min(2) + 1;
        let last_kind = match (control >> 4) & 0x03 {
            0 => FileKind::Segment,
            1 => FileKind::Quarantine,
            2 => FileKind::Cut,
            _ => FileKind::Temp,
        };
        let mut dir = DataDir {
            repair: control & 0x08 != 0,
            ..DataDir::default()
        };
        let mut first_seq = 0u64;
        for index in 0..count {
            if index > 0 && input.is_empty() {
                break;
            }
            let kind = if index + 1 == count {
                last_kind
            } else {
                FileKind::Segment
            };
            let flags = input.u8();
            let seq = u64::from(input.u8());
            first_seq = if flags & file_flags::HUGE_SEQ != 0 {
                u64::MAX - seq
            } else {
                first_seq.saturating_add(seq)
            };
            let body_len = usize::from(input.u16());
            let body = input.bytes(body_len);
            let mut bytes = if flags & file_flags::SHAPED != 0 {
                let tail_len = usize::from(input.u16());
                shaped_segment(flags, body, input.bytes(tail_len))
            } else {
                body.to_vec()
            };
            fix_file(kind, flags, first_seq, &mut bytes);
            let name = match kind {
                FileKind::Segment => segment_name(first_seq),
                FileKind::Quarantine => format!("{}.quarantine", segment_name(first_seq)),
                FileKind::Cut => format!("{first_seq:020}-{SEGMENT_DATA_START:012}.cut"),
                FileKind::Temp => format!("{}.tmp", segment_name(first_seq)),
            };
            dir.files.push((name, bytes));
        }
        if control & 0x04 != 0 {
            let flags = input.u8();
            let len = usize::from(input.u16());
            dir.cursor = Some(cursor_file(flags, input.bytes(len)));
        }
        dir
    }

    /// Writes the files into `dir` (a later file of the same name replaces an earlier one).
    pub fn write(&self, dir: &Path) {
        for (name, bytes) in &self.files {
            std::fs::write(dir.join(name), bytes).expect("writing a file of the data directory");
        }
        if let Some(cursor) = &self.cursor {
            write_cursor(dir, cursor);
        }
    }

    /// Bytes written, for the bound on what a reader may yield.
    pub fn bytes(&self) -> u64 {
        let files: usize = self.files.iter().map(|(_, b)| b.len()).sum();
        (files + self.cursor.as_ref().map_or(0, Vec::len)) as u64
    }
}

/// Writes `forward.cursor`.
pub fn write_cursor(dir: &Path, bytes: &[u8]) {
    std::fs::write(dir.join(format!("{CURSOR_NAME}.cursor")), bytes).expect("writing the cursor");
}

/// Copies as much of `bytes` as fits into `file[from..to]`.
fn put(file: &mut [u8], from: usize, to: usize, bytes: &[u8]) {
    let room = to.saturating_sub(from);
    let n = bytes.len().min(room);
    file[from..from + n].copy_from_slice(&bytes[..n]);
}

/// See [`file_flags::SHAPED`].
fn shaped_segment(flags: u8, body: &[u8], tail: &[u8]) -> Vec<u8> {
    let extra = u64::from(flags >> file_flags::EXTRA_PAGES_SHIFT);
    let len = SEGMENT_BYTES_MIN + extra * PAGE_BYTES;
    let mut file = vec![0u8; len as usize];
    if flags & file_flags::V1 != 0 {
        // v1: the header and the frames after it, back to back from 0.
        put(&mut file, 0, len as usize, body);
    } else {
        let (header, data) = body.split_at(body.len().min(SEGMENT_HEADER_BYTES as usize));
        put(&mut file, 0, SEGMENT_HEADER_BYTES as usize, header);
        let data_end = (len - SEGMENT_TRAILER_BYTES) as usize;
        put(&mut file, SEGMENT_DATA_START as usize, data_end, data);
    }
    let (slot0, slot1) = tail.split_at(tail.len() / 2);
    for (generation, bytes) in [(0, slot0), (1, slot1)] {
        let at = slot_offset(len, generation) as usize;
        put(&mut file, at, at + TAIL_SLOT_BYTES as usize, bytes);
    }
    file
}

/// Applies the FIX_* flags.
fn fix_file(kind: FileKind, flags: u8, first_seq: u64, file: &mut [u8]) {
    let len = file.len() as u64;
    let version = if flags & file_flags::V1 != 0 {
        FORMAT_VERSION_V1
    } else {
        FORMAT_VERSION
    };
    let segment = matches!(kind, FileKind::Segment | FileKind::Temp);
    if segment && flags & file_flags::FIX_HEADER != 0 && len >= SEGMENT_HEADER_BYTES {
        let created = i64::from_le_bytes(file[32..40].try_into().unwrap());
        let header = SegmentHeader {
            version,
            first_seq,
            segment_bytes: len,
            created_wall_ms: created,
            // The fuzzer's own bytes 40..44: any promise, kept or broken.
            unsynced_window_bytes: u64::from(u32::from_le_bytes(file[40..44].try_into().unwrap()))
                * 1024,
        };
        file[..SEGMENT_HEADER_BYTES as usize].copy_from_slice(&header.encode());
    }
    if flags & file_flags::FIX_FRAMES != 0 {
        // Quarantine and cut files are scanned for frames from 64 to their end.
        let (start, end) = if segment {
            data_range(version, len)
        } else {
            (SEGMENT_HEADER_BYTES, len)
        };
        fix_frames(file, start, end);
    }
    if segment
        && version == FORMAT_VERSION
        && flags & file_flags::FIX_TRAILER != 0
        && len >= SEGMENT_TRAILER_BYTES
    {
        for generation in 0..2 {
            fix_trailer_slot(file, slot_offset(len, generation) as usize);
        }
    }
}

/// Recomputes frame CRCs from `start` while the lengths are possible.
fn fix_frames(file: &mut [u8], start: u64, end: u64) {
    let end = end.min(file.len() as u64);
    let mut offset = start;
    while offset + FRAME_HEADER_BYTES <= end {
        let at = offset as usize;
        let (payload_bytes, _, seq) = decode_header(&file[at..at + FRAME_HEADER_BYTES as usize]);
        if payload_bytes == 0 || payload_bytes as usize > RECORD_PAYLOAD_BYTES_MAX_FORMAT {
            return;
        }
        let next = offset + frame_bytes(payload_bytes as usize);
        if next > end {
            return;
        }
        let payload = at + FRAME_HEADER_BYTES as usize;
        let crc = frame_crc(
            payload_bytes,
            seq,
            &file[payload..payload + payload_bytes as usize],
        );
        file[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        offset = next;
    }
}

/// Recomputes the CRC of a tail-page copy or a seal at `at`.
fn fix_trailer_slot(file: &mut [u8], at: usize) {
    let header = TAIL_SLOT_HEADER_BYTES as usize;
    let Some(slot) = file.get(at..at + header) else {
        return;
    };
    let crc = if slot[0..8] == TAIL_MAGIC {
        let copied = u32::from_le_bytes(slot[32..36].try_into().unwrap()) as usize;
        if copied == 0 || copied as u64 > PAGE_BYTES {
            return;
        }
        let Some(bytes) = file.get(at + header..at + header + copied) else {
            return;
        };
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&file[at..at + 36]);
        hasher.update(bytes);
        hasher.finalize()
    } else if slot[0..8] == SEAL_MAGIC {
        crc32fast::hash(&slot[0..36])
    } else {
        return;
    };
    file[at + 36..at + 40].copy_from_slice(&crc.to_le_bytes());
}

/// A cursor file from `bytes` shaped by `flags` ([`cursor_flags`]).
pub fn cursor_file(flags: u8, bytes: &[u8]) -> Vec<u8> {
    let mut file = match flags & cursor_flags::SHAPE_MASK {
        0 => bytes.to_vec(),
        shape => {
            let (len, slot) = if shape == 2 {
                (CURSOR_FILE_BYTES_V1, CURSOR_SLOT_BYTES_V1)
            } else {
                (CURSOR_FILE_BYTES, CURSOR_SLOT_BYTES)
            };
            let (len, slot) = (len as usize, slot as usize);
            let mut file = vec![0u8; len];
            let (first, second) = bytes.split_at(bytes.len() / 2);
            put(&mut file, 0, slot, first);
            put(&mut file, slot, len, second);
            file
        }
    };
    if flags & cursor_flags::FIX_CRC != 0 {
        let slot = slot_bytes_for(file.len() as u64) as usize;
        for at in [0, slot] {
            if file.len() >= at + 28 && file[at..at + 8] == CURSOR_MAGIC {
                let crc = crc32fast::hash(&file[at..at + 24]);
                file[at + 24..at + 28].copy_from_slice(&crc.to_le_bytes());
            }
        }
    }
    file
}

/// Bytes in memory as a read-only [`MediumFile`], for the cursor reader.
#[derive(Debug)]
pub struct MemFile(pub Vec<u8>);

impl MediumFile for MemFile {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let bytes = start
            .checked_add(buf.len())
            .and_then(|end| self.0.get(start..end))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }

    fn write_at(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(io::Error::other("read-only"))
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// The options `edgecap log verify` and `log dump` open with (daemon/src/cli/log.rs,
/// `read_options`).
pub fn read_options() -> LogOptions {
    LogOptions {
        segment_bytes: SEGMENT_BYTES_MAX,
        disk_bytes_max: u64::MAX,
        ..LogOptions::default()
    }
}

/// What `edgecap log verify` and `log dump` do with `dir`: the read-only open, the report's
/// problems and JSON, the clock-step corrections (a replay of the projection), then every
/// record from seq 1 printed as dump prints it. `None` when the open fails (not a data
/// directory, seq space exhausted, an I/O error).
pub fn verify_and_dump(dir: &Path, bytes_on_disk: u64) -> Option<RecoveryReport> {
    let (log, report) = match Log::open_read_only(dir, read_options(), &mut |_, _| {}) {
        Ok(opened) => opened,
        Err(e) => {
            let _ = e.to_string();
            return None;
        }
    };
    let _ = report.is_clean();
    let _ = report.problems();
    let _ = serde_json::to_value(&report);
    let corrections = edgecap::cli::state::corrections(&log, dir);
    read_all(&log, bytes_on_disk, |event| {
        let _ = edgecap::cli::log::dump_json(&event, &corrections).to_string();
    });
    Some(report)
}

/// Reads every record from seq 1 and hands each event to `each`; returns how many were read.
/// Each item the reader yields is a frame of at least 24 bytes, or a skip past at least 8 of
/// them (or to the next segment): a reader yielding more items than `bytes_on_disk` allows is
/// stuck, and fails here instead of hanging.
pub fn read_all(log: &Log, bytes_on_disk: u64, mut each: impl FnMut(Event)) -> u64 {
    let bound = bytes_on_disk / FRAME_ALIGN_BYTES + 64;
    let mut items = 0u64;
    let mut records = 0u64;
    for item in log.reader(1) {
        items += 1;
        assert!(
            items <= bound,
            "the reader yielded {items} items from {bytes_on_disk} bytes on disk: it is stuck"
        );
        match item {
            Ok(event) => {
                records += 1;
                each(event);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    records
}
