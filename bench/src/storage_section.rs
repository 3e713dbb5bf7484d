//! The storage and ingest sections: each contender's rounds interleaved with the others', the
//! median kept, ratios taken within the run.

use std::path::Path;

use crate::daemon::{ack_latencies, produce, Daemon};
use crate::report::{per_s, Report};
use crate::stats::{median, percentile_us, rate};
use crate::storage::{self, fresh_dir};
use crate::{sqlite, Scale};

const BATCHES: [u64; 3] = [1, 16, 256];
const THREADS: [u64; 4] = [1, 4, 16, 64];

/// `rounds` measurements of each named contender, one of each per round.
fn interleaved(
    rounds: usize,
    contenders: &mut [(String, &mut dyn FnMut() -> f64)],
) -> Vec<(String, f64)> {
    let mut samples = vec![Vec::new(); contenders.len()];
    for round in 0..rounds {
        for (i, (name, measure)) in contenders.iter_mut().enumerate() {
            eprintln!("storage: {name}, round {}/{rounds}", round + 1);
            samples[i].push(measure());
        }
    }
    contenders
        .iter()
        .map(|(name, _)| name.clone())
        .zip(samples.into_iter().map(median))
        .collect()
}

pub fn run(report: &mut Report, scale: &Scale, root: &Path) {
    floor(report, root);
    for batch in BATCHES {
        batch_contenders(report, scale, root, batch);
    }
    let ratios = [
        (
            "ratio_vs_sqlite_full",
            "edgecap_batch256_per_s",
            "sqlite_full_batch256_per_s",
        ),
        (
            "ratio_vs_sqlite_full_batch1",
            "edgecap_batch1_per_s",
            "sqlite_full_batch1_per_s",
        ),
        (
            "ratio_vs_sqlite_full_batch16",
            "edgecap_batch16_per_s",
            "sqlite_full_batch16_per_s",
        ),
    ];
    for (name, numerator, denominator) in ratios {
        report.ratio(name, numerator, denominator);
    }
    for batch in BATCHES {
        let edgecap = format!("edgecap_batch{batch}_per_s");
        for plain in ["plain", "plain_buffered"] {
            report.ratio(
                &format!("ratio_vs_{plain}_batch{batch}"),
                &edgecap,
                &format!("{plain}_batch{batch}_per_s"),
            );
        }
    }
    for threads in THREADS {
        thread_contenders(report, scale, root, threads);
    }
    report.ratio(
        "ratio_64_threads_vs_batch1",
        "edgecap_threads64_per_s",
        "edgecap_batch1_per_s",
    );
}

fn floor(report: &mut Report, root: &Path) {
    let (p50, p99) = storage::floor(root, 300);
    report.figure("fdatasync_p50_us", p50);
    report.figure("fdatasync_p99_us", p99);
    report.row(
        "storage",
        "floor: 4 KiB pwrite + fdatasync",
        format!("p50 {p50:.0} µs"),
        format!("p99 {p99:.0} µs"),
    );
    let (crc, copy) = storage::crc_and_memcpy(1 << 30);
    report.figure("crc32_gb_per_s", crc);
    report.figure("memcpy_gb_per_s", copy);
    report.row(
        "storage",
        "floor: crc32fast / memcpy in memory",
        format!("{crc:.1} GB/s"),
        format!("memcpy {copy:.1} GB/s"),
    );
}

fn batch_contenders(report: &mut Report, scale: &Scale, root: &Path, batch: u64) {
    let events = if batch == 1 {
        scale.batch1_events
    } else {
        scale.batched_events
    };
    let sqlite_dir = |name: &str| fresh_dir(root, name);
    let mut edgecap = || storage::edgecap_batch(root, events, batch);
    let mut full = || sqlite::batch(&sqlite_dir("sqlite-full"), events, batch, "FULL");
    let mut normal = || sqlite::batch(&sqlite_dir("sqlite-normal"), events, batch, "NORMAL");
    let mut plain = || storage::plain_batch(root, events, batch);
    let mut plain_buffered = || storage::plain_buffered_batch(root, events, batch);
    let results = interleaved(
        scale.rounds,
        &mut [
            (format!("edgecap batch {batch}"), &mut edgecap),
            (format!("SQLite WAL FULL batch {batch}"), &mut full),
            (format!("SQLite WAL NORMAL batch {batch}"), &mut normal),
            (format!("plain pwrite+fdatasync batch {batch}"), &mut plain),
            (
                format!("plain, one pwrite per batch, batch {batch}"),
                &mut plain_buffered,
            ),
        ],
    );
    let keys = [
        "edgecap",
        "sqlite_full",
        "sqlite_normal",
        "plain",
        "plain_buffered",
    ];
    let edgecap_rate = results[0].1;
    for ((what, value), key) in results.into_iter().zip(keys) {
        report.figure(&format!("{key}_batch{batch}_per_s"), value);
        let note = if key == "edgecap" {
            format!("{events} events of 128 B")
        } else {
            format!("edgecap is {:.2}x", edgecap_rate / value)
        };
        report.row("storage", what, per_s(value), note);
    }
}

