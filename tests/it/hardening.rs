//! Daemon hardening (issue 9), black-box: the real binary against a real mosquitto, a fake
//! broker, a relay that swallows a PUBACK, and an LD_PRELOAD shim that fails fdatasync. Each
//! test is named after the failure it catches.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::support::*;

/// `mosquitto_pub` of one QoS 1 message (retained when asked).
fn mqtt_publish(port: u16, topic: &str, payload: &[u8], retain: bool) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), payload).unwrap();
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-q",
        "1",
        "-t",
        topic,
    ]);
    cmd.arg("-f").arg(file.path());
    if retain {
        cmd.arg("-r");
    }
    let out = output_within(&mut cmd, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The stored events of `kind`, from `edgecap log dump`.
fn stored(daemon: &Daemon, kind: &str) -> Vec<Json> {
    daemon
        .dump()
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

/// Stored `system` events named `name`.
fn system_events(daemon: &Daemon, name: &str) -> Vec<Json> {
    stored(daemon, "system")
        .into_iter()
        .filter(|e| e["value"]["event"] == name)
        .collect()
}

/// Waits for the daemon process to exit by itself; its status.
fn wait_exit(daemon: &mut Daemon, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = daemon.try_wait() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "daemon still running after {timeout:?}"
        );
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

#[test]
fn command_published_while_the_daemon_was_stopped_is_stored_after_restart() {
    let root = tempfile::tempdir().unwrap();
    let broker = Broker::start(root.path());
    let mut daemon = Daemon::start(root.path(), &upstream_config(broker.port));
    wait_until("subscribed to commands", Duration::from_secs(20), || {
        daemon.log_text().contains("subscribed to commands")
    });
    assert!(daemon.terminate().success());
    mqtt_publish(
        broker.port,
        "edgecap/dev1/commands/valve",
        br#"{"open":true}"#,
        false,
    );
    daemon.restart();
    wait_until(
        "the offline command stored",
        Duration::from_secs(20),
        || {
            stored(&daemon, "command")
                .iter()
                .any(|e| e["source"] == "valve" && e["value"]["open"] == true)
        },
    );
}

#[test]
fn retained_command_is_stored_once_across_broker_and_daemon_restarts() {
    let root = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(root.path());
    mqtt_publish(broker.port, "edgecap/dev1/commands/mode", b"\"eco\"", true);
    let mut daemon = Daemon::start(root.path(), &upstream_config(broker.port));
    let count = |d: &Daemon| {
        stored(d, "command")
            .iter()
            .filter(|e| e["source"] == "mode")
            .count()
    };
    wait_until(
        "the retained command stored",
        Duration::from_secs(20),
        || count(&daemon) == 1,
    );
    let connections = |d: &Daemon| d.log_text().matches("connected to broker").count();
    for _ in 0..2 {
        let before = connections(&daemon);
        broker.stop();
        broker.restart();
        wait_until("reconnected", Duration::from_secs(30), || {
            connections(&daemon) > before
        });
    }
    // A new run subscribes again: the broker resends the retained command.
    assert!(daemon.terminate().success());
    daemon.restart();
    wait_until("subscribed again", Duration::from_secs(20), || {
        daemon.log_text().matches("subscribed to commands").count() >= 2
    });
    // A live event after the resubscription: once it is stored, the retained copy that the
    // broker sent before it has been handled too.
    acked_seqs(&request(&daemon.socket, &[event_line("probe", 1)]));
    mqtt_publish(broker.port, "edgecap/dev1/commands/marker", b"1", false);
    wait_until("the marker command stored", Duration::from_secs(20), || {
        stored(&daemon, "command")
            .iter()
            .any(|e| e["source"] == "marker")
    });
    assert_eq!(count(&daemon), 1, "retained command stored more than once");
    // A changed retained value is a new command.
    mqtt_publish(
        broker.port,
        "edgecap/dev1/commands/mode",
        b"\"boost\"",
        true,
    );
    wait_until(
        "the changed command stored",
        Duration::from_secs(20),
        || count(&daemon) == 2,
    );
}

#[test]
fn oversized_retained_command_does_not_break_forwarding() {
    let root = tempfile::tempdir().unwrap();
    let broker = Broker::start(root.path());
    // Over the 1 MiB incoming packet limit: cannot even be read.
    mqtt_publish(
        broker.port,
        "edgecap/dev1/commands/huge",
        &vec![b'x'; 1_200_000],
        true,
    );
    let sub = Subscriber::start(broker.port, "edgecap/dev1/events/#");
    let daemon = Daemon::start(root.path(), &upstream_config(broker.port));
    let acked = acked_seqs(&request(
        &daemon.socket,
        &[event_line("t", 1), event_line("t", 2)],
    ));
    wait_until(
        "events forwarded despite the oversized command",
        Duration::from_secs(30),
        || acked.iter().all(|s| sub.seqs().contains(s)),
    );
    wait_until("the refusal recorded", Duration::from_secs(20), || {
        !system_events(&daemon, "command_refused").is_empty()
    });
    let refusal = &system_events(&daemon, "command_refused")[0]["value"];
    assert!(refusal["bytes"].as_u64() > Some(1 << 20), "{refusal}");
    let status = daemon.status();
    assert!(
        status["current_error"]
            .as_str()
            .is_some_and(|e| e.contains("paused")),
        "{status}"
    );
    // Events keep flowing on the following connections too.
    let more = acked_seqs(&request(&daemon.socket, &[event_line("t", 3)]));
    wait_until("a later event forwarded", Duration::from_secs(30), || {
        sub.seqs().contains(&more[0])
    });
    assert!(
        stored(&daemon, "command").is_empty(),
        "an oversized command was stored"
    );
}

#[test]
fn command_over_max_event_bytes_is_acknowledged_and_refused_not_redelivered_forever() {
    let root = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(root.path());
    // Over ingest.max_event_bytes (4096) but under the packet limit: read, acked, refused.
    mqtt_publish(
        broker.port,
        "edgecap/dev1/commands/big",
        &vec![b'y'; 10_000],
        true,
    );
    let mut daemon = Daemon::start(root.path(), &upstream_config(broker.port));
    wait_until("the refusal recorded", Duration::from_secs(20), || {
        !system_events(&daemon, "command_refused").is_empty()
    });
    let refusal = &system_events(&daemon, "command_refused")[0]["value"];
    assert_eq!(refusal["bytes"], 10_000, "{refusal}");
    assert!(refusal["reason"]
        .as_str()
        .unwrap()
        .contains("max_event_bytes"));
    assert!(stored(&daemon, "command").is_empty());
    // Acknowledged: a reconnect on the resumed session brings no redelivery.
    let connections = |d: &Daemon| d.log_text().matches("connected to broker").count();
    let before = connections(&daemon);
    broker.stop();
    broker.restart();
    wait_until("reconnected", Duration::from_secs(30), || {
        connections(&daemon) > before
    });
    acked_seqs(&request(&daemon.socket, &[event_line("probe", 1)]));
    mqtt_publish(broker.port, "edgecap/dev1/commands/marker", b"1", false);
    wait_until("the marker stored", Duration::from_secs(20), || {
        stored(&daemon, "command")
            .iter()
            .any(|e| e["source"] == "marker")
    });
    assert_eq!(
        system_events(&daemon, "command_refused").len(),
        1,
        "redelivered"
    );
    // A new run resubscribes: the broker resends the retained value, refused once more; it
    // is not redelivered on every reconnect in between.
    assert!(daemon.terminate().success());
    daemon.restart();
    wait_until(
        "refused again, as the retained value",
        Duration::from_secs(20),
        || system_events(&daemon, "command_refused").len() == 2,
    );
}

#[test]
fn event_whose_upstream_encoding_exceeds_the_packet_limit_is_refused_at_ingest() {
    let root = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with_storage(
        root.path(),
        "segment_size = \"1MiB\"\nmax_disk = \"256MiB\"\n",
        "max_event_bytes = 20480\n",
    );
    // 4000 × `9e15,` is 20 KB of JSON that re-encodes as 76 KB (`9000000000000000.0`).
    let values = vec!["9e15"; 4000].join(",");
    let line = format!(r#"{{"source":"f","value":[{values}]}}"#);
    assert!(line.len() < 20480);
    let replies = request(&daemon.socket, &[line, event_line("f", 1)]);
    assert_eq!(replies[0]["ok"], false, "{}", replies[0]);
    let error = replies[0]["error"].as_str().unwrap();
    assert!(
        error.contains("`value`") && error.contains("MQTT packet"),
        "{error}"
    );
    assert_eq!(replies[1]["ok"], true, "the connection stays usable");
    assert_eq!(
        stored(&daemon, "sensor").len(),
        1,
        "the refused event was stored"
    );
}

/// A fake broker: answers every CONNECT with a CONNACK, then closes. Counts connections.
fn accept_then_drop_broker() -> (u16, Arc<AtomicUsize>, StopOnDrop) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (c, s) = (count.clone(), stop.clone());
    std::thread::spawn(move || {
        accept_until(listener, s, |mut stream| {
            c.fetch_add(1, Ordering::Relaxed);
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut buf = [0u8; 512];
            let _ = stream.read(&mut buf); // CONNECT
            let _ = stream.write_all(&[0x20, 0x02, 0x00, 0x00]); // CONNACK accepted
            std::thread::park_timeout(Duration::from_millis(50));
        })
    });
    (port, count, StopOnDrop(stop))
}

#[test]
fn broker_that_drops_right_after_connack_opens_the_breaker() {
    let root = tempfile::tempdir().unwrap();
    let (port, connections, stop) = accept_then_drop_broker();
    let config = upstream_config(port).replace("open_secs = 1", "open_secs = 30");
    let daemon = Daemon::start(root.path(), &config);
    wait_until("the breaker open", Duration::from_secs(20), || {
        daemon.status()["breaker"] == "open"
    });
    let status = daemon.status();
    let error = status["current_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("client_id"),
        "duplicate client id not suspected: {status}"
    );
    let at_open = connections.load(Ordering::Relaxed);
    assert!(
        at_open <= 10,
        "{at_open} connections before the breaker opened"
    );
    // While open (30 s), no more attempts.
    let probe = Instant::now();
    while probe.elapsed() < Duration::from_secs(2) {
        assert_eq!(daemon.status()["breaker"], "open");
        std::thread::park_timeout(Duration::from_millis(100));
    }
    assert_eq!(
        connections.load(Ordering::Relaxed),
        at_open,
        "reconnected while open"
    );
    drop(stop);
}

/// Reads one MQTT packet (fixed header, remaining length, body) from `from`.
fn read_packet(from: &mut TcpStream) -> Option<Vec<u8>> {
    let mut packet = vec![0u8; 1];
    from.read_exact(&mut packet).ok()?;
    let (mut length, mut shift) = (0usize, 0);
    loop {
        let mut byte = [0u8; 1];
        from.read_exact(&mut byte).ok()?;
        packet.push(byte[0]);
        length |= usize::from(byte[0] & 0x7f) << shift;
        shift += 7;
        if byte[0] & 0x80 == 0 || shift > 21 {
            break;
        }
    }
    let start = packet.len();
    packet.resize(start + length, 0);
    from.read_exact(&mut packet[start..]).ok()?;
    Some(packet)
}

/// What a relay does with one MQTT packet.
#[derive(Clone, Copy, PartialEq)]
enum Pass {
    Forward,
    Swallow,
    /// Close both directions (the broker dropping the client).
    Close,
}

/// Copies MQTT packets one way, asking `judge` about each; closes both sockets at the end.
fn pump(mut from: TcpStream, mut to: TcpStream, judge: impl Fn(&[u8]) -> Pass) {
    while let Some(packet) = read_packet(&mut from) {
        match judge(&packet) {
            Pass::Forward if to.write_all(&packet).is_ok() => {}
            Pass::Swallow => {}
            _ => break,
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// A loopback relay to the broker on `upstream`: every daemon connection gets its own broker
/// connection; `to_daemon` and `to_broker` judge each packet of their direction.
fn relay(
    upstream: u16,
    to_daemon: impl Fn(&[u8]) -> Pass + Clone + Send + 'static,
    to_broker: impl Fn(&[u8]) -> Pass + Clone + Send + 'static,
) -> (u16, StopOnDrop) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        accept_until(listener, flag, |client| {
            let Ok(broker) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            let (c, b) = (client.try_clone().unwrap(), broker.try_clone().unwrap());
            let (up, down) = (to_broker.clone(), to_daemon.clone());
            std::thread::spawn(move || pump(c, b, up));
            std::thread::spawn(move || pump(broker, client, down));
        })
    });
    (port, StopOnDrop(stop))
}

/// A relay that swallows the first PUBACK the broker sends to the daemon (and passes
/// everything else, PINGRESP included).
fn relay_swallowing_one_puback(upstream: u16) -> ((u16, StopOnDrop), Arc<AtomicUsize>) {
    let swallowed = Arc::new(AtomicUsize::new(0));
    let counter = swallowed.clone();
    let to_daemon = move |packet: &[u8]| {
        let first_puback = packet[0] >> 4 == 4 && counter.load(Ordering::Relaxed) == 0;
        if first_puback {
            counter.fetch_add(1, Ordering::Relaxed);
            return Pass::Swallow;
        }
        Pass::Forward
    };
    (
        relay(upstream, to_daemon, |_: &[u8]| Pass::Forward),
        swallowed,
    )
}

#[test]
fn swallowed_puback_makes_the_daemon_reconnect_and_resend() {
    let root = tempfile::tempdir().unwrap();
    let broker = Broker::start(root.path());
    let sub = Subscriber::start(broker.port, "edgecap/dev1/events/#");
    let ((relay, _relay), swallowed) = relay_swallowing_one_puback(broker.port);
    let config = upstream_config(relay).replace("keep_alive_secs = 5", "keep_alive_secs = 2");
    let daemon = Daemon::start(root.path(), &config);
    let seqs = acked_seqs(&request(&daemon.socket, &[event_line("t", 1)]));
    wait_until(
        "forwarded_seq past the event",
        Duration::from_secs(30),
        || daemon.status()["forwarded_seq"].as_u64() >= seqs.last().copied(),
    );
    assert_eq!(
        swallowed.load(Ordering::Relaxed),
        1,
        "the relay swallowed no PUBACK"
    );
    assert!(
        daemon.log_text().contains("no PUBACK for seq"),
        "{}",
        daemon.log_text()
    );
    wait_until("the event upstream", Duration::from_secs(10), || {
        sub.seqs().contains(&seqs[0])
    });
}

#[test]
fn sigterm_finishes_with_a_deaf_producer_and_a_stalled_follower() {
    let root = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(root.path(), "");
    let lines: Vec<String> = (0..20_000).map(|i| event_line("t", i)).collect();
    acked_seqs(&request(&daemon.socket, &lines));
    // A follower that never reads: its socket buffer fills with the 20,000 stored events.
    let mut follower = UnixStream::connect(&daemon.socket).unwrap();
    follower
        .write_all(b"{\"op\":\"follow\",\"from\":1}\n")
        .unwrap();
    // A producer that sends and never reads its answers.
    let deaf = UnixStream::connect(&daemon.socket).unwrap();
    let mut writer = deaf.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let flood = std::thread::spawn(move || {
        let line = format!("{}\n", event_line("deaf", 1));
        for _ in 0..200_000 {
            if writer.write_all(line.as_bytes()).is_err() {
                return;
            }
        }
    });
    wait_until(
        "the deaf producer's events stored",
        Duration::from_secs(20),
        || daemon.status()["appended_seq"].as_u64() > Some(20_200),
    );
    let started = Instant::now();
    let status = daemon.terminate();
    let took = started.elapsed();
    assert!(
        status.success(),
        "exit {status:?}; log:\n{}",
        daemon.log_text()
    );
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");
    drop((follower, deaf));
    flood.join().unwrap();
    daemon.restart();
    let text = daemon.log_text();
    assert!(
        system_events(&daemon, "recovery").is_empty(),
        "the next start saw an unclean shutdown:\n{text}"
    );
}

/// Builds the fdatasync-failing shim; `None` (with the reason printed) without a C compiler.
fn build_shim(dir: &Path) -> Option<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/it/fail_fdatasync.c");
    let out = dir.join("fail_fdatasync.so");
    let in_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("cc").is_file()));
    if !in_path {
        eprintln!("SKIPPED: no C compiler (cc) to build the LD_PRELOAD shim");
        return None;
    }
    let mut cc = Command::new("cc");
    cc.args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(&source)
        .arg("-ldl");
    let built = output_within(&mut cc, Duration::from_secs(60));
    assert!(
        built.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    Some(out)
}

