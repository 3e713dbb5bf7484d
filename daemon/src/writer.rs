//! The single writer thread: every event from every client (and every upstream command) goes
//! through one bounded queue into one thread that appends and group-commits.
//!
//! Under `sync = "always"` the thread appends a batch (up to `WRITE_BATCH_MAX` requests that
//! are already queued), makes it durable with one `sync_through`, then answers every request
//! of the batch: one fdatasync serves all clients that sent in the meantime. Under
//! `sync = "interval"` it answers right after the append and a syncer thread makes the log
//! durable every `sync_interval_ms`. Either way the durable seq is published on a
//! `watch` channel, which is what wakes the forwarder and followers: nothing reaches them
//! before it is durable.
//!
//! Drops made by the `drop_oldest` policy are recorded as `system` events right after the
//! batch that caused them.

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use edgecap_storage::{Event, Kind, Log, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::SyncPolicy;
use crate::limits::{WRITE_BATCH_MAX, WRITE_QUEUE_MAX};

/// Result of one append request: the seq, or an error message for the producer.
pub type AppendResult = Result<u64, String>;

/// One event to store and where to send the answer; or a proof-of-life ping.
#[derive(Debug)]
pub enum WriteRequest {
    Append {
        event: Event,
        reply: oneshot::Sender<AppendResult>,
    },
    /// Answered when the writer thread reaches it (the watchdog's proof of life).
    Ping(oneshot::Sender<()>),
}

/// Cheap handle to the writer queue.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<WriteRequest>,
}

impl WriterHandle {
    /// Queues an event; the receiver yields the answer once the sync policy is met. Waits
    /// (back-pressure) while the queue is full.
    pub async fn append(&self, event: Event) -> oneshot::Receiver<AppendResult> {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(WriteRequest::Append { event, reply })
            .await
            .is_err()
        {
            let (reply, rx) = oneshot::channel();
            let _ = reply.send(Err("daemon is shutting down".into()));
            return rx;
        }
        rx
    }

    /// Queues a ping; the receiver resolves once the writer thread has reached it.
    pub async fn ping(&self) -> oneshot::Receiver<()> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(WriteRequest::Ping(reply)).await;
        rx
    }
}

/// The running writer; `join` after every handle is dropped.
pub struct Writer {
    thread: JoinHandle<()>,
    syncer: Option<(JoinHandle<()>, std_mpsc::Sender<()>)>,
}

impl Writer {
    /// Waits for the writer (and syncer) to drain and stop; everything appended is synced.
    pub fn join(self) {
        let _ = self.thread.join();
        if let Some((thread, stop)) = self.syncer {
            drop(stop);
            let _ = thread.join();
        }
    }
}

/// Starts the writer thread (and, under `interval`, the syncer thread).
pub fn spawn(
    log: Log,
    policy: SyncPolicy,
    sync_interval: Duration,
    durable_tx: watch::Sender<u64>,
) -> (WriterHandle, Writer) {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE_MAX);
    let syncer = (policy == SyncPolicy::Interval).then(|| {
        let (stop_tx, stop_rx) = std_mpsc::channel::<()>();
        let log = log.clone();
        let durable_tx = durable_tx.clone();
        let thread = std::thread::Builder::new()
            .name("edgecap-syncer".into())
            .spawn(move || loop {
                let stopping = !matches!(
                    stop_rx.recv_timeout(sync_interval),
                    Err(std_mpsc::RecvTimeoutError::Timeout)
                );
                match log.sync() {
                    Ok(durable) => {
                        durable_tx.send_replace(durable);
                    }
                    Err(e) => tracing::error!(error = %e, "periodic sync failed"),
                }
                if stopping {
                    return;
                }
            })
            .expect("spawn syncer thread");
        (thread, stop_tx)
    });
    let thread = std::thread::Builder::new()
        .name("edgecap-writer".into())
        .spawn(move || run(log, policy, rx, durable_tx))
        .expect("spawn writer thread");
    (WriterHandle { tx }, Writer { thread, syncer })
}

fn run(
    log: Log,
    policy: SyncPolicy,
    mut rx: mpsc::Receiver<WriteRequest>,
    durable_tx: watch::Sender<u64>,
) {
    let mut batch: Vec<(AppendResult, oneshot::Sender<AppendResult>)> =
        Vec::with_capacity(WRITE_BATCH_MAX);
    let mut pings = Vec::new();
    let fault = crate::fault::Wedge::from_env("writer");
    while let Some(first) = rx.blocking_recv() {
        fault.maybe_block();
        batch.clear();
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                WriteRequest::Append { event, reply } => {
                    let result = log.append(event).map_err(|e| e.to_string());
                    batch.push((result, reply));
                }
                WriteRequest::Ping(reply) => pings.push(reply),
            }
            if batch.len() < WRITE_BATCH_MAX {
                next = rx.try_recv().ok();
            }
        }
        record_drops(&log);
        if policy == SyncPolicy::Always {
            let last = batch.iter().filter_map(|(r, _)| r.as_ref().ok()).max();
            if let Some(&last) = last {
                if let Err(e) = log.sync_through(last) {
                    let message = e.to_string();
                    tracing::error!(error = %message, "sync failed; writer poisoned");
                    for (result, _) in batch.iter_mut() {
                        if result.is_ok() {
                            *result = Err(message.clone());
                        }
                    }
                }
            }
            durable_tx.send_replace(log.durable_seq());
        }
        for (result, reply) in batch.drain(..) {
            let _ = reply.send(result);
        }
        for ping in pings.drain(..) {
            let _ = ping.send(());
        }
    }
    // Every sender is gone: make everything appended durable before stopping.
    match log.sync() {
        Ok(durable) => {
            durable_tx.send_replace(durable);
        }
        Err(e) => tracing::error!(error = %e, "final sync failed"),
    }
}

/// Stores a `system` event for each drop made by `drop_oldest` since the last call.
fn record_drops(log: &Log) {
    for drop in log.take_drops() {
        tracing::warn!(
            from = drop.range.from,
            to = drop.range.to,
            "disk budget full: dropped unforwarded events (on_full = drop_oldest)"
        );
        let value = Value::Object(vec![
            ("event".into(), Value::String("drop".into())),
            ("from_seq".into(), Value::UInt(drop.range.from)),
            ("to_seq".into(), Value::UInt(drop.range.to)),
            (
                "count".into(),
                Value::UInt(drop.range.to + 1 - drop.range.from),
            ),
            (
                "reason".into(),
                Value::String("disk budget full (drop_oldest)".into()),
            ),
        ]);
        if let Err(e) = log.append(system_event("edgecap", value)) {
            tracing::error!(error = %e, "cannot record drop event");
        }
    }
}

/// A `system` event stamped now.
pub fn system_event(source: &str, value: Value) -> Event {
    let stamp = crate::clock::now();
    let mut event = Event::new(Kind::System, source, value).expect("static source name");
    event.wall_ms = stamp.wall_ms;
    event.mono_ms = stamp.mono_ms;
    event.clock_synced = stamp.clock_synced;
    event.boot_id = crate::clock::boot_id();
    event
}
