//! The forwarder: durable events → MQTT QoS 1, in seq order, at least once.
//!
//! Three tasks. The *poll task* ([`link`]) owns rumqttc's `EventLoop`; the *command task*
//! ([`commands`]) stores upstream commands; the *coordinator* (here) reads durable events from
//! the log (woken by the writer's durable-seq `watch`), publishes while fewer than
//! `max_inflight` are unacknowledged, and advances the cursor over acknowledged events only
//! ([`window`]). The cursor is persisted every `CURSOR_PERSIST_INTERVAL_MS` and at shutdown, so
//! a crash resends at most that window (consumers dedup on `(device, seq)`).
//!
//! The coordinator is a dispatcher: each select arm calls one named handler. What it decides:
//! - **Session**: persistent (`clean_session = false`, stable client id), so commands the broker
//!   queued while the device was away are delivered. The command subscription is made on a
//!   fresh session and once per run (a changed config), never again on a resumed one (that
//!   would make the broker resend every retained command).
//! - **Health**: a connection counts as healthy, resetting backoff and breaker, only once it has
//!   lived one keep-alive period (at most `CONNECTION_HEALTHY_MS`); a broker that accepts and then drops (a duplicate client id,
//!   an auth plugin) opens the breaker and is reported.
//! - **PUBACK timeout**: a publish unacknowledged for 2 × keep-alive drops the connection; the
//!   resend starts from the cursor.
//! - **Poison pills**: an event whose upstream packet is over the packet limit, or that the
//!   broker answered by closing the connection `POISON_STRIKES_MAX` times in a row, is set aside
//!   with a `forward_skip` system event; a broker packet over our incoming limit (an oversized
//!   retained command) pauses the command subscription on a clean session instead of breaking
//!   every reconnect.

// Public for the fuzz targets (tests/fuzz) only.
#[doc(hidden)]
pub mod commands;
mod link;
mod window;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use edgecap_storage::{Event, Log, Reader};
use rumqttc::{
    AsyncClient, ConnAck, Event as MqttEvent, MqttOptions, Outgoing, Packet, PubAck, Publish, QoS,
    SubAck, SubscribeReasonCode,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::{BreakerConfig, RetryConfig, UpstreamConfig};
use crate::json::event_json;
use crate::limits::{
    COMMAND_PACKET_BYTES_MAX, COMMAND_PAUSE_MS, COMMAND_QUEUE_MAX, CONNECTION_HEALTHY_MS,
    CURSOR_PERSIST_INTERVAL_MS, EARLY_DROPS_REPORTED, FORWARD_READ_BATCH, LINK_EVENTS_MAX,
    LINK_ORDERS_MAX, MQTT_PACKET_BYTES_MAX, MQTT_REQUESTS_SPARE, POISON_STRIKES_MAX,
    SUBSCRIBE_RETRY_MS, SYSTEM_QUEUE_MAX,
};
use crate::retry::{Backoff, Breaker};
use crate::status::Health;
use crate::system::SystemEvent;
use crate::writer::WriterHandle;
use link::{Generation, LinkError, LinkEvent, Order};
use window::Window;

/// Name of the forwarder's cursor in the log.
pub const FORWARD_CURSOR: &str = "forward";

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
    /// The data directory (the retained-command memory lives there).
    pub dir: PathBuf,
    /// Where a fault the process cannot repair (a cursor that cannot be written) is reported.
    pub fatal: mpsc::Sender<String>,
}

/// The topic and JSON payload an event is published with.
pub fn encode_upstream(event: &Event, device: &str, prefix: &str) -> (String, String) {
    let topic = format!("{prefix}/{device}/events/{}", event.source);
    (topic, event_json(event, Some(device)).to_string())
}

/// Size of the MQTT 3.1.1 QoS 1 PUBLISH packet for `topic` and `payload`, header included.
pub fn publish_bytes(topic: &str, payload: &str) -> usize {
    // Fixed header (1 + up to 4 length bytes), topic length (2), pkid (2).
    1 + 4 + 2 + topic.len() + 2 + payload.len()
}

