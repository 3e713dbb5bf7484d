//! Every default and bound of the daemon, in one place (the storage crate has its own).
//!
//! Each constant says its value, why, and what it costs; relationships are checked at compile
//! time below.

/// Default `ingest.max_event_bytes`: 4096 bytes of JSON per request line (INTERFACE.md).
pub const EVENT_BYTES_MAX_DEFAULT: usize = 4096;
/// Hard ceiling for `ingest.max_event_bytes`: 20 KiB, so that even the worst-case encoding
/// (see [`record_bytes_max`]) stays under the storage crate's 64 KiB record limit.
pub const EVENT_BYTES_MAX_CEILING: usize = 20 * 1024;

/// The storage record limit for a given `max_event_bytes`: 3 × the line + 1 KiB. postcard is
/// at most 2.25 × the JSON text (a float `1.5,` is 4 bytes of JSON, 9 encoded), plus the fixed
/// fields (seq, times, boot id, kind, source: under 1 KiB).
pub const fn record_bytes_max(event_bytes_max: usize) -> usize {
    3 * event_bytes_max + 1024
}
/// Default `ingest.max_clients`: 64 concurrent producer connections.
pub const CLIENTS_MAX_DEFAULT: usize = 64;
/// Hard ceiling for `ingest.max_clients`: 4096 (one task and two small buffers each).
pub const CLIENTS_MAX_CEILING: usize = 4096;
/// Requests one client may have in flight (read but not yet answered): 256. Bounds the
/// per-client reply queue; a client that pipelines more simply waits (back-pressure).
pub const CLIENT_PIPELINE_MAX: usize = 256;
/// Capacity of the queue from all clients into the single writer thread: 4096 requests.
/// A full queue back-pressures every client instead of growing memory.
pub const WRITE_QUEUE_MAX: usize = 4096;
/// Most requests the writer appends before one group-commit sync: 1024.
pub const WRITE_BATCH_MAX: usize = 1024;
/// Default `upstream.port` without TLS: 1883, MQTT's registered port.
pub const MQTT_PORT_DEFAULT: u16 = 1883;
/// Default `upstream.port` with `upstream.tls`: 8883, MQTT over TLS's registered port.
pub const MQTT_TLS_PORT_DEFAULT: u16 = 8883;
/// Largest PEM file (`upstream.tls.*`) read: 4 MiB. Debian's whole CA bundle is about 220 KB;
/// the bound keeps a wrong path (a log file, a device) from being read whole.
pub const PEM_FILE_BYTES_MAX: u64 = 4 << 20;
/// Largest `upstream.password_file` read: 4 KiB (MQTT passwords are short).
pub const PASSWORD_FILE_BYTES_MAX: u64 = 4096;
/// Default `upstream.max_inflight`: 64 unacknowledged QoS 1 publishes.
pub const INFLIGHT_MAX_DEFAULT: u16 = 64;
/// Hard ceiling for `upstream.max_inflight`: 1024 (rumqttc's pkid space is 65535; brokers
/// commonly cap receive-maximum far lower).
pub const INFLIGHT_MAX_CEILING: u16 = 1024;
/// How often the forward cursor is persisted while acks arrive: every 250 ms (and at
/// shutdown). Each persist is one fdatasync of a 1 KiB file; per-ack syncs would wear an SD
/// card for nothing, since delivery is at-least-once anyway.
pub const CURSOR_PERSIST_INTERVAL_MS: u64 = 250;
/// Largest MQTT packet we send: 64 KiB. An event whose upstream JSON would be larger is
/// refused at ingest (JSON re-encoding can grow a stored value: a float, a control byte in a
/// command's text), and one already stored is set aside with a `forward_skip` event.
pub const MQTT_PACKET_BYTES_MAX: usize = 64 * 1024;
/// Request lines longer than this get their upstream encoding measured at ingest: 8 KiB.
/// JSON re-encoding grows a line at most 4.5× (`9e15,` → `9000000000000000.0,`), plus the
/// envelope (under 1 KiB), so a shorter line always fits `MQTT_PACKET_BYTES_MAX`.
pub const UPSTREAM_CHECK_LINE_BYTES: usize = 8 * 1024;
/// Largest MQTT packet we accept: 1 MiB. A command over `ingest.max_event_bytes` is read,
/// acknowledged and refused with a `command_refused` event; one over this limit cannot be
/// read at all (MQTT 3.1.1 cannot tell the broker our limit), so the command subscription
/// pauses for `COMMAND_PAUSE_MS` on a clean session. Costs at most 1 MiB of memory, once.
pub const COMMAND_PACKET_BYTES_MAX: usize = 1 << 20;
/// How long the command subscription pauses after the broker sent a packet over
/// `COMMAND_PACKET_BYTES_MAX`: 5 min. Bounds the damage of an oversized retained command to
/// one reconnect per pause, while events keep flowing.
pub const COMMAND_PAUSE_MS: u64 = 5 * 60 * 1000;
/// Upstream commands received and not yet stored: 256, and at most 4 MiB of payload. The
/// poll task never waits on this queue (it must keep polling to send PUBACKs); when it is full
/// it ends the connection and the broker redelivers from the persistent session. With
/// mosquitto's default `max_inflight_messages 20` it never fills.
pub const COMMAND_QUEUE_MAX: usize = 256;
pub const COMMAND_QUEUE_BYTES_MAX: usize = 4 << 20;
/// A command that cannot be stored (a full budget under `reject`) is retried after 100 ms,
/// doubling up to 30 s, and acknowledged only once stored.
pub const COMMAND_RETRY_MS_MIN: u64 = 100;
pub const COMMAND_RETRY_MS_MAX: u64 = 30_000;
/// Bytes of a refused command's topic kept in its `command_refused` event: 256.
pub const COMMAND_TOPIC_KEPT_BYTES: usize = 256;
/// Command topics whose last stored payload is remembered (retained-command dedup): 256.
pub const RETAINED_TOPICS_MAX: usize = 256;
/// A connection counts as healthy (backoff and breaker reset) once it has lived one
/// keep-alive period, at most 10 s (a ping has crossed it); one that the broker drops sooner
/// counts as a failed attempt.
pub const CONNECTION_HEALTHY_MS: u64 = 10_000;
/// Early drops in a row after which a duplicate client id is suspected and reported: 3.
pub const EARLY_DROPS_REPORTED: u32 = 3;
/// Connections in a row the broker closed while the same seq was the oldest unacknowledged
/// publish, after which that event is set aside (`forward_skip`): 5.
pub const POISON_STRIKES_MAX: u32 = 5;
/// Retry period of a failed or refused command SUBSCRIBE: 30 s.
pub const SUBSCRIBE_RETRY_MS: u64 = 30_000;
/// The forwarder's own `system` events waiting to be appended: 64 (more are logged only).
pub const SYSTEM_QUEUE_MAX: usize = 64;
/// How long a helper task gets to finish at shutdown before it is aborted: 2 s.
pub const TASK_STOP_MS: u64 = 2_000;
/// At shutdown the poll task gets 500 ms to write the DISCONNECT packet.
pub const DISCONNECT_MS: u64 = 500;
/// The whole shutdown (SIGTERM to exit) is bounded by 15 s, half the unit's
/// `TimeoutStopSec=30s`; parts still running then are abandoned and the exit is non-zero.
pub const SHUTDOWN_TIMEOUT_MS: u64 = 15_000;
/// A client over `max_clients` gets its error line, then up to 64 KiB of what it sent is read
/// (for at most 1 s) so that it sees the line rather than a reset.
pub const REFUSED_DRAIN_BYTES_MAX: usize = 64 * 1024;
pub const REFUSED_DRAIN_MS: u64 = 1_000;
/// Pending proof-of-life pings to the forwarder: 1 (the supervisor waits for each answer).
pub const PING_QUEUE_MAX: usize = 1;
/// Longest `upstream.topic_prefix`: 128 bytes (topics also carry the device id and source).
pub const TOPIC_PREFIX_BYTES_MAX: usize = 128;
/// Longest `upstream.client_id`: 128 bytes.
pub const CLIENT_ID_BYTES_MAX: usize = 128;
/// After SIGTERM, a client that does not read its answers gets this long before its
/// connection is closed: 2 s.
pub const REPLY_GRACE_MS: u64 = 2_000;
/// Events read from the log per forwarding pass: 256.
pub const FORWARD_READ_BATCH: usize = 256;
/// Default retry/backoff and breaker settings (INTERFACE.md).
pub const BACKOFF_MS_INITIAL_DEFAULT: u64 = 200;
pub const BACKOFF_MS_MAX_DEFAULT: u64 = 30_000;
pub const BREAKER_FAILURE_THRESHOLD_DEFAULT: u32 = 5;
pub const BREAKER_OPEN_SECS_DEFAULT: u64 = 30;
/// Default `storage.sync_interval_ms`: 50 ms of possible loss under `sync = "interval"`.
pub const SYNC_INTERVAL_MS_DEFAULT: u64 = 50;

