//! Recovery: what `open` does before the first append, and what `verify` does without writing.
//!
//! The phases are FORMAT.md's ("Recovery"), one function each:
//! 1. [`list`]: remove `*.tmp` files; sort the rest into segments, quarantine files, cursors.
//! 2. [`read_cursors`]: a cursor is proof that every seq up to it was durable once.
//! 3. [`scan_quarantined`]: learn the highest seq of files set aside earlier (no seq reuse).
//! 4. [`open_segment`]: check each header; rebuild one whose damage is only informational
//!    (name and length say the rest); quarantine one that cannot be trusted. In repair mode a
//!    segment with a trusted seal ([`trusted_seal`]) takes its end from it and skips 5–8.
//! 5. [`restore_tail_pages`]: put back a page prefix torn by a later write from its copy.
//! 6. [`scan_frames`]: one frame scanner; after a bad frame at or below the proof point,
//!    resync on the next CRC-valid frame with a plausible seq and serve what follows.
//! 7. [`classify`]: in the last segment, bytes past every proof of durability are a torn
//!    tail: kept in a `*.cut` side file, then zeroed; anything else bad is damage, kept.
//! 8. [`redirty`]: bytes past the proof point are written again and synced before they are
//!    called durable (a failed sync earlier in this boot may have left them only in the cache).
//! 9. [`finish`]: the next seq goes past every seq ever seen; gaps are reported.
//!
//! Only this module zeroes bytes, and only in repair mode and only past every proof.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::cursor::{
    encode_slot, read_cursor, valid_cursor_name, Cursor, CURSOR_FILE_BYTES, CURSOR_SLOT_BYTES,
    CURSOR_SUFFIX,
};
use crate::error::{Error, IoContext, Result};
use crate::limits::plausible_seq;
use crate::limits::{
    CUT_FILES_MAX, CUT_FILE_BYTES_MAX, FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES, PAGE_BYTES,
    SEGMENT_BYTES_MIN, SEGMENT_HEADER_BYTES, SEQ_MAX, ZERO_CHUNK_BYTES,
};
use crate::log::LogOptions;
use crate::medium::{Medium, MediumFile};
use crate::scan::{read_frame, resync, valid_frames_in, FrameRead, Window};
use crate::segment::{
    last_nonzero_end, parse_segment_name, Damage, Segment, SegmentHeader, FORMAT_VERSION,
    QUARANTINE_SUFFIX, SEGMENT_SUFFIX,
};
use crate::tail::{read_trailer, TailSlot, Trailer};

/// An inclusive range of seqs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SeqRange {
    pub from: u64,
    pub to: u64,
}

/// A torn tail cut from the last segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TailCut {
    pub segment: String,
    /// Offset where valid data ends.
    pub offset: u64,
    /// Bytes zeroed (or that repair would zero).
    pub bytes: u64,
    /// CRC-valid frames among them (appended but never made durable, or stale).
    pub records: u64,
    /// Why the scan stopped.
    pub reason: String,
    /// Highest seq among the cut frames, if any: the next seq goes past it (never reused).
    pub highest_seq: Option<u64>,
    /// The `*.cut` side file holding the cut bytes (at most 1 MiB of them), in repair mode.
    pub kept_in: Option<String>,
}

/// A page prefix torn by a later write and put back from its tail-page copy: nothing lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TailRestore {
    pub segment: String,
    pub offset: u64,
    pub bytes: u64,
}

/// Damage inside an older segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DamageReport {
    pub segment: String,
    pub offset: u64,
    /// Seqs that cannot be read; `None` when only unused bytes were damaged.
    pub lost: Option<SeqRange>,
    pub reason: String,
}

/// A segment set aside because its header is unreadable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantineReport {
    pub segment: String,
    pub reason: String,
    /// Seqs that were in it, as far as can be told.
    pub lost: Option<SeqRange>,
}

/// A cursor as found on open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CursorReport {
    pub name: String,
    pub seq: u64,
    /// What was wrong with the file, if anything.
    pub problem: Option<String>,
}

/// Everything recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// Whether bytes were actually repaired (false for read-only opens).
    pub repaired: bool,
    pub segments: usize,
    pub records: u64,
    /// Oldest and newest readable seq, if any record exists.
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The seq the next append gets.
    pub next_seq: u64,
    pub bytes_scanned: u64,
    pub tail_cut: Option<TailCut>,
    pub damaged: Vec<DamageReport>,
    pub quarantined: Vec<QuarantineReport>,
    pub cursors: Vec<CursorReport>,
    pub removed_temp_files: Vec<String>,
    /// Seq ranges with no record, not caused by damage (dropped segments, a cursor ahead,
    /// seqs of cut frames that are never reused).
    pub gaps: Vec<SeqRange>,
    /// Seqs before the oldest stored one (released or dropped by retention), if any.
    pub front_gap: Option<SeqRange>,
    /// Page prefixes restored from tail-page copies.
    pub tail_restored: Vec<TailRestore>,
    /// Segments in format v1: read, never appended to.
    pub v1_segments: usize,
    /// Sealed segments whose end a repairing open took from the seal instead of a scan
    /// (their bytes count in `bytes_scanned` as vouched for; `verify` scans them all).
    pub segments_sealed: usize,
    /// Assumptions of the format the medium does not meet (e.g. a copy-on-write file system).
    pub warnings: Vec<String>,
}

impl RecoveryReport {
    /// True when no bytes were bad: no torn tail, damage, quarantine or bad cursor.
    pub fn is_clean(&self) -> bool {
        self.problems().is_empty()
    }

