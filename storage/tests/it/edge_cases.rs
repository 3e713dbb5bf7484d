//! Edge cases of the log's public API: proves that the boundaries behave exactly as documented
//! — an empty log, the smallest values, a record of exactly `record_bytes_max` bytes and one
//! byte over, a missing directory, a second writer, a failed sync, an over-long source.
//!
//! How: real data directories in a `tempfile::TempDir` (the simulated medium only where a sync
//! must fail on demand), asserting exact return values, errors, counters and recovery reports.

use std::sync::Arc;

use crate::common::tiny_options;
use edgecap_storage::{Error, Event, Kind, Log, LogStats, RecoveryReport, SimMedium, Value};
use tempfile::TempDir;

fn read_all(log: &Log) -> Vec<Event> {
    log.reader(1)
        .map(|item| item.expect("no read error"))
        .collect()
}

fn verify(dir: &std::path::Path) -> RecoveryReport {
    Log::open_read_only(dir, tiny_options(), &mut |_, _| {})
        .expect("read-only open")
        .1
}

#[test]
fn empty_log_reads_nothing_and_verifies_clean() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let (log, report) = Log::open(dir, tiny_options()).unwrap();
    assert_eq!(
        report,
        RecoveryReport {
            repaired: true,
            next_seq: 1,
            ..RecoveryReport::default()
        }
    );
    assert!(read_all(&log).is_empty());
    assert_eq!(log.reader(1).next_seq(), 1);
    assert_eq!(log.sync().unwrap(), 0);
    assert_eq!(
        log.stats(),
        LogStats {
            appended_seq: 0,
            durable_seq: 0,
            first_seq: 1,
            segments: 1,
            disk_bytes: 24 * 1024,
            dropped_events: 0,
            syncs: 0,
            poisoned: None,
        }
    );
    assert_eq!(log.cursors(), []);
    drop(log);

    let clean = RecoveryReport {
        segments: 1,
        next_seq: 1,
        bytes_scanned: 24 * 1024,
        ..RecoveryReport::default()
    };
    let (log, report) = Log::open_read_only(dir, tiny_options(), &mut |_, _| {}).unwrap();
    assert_eq!(report, clean);
    assert!(report.is_clean());
    assert!(read_all(&log).is_empty());
    assert_eq!(log.stats().segments, 1);
    drop(log);

    // Reopening an empty log for writing neither adds a segment nor moves the seq.
    let (log, report) = Log::open(dir, tiny_options()).unwrap();
    assert_eq!(
        report,
        RecoveryReport {
            repaired: true,
            ..clean
        }
    );
    assert_eq!(log.stats().segments, 1);
    let event = Event::new(Kind::Sensor, "s", Value::Null).unwrap();
    assert_eq!(log.append(event).unwrap(), 1);
}

#[test]
fn null_and_empty_string_values_round_trip() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let (log, _) = Log::open(dir, tiny_options()).unwrap();
    let mut expected = Vec::new();
    for value in [Value::Null, Value::String(String::new())] {
        let mut event = Event::new(Kind::Sensor, "s", value).unwrap();
        event.seq = log.append(event.clone()).unwrap();
        expected.push(event);
    }
    assert_eq!(log.sync().unwrap(), 2);
    assert_eq!(read_all(&log), expected);
    drop(log);

    assert!(verify(dir).is_clean());
    let (log, report) = Log::open(dir, tiny_options()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems());
    assert_eq!(read_all(&log), expected);
    assert_eq!(expected[0].value, Value::Null);
    assert_eq!(expected[1].value, Value::String(String::new()));
}

/// An event whose encoding, with `seq`, is exactly `bytes` long.
fn event_encoding_to(seq: u64, bytes: usize) -> Event {
    for fill in 0..bytes {
        let mut event = Event::new(Kind::Sensor, "big", Value::String("y".repeat(fill))).unwrap();
        event.seq = seq;
        let len = postcard::to_stdvec(&event).unwrap().len();
        if len == bytes {
            return event;
        }
        assert!(len < bytes, "no string length encodes to {bytes} bytes");
    }
    unreachable!();
}

