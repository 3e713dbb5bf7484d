//! `edgecap demo`: the whole pipeline on this machine in about 25 seconds.
//!
//! An embedded broker (rumqttd) on a free loopback port; between the daemon and the broker a
//! small TCP relay that the demo can cut, so the daemon meets a real broker outage (its
//! connection drops and reconnects are refused) while the demo's own subscriber stays
//! connected to the broker and sees every delivery. The daemon runs in-process on a temporary
//! data directory; three synthetic sensors publish through the ingest socket; the link is cut
//! from 4 s to 10 s. At the end the demo waits (bounded) for the backlog to drain and prints
//! `sent N, received N, duplicates D, lost 0`; it exits 0 only when nothing was lost.
//!
//! rumqttd has no shutdown API (0.20), which is why the outage is made by the relay rather
//! than by stopping the broker; this module is behind the `demo` cargo feature so device
//! builds carry no broker.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::watch;

use crate::config::Config;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seconds the sensors publish.
    #[arg(long, default_value_t = 14)]
    pub publish_secs: u64,
    /// Events per second per sensor.
    #[arg(long, default_value_t = 150)]
    pub rate: u64,
}

const DEVICE: &str = "demo-pi";
const SENSORS: [&str; 3] = ["temp0", "humidity0", "pressure0"];
const OUTAGE_START: Duration = Duration::from_secs(4);
const OUTAGE_END: Duration = Duration::from_secs(10);
const DRAIN_DEADLINE: Duration = Duration::from_secs(12);

pub fn main(args: DemoArgs) -> ExitCode {
    // The embedded broker logs the outage the demo causes on purpose as errors: silenced
    // unless asked for (EDGECAP_LOG=rumqttd=info).
    let filter = std::env::var("EDGECAP_LOG").unwrap_or_else(|_| "error,rumqttd=off".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(demo(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("edgecap demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_broker(port: u16) -> anyhow::Result<()> {
    use rumqttd::{
        Broker, Config as BrokerConfig, ConnectionSettings, RouterConfig, ServerSettings,
    };
    let router = RouterConfig {
        max_connections: 16,
        max_outgoing_packet_count: 200,
        max_segment_size: 16 * 1024 * 1024,
        max_segment_count: 10,
        ..RouterConfig::default()
    };
    let server = ServerSettings {
        name: "demo-v4".into(),
        listen: format!("127.0.0.1:{port}").parse()?,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 5000,
            max_payload_size: 256 * 1024,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = BrokerConfig {
        id: 0,
        router,
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..BrokerConfig::default()
    };
    let mut broker = Broker::new(config);
    std::thread::Builder::new()
        .name("demo-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                eprintln!("edgecap demo: broker stopped: {e}");
            }
        })?;
    Ok(())
}

async fn wait_for_port(port: u16, deadline: Instant) -> anyhow::Result<()> {
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("broker did not listen on port {port} in time")
}

/// A TCP relay that can be cut (`up = false`: all connections closed, new ones refused).
async fn relay(listen: u16, upstream: u16, mut up: watch::Receiver<bool>) -> anyhow::Result<()> {
    loop {
        if up.wait_for(|u| *u).await.is_err() {
            return Ok(());
        }
        let listener = TcpListener::bind(("127.0.0.1", listen)).await?;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = up.wait_for(|u| !*u) => break,
            };
            let (mut inbound, _) = accepted?;
            let mut down = up.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = down.wait_for(|u| !*u) => {}
                }
            });
        }
    }
}

#[derive(Default)]
struct Tally {
    acked: Mutex<Vec<u64>>,
    deliveries: Mutex<HashMap<u64, u64>>,
    sent: AtomicU64,
    received: AtomicU64,
}