    /// One human sentence per problem found.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.tail_restored {
            out.push(format!(
                "torn page in {} at offset {}: {} bytes restored from its tail-page copy (nothing lost)",
                r.segment, r.offset, r.bytes
            ));
        }
        if let Some(cut) = &self.tail_cut {
            out.push(format!(
                "torn tail in {} at offset {}: {} bytes, {} records ({})",
                cut.segment, cut.offset, cut.bytes, cut.records, cut.reason
            ));
        }
        for d in &self.damaged {
            let lost = match d.lost {
                Some(r) => format!("seqs {}..={} lost", r.from, r.to),
                None => "no seq lost".into(),
            };
            out.push(format!(
                "damage in {} at offset {}: {} ({lost})",
                d.segment, d.offset, d.reason
            ));
        }
        for q in &self.quarantined {
            let lost = match q.lost {
                Some(r) => format!("seqs {}..={} lost", r.from, r.to),
                None => "no readable seq".into(),
            };
            out.push(format!(
                "segment {} quarantined: {} ({lost})",
                q.segment, q.reason
            ));
        }
        for c in &self.cursors {
            if let Some(problem) = &c.problem {
                out.push(format!("cursor {}: {problem}", c.name));
            }
        }
        out
    }
}

/// The state recovery hands to the log.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub segments: Vec<Arc<Segment>>,
    /// Appends must not continue in the last good segment (damaged, v1, or followed by a
    /// quarantined file): start a new segment.
    pub needs_new_segment: bool,
    pub cursors: BTreeMap<String, Cursor>,
    pub next_seq: u64,
    pub report: RecoveryReport,
}

/// Progress callback: (bytes done, bytes total).
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// What one recovery run knows while it goes.
struct Run<'a> {
    medium: &'a dyn Medium,
    repair: bool,
    report: RecoveryReport,
    /// Highest seq known to have been used.
    seq_floor: u64,
    quarantined_firsts: Vec<u64>,
    cut_files: Vec<String>,
    /// The value the floor file holds (0: none).
    floor_persisted: u64,
    /// The last segment's proof of durability (cursor or tail-page copy): frames up to it
    /// are in a copy or synced pages, and a torn repair write cannot lose their seqs.
    tail_proof: u64,
}

impl Run<'_> {
    fn at(&self, what: &str) -> String {
        format!("{what} in {}", self.medium.location().display())
    }
}

/// The data directory's files, sorted by kind.
#[derive(Default)]
struct Listing {
    segments: Vec<(u64, String)>,
    quarantined: Vec<(u64, String)>,
    cursors: Vec<String>,
    /// Whether the floor file exists.
    floor: bool,
}

/// Suffix of the side files that keep what a tail cut zeroed.
pub const CUT_SUFFIX: &str = ".cut";

/// Scans (and in `repair` mode, repairs) the medium. See the module docs.
pub(crate) fn recover(
    medium: &dyn Medium,
    _options: &LogOptions,
    repair: bool,
    progress: Progress<'_>,
) -> Result<Recovered> {
    let mut run = Run {
        medium,
        repair,
        report: RecoveryReport {
            repaired: repair,
            ..RecoveryReport::default()
        },
        seq_floor: 0,
        quarantined_firsts: Vec::new(),
        cut_files: Vec::new(),
        floor_persisted: 0,
        tail_proof: 0,
    };
    run.report.warnings.extend(medium.filesystem_warning());
    let listing = list(&mut run)?;
    let (cursors, cursor_max) = read_cursors(&mut run, &listing.cursors)?;
    read_floor(&mut run, listing.floor)?;
    scan_quarantined(&mut run, &listing.quarantined)?;
    let segments = scan_segments(&mut run, &listing.segments, cursor_max, progress)?;
    finish(run, segments, cursors, cursor_max)
}

/// Phase 1: remove temp files, sort the rest.
fn list(run: &mut Run<'_>) -> Result<Listing> {
    let names = run.medium.list().context(|| run.at("listing"))?;
    let mut listing = Listing::default();
    for name in names {
        if name.ends_with(".tmp") {
            if run.repair {
                run.medium
                    .remove(&name)
                    .context(|| run.at(&format!("removing {name}")))?;
            }
            run.report.removed_temp_files.push(name);
        } else if let Some(first_seq) = parse_segment_name(&name) {
            listing.segments.push((first_seq, name));
        } else if let Some(digits) = name.strip_suffix(QUARANTINE_SUFFIX) {
            if let Some(first_seq) = digits.parse::<u64>().ok().filter(|&s| plausible_seq(s)) {
                listing.quarantined.push((first_seq, name));
            }
        } else if let Some(cursor) = name.strip_suffix(CURSOR_SUFFIX) {
            listing.cursors.push(cursor.to_string());
        } else if name.ends_with(CUT_SUFFIX) {
            run.cut_files.push(name);
        } else if name == FLOOR_FILE {
            listing.floor = true;
        }
    }
    listing.segments.sort();
    run.cut_files.sort();
    Ok(listing)
}

/// Phase 2: every cursor; one bad slot falls back to the other, a v1 or damaged file is
/// rewritten whole (atomically) in repair mode.
fn read_cursors(run: &mut Run<'_>, names: &[String]) -> Result<(BTreeMap<String, Cursor>, u64)> {
    let mut cursors = BTreeMap::new();
    let mut cursor_max = 0u64;
    for name in names.iter().filter(|n| valid_cursor_name(n)) {
        let file_name = format!("{name}{CURSOR_SUFFIX}");
        let file = run
            .medium
            .open(&file_name, run.repair)
            .context(|| run.at(&format!("opening {file_name}")))?;
        let read = read_cursor(&*file).context(|| run.at(&format!("reading {file_name}")))?;
        let (generation, seq, problem) = match read.value {
            Some((generation, seq)) if read.bad_slots == 0 => (generation, seq, None),
            Some((generation, seq)) => (
                generation,
                seq,
                Some("one slot torn or invalid; the other slot's value is used".to_string()),
            ),
            None => (
                0,
                0,
                Some("both slots invalid; cursor reset to 0".to_string()),
            ),
        };
        let mut cursor = Cursor {
            file,
            generation,
            seq,
        };
        if run.repair && (problem.is_some() || read.slot_bytes != CURSOR_SLOT_BYTES) {
            let mut head = encode_slot(0, seq).to_vec();
            head.extend_from_slice(&encode_slot(1, seq));
            cursor.file = run
                .medium
                .create(&file_name, CURSOR_FILE_BYTES, &head)
                .context(|| run.at(&format!("rewriting {file_name}")))?;
            cursor.generation = 1;
        }
        cursor_max = cursor_max.max(seq);
        run.report.cursors.push(CursorReport {
            name: name.clone(),
            seq,
            problem,
        });
        cursors.insert(name.clone(), cursor);
    }
    Ok((cursors, cursor_max))
}