/// Events a follower (`edgecap log follow`) reads from the log per batch: 256 (bounded memory
/// per follower, about 64 KiB).
pub const FOLLOW_BATCH_EVENTS: usize = 256;

/// MQTT events from the poll task to the coordinator: 256. A full channel makes the poll task
/// wait (rumqttc then stops reading the socket: back-pressure, nothing lost).
pub const LINK_EVENTS_MAX: usize = 256;
/// Orders from the coordinator to the poll task (resume, drop): 4; only one is ever pending.
pub const LINK_ORDERS_MAX: usize = 4;
/// rumqttc's request queue beyond the in-flight window (acks, subscribes, disconnect): 16.
pub const MQTT_REQUESTS_SPARE: usize = 16;
/// Fatal-fault reports to the daemon: 4 (the first one stops it; later ones are dropped).
pub const FATAL_QUEUE_MAX: usize = 4;
/// Events the projection folds per pass before yielding: 1024.
pub const PROJECT_BATCH_EVENTS: usize = 1024;
/// Most problems and lost ranges listed in one `recovery` event: 32 (the totals are always
/// there).
pub const RECOVERY_LIST_MAX: usize = 32;
/// Longest problem sentence kept in a `recovery` event: 240 bytes.
pub const PROBLEM_CHARS_MAX: usize = 240;
/// Shortest watchdog ping period (half of `WatchdogSec`), whatever systemd asks: 10 ms.
pub const WATCHDOG_PERIOD_MS_MIN: u64 = 10;
/// Async worker threads of `edgecap run`: 2 (a Pi Zero has one core, a Pi 4 four; the writer,
/// syncer and blocking reads have threads of their own).
pub const RUNTIME_WORKERS: usize = 2;
/// At exit, the runtime's blocking threads get 1 s (a writer stuck in fdatasync is abandoned).
pub const RUNTIME_STOP_MS: u64 = 1_000;
/// Default `upstream.keep_alive_secs`: 30 s (detection of a dead link within 2 × that).
pub const KEEP_ALIVE_SECS_DEFAULT: u64 = 30;
/// The ingest line reader's buffer: `max_event_bytes` clamped to 1..=8 KiB.
pub const LINE_BUFFER_BYTES_MIN: usize = 1024;
pub const LINE_BUFFER_BYTES_MAX: usize = 8192;
/// STATUS= refresh period when no watchdog is configured: 5 s.
pub const STATUS_INTERVAL_MS: u64 = 5_000;

