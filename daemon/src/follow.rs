//! Catch-up subscriptions (`edgecap log follow`): stored events from a seq, then live ones as
//! they become durable, on one connection.
//!
//! A follower never has a queue the writer fills: it reads the log itself, in bounded batches
//! ([`FOLLOW_BATCH_EVENTS`]), from its own position, and waits on the durable-seq `watch` when
//! it has caught up. A subscriber that stops reading only stalls its own task (its socket
//! buffer fills); ingestion never waits for it. This is the "fall back to reading the log"
//! design taken all the way: the log *is* the buffer.

use edgecap_storage::Log;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::watch;

use crate::ingest::Follow;
use crate::json::event_json;

/// Events read from the log per batch: 256 (bounded memory per follower, about 64 KiB).
pub const FOLLOW_BATCH_EVENTS: usize = 256;

/// Streams events matching `follow` until shutdown or until the peer goes away.
pub async fn serve(
    mut write: OwnedWriteHalf,
    follow: Follow,
    log: Log,
    mut durable: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next = follow.from.max(1);
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        out.clear();
        let mut reader = log.reader(next);
        let mut read = 0;
        for item in reader.by_ref().take(FOLLOW_BATCH_EVENTS) {
            read += 1;
            match item {
                Ok(event) => {
                    next = event.seq + 1;
                    if follow.kind.is_some_and(|k| k != event.kind)
                        || follow
                            .source
                            .as_deref()
                            .is_some_and(|s| s != event.source.as_str())
                    {
                        continue;
                    }
                    out.extend_from_slice(event_json(&event, None).to_string().as_bytes());
                    out.push(b'\n');
                }
                Err(e) => tracing::warn!(error = %e, "follower skipped a corrupt record"),
            }
        }
        next = next.max(reader.next_seq());
        if !out.is_empty() && write.write_all(&out).await.is_err() {
            return;
        }
        if read == FOLLOW_BATCH_EVENTS {
            continue;
        }
        // Caught up: wait for more durable events (or shutdown: EOF to the follower).
        tokio::select! {
            _ = crate::wait_true(&mut shutdown) => return,
            changed = durable.changed() => if changed.is_err() { return },
        }
    }
}
