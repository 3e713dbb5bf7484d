//! Finding 8 (issue 8): the whole budget was mapped at open, so a multi-GiB log could not open
//! on a 32-bit device (3 GiB of address space). Maps are now made lazily, on the first hot
//! read, while a process-wide budget allows (1 GiB on 32-bit); past it, reads use `pread`.
//! This test lowers the budget so a small log is "larger than the address space" and proves
//! it opens, reads every record and never maps more than the budget. Its own test binary:
//! the budget is process-wide.

mod common;

use common::tiny_options;
use edgecap_storage::medium::{mapped_bytes, set_map_budget};
use edgecap_storage::{Event, Kind, Log, LogOptions, Value};
use tempfile::TempDir;

#[test]
fn log_larger_than_the_map_budget_opens_and_reads_everything() {
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
