//! Finding 8 (issue 8): the whole budget was mapped at open, so a multi-GiB log could not open
//! on a 32-bit device (3 GiB of address space). Maps are now made lazily, on the first hot
//! read, while a process-wide budget allows (1 GiB on 32-bit); past it, reads use `pread`.
//! This test lowers the budget so a small log is "larger than the address space" and proves
//! it opens, reads every record and never maps more than the budget. Its own test binary:
//! the budget is process-wide.

#[path = "it/common.rs"]
mod common;

use common::tiny_options;
use edgecap_storage::medium::{mapped_bytes, set_map_budget};
use edgecap_storage::{Event, Kind, Log, LogOptions, Value};
use tempfile::TempDir;

/// The map budget and the mapped-bytes count are process-wide: these tests run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn log_larger_than_the_map_budget_opens_and_reads_everything() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = TempDir::new().unwrap();
    let options = LogOptions {
        disk_bytes_max: tiny_options().segment_bytes * 40,
        ..tiny_options()
    };
    let (log, _) = Log::open(tmp.path(), options.clone()).unwrap();
    for i in 0..1500u64 {
        let e = Event::new(Kind::Sensor, "t", Value::UInt(i)).unwrap();
        log.append(e).unwrap();
    }
    log.sync().unwrap();
    let segments = log.stats().segments as u64;
    assert!(segments >= 10, "only {segments} segments");
    drop(log);

    let budget = 3 * options.segment_bytes;
    set_map_budget(budget);
    let (log, report) = Log::open(tmp.path(), options).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems());
    assert_eq!(
        mapped_bytes(),
        0,
        "recovery reads with pread and maps nothing"
    );
    let mut seqs = 0u64;
    for item in log.reader(1) {
        item.expect("readable past the map budget");
        seqs += 1;
        assert!(mapped_bytes() <= budget, "{} mapped", mapped_bytes());
    }
    assert_eq!(seqs, 1500);
    assert!(
        mapped_bytes() > 0,
        "hot reads still use maps within the budget"
    );
}

/// Writes a sealed 1 GiB v2 segment as a sparse file: header, `count` frames from `first_seq`,
/// holes, and a seal. Returns the events.
fn sparse_sealed_segment(dir: &std::path::Path, first_seq: u64, count: u64) -> Vec<Event> {
    use edgecap_storage::limits::{SEGMENT_BYTES_MAX, SEGMENT_DATA_START};
    use edgecap_storage::record::encode_frame;
    use edgecap_storage::segment::{segment_name, SegmentHeader, FORMAT_VERSION};
    use edgecap_storage::tail::{encode_seal, slot_offset};
    use std::os::unix::fs::FileExt;
    let header = SegmentHeader {
        version: FORMAT_VERSION,
        first_seq,
        segment_bytes: SEGMENT_BYTES_MAX,
        created_wall_ms: 1,
        unsynced_window_bytes: 0,
    };
    let mut frames = Vec::new();
    let mut events = Vec::new();
    for seq in first_seq..first_seq + count {
        let mut e = Event::new(Kind::Sensor, "t", Value::UInt(seq)).unwrap();
        e.seq = seq;
        encode_frame(seq, &postcard::to_stdvec(&e).unwrap(), &mut frames);
        events.push(e);
    }
    let file = std::fs::File::create(dir.join(segment_name(first_seq))).unwrap();
    file.set_len(SEGMENT_BYTES_MAX).unwrap();
    file.write_all_at(&header.encode(), 0).unwrap();
    file.write_all_at(&frames, SEGMENT_DATA_START).unwrap();
    let end = SEGMENT_DATA_START + frames.len() as u64;
    let seal = encode_seal(1, first_seq + count - 1, end);
    file.write_all_at(&seal, slot_offset(SEGMENT_BYTES_MAX, 1))
        .unwrap();
    events
}

// Issue 8, finding 8, at full size: an 8 GiB log (eight sealed 1 GiB segments, sparse, and a
// small active one) opens and reads from every segment. `cross/test-qemu.sh` runs this on
// armv7, where the old open mapped every segment and failed for want of address space.
#[test]
fn an_8_gib_log_opens_and_reads_within_a_32_bit_address_space() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = TempDir::new().unwrap();
    let mut events = Vec::new();
    for i in 0..8u64 {
        events.extend(sparse_sealed_segment(tmp.path(), 1 + i * 100, 100));
    }
    let options = LogOptions {
        disk_bytes_max: 10 << 30,
        ..tiny_options()
    };
    let (log, report) = Log::open(tmp.path(), options).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems());
    assert_eq!(report.segments, 8);
    assert_eq!(report.records, 800);
    assert!(report.bytes_scanned >= 8 << 30);
    // Appends go to a new (small) segment after the last sealed one.
    let next = Event::new(Kind::Sensor, "t", Value::UInt(801)).unwrap();
    assert_eq!(log.append(next).unwrap(), 801);
    log.sync().unwrap();
    for from in [1, 250, 799] {
        let got = log.reader(from).next().unwrap().unwrap();
        assert_eq!(got, events[from as usize - 1]);
    }
    assert_eq!(log.reader(1).count(), 801);
    assert!(mapped_bytes() < 1 << 20, "{} bytes mapped", mapped_bytes());
}