fn thread_contenders(report: &mut Report, scale: &Scale, root: &Path, threads: u64) {
    let mut per_sync = Vec::new();
    let mut edgecap = || {
        let (rate, events_per_sync) = storage::edgecap_threads(root, threads, scale.thread_events);
        per_sync.push(events_per_sync);
        rate
    };
    let direct_dir = fresh_dir(root, "sqlite-direct");
    let mut direct =
        || sqlite::direct_processes(&direct_dir, threads, scale.direct_events.max(threads * 4));
    let results = interleaved(
        scale.rounds,
        &mut [
            (
                format!("edgecap, {threads} threads each syncing per event"),
                &mut edgecap,
            ),
            (
                format!("SQLite FULL, {threads} processes, one row per transaction"),
                &mut direct,
            ),
        ],
    );
    let per_sync = median(per_sync);
    report.figure(&format!("edgecap_threads{threads}_per_s"), results[0].1);
    report.figure(&format!("events_per_sync_{threads}_threads"), per_sync);
    report.figure(&format!("sqlite_direct_{threads}_per_s"), results[1].1);
    report.row(
        "storage",
        results[0].0.clone(),
        per_s(results[0].1),
        format!("{per_sync:.1} events per fdatasync"),
    );
    report.row(
        "storage",
        results[1].0.clone(),
        per_s(results[1].1),
        format!("edgecap is {:.2}x", results[0].1 / results[1].1),
    );
}

/// Acked events/s of `edgecap run` (capture only) with 1 to 64 pipelining producers, under
/// `always` and `interval`; the ack latency of one producer at 100 events/s.
pub fn ingest(report: &mut Report, scale: &Scale, root: &Path) {
    for sync in ["always", "interval"] {
        for producers in THREADS {
            let mut rates = Vec::new();
            for round in 0..scale.rounds {
                eprintln!(
                    "ingest: sync = {sync}, {producers} producers, round {}/{}",
                    round + 1,
                    scale.rounds
                );
                let name = format!("ingest-{sync}-{producers}");
                let _ = std::fs::remove_dir_all(root.join(&name));
                let daemon = Daemon::start(root, &name, sync, None);
                rates.push(rate(
                    scale.ingest_events,
                    produce(&daemon.socket, producers, scale.ingest_events),
                ));
                daemon.stop();
            }
            let value = median(rates);
            let key = if sync == "always" {
                format!("ingest_events_per_s_{producers}")
            } else {
                format!("ingest_interval_events_per_s_{producers}")
            };
            report.figure(&key, value);
            report.row(
                "ingest",
                format!("edgecap run, sync = {sync}, {producers} pipelining producers"),
                per_s(value),
                "acked events/s over the socket",
            );
        }
    }
    report.ratio(
        "ratio_ingest_vs_sqlite_direct_16",
        "ingest_events_per_s_16",
        "sqlite_direct_16_per_s",
    );
    if let Some(ratio) = report.get("ratio_ingest_vs_sqlite_direct_16") {
        report.row(
            "ingest",
            "16 producers: edgecap run against 16 SQLite FULL processes",
            format!("{ratio:.1}x"),
            "",
        );
    }
    ack_latency(report, scale, root);
}

fn ack_latency(report: &mut Report, scale: &Scale, root: &Path) {
    eprintln!("ingest: ack latency, one producer at 100 events/s");
    let _ = std::fs::remove_dir_all(root.join("ack"));
    let daemon = Daemon::start(root, "ack", "always", None);
    let mut samples = ack_latencies(&daemon.socket, scale.ack_events, 100);
    daemon.stop();
    let (p50, p99) = (
        percentile_us(&mut samples, 0.5),
        percentile_us(&mut samples, 0.99),
    );
    report.figure("ack_p50_us", p50);
    report.figure("ack_p99_us", p99);
    report.ratio(
        "ratio_ack_p50_vs_fdatasync_p50",
        "ack_p50_us",
        "fdatasync_p50_us",
    );
    let ratio = report
        .get("ratio_ack_p50_vs_fdatasync_p50")
        .unwrap_or(f64::NAN);
    report.row(
        "ingest",
        "ack latency, one producer at 100 events/s, sync = always",
        format!("p50 {p50:.0} µs"),
        format!("p99 {p99:.0} µs; p50 {ratio:.2}x the fdatasync p50"),
    );
}
