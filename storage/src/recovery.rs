//! Recovery: what `open` does before the first append, and what `verify` does without writing.
//!
//! The algorithm (FORMAT.md, "Recovery", says the same):
//! 1. Remove `*.tmp` files: segments whose creation never reached its rename.
//! 2. Check every segment header (magic, version, CRC, `first_seq` equal to the file name,
//!    `segment_bytes` equal to the file length). A bad one is renamed `*.seg.quarantine`; its
//!    frames are still scanned (ignoring the header) only to learn the highest seq it held, so
//!    no seq is ever reused.
//! 3. Scan every good segment's frames from its header, expecting `first_seq`, `first_seq + 1`,
//!    …; stop at the first frame with a zero length (end), an impossible length, a bad CRC, or an
//!    unexpected seq (stale bytes of an earlier write).
//! 4. In the **last** segment, anything non-zero after that point is a torn tail from a power
//!    cut: it is zeroed and synced, and reported (bytes, records). In an **older** segment it is
//!    damage (the medium changed bytes that were once synced): the segment keeps serving its good
//!    prefix and the report names the seq range lost. Nothing loops and nothing panics.
//! 5. Read every cursor; a torn slot falls back to the other slot and is rewritten.
//! 6. The next seq is one past the highest seq ever seen: in segments, quarantined segments and
//!    cursors. If that leaves a gap after the last segment (a cursor ahead of the log), a new
//!    segment starts at the next seq and the gap is reported.
//!
//! Only this module truncates or zeroes bytes, and only in repair mode.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::cursor::{
    encode_slot, read_cursor, valid_cursor_name, Cursor, CURSOR_FILE_BYTES, CURSOR_SUFFIX,
};
use crate::error::{IoContext, Result};
use crate::limits::{SEGMENT_HEADER_BYTES, ZERO_CHUNK_BYTES};
use crate::log::LogOptions;
use crate::medium::Medium;
use crate::segment::{
    count_valid_frames, last_nonzero_end, parse_segment_name, read_frame, Damage, FrameRead,
    Segment, SegmentHeader, QUARANTINE_SUFFIX, SEGMENT_SUFFIX,
};

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
    /// Seq ranges with no record, not caused by damage (dropped segments, a cursor ahead).
    pub gaps: Vec<SeqRange>,
}

impl RecoveryReport {
    /// True when no bytes were bad: no torn tail, damage, quarantine or bad cursor.
    pub fn is_clean(&self) -> bool {
        self.problems().is_empty()
    }

    /// One human sentence per problem found.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
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
    /// Appends must not continue in the last good segment (its tail is damage, not a torn
    /// tail, so it was not zeroed): start a new segment.
    pub needs_new_segment: bool,
    pub cursors: BTreeMap<String, Cursor>,
    pub next_seq: u64,
    pub report: RecoveryReport,
}

