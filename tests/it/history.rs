//! Event sourcing on the device, black-box: `edgecap state` at a seq and at a time (across a
//! wall-clock step, with null values, non-numeric sources and an empty log) against
//! hand-computed expectations; `edgecap log follow` delivering every event once and in order
//! while 10,000 more are ingested; a stuck follower not slowing ingestion (measured and
//! printed); and the daemon's own history (a kill/recover cycle, a `drop_oldest` eviction)
//! reported by `state`.
//!
//! The clock-step log is written with the storage crate directly (a test cannot step the real
//! clock); everything else drives the real daemon.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;
use edgecap_storage::{Event, Kind, Log, LogOptions, Value};
use serde_json::{json, Value as Json};

/// 2026-11-26T03:00:00Z in Unix ms: the time NTP sets the clock to.
const T0: i64 = 1_795_662_000_000;
/// The clock before NTP sync (a Pi without RTC starts near 1970).
const OLD_CLOCK: i64 = 1_000_000;
const BOOT: [u8; 16] = [7; 16];

fn event(kind: Kind, source: &str, value: Value, mono_ms: u64, synced: bool) -> Event {
    let mut e = Event::new(kind, source, value).unwrap();
    e.boot_id = BOOT;
    e.mono_ms = mono_ms;
    e.clock_synced = synced;
    // Before the step (mono < 2000) the wall clock runs on the old base, after it on T0.
    e.wall_ms = if mono_ms < 2000 {
        OLD_CLOCK + (mono_ms as i64 - 1000)
    } else {
        T0 + (mono_ms as i64 - 1000)
    };
    e
}

fn system(what: &str, extra: Vec<(String, Value)>, mono_ms: u64) -> Event {
    let mut members = vec![("event".to_string(), Value::String(what.into()))];
    members.extend(extra);
    event(
        Kind::System,
        "edgecap",
        Value::Object(members),
        mono_ms,
        mono_ms >= 2000,
    )
}

/// seq 1 start; 2..=5 before the step (unsynced); 6 the step; 7..=9 after it.
fn write_clock_step_log(dir: &std::path::Path) {
    let (log, _) = Log::open(dir, LogOptions::default()).unwrap();
    let events = vec![
        system("start", vec![], 900),
        event(Kind::Sensor, "temp0", Value::Int(10), 1000, false),
        event(Kind::Sensor, "temp0", Value::Int(20), 1500, false),
        event(
            Kind::Sensor,
            "door",
            Value::String("open".into()),
            1600,
            false,
        ),
        event(Kind::Sensor, "temp0", Value::Null, 1700, false),
        system(
            "clock_step",
            vec![("offset_ms".into(), Value::Int(T0 - OLD_CLOCK))],
            2000,
        ),
        event(Kind::Sensor, "temp0", Value::Int(30), 3000, true),
        event(
            Kind::Command,
            "valve",
            Value::Object(vec![("open".into(), Value::Bool(false))]),
            4000,
            true,
        ),
        event(Kind::Sensor, "temp0", Value::Float(40.0), 5000, true),
    ];
    for e in events {
        log.append(e).unwrap();
    }
    log.sync().unwrap();
}