/// Writes one request line and reads its reply if one comes, ignoring every error: for a
/// daemon that may be ending at that moment.
fn send_ignoring_errors(socket: &Path, line: &str) {
    if let Ok(mut stream) = UnixStream::connect(socket) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        if stream.write_all(format!("{line}\n").as_bytes()).is_ok() {
            let _ = BufReader::new(stream).read_line(&mut String::new());
        }
    }
}

/// The daemon's environment with the shim loaded: `ops` (`sync`, `pwrite`, `all`) fail with
/// EIO on files whose path contains `matching` (all files when empty) while `trigger` exists.
fn shim_env(shim: &Path, trigger: &Path, ops: &str, matching: &str) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), shim.display().to_string()),
        ("EDGECAP_SHIM_FAIL_IF".into(), trigger.display().to_string()),
        ("EDGECAP_SHIM_FAIL_OPS".into(), ops.into()),
        ("EDGECAP_SHIM_FAIL_MATCH".into(), matching.into()),
    ]
}

#[test]
fn failed_fdatasync_ends_the_process_non_zero_and_a_restart_recovers_every_acked_event() {
    storage_fault_ends_the_process_and_a_restart_recovers("sync", "");
}

/// A segment `pwrite` that fails with EIO (it writes nothing) is the same fatal fault.
#[test]
fn failed_pwrite_ends_the_process_non_zero_and_a_restart_recovers_every_acked_event() {
    storage_fault_ends_the_process_and_a_restart_recovers("pwrite", ".seg");
}

