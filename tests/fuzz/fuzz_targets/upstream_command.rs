//! An upstream command as the MQTT link delivers it (topic, payload, retain flag), through the
//! command task's decision (`CommandStore::verdict`): a stored `command` event, "already
//! stored" for a retained command seen before, or a refusal. Never a panic; a stored command
//! is within the limits, named after the topic's last level, encodes for the log and upstream,
//! and once remembered, the same retained command is not stored again. The retained-command
//! memory (`commands.retained`) may come from the input too.
//!
//! Input: `u8 flags` (bit 0 retain; bits 1-2 ingest.max_event_bytes: 4096, 64, 1024, 65536;
//! bit 3 a memory file follows; bit 4 append the memory's CRC), `u8 topic_len`, the topic
//! (UTF-8, lossy), with bit 3 `u16 memory_len` (LE) and the memory bytes, then the payload.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use edgecap::config::SyncPolicy;
use edgecap::forward::commands::{CommandStore, Remembered, Verdict};
use edgecap::forward::{encode_upstream, publish_bytes};
use edgecap::ingest::valid_source;
use edgecap::limits::{COMMAND_TOPIC_KEPT_BYTES, MQTT_PACKET_BYTES_MAX};
use edgecap::status::Health;
use edgecap::system::SystemEvent;
use edgecap::writer::WriterHandle;
use edgecap_fuzz::Input;
use edgecap_storage::{Event, Kind, Log, LogOptions};
use libfuzzer_sys::fuzz_target;
use rumqttc::{Publish, QoS};
use tokio::sync::{mpsc, watch};

const RETAIN: u8 = 0x01;
const MEMORY: u8 = 0x08;
const MEMORY_CRC: u8 = 0x10;
const DEVICE: &str = "pi-0042";
const PREFIX: &str = "edgecap";

/// A `CommandStore` needs a writer handle; `verdict` never uses it. One writer thread over a
/// small log in a temp dir serves the whole run.
fn writer() -> WriterHandle {
    static WRITER: OnceLock<(tempfile::TempDir, WriterHandle)> = OnceLock::new();
    let (_, writer) = WRITER.get_or_init(|| {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let options = LogOptions {
            segment_bytes: 64 * 1024,
            disk_bytes_max: 1024 * 1024,
            record_bytes_max: 16 * 1024,
            ..LogOptions::default()
        };
        let (log, _) = Log::open(dir.path(), options).expect("a fresh log opens");
        let (durable_tx, _) = watch::channel(0);
        let (fatal_tx, _) = mpsc::channel(1);
        let (handle, thread) = edgecap::writer::spawn(
            log,
            SyncPolicy::Always,
            Duration::from_millis(50),
            durable_tx,
            fatal_tx,
        );
        // Runs (idle) for the life of the process.
        std::mem::forget(thread);
        (dir, handle)
    });
    writer.clone()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.u8();
    let event_bytes_max = [4096, 64, 1024, 65536][usize::from((flags >> 1) & 0x03)];
    let topic_len = usize::from(input.u8());
    let topic = String::from_utf8_lossy(input.bytes(topic_len)).into_owned();
    // Kept until the end: the memory is loaded from it.
    let memory_dir = (flags & MEMORY != 0).then(|| {
        let memory_len = usize::from(input.u16());
        let mut memory = input.bytes(memory_len).to_vec();
        if flags & MEMORY_CRC != 0 {
            memory.extend_from_slice(&crc32fast::hash(&memory).to_le_bytes());
        }
        let dir = tempfile::tempdir().expect("creating a temp dir");
        std::fs::write(dir.path().join("commands.retained"), memory).expect("writing the memory");
        dir
    });
    let remembered = match &memory_dir {
        Some(dir) => Remembered::load(dir.path()),
        // No file there: an empty memory, never saved by `verdict`.
        None => Remembered::load(Path::new("/nonexistent")),
    };
    let payload = input.rest();
    let (_, durable) = watch::channel(0);
    let mut store = CommandStore {
        writer: writer(),
        durable,
        health: Arc::new(Health::new(true, 0)),
        event_bytes_max,
        upstream_bytes: Arc::new(|event: &Event| {
            let (topic, payload) = encode_upstream(event, DEVICE, PREFIX);
            publish_bytes(&topic, &payload)
        }),
        remembered,
    };
    let mut publish = Publish::new(topic.clone(), QoS::AtLeastOnce, payload.to_vec());
    publish.retain = flags & RETAIN != 0;
    let name = topic.rsplit('/').next().unwrap_or_default();
    match store.verdict(&publish) {
        Verdict::Store(event) => {
            assert!(payload.len() <= event_bytes_max);
            assert!(valid_source(name), "stored from topic {topic:?}");
            assert_eq!(event.kind, Kind::Command);
            assert_eq!(event.source.as_str(), name);
            assert!((store.upstream_bytes)(&event) <= MQTT_PACKET_BYTES_MAX);
            let bytes = postcard::to_stdvec(&event).expect("a command event encodes");
            let back: Event = postcard::from_bytes(&bytes).expect("a command event decodes");
            assert_eq!(postcard::to_stdvec(&back).expect("encodes"), bytes);
            if publish.retain {
                // What the command task does once the command is durable.
                store.remembered.stored(&publish.topic, &publish.payload);
                assert_eq!(store.verdict(&publish), Verdict::AlreadyStored);
            }
        }
        Verdict::AlreadyStored => assert!(publish.retain),
        Verdict::Refuse(reason) => {
            assert!(!reason.is_empty());
            // What the command task stores instead, the topic truncated as it does.
            let mut kept = topic.clone();
            let mut end = kept.len().min(COMMAND_TOPIC_KEPT_BYTES);
            while !kept.is_char_boundary(end) {
                end -= 1;
            }
            kept.truncate(end);
            let event = SystemEvent::CommandRefused {
                topic: kept,
                bytes: payload.len() as u64,
                reason,
            }
            .into_event();
            postcard::to_stdvec(&event).expect("a system event encodes");
        }
    }
    drop(memory_dir);
});
