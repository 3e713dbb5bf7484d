//! `edgecap-bench`: edgecap against the alternatives a user would pick instead, every contender
//! measured in the same run on the same disk, interleaved, medians of rounds. Prints a table
//! for people and one JSON object (docs/PERFORMANCE.md explains each figure and quotes a run).
//!
//! `cargo run --release -p edgecap-bench -- [--quick] [--json] [--dir DIR]`
//!
//! Sections: storage (edgecap's log, SQLite WAL, a plain fdatasync file, the disk's floor),
//! daemon ingest, forwarding (against a raw rumqttc publisher to the same mosquitto), footprint
//! (write amplification, RSS, idle wake-ups) and recovery. Needs `mosquitto` on the PATH (the
//! README's test command installs it). Data goes under `target/bench-data` (a real disk: the
//! figures of tmpfs mean nothing) and is removed at the end.

mod broker;
mod daemon;
mod footprint;
mod forward;
mod report;
mod scratch;
mod sqlite;
mod stats;
mod storage;
mod storage_section;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use report::Report;

#[derive(Parser)]
#[command(
    about = "edgecap against SQLite WAL, a plain fdatasync file, the disk's floor and a raw MQTT client, in one run"
)]
struct Args {
    /// Small counts and one round: under a minute, for a smoke test (figures are noisy).
    #[arg(long)]
    quick: bool,
    /// Only the JSON object on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Where the contenders write (default: target/bench-data of this workspace).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Run only these sections (repeatable; default all). Ratios whose two sides were not both
    /// measured are left out.
    #[arg(long, value_enum)]
    only: Vec<Section>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    Storage,
    Ingest,
    Forward,
    Footprint,
    Recovery,
}

/// The counts of one run.
pub struct Scale {
    pub rounds: usize,
    pub batch1_events: u64,
    pub batched_events: u64,
    pub thread_events: u64,
    pub direct_events: u64,
    pub ingest_events: u64,
    pub ack_events: u64,
    pub forward_events: u64,
    pub drain_events: u64,
    pub steady_secs: u64,
    pub idle_secs: u64,
    pub log_bytes: u64,
}

impl Scale {
    fn new(quick: bool) -> Scale {
        if quick {
            return Scale {
                rounds: 1,
                batch1_events: 500,
                batched_events: 20_000,
                thread_events: 2_048,
                direct_events: 256,
                ingest_events: 12_800,
                ack_events: 200,
                forward_events: 10_000,
                drain_events: 16_000,
                steady_secs: 2,
                idle_secs: 2,
                log_bytes: 64 << 20,
            };
        }
        Scale {
            rounds: 3,
            batch1_events: 3_000,
            batched_events: 300_000,
            thread_events: 25_600,
            direct_events: 3_200,
            ingest_events: 192_000,
            ack_events: 1_000,
            forward_events: 100_000,
            drain_events: 1_000_000,
            steady_secs: 10,
            // Past the 30 s keep-alive and the clock watcher's 60 s backstop: both are counted.
            idle_secs: 65,
            log_bytes: 1 << 30,
        }
    }
}

fn main() -> ExitCode {
    // Hidden roles of this binary's children: the daemon itself, a SQLite writer process, a
    // log writer to be killed.
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("__edgecap") => {
            let cli = <edgecap::cli::Cli as Parser>::parse_from(
                std::iter::once("edgecap".to_string()).chain(argv[2..].iter().cloned()),
            );
            return edgecap::cli::main(cli);
        }
        Some("__sqlite-writer") => return sqlite::writer_main(&argv[2..]),
        Some("__fill") => return footprint::fill_main(&argv[2..]),
        _ => {}
    }
    let args = Args::parse();
    let root = args
        .dir
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data"));
    scratch::clean_stale(&root.join("edgecap-bench"));
    scratch::clean_up_on_panic();
    let root = storage::fresh_dir(&root, "edgecap-bench");
    let report = run(&Scale::new(args.quick), &root, args.quick, &args.only);
    let _ = std::fs::remove_dir_all(&root);
    if args.json {
        eprint!("{}", report.table());
    } else {
        print!("{}", report.table());
    }
    println!("{}", report.json());
    ExitCode::SUCCESS
}

fn run(scale: &Scale, root: &std::path::Path, quick: bool, only: &[Section]) -> Report {
    let wanted = |section| only.is_empty() || only.contains(&section);
    let mut report = Report::default();
    describe(&mut report, root, quick);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if wanted(Section::Storage) {
        storage_section::run(&mut report, scale, root);
    }
    if wanted(Section::Ingest) {
        storage_section::ingest(&mut report, scale, root);
    }
    if wanted(Section::Forward) {
        forward::run(&mut report, scale, root, &runtime);
    }
    if wanted(Section::Footprint) {
        footprint::write_amplification(&mut report, scale, root);
        footprint::idle_wakeups(&mut report, scale, root);
    }
    if wanted(Section::Recovery) {
        footprint::recovery(&mut report, scale, root);
    }
    report
}

/// When, where and on what the run happened.
fn describe(report: &mut Report, root: &std::path::Path, quick: bool) {
    let text = |command: &str, args: &[&str]| {
        std::process::Command::new(command)
            .args(args)
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .unwrap_or_default()
    };
    report.set_text("date", &text("date", &["-u", "+%FT%TZ"]));
    report.set_text("kernel", &text("uname", &["-r"]));
    report.set_text(
        "cpus",
        &std::thread::available_parallelism()
            .map_or(0, |n| n.get())
            .to_string(),
    );
    let filesystem = text("stat", &["-f", "-c", "%T", &root.display().to_string()]);
    report.set_text("filesystem", &filesystem);
    report.set_text("mode", if quick { "quick" } else { "full" });
    if filesystem == "tmpfs" {
        eprintln!(
            "warning: {} is on tmpfs: fdatasync is free there, the figures mean nothing",
            root.display()
        );
    }
}