/// Acks 500 events, then makes the shim fail `ops` (on files whose path contains `matching`):
/// the next event is refused, the process exits non-zero, and a restart without the fault
/// serves every acked event and records the unclean stop.
fn storage_fault_ends_the_process_and_a_restart_recovers(ops: &str, matching: &str) {
    let root = tempfile::tempdir().unwrap();
    let Some(shim) = build_shim(root.path()) else {
        return;
    };
    let trigger = root.path().join("fail-now");
    let mut daemon = Daemon::start(root.path(), "");
    daemon.terminate();
    daemon.env = shim_env(&shim, &trigger, ops, matching);
    daemon.restart();
    let lines: Vec<String> = (0..500).map(|i| event_line("t", i)).collect();
    let acked = acked_seqs(&request(&daemon.socket, &lines));
    std::fs::write(&trigger, b"").unwrap();
    let replies = request(&daemon.socket, &[event_line("t", "after")]);
    assert_eq!(
        replies[0]["ok"], false,
        "acked without a durable sync: {}",
        replies[0]
    );
    let status = wait_exit(&mut daemon, Duration::from_secs(20));
    assert!(
        !status.success(),
        "a poisoned log must end the process non-zero"
    );
    assert!(
        daemon.log_text().contains("systemd restarts"),
        "{}",
        daemon.log_text()
    );
    std::fs::remove_file(&trigger).unwrap();
    daemon.env.clear();
    daemon.restart();
    let values: Vec<u64> = stored(&daemon, "sensor")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    for seq in &acked {
        assert!(values.contains(seq), "acked seq {seq} lost");
    }
    assert_eq!(
        system_events(&daemon, "recovery").len(),
        1,
        "unclean stop not recorded"
    );
    assert_eq!(daemon.status()["healthy"], true);
    verify_clean(&daemon.dir);
}

