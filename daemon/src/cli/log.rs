//! `edgecap log dump|verify`: read-only tools over a data directory (safe while the daemon
//! runs: they take no lock and change no byte).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use edgecap_storage::{Error, Event, Log, LogOptions, RecoveryReport};
use indicatif::{ProgressBar, ProgressStyle};

use super::EXIT_INVALID;
use crate::clock::Corrections;
use crate::json::event_json;

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Print stored events as JSON lines, oldest first. Exit: 0, 1 corruption met.
    Dump {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        from: Option<u64>,
        #[arg(long)]
        to: Option<u64>,
    },
    /// Catch-up subscription: stored events from SEQ, then live ones as they become durable.
    /// Exit: 0 on EOF (daemon stopped), 3 unreachable.
    Follow {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        from: Option<u64>,
        #[arg(long, value_parser = ["sensor", "command", "system"])]
        kind: Option<String>,
        #[arg(long)]
        source: Option<String>,
    },
    /// Offline integrity check of every segment and cursor; never modifies anything.
    /// Exit: 0 clean, 1 corruption found, 2 not a data dir.
    Verify {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub fn main(command: LogCommand) -> ExitCode {
    match command {
        LogCommand::Dump { dir, from, to } => dump(&dir, from, to),
        LogCommand::Verify { dir, json } => verify(&dir, json),
        LogCommand::Follow {
            socket,
            from,
            kind,
            source,
        } => super::client::follow(&socket, from, kind, source),
    }
}

/// Options for read-only opens: the segment size comes from the files themselves, so any
/// valid options will do; the record limit is the format's maximum.
fn read_options() -> LogOptions {
    LogOptions {
        segment_bytes: edgecap_storage::limits::SEGMENT_BYTES_MAX,
        disk_bytes_max: u64::MAX,
        ..LogOptions::default()
    }
}

pub(super) fn open(dir: &Path, progress: bool) -> Result<(Log, RecoveryReport), ExitCode> {
    let bar = (progress && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message("scanning");
        bar
    });
    let mut report_progress = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let opened = Log::open_read_only(dir, read_options(), &mut report_progress);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match opened {
        Ok(opened) => Ok(opened),
        Err(Error::NotADataDir(path)) => {
            eprintln!(
                "edgecap: {} is not an edgecap data directory",
                path.display()
            );
            Err(ExitCode::from(EXIT_INVALID))
        }
        Err(e) => {
            eprintln!("edgecap: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

fn dump(dir: &Path, from: Option<u64>, to: Option<u64>) -> ExitCode {
    let (log, report) = match open(dir, false) {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let mut corrupt = !report.damaged.is_empty() || !report.quarantined.is_empty();
    for problem in report
        .problems()
        .into_iter()
        .filter(|p| !p.starts_with("torn tail"))
    {
        eprintln!("edgecap: corruption: {problem}");
    }
    let to = to.unwrap_or(u64::MAX);
    // Clock steps correct the events captured before them: collect them first.
    let corrections = super::state::corrections(&log, dir);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for item in log.reader(from.unwrap_or(1)) {
        match item {
            Ok(event) if event.seq > to => break,
            Ok(event) => {
                let json = dump_json(&event, &corrections);
                if writeln!(out, "{json}").is_err() {
                    return ExitCode::SUCCESS; // stdout closed (e.g. `| head`)
                }
            }
            Err(e) => {
                corrupt = true;
                eprintln!("edgecap: corruption: {e}");
            }
        }
    }
    let _ = out.flush();
    if corrupt {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn verify(dir: &Path, json: bool) -> ExitCode {
    let (log, report) = match open(dir, true) {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    // The scan checked every frame's CRC; decoding every payload checks the rest.
    let mut decode_errors = Vec::new();
    let mut records = 0u64;
    for item in log.reader(1) {
        match item {
            Ok(_) => records += 1,
            Err(e) => decode_errors.push(e.to_string()),
        }
    }
    let mut problems = report.problems();
    problems.extend(decode_errors);
    let clean = problems.is_empty();
    if json {
        let mut value = serde_json::to_value(&report).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("clean".into(), clean.into());
            map.insert("records_decoded".into(), records.into());
            map.insert("problems".into(), problems.clone().into());
        }
        println!("{value}");
    } else {
        println!(
            "{}: {} segments, {} records (seq {}..={}), {} bytes scanned",
            dir.display(),
            report.segments,
            records,
            report.first_seq.unwrap_or(0),
            report.last_seq.unwrap_or(0),
            report.bytes_scanned
        );
        for cursor in &report.cursors {
            println!("cursor {} = {}", cursor.name, cursor.seq);
        }
        if let Some(front) = report.front_gap {
            println!(
                "front gap (released or dropped by retention): seqs {}..={}",
                front.from, front.to
            );
        }
        for gap in &report.gaps {
            println!(
                "gap (not corruption): seqs {}..={} not stored",
                gap.from, gap.to
            );
        }
        if report.v1_segments > 0 {
            println!(
                "{} segments in format v1: read, never appended to",
                report.v1_segments
            );
        }
        for warning in &report.warnings {
            println!("WARNING: {warning}");
        }
        for problem in &problems {
            println!("CORRUPTION: {problem}");
        }
        println!("{}", if clean { "clean" } else { "corruption found" });
    }
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A stored event as `log dump` prints it: `ts` corrected for the clock steps recorded after
/// its capture (the captured one kept as `ts_captured` when they differ) and `ts_trusted`.
pub fn dump_json(event: &Event, corrections: &Corrections) -> serde_json::Value {
    let mut json = event_json(event, None);
    let (wall, trusted) = corrections.correct(
        event.boot_id,
        event.mono_ms,
        event.wall_ms,
        event.clock_synced,
    );
    if wall != event.wall_ms {
        json["ts_captured"] = json["ts"].take();
        json["ts"] = crate::clock::format_rfc3339_ms(wall).into();
    }
    json["ts_trusted"] = trusted.into();
    json
}
