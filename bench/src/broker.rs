//! A real mosquitto on a free loopback port, a QoS 1 subscriber counting distinct seqs, and the
//! raw rumqttc publisher every forwarding figure is compared with.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;

/// The in-flight window of the daemon's forwarder (`max_inflight` in its bench config) and of
/// the raw publisher.
pub const INFLIGHT: u16 = 64;

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

pub struct Mosquitto {
    child: Child,
}

impl Mosquitto {
    /// Starts mosquitto on `port` (no persistence, nothing dropped from queues) and waits until
    /// it accepts connections.
    pub fn start(dir: &Path, port: u16) -> Mosquitto {
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\nuser root\nmax_queued_messages 0\n"
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let mut command = Command::new("mosquitto");
        command
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = crate::daemon::spawn_tied(command);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Mosquitto { child }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first message a subscriber received: topic and payload.
type FirstMessage = Arc<Mutex<Option<(String, Vec<u8>)>>>;

/// A QoS 1 subscriber to `filter`: the distinct `seq`s of the JSON payloads it received, and the
/// first message (topic, payload) as a template for the raw publisher.
pub struct Subscriber {
    count: watch::Receiver<u64>,
    first: FirstMessage,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn start(port: u16, filter: &str) -> Subscriber {
        let mut options = MqttOptions::new(format!("bench-sub-{}", free_port()), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, eventloop) = AsyncClient::new(options, 100);
        let (count_tx, count) = watch::channel(0);
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let first = Arc::new(Mutex::new(None));
        let task = tokio::spawn(receive(
            client,
            eventloop,
            filter.to_string(),
            count_tx,
            ready_tx,
            first.clone(),
        ));
        tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .expect("the subscriber was not subscribed within 10 s")
            .expect("subscriber task");
        Subscriber { count, first, task }
    }

    /// Waits until `n` distinct seqs arrived; panics after `timeout`.
    pub async fn wait_for(&mut self, n: u64, timeout: Duration) {
        let reached = tokio::time::timeout(timeout, self.count.wait_for(|count| *count >= n))
            .await
            .map(|result| result.map(drop));
        match reached {
            Ok(result) => result.expect("subscriber task ended"),
            Err(_) => panic!(
                "only {} of {n} events arrived within {timeout:?}",
                *self.count.borrow()
            ),
        }
    }

    pub fn first(&self) -> Option<(String, Vec<u8>)> {
        self.first.lock().expect("lock").clone()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    filter: String,
    count: watch::Sender<u64>,
    ready: tokio::sync::oneshot::Sender<()>,
    first: FirstMessage,
) {
    let mut ready = Some(ready);
    let mut seen = HashSet::new();
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                client
                    .subscribe(&filter, QoS::AtLeastOnce)
                    .await
                    .expect("subscribe");
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let json: serde_json::Value =
                    serde_json::from_slice(&publish.payload).expect("JSON payload");
                let seq = json["seq"].as_u64().expect("a seq in every payload");
                // Only the producers' sensor events count (and serve as the template): the
                // daemon's own system events (start, stop, recovery) are not the workload.
                if json["kind"] != "sensor" {
                    continue;
                }
                first
                    .lock()
                    .expect("lock")
                    .get_or_insert_with(|| (publish.topic.clone(), publish.payload.to_vec()));
                if seen.insert(seq) {
                    count.send_replace(seen.len() as u64);
                }
            }
            Ok(_) => {}
            Err(e) => panic!("the bench subscriber lost its connection: {e}"),
        }
    }
}

/// Messages/s of one rumqttc QoS 1 publisher with `INFLIGHT` in flight, sending `n` copies of
/// `template` (its `seq` numbered 1..=n, its `device` renamed) on the same topic shape, until
/// `subscriber` has every one.
pub async fn raw_publisher(
    port: u16,
    device: &str,
    template: &(String, Vec<u8>),
    n: u64,
    subscriber: &mut Subscriber,
) -> f64 {
    let (topic, payload) = template;
    let levels: Vec<&str> = topic.split('/').collect();
    assert_eq!(levels.len(), 4, "unexpected topic shape {topic}");
    let topic = format!("{}/{device}/{}/{}", levels[0], levels[2], levels[3]);
    let mut json: serde_json::Value = serde_json::from_slice(payload).expect("template JSON");
    json["device"] = device.into();
    let mut options = MqttOptions::new(format!("bench-raw-{}", free_port()), "127.0.0.1", port);
    options.set_inflight(INFLIGHT);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 128);
    let poller = tokio::spawn(async move {
        loop {
            if let Err(e) = eventloop.poll().await {
                panic!("the raw publisher lost its connection: {e}");
            }
        }
    });
    let start = Instant::now();
    let publish_all = async {
        for seq in 1..=n {
            json["seq"] = seq.into();
            let bytes = serde_json::to_vec(&json).expect("JSON");
            client
                .publish(&topic, QoS::AtLeastOnce, false, bytes)
                .await
                .expect("publish");
        }
    };
    tokio::time::timeout(Duration::from_secs(600), publish_all)
        .await
        .expect("the raw publisher could not queue its messages within 600 s");
    subscriber.wait_for(n, Duration::from_secs(600)).await;
    let elapsed = start.elapsed();
    poller.abort();
    crate::stats::rate(n, elapsed)
}