#[test]
fn followers_whose_filter_matches_nothing_do_not_starve_the_runtime() {
    let root = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(root.path(), "");
    let lines: Vec<String> = (0..300_000).map(|i| event_line("t", i)).collect();
    acked_seqs(&request(&daemon.socket, &lines));
    let followers: Vec<UnixStream> = (0..6)
        .map(|_| {
            let mut s = UnixStream::connect(&daemon.socket).unwrap();
            s.write_all(b"{\"op\":\"follow\",\"from\":1,\"source\":\"nothing\"}\n")
                .unwrap();
            s
        })
        .collect();
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let asked = Instant::now();
        let status = daemon.status();
        worst = worst.max(asked.elapsed());
        assert_eq!(status["healthy"], true);
    }
    assert!(
        worst < Duration::from_secs(1),
        "status took {worst:?} behind the followers"
    );
    drop(followers);
}

#[test]
fn a_regular_file_at_the_socket_path_is_never_removed() {
    let root = tempfile::tempdir().unwrap();
    let socket = root.path().join("ingest.sock");
    std::fs::write(&socket, b"precious").unwrap();
    let config = root.path().join("edgecap.toml");
    std::fs::write(
        &config,
        format!(
            "device_id = \"dev1\"\n[storage]\ndir = \"{}\"\n[ingest]\nsocket = \"{}\"\n",
            root.path().join("data").display(),
            socket.display()
        ),
    )
    .unwrap();
    let log = root.path().join("daemon.log");
    let mut child = edgecap()
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::park_timeout(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the daemon started over a regular file: {status:?}\n{stderr}"
    );
    assert!(stderr.contains("not a socket"), "{stderr}");
    assert_eq!(std::fs::read(&socket).unwrap(), b"precious");
}

