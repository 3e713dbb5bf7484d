//! Replay benchmark (a bench binary, not a timed test): how fast the projection is rebuilt
//! from the log, and what snapshots buy on a long log.
//!
//! Builds a log of `EDGECAP_REPLAY_EVENTS` events (default 10,000,000; sensors with numbers,
//! some commands) with the storage crate, then prints:
//! - the raw read rate (Reader only: CRC + decode) as the baseline;
//! - the replay rate (Reader + `State::apply`) and its ratio to the baseline;
//! - the time of `edgecap state`'s rebuild for the latest state without snapshots and with a
//!   snapshot 100,000 events back (the daemon writes one every 100,000).
//!
//! Run: `cargo bench -p edgecap --bench replay` (data under `target/bench-data`, about 1.3 GB
//! for 10 M events; removed afterwards).

use std::path::PathBuf;
use std::time::Instant;

use edgecap::cli::state::{corrections, rebuild, Until};
use edgecap::project::State;
use edgecap::snapshot;
use edgecap_storage::{Event, Kind, Log, LogOptions, OnFull, Value};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let events: u64 = std::env::var("EDGECAP_REPLAY_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data/replay");
    let _ = std::fs::remove_dir_all(&dir);
    let options = LogOptions {
        segment_bytes: 64 << 20,
        disk_bytes_max: 64 << 30,
        on_full: OnFull::Reject,
        ..LogOptions::default()
    };
    let start = Instant::now();
    {
        let (log, _) = Log::open(&dir, options.clone()).unwrap();
        for i in 0..events {
            let (kind, source, value) = if i % 100 == 99 {
                (Kind::Command, "valve", Value::String("open".into()))
            } else {
                (
                    Kind::Sensor,
                    ["temp0", "temp1", "hum0", "press0"][(i % 4) as usize],
                    Value::Float(i as f64 * 0.01),
                )
            };
            let mut event = Event::new(kind, source, value).unwrap();
            event.wall_ms = 1_795_662_000_000 + i as i64;
            event.mono_ms = i;
            log.append(event).unwrap();
            if i % 100_000 == 99_999 {
                log.sync().unwrap();
            }
        }
        log.sync().unwrap();
    }
    println!(
        "replay: built a log of {events} events in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    let (log, _) = Log::open_read_only(&dir, options, &mut |_, _| {}).unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    for item in log.reader(1) {
        item.unwrap();
        n += 1;
    }
    let read_secs = start.elapsed().as_secs_f64();
    println!(
        "  read only (baseline): {n} events in {read_secs:.2} s = {:.0} events/s",
        n as f64 / read_secs
    );

    let start = Instant::now();
    let mut state = State::default();
    for item in log.reader(1) {
        state.apply(&item.unwrap());
    }
    let replay_secs = start.elapsed().as_secs_f64();
    println!(
        "  replay (read + apply): {:.2} s = {:.0} events/s (ratio to read only {:.2})",
        replay_secs,
        events as f64 / replay_secs,
        read_secs / replay_secs
    );

    let steps = corrections(&log, &dir);
    let start = Instant::now();
    let (latest, _) = rebuild(&log, &dir, Until::Latest, &steps, false);
    let without = start.elapsed().as_secs_f64();
    assert_eq!(latest, state);

    // A snapshot 100,000 events back, as the daemon would have written.
    let mut at = State::default();
    let back = events.saturating_sub(100_000);
    for item in log.reader(1) {
        let event = item.unwrap();
        if event.seq > back {
            break;
        }
        at.apply(&event);
    }
    snapshot::write(&dir, &at).unwrap();
    let start = Instant::now();
    let (from_snapshot, _) = rebuild(&log, &dir, Until::Latest, &steps, false);
    let with = start.elapsed().as_secs_f64();
    assert_eq!(from_snapshot, state);
    println!(
        "  state (latest) on {events} events: {without:.2} s without snapshots, {:.3} s from a snapshot at seq {back} ({:.0}x faster)",
        with,
        without / with
    );
    let _ = std::fs::remove_dir_all(&dir);
}
