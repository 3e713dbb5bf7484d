//! The forwarder: durable events → MQTT QoS 1, in seq order, at least once.
//!
//! Two tasks. The *poll task* owns rumqttc's `EventLoop` and only polls it (rumqttc's `poll`
//! is not documented cancel-safe, so it is never raced in a `select!`); it hands every event
//! to the *coordinator* and, after a connection error, waits for the coordinator's go-ahead,
//! then throws away rumqttc's own pending queue and state: **the forward cursor, not
//! rumqttc's memory, is the truth**, and everything unacknowledged is resent from it.
//!
//! The coordinator reads durable events from the log (woken by the writer's durable-seq
//! `watch`), publishes with `try_publish` while fewer than `max_inflight` are unacknowledged,
//! correlates `Outgoing::Publish(pkid)` (emitted in publish order) with our seqs and
//! `Incoming::PubAck(pkid)` with those, and advances the cursor only over a contiguous prefix
//! of acknowledged events. The cursor is persisted every `CURSOR_PERSIST_INTERVAL_MS` and at
//! shutdown, so a crash resends at most that window (at-least-once; consumers dedup on
//! `(device, seq)`). Reconnects go through [`crate::retry`]: backoff with jitter behind the
//! circuit breaker.
//!
//! Upstream commands (`{prefix}/{device}/commands/+`) are acknowledged manually, only after
//! they are durable in the log, one at a time so PUBACKs leave in order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use edgecap_storage::{Event, Kind, Log, Reader};
use rumqttc::{
    AsyncClient, Event as MqttEvent, EventLoop, MqttOptions, MqttState, Outgoing, Packet, PubAck,
    Publish, QoS,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::{BreakerConfig, RetryConfig, UpstreamConfig};
use crate::ingest::valid_source;
use crate::json::{event_json, to_value};
use crate::limits::{CURSOR_PERSIST_INTERVAL_MS, FORWARD_READ_BATCH, MQTT_PACKET_BYTES_MAX};
use crate::retry::{Backoff, Breaker};
use crate::status::Health;
use crate::writer::WriterHandle;

/// Name of the forwarder's cursor in the log.
pub const FORWARD_CURSOR: &str = "forward";
/// Upstream commands waiting to be stored: 64.
const COMMAND_QUEUE_MAX: usize = 64;

/// Everything the forwarder needs.
pub struct Forwarder {
    pub upstream: UpstreamConfig,
    pub device_id: String,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    pub log: Log,
    pub writer: WriterHandle,
    pub health: Arc<Health>,
    pub durable: watch::Receiver<u64>,
    /// Commands larger than this (`ingest.max_event_bytes`) are refused like oversized lines.
    pub event_bytes_max: usize,
    /// Proof-of-life pings from the systemd supervisor, answered from the main loop.
    pub pings: mpsc::Receiver<crate::notify::Ping>,
}

fn mqtt_options(upstream: &UpstreamConfig) -> anyhow::Result<MqttOptions> {
    let mut options = MqttOptions::new(&upstream.client_id, &upstream.host, upstream.port);
    options
        .set_keep_alive(Duration::from_secs(upstream.keep_alive_secs))
        .set_clean_session(true)
        .set_inflight(upstream.max_inflight)
        .set_manual_acks(true)
        .set_max_packet_size(MQTT_PACKET_BYTES_MAX, MQTT_PACKET_BYTES_MAX);
    if let Some(username) = &upstream.username {
        let password = upstream.password.as_ref().map_or("", |p| p.0.as_str());
        options.set_credentials(username, password);
    }
    if let Some(tls) = &upstream.tls {
        options.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.client_config.clone()),
        ));
    }
    Ok(options)
}

/// Polls the event loop forever; see the module docs.
async fn poll_task(
    mut eventloop: EventLoop,
    events: mpsc::Sender<Result<MqttEvent, String>>,
    mut resume: mpsc::Receiver<()>,
) {
    loop {
        match eventloop.poll().await {
            Ok(event) => {
                if events.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                if events.send(Err(error.to_string())).await.is_err() {
                    return;
                }
                if resume.recv().await.is_none() {
                    return;
                }
                eventloop.clean();
                eventloop.pending.clear();
                let options = &eventloop.mqtt_options;
                eventloop.state = MqttState::new(options.inflight(), options.manual_acks());
            }
        }
    }
}

/// Coordinator state: what is in flight and what is acknowledged.
struct Window {
    /// Highest seq such that it and everything sent before it is acknowledged.
    cursor: u64,
    persisted: u64,
    reader: Reader,
    /// Sent seqs in send order, with their acknowledged flag.
    unacked: VecDeque<(u64, bool)>,
    /// Seqs handed to rumqttc whose pkid is not known yet (FIFO, rumqttc keeps order).
    awaiting_pkid: VecDeque<u64>,
    inflight: HashMap<u16, u64>,
    /// A publish rumqttc held back because its pkid was still in use.
    collided: Option<(u16, u64)>,
}

