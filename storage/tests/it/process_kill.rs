//! Real process kills: a child process appends with a sync per append and prints each seq once
//! it is durable; the parent SIGKILLs it at a random moment, reopens the log, and checks that
//! every seq the child printed is there, byte-identical, with no gap. 60 rounds on one data
//! directory, so later rounds recover from earlier kills (and rotate through small segments).
//!
//! The child is this same test binary re-run with `EDGECAP_KILL_CHILD=<dir>`; the round count
//! is `EDGECAP_KILL_ROUNDS` (default 60) and the seed `EDGECAP_SEED`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::seed_base;
use edgecap_storage::{Event, Kind, Log, LogOptions, OnFull, SplitMix64, Value};

fn options() -> LogOptions {
    LogOptions {
        segment_bytes: 64 * 1024,
        disk_bytes_max: 64 * 1024 * 1024,
        on_full: OnFull::Reject,
        record_bytes_max: 1024,
    }
}

fn payload(seq: u64) -> Value {
    Value::String(format!("event-{seq}-{}", "p".repeat((seq % 97) as usize)))
}

/// The child: append + sync forever, printing each durable seq.
fn child(dir: &Path) -> ! {
    let (log, _) = Log::open(dir, options()).expect("child open");
    let stdout = std::io::stdout();
    loop {
        let next = log.appended_seq() + 1;
        let event = Event::new(Kind::Sensor, "kill", payload(next)).unwrap();
        let seq = log.append(event).expect("append");
        assert_eq!(seq, next);
        log.sync_through(seq).expect("sync");
        let mut out = stdout.lock();
        writeln!(out, "{seq}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_never_loses_an_acked_seq() {
    if let Ok(dir) = std::env::var("EDGECAP_KILL_CHILD") {
        child(Path::new(&dir));
    }
    let rounds: u64 = std::env::var("EDGECAP_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed = seed_base(0x00c0_ffee);
    let mut rng = SplitMix64::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked_max = 0u64;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "process_kill::sigkill_never_loses_an_acked_seq",
                "--nocapture",
            ])
            .env("EDGECAP_KILL_CHILD", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(seq) = line.trim().parse::<u64>() {
                    if tx.send(seq).is_err() {
                        break;
                    }
                }
            }
        });
        // Kill after a random number of acks (0 = right at start-up), with a deadline.
        let kill_after = rng.below(400);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = 0;
        while seen < kill_after {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(seq) => {
                    acked_max = acked_max.max(seq);
                    seen += 1;
                }
                Err(_) => panic!("round {round} (seed {seed}): child made no progress in 30 s"),
            }
        }
        // SAFETY: plain kill(2) of our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        reader.join().unwrap();
        // Lines the child printed before dying were acked too.
        while let Ok(seq) = rx.try_recv() {
            acked_max = acked_max.max(seq);
        }
        let (log, report) = Log::open(dir.path(), options()).unwrap();
        assert!(
            report.damaged.is_empty() && report.quarantined.is_empty(),
            "round {round} (seed {seed}): {report:?}"
        );
        let mut expected = 1;
        for item in log.reader(1) {
            let event = item.unwrap_or_else(|e| panic!("round {round} (seed {seed}): {e}"));
            assert_eq!(event.seq, expected, "round {round} (seed {seed}): gap");
            assert_eq!(event.value, payload(event.seq));
            expected += 1;
        }
        assert!(
            expected > acked_max,
            "round {round} (seed {seed}): acked {acked_max} but log ends at {}",
            expected - 1
        );
    }
    println!("{rounds} SIGKILL rounds passed, {acked_max} acked seqs all present (seed {seed})");
}