/// MQTT's variable-length "remaining length".
fn remaining_length(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return out;
        }
    }
}

/// A scripted broker for one connection: CONNACK, SUBACK, then one QoS 1 PUBLISH on `topic`
/// (which mosquitto itself would refuse to carry), then PINGRESPs until the daemon leaves.
fn broker_publishing_on(topic: &'static str) -> u16 {
    scripted_broker(0x01, Some(topic))
}

/// A scripted broker for one connection: CONNACK, a SUBACK with return code `suback`, then
/// (when `topic` is given) one QoS 1 PUBLISH on it, then PINGRESPs until the daemon leaves.
fn scripted_broker(suback: u8, topic: Option<&'static str>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let _connect = read_packet(&mut stream);
        stream.write_all(&[0x20, 0x02, 0x00, 0x00]).unwrap();
        while let Some(packet) = read_packet(&mut stream) {
            match packet[0] >> 4 {
                8 => {
                    let length_bytes =
                        packet[1..].iter().take_while(|b| **b & 0x80 != 0).count() + 1;
                    let header = 1 + length_bytes;
                    let pkid = [packet[header], packet[header + 1]];
                    stream
                        .write_all(&[0x90, 0x03, pkid[0], pkid[1], suback])
                        .unwrap();
                    let Some(topic) = topic else { continue };
                    let mut publish = vec![0x32];
                    publish.extend(remaining_length(2 + topic.len() + 2 + 1));
                    publish.extend((topic.len() as u16).to_be_bytes());
                    publish.extend(topic.as_bytes());
                    publish.extend([0x00, 0x01, b'1']);
                    stream.write_all(&publish).unwrap();
                }
                12 => stream.write_all(&[0xd0, 0x00]).unwrap(),
                _ => {}
            }
        }
    });
    port
}

#[test]
fn command_topic_with_a_newline_cannot_inject_a_log_line() {
    let root = tempfile::tempdir().unwrap();
    let port = broker_publishing_on("edgecap/dev1/commands/x\nFAKE fatal: injected");
    let daemon = Daemon::start(root.path(), &upstream_config(port));
    wait_until("the refusal recorded", Duration::from_secs(20), || {
        !system_events(&daemon, "command_refused").is_empty()
    });
    let injected = BufReader::new(daemon.log_text().as_bytes())
        .lines()
        .any(|l| l.unwrap().starts_with("FAKE"));
    assert!(!injected, "a topic started a log line of its own");
}