fn mqtt_options(upstream: &UpstreamConfig) -> MqttOptions {
    let mut options = MqttOptions::new(&upstream.client_id, &upstream.host, upstream.port);
    options
        .set_keep_alive(Duration::from_secs(upstream.keep_alive_secs))
        .set_clean_session(false)
        .set_inflight(upstream.max_inflight)
        .set_manual_acks(true)
        .set_max_packet_size(COMMAND_PACKET_BYTES_MAX, MQTT_PACKET_BYTES_MAX);
    if let Some(username) = &upstream.username {
        let password = upstream.password.as_ref().map_or("", |p| p.0.as_str());
        options.set_credentials(username, password);
    }
    if let Some(tls) = &upstream.tls {
        options.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.client_config.clone()),
        ));
    }
    options
}

/// The link as the coordinator sees it.
#[derive(Debug, Clone, Copy)]
enum Link {
    /// No connection; the next attempt at `retry_at` (`None`: an attempt is under way).
    Down { retry_at: Option<Instant> },
    Up {
        since: Instant,
        healthy: bool,
        /// A PUBACK arrived on this connection.
        acked: bool,
        /// The coordinator ordered this connection dropped.
        dropping: bool,
        /// The suspect event was sent alone on this (healthy) connection.
        trial: bool,
    },
}

/// An event that may be a poison pill, and the failed trials so far.
#[derive(Debug, Clone, Copy)]
struct Suspect {
    seq: u64,
    strikes: u32,
}

/// The command subscription.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Subscription {
    /// Not asked for on this connection; ask at `at`.
    Due {
        at: Instant,
    },
    /// SUBSCRIBE sent; without a SUBACK by `retry_at` it is sent again.
    Requested {
        retry_at: Instant,
    },
    Confirmed,
}

/// The coordinator's state.
struct Coordinator {
    fwd: Forwarder,
    client: AsyncClient,
    orders: mpsc::Sender<Order>,
    system: mpsc::Sender<Event>,
    window: Window,
    reader: Reader,
    window_max: usize,
    prefix: String,
    commands_filter: String,
    link: Link,
    generation: Generation,
    backoff: Backoff,
    breaker: Breaker,
    subscription: Subscription,
    subscribed_this_run: bool,
    /// Commands paused (an oversized packet) until then; the next session is clean.
    commands_paused_until: Option<Instant>,
    clean_next: bool,
    /// Command PUBACKs waiting for room in rumqttc's queue, with their connection.
    acks: VecDeque<(Generation, Publish)>,
    /// An event the broker may be refusing by closing the connection: sent alone, on healthy
    /// connections only, until acknowledged or `POISON_STRIKES_MAX` trials fail.
    suspect: Option<Suspect>,
    poisoned: Option<u64>,
    early_drops: u32,
    puback_timeout: Duration,
    /// How long a connection must live to count as healthy.
    healthy_after: Duration,
    /// The cursor file could not be created yet (retried on every persist).
    cursor_unwritten: bool,
}

