//! `edgecap state`: the event-sourced projection rebuilt from the log up to a point, from the
//! newest valid snapshot at or before that point. Read-only. Exit: 0; 1 corruption met;
//! 2 not a data directory or a bad `--at`.

use std::io::IsTerminal;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use edgecap_storage::Log;
use indicatif::{ProgressBar, ProgressStyle};

use super::EXIT_INVALID;
use crate::clock::{parse_rfc3339_ms, Corrections};
use crate::project::State;
use crate::snapshot;

/// Where to stop replaying.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    Latest,
    Seq(u64),
    /// Unix ms: the last event whose (clock-step corrected) capture time is at or before it.
    Time(i64),
}

/// The clock steps of the whole log (steps correct the events captured *before* them), taken
/// from the latest state: the newest snapshot plus the tail, not a scan of the whole log. The
/// projection keeps the most recent `project::HISTORY_MAX` steps.
pub fn corrections(log: &Log, dir: &Path) -> Corrections {
    let (latest, _) = rebuild(log, dir, Until::Latest, &Corrections::default(), false);
    latest.corrections()
}

/// Replays `log` up to `until`; returns the state and the problems met (corruption).
pub fn rebuild(
    log: &Log,
    dir: &Path,
    until: Until,
    corrections: &Corrections,
    progress: bool,
) -> (State, Vec<String>) {
    let mut problems = Vec::new();
    let target = match until {
        Until::Latest => log.durable_seq(),
        Until::Seq(n) => n.min(log.durable_seq()),
        Until::Time(t) => seq_at_time(log, t, corrections, &mut problems),
    };
    let (snapshot, skipped) = snapshot::load_newest(dir, target);
    for message in skipped {
        eprintln!("edgecap: {message} (replaying without it)");
    }
    let mut state = snapshot.unwrap_or_default();
    let bar =
        (progress && std::io::stderr().is_terminal() && target > state.seq + 100_000).then(|| {
            let bar = ProgressBar::new(target - state.seq);
            bar.set_style(
                ProgressStyle::with_template("replaying [{bar:40}] {pos}/{len} events ({per_sec})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
    let start = state.seq;
    for item in log.reader(state.seq + 1) {
        match item {
            Ok(event) if event.seq > target => break,
            Ok(event) => {
                state.apply(&event);
                if let Some(bar) = &bar {
                    if event.seq % 8192 == 0 {
                        bar.set_position(event.seq - start);
                    }
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    (state, problems)
}

/// The seq of the last event captured at or before `t` (corrected times); 0 if none.
fn seq_at_time(log: &Log, t: i64, corrections: &Corrections, problems: &mut Vec<String>) -> u64 {
    let mut found = 0;
    for item in log.reader(1) {
        match item {
            Ok(event) => {
                let (wall, _) = corrections.correct(
                    event.boot_id,
                    event.mono_ms,
                    event.wall_ms,
                    event.clock_synced,
                );
                if wall <= t {
                    found = event.seq;
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    found
}

pub fn main(dir: &Path, at_seq: Option<u64>, at: Option<String>, json: bool) -> ExitCode {
    let until = match (at_seq, at) {
        (Some(n), _) => Until::Seq(n),
        (None, Some(text)) => match parse_rfc3339_ms(&text) {
            Some(t) => Until::Time(t),
            None => {
                eprintln!("edgecap: --at {text:?} is not an RFC 3339 time (2026-11-26T03:12:00Z)");
                return ExitCode::from(EXIT_INVALID);
            }
        },
        (None, None) => Until::Latest,
    };
    let (log, report) = match super::log::open(dir, false) {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let mut corrupt = !report.damaged.is_empty() || !report.quarantined.is_empty();
    let (latest, mut problems) = rebuild(&log, dir, Until::Latest, &Corrections::default(), true);
    let corrections = latest.corrections();
    let state = if matches!(until, Until::Latest) {
        latest
    } else {
        problems.clear();
        let (state, found) = rebuild(&log, dir, until, &corrections, true);
        problems = found;
        state
    };
    for problem in &problems {
        eprintln!("edgecap: corruption: {problem}");
    }
    corrupt |= !problems.is_empty();
    let text = if json {
        format!("{}\n", state.to_json_with(&corrections))
    } else {
        state.to_table(&corrections)
    };
    // A closed stdout (`| head`) is not an error of ours: no panic, the exit code stands.
    // Any other write error (a full disk under `> file`) is.
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            eprintln!("edgecap: writing the state: {e}");
            return ExitCode::FAILURE;
        }
    }
    if corrupt {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
