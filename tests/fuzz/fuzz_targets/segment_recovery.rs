//! Recovery, `edgecap log verify` and `log dump` over a data directory made of fuzzer bytes:
//! up to three segment (or quarantine, cut, temp) files and a cursor file, laid out as
//! src/lib.rs describes. Whatever the files hold, the read-only open and the reads after it
//! never panic, hang or allocate without bound. With control bit 3, a repairing open follows,
//! and the log it leaves must take an append and read it back.
#![no_main]

use std::path::Path;

use edgecap_fuzz::{read_all, verify_and_dump, DataDir};
use edgecap_storage::{Event, Kind, Log, LogOptions, OnFull, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = DataDir::parse(data);
    let dir = tempfile::tempdir().expect("creating a temp dir");
    input.write(dir.path());
    verify_and_dump(dir.path(), input.bytes());
    if input.repair {
        repair(dir.path(), input.bytes());
    }
});

/// Options of the repairing open: small segments (a new one costs little), no disk budget.
fn repair_options() -> LogOptions {
    LogOptions {
        segment_bytes: 32 * 1024,
        disk_bytes_max: u64::MAX,
        on_full: OnFull::DropOldest,
        record_bytes_max: 4096,
    }
}

/// The daemon's start: a repairing open, a replay, then capture goes on.
fn repair(dir: &Path, bytes: u64) {
    let options = repair_options();
    let (log, report) = match Log::open(dir, options.clone()) {
        Ok(opened) => opened,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = report.problems();
    // The open may have started a segment; the append below may start one more.
    let bytes = bytes + 2 * options.segment_bytes;
    read_all(&log, bytes, |_| {});
    let event = Event::new(Kind::Sensor, "fuzz", Value::Int(7)).expect("a valid event");
    let seq = match log.append(event) {
        Ok(seq) => seq,
        // A CRC-valid frame at exactly SEQ_MAX leaves no seq to hand out: refused, not wrapped.
        Err(edgecap_storage::Error::SeqsExhausted(_)) => return,
        Err(e) => panic!("append after a repairing open: {e}"),
    };
    log.sync_through(seq)
        .unwrap_or_else(|e| panic!("sync after a repairing open: {e}"));
    match log.reader(seq).next() {
        Some(Ok(back)) => assert!(
            back.seq == seq && back.source.as_str() == "fuzz" && back.value == Value::Int(7),
            "appended as seq {seq}, read back as {back:?}"
        ),
        other => panic!("appended as seq {seq}, read back as {other:?}"),
    }
    drop(log);
    // What the repair left is a data directory like any other.
    verify_and_dump(dir, bytes);
}
