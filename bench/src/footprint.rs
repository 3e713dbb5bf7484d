//! What the daemon costs a device: bytes written per event byte at a steady 1,000 events/s
//! (edgecap against SQLite FULL), anonymous RSS, idle wake-ups; and recovery: open after an
//! unclean stop of a large log, `verify` speed, `state` replay speed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgecap_storage::Log;

use crate::broker::{free_port, Mosquitto};
use crate::daemon::{
    ack_latencies, context_switches, device_bytes_written, rss_anon_kib, switches_between, Daemon,
};
use crate::report::{thousands, Report};
use crate::scratch::ScratchFs;
use crate::storage::{fresh_dir, log_options, probe_event, probe_payload};
use crate::Scale;

const STEADY_PER_S: u64 = 1_000;

pub fn write_amplification(report: &mut Report, scale: &Scale, root: &Path) {
    let events = STEADY_PER_S * scale.steady_secs;
    let event_bytes = (events * probe_payload().len() as u64) as f64;
    let (edgecap, rss, by) = on_own_device(root, "scratch-edgecap", |data| {
        edgecap_steady(root, data, "always", events)
    });
    let (interval, _, _) = on_own_device(root, "scratch-interval", |data| {
        edgecap_steady(root, data, "interval", events)
    });
    let (sqlite, (), _) = on_own_device(root, "scratch-sqlite", |data| sqlite_steady(data, events));
    report.figure("anon_rss_kib", rss as f64);
    report.row(
        "footprint",
        "edgecap run: anonymous RSS at 1,000 events/s",
        format!("{rss} KiB"),
        "highest sample; sync = always, forwarding",
    );
    let (Some(edgecap), Some(interval), Some(sqlite)) = (edgecap, interval, sqlite) else {
        eprintln!("footprint: no block device counters here; write amplification not measured");
        return;
    };
    report.figure("write_amp_edgecap", edgecap as f64 / event_bytes);
    report.figure("write_amp_edgecap_interval", interval as f64 / event_bytes);
    report.figure("write_amp_sqlite", sqlite as f64 / event_bytes);
    report.set_text("write_amp_measured_by", by);
    let contenders = [
        ("edgecap, sync = always", "write_amp_edgecap"),
        (
            "edgecap, sync = interval (50 ms)",
            "write_amp_edgecap_interval",
        ),
        ("SQLite WAL FULL, a row per transaction", "write_amp_sqlite"),
    ];
    for (name, key) in contenders {
        let amp = report.get(key).expect("just set");
        report.row(
            "footprint",
            format!("write amplification at 1,000 events/s, {name}"),
            format!("{amp:.1}x"),
            format!("bytes written per 105-byte event; {by}"),
        );
    }
    report.ratio(
        "write_amp_ratio_vs_sqlite",
        "write_amp_edgecap",
        "write_amp_sqlite",
    );
}

/// Runs `contender` with its data directory on a scratch ext4 of its own, so the device's
/// counters see only its writes; without one (not root), on the host disk, whose counters
/// other processes also move. Returns what `contender` returned and how bytes were counted.
fn on_own_device<T>(
    root: &Path,
    name: &str,
    contender: impl FnOnce(&Path) -> (Option<u64>, T),
) -> (Option<u64>, T, &'static str) {
    match ScratchFs::create(root, name, 1 << 30) {
        Ok(scratch) => {
            let (bytes, result) = contender(&scratch.mount.join("data"));
            (
                bytes,
                result,
                "a loop-mounted ext4 of its own: data, metadata and journal",
            )
        }
        Err(why) => {
            eprintln!("footprint: no scratch file system ({why}); counting the host disk's writes");
            let (bytes, result) = contender(&root.join(name));
            (
                bytes,
                result,
                "the host disk's counters (other processes included)",
            )
        }
    }
}

/// Device bytes written between `before` (a reading of `device_bytes_written(dir)`) and now.
fn written_since(dir: &Path, before: Option<u64>) -> Option<u64> {
    Some(device_bytes_written(dir)? - before?)
}

