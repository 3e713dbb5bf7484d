//! The one frame scanner. Recovery, `verify`, the quarantine scan, the tail-cut count and the
//! reader's resync after damage all read frames through it, so they cannot disagree on what a
//! valid frame is (FORMAT.md, "Record frame").
//!
//! A frame is valid when its length is possible (non-zero, at most
//! [`RECORD_PAYLOAD_BYTES_MAX_FORMAT`] — the format's limit, never the append limit — and
//! inside the data region) and its CRC matches. Whether its seq is the one expected is the
//! caller's check. Recovery reads with `pread` (`Window::uncached`): an unreadable sector is a
//! bad frame, never a SIGBUS.

use std::io;
use std::ops::RangeInclusive;

use crate::limits::{
    FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES, PAGE_BYTES, RECORD_PAYLOAD_BYTES_MAX_FORMAT,
};
use crate::medium::MediumFile;
use crate::record::{decode_header, frame_bytes, frame_crc};

/// Bytes read at once by an uncached window: 64 KiB.
const WINDOW_BYTES: usize = 64 * 1024;

/// Reads a file for scanning: through `pread` in 64 KiB chunks (recovery, verify), or through
/// the hot path exactly as asked (readers).
pub(crate) struct Window<'a> {
    file: &'a dyn MediumFile,
    uncached: bool,
    start: u64,
    buf: Vec<u8>,
    big: Vec<u8>,
}

