//! Black-box forwarding tests: the real `edgecap` binary against a real mosquitto broker on a
//! free loopback port. They prove the upstream contract of INTERFACE.md: every durable event
//! arrives, in seq order per device, at least once, through broker outages, daemon kills and a
//! broker that is absent at start; the breaker and `connected` show in `status`; upstream
//! commands are stored and forwarded.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::*;
use serde_json::Value as Json;

const EVENTS_FILTER: &str = "edgecap/dev1/events/#";

/// Checks that `seqs` (arrival order) contain every one of `want`, with each first arrival in
/// increasing order; returns the number of duplicates.
fn check_delivery(seqs: &[u64], want: &BTreeSet<u64>) -> usize {
    let mut seen = BTreeSet::new();
    let mut last_first = 0;
    let mut duplicates = 0;
    for &seq in seqs {
        if !seen.insert(seq) {
            duplicates += 1;
            continue;
        }
        assert!(
            seq > last_first,
            "seq {seq} first arrived after {last_first}"
        );
        last_first = seq;
    }
    let missing: Vec<_> = want.difference(&seen).take(10).collect();
    assert!(missing.is_empty(), "missing seqs (first 10): {missing:?}");
    duplicates
}

/// How many entries repeat an earlier one.
fn repeats(seqs: &[u64]) -> usize {
    let mut seen = BTreeSet::new();
    seqs.iter().filter(|&&seq| !seen.insert(seq)).count()
}

fn sensor_lines(n: usize, tag: &str) -> Vec<String> {
    (0..n)
        .map(|i| event_line("temp0", serde_json::json!({"i": i, "tag": tag})))
        .collect()
}

#[test]
fn ten_thousand_events_arrive_in_order() {
    let root = tempfile::tempdir().unwrap();
    let broker = Broker::start(root.path());
    let sub = Subscriber::start(broker.port, EVENTS_FILTER);
    let daemon = Daemon::start(root.path(), &upstream_config(broker.port));
    let acked: BTreeSet<u64> = acked_seqs(&request(&daemon.socket, &sensor_lines(10_000, "a")))
        .into_iter()
        .collect();
    assert_eq!(acked.len(), 10_000);
    wait_until("10,000 events upstream", Duration::from_secs(60), || {
        sub.seqs().iter().filter(|s| acked.contains(s)).count() >= 10_000
    });
    let duplicates = check_delivery(&sub.seqs(), &acked);
    assert_eq!(duplicates, 0, "no outage, no duplicates");
    // Payload and topic follow INTERFACE.md.
    let (topic, first) = sub
        .messages()
        .into_iter()
        .find(|(_, j)| j["seq"].as_u64() == acked.first().copied())
        .unwrap();
    assert_eq!(topic, "edgecap/dev1/events/temp0");
    for key in ["device", "seq", "ts", "kind", "source", "value"] {
        assert!(first.get(key).is_some(), "payload lacks {key}: {first}");
    }
    assert_eq!(first["device"], "dev1");
    assert_eq!(first["kind"], "sensor");
    wait_until("forwarded_seq caught up", Duration::from_secs(10), || {
        daemon.status()["forwarded_seq"].as_u64() >= acked.last().copied()
    });
}

#[test]
fn broker_killed_mid_stream_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(root.path());
    let sub = Subscriber::start(broker.port, EVENTS_FILTER);
    let daemon = Daemon::start(root.path(), &upstream_config(broker.port));
    let mut acked = BTreeSet::new();
    acked.extend(acked_seqs(&request(
        &daemon.socket,
        &sensor_lines(20_000, "before"),
    )));
    // Stop the broker while the backlog is still being forwarded, not after it.
    wait_until("forwarding under way", Duration::from_secs(20), || {
        sub.seqs().len() >= 500
    });
    let forwarded_at_stop = sub.seqs().len();
    broker.stop();
    wait_until("status connected=false", Duration::from_secs(20), || {
        daemon.status()["connected"] == Json::Bool(false)
    });
    // Capture goes on while the broker is down.
    acked.extend(acked_seqs(&request(
        &daemon.socket,
        &sensor_lines(2000, "during"),
    )));
    wait_until("breaker open", Duration::from_secs(20), || {
        daemon.status()["breaker"] == "open"
    });
    broker.restart();
    acked.extend(acked_seqs(&request(
        &daemon.socket,
        &sensor_lines(1000, "after"),
    )));
    wait_until("everything upstream", Duration::from_secs(60), || {
        let seqs: BTreeSet<u64> = sub.seqs().into_iter().collect();
        acked.is_subset(&seqs)
    });
    wait_until("breaker closed again", Duration::from_secs(20), || {
        daemon.status()["breaker"] == "closed" && daemon.status()["connected"] == Json::Bool(true)
    });
    // The subscriber's own session also lives on the restarted broker, which retransmits
    // what it had in flight to the subscriber (DUP flag set). Only resends by the daemon
    // count against its bound.
    let all = check_delivery(&sub.seqs(), &acked);
    let from_daemon = repeats(&sub.first_delivery_seqs());
    println!(
        "broker stopped after {forwarded_at_stop} of 20000 deliveries; \
         duplicates: {all} in all, {from_daemon} resent by the daemon"
    );
    assert!(
        forwarded_at_stop < 20_000,
        "the broker was stopped only after the whole stream had arrived"
    );
    assert!(
        from_daemon <= 32,
        "the daemon resent {from_daemon} events for one outage, max_inflight is 32"
    );
}