/// The daemon under `sync`, forwarding to a local mosquitto, fed one event at a time at
/// 1,000/s with its data at `data` (start-up, which preallocates a segment, not counted): the
/// device bytes written and the daemon's highest anonymous RSS.
fn edgecap_steady(root: &Path, data: &Path, sync: &str, events: u64) -> (Option<u64>, u64) {
    eprintln!("footprint: edgecap (sync = {sync}) at {STEADY_PER_S} events/s for {events} events");
    let port = free_port();
    let _broker = Mosquitto::start(root, port);
    std::fs::create_dir_all(data).expect("data dir");
    let daemon = Daemon::start_with_data(root, &format!("steady-{sync}"), data, sync, Some(port));
    let (pid, socket) = (daemon.pid(), daemon.socket.clone());
    let before = device_bytes_written(data);
    let producer = std::thread::spawn(move || ack_latencies(&socket, events, STEADY_PER_S));
    let mut rss = rss_anon_kib(pid);
    while !producer.is_finished() {
        // A sample every 100 ms of a run that the producer bounds.
        std::thread::sleep(Duration::from_millis(100));
        rss = rss.max(rss_anon_kib(pid));
    }
    producer.join().expect("producer");
    let written = written_since(data, before);
    daemon.stop();
    (written, rss)
}

/// One `__sqlite-writer` inserting one row per FULL transaction at 1,000/s into a database in
/// `data` (created before the count starts): the device bytes written.
fn sqlite_steady(data: &Path, events: u64) -> (Option<u64>, ()) {
    eprintln!("footprint: SQLite WAL FULL at {STEADY_PER_S} rows/s for {events} rows");
    std::fs::create_dir_all(data).expect("sqlite data dir");
    let db = data.join("steady.db");
    drop(crate::sqlite::open(&db, "FULL"));
    let writer = crate::sqlite::Writer::spawn(&db, events, STEADY_PER_S);
    let before = device_bytes_written(data);
    writer.go();
    writer.wait();
    (written_since(data, before), ())
}

/// Wake-ups per second of an idle daemon, without an upstream and with one connected.
pub fn idle_wakeups(report: &mut Report, scale: &Scale, root: &Path) {
    let port = free_port();
    let _broker = Mosquitto::start(root, port);
    for (key, upstream) in [
        ("idle_wakeups_per_s", None),
        ("idle_wakeups_per_s_upstream", Some(port)),
    ] {
        eprintln!(
            "footprint: idle daemon for {} s (upstream: {})",
            scale.idle_secs,
            upstream.is_some()
        );
        let name = format!("idle-{}", upstream.is_some());
        let _ = std::fs::remove_dir_all(root.join(&name));
        let daemon = Daemon::start(root, &name, "always", upstream);
        // Let start-up work (recovery, connect, first cursor write) finish: a measurement window.
        std::thread::sleep(Duration::from_secs(1));
        let before = context_switches(daemon.pid());
        let start = Instant::now();
        std::thread::sleep(Duration::from_secs(scale.idle_secs));
        let after = context_switches(daemon.pid());
        let per_s = switches_between(&before, &after) as f64 / start.elapsed().as_secs_f64();
        daemon.stop();
        report.figure(key, per_s);
        let what = if upstream.is_some() {
            "idle wake-ups, upstream connected"
        } else {
            "idle wake-ups, no upstream"
        };
        report.row(
            "footprint",
            what,
            format!("{per_s:.1}/s"),
            "context switches of every daemon thread",
        );
    }
}

