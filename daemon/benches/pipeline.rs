//! End-to-end benchmark against a real mosquitto (a bench binary, not a timed test).
//!
//! Prints, for `sync = "always"` and `sync = "interval"`: the rate at which events sent by 4
//! pipelining producers through the Unix socket are acknowledged, and the end-to-end rate
//! until a QoS 1 subscriber has received every one. Then the time a 100,000-event backlog
//! (captured while the broker was absent) takes to drain once the broker appears. The
//! baseline, measured in the same run: one rumqttc QoS 1 publisher straight to the same
//! mosquitto with 64 in flight (what the forwarder's `max_inflight` allows). Then
//! `sync = "always"` again with the daemon forwarding over TLS (client certificate required;
//! certificates made by rcgen), against the plain-TCP figure of the same run.
//!
//! Needs `mosquitto` (the README's test command installs it). Run:
//! `cargo bench -p edgecap --bench pipeline`. `EDGECAP_BENCH_EVENTS` sets N (default 50,000).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgecap::config::Config;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A mosquitto child; with `persistent`, sessions survive a SIGTERM restart. `tls`: also a
/// TLS listener on that port, requiring a client certificate from the bench CA.
fn mosquitto(dir: &Path, port: u16, persistent: bool, tls: Option<(u16, &Pki)>) -> Child {
    let conf = dir.join(format!("mosquitto-{port}.conf"));
    let mut text = format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence {persistent}\npersistence_location {}/\nlog_dest file {}/mosquitto.log\nuser root\nmax_queued_messages 0\n", dir.display(), dir.display());
    if let Some((tls_port, pki)) = tls {
        text += &format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            pki.ca.display(),
            pki.server_cert.display(),
            pki.server_key.display()
        );
    }
    std::fs::write(&conf, text).unwrap();
    let mut command = Command::new("mosquitto");
    command
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // The bench is built with panic = "abort", so no destructor would stop the broker after a
    // failed assertion: the kernel does, when this process dies. Without it an orphaned
    // broker keeps running (and keeps any inherited descriptor, a build lock say, open).
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
    let child = command.spawn().expect("mosquitto installed");
    let deadline = Instant::now() + Duration::from_secs(10);
    for port in std::iter::once(port).chain(tls.map(|(p, _)| p)) {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    child
}

/// PEM files: a CA, the broker's certificate for 127.0.0.1, and a client's.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        // A name of its own: with rcgen's default, the CA and its leaves would share one, and
        // mosquitto (OpenSSL) would take the client certificate for a self-signed one.
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "edgecap bench CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let leaf = |name: &str| {
            let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let (server_cert, server_key) = leaf("127.0.0.1");
        let (client_cert, client_key) = leaf("bench");
        Pki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }

    fn upstream_tls(&self) -> String {
        format!(
            "tls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\" }}\n",
            self.ca.display(),
            self.client_cert.display(),
            self.client_key.display()
        )
    }
}

