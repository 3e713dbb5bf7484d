//! Upstream commands: each is stored as a `command` event and acknowledged to the broker only
//! once durable. Acknowledgements go back to the coordinator tagged with the connection the
//! command arrived on, so a PUBACK computed on connection N is never sent on N+1 (where the
//! same pkid names another message). A command the broker resends after a reconnect (its
//! PUBACK was lost) is stored again: commands are at least once, like events.
//!
//! **Retained commands.** A retained message is the broker's standing value for a topic: it is
//! delivered (flag `retain`) on every fresh subscription. edgecap stores a retained command the
//! first time it sees it and again only when it differs from the last command stored from that
//! topic; the memory of what was stored ([`Remembered`]) survives restarts in
//! `{dir}/commands.retained`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use edgecap_storage::{Event, Kind};
use rumqttc::Publish;
use tokio::sync::{mpsc, watch};

use super::link::Generation;
use crate::ingest::valid_source;
use crate::json::to_value;
use crate::limits::{
    COMMAND_RETRY_MS_MAX, COMMAND_RETRY_MS_MIN, COMMAND_TOPIC_KEPT_BYTES, MQTT_PACKET_BYTES_MAX,
    RETAINED_TOPICS_MAX,
};
use crate::status::Health;
use crate::system::SystemEvent;
use crate::writer::WriterHandle;

/// What the command task needs.
pub struct CommandStore {
    pub writer: WriterHandle,
    pub durable: watch::Receiver<u64>,
    pub health: Arc<Health>,
    /// `ingest.max_event_bytes`: larger commands are refused like oversized lines.
    pub event_bytes_max: usize,
    /// How many bytes a stored event would take upstream (`publish_bytes` of its encoding).
    pub upstream_bytes: Arc<dyn Fn(&Event) -> usize + Send + Sync>,
    pub remembered: Remembered,
}

/// What to do with one received command.
#[doc(hidden)] // public for the fuzz targets (tests/fuzz)
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Store(Event),
    /// Acknowledge without storing: a retained command already stored.
    AlreadyStored,
    /// Acknowledge, do not store, record why (redelivery would only fail again).
    Refuse(String),
}

/// Stores commands one at a time and hands each acknowledgement to the coordinator.
pub async fn run(
    mut store: CommandStore,
    mut commands: mpsc::Receiver<(Generation, Publish)>,
    queued_bytes: Arc<AtomicUsize>,
    acks: mpsc::Sender<(Generation, Publish)>,
) {
    while let Some((generation, publish)) = commands.recv().await {
        queued_bytes.fetch_sub(publish.payload.len(), Ordering::Relaxed);
        match store.verdict(&publish) {
            Verdict::AlreadyStored => {
                tracing::debug!(topic = ?publish.topic, "retained command already stored");
            }
            Verdict::Refuse(reason) => store.refuse(&publish, reason).await,
            Verdict::Store(event) => {
                let seq = store.store_until_stored(event).await;
                tracing::info!(seq, topic = ?publish.topic, "upstream command stored");
                store.health.clear_error("commands");
                store.remember(&publish).await;
            }
        }
        if acks.send((generation, publish)).await.is_err() {
            return;
        }
    }
}

impl CommandStore {
    #[doc(hidden)] // public for the fuzz targets (tests/fuzz)
    pub fn verdict(&self, publish: &Publish) -> Verdict {
        let name = publish.topic.rsplit('/').next().unwrap_or_default();
        let bytes = publish.payload.len();
        if bytes > self.event_bytes_max {
            let max = self.event_bytes_max;
            return Verdict::Refuse(format!(
                "{bytes} bytes, over ingest.max_event_bytes ({max})"
            ));
        }
        if !valid_source(name) {
            return Verdict::Refuse(
                "the last topic level is not a valid source ([A-Za-z0-9_.:-]{1,64})".into(),
            );
        }
        if publish.retain && self.remembered.is_last(&publish.topic, &publish.payload) {
            return Verdict::AlreadyStored;
        }
        let value = match serde_json::from_slice::<serde_json::Value>(&publish.payload) {
            Ok(json) => to_value(&json),
            Err(_) => edgecap_storage::Value::String(
                String::from_utf8_lossy(&publish.payload).into_owned(),
            ),
        };
        let mut event = match Event::new(Kind::Command, name, value) {
            Ok(event) => event,
            Err(e) => return Verdict::Refuse(e.to_string()),
        };
        let stamp = crate::clock::now();
        event.wall_ms = stamp.wall_ms;
        event.mono_ms = stamp.mono_ms;
        event.clock_synced = stamp.clock_synced;
        event.boot_id = crate::clock::boot_id();
        let upstream = (self.upstream_bytes)(&event);
        if upstream > MQTT_PACKET_BYTES_MAX {
            return Verdict::Refuse(format!(
                "its upstream MQTT packet would be {upstream} bytes, over the limit ({MQTT_PACKET_BYTES_MAX})"
            ));
        }
        Verdict::Store(event)
    }

    /// Appends and waits until durable; `None` when it cannot be stored now.
    async fn store(&mut self, event: Event) -> Option<u64> {
        match self.writer.append(event).await.await {
            Ok(Ok(seq)) => {
                self.durable.wait_for(|d| *d >= seq).await.ok()?;
                Some(seq)
            }
            Ok(Err(message)) => {
                tracing::error!(error = %message, "cannot store upstream command; retrying");
                self.health
                    .set_error("commands", format!("command: {message}"));
                None
            }
            Err(_) => None,
        }
    }