/// Most recent entries kept per projection history list: 32 (totals are kept separately).
pub const HISTORY_MAX: usize = 32;
/// Most distinct sources and command names the projection tracks: 4096 each; later ones are
/// counted in `untracked_events` instead of growing memory without bound.
pub const KEYS_MAX: usize = 4096;
/// A projection snapshot every 100,000 events: at the measured replay speed a `state` query
/// never replays more than a fraction of a second past one; each costs one small file write.
pub const SNAPSHOT_EVERY_EVENTS: u64 = 100_000;
/// Snapshots kept: 3 (older ones serve `--at-seq` queries into the past).
pub const SNAPSHOTS_KEPT: usize = 3;
/// Largest snapshot accepted: 64 MiB (a corrupt length never makes us allocate more).
pub const SNAPSHOT_BYTES_MAX: usize = 64 << 20;

/// How often the clock-step watcher compares the wall clock with `CLOCK_BOOTTIME` where no
/// timerfd can tell it that the clock was set: 1 s.
pub const CLOCK_CHECK_INTERVAL_MS: u64 = 1000;
/// The backstop check beside the timerfd that reports clock sets: 60 s (an idle daemon wakes
/// once a minute for it; a step is still recorded within a minute if the kernel said nothing).
pub const CLOCK_CHECK_FALLBACK_MS: u64 = 60_000;
/// A wall-clock jump larger than this (beyond normal NTP slewing) is a step: 1 s.
pub const CLOCK_STEP_THRESHOLD_MS: i64 = 1000;

const _: () = assert!(EVENT_BYTES_MAX_DEFAULT <= EVENT_BYTES_MAX_CEILING);
const _: () = assert!(
    record_bytes_max(EVENT_BYTES_MAX_CEILING)
        <= edgecap_storage::limits::RECORD_PAYLOAD_BYTES_MAX_DEFAULT
);
const _: () = assert!(CLIENTS_MAX_DEFAULT <= CLIENTS_MAX_CEILING);
const _: () = assert!(INFLIGHT_MAX_DEFAULT <= INFLIGHT_MAX_CEILING);
const _: () = assert!(WRITE_BATCH_MAX <= WRITE_QUEUE_MAX);
const _: () = assert!(BACKOFF_MS_INITIAL_DEFAULT <= BACKOFF_MS_MAX_DEFAULT);
const _: () = assert!(EVENT_BYTES_MAX_CEILING + 1024 <= MQTT_PACKET_BYTES_MAX);
const _: () = assert!(MQTT_PACKET_BYTES_MAX <= COMMAND_PACKET_BYTES_MAX);
const _: () = assert!(UPSTREAM_CHECK_LINE_BYTES * 9 / 2 + 1024 + 512 <= MQTT_PACKET_BYTES_MAX);
const _: () = assert!(TASK_STOP_MS * 3 < SHUTDOWN_TIMEOUT_MS);
const _: () = assert!(REPLY_GRACE_MS < SHUTDOWN_TIMEOUT_MS);
