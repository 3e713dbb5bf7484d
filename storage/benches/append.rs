//! Storage benchmarks (a bench binary, not a timed test): prints figures and ratios against a
//! baseline measured in the same run on the same file system.
//!
//! - `medium`: one 4 KiB page made durable by store+msync vs pwrite+fdatasync (p50/p99), the
//!   measurement behind the choice of write path (FORMAT.md).
//! - `append`: 128-byte events through `Log::append` + `sync_through` at sync batches of 1, 16
//!   and 256, against a baseline of raw `pwrite` + `fdatasync` of the same bytes.
//! - `verify`: the read-only recovery scan (what `edgecap log verify` does) in GB/s, against
//!   a baseline of plain crc32fast over the same bytes in memory.
//! - `open`: a repairing open of the same 272 MiB log (1 GiB budget), sealed segments taken
//!   from their seals, against the full scan.
//!
//! Run: `cargo bench -p edgecap-storage` (data goes under `target/bench-data`, a real disk, not
//! tmpfs). `EDGECAP_BENCH_EVENTS` scales the append runs (default 20000);
//! `EDGECAP_BENCH_ONLY=append` (a comma list of medium, append, verify) runs only those parts;
//! `EDGECAP_BENCH_ONLY=open_big` (not run by default) times the open of one large segment.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use edgecap_storage::{Event, Kind, Log, LogOptions, OnFull, Value};

fn bench_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-data")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p) as usize]
}

fn medium() {
    let dir = bench_dir("medium");
    let path = dir.join("page");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.write_all_at(&vec![0u8; 1 << 20], 0).unwrap();
    file.sync_all().unwrap();
    let rounds = 300;
    let mut pwrite = Vec::new();
    for i in 0..rounds {
        let page = vec![(i % 251) as u8 + 1; 4096];
        let start = Instant::now();
        file.write_all_at(&page, (i % 256) * 4096).unwrap();
        file.sync_data().unwrap();
        pwrite.push(start.elapsed());
    }
    // SAFETY: a private benchmark file nobody else maps.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file).unwrap() };
    let mut msync = Vec::new();
    for i in 0..rounds {
        let offset = (i % 256) as usize * 4096;
        let start = Instant::now();
        map[offset..offset + 4096].fill((i % 251) as u8 + 2);
        map.flush_range(offset, 4096).unwrap();
        msync.push(start.elapsed());
    }
    let (pw50, pw99) = (percentile(&mut pwrite, 0.5), percentile(&mut pwrite, 0.99));
    let (ms50, ms99) = (percentile(&mut msync, 0.5), percentile(&mut msync, 0.99));
    println!("medium: one 4 KiB page durable, {rounds} rounds");
    println!("  pwrite+fdatasync  p50 {pw50:>9.1?}  p99 {pw99:>9.1?}");
    println!(
        "  store+msync       p50 {ms50:>9.1?}  p99 {ms99:>9.1?}  ({:.2}x the pwrite p50)",
        ms50.as_secs_f64() / pw50.as_secs_f64()
    );
}

fn append(events: u64) {
    let value = Value::String("x".repeat(76));
    let probe = Event::new(Kind::Sensor, "temp0", value.clone()).unwrap();
    let encoded = postcard::to_stdvec(&Event {
        seq: 1,
        ..probe.clone()
    })
    .unwrap()
    .len();
    let frame = edgecap_storage::record::frame_bytes(encoded) as usize;
    println!(
        "append: {events} events of {frame} bytes on disk (payload {encoded} B) per batch size"
    );

    // Baseline: raw pwrite of the same frame bytes + fdatasync per batch, nothing else.
    for batch in [1u64, 16, 256] {
        let dir = bench_dir("baseline");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("raw"))
            .unwrap();
        let total = events * frame as u64;
        file.write_all_at(&vec![0u8; total as usize], 0).unwrap();
        file.sync_all().unwrap();
        let bytes = vec![7u8; frame];
        let start = Instant::now();
        for i in 0..events {
            file.write_all_at(&bytes, i * frame as u64).unwrap();
            if (i + 1) % batch == 0 {
                file.sync_data().unwrap();
            }
        }
        file.sync_data().unwrap();
        let raw = events as f64 / start.elapsed().as_secs_f64();

        let dir = bench_dir("append");
        let options = LogOptions {
            segment_bytes: 16 * 1024 * 1024,
            disk_bytes_max: 1024 * 1024 * 1024,
            on_full: OnFull::Reject,
            ..LogOptions::default()
        };
        let (log, _) = Log::open(&dir, options).unwrap();
        let start = Instant::now();
        for i in 0..events {
            let seq = log.append(probe.clone()).unwrap();
            if (i + 1) % batch == 0 {
                log.sync_through(seq).unwrap();
            }
        }
        log.sync().unwrap();
        let rate = events as f64 / start.elapsed().as_secs_f64();
        println!(
            "  sync batch {batch:>3}: {rate:>10.0} events/s  {:>7.2} MB/s   baseline raw pwrite+fdatasync {raw:>10.0}/s  ratio {:.2}",
            rate * frame as f64 / 1e6,
            rate / raw
        );
    }
}