impl Forwarder {
    /// Runs until `shutdown` turns true; persists the cursor before returning.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let window_max = usize::from(self.upstream.max_inflight);
        let (client, eventloop) = AsyncClient::new(
            mqtt_options(&self.upstream),
            window_max + MQTT_REQUESTS_SPARE,
        );
        let (events_tx, mut events) = mpsc::channel(LINK_EVENTS_MAX);
        let (orders_tx, orders_rx) = mpsc::channel(LINK_ORDERS_MAX);
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE_MAX);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let (acks_tx, mut acks) = mpsc::channel(COMMAND_QUEUE_MAX);
        let sink = link::CommandSink {
            tx: commands_tx,
            queued_bytes: queued_bytes.clone(),
        };
        let poller = tokio::spawn(link::poll_task(eventloop, events_tx, sink, orders_rx));
        let store = self.command_store();
        let command_task = tokio::spawn(commands::run(store, commands_rx, queued_bytes, acks_tx));
        let (system_tx, system_rx) = mpsc::channel(SYSTEM_QUEUE_MAX);
        let recorder = tokio::spawn(record_system(self.writer.clone(), system_rx));
        let mut c = Coordinator::new(self, client, orders_tx, system_tx);
        let mut persist_tick =
            tokio::time::interval(Duration::from_millis(CURSOR_PERSIST_INTERVAL_MS));
        persist_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let fault = crate::fault::Wedge::from_env("forwarder");
        loop {
            c.fill();
            c.flush_acks();
            let deadline = c.next_deadline();
            tokio::select! {
                _ = crate::wait_true(&mut shutdown) => break,
                event = events.recv() => match event {
                    Some(event) => c.on_link_event(event),
                    None => {
                        c.fatal("the MQTT poll task ended".into());
                        break;
                    }
                },
                Some(ack) = acks.recv(), if c.acks.len() < COMMAND_QUEUE_MAX => c.acks.push_back(ack),
                _ = sleep_until_some(deadline) => c.on_timer(Instant::now()),
                changed = c.fwd.durable.changed() => if changed.is_err() { break },
                Some(ping) = c.fwd.pings.recv() => {
                    fault.maybe_block_async().await;
                    let _ = ping.send(());
                }
                // Polled only while there is something to write: an idle link wakes nobody.
                _ = persist_tick.tick(), if c.window.to_persist().is_some() => c.persist().await,
            }
        }
        c.persist().await;
        let cursor = c.window.cursor();
        c.disconnect(poller, &mut events).await;
        drop(c);
        let bound = Duration::from_millis(crate::limits::TASK_STOP_MS);
        for task in [command_task, recorder] {
            let abort = task.abort_handle();
            if tokio::time::timeout(bound, task).await.is_err() {
                abort.abort();
            }
        }
        tracing::info!(forwarded_seq = cursor, "forwarder stopped");
        Ok(())
    }

    fn command_store(&self) -> commands::CommandStore {
        let device = self.device_id.clone();
        let prefix = self.upstream.topic_prefix.clone();
        commands::CommandStore {
            writer: self.writer.clone(),
            durable: self.durable.clone(),
            health: self.health.clone(),
            event_bytes_max: self.event_bytes_max,
            upstream_bytes: Arc::new(move |event| {
                let (topic, payload) = encode_upstream(event, &device, &prefix);
                publish_bytes(&topic, &payload)
            }),
            remembered: commands::Remembered::load(&self.dir),
        }
    }
}