/// Phase 3: files set aside by an earlier open (quarantine and cut files) still count for the
/// seq floor, so a crash between them and the next segment's creation can never reuse seqs.
fn scan_quarantined(run: &mut Run<'_>, files: &[(u64, String)]) -> Result<()> {
    for (first_seq, name) in files {
        run.seq_floor = run.seq_floor.max(first_seq.saturating_sub(1));
        let file = run
            .medium
            .open(name, false)
            .context(|| run.at(&format!("opening {name}")))?;
        if let Some(max_seq) = max_frame_seq(&*file) {
            run.seq_floor = run.seq_floor.max(max_seq);
        }
        run.quarantined_firsts.push(*first_seq);
    }
    // Cut files too: a crash after a cut but before the next append must not hand out the
    // seqs of the frames it kept.
    for name in run.cut_files.clone() {
        let file = run
            .medium
            .open(&name, false)
            .context(|| run.at(&format!("opening {name}")))?;
        let mut window = Window::uncached(&*file);
        let len = file.len();
        if let Some(max_seq) =
            valid_frames_in(&mut window, CUT_HEADER_BYTES.min(len), len, len).highest
        {
            run.seq_floor = run.seq_floor.max(max_seq);
        }
    }
    Ok(())
}

/// Bytes of a cut file's header; the kept bytes follow, 8-byte aligned as in the segment.
const CUT_HEADER_BYTES: u64 = 64;

/// Highest seq of any CRC-valid frame in a file, trusting nothing else.
fn max_frame_seq(file: &dyn MediumFile) -> Option<u64> {
    let mut window = Window::uncached(file);
    valid_frames_in(&mut window, SEGMENT_HEADER_BYTES, file.len(), file.len()).highest
}

/// Phases 4–8 over every segment, oldest first.
fn scan_segments(
    run: &mut Run<'_>,
    names: &[(u64, String)],
    cursor_max: u64,
    progress: Progress<'_>,
) -> Result<Vec<Segment>> {
    let mut files = Vec::new();
    let mut total_bytes = 0u64;
    for (first_seq, name) in names {
        let file = run
            .medium
            .open(name, run.repair)
            .context(|| run.at(&format!("opening {name}")))?;
        total_bytes += file.len();
        files.push((*first_seq, name.clone(), file));
    }
    // Segments whose header passed (or was rebuilt), not yet scanned.
    let mut opened: Vec<Segment> = Vec::new();
    // (index in `opened` of the next good segment, index in report.quarantined).
    let mut quarantined_before: Vec<(usize, usize)> = Vec::new();
    for (first_seq, name, file) in files {
        match open_segment(run, first_seq, name, file)? {
            Some(segment) => opened.push(segment),
            None => quarantined_before.push((opened.len(), run.report.quarantined.len() - 1)),
        }
    }
    for &(next_good, index) in &quarantined_before {
        if let Some(next) = opened.get(next_good) {
            let q = &mut run.report.quarantined[index];
            let from = parse_segment_name(&q.segment).unwrap_or(next.first_seq);
            q.lost = (next.first_seq > from).then_some(SeqRange {
                from,
                to: next.first_seq - 1,
            });
        }
    }
    let firsts: Vec<u64> = opened.iter().map(|s| s.first_seq).collect();
    let mut segments = Vec::with_capacity(opened.len());
    for (i, mut segment) in opened.into_iter().enumerate() {
        let next_first = firsts.get(i + 1).copied();
        // Rotation syncs a segment before the next one exists, so only the last segment with
        // a usable header can hold bytes no sync covered. Files after it that were set aside
        // prove nothing (they may be debris of a creation that never completed).
        let is_tail = next_first.is_none();
        let trailer = segment_trailer(&segment);
        // Seqs in its copies were handed out, even where the copy itself did not survive.
        run.seq_floor = run.seq_floor.max(trailer.highest_seq().unwrap_or(0));
        if let Some(seal) = trusted_seal(run, &segment, &trailer) {
            segment.trust_seal(seal.last_seq, seal.end_offset);
            segment.file.forbid_map();
            run.report.segments_sealed += 1;
            classify(run, &mut segment, None, false, next_first)?;
            account(run, segment, &mut segments, total_bytes, progress);
            continue;
        }
        let place = Place {
            is_tail,
            cursor_max,
            next_first,
        };
        if let Err(error) = recover_frames(run, &mut segment, &trailer, place) {
            segment = as_found(run, segment, error)?;
            // Phases 5-7 again, writing nothing: the bytes are served as they are.
            run.repair = false;
            let again = recover_frames(run, &mut segment, &trailer, place);
            run.repair = true;
            again?;
        }
        account(run, segment, &mut segments, total_bytes, progress);
    }
    Ok(segments)
}

/// A segment's place in the log, as phases 5-8 need it.
#[derive(Debug, Clone, Copy)]
struct Place {
    /// The last segment with a usable header: the only one that may hold unsynced bytes.
    is_tail: bool,
    /// The highest cursor: a proof of durability.
    cursor_max: u64,
    /// First seq of the next segment, if any.
    next_first: Option<u64>,
}

/// The trailer of a v2 segment (empty for v1, which has none), read once per open.
fn segment_trailer(segment: &Segment) -> Trailer {
    if segment.version != FORMAT_VERSION {
        return Trailer::default();
    }
    read_trailer(
        &mut Window::uncached(&*segment.file),
        segment.file.len(),
        (segment.data_start, segment.data_end),
    )
}

