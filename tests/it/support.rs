//! Shared parts of the black-box tests: a real mosquitto broker on a free loopback port, the
//! real `edgecap` binary on a temporary directory, an MQTT subscriber, and socket clients.
//! Every wait is on a condition with a deadline; every child process is killed on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

/// The binary under test: this build's, or `EDGECAP_TEST_BIN` (to run the same tests against
/// an older build and see what they caught).
pub fn edgecap() -> Command {
    match std::env::var_os("EDGECAP_TEST_BIN") {
        Some(bin) => Command::new(bin),
        None => Command::new(env!("CARGO_BIN_EXE_edgecap")),
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `command` to completion with its output captured; kills it and panics if it has
/// not finished within `timeout`.
pub fn output_within(command: &mut Command, timeout: Duration) -> std::process::Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = done_tx.send(());
        output
    });
    if done_rx.recv_timeout(timeout).is_err() {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let _ = waiter.join();
        panic!("{command:?} did not finish within {timeout:?}");
    }
    waiter.join().unwrap().unwrap()
}

/// Polls `condition` until it holds or `timeout` passes; panics with `what` on timeout.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if condition() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::park_timeout(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Sets its flag when dropped (also when a test panics): the helper thread polling it ends.
pub struct StopOnDrop(pub Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Accepts on a non-blocking `listener` until `stop` is set, handing each connection over.
pub fn accept_until(
    listener: std::net::TcpListener,
    stop: Arc<std::sync::atomic::AtomicBool>,
    mut each: impl FnMut(std::net::TcpStream),
) {
    listener.set_nonblocking(true).unwrap();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                each(stream);
            }
            Err(_) => std::thread::park_timeout(Duration::from_millis(10)),
        }
    }
}

/// A mosquitto broker process on a free loopback port, with persistence so that a durable
/// subscriber session survives a broker restart.
pub struct Broker {
    pub port: u16,
    dir: PathBuf,
    /// Appended to the generated mosquitto.conf.
    extra: String,
    /// Ports of listeners in `extra`, waited on at start like `port`.
    extra_ports: Vec<u16>,
    child: Option<Child>,
}

impl Broker {
    pub fn start(dir: &Path) -> Broker {
        Broker::start_on(dir, free_port())
    }

    pub fn start_on(dir: &Path, port: u16) -> Broker {
        let dir = dir.join("mosquitto");
        std::fs::create_dir_all(&dir).unwrap();
        let mut broker = Broker {
            port,
            dir,
            extra: String::new(),
            extra_ports: Vec::new(),
            child: None,
        };
        broker.restart();
        broker
    }

    /// A broker with more mosquitto configuration (another listener, say) on `extra_ports`.
    pub fn start_with(dir: &Path, extra: &str, extra_ports: &[u16]) -> Broker {
        let dir = dir.join("mosquitto");
        std::fs::create_dir_all(&dir).unwrap();
        let mut broker = Broker {
            port: free_port(),
            dir,
            extra: extra.to_string(),
            extra_ports: extra_ports.to_vec(),
            child: None,
        };
        broker.restart();
        broker
    }

    /// Starts (again) on the same port and persistence directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {dir}/\nautosave_interval 1\nlog_dest file {dir}/mosquitto.log\nuser root\nmax_queued_messages 0\nmax_inflight_messages 0\n{extra}\n",
                port = self.port,
                dir = self.dir.display(),
                extra = self.extra
            ),
        )
        .unwrap();
        let child = Command::new(mosquitto_path())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (the README's test command installs it)");
        self.child = Some(child);
        for port in std::iter::once(self.port).chain(self.extra_ports.iter().copied()) {
            wait_until("mosquitto to listen", Duration::from_secs(10), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        }
    }

    /// SIGKILL (a crash: nothing saved since the last autosave) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker with SIGTERM (it saves its persistence file) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("mosquitto did not stop within 20 s of SIGTERM");
                }
                std::thread::park_timeout(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn mosquitto_path() -> PathBuf {
    for candidate in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    "mosquitto".into()
}

/// One PUBLISH as the subscriber received it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub topic: String,
    pub payload: Json,
    /// The broker's DUP flag: set when the *broker* retransmits a message it had already sent
    /// to this subscriber (e.g. after its own restart). A resend by the daemon arrives at the
    /// broker as a new PUBLISH and reaches us with `dup == false`.
    pub dup: bool,
}