/// Appends the forwarder's `system` events in order.
async fn record_system(writer: WriterHandle, mut events: mpsc::Receiver<Event>) {
    while let Some(event) = events.recv().await {
        if let Ok(Err(e)) = writer.append(event).await.await {
            tracing::error!(error = %e, "cannot record a forwarder system event");
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Coordinator {
    fn new(
        fwd: Forwarder,
        client: AsyncClient,
        orders: mpsc::Sender<Order>,
        system: mpsc::Sender<Event>,
    ) -> Coordinator {
        let cursor = fwd.log.cursor(FORWARD_CURSOR).unwrap_or(0);
        fwd.health.set_forwarded(cursor);
        tracing::info!(host = %fwd.upstream.host, port = fwd.upstream.port, from_seq = cursor + 1, "forwarder starting");
        let prefix = format!("{}/{}", fwd.upstream.topic_prefix, fwd.device_id);
        let keep_alive = Duration::from_secs(fwd.upstream.keep_alive_secs);
        Coordinator {
            client,
            orders,
            system,
            window: Window::new(cursor),
            reader: fwd.log.reader(cursor + 1),
            window_max: usize::from(fwd.upstream.max_inflight),
            commands_filter: format!("{prefix}/commands/+"),
            prefix: fwd.upstream.topic_prefix.clone(),
            link: Link::Down { retry_at: None },
            generation: 0,
            backoff: Backoff::new(&fwd.retry),
            breaker: Breaker::new(&fwd.breaker),
            subscription: Subscription::Confirmed,
            subscribed_this_run: false,
            commands_paused_until: None,
            clean_next: false,
            acks: VecDeque::new(),
            suspect: None,
            poisoned: None,
            early_drops: 0,
            puback_timeout: 2 * keep_alive,
            healthy_after: keep_alive.min(ms(CONNECTION_HEALTHY_MS)),
            cursor_unwritten: false,
            fwd,
        }
    }

    /// The earliest moment a timer handler has something to do.
    fn next_deadline(&self) -> Option<Instant> {
        match self.link {
            Link::Down { retry_at } => retry_at,
            Link::Up {
                since,
                healthy,
                dropping,
                ..
            } => {
                let healthy_at = (!healthy).then(|| since + self.healthy_after);
                let puback_at = self
                    .window
                    .oldest_unacked()
                    .filter(|_| !dropping)
                    .map(|(_, at)| at + self.puback_timeout);
                let subscribe_at = match self.subscription {
                    Subscription::Due { at } => Some(at),
                    Subscription::Requested { retry_at } => Some(retry_at),
                    Subscription::Confirmed => None,
                };
                [healthy_at, puback_at, subscribe_at]
                    .into_iter()
                    .flatten()
                    .min()
            }
        }
    }

    fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Down(error) => self.on_down(error),
            LinkEvent::Mqtt(generation, event) => match event {
                MqttEvent::Incoming(Packet::ConnAck(connack)) => {
                    self.on_connack(generation, connack)
                }
                MqttEvent::Outgoing(Outgoing::Publish(pkid)) => self.window.pkid_assigned(pkid),
                MqttEvent::Outgoing(Outgoing::AwaitAck(pkid)) => self.window.pkid_collided(pkid),
                MqttEvent::Incoming(Packet::PubAck(PubAck { pkid, .. })) => {
                    self.on_puback(generation, pkid)
                }
                MqttEvent::Incoming(Packet::SubAck(suback)) => self.on_suback(suback),
                _ => {}
            },
        }
    }

    fn on_connack(&mut self, generation: Generation, connack: ConnAck) {
        assert!(
            generation > self.generation,
            "connections are numbered in order"
        );
        self.generation = generation;
        self.link = Link::Up {
            since: Instant::now(),
            healthy: false,
            acked: false,
            dropping: false,
            trial: false,
        };
        self.clean_next = false;
        self.fwd.health.set_connected(true);
        self.window.reset();
        self.reader = self.fwd.log.reader(self.window.next_seq());
        let resumed = connack.session_present && self.subscribed_this_run;
        self.subscription = match self.commands_paused_until {
            Some(until) => Subscription::Due { at: until },
            None if resumed => Subscription::Confirmed,
            None => Subscription::Due { at: Instant::now() },
        };
        tracing::info!(
            resend_from = self.window.next_seq(),
            session_present = connack.session_present,
            "connected to broker"
        );
    }

    fn on_puback(&mut self, generation: Generation, pkid: u16) {
        if generation != self.generation {
            return;
        }
        if let Link::Up { acked, .. } = &mut self.link {
            *acked = true;
        }
        if self.window.puback(pkid) {
            self.fwd.health.set_forwarded(self.window.cursor());
        }
        if self.suspect.is_some_and(|s| self.window.cursor() >= s.seq) {
            tracing::info!("the suspect event was acknowledged: not a poison pill");
            self.suspect = None;
        }
    }

    fn on_suback(&mut self, suback: SubAck) {
        if suback.return_codes.contains(&SubscribeReasonCode::Failure) {
            tracing::error!(filter = %self.commands_filter, "the broker refused the command subscription (SUBACK failure; check its ACL); retrying");
            self.fwd.health.set_error(
                "subscribe",
                format!(
                    "broker refused the subscription to {} (SUBACK failure)",
                    self.commands_filter
                ),
            );
            self.subscription = Subscription::Due {
                at: Instant::now() + ms(SUBSCRIBE_RETRY_MS),
            };
            return;
        }
        self.fwd.health.clear_error("subscribe");
        self.fwd.health.clear_error("commands");
        self.subscription = Subscription::Confirmed;
        self.subscribed_this_run = true;
        tracing::info!(filter = %self.commands_filter, "subscribed to commands");
    }

    fn on_down(&mut self, error: LinkError) {
        let now = Instant::now();
        let was = self.link;
        self.link = Link::Down { retry_at: None };
        self.fwd.health.set_connected(false);
        self.fwd
            .health
            .set_error("upstream", format!("upstream: {error}"));
        if let Link::Up {
            since,
            healthy,
            acked,
            trial,
            ..
        } = was
        {
            tracing::warn!(%error, lived_ms = (now - since).as_millis() as u64, "connection to broker lost");
            self.note_early_drop(&error, healthy);
            self.note_strike(&error, acked, trial, now);
        } else {
            tracing::warn!(%error, failures = self.breaker.failures() + 1, "connection attempt failed");
        }
        if let LinkError::Oversized(bytes) = error {
            self.pause_commands(bytes, now);
        }
        self.breaker.on_failure(now);
        self.fwd.health.set_breaker(self.breaker.state());
        self.window.reset();
        let at = self
            .breaker
            .next_attempt_at(now)
            .max(now + self.backoff.next_delay());
        tracing::info!(
            retry_in_ms = (at - now).as_millis() as u64,
            breaker = self.breaker.state().as_str(),
            "reconnect scheduled"
        );
        self.link = Link::Down { retry_at: Some(at) };
    }

    /// A broker that closes connections soon after accepting them, again and again, is
    /// usually seeing another client with our client id.
    fn note_early_drop(&mut self, error: &LinkError, healthy: bool) {
        if healthy || !matches!(error, LinkError::Closed(_)) {
            self.early_drops = 0;
            return;
        }
        self.early_drops += 1;
        if self.early_drops >= EARLY_DROPS_REPORTED {
            let id = &self.fwd.upstream.client_id;
            let message = format!(
                "the broker closed {} connections in a row within {} ms of accepting them: another client may be using client_id {id:?} (brokers disconnect the older of two), or an auth plugin rejects us",
                self.early_drops,
                self.healthy_after.as_millis()
            );
            tracing::error!("{message}");
            self.fwd.health.set_error("upstream", message);
        }
    }

    /// A connection the broker closed soon after we wrote the oldest unacknowledged publish,
    /// with no PUBACK on it, makes that event a suspect. A suspect is then sent alone, and only
    /// on a connection that has proved healthy, so that a duplicate client id, an auth plugin
    /// or a broker restart cannot look like a poison pill; each such trial the broker answers
    /// by closing is a strike, and after `POISON_STRIKES_MAX` strikes the event is set aside.
    fn note_strike(&mut self, error: &LinkError, acked: bool, trial: bool, now: Instant) {
        let Some((seq, written)) = self.window.oldest_written() else {
            return;
        };
        let quick = now.saturating_duration_since(written) <= self.healthy_after;
        if acked || !quick || !matches!(error, LinkError::Closed(_)) {
            return;
        }
        let strikes = match self.suspect {
            Some(s) if s.seq == seq && trial => s.strikes + 1,
            Some(s) if s.seq == seq => s.strikes,
            _ => 1,
        };
        tracing::warn!(seq, strikes, "the broker closed the connection right after this event: sending it alone on the next healthy connection");
        self.suspect = Some(Suspect { seq, strikes });
        if strikes >= POISON_STRIKES_MAX {
            tracing::error!(seq, strikes, "the broker closed the connection each time this event was sent alone: setting it aside");
            self.poisoned = Some(seq);
            self.suspect = None;
        }
    }

    /// Whether `fill` must wait before reading the suspect: it goes out alone, on a healthy
    /// connection, with nothing else in flight.
    fn suspect_must_wait(&self) -> bool {
        let Some(suspect) = self.suspect else {
            return false;
        };
        let in_flight = self.window.in_flight() > 0;
        if self.reader.next_seq() > suspect.seq {
            return in_flight; // the suspect is out: nothing else until it is acknowledged
        }
        let healthy = matches!(self.link, Link::Up { healthy: true, .. });
        !healthy || in_flight
    }

    fn pause_commands(&mut self, bytes: usize, now: Instant) {
        let until = now + ms(COMMAND_PAUSE_MS);
        let reason = format!(
            "the broker sent a {bytes}-byte packet, over the {COMMAND_PACKET_BYTES_MAX}-byte limit (an oversized retained command?); command subscription paused for {} s on a clean session",
            COMMAND_PAUSE_MS / 1000
        );
        tracing::error!(filter = %self.commands_filter, "{reason}");
        self.fwd.health.set_error("commands", reason.clone());
        if self.commands_paused_until.is_none() {
            let system = SystemEvent::CommandRefused {
                topic: self.commands_filter.clone(),
                bytes: bytes as u64,
                reason,
            };
            let _ = self.system.try_send(system.into_event());
        }
        self.commands_paused_until = Some(until);
        self.clean_next = true;
    }

    fn on_timer(&mut self, now: Instant) {
        match self.link {
            Link::Down { retry_at: Some(at) } if at <= now => self.attempt(now),
            Link::Down { .. } => {}
            Link::Up {
                since,
                healthy,
                dropping,
                ..
            } => {
                if !healthy && now >= since + self.healthy_after {
                    self.on_healthy();
                }
                if !dropping {
                    self.check_puback_timeout(now);
                }
                let due = match self.subscription {
                    Subscription::Due { at } => at <= now,
                    Subscription::Requested { retry_at } => retry_at <= now,
                    Subscription::Confirmed => false,
                };
                if due {
                    self.subscribe(now);
                }
            }
        }
    }

    fn attempt(&mut self, now: Instant) {
        if !self.breaker.allow(now) {
            self.link = Link::Down {
                retry_at: Some(self.breaker.next_attempt_at(now)),
            };
            return;
        }
        self.fwd.health.set_breaker(self.breaker.state());
        tracing::info!(
            breaker = self.breaker.state().as_str(),
            clean_session = self.clean_next,
            "reconnecting"
        );
        self.link = Link::Down { retry_at: None };
        let _ = self.orders.try_send(Order::Resume {
            clean: self.clean_next,
        });
    }

    fn on_healthy(&mut self) {
        if let Link::Up { healthy, .. } = &mut self.link {
            *healthy = true;
        }
        self.breaker.on_success();
        self.backoff.reset();
        self.early_drops = 0;
        self.fwd.health.set_breaker(self.breaker.state());
        self.fwd.health.clear_error("upstream");
    }

    fn check_puback_timeout(&mut self, now: Instant) {
        let Some((seq, at)) = self.window.oldest_unacked() else {
            return;
        };
        if now < at + self.puback_timeout {
            return;
        }
        let why = format!(
            "no PUBACK for seq {seq} within {} s (2 x keep-alive)",
            self.puback_timeout.as_secs()
        );
        tracing::warn!("{why}; reconnecting to resend from the cursor");
        if let Link::Up { dropping, .. } = &mut self.link {
            *dropping = true;
        }
        let _ = self.orders.try_send(Order::Drop(why));
    }

    fn subscribe(&mut self, now: Instant) {
        self.commands_paused_until = self.commands_paused_until.filter(|&until| until > now);
        if let Some(until) = self.commands_paused_until {
            self.subscription = Subscription::Due { at: until };
            return;
        }
        match self
            .client
            .try_subscribe(self.commands_filter.clone(), QoS::AtLeastOnce)
        {
            Ok(()) => {
                self.subscription = Subscription::Requested {
                    retry_at: now + ms(SUBSCRIBE_RETRY_MS),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to commands now; retrying");
                self.fwd.health.set_error(
                    "subscribe",
                    format!("cannot subscribe to {}: {e}", self.commands_filter),
                );
                self.subscription = Subscription::Due {
                    at: now + ms(SUBSCRIBE_RETRY_MS),
                };
            }
        }
    }

    /// Sends command PUBACKs of the current connection; drops those of ended connections
    /// (the broker redelivers those commands).
    fn flush_acks(&mut self) {
        while let Some((generation, publish)) = self.acks.front() {
            let up = matches!(self.link, Link::Up { .. });
            match ack_decision(*generation, self.generation, up) {
                AckDecision::Wait => return,
                AckDecision::Send => {
                    if self.client.try_ack(publish).is_err() {
                        return; // rumqttc's queue is full: next pass
                    }
                }
                AckDecision::Discard => {
                    tracing::debug!(topic = ?publish.topic, "command PUBACK of an ended connection not sent; the broker redelivers it");
                }
            }
            self.acks.pop_front();
        }
    }

    /// Publishes durable events while the window has room.
    fn fill(&mut self) {
        if !matches!(
            self.link,
            Link::Up {
                dropping: false,
                ..
            }
        ) {
            return;
        }
        for _ in 0..FORWARD_READ_BATCH {
            if self.window.in_flight() >= self.window_max || self.suspect_must_wait() {
                return;
            }
            let event = match self.reader.next() {
                None => return,
                Some(Err(e)) => {
                    tracing::error!(error = %e, "corrupt record skipped by the forwarder");
                    self.fwd.health.note_error(format!("storage: {e}"));
                    continue;
                }
                Some(Ok(event)) => event,
            };
            if self.poisoned == Some(event.seq) {
                self.poisoned = None;
                let reason = format!(
                    "the broker closed the connection each of {POISON_STRIKES_MAX} times this event was sent"
                );
                self.skip(event.seq, reason);
                continue;
            }
            let (topic, payload) = encode_upstream(&event, &self.fwd.device_id, &self.prefix);
            let bytes = publish_bytes(&topic, &payload);
            if bytes > MQTT_PACKET_BYTES_MAX {
                let reason = format!(
                    "its upstream MQTT packet would be {bytes} bytes, over the limit ({MQTT_PACKET_BYTES_MAX})"
                );
                self.skip(event.seq, reason);
                continue;
            }
            if self
                .client
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .is_err()
            {
                // rumqttc's request queue is full: read this event again next time.
                self.reader = self.fwd.log.reader(event.seq);
                return;
            }
            self.window.published(event.seq, Instant::now());
            self.fwd.health.count_published();
            if let Some(suspect) = self.suspect {
                if event.seq >= suspect.seq {
                    if let Link::Up { trial, .. } = &mut self.link {
                        *trial = event.seq == suspect.seq;
                    }
                    if event.seq > suspect.seq {
                        self.suspect = None; // gone from the log (retention)
                    } else {
                        return; // alone
                    }
                }
            }
        }
    }

    /// Sets `seq` aside: never sent, recorded, and passed by the cursor.
    fn skip(&mut self, seq: u64, reason: String) {
        tracing::error!(seq, %reason, "event set aside, not forwarded (it stays in the log)");
        self.fwd
            .health
            .note_error(format!("seq {seq} not forwarded: {reason}"));
        self.fwd.health.count_skipped();
        self.window.skipped(seq, Instant::now());
        self.fwd.health.set_forwarded(self.window.cursor());
        let system = SystemEvent::ForwardSkip { seq, reason };
        if self.system.try_send(system.into_event()).is_err() {
            tracing::warn!(
                seq,
                "forward_skip system event not recorded: its queue is full"
            );
        }
    }

    /// Writes the cursor if it moved (off the async workers: it fsyncs). A cursor that cannot
    /// be updated ends the process; one whose file cannot be created for lack of space is
    /// retried (see below).
    async fn persist(&mut self) {
        let Some(cursor) = self.window.to_persist() else {
            return;
        };
        let log = self.fwd.log.clone();
        let written =
            tokio::task::spawn_blocking(move || log.set_cursor(FORWARD_CURSOR, cursor)).await;
        match written {
            Ok(Ok(())) => {
                self.window.persisted(cursor);
                if std::mem::take(&mut self.cursor_unwritten) {
                    tracing::info!(cursor, "forward cursor persisted again");
                    self.fwd.health.clear_error("cursor");
                }
            }
            // Creating the first cursor file failed (a full disk) and damaged nothing: a
            // restart could not do better (it would fail the same way and loop), and the worst
            // a crash now costs is resending from the last persisted cursor. Retried each time.
            Ok(Err(e)) if no_space(&e) && self.fwd.log.poisoned().is_none() => {
                self.cursor_not_created(e)
            }
            Ok(Err(e)) => self.fatal(format!("cannot persist the forward cursor: {e}")),
            Err(e) => self.fatal(format!("cannot persist the forward cursor: {e}")),
        }
    }

    fn cursor_not_created(&mut self, error: edgecap_storage::Error) {
        debug_assert!(no_space(&error));
        let message = format!("cannot create the forward cursor file (retrying): {error}");
        if !std::mem::replace(&mut self.cursor_unwritten, true) {
            tracing::warn!("{message}");
        }
        self.fwd.health.set_error("cursor", message);
    }

    /// Reports a fault the process cannot repair: the daemon stops with exit 1.
    fn fatal(&self, message: String) {
        tracing::error!("{message}");
        self.fwd.health.set_fatal(message.clone());
        let _ = self.fwd.fatal.try_send(message);
    }

    /// Sends DISCONNECT and gives the poll task `DISCONNECT_MS` to write it, then stops it.
    async fn disconnect(
        &self,
        poller: tokio::task::JoinHandle<()>,
        events: &mut mpsc::Receiver<LinkEvent>,
    ) {
        let up = matches!(self.link, Link::Up { .. });
        if up && self.client.try_disconnect().is_ok() {
            let written = async {
                while let Some(event) = events.recv().await {
                    if let LinkEvent::Mqtt(_, MqttEvent::Outgoing(Outgoing::Disconnect)) = event {
                        return;
                    }
                }
            };
            let bound = Duration::from_millis(crate::limits::DISCONNECT_MS);
            let _ = tokio::time::timeout(bound, written).await;
        }
        poller.abort();
    }
}

/// What to do with a command PUBACK computed for connection `ack`.
#[derive(Debug, PartialEq, Eq)]
enum AckDecision {
    Send,
    /// Its connection ended: a pkid means nothing on another connection.
    Discard,
    /// Its connection's CONNACK has not reached the coordinator yet.
    Wait,
}

fn ack_decision(ack: Generation, current: Generation, up: bool) -> AckDecision {
    match ack.cmp(&current) {
        std::cmp::Ordering::Greater => AckDecision::Wait,
        std::cmp::Ordering::Equal if up => AckDecision::Send,
        _ => AckDecision::Discard,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A full file system or quota: the only cursor-file creation failure worth retrying (any
/// other I/O error is a fault of the medium, fatal like a failed sync).
fn no_space(error: &edgecap_storage::Error) -> bool {
    use std::io::ErrorKind;
    matches!(error, edgecap_storage::Error::Io { source, .. }
        if matches!(source.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_puback_never_crosses_connections() {
        assert_eq!(ack_decision(3, 3, true), AckDecision::Send);
        assert_eq!(
            ack_decision(3, 3, false),
            AckDecision::Discard,
            "connection 3 ended"
        );
        assert_eq!(
            ack_decision(2, 3, true),
            AckDecision::Discard,
            "computed on 2, now on 3"
        );
        assert_eq!(
            ack_decision(4, 3, true),
            AckDecision::Wait,
            "CONNACK 4 not seen yet"
        );
    }

    #[test]
    fn publish_bytes_counts_the_whole_packet() {
        let topic = "edgecap/dev1/events/t";
        assert!(publish_bytes(topic, "{}") >= 2 + topic.len() + 2 + 2 + 2);
    }
}