impl<'a> Window<'a> {
    /// A `pread` window for recovery and verify.
    pub fn uncached(file: &'a dyn MediumFile) -> Window<'a> {
        Window {
            file,
            uncached: true,
            start: 0,
            buf: Vec::new(),
            big: Vec::new(),
        }
    }

    /// A window over the hot read path (the map), for readers.
    pub fn hot(file: &'a dyn MediumFile) -> Window<'a> {
        Window {
            uncached: false,
            ..Window::uncached(file)
        }
    }

    fn read_exact(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        self.big.resize(len, 0);
        if self.uncached {
            self.file.read_uncached(offset, &mut self.big)?;
        } else {
            self.file.read_at(offset, &mut self.big)?;
        }
        Ok(&self.big)
    }

    /// `len` bytes at `offset`; an error means they could not be read.
    pub fn bytes(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        if !self.uncached || len > WINDOW_BYTES {
            return self.read_exact(offset, len);
        }
        let cached_end = self.start + self.buf.len() as u64;
        if offset < self.start || offset + len as u64 > cached_end {
            let chunk = (self.file.len().saturating_sub(offset)).min(WINDOW_BYTES as u64);
            if (chunk as usize) < len {
                return self.read_exact(offset, len);
            }
            self.buf.resize(chunk as usize, 0);
            if self.file.read_uncached(offset, &mut self.buf).is_err() {
                // One bad sector fails the whole chunk: read just what was asked, so the
                // error (or the bytes) belong to this range alone.
                self.buf.clear();
                return self.read_exact(offset, len);
            }
            self.start = offset;
        }
        let at = (offset - self.start) as usize;
        Ok(&self.buf[at..at + len])
    }
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

/// A frame's header fields, if its length is possible at `offset` below `data_end`.
fn plausible(header: &[u8], offset: u64, data_end: u64) -> Option<(u32, u32, u64)> {
    let (payload_bytes, crc, seq) = decode_header(header);
    let possible = payload_bytes > 0
        && crate::limits::plausible_seq(seq)
        && payload_bytes as usize <= RECORD_PAYLOAD_BYTES_MAX_FORMAT
        && offset + frame_bytes(payload_bytes as usize) <= data_end;
    possible.then_some((payload_bytes, crc, seq))
}

/// Reads and fully checks the frame at `offset`, which must carry `expected_seq`.
pub(crate) fn read_frame(
    window: &mut Window<'_>,
    offset: u64,
    data_end: u64,
    expected_seq: u64,
) -> FrameRead {
    assert_eq!(offset % FRAME_ALIGN_BYTES, 0);
    if offset + FRAME_HEADER_BYTES > data_end {
        return FrameRead::End;
    }
    let header = match window.bytes(offset, FRAME_HEADER_BYTES as usize) {
        Ok(h) => h.to_vec(),
        Err(e) => return FrameRead::Bad(format!("unreadable: {e}")),
    };
    let (payload_bytes, _, _) = decode_header(&header);
    if payload_bytes == 0 {
        return FrameRead::End;
    }
    let Some((payload_bytes, crc, seq)) = plausible(&header, offset, data_end) else {
        return FrameRead::Bad(format!("impossible length {payload_bytes}"));
    };
    let payload = match window.bytes(offset + FRAME_HEADER_BYTES, payload_bytes as usize) {
        Ok(p) => p.to_vec(),
        Err(e) => return FrameRead::Bad(format!("unreadable: {e}")),
    };
    if frame_crc(payload_bytes, seq, &payload) != crc {
        return FrameRead::Bad("CRC mismatch".into());
    }
    if seq != expected_seq {
        return FrameRead::Bad(format!(
            "seq {seq} where {expected_seq} was expected (stale or misplaced record)"
        ));
    }
    FrameRead::Frame {
        payload,
        next_offset: offset + frame_bytes(payload_bytes as usize),
    }
}

/// A CRC-valid frame found by [`resync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    pub offset: u64,
    pub seq: u64,
    pub next_offset: u64,
}

/// The first CRC-valid frame at an 8-byte boundary in `from..to` whose seq lies in `seqs`.
/// Bounded by `to`; an unreadable page is skipped whole.
pub(crate) fn resync(
    window: &mut Window<'_>,
    from: u64,
    to: u64,
    seqs: RangeInclusive<u64>,
) -> Option<Found> {
    resync_starting_before(window, from, to, to, seqs)
}

/// [`resync`] for frames that start before `starts_before` and end within `to`: the search
/// for a start stops at `starts_before`, so the bytes past it are never read for candidates.
fn resync_starting_before(
    window: &mut Window<'_>,
    from: u64,
    starts_before: u64,
    to: u64,
    seqs: RangeInclusive<u64>,
) -> Option<Found> {
    let mut offset = from.next_multiple_of(FRAME_ALIGN_BYTES);
    loop {
        let (at, payload_bytes, crc, seq) =
            next_candidate(window, offset, starts_before.min(to), to, &seqs)?;
        let valid = window
            .bytes(at + FRAME_HEADER_BYTES, payload_bytes as usize)
            .is_ok_and(|p| frame_crc(payload_bytes, seq, p) == crc);
        if valid {
            let next_offset = at + frame_bytes(payload_bytes as usize);
            return Some(Found {
                offset: at,
                seq,
                next_offset,
            });
        }
        offset = at + FRAME_ALIGN_BYTES;
    }
}

/// A candidate frame start: (offset, payload bytes, crc, seq).
type Candidate = (u64, u32, u32, u64);

/// The next 8-byte boundary in `offset..starts_before` (offset aligned) whose header is
/// plausible below `to` with a seq in `seqs`. Scans a slice at a time (64 KiB through `pread`,
/// a page through the map), skipping zero length fields at once: this runs over every byte of
/// every region recovery resyncs in (zeros, garbage, quarantined files).
fn next_candidate(
    window: &mut Window<'_>,
    mut offset: u64,
    starts_before: u64,
    to: u64,
    seqs: &RangeInclusive<u64>,
) -> Option<Candidate> {
    const HEADER: usize = FRAME_HEADER_BYTES as usize;
    let slice_max = if window.uncached {
        WINDOW_BYTES
    } else {
        PAGE_BYTES as usize
    };
    while offset < starts_before && offset + FRAME_HEADER_BYTES <= to {
        let span = ((to - offset) as usize).min(slice_max);
        let Ok(chunk) = window.bytes(offset, span) else {
            match candidate_in_bad_page(window, offset, starts_before, to, seqs) {
                Ok(found) => return Some(found),
                Err(next) => offset = next,
            }
            continue;
        };
        let last = (span - HEADER) / FRAME_ALIGN_BYTES as usize * FRAME_ALIGN_BYTES as usize;
        for i in (0..=last).step_by(FRAME_ALIGN_BYTES as usize) {
            let at = offset + i as u64;
            if at >= starts_before {
                return None;
            }
            let header = &chunk[i..i + HEADER];
            if header[0..4] == [0; 4] {
                continue;
            }
            if let Some(found) = candidate_at(header, at, to, seqs) {
                return Some(found);
            }
        }
        offset += (last + FRAME_ALIGN_BYTES as usize) as u64;
    }
    None
}

/// The header at `at`, if it is plausible below `to` with a seq in `seqs`.
fn candidate_at(header: &[u8], at: u64, to: u64, seqs: &RangeInclusive<u64>) -> Option<Candidate> {
    let (payload_bytes, crc, seq) = plausible(header, at, to)?;
    seqs.contains(&seq).then_some((at, payload_bytes, crc, seq))
}

/// A slice around `offset` could not be read (a bad sector): the rest of its page, one header
/// at a time. `Err(next)`: nothing here; go on at the next page.
fn candidate_in_bad_page(
    window: &mut Window<'_>,
    mut offset: u64,
    starts_before: u64,
    to: u64,
    seqs: &RangeInclusive<u64>,
) -> Result<Candidate, u64> {
    let page_end = (offset + 1).next_multiple_of(PAGE_BYTES);
    while offset < page_end.min(starts_before) && offset + FRAME_HEADER_BYTES <= to {
        let mut header = [0u8; FRAME_HEADER_BYTES as usize];
        match window.bytes(offset, header.len()) {
            Ok(h) => header.copy_from_slice(h),
            Err(_) => return Err(page_end),
        }
        if let Some(found) = candidate_at(&header, offset, to, seqs) {
            return Ok(found);
        }
        offset += FRAME_ALIGN_BYTES;
    }
    Err(page_end)
}

/// CRC-valid frames (any seq) that start in `from..to` and end within `data_end`: what a tail
/// cut throws away. `to` may be the end of the last non-zero byte: a frame whose payload ends
/// in zero bytes still counts, and [`FramesIn::end`] (its padded end) says how far it reaches.
pub(crate) fn valid_frames_in(
    window: &mut Window<'_>,
    from: u64,
    to: u64,
    data_end: u64,
) -> FramesIn {
    let mut found_in = FramesIn {
        count: 0,
        highest: None,
        end: from,
    };
    let mut offset = from;
    while let Some(found) = resync_starting_before(window, offset, to, data_end, 1..=u64::MAX) {
        found_in.count += 1;
        found_in.highest = Some(found_in.highest.map_or(found.seq, |h| h.max(found.seq)));
        found_in.end = found.next_offset;
        offset = found.next_offset;
    }
    found_in
}

/// What [`valid_frames_in`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FramesIn {
    pub count: u64,
    /// Highest seq among them.
    pub highest: Option<u64>,
    /// Padded end of the last of them (`from` when there is none).
    pub end: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::medium::Medium;
    use crate::record::encode_frame;
    use crate::sim::SimMedium;

    #[test]
    fn resync_finds_the_next_frame_after_garbage_and_honours_the_seq_range() {
        let medium = SimMedium::new();
        let mut bytes = vec![0u8; 16 * 1024];
        let mut frame = Vec::new();
        encode_frame(7, b"hello", &mut frame);
        bytes[4096..4096 + 4096].fill(0xA5);
        bytes[8192..8192 + frame.len()].copy_from_slice(&frame);
        medium.set_file_bytes("f", bytes);
        let file = medium.open("f", false).unwrap();
        let mut window = Window::uncached(&*file);
        let found = resync(&mut window, 4096, 16 * 1024, 1..=10).unwrap();
        assert_eq!((found.offset, found.seq), (8192, 7));
        assert_eq!(resync(&mut window, 4096, 16 * 1024, 8..=10), None);
        assert_eq!(
            valid_frames_in(&mut window, 0, 16 * 1024, 16 * 1024),
            FramesIn {
                count: 1,
                highest: Some(7),
                end: 8192 + frame.len() as u64,
            }
        );
    }

    #[test]
    fn frames_above_the_append_limit_still_read() {
        let medium = SimMedium::new();
        let mut bytes = vec![0u8; 256 * 1024];
        let mut frame = Vec::new();
        encode_frame(1, &vec![3u8; 100_000], &mut frame);
        bytes[..frame.len()].copy_from_slice(&frame);
        medium.set_file_bytes("f", bytes);
        let file = medium.open("f", false).unwrap();
        let mut window = Window::uncached(&*file);
        assert!(matches!(
            read_frame(&mut window, 0, 256 * 1024, 1),
            FrameRead::Frame { .. }
        ));
    }
}