/// A QoS 1 subscriber with a persistent session (clean_session = false) on its own thread.
pub struct Subscriber {
    messages: Arc<Mutex<Vec<Delivery>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    pub fn start(port: u16, filter: &str) -> Subscriber {
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let filter = filter.to_string();
        let sink = messages.clone();
        let id = format!("test-sub-{}", free_port());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut options = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
                options.set_clean_session(false);
                options.set_keep_alive(Duration::from_secs(5));
                options.set_max_packet_size(1 << 20, 1 << 20);
                let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 100);
                let mut ready = Some(ready_tx);
                loop {
                    let event = tokio::select! {
                        _ = &mut stop_rx => return,
                        event = eventloop.poll() => event,
                    };
                    match event {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                            let _ = client.try_subscribe(filter.clone(), rumqttc::QoS::AtLeastOnce);
                        }
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                            if let Some(ready) = ready.take() {
                                let _ = ready.send(());
                            }
                        }
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                            let json = serde_json::from_slice(&p.payload).unwrap_or(Json::String(
                                String::from_utf8_lossy(&p.payload).into(),
                            ));
                            sink.lock().unwrap().push(Delivery {
                                topic: p.topic.clone(),
                                payload: json,
                                dup: p.dup,
                            });
                        }
                        Ok(_) => {}
                        Err(_) => {
                            // Broker down: reconnect after a short pause, bounded by the test.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("subscriber did not get its SUBACK");
        Subscriber {
            messages,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn messages(&self) -> Vec<(String, Json)> {
        self.deliveries()
            .into_iter()
            .map(|d| (d.topic, d.payload))
            .collect()
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.messages.lock().unwrap().clone()
    }

    /// Seqs received from event payloads, in arrival order.
    pub fn seqs(&self) -> Vec<u64> {
        self.seqs_where(|_| true)
    }

    /// Seqs of deliveries the broker did not mark as its own retransmission: every repeat
    /// among these is a PUBLISH the daemon sent more than once.
    pub fn first_delivery_seqs(&self) -> Vec<u64> {
        self.seqs_where(|d| !d.dup)
    }

    fn seqs_where(&self, keep: impl Fn(&Delivery) -> bool) -> Vec<u64> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|d| keep(d))
            .filter_map(|d| d.payload.get("seq").and_then(Json::as_u64))
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The daemon as a child process on a temporary directory.
pub struct Daemon {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    /// Extra environment for the daemon process.
    pub env: Vec<(String, String)>,
    /// Where the daemon's stderr (its log) goes.
    pub log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Writes a config (`extra` is appended: `[upstream]` etc.) and starts the daemon.
    pub fn start(root: &Path, extra: &str) -> Daemon {
        Daemon::start_with_storage(
            root,
            "segment_size = \"1MiB\"\nmax_disk = \"256MiB\"\n",
            extra,
        )
    }

    /// Like [`Daemon::start`] with the given `[storage]` keys (besides `dir`).
    pub fn start_with_storage(root: &Path, storage_keys: &str, extra: &str) -> Daemon {
        let dir = root.join("data");
        let socket = root.join("ingest.sock");
        let config = root.join("edgecap.toml");
        std::fs::write(
            &config,
            format!(
                "device_id = \"dev1\"\n[storage]\ndir = \"{}\"\n{storage_keys}[ingest]\nsocket = \"{}\"\n{extra}",
                dir.display(),
                socket.display()
            ),
        )
        .unwrap();
        let mut daemon = Daemon {
            log: dir.with_extension("log"),
            dir,
            socket,
            config,
            env: Vec::new(),
            child: None,
        };
        daemon.restart();
        daemon
    }

    /// A daemon on an existing `config` whose `storage.dir` is `dir` and whose socket is
    /// `root/ingest.sock`; its log goes to `root/daemon.log` (not into `dir`'s file system).
    pub fn with_config(root: &Path, dir: &Path, config: &Path) -> Daemon {
        let mut daemon = Daemon {
            log: root.join("daemon.log"),
            dir: dir.to_path_buf(),
            socket: root.join("ingest.sock"),
            config: config.to_path_buf(),
            env: Vec::new(),
            child: None,
        };
        daemon.restart();
        daemon
    }

    /// A daemon started with extra environment variables.
    pub fn start_with_env(root: &Path, extra: &str, env: &[(&str, &str)]) -> Daemon {
        let mut daemon = Daemon::start(root, extra);
        daemon.terminate();
        daemon.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        daemon.restart();
        daemon
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = edgecap()
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("EDGECAP_LOG", "debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let socket = self.socket.clone();
        wait_until("the daemon's socket", Duration::from_secs(20), || {
            UnixStream::connect(&socket).is_ok()
        });
    }

    /// SIGTERM and the exit status; panics (after a SIGKILL) if the daemon has not exited
    /// within 30 s, twice the daemon's own shutdown bound.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the daemon did not exit within 30 s of SIGTERM");
            }
            std::thread::park_timeout(Duration::from_millis(10));
        }
    }

    /// The exit status if the daemon has exited by itself (it is then no longer running).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn status(&self) -> Json {
        let replies = request(&self.socket, &["{\"op\":\"status\"}".to_string()]);
        replies.into_iter().next().unwrap()
    }

    /// Daemon log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `edgecap log dump` of the data directory, parsed.
    pub fn dump(&self) -> Vec<Json> {
        let out = output_within(
            edgecap().args(["log", "dump", "--dir"]).arg(&self.dir),
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends request lines on one connection (pipelined) and returns the replies in order.
pub fn request(socket: &Path, lines: &[String]) -> Vec<Json> {
    let stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let payload: Vec<u8> = lines
        .iter()
        .flat_map(|l| l.bytes().chain(std::iter::once(b'\n')))
        .collect();
    let sender = std::thread::spawn(move || {
        // The daemon may refuse the connection (max_clients) and close it: not an error here.
        let _ = writer.write_all(&payload);
        let _ = writer.shutdown(std::net::Shutdown::Write);
    });
    let mut replies = Vec::new();
    for line in BufReader::new(stream).lines() {
        let line = line.expect("reply within 30 s");
        replies.push(serde_json::from_str(&line).unwrap());
    }
    sender.join().unwrap();
    replies
}

/// A sensor event request line.
pub fn event_line(source: &str, value: impl Into<Json>) -> String {
    serde_json::json!({"source": source, "value": value.into()}).to_string()
}

/// Seqs of `ok` replies, asserting every reply is ok.
pub fn acked_seqs(replies: &[Json]) -> Vec<u64> {
    replies
        .iter()
        .map(|r| {
            assert_eq!(r["ok"], Json::Bool(true), "rejected: {r}");
            r["seq"].as_u64().unwrap()
        })
        .collect()
}

/// `[upstream]`, `[retry]` and `[breaker]` sections for a broker on `port`, tuned for tests.
pub fn upstream_config(port: u16) -> String {
    format!(
        "[upstream]\nhost = \"127.0.0.1\"\nport = {port}\nkeep_alive_secs = 5\nmax_inflight = 32\n[retry]\ninitial_backoff_ms = 50\nmax_backoff_ms = 300\n[breaker]\nfailure_threshold = 3\nopen_secs = 1\n"
    )
}

/// `edgecap log verify` of `dir` passes.
pub fn verify_clean(dir: &std::path::Path) {
    let out = output_within(
        edgecap().args(["log", "verify", "--dir"]).arg(dir),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
