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
//! batch that caused them, and made durable by the same sync.
//!
//! **A failed sync poisons the log** (storage/FORMAT.md: the page cache can no longer be
//! trusted). The writer answers the whole batch with the error (nothing in it is acknowledged),
//! reports the fault on the `fatal` channel, and from then on answers every request with an
//! error; the daemon stops and exits non-zero so that systemd restarts it and recovery runs.

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use edgecap_storage::{Event, Log};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::SyncPolicy;
use crate::limits::{WRITE_BATCH_MAX, WRITE_QUEUE_MAX};
use crate::system::SystemEvent;

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

/// Reports a fault the process cannot repair (the daemon stops, exit 1).
pub type Fatal = mpsc::Sender<String>;

fn report_fatal(fatal: &Fatal, message: String) {
    tracing::error!(error = %message, "storage can no longer be trusted; stopping so that systemd restarts the daemon and recovery runs");
    let _ = fatal.try_send(message);
}

/// Starts the writer thread (and, under `interval`, the syncer thread).
pub fn spawn(
    log: Log,
    policy: SyncPolicy,
    sync_interval: Duration,
    durable_tx: watch::Sender<u64>,
    fatal: Fatal,
) -> (WriterHandle, Writer) {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE_MAX);
    let syncer = (policy == SyncPolicy::Interval).then(|| {
        let (stop_tx, stop_rx) = std_mpsc::channel::<()>();
        let log = log.clone();
        let durable_tx = durable_tx.clone();
        let fatal = fatal.clone();
        let thread = std::thread::Builder::new()
            .name("edgecap-syncer".into())
            .spawn(move || loop {
                let stopping = !matches!(
                    stop_rx.recv_timeout(sync_interval),
                    Err(std_mpsc::RecvTimeoutError::Timeout)
                );
                match log.sync() {
                    Ok(durable) => publish_durable(&durable_tx, durable),
                    Err(e) => {
                        report_fatal(&fatal, format!("periodic sync failed: {e}"));
                        return;
                    }
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
        .spawn(move || run(log, policy, rx, durable_tx, fatal))
        .expect("spawn writer thread");
    (WriterHandle { tx }, Writer { thread, syncer })
}

fn run(
    log: Log,
    policy: SyncPolicy,
    mut rx: mpsc::Receiver<WriteRequest>,
    durable_tx: watch::Sender<u64>,
    fatal: Fatal,
) {
    let mut batch: Vec<(AppendResult, oneshot::Sender<AppendResult>)> =
        Vec::with_capacity(WRITE_BATCH_MAX);
    let mut pings = Vec::new();
    let fault = crate::fault::Wedge::from_env("writer");
    let mut poisoned: Option<String> = None;
    while let Some(first) = rx.blocking_recv() {
        fault.maybe_block();
        batch.clear();
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                WriteRequest::Append { event, reply } => {
                    let result = match &poisoned {
                        Some(why) => Err(why.clone()),
                        None => log.append(event).map_err(|e| e.to_string()),
                    };
                    batch.push((result, reply));
                }
                WriteRequest::Ping(reply) => pings.push(reply),
            }
            if batch.len() < WRITE_BATCH_MAX {
                next = rx.try_recv().ok();
            }
        }
        if poisoned.is_none() {
            record_drops(&log);
            let durable = make_durable(&log, policy, &mut batch);
            // A failed write poisons the log too, with or without a sync after it.
            let failed = durable.err().or_else(|| log.poisoned());
            if let Some(why) = failed {
                report_fatal(&fatal, why.clone());
                poisoned = Some(why);
            }
        }
        publish_durable(&durable_tx, log.durable_seq());
        for (result, reply) in batch.drain(..) {
            let _ = reply.send(result);
        }
        // A poisoned writer answers no pings: the watchdog must not see a healthy daemon.
        if poisoned.is_none() {
            for ping in pings.drain(..) {
                let _ = ping.send(());
            }
        }
        pings.clear();
    }
    if poisoned.is_some() {
        return;
    }
    // Every sender is gone: make everything appended durable before stopping.
    match log.sync() {
        Ok(durable) => publish_durable(&durable_tx, durable),
        Err(e) => report_fatal(&fatal, format!("final sync failed: {e}")),
    }
}

/// Under `always`, syncs everything appended (the batch and the drop events it caused);
/// under `interval`, writes it to the page cache (the log buffers appends), so that a process
/// kill keeps what was answered. On failure every answer of the batch becomes the error: none
/// of it is acknowledged.
fn make_durable(
    log: &Log,
    policy: SyncPolicy,
    batch: &mut [(AppendResult, oneshot::Sender<AppendResult>)],
) -> Result<(), String> {
    if batch.iter().all(|(r, _)| r.is_err()) {
        return Ok(());
    }
    let (result, what) = match policy {
        SyncPolicy::Always => (
            log.sync_through(log.appended_seq()),
            "sync failed, event not stored durably",
        ),
        SyncPolicy::Interval => (log.flush(), "write failed, event not stored"),
    };
    let Err(e) = result else {
        return Ok(());
    };
    let message = format!("{what}: {e}");
    for (result, _) in batch.iter_mut() {
        if result.is_ok() {
            *result = Err(message.clone());
        }
    }
    Err(message)
}

/// Publishes the durable seq if it moved (a sync by anyone: the writer, the syncer, a cursor
/// write), waking the forwarder and followers at once.
fn publish_durable(durable_tx: &watch::Sender<u64>, durable: u64) {
    durable_tx.send_if_modified(|current| {
        let moved = durable > *current;
        *current = (*current).max(durable);
        moved
    });
}

/// Stores a `system` event for each drop made by `drop_oldest` since the last call.
fn record_drops(log: &Log) {
    for drop in log.take_drops() {
        tracing::warn!(
            from = drop.range.from,
            to = drop.range.to,
            "disk budget full: dropped unforwarded events (on_full = drop_oldest)"
        );
        let system = SystemEvent::Drop {
            from: drop.range.from,
            to: drop.range.to,
            reason: "disk budget full (drop_oldest)".into(),
        };
        if let Err(e) = log.append(system.into_event()) {
            tracing::error!(error = %e, "cannot record drop event");
        }
    }
}