#[test]
fn current_error_clears_when_the_link_recovers_and_last_error_stays() {
    let root = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(root.path());
    let config = upstream_config(broker.port).replace("keep_alive_secs = 5", "keep_alive_secs = 1");
    let daemon = Daemon::start(root.path(), &config);
    wait_until("connected", Duration::from_secs(20), || {
        daemon.status()["connected"] == true
    });
    broker.stop();
    wait_until("the error reported", Duration::from_secs(20), || {
        daemon.status()["current_error"].is_string()
    });
    broker.restart();
    wait_until("current_error cleared", Duration::from_secs(30), || {
        daemon.status()["current_error"].is_null()
    });
    assert!(
        daemon.status()["last_error"].is_string(),
        "last_error forgot the outage"
    );
}

#[test]
fn stored_event_too_large_for_upstream_is_set_aside_and_the_rest_forwarded() {
    use edgecap_storage::{Event, Kind, Log, LogOptions, Value};
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    {
        // Stored by an older version (or another tool): 4000 floats of 9e15 re-encode as
        // 76 KB of JSON, over the 64 KiB packet limit.
        let options = LogOptions {
            segment_bytes: 1 << 20,
            ..LogOptions::default()
        };
        let (log, _) = Log::open(&dir, options).unwrap();
        let floats = Value::Array(vec![Value::Float(9e15); 4000]);
        log.append(Event::new(Kind::Sensor, "big", floats).unwrap())
            .unwrap();
        log.append(Event::new(Kind::Sensor, "small", Value::Int(1)).unwrap())
            .unwrap();
        log.sync().unwrap();
    }
    let broker = Broker::start(root.path());
    let sub = Subscriber::start(broker.port, "edgecap/dev1/events/#");
    let daemon = Daemon::start_with_storage(
        root.path(),
        "segment_size = \"1MiB\"\nmax_disk = \"256MiB\"\n",
        &format!("max_event_bytes = 20480\n{}", upstream_config(broker.port)),
    );
    wait_until("the small event forwarded", Duration::from_secs(30), || {
        sub.seqs().contains(&2)
    });
    assert!(!sub.seqs().contains(&1), "the oversized event was sent");
    wait_until("the skip recorded", Duration::from_secs(10), || {
        !system_events(&daemon, "forward_skip").is_empty()
    });
    let skip = &system_events(&daemon, "forward_skip")[0]["value"];
    assert_eq!(skip["seq"], 1, "{skip}");
    assert_eq!(daemon.status()["skipped_events"], 1);
    wait_until("the cursor past both", Duration::from_secs(10), || {
        daemon.status()["forwarded_seq"].as_u64() >= Some(2)
    });
}

/// A relay to the broker on `upstream` that closes the connection whenever the daemon
/// publishes a payload containing `marker` (a broker that rejects one message by dropping
/// the client, as brokers do with a packet they refuse).
fn relay_closing_on(upstream: u16, marker: &'static str) -> (u16, StopOnDrop) {
    let to_broker = move |packet: &[u8]| {
        let publish = packet[0] >> 4 == 3;
        let marked = packet.windows(marker.len()).any(|w| w == marker.as_bytes());
        if publish && marked {
            Pass::Close
        } else {
            Pass::Forward
        }
    };
    relay(upstream, |_: &[u8]| Pass::Forward, to_broker)
}

#[test]
fn event_that_makes_the_broker_drop_us_every_time_is_quarantined() {
    let root = tempfile::tempdir().unwrap();
    let broker = Broker::start(root.path());
    let sub = Subscriber::start(broker.port, "edgecap/dev1/events/#");
    let (relay, _relay) = relay_closing_on(broker.port, "poison-pill");
    // keep-alive 1 s: a suspect is retried alone once a connection has lived 1 s.
    let config = upstream_config(relay).replace("keep_alive_secs = 5", "keep_alive_secs = 1");
    let daemon = Daemon::start(root.path(), &config);
    let lines = [
        event_line("t", 1),
        event_line("t", "poison-pill"),
        event_line("t", 3),
    ];
    let seqs = acked_seqs(&request(&daemon.socket, &lines));
    wait_until(
        "the event after the pill forwarded",
        Duration::from_secs(60),
        || sub.seqs().contains(&seqs[2]),
    );
    assert!(!sub.seqs().contains(&seqs[1]));
    let skips = system_events(&daemon, "forward_skip");
    assert_eq!(skips.len(), 1, "{skips:?}");
    assert_eq!(skips[0]["value"]["seq"], seqs[1]);
}

#[test]
fn drop_event_is_durable_with_the_batch_that_caused_it() {
    let root = tempfile::tempdir().unwrap();
    // 10 segments of 64 KiB, no forwarder: every new segment drops the oldest.
    let daemon = Daemon::start_with_storage(
        root.path(),
        "segment_size = \"64KiB\"\nmax_disk = \"640KiB\"\non_full = \"drop_oldest\"\n",
        "",
    );
    let payload = "x".repeat(1000);
    let mut saw_drop = false;
    for round in 0..60 {
        let lines: Vec<String> = (0..20)
            .map(|i| event_line("t", format!("{payload}{round}{i}")))
            .collect();
        acked_seqs(&request(&daemon.socket, &lines));
        let status = daemon.status();
        assert_eq!(
            status["durable_seq"], status["appended_seq"],
            "after the acks of round {round}, something appended is not durable: {status}"
        );
        saw_drop |= status["dropped_events"].as_u64() > Some(0);
    }
    assert!(
        saw_drop,
        "the budget never dropped: the test proves nothing"
    );
}