async fn subscriber(port: u16, tally: Arc<Tally>, ready: tokio::sync::oneshot::Sender<()>) {
    let mut options = MqttOptions::new("edgecap-demo-observer", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_max_packet_size(256 * 1024, 256 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let mut ready = Some(ready);
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                let _ = client
                    .subscribe(format!("edgecap/{DEVICE}/events/#"), QoS::AtLeastOnce)
                    .await;
            }
            Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            Ok(MqttEvent::Incoming(Packet::Publish(publish))) => {
                let seq = serde_json::from_slice::<serde_json::Value>(&publish.payload)
                    .ok()
                    .and_then(|v| v.get("seq").and_then(|s| s.as_u64()));
                if let Some(seq) = seq {
                    *tally.deliveries.lock().unwrap().entry(seq).or_default() += 1;
                    tally.received.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn sensor(
    socket: std::path::PathBuf,
    name: &'static str,
    rate: u64,
    until: Instant,
    tally: Arc<Tally>,
) -> anyhow::Result<()> {
    let stream = UnixStream::connect(&socket).await?;
    let (read, mut write) = stream.into_split();
    let reader = tokio::spawn({
        let tally = tally.clone();
        async move {
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let reply: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if let Some(seq) = reply.get("seq").and_then(|s| s.as_u64()) {
                    tally.acked.lock().unwrap().push(seq);
                }
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let mut n = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        n += 1;
        let value = 20.0 + (n as f64 / 50.0).sin() * 5.0;
        let line = format!("{{\"source\":\"{name}\",\"value\":{value:.3}}}\n");
        write.write_all(line.as_bytes()).await?;
        tally.sent.fetch_add(1, Ordering::Relaxed);
    }
    write.shutdown().await?;
    let _ = reader.await;
    Ok(())
}

async fn demo(args: DemoArgs) -> anyhow::Result<bool> {
    let started = Instant::now();
    let dir = tempfile::Builder::new().prefix("edgecap-demo-").tempdir()?;
    let broker_port = free_port()?;
    let relay_port = free_port()?;
    println!("edgecap demo: broker (rumqttd) on 127.0.0.1:{broker_port}, daemon link via 127.0.0.1:{relay_port}, data in {}", dir.path().display());
    start_broker(broker_port)?;
    wait_for_port(broker_port, Instant::now() + Duration::from_secs(5)).await?;
    let (link_tx, link_rx) = watch::channel(true);
    tokio::spawn(relay(relay_port, broker_port, link_rx));

    let tally = Arc::new(Tally::default());
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(subscriber(broker_port, tally.clone(), ready_tx));
    tokio::time::timeout(Duration::from_secs(5), ready_rx).await??;

    let socket = dir.path().join("ingest.sock");
    let config = Config::parse(&format!(
        r#"
device_id = "{DEVICE}"
[storage]
dir = "{}"
segment_size = "1MiB"
max_disk = "64MiB"
sync = "always"
[ingest]
socket = "{}"
[upstream]
host = "127.0.0.1"
port = {relay_port}
keep_alive_secs = 5
max_inflight = 64
[retry]
initial_backoff_ms = 100
max_backoff_ms = 1000
[breaker]
failure_threshold = 3
open_secs = 2
"#,
        dir.path().join("data").display(),
        socket.display()
    ))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(crate::daemon::run(config, async {
        let _ = stop_rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(5);
    while UnixStream::connect(&socket).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "daemon did not open its socket");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(args.publish_secs);
    let sensors: Vec<_> = SENSORS
        .iter()
        .map(|name| {
            tokio::spawn(sensor(
                socket.clone(),
                name,
                args.rate,
                until,
                tally.clone(),
            ))
        })
        .collect();
    let tty = std::io::stdout().is_terminal();
    let link_up = Arc::new(AtomicBool::new(true));
    let mut outage_done = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let drain_deadline = until + DRAIN_DEADLINE;
    loop {
        ticker.tick().await;
        let elapsed = t0.elapsed();
        if elapsed >= OUTAGE_START && !outage_done && link_up.load(Ordering::Relaxed) {
            link_up.store(false, Ordering::Relaxed);
            let _ = link_tx.send(false);
            println!(
                "\n-- t={:.1}s: broker link cut (broker unreachable for the daemon)",
                elapsed.as_secs_f64()
            );
        }
        if elapsed >= OUTAGE_END && !outage_done {
            outage_done = true;
            link_up.store(true, Ordering::Relaxed);
            let _ = link_tx.send(true);
            println!(
                "\n-- t={:.1}s: broker reachable again",
                elapsed.as_secs_f64()
            );
        }
        let status = status_of(&socket).await.unwrap_or_default();
        let acked = tally.acked.lock().unwrap().len();
        let line = format!(
            "t={:>5.1}s  sent {:>6}  acked {:>6}  received {:>6}  backlog {:>5}  connected {:<5}  breaker {}",
            elapsed.as_secs_f64(),
            tally.sent.load(Ordering::Relaxed),
            acked,
            tally.received.load(Ordering::Relaxed),
            status.get("backlog").and_then(|v| v.as_u64()).unwrap_or(0),
            status.get("connected").and_then(|v| v.as_bool()).unwrap_or(false),
            status.get("breaker").and_then(|v| v.as_str()).unwrap_or("?"),
        );
        if tty {
            print!("\r{line}");
            use std::io::Write;
            let _ = std::io::stdout().flush();
        } else {
            println!("{line}");
        }
        let publishing = Instant::now() < until || sensors.iter().any(|s| !s.is_finished());
        if !publishing && outage_done {
            let acked = tally.acked.lock().unwrap().clone();
            let deliveries = tally.deliveries.lock().unwrap();
            if acked.iter().all(|seq| deliveries.contains_key(seq)) {
                break;
            }
        }
        if Instant::now() > drain_deadline {
            println!("\n-- drain deadline passed");
            break;
        }
    }
    for s in sensors {
        s.await??;
    }
    let _ = stop_tx.send(());
    daemon.await??;

    let acked = tally.acked.lock().unwrap().clone();
    let deliveries = tally.deliveries.lock().unwrap();
    let received = acked.iter().filter(|s| deliveries.contains_key(s)).count();
    let duplicates: u64 = acked
        .iter()
        .filter_map(|s| deliveries.get(s))
        .map(|n| n.saturating_sub(1))
        .sum();
    let lost = acked.len() - received;
    println!(
        "\nedgecap demo finished in {:.1} s\nsent {}, received {}, duplicates {}, lost {}",
        started.elapsed().as_secs_f64(),
        acked.len(),
        received,
        duplicates,
        lost
    );
    Ok(lost == 0 && !acked.is_empty())
}

async fn status_of(socket: &std::path::Path) -> Option<serde_json::Value> {
    let stream = UnixStream::connect(socket).await.ok()?;
    let (read, mut write) = stream.into_split();
    write.write_all(b"{\"op\":\"status\"}\n").await.ok()?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await.ok()?;
    serde_json::from_str(&line).ok()
}
