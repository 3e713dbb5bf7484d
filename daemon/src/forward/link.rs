//! The poll task: owns rumqttc's `EventLoop` and only polls it. It hands every event to the
//! coordinator, tagged with the connection it arrived on, and every upstream command straight
//! to the command task. It never waits on that queue: when it is full (count or bytes) the
//! connection is ended instead, and the broker, holding the unacknowledged commands in the
//! persistent session, delivers them again on the next one. A command is never dropped. After a connection ends (an error,
//! or the coordinator's order to drop it) it waits for the coordinator's go-ahead, throws away
//! rumqttc's own pending queue and state (the forward cursor, not rumqttc's memory, is the
//! truth) and connects with the session the coordinator asks for.

use rumqttc::{ConnectionError, Event as MqttEvent, EventLoop, MqttState, Packet, Publish};
use tokio::sync::mpsc;

use crate::limits::{COMMAND_QUEUE_BYTES_MAX, COMMAND_QUEUE_MAX};

/// Connection number: 1 for the first CONNACK, +1 for each later one.
pub type Generation = u64;

/// What the poll task reports.
#[derive(Debug)]
pub enum LinkEvent {
    Mqtt(Generation, MqttEvent),
    /// The connection ended (or an attempt failed).
    Down(LinkError),
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// The broker sent a packet over our incoming limit (an oversized retained command);
    /// the broker will send it again on a resumed session.
    Oversized(usize),
    /// The coordinator dropped the connection (a PUBACK that never came).
    Dropped(String),
    /// The broker closed the connection.
    Closed(String),
    Other(String),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Oversized(n) => {
                write!(f, "the broker sent a {n}-byte packet, over our limit")
            }
            LinkError::Dropped(why) => write!(f, "connection dropped: {why}"),
            LinkError::Closed(why) => write!(f, "broker closed the connection: {why}"),
            LinkError::Other(why) => f.write_str(why),
        }
    }
}

fn classify(error: &ConnectionError) -> LinkError {
    use rumqttc::mqttbytes::Error as Bytes;
    use rumqttc::StateError;
    let io = match error {
        ConnectionError::MqttState(StateError::Deserialization(
            Bytes::PayloadSizeLimitExceeded(n),
        )) => return LinkError::Oversized(*n),
        ConnectionError::MqttState(StateError::ConnectionAborted) => {
            return LinkError::Closed(error.to_string())
        }
        ConnectionError::MqttState(StateError::Io(e))
        | ConnectionError::MqttState(StateError::Deserialization(Bytes::Io(e)))
        | ConnectionError::Io(e) => e,
        _ => return LinkError::Other(error.to_string()),
    };
    match io.kind() {
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::BrokenPipe => LinkError::Closed(error.to_string()),
        _ => LinkError::Other(error.to_string()),
    }
}

/// The coordinator's orders to the poll task.
#[derive(Debug)]
pub enum Order {
    /// Connect again; `clean` asks for a clean session (discarding what the broker queued).
    Resume { clean: bool },
    /// End the current connection now.
    Drop(String),
}

/// The poll task's side of the command queue: a bounded channel plus a byte count, so that
/// handing a command over never waits (waiting would stop the polling that sends the very
/// PUBACKs the queue is waiting for).
pub struct CommandSink {
    pub tx: mpsc::Sender<(Generation, Publish)>,
    /// Payload bytes queued and not yet taken by the command task.
    pub queued_bytes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CommandSink {
    /// Queues a command; `Err` when the queue is full (count or bytes).
    fn offer(&self, generation: Generation, publish: Publish) -> Result<(), LinkError> {
        use std::sync::atomic::Ordering;
        let bytes = publish.payload.len();
        let queued = self.queued_bytes.load(Ordering::Relaxed);
        let full = || {
            LinkError::Dropped(format!(
                "the broker sent more unacknowledged commands than the queue holds ({COMMAND_QUEUE_MAX} commands, {COMMAND_QUEUE_BYTES_MAX} bytes); it redelivers them on the next connection"
            ))
        };
        if queued + bytes > COMMAND_QUEUE_BYTES_MAX && queued > 0 {
            return Err(full());
        }
        self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.tx.try_send((generation, publish)).map_err(|_| {
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            full()
        })
    }
}

/// Polls the event loop until the coordinator goes away; see the module docs.
pub async fn poll_task(
    mut eventloop: EventLoop,
    events: mpsc::Sender<LinkEvent>,
    commands: CommandSink,
    mut orders: mpsc::Receiver<Order>,
) {
    let mut generation: Generation = 0;
    loop {
        let polled = tokio::select! {
            polled = eventloop.poll() => polled.map_err(|e| classify(&e)),
            // Cancelling `poll` is safe for both orders: the connection and rumqttc's state are
            // thrown away below. (`Resume` never comes while connected.)
            order = orders.recv() => match order {
                None => return,
                Some(Order::Drop(why)) => Err(LinkError::Dropped(why)),
                Some(Order::Resume { .. }) => Err(LinkError::Dropped("unexpected resume".into())),
            },
        };
        let polled = match polled {
            Ok(MqttEvent::Incoming(Packet::Publish(publish))) => {
                match commands.offer(generation, publish) {
                    Ok(()) => continue,
                    Err(full) => Err(full),
                }
            }
            other => other,
        };
        let sent = match polled {
            Ok(event) => {
                if matches!(event, MqttEvent::Incoming(Packet::ConnAck(_))) {
                    generation += 1;
                }
                events
                    .send(LinkEvent::Mqtt(generation, event))
                    .await
                    .is_ok()
            }
            Err(error) => {
                // Close the socket now, not when the coordinator asks to reconnect.
                eventloop.clean();
                if events.send(LinkEvent::Down(error)).await.is_err() {
                    return;
                }
                let Some(clean) = wait_for_resume(&mut orders).await else {
                    return;
                };
                reset(&mut eventloop, clean);
                true
            }
        };
        if !sent {
            return;
        }
    }
}

/// Waits for `Resume`, ignoring `Drop`s of a connection that is already gone.
async fn wait_for_resume(orders: &mut mpsc::Receiver<Order>) -> Option<bool> {
    loop {
        match orders.recv().await? {
            Order::Resume { clean } => return Some(clean),
            Order::Drop(_) => {}
        }
    }
}

/// Forgets the old connection entirely: requests still queued (stale PUBACKs and publishes
/// included) and rumqttc's in-flight state.
fn reset(eventloop: &mut EventLoop, clean: bool) {
    eventloop.clean();
    eventloop.pending.clear();
    let options = &mut eventloop.mqtt_options;
    options.set_clean_session(clean);
    eventloop.state = MqttState::new(options.inflight(), options.manual_acks());
}