impl Window {
    fn reset(&mut self, log: &Log) {
        self.reader = log.reader(self.cursor + 1);
        self.unacked.clear();
        self.awaiting_pkid.clear();
        self.inflight.clear();
        self.collided = None;
    }

    fn in_flight(&self) -> usize {
        self.unacked.len()
    }

    fn acked(&mut self, seq: u64) {
        if let Some(entry) = self.unacked.iter_mut().find(|(s, _)| *s == seq) {
            entry.1 = true;
        }
        while let Some(&(s, true)) = self.unacked.front() {
            self.cursor = s;
            self.unacked.pop_front();
        }
    }
}

impl Forwarder {
    /// Runs until `shutdown` turns true; persists the cursor before returning.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let options = mqtt_options(&self.upstream)?;
        let window_max = usize::from(self.upstream.max_inflight);
        let (client, eventloop) = AsyncClient::new(options, window_max + 16);
        let (events_tx, mut events) = mpsc::channel(256);
        let (resume_tx, resume_rx) = mpsc::channel(1);
        let poller = tokio::spawn(poll_task(eventloop, events_tx, resume_rx));
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE_MAX);
        let commands = tokio::spawn(store_commands(
            commands_rx,
            self.event_bytes_max,
            self.writer.clone(),
            self.durable.clone(),
            client.clone(),
            self.health.clone(),
        ));

        let prefix = format!("{}/{}", self.upstream.topic_prefix, self.device_id);
        let commands_filter = format!("{prefix}/commands/+");
        let cursor = self.log.cursor(FORWARD_CURSOR).unwrap_or(0);
        let mut window = Window {
            cursor,
            persisted: cursor,
            reader: self.log.reader(cursor + 1),
            unacked: VecDeque::new(),
            awaiting_pkid: VecDeque::new(),
            inflight: HashMap::new(),
            collided: None,
        };
        self.health.set_forwarded(cursor);
        let mut backoff = Backoff::new(&self.retry);
        let mut breaker = Breaker::new(&self.breaker);
        let mut connected = false;
        let mut retry_at: Option<Instant> = None;
        let mut persist_tick =
            tokio::time::interval(Duration::from_millis(CURSOR_PERSIST_INTERVAL_MS));
        persist_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(host = %self.upstream.host, port = self.upstream.port, from_seq = cursor + 1, "forwarder starting");
        let fault = crate::fault::Wedge::from_env("forwarder");

        loop {
            if connected {
                self.fill(&client, &mut window, &prefix, window_max);
            }
            tokio::select! {
                _ = crate::wait_true(&mut shutdown) => break,
                event = events.recv() => match event {
                    None => break,
                    Some(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => {
                        connected = true;
                        breaker.on_success();
                        backoff.reset();
                        self.health.set_connected(true);
                        self.health.set_breaker(breaker.state());
                        window.reset(&self.log);
                        if let Err(e) = client.try_subscribe(commands_filter.clone(), QoS::AtLeastOnce) {
                            tracing::warn!(error = %e, "cannot subscribe to commands");
                        }
                        tracing::info!(resend_from = window.cursor + 1, "connected to broker");
                    }
                    Some(Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid)))) => {
                        match window.collided {
                            Some((held, seq)) if held == pkid => {
                                window.inflight.insert(pkid, seq);
                                window.collided = None;
                            }
                            _ => {
                                if let Some(seq) = window.awaiting_pkid.pop_front() {
                                    window.inflight.insert(pkid, seq);
                                }
                            }
                        }
                    }
                    Some(Ok(MqttEvent::Outgoing(Outgoing::AwaitAck(pkid)))) => {
                        if let Some(seq) = window.awaiting_pkid.pop_front() {
                            window.collided = Some((pkid, seq));
                        }
                    }
                    Some(Ok(MqttEvent::Incoming(Packet::PubAck(PubAck { pkid, .. })))) => {
                        if let Some(seq) = window.inflight.remove(&pkid) {
                            window.acked(seq);
                            self.health.set_forwarded(window.cursor);
                        }
                    }
                    Some(Ok(MqttEvent::Incoming(Packet::Publish(publish)))) => {
                        if commands_tx.try_send(publish).is_err() {
                            // Not acknowledged: the broker redelivers it after a reconnect.
                            tracing::warn!("command queue full; command left unacknowledged");
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        let now = Instant::now();
                        if connected {
                            tracing::warn!(%error, "connection to broker lost");
                        } else {
                            tracing::warn!(%error, failures = breaker.failures() + 1, "connection attempt failed");
                        }
                        connected = false;
                        self.health.set_connected(false);
                        self.health.set_error(format!("upstream: {error}"));
                        breaker.on_failure(now);
                        self.health.set_breaker(breaker.state());
                        window.reset(&self.log);
                        let at = breaker.next_attempt_at(now).max(now + backoff.next_delay());
                        tracing::info!(retry_in_ms = (at - now).as_millis() as u64, breaker = breaker.state().as_str(), "reconnect scheduled");
                        retry_at = Some(at);
                    }
                },
                _ = sleep_until_some(retry_at) => {
                    let now = Instant::now();
                    if breaker.allow(now) {
                        self.health.set_breaker(breaker.state());
                        retry_at = None;
                        tracing::info!(breaker = breaker.state().as_str(), "reconnecting");
                        let _ = resume_tx.try_send(());
                    } else {
                        retry_at = Some(breaker.next_attempt_at(now));
                    }
                }
                _ = self.durable.changed() => {}
                Some(ping) = self.pings.recv() => {
                    fault.maybe_block_async().await;
                    let _ = ping.send(());
                }
                _ = persist_tick.tick() => self.persist(&mut window),
            }
        }
        self.persist(&mut window);
        let _ = client.try_disconnect();
        drop(commands_tx);
        let _ = commands.await;
        poller.abort();
        tracing::info!(forwarded_seq = window.cursor, "forwarder stopped");
        Ok(())
    }

    /// Publishes durable events while the window has room.
    fn fill(&self, client: &AsyncClient, window: &mut Window, prefix: &str, window_max: usize) {
        for _ in 0..FORWARD_READ_BATCH {
            if window.in_flight() >= window_max {
                return;
            }
            let event = match window.reader.next() {
                None => return,
                Some(Err(e)) => {
                    tracing::error!(error = %e, "corrupt record skipped by the forwarder");
                    self.health.set_error(format!("storage: {e}"));
                    continue;
                }
                Some(Ok(event)) => event,
            };
            let topic = format!("{prefix}/events/{}", event.source);
            let payload = event_json(&event, Some(&self.device_id)).to_string();
            match client.try_publish(topic, QoS::AtLeastOnce, false, payload) {
                Ok(()) => {
                    window.unacked.push_back((event.seq, false));
                    window.awaiting_pkid.push_back(event.seq);
                    self.health.count_published();
                }
                Err(_) => {
                    // rumqttc's request queue is full: read this event again next time.
                    window.reader = self.log.reader(event.seq);
                    return;
                }
            }
        }
    }

    fn persist(&self, window: &mut Window) {
        if window.cursor == window.persisted {
            return;
        }
        match self.log.set_cursor(FORWARD_CURSOR, window.cursor) {
            Ok(()) => window.persisted = window.cursor,
            Err(e) => {
                tracing::error!(error = %e, "cannot persist the forward cursor");
                self.health.set_error(format!("cursor: {e}"));
            }
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Stores upstream commands one at a time and acknowledges each once durable.
async fn store_commands(
    mut commands: mpsc::Receiver<Publish>,
    event_bytes_max: usize,
    writer: WriterHandle,
    mut durable: watch::Receiver<u64>,
    client: AsyncClient,
    health: Arc<Health>,
) {
    while let Some(publish) = commands.recv().await {
        let name = publish.topic.rsplit('/').next().unwrap_or_default();
        if publish.payload.len() > event_bytes_max {
            // Acknowledged and dropped: redelivery would only fail again.
            tracing::warn!(topic = %publish.topic, bytes = publish.payload.len(), "command over ingest.max_event_bytes; ignored");
            health.set_error(format!(
                "command on {:?}: {} bytes, over ingest.max_event_bytes ({event_bytes_max})",
                publish.topic,
                publish.payload.len()
            ));
            let _ = client.try_ack(&publish);
            continue;
        }
        if !valid_source(name) {
            tracing::warn!(topic = %publish.topic, "command topic level is not a valid source; ignored");
            health.set_error(format!(
                "command on {:?}: invalid source name",
                publish.topic
            ));
            let _ = client.try_ack(&publish);
            continue;
        }
        let value = match serde_json::from_slice::<serde_json::Value>(&publish.payload) {
            Ok(json) => to_value(&json),
            Err(_) => edgecap_storage::Value::String(
                String::from_utf8_lossy(&publish.payload).into_owned(),
            ),
        };
        let stamp = crate::clock::now();
        let mut event = match Event::new(Kind::Command, name, value) {
            Ok(event) => event,
            Err(e) => {
                health.set_error(format!("command: {e}"));
                let _ = client.try_ack(&publish);
                continue;
            }
        };
        event.wall_ms = stamp.wall_ms;
        event.mono_ms = stamp.mono_ms;
        event.clock_synced = stamp.clock_synced;
        event.boot_id = crate::clock::boot_id();
        match writer.append(event).await.await {
            Ok(Ok(seq)) => {
                if durable.wait_for(|d| *d >= seq).await.is_err() {
                    return;
                }
                tracing::info!(seq, source = name, "upstream command stored");
                let _ = client.ack(&publish).await;
            }
            Ok(Err(message)) => {
                // Not acknowledged: the broker redelivers after the next reconnect.
                tracing::error!(error = %message, "cannot store upstream command");
                health.set_error(format!("command: {message}"));
            }
            Err(_) => return,
        }
    }
}
