//! The storage contenders, in this process, on the same file system: edgecap's `Log`
//! (`append` + `sync_through`) at sync batches of 1, 16 and 256 and with 1 to 64 threads each
//! syncing per event; a plain file (`pwrite` of the same frame bytes + `fdatasync` per batch,
//! into a preallocated file as edgecap's segments are: one `pwrite` per event, and one per
//! batch like edgecap's write-behind buffer); and the floor: one 4 KiB
//! `pwrite` + `fdatasync`, and CRC32 and memcpy speed. SQLite is in `sqlite.rs`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use edgecap_storage::{Event, Kind, Log, LogOptions, OnFull, Value};

use crate::stats::{percentile_us, rate};

/// The event every contender stores: a sensor reading whose postcard encoding is the 105-byte
/// payload SQLite gets as a BLOB, and whose frame on disk is 128 bytes.
pub fn probe_event() -> Event {
    Event::new(Kind::Sensor, "temp0", Value::String("x".repeat(76))).expect("a valid event")
}

/// The encoded payload of the probe event (what SQLite stores), with a seq like a real one.
pub fn probe_payload() -> Vec<u8> {
    let event = Event {
        seq: 1,
        ..probe_event()
    };
    postcard::to_stdvec(&event).expect("the probe encodes")
}

pub fn frame_bytes() -> usize {
    edgecap_storage::record::frame_bytes(probe_payload().len()) as usize
}

/// A fresh, empty directory `name` under `root`.
pub fn fresh_dir(root: &Path, name: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

pub fn log_options() -> LogOptions {
    LogOptions {
        segment_bytes: 16 << 20,
        disk_bytes_max: 4 << 30,
        on_full: OnFull::Reject,
        ..LogOptions::default()
    }
}

/// Events/s of `Log::append` with a `sync_through` every `batch` events.
pub fn edgecap_batch(root: &Path, events: u64, batch: u64) -> f64 {
    let dir = fresh_dir(root, "edgecap-batch");
    let (log, _) = Log::open(&dir, log_options()).expect("open the bench log");
    let event = probe_event();
    let start = Instant::now();
    for i in 0..events {
        let seq = log.append(event.clone()).expect("append");
        if (i + 1) % batch == 0 {
            log.sync_through(seq).expect("sync");
        }
    }
    log.sync().expect("sync");
    rate(events, start.elapsed())
}

/// Events/s and events per fdatasync of `threads` threads, each appending and calling
/// `sync_through` on its own event, `events` in all: what a server with one client per thread
/// gets from group commit.
pub fn edgecap_threads(root: &Path, threads: u64, events: u64) -> (f64, f64) {
    let dir = fresh_dir(root, "edgecap-threads");
    let (log, _) = Log::open(&dir, log_options()).expect("open the bench log");
    let per_thread = (events / threads).max(1);
    let barrier = Arc::new(Barrier::new(threads as usize + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (log, barrier) = (log.clone(), barrier.clone());
            std::thread::spawn(move || {
                let event = probe_event();
                barrier.wait();
                for _ in 0..per_thread {
                    let seq = log.append(event.clone()).expect("append");
                    log.sync_through(seq).expect("sync");
                }
            })
        })
        .collect();
    let syncs_before = log.stats().syncs;
    barrier.wait();
    let start = Instant::now();
    for worker in workers {
        worker.join().expect("a bench thread panicked");
    }
    let elapsed = start.elapsed();
    let total = per_thread * threads;
    let syncs = log.stats().syncs - syncs_before;
    assert!(syncs > 0, "nothing was synced");
    (rate(total, elapsed), total as f64 / syncs as f64)
}

/// A preallocated, synced file of `bytes` zeroes.
fn preallocated(path: &Path, bytes: u64) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0;
    while written < bytes {
        let n = chunk.len().min((bytes - written) as usize);
        file.write_all_at(&chunk[..n], written)
            .expect("preallocate");
        written += n as u64;
    }
    file.sync_all().expect("sync the preallocated file");
    file
}

/// Events/s of the plain file: one `pwrite` of a frame per event, `fdatasync` per batch.
pub fn plain_batch(root: &Path, events: u64, batch: u64) -> f64 {
    let dir = fresh_dir(root, "plain");
    let frame = vec![7u8; frame_bytes()];
    let file = preallocated(&dir.join("plain"), events * frame.len() as u64);
    let start = Instant::now();
    for i in 0..events {
        file.write_all_at(&frame, i * frame.len() as u64)
            .expect("pwrite");
        if (i + 1) % batch == 0 {
            file.sync_data().expect("fdatasync");
        }
    }
    file.sync_data().expect("fdatasync");
    rate(events, start.elapsed())
}

/// Events/s of the plain file written the way edgecap writes: the frames of a batch gathered
/// in memory, one `pwrite` and one `fdatasync` per batch.
pub fn plain_buffered_batch(root: &Path, events: u64, batch: u64) -> f64 {
    let dir = fresh_dir(root, "plain-buffered");
    let frame = vec![7u8; frame_bytes()];
    let file = preallocated(&dir.join("plain"), events * frame.len() as u64);
    let mut buffer = Vec::with_capacity(frame.len() * batch as usize);
    let mut offset = 0;
    let start = Instant::now();
    for i in 0..events {
        buffer.extend_from_slice(&frame);
        if (i + 1) % batch == 0 || i + 1 == events {
            file.write_all_at(&buffer, offset).expect("pwrite");
            file.sync_data().expect("fdatasync");
            offset += buffer.len() as u64;
            buffer.clear();
        }
    }
    rate(events, start.elapsed())
}

/// p50 and p99 (µs) of one 4 KiB `pwrite` + `fdatasync` over a preallocated file: the floor of
/// any durable write on this disk.
pub fn floor(root: &Path, rounds: usize) -> (f64, f64) {
    let dir = fresh_dir(root, "floor");
    let file = preallocated(&dir.join("page"), 1 << 20);
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|i| {
            let page = vec![(i % 251) as u8 + 1; 4096];
            let start = Instant::now();
            file.write_all_at(&page, (i as u64 % 256) * 4096)
                .expect("pwrite");
            file.sync_data().expect("fdatasync");
            start.elapsed()
        })
        .collect();
    (
        percentile_us(&mut samples, 0.5),
        percentile_us(&mut samples, 0.99),
    )
}

/// GB/s of crc32fast and of memcpy over 16 MiB in memory.
pub fn crc_and_memcpy(bytes: u64) -> (f64, f64) {
    let source = vec![0x5au8; 16 << 20];
    let mut target = vec![0u8; source.len()];
    let rounds = (bytes / source.len() as u64).max(1);
    let start = Instant::now();
    let mut crc = 0u32;
    for _ in 0..rounds {
        crc ^= crc32fast::hash(&source);
    }
    let crc_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for round in 0..rounds {
        target.copy_from_slice(&source);
        target[round as usize % 4096] ^= 1;
    }
    let copy_secs = start.elapsed().as_secs_f64();
    std::hint::black_box((crc, &target));
    let total = (rounds * source.len() as u64) as f64;
    (total / crc_secs / 1e9, total / copy_secs / 1e9)
}
