//! Forwarding against the raw publisher, all to one local mosquitto with a subscriber attached:
//! end to end (producers → daemon → broker → subscriber) under `always` and `interval`, and the
//! drain of a backlog captured while no broker listened (the forwarder alone).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::broker::{free_port, raw_publisher, Mosquitto, Subscriber};
use crate::daemon::{produce, Daemon};
use crate::report::{per_s, Report};
use crate::stats::{median, rate};
use crate::Scale;

const DELIVERY_DEADLINE: Duration = Duration::from_secs(900);

pub fn run(report: &mut Report, scale: &Scale, root: &Path, runtime: &tokio::runtime::Runtime) {
    let port = free_port();
    let _broker = Mosquitto::start(root, port);
    let (mut raw, mut always, mut interval) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..scale.rounds {
        eprintln!("forwarding: round {}/{}", round + 1, scale.rounds);
        let (rate_always, template) =
            runtime.block_on(end_to_end(root, port, "always", scale.forward_events));
        let (rate_interval, _) =
            runtime.block_on(end_to_end(root, port, "interval", scale.forward_events));
        let rate_raw = runtime.block_on(async {
            let mut subscriber = Subscriber::start(port, "edgecap/braw0/events/#").await;
            raw_publisher(
                port,
                "braw0",
                &template,
                scale.forward_events,
                &mut subscriber,
            )
            .await
        });
        always.push(rate_always);
        interval.push(rate_interval);
        raw.push(rate_raw);
    }
    let raw = median(raw);
    report.figure("raw_publish_per_s", raw);
    report.row(
        "forward",
        "raw rumqttc QoS 1 publisher (baseline)",
        per_s(raw),
        "same topic shape, payload, window 64",
    );
    for (name, rates) in [("always", always), ("interval", interval)] {
        let rate = median(rates);
        report.figure(&format!("forward_{name}_per_s"), rate);
        report.row(
            "forward",
            format!("end to end, sync = {name}"),
            per_s(rate),
            format!("{:.2}x raw", rate / raw),
        );
    }
    report.ratio("forward_ratio", "forward_always_per_s", "raw_publish_per_s");
    report.ratio(
        "forward_interval_ratio",
        "forward_interval_per_s",
        "raw_publish_per_s",
    );
    let drain = drain(root, scale.drain_events, runtime);
    report.figure("drain_per_s", drain);
    report.row(
        "forward",
        format!(
            "backlog drain of {} events (forwarder alone)",
            crate::report::thousands(scale.drain_events as f64)
        ),
        per_s(drain),
        format!("{:.2}x raw; start and connect included", drain / raw),
    );
    report.ratio("drain_ratio", "drain_per_s", "raw_publish_per_s");
}

/// Events/s from the first event sent until the subscriber has all `events`; and the first
/// message the subscriber got (the raw publisher's template).
async fn end_to_end(root: &Path, port: u16, sync: &str, events: u64) -> (f64, (String, Vec<u8>)) {
    let mut subscriber = Subscriber::start(port, "edgecap/bench/events/#").await;
    let name = format!("e2e-{sync}");
    let _ = std::fs::remove_dir_all(root.join(&name));
    let daemon = Daemon::start(root, &name, sync, Some(port));
    let start = Instant::now();
    let socket = daemon.socket.clone();
    tokio::task::spawn_blocking(move || produce(&socket, 4, events))
        .await
        .expect("producers");
    subscriber.wait_for(events, DELIVERY_DEADLINE).await;
    let elapsed = start.elapsed();
    tokio::task::spawn_blocking(move || daemon.stop())
        .await
        .expect("stop");
    let template = subscriber.first().expect("a message arrived");
    (rate(events, elapsed), template)
}

/// Captures `events` with the broker absent, stops the daemon, starts the broker and a
/// subscriber, then times the daemon's start until the subscriber has every event.
fn drain(root: &Path, events: u64, runtime: &tokio::runtime::Runtime) -> f64 {
    eprintln!("forwarding: capturing a backlog of {events} events");
    let port = free_port();
    let name = "drain";
    let _ = std::fs::remove_dir_all(root.join(name));
    let daemon = Daemon::start(root, name, "always", Some(port));
    produce(&daemon.socket, 16, events);
    daemon.stop();
    let _broker = Mosquitto::start(root, port);
    eprintln!("forwarding: draining");
    let mut subscriber = runtime.block_on(Subscriber::start(port, "edgecap/bench/events/#"));
    // Started on this thread: PR_SET_PDEATHSIG fires when the spawning *thread* ends, and a
    // blocking-pool thread ends after ten idle seconds, killing a daemon it started.
    let start = Instant::now();
    let daemon = Daemon::start(root, name, "always", Some(port));
    runtime.block_on(subscriber.wait_for(events, DELIVERY_DEADLINE));
    let elapsed = start.elapsed();
    daemon.stop();
    rate(events, elapsed)
}
