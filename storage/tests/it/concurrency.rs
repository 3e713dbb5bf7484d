//! Concurrency: several threads append (each waiting for durability through group commit)
//! while readers iterate the log from the start over and over. Proves that no seq is lost or
//! duplicated, that every reader sees a contiguous, CRC-valid prefix of durable records only,
//! and that group commit shares syncs (fewer syncs than appends is asserted loosely: at least
//! one sync served more than one appender).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use edgecap_storage::{Event, Kind, Log, LogOptions, OnFull, Value};

#[test]
fn appenders_and_readers_agree() {
    const WRITERS: u64 = 4;
    const EVENTS_PER_WRITER: u64 = 1500;
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: 64 * 1024,
        disk_bytes_max: 256 * 1024 * 1024,
        on_full: OnFull::Reject,
        record_bytes_max: 1024,
    };
    let (log, _) = Log::open(dir.path(), options).unwrap();
    let done = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..2)
        .map(|_| {
            let log = log.clone();
            let done = done.clone();
            thread::spawn(move || {
                let mut passes = 0u64;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let mut expected = 1;
                    for item in log.reader(1) {
                        let event = item.expect("reader met a bad record");
                        assert_eq!(event.seq, expected, "reader saw a gap or a duplicate");
                        assert!(
                            event.seq <= log.durable_seq(),
                            "reader saw a non-durable record"
                        );
                        expected += 1;
                    }
                    passes += 1;
                    if finished {
                        return (passes, expected - 1);
                    }
                }
            })
        })
        .collect();

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let log = log.clone();
            thread::spawn(move || {
                let mut seqs = Vec::new();
                for i in 0..EVENTS_PER_WRITER {
                    let value = Value::Object(vec![
                        ("writer".into(), Value::UInt(w)),
                        ("i".into(), Value::UInt(i)),
                    ]);
                    let event = Event::new(Kind::Sensor, &format!("w{w}"), value).unwrap();
                    let seq = log.append(event).unwrap();
                    log.sync_through(seq).unwrap();
                    assert!(log.durable_seq() >= seq);
                    seqs.push((seq, i));
                }
                seqs
            })
        })
        .collect();

    let mut by_seq = BTreeMap::new();
    for (w, handle) in writers.into_iter().enumerate() {
        for (seq, i) in handle.join().unwrap() {
            assert!(
                by_seq.insert(seq, (w as u64, i)).is_none(),
                "seq {seq} given twice"
            );
        }
    }
    done.store(true, Ordering::Release);
    for handle in readers {
        let (passes, last) = handle.join().unwrap();
        assert!(passes >= 1);
        assert_eq!(last, WRITERS * EVENTS_PER_WRITER);
    }
    let total = WRITERS * EVENTS_PER_WRITER;
    let syncs = log.stats().syncs;
    println!("{total} appends made durable by {syncs} syncs");
    assert!(syncs < total, "group commit never shared a sync");
    assert_eq!(by_seq.len() as u64, total);
    assert_eq!(*by_seq.keys().next().unwrap(), 1);
    assert_eq!(*by_seq.keys().last().unwrap(), total);
    // Every stored event is the one its writer was told about.
    for item in log.reader(1) {
        let event = item.unwrap();
        let (w, i) = by_seq[&event.seq];
        assert_eq!(event.source.as_str(), format!("w{w}"));
        assert_eq!(
            event.value,
            Value::Object(vec![
                ("writer".into(), Value::UInt(w)),
                ("i".into(), Value::UInt(i))
            ])
        );
    }
}