fn verify() {
    let dir = bench_dir("verify");
    let options = LogOptions {
        segment_bytes: 16 * 1024 * 1024,
        disk_bytes_max: 1024 * 1024 * 1024,
        on_full: OnFull::Reject,
        ..LogOptions::default()
    };
    {
        let (log, _) = Log::open(&dir, options.clone()).unwrap();
        let event = Event::new(Kind::Sensor, "temp0", Value::String("y".repeat(100))).unwrap();
        // About 272 MiB of records by default; EDGECAP_BENCH_VERIFY_RECORDS=6300000 fills
        // about 950 MiB of the 1 GiB budget.
        let records: u64 = std::env::var("EDGECAP_BENCH_VERIFY_RECORDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_800_000);
        for _ in 0..records {
            log.append(event.clone()).unwrap();
        }
        log.sync().unwrap();
    }
    let start = Instant::now();
    let (_, report) = Log::open_read_only(&dir, options.clone(), &mut |_, _| {}).unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    assert!(report.is_clean());
    let gbps = report.bytes_scanned as f64 / elapsed / 1e9;
    // Baseline: CRC alone over the same number of bytes, already in memory.
    let buf = vec![0x5au8; 16 * 1024 * 1024];
    let rounds = (report.bytes_scanned / buf.len() as u64).max(1);
    let start = Instant::now();
    let mut acc = 0u32;
    for _ in 0..rounds {
        acc ^= crc32fast::hash(&buf);
    }
    let crc_gbps = (rounds * buf.len() as u64) as f64 / start.elapsed().as_secs_f64() / 1e9;
    println!(
        "verify: {} records, {:.0} MiB scanned in {:.3} s: {gbps:.2} GB/s; baseline crc32fast alone {crc_gbps:.2} GB/s (ratio {:.2}) [{acc:x}]",
        report.records,
        report.bytes_scanned as f64 / (1 << 20) as f64,
        elapsed,
        gbps / crc_gbps
    );
    open_time(&dir, options);
}

/// `Log::open` (repair mode, what a restart after a power cut runs) on the verify log, against
/// the full scan `verify` does, both from a cold page cache where the machine lets us drop it.
fn open_time(dir: &std::path::Path, options: LogOptions) {
    let drop_caches = || std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
    let cold = drop_caches();
    let start = Instant::now();
    let (_, full) = Log::open_read_only(dir, options.clone(), &mut |_, _| {}).unwrap();
    let scan_secs = start.elapsed().as_secs_f64();
    drop_caches();
    let start = Instant::now();
    let (log, report) = Log::open(dir, options).unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    assert!(report.is_clean() && full.is_clean());
    println!(
        "open: {} segments ({} sealed, taken from their seals), {} records in {:.1} ms ({}); baseline full scan {:.1} ms (ratio {:.3})",
        report.segments,
        report.segments_sealed,
        report.records,
        elapsed * 1e3,
        if cold { "cold cache" } else { "warm cache: could not drop it" },
        scan_secs * 1e3,
        elapsed / scan_secs
    );
    drop(log);
}

/// One segment of `mib` MiB per file, room for two.
fn options_of(mib: u64) -> LogOptions {
    LogOptions {
        segment_bytes: mib * 1024 * 1024,
        disk_bytes_max: 2 * mib * 1024 * 1024,
        on_full: OnFull::Reject,
        record_bytes_max: 1024,
    }
}

/// Open time against the size of the last segment: its frames are scanned, then its
/// zero-filled rest is read to prove no stale bytes follow the end (FORMAT.md, "Measured").
/// One segment of `EDGECAP_BENCH_SEGMENT_MIB` (default 1024, the largest allowed) holding
/// 10,000 events, opened cold.
fn open_big() {
    let mib: u64 = std::env::var("EDGECAP_BENCH_SEGMENT_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let dir = bench_dir("open-big");
    let options = options_of(mib);
    let (log, _) = Log::open(&dir, options.clone()).unwrap();
    for i in 0..10_000u64 {
        log.append(Event::new(Kind::Sensor, "bench", Value::UInt(i)).unwrap())
            .unwrap();
    }
    log.sync().unwrap();
    drop(log);
    let cold = std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
    let start = Instant::now();
    let (log, report) = Log::open(&dir, options).unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    assert!(report.is_clean(), "{:?}", report.problems());
    println!(
        "open_big: one {mib} MiB segment, {} records, opened in {:.1} ms ({})",
        report.records,
        elapsed * 1e3,
        if cold {
            "cold cache"
        } else {
            "warm cache: could not drop it"
        },
    );
    // A torn tail: a garbage page past the end, which the open cuts.
    let end = log.stats().appended_seq;
    drop(log);
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    // Past the last frame (10,000 frames of 48 bytes), inside the unsynced window.
    file.write_all_at(&[0xA5; 4096], 2 * 1024 * 1024).unwrap();
    drop(file);
    let cold = std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
    let start = Instant::now();
    let (log, report) = Log::open(&dir, options_of(mib)).unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    assert!(report.tail_cut.is_some(), "{:?}", report.problems());
    assert_eq!(log.appended_seq(), end);
    println!(
        "open_big: the same with a torn tail to cut, opened in {:.1} ms ({})",
        elapsed * 1e3,
        if cold {
            "cold cache"
        } else {
            "warm cache: could not drop it"
        },
    );
}

fn main() {
    let events = std::env::var("EDGECAP_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    // `cargo test --benches` passes `--bench`-less args; run only under `cargo bench`.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `EDGECAP_BENCH_ONLY=append` (a comma list of medium, append, verify) runs just those.
    let only = std::env::var("EDGECAP_BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only.split(',').any(|p| p == part);
    if run("medium") {
        medium();
    }
    if run("append") {
        append(events);
    }
    if run("verify") {
        verify();
    }
    // Not in the default set: it writes a 1 GiB file.
    if only.split(',').any(|p| p == "open_big") {
        open_big();
    }
    let _ = std::fs::remove_dir_all(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data"),
    );
}