#[test]
fn record_of_exactly_record_bytes_max_fits_and_one_byte_more_is_refused() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let options = tiny_options();
    let limit = options.record_bytes_max;
    let (log, _) = Log::open(dir, options).unwrap();

    let exact = event_encoding_to(1, limit);
    assert_eq!(log.append(exact.clone()).unwrap(), 1);

    let over = event_encoding_to(2, limit + 1);
    match log.append(over) {
        Err(Error::RecordTooLarge { bytes, limit: l }) => {
            assert_eq!((bytes, l), (limit + 1, limit))
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert_eq!(log.appended_seq(), 1, "a refused record stores nothing");

    let small = Event::new(Kind::Sensor, "s", Value::Bool(true)).unwrap();
    assert_eq!(log.append(small.clone()).unwrap(), 2);
    log.sync().unwrap();
    let expected = vec![exact, Event { seq: 2, ..small }];
    assert_eq!(read_all(&log), expected);
    drop(log);

    assert!(verify(dir).is_clean());
    let (log, report) = Log::open(dir, tiny_options()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems());
    assert_eq!(report.records, 2);
    assert_eq!(read_all(&log), expected);
}

#[test]
fn missing_directory_is_created_by_open_and_refused_by_read_only_open() {
    let tmp = TempDir::new().unwrap();
    let missing = tmp.path().join("a").join("b");
    match Log::open_read_only(&missing, tiny_options(), &mut |_, _| {}) {
        Err(Error::NotADataDir(path)) => assert_eq!(path, missing),
        other => panic!("expected NotADataDir, got {other:?}"),
    }
    assert!(!missing.exists(), "a read-only open creates nothing");

    // An existing directory with no log files in it is not a data directory either.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(matches!(
        Log::open_read_only(&empty, tiny_options(), &mut |_, _| {}),
        Err(Error::NotADataDir(path)) if path == empty
    ));

    let (log, report) = Log::open(&missing, tiny_options()).unwrap();
    assert!(missing.is_dir());
    assert_eq!(report.next_seq, 1);
    assert_eq!(
        log.append(Event::new(Kind::Sensor, "s", Value::Int(-1)).unwrap())
            .unwrap(),
        1
    );
    drop(log);
    assert!(verify(&missing).is_clean());
}

#[test]
fn second_writer_on_the_same_directory_is_locked_out() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let (log, _) = Log::open(dir, tiny_options()).unwrap();
    let seq = log
        .append(Event::new(Kind::Sensor, "s", Value::Null).unwrap())
        .unwrap();
    log.sync_through(seq).unwrap();

    match Log::open(dir, tiny_options()) {
        Err(Error::Locked(path)) => assert_eq!(path, dir),
        other => panic!("expected Locked, got {other:?}"),
    }
    // A read-only open takes no lock and works beside the writer.
    let (reader, report) = Log::open_read_only(dir, tiny_options(), &mut |_, _| {}).unwrap();
    assert!(report.is_clean());
    assert_eq!(read_all(&reader).len(), 1);
    drop(reader);
    // The writer was not disturbed.
    assert_eq!(
        log.append(Event::new(Kind::Sensor, "s", Value::Null).unwrap())
            .unwrap(),
        2
    );
    log.sync().unwrap();

    drop(log);
    let (log, report) = Log::open(dir, tiny_options()).unwrap();
    assert!(report.is_clean());
    assert_eq!(read_all(&log).len(), 2);
}