/// Phases 5-8 for one segment.
fn recover_frames(
    run: &mut Run<'_>,
    segment: &mut Segment,
    trailer: &Trailer,
    place: Place,
) -> Result<()> {
    let Place {
        is_tail,
        cursor_max,
        next_first,
    } = place;
    if is_tail {
        let slot_proof = trailer.slots.iter().map(|s| s.proven_seq).max();
        run.tail_proof = cursor_max.max(slot_proof.unwrap_or(0));
    }
    let slot_proof = restore_tail_pages(run, segment, trailer)?;
    let proof = if is_tail {
        // Seqs up to a proof were handed out: never again, whatever the scan finds.
        run.seq_floor = run.seq_floor.max(slot_proof.max(cursor_max));
        slot_proof.max(cursor_max)
    } else {
        u64::MAX
    };
    let (stop, holes) = scan_frames(segment, proof, next_first, run.repair);
    for (offset, lost, reason) in holes {
        record_damage(run, segment, offset, Some(lost), reason);
    }
    let clean_end = stop.is_none();
    classify(run, segment, stop, is_tail, next_first)?;
    if is_tail && clean_end && slot_proof > segment.last_seq() {
        // Zeros where the segment's own copy proves frames were durable: damage, not an
        // end of data (a cursor ahead of the log is a gap instead: see `finish`).
        let (from, offset) = (segment.last_seq() + 1, segment.end_offset());
        let lost = SeqRange {
            from,
            to: slot_proof,
        };
        let reason = format!(
            "zero bytes where seq {from} was expected; the tail-page copy proves seqs through {slot_proof} durable"
        );
        record_damage(run, segment, offset, Some(lost), reason);
    }
    if is_tail {
        keep_orphan_copies(run, segment, trailer)?;
        redirty(run, segment, proof)?;
    }
    Ok(())
}

/// Phase 8 writes both tail-page slots. A slot may still hold frames past the log's end (a
/// copy written by a sync the power cut interrupted, whose data page did not survive): their
/// seqs were handed out, so the slot's copy area is kept in a cut file first, and a crash
/// during phase 8 cannot make the next open forget them and hand the seqs out again.
fn keep_orphan_copies(run: &mut Run<'_>, segment: &Segment, trailer: &Trailer) -> Result<()> {
    if !run.repair {
        return Ok(());
    }
    for (slot, highest) in trailer.slot_highest.iter().enumerate() {
        if highest.is_some_and(|h| h > segment.last_seq()) {
            let from = crate::tail::copy_area(segment.file.len(), slot as u64);
            keep_cut_bytes(run, segment, from, from + PAGE_BYTES)?;
        }
    }
    Ok(())
}

/// A repair write to `segment` failed (a bad block, a read-only medium): rather than fail
/// every start, the segment is opened afresh, scanned as found by the caller, reported as
/// damaged and never appended to; what the failed attempt reported is taken back.
fn as_found(run: &mut Run<'_>, segment: Segment, error: Error) -> Result<Segment> {
    let Error::Io { .. } = &error else {
        return Err(error);
    };
    if !run.repair {
        return Err(error);
    }
    let name = segment.name.clone();
    run.report.tail_restored.retain(|r| r.segment != name);
    run.report
        .damaged
        .retain(|d| d.segment != name || d.offset == 0);
    if run
        .report
        .tail_cut
        .as_ref()
        .is_some_and(|c| c.segment == name)
    {
        run.report.tail_cut = None;
    }
    let header = SegmentHeader {
        version: segment.version,
        first_seq: segment.first_seq,
        segment_bytes: segment.file.len(),
        created_wall_ms: 0,
        unsynced_window_bytes: segment.unsynced_window,
    };
    drop(segment);
    let file = run
        .medium
        .open(&name, false)
        .context(|| run.at(&format!("reopening {name}")))?;
    let mut fresh = Segment::new(name.clone(), &header, file);
    record_damage(
        run,
        &mut fresh,
        0,
        None,
        format!("repair failed ({error}); served as found, never appended to"),
    );
    Ok(fresh)
}

/// Counts a recovered segment into the report and hands it on.
fn account(
    run: &mut Run<'_>,
    segment: Segment,
    segments: &mut Vec<Segment>,
    total_bytes: u64,
    progress: Progress<'_>,
) {
    run.report.bytes_scanned += segment.file.len();
    progress(run.report.bytes_scanned, total_bytes);
    run.report.records += segment.record_count();
    run.seq_floor = run.seq_floor.max(segment.last_seq());
    if segment.version != FORMAT_VERSION {
        run.report.v1_segments += 1;
    }
    segments.push(segment);
}

/// The seal a repairing open may take a segment's end from: its header passed as written
/// (not rebuilt) and the seal is the newest record of its trailer. Read-only opens (`verify`)
/// never trust a seal: they check every byte.
fn trusted_seal(run: &Run<'_>, segment: &Segment, trailer: &Trailer) -> Option<crate::tail::Seal> {
    let rebuilt = run
        .report
        .damaged
        .iter()
        .any(|d| d.segment == segment.name && d.offset == 0);
    if !run.repair || rebuilt || segment.version != FORMAT_VERSION {
        return None;
    }
    let seal = trailer.seal?;
    // Bytes on disk, CRC or not: a seal that cannot describe this segment is not trusted.
    let frames = (seal.last_seq.checked_add(1)?).checked_sub(segment.first_seq)?;
    let room = seal.end_offset.checked_sub(segment.data_start)?;
    let plausible = frames.checked_mul(FRAME_HEADER_BYTES + FRAME_ALIGN_BYTES)? <= room
        && (frames == 0) == (room == 0)
        && seal.end_offset <= segment.data_end;
    plausible.then_some(seal)
}

/// Phase 4: the header. `None` when the segment was quarantined.
fn open_segment(
    run: &mut Run<'_>,
    first_seq: u64,
    name: String,
    file: Box<dyn MediumFile>,
) -> Result<Option<Segment>> {
    let header = match check_header(&*file, first_seq) {
        Ok(header) => header,
        Err(reason) => match rebuild_header(&*file, first_seq) {
            Some(header) => {
                let mut reason = format!("{reason}; header rebuilt from the file name and length");
                if run.repair {
                    // A failed rewrite must not fail every start: it is rebuilt again next time.
                    if let Err(e) = file
                        .write_at(0, &header.encode())
                        .and_then(|()| file.sync())
                    {
                        reason.push_str(&format!(" (rewriting it failed: {e})"));
                    }
                }
                run.report.damaged.push(DamageReport {
                    segment: name.clone(),
                    offset: 0,
                    lost: None,
                    reason,
                });
                header
            }
            None => {
                quarantine(run, first_seq, name, &*file, reason)?;
                return Ok(None);
            }
        },
    };
    Ok(Some(Segment::new(name, &header, file)))
}