/// A subscriber counting distinct seqs; returns (seen set, ready).
async fn subscriber(port: u16, filter: String, persistent: bool) -> Arc<Mutex<HashSet<u64>>> {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    static NEXT_ID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // Unique per subscriber: two clients with one id would keep kicking each other off.
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut options = MqttOptions::new(format!("bench-sub-{port}-{id}"), "127.0.0.1", port);
    options.set_clean_session(!persistent);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.subscribe(filter.clone(), QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&p.payload) {
                        if json["source"]
                            .as_str()
                            .is_some_and(|s| s.starts_with("bench"))
                        {
                            sink.lock().unwrap().insert(json["seq"].as_u64().unwrap());
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    ready_rx.await.unwrap();
    seen
}

fn config(dir: &Path, socket: &Path, port: u16, sync: &str, tls: &str) -> Config {
    Config::parse(&format!(
        "device_id = \"bench\"\n[storage]\ndir = \"{}\"\nsegment_size = \"16MiB\"\nmax_disk = \"1GiB\"\nsync = \"{sync}\"\n[ingest]\nsocket = \"{}\"\n[upstream]\nhost = \"127.0.0.1\"\nport = {port}\nmax_inflight = 64\n{tls}[retry]\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\n[breaker]\nfailure_threshold = 5\nopen_secs = 1\n",
        dir.display(),
        socket.display()
    ))
    .unwrap()
}

/// Sends `n` events from 4 pipelining producers; returns when all are acknowledged.
fn produce(socket: &Path, n: usize) {
    let threads: Vec<_> = (0..4)
        .map(|p| {
            let socket = socket.to_path_buf();
            std::thread::spawn(move || {
                let stream = UnixStream::connect(&socket).unwrap();
                let mut writer = stream.try_clone().unwrap();
                let count = n / 4;
                let sender = std::thread::spawn(move || {
                    let mut out = std::io::BufWriter::new(&mut writer);
                    for i in 0..count {
                        writeln!(out, "{{\"source\":\"bench{p}\",\"value\":{{\"i\":{i},\"v\":21.5,\"pad\":\"pppppppppppppppppppppppppppppppp\"}}}}").unwrap();
                    }
                    out.flush().unwrap();
                });
                let mut lines = BufReader::new(stream).lines();
                for _ in 0..count {
                    let line = lines.next().unwrap().unwrap();
                    assert!(line.contains("\"ok\":true"), "{line}");
                }
                sender.join().unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

async fn wait_for(seen: &Arc<Mutex<HashSet<u64>>>, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while seen.lock().unwrap().len() < n {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

async fn baseline(port: u16, n: usize) -> f64 {
    let mut options = MqttOptions::new("bench-baseline", "127.0.0.1", port);
    options.set_inflight(64);
    let (client, mut eventloop) = AsyncClient::new(options, 128);
    let payload = vec![b'x'; 128];
    let start = Instant::now();
    let publisher = tokio::spawn(async move {
        for _ in 0..n {
            client
                .publish("bench/baseline", QoS::AtLeastOnce, false, payload.clone())
                .await
                .unwrap();
        }
        client
    });
    let mut acks = 0;
    while acks < n {
        if let Ok(Event::Incoming(Packet::PubAck(_))) = eventloop.poll().await {
            acks += 1;
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(publisher.await);
    rate
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("EDGECAP_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data/pipeline");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pki = Pki::new(&root);
    runtime.block_on(async {
        let port = free_port();
        let tls_port = free_port();
        let mut broker = mosquitto(&root, port, false, Some((tls_port, &pki)));
        let base = baseline(port, n).await;
        println!("pipeline: {n} events, mosquitto on loopback");
        println!("  baseline: rumqttc QoS 1 publisher, 64 in flight, 128 B: {base:.0} msg/s");
        let mut plain_always = 0.0;
        for (sync, tls) in [("always", false), ("interval", false), ("always", true)] {
            let name = format!("{sync}{}", if tls { "-tls" } else { "" });
            let dir = root.join(&name);
            let socket = root.join(format!("{name}.sock"));
            let seen = subscriber(port, "edgecap/bench/events/#".into(), false).await;
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let config = if tls {
                config(&dir, &socket, tls_port, sync, &pki.upstream_tls())
            } else {
                config(&dir, &socket, port, sync, "")
            };
            let daemon = tokio::spawn(edgecap::daemon::run(config, async {
                let _ = stop_rx.await;
            }));
            while UnixStream::connect(&socket).is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let start = Instant::now();
            let producer = tokio::task::spawn_blocking({
                let socket = socket.clone();
                move || produce(&socket, n)
            });
            producer.await.unwrap();
            let acked = start.elapsed().as_secs_f64();
            assert!(wait_for(&seen, n, Duration::from_secs(120)).await, "not everything arrived");
            let delivered = start.elapsed().as_secs_f64();
            let e2e = n as f64 / delivered;
            println!(
                "  sync = {sync:<8}{}: acked {:>8.0} events/s; end to end {:>8.0} events/s (ratio to baseline {:.2})",
                if tls { " over TLS" } else { "" },
                n as f64 / acked,
                e2e,
                e2e / base
            );
            if !tls && sync == "always" {
                plain_always = e2e;
            } else if tls {
                println!(
                    "  TLS (client certificate, ring) against plain TCP, sync = always, end to end: ratio {:.2}",
                    e2e / plain_always
                );
            }
            let _ = stop_tx.send(());
            daemon.await.unwrap().unwrap();
        }
        let _ = broker.kill();
        let _ = broker.wait();

        // Backlog: captured with no broker, drained when it appears. The subscriber's
        // persistent session is made first (broker up, subscribe, SIGTERM) so that the restarted
        // broker queues everything for it, whoever reconnects first.
        let backlog = 100_000;
        let port = free_port();
        let mut broker = mosquitto(&root, port, true, None);
        let seen = subscriber(port, "edgecap/bench/events/#".into(), true).await;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(broker.id() as i32, libc::SIGTERM) };
        broker.wait().unwrap();
        let dir = root.join("backlog");
        let socket = root.join("backlog.sock");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(edgecap::daemon::run(config(&dir, &socket, port, "always", ""), async {
            let _ = stop_rx.await;
        }));
        while UnixStream::connect(&socket).is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::task::spawn_blocking({
            let socket = socket.clone();
            move || produce(&socket, backlog)
        })
        .await
        .unwrap();
        let start = Instant::now();
        let mut broker = mosquitto(&root, port, true, None);
        assert!(wait_for(&seen, backlog, Duration::from_secs(300)).await, "backlog did not drain");
        let drain = start.elapsed().as_secs_f64();
        println!(
            "  backlog of {backlog} events drained in {drain:.2} s after the broker appeared ({:.0} events/s, reconnect delay included)",
            backlog as f64 / drain
        );
        let _ = stop_tx.send(());
        daemon.await.unwrap().unwrap();
        let _ = broker.kill();
        let _ = broker.wait();
    });
    let _ = std::fs::remove_dir_all(&root);
}