    /// Stores `event`, retrying with a bounded backoff (a full budget under `reject` that
    /// frees up, say) rather than leaving the command unacknowledged on a live connection,
    /// where MQTT 3.1.1 would never redeliver it. A fatal storage fault stops the daemon,
    /// which ends this task.
    async fn store_until_stored(&mut self, event: Event) -> u64 {
        let mut pause = Duration::from_millis(COMMAND_RETRY_MS_MIN);
        loop {
            if let Some(seq) = self.store(event.clone()).await {
                return seq;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(COMMAND_RETRY_MS_MAX));
        }
    }

    /// Records a refused command as a `system` event; it is acknowledged afterwards.
    async fn refuse(&mut self, publish: &Publish, reason: String) {
        tracing::warn!(topic = ?publish.topic, bytes = publish.payload.len(), %reason, "upstream command refused");
        self.health
            .note_error(format!("command on {:?} refused: {reason}", publish.topic));
        let mut topic = publish.topic.clone();
        truncate(&mut topic, COMMAND_TOPIC_KEPT_BYTES);
        let system = SystemEvent::CommandRefused {
            topic,
            bytes: publish.payload.len() as u64,
            reason,
        };
        let _ = self.store(system.into_event()).await;
    }

    /// Remembers a stored command and saves the memory (off the async workers: it fsyncs).
    async fn remember(&mut self, publish: &Publish) {
        self.remembered.stored(&publish.topic, &publish.payload);
        let snapshot = self.remembered.clone();
        let saved = tokio::task::spawn_blocking(move || snapshot.save()).await;
        if let Ok(Err(e)) = saved {
            tracing::warn!(error = %e, "cannot save the retained-command memory");
        }
    }
}

fn truncate(text: &mut String, max: usize) {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

/// The last command stored from each command topic (its payload's CRC32 and length), for the
/// newest `RETAINED_TOPICS_MAX` topics.
#[derive(Debug, Clone)]
pub struct Remembered {
    path: Option<PathBuf>,
    /// (topic, crc32, len), oldest first.
    last: VecDeque<(String, u32, usize)>,
}

impl Remembered {
    /// Loads `{dir}/commands.retained`; a missing or damaged file is an empty memory (the
    /// cost is one more copy of each retained command).
    pub fn load(dir: &Path) -> Remembered {
        let path = dir.join("commands.retained");
        let last = std::fs::read(&path)
            .ok()
            .and_then(|bytes| decode(&bytes))
            .unwrap_or_default();
        Remembered {
            path: Some(path),
            last,
        }
    }

    #[cfg(test)]
    fn in_memory() -> Remembered {
        Remembered {
            path: None,
            last: VecDeque::new(),
        }
    }

    fn is_last(&self, topic: &str, payload: &[u8]) -> bool {
        let digest = (crc32fast::hash(payload), payload.len());
        self.last
            .iter()
            .any(|(t, crc, len)| t == topic && (*crc, *len) == digest)
    }

    #[doc(hidden)] // public for the fuzz targets (tests/fuzz)
    pub fn stored(&mut self, topic: &str, payload: &[u8]) {
        self.last.retain(|(t, _, _)| t != topic);
        if self.last.len() == RETAINED_TOPICS_MAX {
            self.last.pop_front();
        }
        self.last
            .push_back((topic.to_string(), crc32fast::hash(payload), payload.len()));
        debug_assert!(self.last.len() <= RETAINED_TOPICS_MAX);
    }

    /// Writes the memory atomically (temp file, fsync, rename).
    fn save(&self) -> std::io::Result<()> {
        use std::io::Write as _;
        let Some(path) = &self.path else {
            return Ok(());
        };
        let temp = path.with_extension("retained.tmp");
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(&encode(&self.last))?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    }
}

/// postcard of the entries, then their CRC32 (little endian).
fn encode(last: &VecDeque<(String, u32, usize)>) -> Vec<u8> {
    let entries: Vec<_> = last.iter().collect();
    let mut bytes = postcard::to_stdvec(&entries).expect("encoding to a Vec cannot fail");
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Option<VecDeque<(String, u32, usize)>> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let entries: Vec<(String, u32, usize)> = postcard::from_bytes(body).ok()?;
    (entries.len() <= RETAINED_TOPICS_MAX).then(|| entries.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retained_memory_keeps_the_last_payload_per_topic() {
        let mut memory = Remembered::in_memory();
        memory.stored("p/d/commands/a", b"on");
        assert!(memory.is_last("p/d/commands/a", b"on"));
        assert!(!memory.is_last("p/d/commands/a", b"off"));
        memory.stored("p/d/commands/a", b"off");
        assert!(!memory.is_last("p/d/commands/a", b"on"));
        for i in 0..RETAINED_TOPICS_MAX {
            memory.stored(&format!("t{i}"), b"x");
        }
        assert_eq!(memory.last.len(), RETAINED_TOPICS_MAX);
        assert!(!memory.is_last("p/d/commands/a", b"off"), "oldest evicted");
    }

    #[test]
    fn retained_memory_survives_a_restart_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut memory = Remembered::load(dir.path());
        memory.stored("t", b"payload");
        memory.save().unwrap();
        assert!(Remembered::load(dir.path()).is_last("t", b"payload"));
        let path = dir.path().join("commands.retained");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(!Remembered::load(dir.path()).is_last("t", b"payload"));
    }
}