/// A header that passes every check, or what is wrong with it.
fn check_header(
    file: &dyn MediumFile,
    first_seq: u64,
) -> std::result::Result<SegmentHeader, String> {
    if file.len() < SEGMENT_HEADER_BYTES {
        return Err(format!(
            "file is {} bytes, shorter than a header",
            file.len()
        ));
    }
    let mut bytes = vec![0u8; SEGMENT_HEADER_BYTES as usize];
    file.read_uncached(0, &mut bytes)
        .map_err(|e| format!("header unreadable: {e}"))?;
    let h = SegmentHeader::decode(&bytes)?;
    let (data_start, data_end) = h.data_range();
    if h.first_seq != first_seq {
        Err(format!(
            "header first_seq {} differs from name",
            h.first_seq
        ))
    } else if h.segment_bytes != file.len() {
        Err(format!(
            "header says {} bytes, file has {}",
            h.segment_bytes,
            file.len()
        ))
    } else if !plausible_seq(h.first_seq) {
        Err(format!("header first_seq {} is impossible", h.first_seq))
    } else if data_start < SEGMENT_HEADER_BYTES || data_start > data_end {
        Err(format!(
            "a {}-byte segment of format v{} has no room for data",
            h.segment_bytes, h.version
        ))
    } else {
        Ok(h)
    }
}

/// A v2 header rebuilt from the name and length, when the file has a v2 shape and its first
/// frame is there with the seq the name promises (or it holds no data at all).
fn rebuild_header(file: &dyn MediumFile, first_seq: u64) -> Option<SegmentHeader> {
    let len = file.len();
    if len < SEGMENT_BYTES_MIN || len % PAGE_BYTES != 0 || first_seq == 0 {
        return None;
    }
    let header = SegmentHeader::rebuilt(first_seq, len);
    let (start, end) = header.data_range();
    let mut window = Window::uncached(file);
    match read_frame(&mut window, start, end, first_seq) {
        FrameRead::Frame { .. } => Some(header),
        FrameRead::End if last_nonzero_end(file, start, end).is_none() => Some(header),
        _ => None,
    }
}

/// Sets a segment aside (renamed `*.seg.quarantine`), learning its highest seq first.
fn quarantine(
    run: &mut Run<'_>,
    first_seq: u64,
    name: String,
    file: &dyn MediumFile,
    reason: String,
) -> Result<()> {
    let max_seq = max_frame_seq(file);
    // As for a quarantine file an earlier open left (scan_quarantined): the name says seqs
    // from first_seq on may have been handed out, so this open never hands them out again.
    run.seq_floor = run
        .seq_floor
        .max(max_seq.unwrap_or(0))
        .max(first_seq.saturating_sub(1));
    if run.repair {
        let aside = format!("{first_seq:020}{QUARANTINE_SUFFIX}");
        run.medium
            .rename(&name, &aside)
            .context(|| run.at(&format!("quarantining {name}")))?;
    }
    run.report.quarantined.push(QuarantineReport {
        segment: name,
        reason,
        lost: max_seq.map(|to| SeqRange {
            from: first_seq,
            to,
        }),
    });
    run.quarantined_firsts.push(first_seq);
    Ok(())
}

/// Phase 5: puts back page prefixes from the tail-page slots, oldest copy first, wherever the
/// segment's bytes differ (a torn later write). Returns the highest proven seq the slots name.
/// Read-only runs cannot write: they report the restore, and the scan sees the copy (see
/// [`Patched`]).
fn restore_tail_pages(run: &mut Run<'_>, segment: &mut Segment, trailer: &Trailer) -> Result<u64> {
    if segment.version != FORMAT_VERSION {
        return Ok(0);
    }
    // The seqs the copies hold count for the floor already (`Trailer::highest_seq`).
    let slots = trailer.slots.clone();
    let mut proof = 0;
    for slot in &slots {
        proof = proof.max(slot.proven_seq);
        let mut current = vec![0u8; slot.bytes.len()];
        let same = segment
            .file
            .read_uncached(slot.page_offset, &mut current)
            .is_ok_and(|()| current == slot.bytes);
        if same {
            continue;
        }
        if run.repair {
            // The rest of the page may hold frames no sync covered: a torn rewrite can garble
            // them, so their seqs go into the durable floor first.
            if let Some(highest) = frames_after_prefix(segment, slot).highest {
                persist_floor(run, highest)?;
            }
            segment
                .file
                .write_at(slot.page_offset, &slot.bytes)
                .and_then(|()| segment.file.sync())
                .context(|| run.at(&format!("restoring a page of {}", segment.name)))?;
        }
        run.report.tail_restored.push(TailRestore {
            segment: segment.name.clone(),
            offset: slot.page_offset,
            bytes: slot.bytes.len() as u64,
        });
    }
    segment.tail_generation.store(
        slots.last().map_or(0, |s| s.generation),
        std::sync::atomic::Ordering::Release,
    );
    if !run.repair {
        Patched::install(segment, slots);
    }
    Ok(proof)
}

/// CRC-valid frames in the page of `slot` past its copied prefix.
fn frames_after_prefix(segment: &Segment, slot: &TailSlot) -> crate::scan::FramesIn {
    let from = slot.page_offset + slot.bytes.len() as u64;
    let to = (slot.page_offset + PAGE_BYTES).min(segment.data_end);
    valid_frames_in(&mut Window::uncached(&*segment.file), from, to, to)
}

/// Name of the floor file: the highest seq a repairing open saw (cursor slot encoding, both
/// slots equal, written atomically). FORMAT.md, "Floor file".
pub const FLOOR_FILE: &str = "seq.floor";

