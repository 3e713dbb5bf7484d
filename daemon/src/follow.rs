//! Catch-up subscriptions (`edgecap log follow`): stored events from a seq, then live ones as
//! they become durable, on one connection.
//!
//! A follower never has a queue the writer fills: it reads the log itself, in bounded batches
//! ([`FOLLOW_BATCH_EVENTS`]), from its own position, and waits on the durable-seq `watch` when
//! it has caught up. A subscriber that stops reading only stalls its own task (its socket
//! buffer fills); ingestion never waits for it, and shutdown ends it. Reads run on tokio's
//! blocking pool, never on the two async workers: a catch-up over a long history, or a filter
//! that matches nothing for millions of events, cannot starve the runtime (or the watchdog).

use edgecap_storage::Log;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::watch;

use crate::ingest::Follow;
use crate::json::event_json;
pub use crate::limits::FOLLOW_BATCH_EVENTS;

/// One batch read from the log: the JSON lines that match, where to go on, and whether the
/// batch was full (more may be waiting).
struct Batch {
    out: Vec<u8>,
    next: u64,
    full: bool,
}

fn read_batch(log: &Log, follow: &Follow, from: u64) -> Batch {
    let mut out = Vec::new();
    let mut next = from;
    let mut reader = log.reader(from);
    let mut read = 0;
    for item in reader.by_ref().take(FOLLOW_BATCH_EVENTS) {
        read += 1;
        match item {
            Ok(event) => {
                next = event.seq + 1;
                let kind_ok = follow.kind.is_none_or(|k| k == event.kind);
                let source_ok = follow
                    .source
                    .as_deref()
                    .is_none_or(|s| s == event.source.as_str());
                if kind_ok && source_ok {
                    out.extend_from_slice(event_json(&event, None).to_string().as_bytes());
                    out.push(b'\n');
                }
            }
            Err(e) => tracing::warn!(error = %e, "follower skipped a corrupt record"),
        }
    }
    Batch {
        out,
        next: next.max(reader.next_seq()),
        full: read == FOLLOW_BATCH_EVENTS,
    }
}

/// Streams events matching `follow` until shutdown or until the peer goes away.
pub async fn serve(
    mut write: OwnedWriteHalf,
    follow: Follow,
    log: Log,
    mut durable: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next = follow.from.max(1);
    loop {
        let batch = {
            let (log, follow) = (log.clone(), follow.clone());
            match tokio::task::spawn_blocking(move || read_batch(&log, &follow, next)).await {
                Ok(batch) => batch,
                Err(_) => return,
            }
        };
        next = batch.next;
        if !batch.out.is_empty() {
            tokio::select! {
                _ = crate::wait_true(&mut shutdown) => return,
                written = write.write_all(&batch.out) => if written.is_err() { return },
            }
        }
        if batch.full {
            if *shutdown.borrow() {
                return;
            }
            continue;
        }
        // Caught up: wait for more durable events (or shutdown: EOF to the follower).
        tokio::select! {
            _ = crate::wait_true(&mut shutdown) => return,
            changed = durable.changed() => if changed.is_err() { return },
        }
    }
}