/// The shim, its trigger file (absent), a broker and a subscriber to the daemon's events: what
/// the cursor-fault tests start from. `None` (reason printed) without a C compiler.
struct ShimRig {
    shim: PathBuf,
    trigger: PathBuf,
    broker: Broker,
    sub: Subscriber,
}

impl ShimRig {
    fn start(root: &Path) -> Option<ShimRig> {
        let shim = build_shim(root)?;
        let broker = Broker::start(root);
        let sub = Subscriber::start(broker.port, "edgecap/dev1/events/#");
        Some(ShimRig {
            shim,
            trigger: root.join("fail-now"),
            broker,
            sub,
        })
    }
}

#[test]
fn cursor_write_failure_ends_the_process_non_zero_and_a_restart_forwards_on() {
    let root = tempfile::tempdir().unwrap();
    let Some(ShimRig {
        shim,
        trigger,
        broker,
        sub,
    }) = ShimRig::start(root.path())
    else {
        return;
    };
    let mut daemon = Daemon::start(root.path(), &upstream_config(broker.port));
    let first = acked_seqs(&request(&daemon.socket, &[event_line("t", 1)]));
    wait_until("the cursor persisted", Duration::from_secs(20), || {
        daemon.status()["forwarded_seq"].as_u64() >= first.last().copied()
    });
    daemon.terminate();
    daemon.env = shim_env(&shim, &trigger, "sync", ".cursor");
    daemon.restart();
    let second = acked_seqs(&request(&daemon.socket, &[event_line("t", 2)]));
    std::fs::write(&trigger, b"").unwrap();
    // The next cursor write fails: this event's forwarding makes one (its own ack may or may
    // not come before the fault).
    send_ignoring_errors(&daemon.socket, &event_line("t", 3));
    let status = wait_exit(&mut daemon, Duration::from_secs(20));
    assert!(
        !status.success(),
        "a cursor that cannot be written must end the process"
    );
    assert!(daemon
        .log_text()
        .contains("cannot persist the forward cursor"));
    daemon.env.clear();
    daemon.restart();
    wait_until(
        "forwarding resumed past the failure",
        Duration::from_secs(20),
        || daemon.status()["forwarded_seq"].as_u64() >= second.last().copied(),
    );
    assert!(sub.seqs().contains(&second[0]));
}

/// A cursor file that cannot be created for lack of space (ENOSPC from its fsync) damages nothing:
/// it is retried, forwarding goes on, and the daemon does not exit into a crash loop (every
/// restart would fail the same way). Once the file can be written it is, and the error clears.
#[test]
fn first_cursor_that_cannot_be_created_is_retried_not_a_crash_loop() {
    let root = tempfile::tempdir().unwrap();
    let Some(ShimRig {
        shim,
        trigger,
        broker,
        sub,
    }) = ShimRig::start(root.path())
    else {
        return;
    };
    std::fs::write(&trigger, b"").unwrap();
    let mut daemon = Daemon::start(root.path(), "");
    daemon.terminate();
    let mut config = std::fs::read_to_string(&daemon.config).unwrap();
    config.push_str(&upstream_config(broker.port));
    std::fs::write(&daemon.config, config).unwrap();
    daemon.env = shim_env(&shim, &trigger, "sync", ".cursor");
    daemon
        .env
        .push(("EDGECAP_SHIM_ERRNO".into(), "ENOSPC".into()));
    daemon.restart();
    let acked = acked_seqs(&request(&daemon.socket, &[event_line("t", 1)]));
    wait_until(
        "forwarded without a cursor file",
        Duration::from_secs(20),
        || sub.seqs().contains(&acked[0]),
    );
    wait_until("the cursor error reported", Duration::from_secs(20), || {
        daemon.status()["current_error"]
            .as_str()
            .is_some_and(|e| e.contains("cursor file (retrying)"))
    });
    assert!(
        daemon.try_wait().is_none(),
        "the daemon exited on a cursor it could not create:\n{}",
        daemon.log_text()
    );
    std::fs::remove_file(&trigger).unwrap();
    let cursor = daemon.dir.join("forward.cursor");
    wait_until(
        "the cursor written, the error cleared",
        Duration::from_secs(20),
        || cursor.exists() && daemon.status()["current_error"].is_null(),
    );
    assert_eq!(daemon.status()["healthy"], true);
}

#[test]
fn refused_command_subscription_is_reported_not_ignored() {
    let root = tempfile::tempdir().unwrap();
    let port = scripted_broker(0x80, None);
    let daemon = Daemon::start(root.path(), &upstream_config(port));
    wait_until(
        "the SUBACK failure reported",
        Duration::from_secs(20),
        || {
            daemon.status()["current_error"]
                .as_str()
                .is_some_and(|e| e.contains("refused the subscription"))
        },
    );
    assert!(daemon.log_text().contains("retrying"));
}