/// Phase 3: the floor an earlier repairing open made durable. A file with no valid slot is
/// reported (the floor it held is lost; only seqs no sync covered depended on it).
fn read_floor(run: &mut Run<'_>, exists: bool) -> Result<()> {
    if !exists {
        return Ok(());
    }
    let file = run
        .medium
        .open(FLOOR_FILE, false)
        .context(|| run.at(&format!("opening {FLOOR_FILE}")))?;
    let read = read_cursor(&*file).context(|| run.at(&format!("reading {FLOOR_FILE}")))?;
    match read.value {
        Some((_, seq)) => {
            run.seq_floor = run.seq_floor.max(seq);
            run.floor_persisted = seq;
        }
        None => run.report.warnings.push(format!(
            "{FLOOR_FILE} has no valid slot: the seqs of frames an interrupted repair saw may be handed out again"
        )),
    }
    Ok(())
}

/// A repair write to the last segment may tear its page and garble frames whose seqs no
/// other durable record holds (frames no copy covers, a proof the rewrite of the slots
/// replaces). So before such a write, the callers having found such seqs, the floor (every
/// seq this open has seen, and `seen`) is made durable in the floor file: a crash during the
/// repair can then never make the next open hand those seqs out again. Written only when it
/// rises. A floor file that cannot be written (a full file system) is a warning, not a failed
/// open: the repair goes on with only the guarantees it had without the file.
fn persist_floor(run: &mut Run<'_>, seen: u64) -> Result<()> {
    let floor = run.seq_floor.max(seen);
    run.seq_floor = floor;
    if !run.repair || floor <= run.floor_persisted {
        return Ok(());
    }
    let mut head = encode_slot(0, floor).to_vec();
    head.extend_from_slice(&encode_slot(1, floor));
    match run.medium.create(FLOOR_FILE, CURSOR_FILE_BYTES, &head) {
        Ok(_) => run.floor_persisted = floor,
        Err(e) => run.report.warnings.push(format!(
            "could not write {FLOOR_FILE} ({e}): a power cut during this repair could let seqs through {floor} be handed out again"
        )),
    }
    Ok(())
}

/// How far past `end` (an end of data at or past the last completed sync) stale bytes can lie:
/// the header's unsynced window when `bounded` (a repairing open, the end not below a proof)
/// and the segment promises one, else the whole data region. `verify` always reads it all.
fn stale_end(segment: &Segment, end: u64, bounded: bool) -> u64 {
    if bounded && segment.unsynced_window > 0 {
        end.saturating_add(segment.unsynced_window)
            .min(segment.data_end)
    } else {
        segment.data_end
    }
}

/// Where a scan stopped for good, if it did before the end of data.
struct Stop {
    offset: u64,
    expected: u64,
    reason: String,
    /// True when the bad frame lies past every proof of durability (a tail candidate).
    above_proof: bool,
}

/// Phase 6: frames from the start of data. A bad frame at or below `proof` is damage: the
/// scan resyncs on the next CRC-valid frame whose seq could follow and records a hole; above
/// `proof` the scan stops (phase 7 decides).
/// A hole found and jumped by the scan: (offset of the bad frame, seqs lost, why).
type Hole = (u64, SeqRange, String);

fn scan_frames(
    segment: &Segment,
    proof: u64,
    next_first: Option<u64>,
    repair: bool,
) -> (Option<Stop>, Vec<Hole>) {
    let file = &*segment.file;
    let mut holes = Vec::new();
    let mut window = Window::uncached(file);
    let (data_end, mut offset, mut expected) =
        (segment.data_end, segment.data_start, segment.first_seq);
    // No frame is shorter than 24 bytes: a bound on how far seqs can run in one segment.
    let max_frames =
        (segment.data_end - segment.data_start) / (FRAME_HEADER_BYTES + FRAME_ALIGN_BYTES);
    loop {
        let reason = match read_frame(&mut window, offset, data_end, expected) {
            FrameRead::Frame { next_offset, .. } => {
                segment.note_frame(expected, offset, next_offset);
                offset = next_offset;
                expected += 1;
                continue;
            }
            FrameRead::End => match last_nonzero_end(
                file,
                offset,
                stale_end(
                    segment,
                    offset,
                    // Only the last segment can hold unsynced bytes; others are read whole.
                    repair && proof != u64::MAX && expected > proof,
                ),
            ) {
                None => return (None, holes),
                Some(_) => format!("zero bytes where seq {expected} was expected, data after them"),
            },
            FrameRead::Bad(reason) => reason,
        };
        if expected > proof {
            return (
                Some(Stop {
                    offset,
                    expected,
                    reason,
                    above_proof: true,
                }),
                holes,
            );
        }
        let last_possible = next_first.map_or(expected + max_frames, |n| n.saturating_sub(1));
        match resync(
            &mut window,
            offset + FRAME_ALIGN_BYTES,
            data_end,
            expected + 1..=last_possible,
        ) {
            Some(found) => {
                let lost = SeqRange {
                    from: expected,
                    to: found.seq - 1,
                };
                holes.push((offset, lost, reason));
                segment.note_hole(lost, found.offset);
                offset = found.offset;
                expected = found.seq;
            }
            None => {
                return (
                    Some(Stop {
                        offset,
                        expected,
                        reason,
                        above_proof: false,
                    }),
                    holes,
                )
            }
        }
    }
}

fn record_damage(
    run: &mut Run<'_>,
    segment: &mut Segment,
    offset: u64,
    lost: Option<SeqRange>,
    reason: String,
) {
    if segment.damage.is_none() {
        segment.damage = Some(Damage {
            offset,
            lost_from: lost.map_or(0, |l| l.from),
            lost_to: lost.map_or(0, |l| l.to),
            reason: reason.clone(),
        });
    }
    run.report.damaged.push(DamageReport {
        segment: segment.name.clone(),
        offset,
        lost,
        reason,
    });
}

