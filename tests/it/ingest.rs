//! Black-box ingest and CLI tests: the real `edgecap` binary, its Unix socket and its exit
//! codes, exactly as INTERFACE.md specifies them. They prove that bad input gets an error that
//! names the field, stores nothing and leaves the connection usable; that concurrent clients
//! get unique seqs matching what is stored; that capture-only mode stops cleanly on SIGTERM
//! with nothing to recover; and that the demo loses nothing.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;
use serde_json::Value as Json;

/// Runs `edgecap publish --socket SOCK -` with `input` on stdin; returns its output.
fn publish_stdin(sock: &str, input: &[u8]) -> std::process::Output {
    let mut child = edgecap()
        .args(["publish", "--socket", sock, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn stored(daemon: &Daemon) -> Vec<Json> {
    daemon
        .dump()
        .into_iter()
        .filter(|e| e["kind"] != "system")
        .collect()
}

#[test]
fn bad_requests_are_rejected_naming_the_field_and_store_nothing() {
    let root = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(root.path(), "");
    let oversized = event_line("big", "x".repeat(5000));
    let table: Vec<(&str, String, &str)> = vec![
        ("not JSON", "hello".into(), "JSON"),
        ("a JSON array", "[1,2]".into(), "object"),
        ("missing value", r#"{"source":"a"}"#.into(), "value"),
        ("missing source", r#"{"value":1}"#.into(), "source"),
        (
            "empty source",
            r#"{"source":"","value":1}"#.into(),
            "source",
        ),
        ("65-char source", event_line(&"s".repeat(65), 1), "source"),
        (
            "bad kind",
            r#"{"source":"a","value":1,"kind":"system"}"#.into(),
            "kind",
        ),
        (
            "bad ts",
            r#"{"source":"a","value":1,"ts":"noon"}"#.into(),
            "ts",
        ),
        ("oversized line", oversized, "max_event_bytes"),
        ("empty line", String::new(), "empty"),
    ];
    for (what, line, field) in &table {
        let replies = request(&daemon.socket, &[line.clone(), event_line("good", 1)]);
        assert_eq!(replies.len(), 2, "{what}: {replies:?}");
        assert_eq!(replies[0]["ok"], false, "{what} was accepted: {replies:?}");
        let error = replies[0]["error"].as_str().unwrap();
        assert!(
            error.contains(field),
            "{what}: error {error:?} does not name {field}"
        );
        assert_eq!(
            replies[1]["ok"], true,
            "{what}: connection unusable afterwards"
        );
    }
    // Invalid UTF-8, sent raw.
    let mut stream = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    stream
        .write_all(b"{\"source\":\"a\",\"value\":\"\xff\xfe\"}\n")
        .unwrap();
    stream
        .write_all(format!("{}\n", event_line("good", 2)).as_bytes())
        .unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stream, &mut text).unwrap();
    let replies: Vec<Json> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replies[0]["ok"], false);
    assert!(replies[0]["error"].as_str().unwrap().contains("UTF-8"));
    assert_eq!(replies[1]["ok"], true);

    // Only the good events were stored.
    let events = stored(&daemon);
    assert_eq!(events.len(), table.len() + 1);
    assert!(events.iter().all(|e| e["source"] == "good"));

    // null is a value.
    let replies = request(
        &daemon.socket,
        &[r#"{"source":"n","value":null}"#.to_string()],
    );
    let seq = acked_seqs(&replies)[0];
    let event = daemon.dump().into_iter().find(|e| e["seq"] == seq).unwrap();
    assert_eq!(event["value"], Json::Null);
    assert!(event.as_object().unwrap().contains_key("value"));
}

#[test]
fn concurrent_clients_get_unique_seqs_and_dump_matches() {
    let root = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(root.path(), "");
    let socket = daemon.socket.clone();
    let clients: Vec<_> = (0..32)
        .map(|c| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let lines: Vec<String> = (0..100)
                    .map(|i| event_line(&format!("c{c}"), serde_json::json!(i)))
                    .collect();
                acked_seqs(&request(&socket, &lines))
                    .into_iter()
                    .enumerate()
                    .map(|(i, seq)| (seq, c, i))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut acked = std::collections::BTreeMap::new();
    for client in clients {
        for (seq, c, i) in client.join().unwrap() {
            assert!(acked.insert(seq, (c, i)).is_none(), "seq {seq} acked twice");
        }
    }
    assert_eq!(acked.len(), 3200);
    let events = stored(&daemon);
    assert_eq!(events.len(), 3200, "dump holds exactly the acked events");
    for event in events {
        let (c, i) = acked[&event["seq"].as_u64().unwrap()];
        assert_eq!(event["source"], format!("c{c}"));
        assert_eq!(event["value"], i);
    }
}

#[test]
fn capture_only_sigterm_exits_zero_and_reopens_clean() {
    let root = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(root.path(), "");
    let acked = acked_seqs(&request(
        &daemon.socket,
        &(0..500).map(|i| event_line("t", i)).collect::<Vec<_>>(),
    ));
    let status = daemon.status();
    assert_eq!(status["connected"], false);
    assert_eq!(status["backlog"], 0);
    assert_eq!(status["durable_seq"].as_u64(), acked.last().copied());
    let exit = daemon.terminate();
    assert_eq!(exit.code(), Some(0), "log:\n{}", daemon.log_text());
    assert!(!daemon.socket.exists(), "socket file removed at shutdown");
    let verify = edgecap()
        .args(["log", "verify", "--json", "--dir"])
        .arg(&daemon.dir)
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(0));
    let report: Json = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["tail_cut"], Json::Null);
    // A restart has nothing to recover: no recovery event is stored.
    daemon.restart();
    daemon.terminate();
    let recoveries = daemon
        .dump()
        .into_iter()
        .filter(|e| e["kind"] == "system" && e["value"]["event"] == "recovery")
        .count();
    assert_eq!(recoveries, 0);
}

#[test]
fn max_clients_is_enforced() {
    // `Daemon::start` writes the [ingest] table itself: add the key to it and restart.
    let root = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(root.path(), "");
    daemon.terminate();
    let text = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(
        &daemon.config,
        text.replace("[ingest]\n", "[ingest]\nmax_clients = 2\n"),
    )
    .unwrap();
    daemon.restart();
    // Hold two connections, each proven accepted by a status round trip. (The probe that
    // waited for the socket may hold a permit for an instant: retry until accepted.)
    let hold = || {
        let mut held = None;
        wait_until("a connection accepted", Duration::from_secs(10), || {
            let Ok(stream) = std::os::unix::net::UnixStream::connect(&daemon.socket) else {
                return false;
            };
            let mut w = &stream;
            if w.write_all(b"{\"op\":\"status\"}\n").is_err() {
                return false;
            }
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(&stream), &mut line);
            let accepted = line.contains("appended_seq");
            if accepted {
                held = Some(stream);
            }
            accepted
        });
        held.unwrap()
    };
    let _a = hold();
    let _b = hold();
    let third = request(&daemon.socket, &[event_line("x", 1)]);
    assert_eq!(third.len(), 1);
    assert_eq!(third[0]["ok"], false);
    assert!(third[0]["error"].as_str().unwrap().contains("max_clients"));
}

#[test]
fn cli_exit_codes() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("nothing.sock");
    let run = |args: &[&str]| edgecap().args(args).output().unwrap();
    let code = |args: &[&str]| run(args).status.code();
    let sock = missing.to_str().unwrap();
    assert_eq!(code(&["status", "--socket", sock]), Some(3));
    assert_eq!(
        code(&["publish", "--socket", sock, "--source", "a", "1"]),
        Some(3)
    );
    // config check: valid 0, invalid 2 naming the key.
    let good = root.path().join("good.toml");
    std::fs::write(&good, "device_id = \"pi-1\"\n[storage]\ndir = \"/tmp/x\"\n").unwrap();
    assert_eq!(code(&["config", "check", good.to_str().unwrap()]), Some(0));
    let bad = root.path().join("bad.toml");
    std::fs::write(
        &bad,
        "device_id = \"pi-1\"\n[storage]\ndir = \"/tmp/x\"\nmax_disk = \"lots\"\n",
    )
    .unwrap();
    let out = run(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("storage.max_disk"));
    // Values of the wrong type name their dotted key too.
    for (line, key) in [
        ("segment_size = -1", "storage.segment_size"),
        ("sync_interval_ms = \"50\"", "storage.sync_interval_ms"),
        ("sync = 1", "storage.sync"),
    ] {
        std::fs::write(
            &bad,
            format!("device_id = \"pi-1\"\n[storage]\ndir = \"/tmp/x\"\n{line}\n"),
        )
        .unwrap();
        let out = run(&["config", "check", bad.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{line}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{line}: {stderr}");
    }
    assert_eq!(code(&["run", "--config", bad.to_str().unwrap()]), Some(2));
    // log verify on a directory that is not a data dir: 2.
    assert_eq!(
        code(&["log", "verify", "--dir", root.path().to_str().unwrap()]),
        Some(2)
    );

    // publish against a live daemon: 0 acked, 1 rejected; stdin mode pipelines.
    let daemon = Daemon::start(root.path(), "");
    let sock = daemon.socket.to_str().unwrap();
    let out = run(&["publish", "--socket", sock, "--source", "temp0", "21.5"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ok\":true"));
    assert_eq!(
        code(&["publish", "--socket", sock, "--source", "bad source", "1"]),
        Some(1)
    );
    let out = publish_stdin(
        sock,
        b"{\"source\":\"a\",\"value\":1}\n{\"source\":\"a\"}\n{\"source\":\"b\",\"value\":2,\"kind\":\"command\"}\n",
    );
    assert_eq!(out.status.code(), Some(1), "one rejected");
    let replies: Vec<Json> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replies.len(), 3);
    assert_eq!(
        (
            replies[0]["ok"].clone(),
            replies[1]["ok"].clone(),
            replies[2]["ok"].clone()
        ),
        (Json::Bool(true), Json::Bool(false), Json::Bool(true))
    );
    let out = run(&["status", "--socket", sock, "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let status: Json = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "appended_seq",
        "durable_seq",
        "forwarded_seq",
        "backlog",
        "connected",
        "breaker",
        "dropped_events",
        "disk_bytes",
        "segments",
        "uptime_secs",
        "last_error",
    ] {
        assert!(status.get(key).is_some(), "status lacks {key}");
    }
}

#[test]
fn publish_takes_any_json_value_and_refuses_the_rest_with_a_reply_line() {
    let root = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(root.path(), "");
    let sock = daemon.socket.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = edgecap()
            .args(["publish", "--socket", sock])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let reply: Json = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{args:?}: stdout {stdout:?} is not a reply ({e})"));
        (out.status.code(), reply)
    };
    // Negative numbers are values, not flags.
    for value in ["-5", "-1.5", "-2e3"] {
        let (code, reply) = run(&["--source", "t", value]);
        assert_eq!(
            (code, reply["ok"].clone()),
            (Some(0), Json::Bool(true)),
            "{value}"
        );
    }
    let (code, reply) = run(&["--source", "t", "null"]);
    assert_eq!((code, reply["ok"].clone()), (Some(0), Json::Bool(true)));
    // Not JSON, or a kind producers may not send: a reply line naming the field, exit 1.
    let (code, reply) = run(&["--source", "t", "open"]);
    assert_eq!(code, Some(1));
    assert!(
        reply["error"].as_str().unwrap().contains("`value`"),
        "{reply}"
    );
    let (code, reply) = run(&["--source", "t", "--kind", "system", "1"]);
    assert_eq!(code, Some(1));
    assert!(
        reply["error"].as_str().unwrap().contains("`kind`"),
        "{reply}"
    );
    let values: Vec<Json> = stored(&daemon).iter().map(|e| e["value"].clone()).collect();
    assert_eq!(
        values,
        [
            serde_json::json!(-5),
            serde_json::json!(-1.5),
            serde_json::json!(-2000.0),
            Json::Null
        ]
    );

    // A status request through `publish -` is a success.
    let out = publish_stdin(sock, b"{\"op\":\"status\"}\n");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("durable_seq"));
}

#[test]
fn a_pipelined_status_reflects_every_event_acked_before_it() {
    let root = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(root.path(), "");
    let mut lines = Vec::new();
    for i in 0..50 {
        lines.push(event_line("t", i));
        lines.push(r#"{"op":"status"}"#.to_string());
    }
    let replies = request(&daemon.socket, &lines);
    for pair in replies.chunks(2) {
        let seq = pair[0]["seq"].as_u64().expect("an ack");
        for key in ["appended_seq", "durable_seq"] {
            assert!(
                pair[1][key].as_u64().unwrap() >= seq,
                "status after the ack of {seq} says {key} {}",
                pair[1][key]
            );
        }
    }
}

#[test]
fn a_full_log_under_reject_still_stops_cleanly_and_restarts() {
    let root = tempfile::tempdir().unwrap();
    let storage = "segment_size = \"36KiB\"\nmax_disk = \"108KiB\"\non_full = \"reject\"\n";
    let mut daemon = Daemon::start_with_storage(root.path(), storage, "");
    let big = "x".repeat(1000);
    let mut rejected = None;
    for _ in 0..200 {
        let reply = request(&daemon.socket, &[event_line("t", big.as_str())]).remove(0);
        if reply["ok"] == false {
            rejected = Some(reply);
            break;
        }
    }
    let rejected = rejected.expect("a 108 KiB budget is full after 200 events of 1 KB");
    assert!(
        rejected["error"].as_str().unwrap().contains("full"),
        "{rejected}"
    );
    let stored_before = stored(&daemon).len();
    assert!(
        daemon.terminate().success(),
        "SIGTERM on a full log must exit 0"
    );
    daemon.restart();
    // Serving, still refusing what does not fit, and nothing lost.
    assert!(daemon.status()["durable_seq"].as_u64().unwrap() > 0);
    let reply = request(&daemon.socket, &[event_line("t", big.as_str())]).remove(0);
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(stored(&daemon).len(), stored_before);
    assert!(daemon.terminate().success());
}

#[test]
fn demo_loses_nothing() {
    let out = edgecap()
        .args(["demo", "--publish-secs", "11"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout.lines().last().unwrap();
    assert!(
        summary.starts_with("sent ") && summary.ends_with("lost 0"),
        "{summary}"
    );
}

// Issue 8, finding 1, as a user meets it: lowering `ingest.max_event_bytes` from 20480 to
// 4096 and restarting destroyed 27 of 30 stored events, and `log verify` called the log clean.
#[test]
fn lowering_max_event_bytes_and_restarting_keeps_every_stored_event() {
    let root = tempfile::tempdir().unwrap();
    let storage = "segment_size = \"1MiB\"\nmax_disk = \"256MiB\"\n";
    let mut daemon = Daemon::start_with_storage(root.path(), storage, "max_event_bytes = 20480\n");
    let big = "x".repeat(15_000);
    let lines: Vec<String> = (0..30).map(|_| event_line("t", big.as_str())).collect();
    let acked = acked_seqs(&request(&daemon.socket, &lines));
    assert_eq!(acked.len(), 30);
    assert!(daemon.terminate().success());
    let config = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(
        &daemon.config,
        config.replace("max_event_bytes = 20480", "max_event_bytes = 4096"),
    )
    .unwrap();
    daemon.restart();
    assert_eq!(stored(&daemon).len(), 30, "log:\n{}", daemon.log_text());
    // The new limit applies to new events only.
    let reply = request(&daemon.socket, &[event_line("t", big.as_str())]).remove(0);
    assert_eq!(reply["ok"], false, "{reply}");
    assert!(daemon.terminate().success());
    let verify = edgecap()
        .args(["log", "verify", "--json", "--dir"])
        .arg(&daemon.dir)
        .output()
        .unwrap();
    let report: Json = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["tail_cut"], Json::Null, "{report}");
}

/// A producer that writes a line now and then into `edgecap publish -` gets each event stored
/// and answered at once, not when 8 KiB of requests have piled up or stdin closes.
#[test]
fn publish_stdin_sends_each_line_without_waiting_for_more_input() {
    use std::io::BufRead;
    let root = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(root.path(), "");
    let mut child = edgecap()
        .args(["publish", "--socket", daemon.socket.to_str().unwrap(), "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut replies = Vec::new();
    for value in 0..3 {
        stdin
            .write_all(format!("{}\n", event_line("slow", value)).as_bytes())
            .unwrap();
        stdin.flush().unwrap();
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(reply) => replies.push(reply),
            Err(_) => break,
        }
    }
    drop(stdin);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("edgecap publish did not end within 20 s of its stdin closing");
        }
        std::thread::park_timeout(Duration::from_millis(10));
    };
    reader.join().unwrap();
    assert_eq!(
        replies.len(),
        3,
        "a line waited for more input before it was sent: {replies:?}"
    );
    assert!(
        replies.iter().all(|r| r.contains("\"ok\":true")),
        "{replies:?}"
    );
    assert!(status.success());
}