/// Open after an unclean stop, verify and replay over a log of about `scale.log_bytes`.
pub fn recovery(report: &mut Report, scale: &Scale, root: &Path) {
    let dir = fresh_dir(root, "recovery");
    eprintln!(
        "recovery: filling {} MiB, then SIGKILL mid-append",
        scale.log_bytes >> 20
    );
    fill_and_kill(&dir, scale.log_bytes);
    let cold = drop_caches();
    let start = Instant::now();
    let (log, open_report) = Log::open(&dir, log_options()).expect("open after the kill");
    let open_ms = start.elapsed().as_secs_f64() * 1e3;
    let records = open_report.records;
    report.figure("open_after_crash_ms", open_ms);
    report.figure("recovery_log_bytes", open_report.bytes_scanned as f64);
    let cache = if cold {
        "cold cache"
    } else {
        "warm cache (could not drop it)"
    };
    report.row(
        "recovery",
        format!(
            "open after SIGKILL, {} MiB log, {} records",
            scale.log_bytes >> 20,
            thousands(records as f64)
        ),
        format!("{open_ms:.1} ms"),
        cache,
    );
    drop(log);
    verify(report, &dir, cold);
    replay(report, &dir);
}

fn verify(report: &mut Report, dir: &Path, cold: bool) {
    for (key, drop_first) in [("verify_cold_gb_per_s", true), ("verify_gb_per_s", false)] {
        let cold = drop_first && cold && drop_caches();
        let start = Instant::now();
        let (_, found) = Log::open_read_only(dir, log_options(), &mut |_, _| {}).expect("verify");
        let gb_per_s = found.bytes_scanned as f64 / start.elapsed().as_secs_f64() / 1e9;
        assert!(
            found.is_clean(),
            "the bench log is not clean after its own recovery"
        );
        if drop_first && !cold {
            continue;
        }
        report.figure(key, gb_per_s);
        let what = if drop_first {
            "log verify, cold cache"
        } else {
            "log verify, warm cache"
        };
        report.row(
            "recovery",
            what,
            format!("{gb_per_s:.2} GB/s"),
            format!("{} MiB scanned", found.bytes_scanned >> 20),
        );
    }
}

fn replay(report: &mut Report, dir: &Path) {
    let (log, found) = Log::open_read_only(dir, log_options(), &mut |_, _| {}).expect("open");
    let start = Instant::now();
    let (_, problems) = edgecap::cli::state::rebuild(
        &log,
        dir,
        edgecap::cli::state::Until::Latest,
        &Default::default(),
        false,
    );
    let per_s = crate::stats::rate(found.records, start.elapsed());
    assert!(problems.is_empty(), "replay met problems: {problems:?}");
    report.figure("state_replay_events_per_s", per_s);
    report.row(
        "recovery",
        "state replay (one pass: read, decode, apply)",
        crate::report::per_s(per_s),
        format!("{} events", thousands(found.records as f64)),
    );
}

/// Drops the page cache (root only); whether it could.
fn drop_caches() -> bool {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// A `__fill` child appends until the log holds `bytes`, then keeps appending until SIGKILLed.
fn fill_and_kill(dir: &Path, bytes: u64) {
    let mut command = Command::new(std::env::current_exe().expect("own path"));
    command
        .arg("__fill")
        .arg(dir)
        .arg(bytes.to_string())
        .stdout(Stdio::piped());
    let mut child = crate::daemon::spawn_tied(command);
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("fill result");
    assert_eq!(line.trim(), "filled", "the fill process failed");
    child.kill().expect("SIGKILL the writer");
    child.wait().expect("reap");
}

/// The child's side: `__fill DIR BYTES`.
pub fn fill_main(args: &[String]) -> std::process::ExitCode {
    let [dir, bytes] = args else {
        eprintln!("usage: __fill DIR BYTES");
        return std::process::ExitCode::from(2);
    };
    let bytes: u64 = bytes.parse().expect("BYTES");
    let (log, _) = Log::open(Path::new(dir), log_options()).expect("open the fill log");
    let event = probe_event();
    let mut told = false;
    // Bounded: the parent kills this process once told; on its own it stops at twice the size.
    for i in 0u64.. {
        let seq = log.append(event.clone()).expect("append");
        if i % 256 == 255 {
            log.sync_through(seq).expect("sync");
            let disk = log.stats().disk_bytes;
            if !told && disk >= bytes {
                println!("filled");
                told = true;
            }
            assert!(
                disk < 2 * bytes + (64 << 20),
                "the parent never killed the fill process"
            );
        }
    }
    unreachable!()
}