#[test]
fn two_daemons_with_one_client_id_are_reported() {
    let root = tempfile::tempdir().unwrap();
    let broker = Broker::start(root.path());
    let (one, two) = (root.path().join("one"), root.path().join("two"));
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&two).unwrap();
    // Both default to client_id = device_id = "dev1": a copied config.
    let a = Daemon::start(&one, &upstream_config(broker.port));
    let b = Daemon::start(&two, &upstream_config(broker.port));
    let suspected = |d: &Daemon| {
        d.status()["current_error"]
            .as_str()
            .is_some_and(|e| e.contains("client_id"))
    };
    wait_until(
        "a duplicate client id reported",
        Duration::from_secs(60),
        || suspected(&a) || suspected(&b),
    );
}

#[test]
fn password_file_readable_by_everyone_is_warned_about_in_the_log() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = tempfile::tempdir().unwrap();
    let broker = Broker::start(root.path());
    let password = root.path().join("password");
    std::fs::write(&password, "s3cret\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o644)).unwrap();
    // username/password_file belong to [upstream]: right after its header.
    let config = upstream_config(broker.port).replacen(
        "[upstream]\n",
        &format!(
            "[upstream]\nusername = \"edge\"\npassword_file = \"{}\"\n",
            password.display()
        ),
        1,
    );
    let daemon = Daemon::start(root.path(), &config);
    assert!(
        daemon.log_text().contains("readable by every user"),
        "{}",
        daemon.log_text()
    );
}

/// A scripted broker for the PUBACK-crossing test. Connection 1: CONNACK, SUBACK, a QoS 1
/// command PUBLISH with packet id 1, then it closes at once (before the daemon can have
/// stored and acknowledged it). Connection 2: CONNACK with session present, then it watches
/// for a PUBACK of packet id 1 for 2 s before it sends anything that could earn one: such a
/// PUBACK was computed on connection 1. Then it redelivers the command (dup) and expects its
/// PUBACK. Reports (stale PUBACKs seen, redelivery acknowledged).
fn broker_checking_stale_pubacks() -> (u16, std::sync::mpsc::Receiver<(usize, bool)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    let publish = |dup: bool| {
        let topic = "edgecap/dev1/commands/valve";
        let mut p = vec![if dup { 0x3a } else { 0x32 }];
        p.extend(remaining_length(2 + topic.len() + 2 + 1));
        p.extend((topic.len() as u16).to_be_bytes());
        p.extend(topic.as_bytes());
        p.extend([0x00, 0x01, b'1']);
        p
    };
    std::thread::spawn(move || {
        let Ok((mut first, _)) = listener.accept() else {
            return;
        };
        first
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _connect = read_packet(&mut first);
        first.write_all(&[0x20, 0x02, 0x00, 0x00]).unwrap();
        if let Some(subscribe) = read_packet(&mut first) {
            let length_bytes = subscribe[1..]
                .iter()
                .take_while(|b| **b & 0x80 != 0)
                .count()
                + 1;
            let at = 1 + length_bytes;
            first
                .write_all(&[0x90, 0x03, subscribe[at], subscribe[at + 1], 0x01])
                .unwrap();
        }
        first.write_all(&publish(false)).unwrap();
        drop(first);
        let Ok((mut second, _)) = listener.accept() else {
            return;
        };
        second
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let _connect = read_packet(&mut second);
        second.write_all(&[0x20, 0x02, 0x01, 0x00]).unwrap();
        let mut stale = 0;
        let watch_until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < watch_until {
            match read_packet(&mut second) {
                Some(p) if p[0] >> 4 == 4 => stale += 1,
                Some(p) if p[0] >> 4 == 12 => second.write_all(&[0xd0, 0x00]).unwrap(),
                _ => {}
            }
        }
        second
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        second.write_all(&publish(true)).unwrap();
        let mut acked = false;
        while let Some(p) = read_packet(&mut second) {
            match p[0] >> 4 {
                4 => {
                    acked = true;
                    break;
                }
                12 => second.write_all(&[0xd0, 0x00]).unwrap(),
                _ => {}
            }
        }
        let _ = tx.send((stale, acked));
    });
    (port, rx)
}

#[test]
fn a_command_puback_is_never_sent_on_a_later_connection() {
    let root = tempfile::tempdir().unwrap();
    let (port, report) = broker_checking_stale_pubacks();
    let daemon = Daemon::start(root.path(), &upstream_config(port));
    let (stale, acked) = report
        .recv_timeout(Duration::from_secs(30))
        .expect("the scripted broker finished");
    assert_eq!(
        stale, 0,
        "a PUBACK computed on connection 1 was sent on connection 2"
    );
    assert!(acked, "the redelivered command was never acknowledged");
    let stored = stored(&daemon, "command");
    assert!(!stored.is_empty(), "the command was not stored");
}