fn state(dir: &std::path::Path, args: &[&str]) -> Json {
    let out = edgecap()
        .args(["state", "--json", "--dir"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[test]
fn state_at_seq_and_at_time_across_a_clock_step() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    write_clock_step_log(&dir);

    // After event 5: two numbers and a null for temp0, one non-number source.
    let s = state(&dir, &["--at-seq", "5"]);
    assert_eq!(s["seq"], 5);
    let temp = &s["sources"]["temp0"];
    assert_eq!(temp["count"], 3);
    assert_eq!(temp["numeric_count"], 2);
    assert_eq!(
        (
            temp["min"].as_f64(),
            temp["max"].as_f64(),
            temp["mean"].as_f64()
        ),
        (Some(10.0), Some(20.0), Some(15.0))
    );
    assert_eq!(temp["last_value"], Json::Null);
    assert_eq!(temp["last_seq"], 5);
    let door = &s["sources"]["door"];
    assert_eq!(
        (door["count"].clone(), door["numeric_count"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(
        (door["min"].clone(), door["mean"].clone()),
        (Json::Null, Json::Null)
    );
    assert_eq!(door["last_value"], "open");
    assert_eq!(s["commands"], json!({}));
    // Captured before the step, corrected by it: the time shown is on the new clock.
    assert_eq!(temp["last_ts"], "2026-11-26T03:00:00.700Z");
    assert_eq!(temp["last_ts_trusted"], true);

    // Latest: everything.
    let s = state(&dir, &[]);
    assert_eq!(s["seq"], 9);
    let temp = &s["sources"]["temp0"];
    assert_eq!(
        (temp["count"].clone(), temp["numeric_count"].clone()),
        (json!(5), json!(4))
    );
    assert_eq!(temp["mean"].as_f64(), Some(25.0));
    assert_eq!(temp["max"].as_f64(), Some(40.0));
    assert_eq!(s["commands"]["valve"]["last_value"], json!({"open": false}));
    assert_eq!(s["commands"]["valve"]["last_seq"], 8);
    assert_eq!(s["daemon"]["clock_steps_total"], 1);
    assert_eq!(s["daemon"]["clock_steps"][0]["offset_ms"], T0 - OLD_CLOCK);
    assert_eq!(s["daemon"]["boots"], 1);

    // --at uses corrected times: T0+2500 falls after seq 7 (T0+2000), before the valve (T0+3000).
    let s = state(&dir, &["--at", &rfc3339(T0 + 2500)]);
    assert_eq!(s["seq"], 7);
    assert_eq!(s["sources"]["temp0"]["mean"].as_f64(), Some(20.0));
    assert_eq!(s["commands"], json!({}), "the valve command came later");
    // T0+650: after seq 4 (corrected T0+600), before seq 5 (T0+700).
    let s = state(&dir, &["--at", &rfc3339(T0 + 650)]);
    assert_eq!(s["seq"], 4);
    assert_eq!(s["sources"]["temp0"]["count"], 2);
    // Just before T0: the raw 1970 times would all qualify, the corrected ones do not; only the
    // start event (seq 1, captured before the step too) is corrected to T0-100.
    let s = state(&dir, &["--at", &rfc3339(T0 - 1)]);
    assert_eq!(s["seq"], 1);
    assert_eq!(s["sources"], json!({}));

    // dump shows the corrected time and keeps the captured one.
    let out = edgecap()
        .args(["log", "dump", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let lines: Vec<Json> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[1]["ts"], "2026-11-26T03:00:00.000Z");
    assert_eq!(lines[1]["ts_captured"], "1970-01-01T00:16:40.000Z");
    assert_eq!(lines[1]["ts_trusted"], true);
    assert_eq!(lines[6]["ts"], rfc3339(T0 + 2000).replace("Z", ".000Z"));
    assert!(lines[6].get("ts_captured").is_none());

    // The human table is readable and names the sources.
    let out = edgecap()
        .args(["state", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("temp0") && table.contains("valve") && table.contains("1 clock steps"),
        "{table}"
    );
}

#[test]
fn state_of_an_empty_log() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    drop(Log::open(&dir, LogOptions::default()).unwrap());
    let s = state(&dir, &[]);
    assert_eq!(s["seq"], 0);
    assert_eq!(s["events"], 0);
    assert_eq!(s["sources"], json!({}));
    let s = state(&dir, &["--at-seq", "10"]);
    assert_eq!(s["seq"], 0);
}

#[test]
fn follow_delivers_every_event_once_in_order_during_ingest() {
    let root = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(root.path(), "");
    acked_seqs(&request(
        &daemon.socket,
        &(0..1000).map(|i| event_line("old", i)).collect::<Vec<_>>(),
    ));
    let mut follower = edgecap()
        .args(["log", "follow", "--from", "1", "--socket"])
        .arg(&daemon.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let json: Json = serde_json::from_str(&line).unwrap();
            if tx.send(json["seq"].as_u64().unwrap()).is_err() {
                break;
            }
        }
    });
    let socket = daemon.socket.clone();
    let ingest = std::thread::spawn(move || {
        let lines: Vec<String> = (0..10_000).map(|i| event_line("new", i)).collect();
        acked_seqs(&request(&socket, &lines))
    });
    let acked = ingest.join().unwrap();
    let last = *acked.last().unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.last() != Some(&last) {
        let left = deadline.saturating_duration_since(Instant::now());
        seen.push(
            rx.recv_timeout(left)
                .expect("follower delivered everything within 60 s"),
        );
    }
    let expected: Vec<u64> = (1..=last).collect();
    assert_eq!(seen, expected, "every event once, in order, no gap");
    // Daemon stops: the follower sees EOF and exits 0.
    let mut daemon = daemon;
    assert_eq!(daemon.terminate().code(), Some(0));
    assert_eq!(follower.wait().unwrap().code(), Some(0));
    reader.join().unwrap();
}

#[test]
fn follow_filters_by_kind_and_source() {
    let root = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(root.path(), "");
    let lines = vec![
        event_line("temp0", 1),
        r#"{"source":"valve","kind":"command","value":"open"}"#.to_string(),
        r#"{"source":"fan","kind":"command","value":"on"}"#.to_string(),
        r#"{"source":"valve","kind":"command","value":"close"}"#.to_string(),
    ];
    acked_seqs(&request(&daemon.socket, &lines));
    let mut follower = edgecap()
        .args([
            "log", "follow", "--kind", "command", "--source", "valve", "--socket",
        ])
        .arg(&daemon.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(follower.stdout.take().unwrap());
    let mut got = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        got.push(serde_json::from_str::<Json>(&line).unwrap()["value"].clone());
    }
    assert_eq!(got, vec![json!("open"), json!("close")]);
    daemon.terminate();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "", "nothing else matched");
    assert_eq!(follower.wait().unwrap().code(), Some(0));
}

#[test]
fn a_stuck_follower_does_not_slow_ingestion() {
    let root = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(root.path(), "");
    let batch = |tag: &str| -> Vec<String> {
        (0..20_000)
            .map(|i| event_line("load", json!({"i": i, "pad": "p".repeat(64), "tag": tag})))
            .collect()
    };
    let start = Instant::now();
    acked_seqs(&request(&daemon.socket, &batch("baseline")));
    let baseline = start.elapsed();
    // A follower that asks for everything and never reads.
    let mut stuck = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    stuck
        .write_all(b"{\"op\":\"follow\",\"from\":1}\n")
        .unwrap();
    let start = Instant::now();
    acked_seqs(&request(&daemon.socket, &batch("with-stuck-follower")));
    let with_stuck = start.elapsed();
    println!(
        "ingest of 20,000 events: {:.0} ms without a follower, {:.0} ms with a stuck follower (ratio {:.2})",
        baseline.as_secs_f64() * 1e3,
        with_stuck.as_secs_f64() * 1e3,
        with_stuck.as_secs_f64() / baseline.as_secs_f64()
    );
    // The daemon still answers and its durable seq covers everything.
    assert!(daemon.status()["durable_seq"].as_u64().unwrap() >= 40_000);
    drop(stuck);
}

#[test]
fn kill_recover_and_drop_oldest_are_in_the_daemon_history() {
    let root = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(root.path(), "");
    acked_seqs(&request(
        &daemon.socket,
        &(0..100).map(|i| event_line("t", i)).collect::<Vec<_>>(),
    ));
    daemon.kill();
    daemon.restart();
    assert_eq!(daemon.terminate().code(), Some(0));
    let s = state(&daemon.dir, &[]);
    assert_eq!(s["daemon"]["boots"], 2);
    assert_eq!(s["daemon"]["recoveries_total"], 1, "{s}");
    let recovery = daemon
        .dump()
        .into_iter()
        .find(|e| e["kind"] == "system" && e["value"]["event"] == "recovery")
        .expect("a recovery event");
    assert_eq!(recovery["value"]["unclean_shutdown"], true);

    // A tiny budget with drop_oldest: old segments go, and the drop is in the history.
    let root = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_with_storage(
        root.path(),
        "segment_size = \"64KiB\"\nmax_disk = \"256KiB\"\non_full = \"drop_oldest\"\n",
        "",
    );
    let lines: Vec<String> = (0..5000)
        .map(|i| event_line("t", json!({"i": i, "pad": "x".repeat(80)})))
        .collect();
    acked_seqs(&request(&daemon.socket, &lines));
    let status = daemon.status();
    assert!(status["dropped_events"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(daemon.terminate().code(), Some(0));
    let s = state(&daemon.dir, &[]);
    let dropped = s["daemon"]["dropped_events_total"].as_u64().unwrap();
    assert!(dropped > 0, "{s}");
    assert!(!s["daemon"]["drops"].as_array().unwrap().is_empty());
    let first = daemon.dump()[0]["seq"].as_u64().unwrap();
    assert!(first > 1, "the oldest events were dropped");
}