#[test]
fn failed_sync_poisons_the_writer_and_reopen_does_not_certify_the_page_cache() {
    let medium = SimMedium::new();
    let (log, _) = Log::open_with_medium(Arc::new(medium.clone()), tiny_options()).unwrap();
    let event = |n: i64| Event::new(Kind::Sensor, "s", Value::Int(n)).unwrap();
    assert_eq!(log.append(event(1)).unwrap(), 1);
    log.sync().unwrap();
    assert_eq!(log.append(event(2)).unwrap(), 2);

    medium.fail_syncs(true);
    let poisoned = |result: Result<_, Error>, what: &str| match result {
        Err(Error::Poisoned(message)) => assert!(
            message.contains("fdatasync of 00000000000000000001.seg failed"),
            "{what}: {message}"
        ),
        other => panic!("{what}: expected Poisoned, got {other:?}"),
    };
    poisoned(log.sync().map(|_| ()), "the failing sync");
    assert_eq!(log.durable_seq(), 1);
    assert!(log.stats().poisoned.is_some());

    // The medium recovers, the writer does not: no retry of a failed sync.
    medium.fail_syncs(false);
    poisoned(log.append(event(3)).map(|_| ()), "append after");
    poisoned(log.sync().map(|_| ()), "sync after");
    poisoned(log.sync_through(2), "sync_through after");
    poisoned(log.set_cursor("forward", 1), "set_cursor after");
    assert_eq!(log.appended_seq(), 2);
    assert_eq!(log.durable_seq(), 1);
    let read: Vec<u64> = read_all(&log).iter().map(|e| e.seq).collect();
    assert_eq!(read, [1], "readers see only what is durable");
    drop(log);

    // Reopening runs recovery on what the medium holds. The failed sync dropped seq 2's dirty
    // sectors (Linux's behaviour: the cache keeps the bytes, clean, the medium never got them),
    // so recovery must write them again before it calls them durable. A power cut right after
    // the reopen then must not lose seq 2.
    let (log, report) = Log::open_with_medium(Arc::new(medium.clone()), tiny_options()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems());
    assert_eq!((report.records, report.next_seq), (2, 3));
    assert_eq!(log.stats().poisoned, None);
    drop(log);
    medium.crash(7);
    let (log, report) = Log::open_with_medium(Arc::new(medium.clone()), tiny_options()).unwrap();
    assert_eq!(
        (report.records, report.next_seq),
        (2, 3),
        "reopen after a failed sync certified the page cache: {:?}",
        report.problems()
    );
    assert_eq!(log.append(event(3)).unwrap(), 3);
    log.sync().unwrap();
    log.set_cursor("forward", 3).unwrap();
    let read: Vec<i64> = read_all(&log)
        .iter()
        .map(|e| match e.value {
            Value::Int(n) => n,
            ref other => panic!("unexpected value {other:?}"),
        })
        .collect();
    assert_eq!(read, [1, 2, 3]);
}

#[test]
fn source_longer_than_64_bytes_is_rejected() {
    let longest = "s".repeat(64);
    let event = Event::new(Kind::Sensor, &longest, Value::Null).unwrap();
    assert_eq!(event.source.as_str(), longest);

    match Event::new(Kind::Sensor, &"s".repeat(65), Value::Null) {
        Err(Error::InvalidField { field, reason }) => {
            assert_eq!(field, "source");
            assert_eq!(reason, "is 65 bytes, at most 64 allowed");
        }
        other => panic!("expected InvalidField, got {other:?}"),
    }
    // Bytes, not characters: 33 two-byte characters are 66 bytes.
    assert!(matches!(
        Event::new(Kind::Sensor, &"é".repeat(33), Value::Null),
        Err(Error::InvalidField {
            field: "source",
            ..
        })
    ));
    assert!(matches!(
        Event::new(Kind::Sensor, "", Value::Null),
        Err(Error::InvalidField {
            field: "source",
            ..
        })
    ));
}

/// Finding: recovery in the same boot as a failed fdatasync read the page cache and called it
/// durable (Linux returns 0 from a new fdatasync once the dirty pages were dropped). Here the
/// unsynced frames span several pages, more than the tail-page copy holds: only rewriting them
/// before the sync keeps them across the power cut that follows.
#[test]
fn reopen_after_failed_sync_rewrites_unsynced_pages_before_calling_them_durable() {
    let options = edgecap_storage::LogOptions {
        segment_bytes: 64 * 1024,
        ..tiny_options()
    };
    let medium = SimMedium::new();
    let (log, _) = Log::open_with_medium(Arc::new(medium.clone()), options.clone()).unwrap();
    let event = |n: u64| Event::new(Kind::Sensor, "s", Value::String(format!("{n:060}"))).unwrap();
    log.append(event(1)).unwrap();
    log.sync().unwrap();
    for n in 2..=120 {
        assert_eq!(log.append(event(n)).unwrap(), n);
    }
    medium.fail_syncs(true);
    assert!(log.sync().is_err());
    drop(log);
    medium.fail_syncs(false);
    let (log, report) = Log::open_with_medium(Arc::new(medium.clone()), options.clone()).unwrap();
    assert_eq!(report.records, 120, "{:?}", report.problems());
    drop(log);
    medium.crash(11);
    let (log, report) = Log::open_with_medium(Arc::new(medium), options).unwrap();
    assert_eq!(
        (report.records, report.tail_cut.as_ref().map(|c| c.bytes)),
        (120, None),
        "records called durable by the reopen were lost: {:?}",
        report.problems()
    );
    assert_eq!(read_all(&log).len(), 120);
}