/// Phase 7: what a final stop means. In the last segment above every proof it is a torn tail:
/// its bytes go to a side file, then are zeroed, and its frames' seqs are never reused.
/// Anywhere else it is damage: the bytes stay, the lost range is reported.
fn classify(
    run: &mut Run<'_>,
    segment: &mut Segment,
    stop: Option<Stop>,
    is_tail: bool,
    next_first: Option<u64>,
) -> Result<()> {
    let Some(stop) = stop else {
        if let Some(next_first) = next_first {
            let last = segment.last_seq();
            if next_first > last + 1 && !covered(&run.quarantined_firsts, last + 1, next_first - 1)
            {
                run.report.gaps.push(SeqRange {
                    from: last + 1,
                    to: next_first - 1,
                });
            }
        }
        return Ok(());
    };
    if !is_tail || !stop.above_proof {
        let lost_to = next_first.map_or(run.seq_floor.max(segment.last_seq()), |n| {
            n.saturating_sub(1)
        });
        let lost = (lost_to >= stop.expected).then_some(SeqRange {
            from: stop.expected,
            to: lost_to,
        });
        record_damage(run, segment, stop.offset, lost, stop.reason);
        return Ok(());
    }
    cut_tail(run, segment, stop)
}

fn cut_tail(run: &mut Run<'_>, segment: &mut Segment, stop: Stop) -> Result<()> {
    let file = &*segment.file;
    // A stop above the proof lies at or past the end of the last completed sync, as long as
    // that sync's frames are intact (the medium model: a completed sync is not torn later).
    let nonzero_end = last_nonzero_end(
        file,
        stop.offset,
        stale_end(segment, stop.offset, run.repair),
    )
    .unwrap_or(stop.offset);
    let frames = {
        let mut window = Window::uncached(file);
        valid_frames_in(&mut window, stop.offset, nonzero_end, segment.data_end)
    };
    let (records, highest_seq) = (frames.count, frames.highest);
    // A frame whose payload ends in zero bytes reaches past the last non-zero byte: the cut
    // (and its side file) takes it whole, so a later open still finds its seq there.
    let dirty_end = nonzero_end.max(frames.end);
    let mut kept_in = None;
    if run.repair && dirty_end > stop.offset {
        // The zeroing shares a page with the frames before the stop: those past the proof
        // may be in no copy.
        if segment.last_seq() > run.tail_proof {
            persist_floor(run, segment.last_seq().max(highest_seq.unwrap_or(0)))?;
        }
        kept_in = Some(keep_cut_bytes(run, segment, stop.offset, dirty_end)?);
        // The tail-page copies still cover the prefix while the zeros are synced; phase 8
        // then replaces both copies before any append can reuse the cut bytes' place.
        zero_range(file, stop.offset, dirty_end)
            .context(|| run.at(&format!("zeroing torn tail of {}", segment.name)))?;
    }
    if let Some(highest) = highest_seq.filter(|&h| h > segment.last_seq()) {
        run.seq_floor = run.seq_floor.max(highest);
        run.report.gaps.push(SeqRange {
            from: segment.last_seq() + 1,
            to: highest,
        });
    }
    run.report.tail_cut = Some(TailCut {
        segment: segment.name.clone(),
        offset: stop.offset,
        bytes: dirty_end - stop.offset,
        records,
        reason: stop.reason,
        highest_seq,
        kept_in,
    });
    Ok(())
}

/// Writes the bytes about to be cut (at most [`CUT_FILE_BYTES_MAX`]) to a CRC-checked side
/// file, keeping at most [`CUT_FILES_MAX`] of them (oldest removed first). FORMAT.md, "Cut
/// files", has the layout.
fn keep_cut_bytes(run: &mut Run<'_>, segment: &Segment, from: u64, to: u64) -> Result<String> {
    let kept = (to - from).min(CUT_FILE_BYTES_MAX);
    let mut bytes = vec![0u8; kept as usize];
    if segment.file.read_uncached(from, &mut bytes).is_err() {
        bytes.clear();
    }
    let mut head = Vec::with_capacity(64 + bytes.len());
    head.extend_from_slice(CUT_MAGIC);
    head.extend_from_slice(&segment.first_seq.to_le_bytes());
    head.extend_from_slice(&from.to_le_bytes());
    head.extend_from_slice(&(to - from).to_le_bytes());
    head.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    head.extend_from_slice(&wall_ms().to_le_bytes());
    head.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    head.resize(60, 0);
    let crc = crc32fast::hash(&head);
    head.extend_from_slice(&crc.to_le_bytes());
    head.extend_from_slice(&bytes);
    while run.cut_files.len() >= CUT_FILES_MAX {
        let oldest = run.cut_files.remove(0);
        run.medium
            .remove(&oldest)
            .context(|| run.at(&format!("removing {oldest}")))?;
    }
    let name = format!("{:020}-{from:012}{CUT_SUFFIX}", segment.first_seq);
    run.medium
        .create(&name, head.len() as u64, &head)
        .context(|| run.at(&format!("writing {name}")))?;
    run.cut_files.push(name.clone());
    Ok(name)
}

/// Magic bytes of a cut side file.
pub const CUT_MAGIC: &[u8; 8] = b"EDGECAPX";

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Phase 8: bytes past the proof point may still sit only in the page cache, even clean there
/// after a failed writeback earlier in this boot (Linux then returns 0 from a new fdatasync).
/// Writing them again makes them dirty, so the sync below really reaches the medium before
/// they are called durable. A rewrite can tear its page like any write, and these pages may
/// hold acknowledged frames, so each page is first copied into a tail-page slot and synced:
/// the copy of page *n* and the rewrite of page *n - 1* share one sync.
fn redirty(run: &mut Run<'_>, segment: &Segment, proof: u64) -> Result<()> {
    if !run.repair {
        return Ok(());
    }
    // Refreshing the slots replaces their proofs and copies: when the floor rests on them (a
    // proof past the last readable frame, copies of frames past it), it goes into the floor
    // file first. Pages rewritten below are each copied into a slot before their rewrite.
    if run.seq_floor > segment.last_seq() {
        persist_floor(run, 0)?;
    }
    let from = if proof < segment.first_seq {
        segment.data_start
    } else if proof >= segment.last_seq() {
        segment.end_offset()
    } else {
        frame_offset(segment, proof + 1).unwrap_or(segment.data_start)
    };
    let to = segment.end_offset();
    let context = |run: &Run<'_>| run.at(&format!("rewriting unproven bytes of {}", segment.name));
    let mut page = from - from % PAGE_BYTES;
    while page < to {
        let upto = (page + PAGE_BYTES).min(to);
        crate::tail::copy_page(segment, page, upto, proof)
            .and_then(|()| segment.file.sync())
            .and_then(|()| rewrite(&*segment.file, page.max(from), upto))
            .context(|| context(run))?;
        page += PAGE_BYTES;
    }
    segment
        .file
        .sync()
        .and_then(|()| crate::tail::refresh_copies(segment, to, segment.last_seq()))
        .context(|| run.at(&format!("syncing {}", segment.name)))
}