#[test]
fn daemon_sigkilled_mid_forward_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let broker = Broker::start(root.path());
    let sub = Subscriber::start(broker.port, EVENTS_FILTER);
    let mut daemon = Daemon::start(root.path(), &upstream_config(broker.port));
    let mut acked = BTreeSet::new();
    acked.extend(acked_seqs(&request(
        &daemon.socket,
        &sensor_lines(5000, "one"),
    )));
    // Kill while forwarding is (very likely) still under way.
    daemon.kill();
    daemon.restart();
    acked.extend(acked_seqs(&request(
        &daemon.socket,
        &sensor_lines(500, "two"),
    )));
    wait_until(
        "everything upstream after a SIGKILL",
        Duration::from_secs(60),
        || {
            let seqs: BTreeSet<u64> = sub.seqs().into_iter().collect();
            acked.is_subset(&seqs)
        },
    );
    check_delivery(&sub.seqs(), &acked);
}

#[test]
fn broker_absent_at_start_then_backlog_drains() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let daemon = Daemon::start(root.path(), &upstream_config(port));
    let acked: BTreeSet<u64> = acked_seqs(&request(&daemon.socket, &sensor_lines(2000, "x")))
        .into_iter()
        .collect();
    wait_until(
        "breaker open without a broker",
        Duration::from_secs(20),
        || daemon.status()["breaker"] == "open",
    );
    let status = daemon.status();
    assert_eq!(status["connected"], false);
    assert!(status["backlog"].as_u64().unwrap() >= 2000, "{status}");
    assert!(status["last_error"].is_string(), "{status}");
    let broker = Broker::start_on(root.path(), port);
    let sub = Subscriber::start(broker.port, EVENTS_FILTER);
    wait_until("backlog drained upstream", Duration::from_secs(60), || {
        let seqs: BTreeSet<u64> = sub.seqs().into_iter().collect();
        acked.is_subset(&seqs)
    });
    wait_until("status backlog 0", Duration::from_secs(20), || {
        daemon.status()["backlog"] == 0
    });
}

#[test]
fn upstream_command_is_stored_and_forwarded() {
    let root = tempfile::tempdir().unwrap();
    let broker = Broker::start(root.path());
    let sub = Subscriber::start(broker.port, EVENTS_FILTER);
    let daemon = Daemon::start(root.path(), &upstream_config(broker.port));
    wait_until("daemon connected", Duration::from_secs(20), || {
        daemon.status()["connected"] == Json::Bool(true)
    });
    let publish = |payload: &str| {
        let status = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1"])
            .args(["-t", "edgecap/dev1/commands/reboot", "-m", payload])
            .status()
            .expect("mosquitto_pub (mosquitto-clients) must be installed");
        assert!(status.success());
    };
    // The daemon's subscription may land just after CONNACK: retry the publish until stored.
    let mut attempts = 0;
    wait_until("command stored", Duration::from_secs(20), || {
        if attempts < 20 {
            attempts += 1;
            publish(r#"{"delay_s":5}"#);
        }
        daemon
            .dump()
            .iter()
            .any(|e| e["kind"] == "command" && e["source"] == "reboot")
    });
    publish("not json");
    wait_until(
        "plain-text command stored as a string",
        Duration::from_secs(20),
        || {
            daemon
                .dump()
                .iter()
                .any(|e| e["kind"] == "command" && e["value"] == "not json")
        },
    );
    let stored = daemon
        .dump()
        .into_iter()
        .find(|e| e["kind"] == "command" && e["source"] == "reboot")
        .unwrap();
    assert_eq!(stored["value"], serde_json::json!({"delay_s": 5}));
    let seq = stored["seq"].as_u64().unwrap();
    wait_until(
        "command forwarded upstream",
        Duration::from_secs(20),
        || {
            sub.messages().iter().any(|(t, j)| {
                t == "edgecap/dev1/events/reboot" && j["seq"] == seq && j["kind"] == "command"
            })
        },
    );
}