/// Progress callback: (bytes done, bytes total).
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// Scans (and in `repair` mode, repairs) the medium. See the module docs.
pub(crate) fn recover(
    medium: &dyn Medium,
    options: &LogOptions,
    repair: bool,
    progress: Progress<'_>,
) -> Result<Recovered> {
    let location = medium.location();
    let where_ = |what: &str| format!("{what} in {}", location.display());
    let mut report = RecoveryReport {
        repaired: repair,
        ..RecoveryReport::default()
    };
    let names = medium.list().context(|| where_("listing"))?;

    let mut segment_names: Vec<(u64, String)> = Vec::new();
    let mut cursor_names = Vec::new();
    let mut seq_floor = 0u64; // highest seq known to have been used
    let mut quarantined_firsts: Vec<u64> = Vec::new();
    for name in names {
        if name.ends_with(".tmp") {
            if repair {
                medium
                    .remove(&name)
                    .context(|| where_(&format!("removing {name}")))?;
            }
            report.removed_temp_files.push(name);
        } else if let Some(first_seq) = parse_segment_name(&name) {
            segment_names.push((first_seq, name));
        } else if let Some(digits) = name.strip_suffix(QUARANTINE_SUFFIX) {
            // Set aside by an earlier open: still learn the highest seq it held, so a crash
            // between quarantine and the next segment's creation can never reuse seqs.
            if let Ok(first_seq) = digits.parse::<u64>() {
                seq_floor = seq_floor.max(first_seq.saturating_sub(1));
                let file = medium
                    .open(&name, false)
                    .context(|| where_(&format!("opening {name}")))?;
                let max_seq = max_frame_seq(&*file, options.record_bytes_max)
                    .context(|| where_(&format!("scanning {name}")))?;
                seq_floor = seq_floor.max(max_seq.unwrap_or(0));
                quarantined_firsts.push(first_seq);
            }
        } else if let Some(cursor) = name.strip_suffix(CURSOR_SUFFIX) {
            cursor_names.push(cursor.to_string());
        }
    }
    segment_names.sort();

    let mut total_bytes = 0u64;
    let mut files = Vec::new();
    for (first_seq, name) in &segment_names {
        let file = medium
            .open(name, repair)
            .context(|| where_(&format!("opening {name}")))?;
        total_bytes += file.len();
        files.push((*first_seq, name.clone(), file));
    }

    // Pass 1: headers and frames.
    struct Scanned {
        segment: Segment,
        stop_reason: Option<String>,
        dirty_end: Option<u64>,
    }
    let mut scanned: Vec<Scanned> = Vec::new();
    // (index of the next good segment, index in report.quarantined) of each quarantine.
    let mut quarantined_before: Vec<(usize, usize)> = Vec::new();
    let file_count = files.len();
    let mut last_file_quarantined = false;
    for (position, (first_seq, name, file)) in files.into_iter().enumerate() {
        let is_last_file = position + 1 == file_count;
        let mut header_bytes = vec![0u8; SEGMENT_HEADER_BYTES as usize];
        let header = if file.len() < SEGMENT_HEADER_BYTES {
            Err(format!(
                "file is {} bytes, shorter than a header",
                file.len()
            ))
        } else {
            file.read_at(0, &mut header_bytes)
                .context(|| where_(&format!("reading {name}")))?;
            SegmentHeader::decode(&header_bytes).and_then(|h| {
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
                } else {
                    Ok(h)
                }
            })
        };
        let header = match header {
            Ok(h) => h,
            Err(reason) => {
                // Learn the highest seq it held from CRC-valid frames, ignoring the header.
                let max_seq = max_frame_seq(&*file, options.record_bytes_max)
                    .context(|| where_(&format!("scanning {name}")))?;
                seq_floor = seq_floor.max(max_seq.unwrap_or(0));
                let lost = max_seq.map(|to| SeqRange {
                    from: first_seq,
                    to,
                });
                if repair {
                    let aside = format!("{first_seq:020}{QUARANTINE_SUFFIX}");
                    medium
                        .rename(&name, &aside)
                        .context(|| where_(&format!("quarantining {name}")))?;
                }
                report.quarantined.push(QuarantineReport {
                    segment: name,
                    reason,
                    lost,
                });
                quarantined_firsts.push(first_seq);
                quarantined_before.push((scanned.len(), report.quarantined.len() - 1));
                last_file_quarantined = is_last_file;
                continue;
            }
        };
        assert_eq!(header.first_seq, first_seq);
        let segment = Segment::new(name.clone(), first_seq, file);
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut expected = first_seq;
        let stop_reason = loop {
            match read_frame(&*segment.file, offset, expected, options.record_bytes_max)
                .context(|| where_(&format!("scanning {name}")))?
            {
                FrameRead::Frame {
                    payload: _,
                    next_offset,
                } => {
                    segment.note_frame(expected, offset, next_offset);
                    offset = next_offset;
                    expected += 1;
                }
                FrameRead::End => break None,
                FrameRead::Bad(reason) => break Some(reason),
            }
        };
        let dirty_end = last_nonzero_end(&*segment.file, segment.end_offset())
            .context(|| where_(&format!("scanning {name}")))?;
        report.bytes_scanned += segment.file.len();
        progress(report.bytes_scanned, total_bytes);
        scanned.push(Scanned {
            segment,
            stop_reason,
            dirty_end,
        });
    }

    // A quarantined segment followed by a good one lost everything up to that one's start.
    for &(next_good, index) in &quarantined_before {
        if let Some(next) = scanned.get(next_good) {
            let q = &mut report.quarantined[index];
            let from = q
                .segment
                .strip_suffix(SEGMENT_SUFFIX)
                .and_then(|d| d.parse::<u64>().ok())
                .unwrap_or(next.segment.first_seq);
            q.lost = (next.segment.first_seq > from).then_some(SeqRange {
                from,
                to: next.segment.first_seq - 1,
            });
        }
    }
    let covered_by_quarantine =
        |from: u64, to: u64| quarantined_firsts.iter().any(|&q| q >= from && q <= to);

    // Pass 2: classify what follows each segment's valid data.
    let count = scanned.len();
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(count);
    for i in 0..count {
        let next_first = scanned.get(i + 1).map(|s| s.segment.first_seq);
        let is_tail = i + 1 == count && !last_file_quarantined;
        let s = &mut scanned[i];
        let end = s.segment.end_offset();
        let last_seq = s.segment.last_seq();
        let bad = s.dirty_end.is_some() || s.stop_reason.is_some();
        if is_tail {
            if bad {
                let dirty_end = s.dirty_end.unwrap_or(end);
                let records =
                    count_valid_frames(&*s.segment.file, end, dirty_end, options.record_bytes_max)
                        .context(|| where_("counting cut records"))?;
                if repair {
                    zero_range(&*s.segment.file, end, dirty_end)
                        .context(|| where_(&format!("zeroing torn tail of {}", s.segment.name)))?;
                }
                report.tail_cut = Some(TailCut {
                    segment: s.segment.name.clone(),
                    offset: end,
                    bytes: dirty_end - end,
                    records,
                    reason: s
                        .stop_reason
                        .clone()
                        .unwrap_or_else(|| "non-zero bytes after the end of data".into()),
                });
            }
        } else {
            let lost_to = next_first.map(|n| n.saturating_sub(1)).unwrap_or(seq_floor);
            if bad {
                let lost = (lost_to > last_seq).then_some(SeqRange {
                    from: last_seq + 1,
                    to: lost_to,
                });
                let damage = Damage {
                    offset: end,
                    lost_from: last_seq + 1,
                    lost_to,
                    reason: s
                        .stop_reason
                        .clone()
                        .unwrap_or_else(|| "non-zero bytes after the end of data".into()),
                };
                report.damaged.push(DamageReport {
                    segment: s.segment.name.clone(),
                    offset: end,
                    lost,
                    reason: damage.reason.clone(),
                });
                s.segment.damage = Some(damage);
            } else if let Some(next_first) = next_first {
                if next_first > last_seq + 1 && !covered_by_quarantine(last_seq + 1, next_first - 1)
                {
                    report.gaps.push(SeqRange {
                        from: last_seq + 1,
                        to: next_first - 1,
                    });
                }
            }
        }
        if repair {
            // Records found here may still sit only in the page cache (the previous process
            // was killed, not the power): make them durable before calling them durable.
            s.segment
                .file
                .sync()
                .context(|| where_(&format!("syncing {}", s.segment.name)))?;
        }
        report.records += s.segment.record_count();
        seq_floor = seq_floor.max(last_seq);
    }
    for s in scanned {
        segments.push(Arc::new(s.segment));
    }

    // Cursors.
    let mut cursors = BTreeMap::new();
    let mut cursor_max = 0u64;
    for name in cursor_names {
        if !valid_cursor_name(&name) {
            continue;
        }
        let file_name = format!("{name}{CURSOR_SUFFIX}");
        let file = medium
            .open(&file_name, repair)
            .context(|| where_(&format!("opening {file_name}")))?;
        let read = read_cursor(&*file).context(|| where_(&format!("reading {file_name}")))?;
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
        if repair && problem.is_some() {
            // Recreate the whole file (atomically: temp + rename) with both slots valid; an
            // in-place rewrite cannot mend a file that is too short.
            let mut head = encode_slot(0, seq).to_vec();
            head.extend_from_slice(&encode_slot(1, seq));
            cursor.file = medium
                .create(&file_name, CURSOR_FILE_BYTES, &head)
                .context(|| where_(&format!("rewriting {file_name}")))?;
            cursor.generation = 1;
        }
        cursor_max = cursor_max.max(seq);
        report.cursors.push(CursorReport {
            name: name.clone(),
            seq,
            problem,
        });
        cursors.insert(name, cursor);
    }

    let log_last = segments.last().map(|s| s.last_seq()).unwrap_or(0);
    let next_seq = seq_floor.max(cursor_max).max(log_last) + 1;
    if let Some(last) = segments.last() {
        if next_seq > last.last_seq() + 1
            && !report.gaps.iter().any(|g| g.to == next_seq - 1)
            && !covered_by_quarantine(last.last_seq() + 1, next_seq - 1)
        {
            report.gaps.push(SeqRange {
                from: last.last_seq() + 1,
                to: next_seq - 1,
            });
        }
    }
    report.segments = segments.len();
    report.next_seq = next_seq;
    report.first_seq = segments
        .iter()
        .find(|s| s.record_count() > 0)
        .map(|s| s.first_seq);
    report.last_seq = (report.records > 0).then_some(log_last);
    let needs_new_segment =
        last_file_quarantined || segments.last().is_some_and(|s| s.damage.is_some());
    Ok(Recovered {
        segments,
        needs_new_segment,
        cursors,
        next_seq,
        report,
    })
}

