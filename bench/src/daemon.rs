//! The real daemon in a process of its own (this binary re-executed as `__edgecap run`, the
//! shipped code), producers on its ingest socket, and what `/proc` and `/sys` say about a
//! process and a disk.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a daemon may take to start listening or to stop after SIGTERM.
const START_STOP_DEADLINE: Duration = Duration::from_secs(60);

/// The ingest line every producer sends: the storage contenders' probe event.
pub fn event_line() -> String {
    format!(
        "{{\"source\":\"temp0\",\"value\":\"{}\"}}\n",
        "x".repeat(76)
    )
}

pub struct Daemon {
    child: Child,
    pub socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts `edgecap run` with data under `root/name`, `sync` = `always` or `interval`, and
    /// an upstream at `127.0.0.1:port` when given (none: capture only).
    pub fn start(root: &Path, name: &str, sync: &str, upstream_port: Option<u16>) -> Daemon {
        Daemon::start_with_data(root, name, &root.join(name), sync, upstream_port)
    }

    /// Like [`Daemon::start`] with the data directory at `dir` (socket, config and log under
    /// `root`).
    pub fn start_with_data(
        root: &Path,
        name: &str,
        dir: &Path,
        sync: &str,
        upstream_port: Option<u16>,
    ) -> Daemon {
        let socket = root.join(format!("{name}.sock"));
        let config = root.join(format!("{name}.toml"));
        let upstream = upstream_port.map_or(String::new(), |port| {
            format!("[upstream]\nhost = \"127.0.0.1\"\nport = {port}\nmax_inflight = 64\nkeep_alive_secs = 30\n[retry]\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\n[breaker]\nfailure_threshold = 1000\nopen_secs = 1\n")
        });
        let text = format!(
            "device_id = \"bench\"\n[storage]\ndir = \"{}\"\nsegment_size = \"16MiB\"\nmax_disk = \"2GiB\"\nsync = \"{sync}\"\n[ingest]\nsocket = \"{}\"\nmax_clients = 128\n{upstream}",
            dir.display(),
            socket.display()
        );
        std::fs::write(&config, text).expect("write the daemon config");
        let log = root.join(format!("{name}.log"));
        // Appended to: a restart under the same name keeps the first run's lines.
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("daemon log file");
        let mut command = Command::new(std::env::current_exe().expect("own path"));
        command
            .args(["__edgecap", "run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = spawn_tied(command);
        let mut daemon = Daemon { child, socket, log };
        daemon.wait_listening();
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_STOP_DEADLINE;
        while UnixStream::connect(&self.socket).is_err() {
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!(
                    "the daemon exited at start ({status}); see {}",
                    self.log.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not listen within {START_STOP_DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own child, which has not been reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + START_STOP_DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the daemon did not stop within {START_STOP_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(
            status.success(),
            "the daemon stopped with {status}; see {}",
            self.log.display()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Spawns `command` so that the kernel kills it when this process dies: the bench is built
/// with panic = "abort", so no destructor stops a broker or daemon after a failed assertion.
/// The signal comes when the spawning *thread* ends: call this from a thread that lives as
/// long as the child (never from tokio's blocking pool, whose threads end when idle).
pub fn spawn_tied(mut command: Command) -> Child {
    // SAFETY: prctl(2) is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt as _;
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {command:?}: {e}"))
}

/// Sends `events` from `producers` pipelining connections; returns when every one is acked.
pub fn produce(socket: &Path, producers: u64, events: u64) -> Duration {
    assert!(
        events % producers == 0 && events > 0,
        "{events} events over {producers} producers"
    );
    let per_producer = events / producers;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(producers as usize + 1));
    let threads: Vec<_> = (0..producers)
        .map(|_| {
            let (socket, barrier) = (socket.to_path_buf(), barrier.clone());
            std::thread::spawn(move || producer(&socket, per_producer, &barrier))
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for thread in threads {
        thread.join().expect("a producer failed");
    }
    start.elapsed()
}

/// How long a producer waits for one reply before the bench fails (a wedged daemon must not
/// hang the run).
const REPLY_DEADLINE: Duration = Duration::from_secs(120);

fn producer(socket: &Path, events: u64, barrier: &std::sync::Barrier) {
    let stream = UnixStream::connect(socket).expect("connect to the daemon");
    stream
        .set_read_timeout(Some(REPLY_DEADLINE))
        .expect("read timeout");
    let mut writer = stream.try_clone().expect("clone the stream");
    let line = event_line();
    barrier.wait();
    let sender = std::thread::spawn(move || {
        let mut out = std::io::BufWriter::with_capacity(64 << 10, &mut writer);
        for _ in 0..events {
            out.write_all(line.as_bytes()).expect("send");
        }
        out.flush().expect("send");
    });
    let mut replies = BufReader::new(stream);
    let mut reply = String::new();
    for _ in 0..events {
        reply.clear();
        replies.read_line(&mut reply).expect("reply");
        assert!(reply.contains("\"ok\":true"), "refused: {reply}");
    }
    sender.join().expect("sender");
}

/// One producer sending one event at a time at `per_s`; the latency of each ack.
pub fn ack_latencies(socket: &Path, events: u64, per_s: u64) -> Vec<Duration> {
    let mut stream = UnixStream::connect(socket).expect("connect to the daemon");
    stream
        .set_read_timeout(Some(REPLY_DEADLINE))
        .expect("read timeout");
    let mut replies = BufReader::new(stream.try_clone().expect("clone"));
    let line = event_line();
    let pace = Pace::new(per_s);
    let mut reply = String::new();
    (0..events)
        .map(|i| {
            pace.wait_turn(i);
            let start = Instant::now();
            stream.write_all(line.as_bytes()).expect("send");
            reply.clear();
            replies.read_line(&mut reply).expect("reply");
            assert!(reply.contains("\"ok\":true"), "refused: {reply}");
            start.elapsed()
        })
        .collect()
}

/// A load generator's clock: item `i` is due `i / per_s` seconds after the start.
pub struct Pace {
    start: Instant,
    per_s: u64,
}

impl Pace {
    /// `per_s` 0: never waits.
    pub fn new(per_s: u64) -> Pace {
        Pace {
            start: Instant::now(),
            per_s,
        }
    }

    /// Sleeps until item `i` is due (a paced load, not a wait for a condition).
    pub fn wait_turn(&self, i: u64) {
        if self.per_s == 0 {
            return;
        }
        let due = self.start + Duration::from_secs_f64(i as f64 / self.per_s as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// `RssAnon` of `/proc/PID/status`, KiB.
pub fn rss_anon_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    field(&text, "RssAnon").expect("RssAnon")
}

/// Context switches of each thread of `pid`, by thread id: each one is a wake-up (or a
/// preemption).
pub fn context_switches(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
    tasks
        .filter_map(|task| {
            let task = task.ok()?;
            let status = std::fs::read_to_string(task.path().join("status")).ok()?;
            let switches = field(&status, "voluntary_ctxt_switches").unwrap_or(0)
                + field(&status, "nonvoluntary_ctxt_switches").unwrap_or(0);
            Some((task.file_name().to_string_lossy().into_owned(), switches))
        })
        .collect()
}

/// Context switches between two readings of [`context_switches`]: per thread, so a thread
/// that ended in between (tokio's idle blocking threads do) takes nothing off the count.
pub fn switches_between(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> u64 {
    after
        .iter()
        .map(|(tid, &count)| count.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum()
}

/// The first number after `key:` on its line.
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Bytes written to the block device holding `path` so far (`/sys/dev/block/M:m/stat`,
/// sectors written × 512): journal and metadata included. None off a block device.
pub fn device_bytes_written(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let stat = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
    let sectors: u64 = stat.split_whitespace().nth(6)?.parse().ok()?;
    Some(sectors * 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_reads_proc_style_lines() {
        let text = "rchar: 10\nvoluntary_ctxt_switches: 4096\nRssAnon:\t   612 kB\n";
        assert_eq!(field(text, "voluntary_ctxt_switches"), Some(4096));
        assert_eq!(field(text, "RssAnon"), Some(612));
        assert_eq!(field(text, "rchar"), Some(10));
        assert_eq!(field(text, "missing"), None);
    }

    #[test]
    fn this_process_has_counters() {
        let pid = std::process::id();
        assert!(rss_anon_kib(pid) > 0);
        let switches = context_switches(pid);
        assert!(!switches.is_empty());
        assert_eq!(switches_between(&switches, &switches), 0);
    }
}
