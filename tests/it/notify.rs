//! systemd notify protocol, black-box: the real daemon under a test `NOTIFY_SOCKET` (a Unix
//! datagram socket the test binds) with `WATCHDOG_USEC` set. Proves it sends `READY=1`,
//! `STATUS=` lines and `WATCHDOG=1`, and that it stops sending `WATCHDOG=1` when its writer
//! thread or its forwarder is wedged (fault injection: `EDGECAP_FAULT_WEDGE`), so systemd
//! would restart it.

use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::*;

struct Notifications {
    rx: mpsc::Receiver<(Instant, String)>,
    seen: Vec<(Instant, String)>,
}

impl Notifications {
    fn listen(path: &std::path::Path) -> Notifications {
        let socket = UnixDatagram::bind(path).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if tx.send((Instant::now(), text)).is_err() {
                    return;
                }
            }
        });
        Notifications {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) until a message satisfying `pred` arrives; returns its time.
    fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> Instant {
        if let Some((at, _)) = self.seen.iter().find(|(_, m)| pred(m)) {
            return *at;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, message) = self
                .rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {what} within {timeout:?}; saw {:?}", self.seen));
            self.seen.push((at, message.clone()));
            if pred(&message) {
                return at;
            }
        }
    }

    /// Every message received during the next `window`.
    fn collect(&mut self, window: Duration) -> Vec<String> {
        let end = Instant::now() + window;
        let mut out = Vec::new();
        while let Ok((at, message)) = self
            .rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            self.seen.push((at, message.clone()));
            out.push(message);
        }
        out
    }
}

fn has_line(message: &str, line: &str) -> bool {
    message.lines().any(|l| l == line)
}

fn check_wedge(part: &str, extra: &str, root: &std::path::Path) {
    let path = root.join("notify.sock");
    let mut notes = Notifications::listen(&path);
    let wedge = format!("{part}:2500");
    let daemon = Daemon::start_with_env(
        root,
        extra,
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
            ("EDGECAP_FAULT_WEDGE", &wedge),
        ],
    );
    notes.wait_for("READY=1", Duration::from_secs(20), |m| {
        has_line(m, "READY=1")
    });
    notes.wait_for("STATUS=", Duration::from_secs(20), |m| {
        m.starts_with("STATUS=durable seq")
    });
    notes.wait_for("WATCHDOG=1", Duration::from_secs(20), |m| {
        has_line(m, "WATCHDOG=1")
    });
    // Keep the writer busy so a wedged writer is also visible to producers.
    let _ = request(&daemon.socket, &[event_line("t", 1)]);
    let stalled = notes.wait_for("a NOT RESPONDING status", Duration::from_secs(20), |m| {
        m.contains("NOT RESPONDING")
    });
    let after = notes.collect(Duration::from_millis(1200));
    assert!(
        !after.iter().any(|m| has_line(m, "WATCHDOG=1")),
        "WATCHDOG=1 still sent after the {part} wedged: {after:?}"
    );
    assert!(
        after
            .iter()
            .filter(|m| m.contains("NOT RESPONDING"))
            .count()
            >= 2,
        "status keeps reporting: {after:?}"
    );
    let _ = stalled;
    drop(daemon);
}

#[test]
fn ready_status_watchdog_and_a_wedged_writer() {
    let root = tempfile::tempdir().unwrap();
    check_wedge("writer", "", root.path());
}

#[test]
fn a_wedged_forwarder_stops_the_watchdog() {
    let root = tempfile::tempdir().unwrap();
    let broker = Broker::start(root.path());
    check_wedge("forwarder", &upstream_config(broker.port), root.path());
}