/// Highest seq of any CRC-valid frame in a file, trusting nothing else.
fn max_frame_seq(
    file: &dyn crate::medium::MediumFile,
    record_bytes_max: usize,
) -> std::io::Result<Option<u64>> {
    use crate::limits::{FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES};
    use crate::record::{decode_header, frame_bytes, frame_crc};
    let len = file.len();
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut best = None;
    let mut header = [0u8; FRAME_HEADER_BYTES as usize];
    while offset + FRAME_HEADER_BYTES <= len {
        file.read_at(offset, &mut header)?;
        let (payload_bytes, crc, seq) = decode_header(&header);
        let frame = frame_bytes(payload_bytes as usize);
        if payload_bytes > 0 && payload_bytes as usize <= record_bytes_max && offset + frame <= len
        {
            let mut payload = vec![0u8; payload_bytes as usize];
            file.read_at(offset + FRAME_HEADER_BYTES, &mut payload)?;
            if frame_crc(payload_bytes, seq, &payload) == crc {
                best = Some(best.map_or(seq, |b: u64| b.max(seq)));
                offset += frame;
                continue;
            }
        }
        offset += FRAME_ALIGN_BYTES;
    }
    Ok(best)
}

/// Writes zeros over `from..to` and syncs.
fn zero_range(file: &dyn crate::medium::MediumFile, from: u64, to: u64) -> std::io::Result<()> {
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
        || name == crate::log::LOCK_FILE_NAME
}