/// Writes `from..to` again with the bytes it holds.
fn rewrite(file: &dyn MediumFile, from: u64, to: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; (to - from) as usize];
    file.read_uncached(from, &mut buf)?;
    file.write_at(from, &buf)
}

/// Offset of the frame of `seq` in a scanned segment.
fn frame_offset(segment: &Segment, seq: u64) -> Option<u64> {
    let (mut at, mut offset) = segment.seek_point(seq);
    let mut window = Window::uncached(&*segment.file);
    while at < seq {
        match read_frame(&mut window, offset, segment.data_end, at) {
            FrameRead::Frame { next_offset, .. } => offset = next_offset,
            _ => return None,
        }
        at += 1;
    }
    Some(offset)
}

fn covered(quarantined_firsts: &[u64], from: u64, to: u64) -> bool {
    quarantined_firsts.iter().any(|&q| q >= from && q <= to)
}

/// Phase 9: the next seq and the gaps.
fn finish(
    run: Run<'_>,
    segments: Vec<Segment>,
    cursors: BTreeMap<String, Cursor>,
    cursor_max: u64,
) -> Result<Recovered> {
    let mut report = run.report;
    let log_last = segments.last().map(|s| s.last_seq()).unwrap_or(0);
    // Every seq read from disk is at most SEQ_MAX (damage otherwise): this cannot overflow.
    let highest = run.seq_floor.max(cursor_max).max(log_last);
    assert!(
        highest <= SEQ_MAX,
        "seq {highest} from disk escaped the SEQ_MAX checks"
    );
    let mut next_seq = highest + 1;
    let needs_new_segment = segments.last().is_some_and(|s| !s.appendable())
        || report
            .quarantined
            .last()
            .zip(segments.last())
            .is_some_and(|(q, s)| q.segment > s.name);
    if let Some(last) = segments.last().filter(|_| needs_new_segment) {
        // The new segment is named after next_seq: never the name of one that exists.
        next_seq = next_seq.max(last.first_seq + 1);
    }
    if let Some(last) = segments.last() {
        let explained = report.gaps.iter().any(|g| g.to == next_seq - 1)
            || report
                .damaged
                .iter()
                .any(|d| d.lost.is_some_and(|l| l.to >= next_seq - 1));
        if next_seq > last.last_seq() + 1
            && !explained
            && !covered(&run.quarantined_firsts, last.last_seq() + 1, next_seq - 1)
        {
            report.gaps.push(SeqRange {
                from: last.last_seq() + 1,
                to: next_seq - 1,
            });
        }
    }
    let first_stored = segments
        .iter()
        .find(|s| s.record_count() > 0)
        .map(|s| s.first_seq);
    report.front_gap = first_stored
        .filter(|&f| f > 1)
        .map(|f| SeqRange { from: 1, to: f - 1 });
    report.segments = segments.len();
    report.next_seq = next_seq;
    report.first_seq = first_stored;
    report.last_seq = (report.records > 0).then_some(log_last);
    let segments = segments.into_iter().map(Arc::new).collect();
    if next_seq == u64::MAX {
        return Err(Error::InvalidOption {
            option: "data directory",
            reason: "seq space exhausted".into(),
        });
    }
    Ok(Recovered {
        segments,
        needs_new_segment,
        cursors,
        next_seq,
        report,
    })
}

/// A segment file as the read-only scan sees it: the tail-page copies laid over the bytes, as
/// repair would write them.
#[derive(Debug)]
struct Patched {
    inner: Box<dyn MediumFile>,
    slots: Vec<TailSlot>,
}

impl Patched {
    /// Lays `slots` over the segment's file for the rest of this read-only open, so the scan
    /// and every reader see what a repairing open would leave.
    fn install(segment: &mut Segment, slots: Vec<TailSlot>) {
        if slots.is_empty() {
            return;
        }
        let inner = std::mem::replace(&mut segment.file, Box::new(crate::medium::NoFile));
        segment.file = Box::new(Patched { inner, slots });
    }
}

impl MediumFile for Patched {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.read_uncached(offset, buf)
    }

    fn read_uncached(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_uncached(offset, buf)?;
        let end = offset + buf.len() as u64;
        for slot in &self.slots {
            let (from, to) = (slot.page_offset, slot.page_offset + slot.bytes.len() as u64);
            let (lo, hi) = (from.max(offset), to.min(end));
            if lo < hi {
                buf[(lo - offset) as usize..(hi - offset) as usize]
                    .copy_from_slice(&slot.bytes[(lo - from) as usize..(hi - from) as usize]);
            }
        }
        Ok(())
    }

    fn write_at(&self, _offset: u64, _data: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("read-only overlay"))
    }

    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes zeros over `from..to` and syncs.
fn zero_range(file: &dyn MediumFile, from: u64, to: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK_BYTES];
    let mut offset = from;
    while offset < to {
        let step = (to - offset).min(ZERO_CHUNK_BYTES as u64) as usize;
        file.write_at(offset, &zeros[..step])?;
        offset += step as u64;
    }
    file.sync()
}

/// True when `name` is a file the log owns (for "is this a data dir").
pub(crate) fn is_log_file(name: &str) -> bool {
    name.ends_with(SEGMENT_SUFFIX)
        || name.ends_with(QUARANTINE_SUFFIX)
        || name.ends_with(CURSOR_SUFFIX)
        || name == FLOOR_FILE
        || name == crate::log::LOCK_FILE_NAME
}
