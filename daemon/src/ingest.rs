//! The ingest socket: one JSON object per line, pipelined, answered in order.
//!
//! Each client gets a reader task and a replier task joined by a bounded queue of pending
//! answers (`CLIENT_PIPELINE_MAX`). The reader parses a line, hands the event to the writer
//! thread and queues the answer's receiver; the replier awaits answers in order and writes
//! them. A client that stops reading its answers fills its own queue and is no longer read:
//! it back-pressures itself and nobody else. Lines are read with a hard bound
//! (`max_event_bytes`): an oversized line is discarded as it streams in, never buffered whole.
//! `max_clients` is a semaphore; the client over the limit gets one error line and is closed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use edgecap_storage::{Event, Kind, Log};
use serde_json::{json, Value as Json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinSet;

use crate::clock;
use crate::config::IngestConfig;
use crate::json::to_value;
use crate::limits::{
    CLIENT_PIPELINE_MAX, LINE_BUFFER_BYTES_MAX, LINE_BUFFER_BYTES_MIN, MQTT_PACKET_BYTES_MAX,
    REPLY_GRACE_MS, UPSTREAM_CHECK_LINE_BYTES,
};
use crate::project::State;
use crate::status::Health;
use crate::writer::{AppendResult, WriterHandle};

/// A parsed request line.
#[derive(Debug)]
pub enum Request {
    Append(Event),
    Status,
    /// The current projection (`project::State`) as JSON.
    State,
    /// Turn this connection into a catch-up subscription.
    Follow(Follow),
}

/// A catch-up subscription: stored events from `from`, then live ones as they become durable.
#[derive(Debug, Clone, Default)]
pub struct Follow {
    pub from: u64,
    pub kind: Option<Kind>,
    pub source: Option<String>,
}

fn parse_control(op: &Json, map: &serde_json::Map<String, Json>) -> Result<Request, String> {
    match op.as_str() {
        Some("status") if map.len() == 1 => Ok(Request::Status),
        Some("state") if map.len() == 1 => Ok(Request::State),
        Some("status") | Some("state") => {
            Err("field `op`: this control request has no other fields".into())
        }
        Some("follow") => {
            let mut follow = Follow {
                from: 1,
                ..Follow::default()
            };
            for (key, value) in map {
                match key.as_str() {
                    "op" => {}
                    "from" => {
                        follow.from = value
                            .as_u64()
                            .ok_or("field `from` must be a non-negative integer seq")?
                    }
                    "kind" => {
                        follow.kind =
                            Some(value.as_str().and_then(Kind::parse).ok_or(
                                "field `kind` must be \"sensor\", \"command\" or \"system\"",
                            )?)
                    }
                    "source" => match value.as_str() {
                        Some(s) if valid_source(s) => follow.source = Some(s.to_string()),
                        _ => {
                            return Err(
                                "field `source` must be 1-64 characters of [A-Za-z0-9_.:-]".into()
                            )
                        }
                    },
                    other => return Err(format!("unknown field `{other}` in a follow request")),
                }
            }
            Ok(Request::Follow(follow))
        }
        _ => Err(format!("field `op`: unknown operation {op}")),
    }
}

/// `[A-Za-z0-9_.:-]{1,64}`.
pub fn valid_source(source: &str) -> bool {
    (1..=64).contains(&source.len())
        && source
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Parses one request line (without its newline). Errors name the field.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return Err("empty request line: expected a JSON object".into());
    }
    let text = std::str::from_utf8(line)
        .map_err(|e| format!("request is not valid UTF-8 (byte {})", e.valid_up_to()))?;
    let json: Json =
        serde_json::from_str(text).map_err(|e| format!("request is not valid JSON: {e}"))?;
    let Json::Object(map) = json else {
        return Err("request must be a JSON object".into());
    };
    if let Some(op) = map.get("op") {
        return parse_control(op, &map);
    }
    for key in map.keys() {
        if !matches!(key.as_str(), "source" | "kind" | "value" | "ts") {
            return Err(format!("unknown field `{key}`"));
        }
    }
    let source = match map.get("source") {
        None => return Err("field `source` is missing".into()),
        Some(Json::String(s)) if valid_source(s) => s.as_str(),
        Some(Json::String(s)) if s.is_empty() => return Err("field `source` is empty".into()),
        Some(Json::String(s)) => {
            return Err(format!(
                "field `source` must be 1-64 characters of [A-Za-z0-9_.:-] (got {} characters)",
                s.chars().count()
            ))
        }
        Some(_) => return Err("field `source` must be a string".into()),
    };
    let kind = match map.get("kind") {
        None => Kind::Sensor,
        Some(Json::String(k)) if k == "sensor" => Kind::Sensor,
        Some(Json::String(k)) if k == "command" => Kind::Command,
        Some(other) => {
            return Err(format!(
                "field `kind` must be \"sensor\" or \"command\" (got {other})"
            ))
        }
    };
    let Some(value) = map.get("value") else {
        return Err("field `value` is missing (use null for no value)".into());
    };
    let stamp = clock::now();
    let wall_ms = match map.get("ts") {
        None => stamp.wall_ms,
        Some(Json::String(t)) => clock::parse_rfc3339_ms(t)
            .ok_or_else(|| format!("field `ts`: {t:?} is not an RFC 3339 time"))?,
        Some(Json::Number(n)) => n
            .as_i64()
            .ok_or_else(|| format!("field `ts`: {n} is not integer Unix milliseconds"))?,
        Some(other) => {
            return Err(format!(
                "field `ts` must be an RFC 3339 string or integer Unix milliseconds (got {other})"
            ))
        }
    };
    let mut event = Event::new(kind, source, to_value(value)).map_err(|e| e.to_string())?;
    event.wall_ms = wall_ms;
    event.mono_ms = stamp.mono_ms;
    event.clock_synced = stamp.clock_synced;
    event.boot_id = clock::boot_id();
    Ok(Request::Append(event))
}

/// One line as read by [`read_line_bounded`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line (newline and a trailing `\r` removed) in the caller's buffer.
    Complete,
    /// A line longer than the bound, discarded; its length.
    TooLong(usize),
    Eof,
}

/// Reads one line into `buf`, never holding more than `max` bytes of it.
pub async fn read_line_bounded<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut total = 0usize;
    let mut discarding = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (total, discarding) {
                (0, _) => Line::Eof,
                (n, true) => Line::TooLong(n),
                (_, false) => Line::Complete,
            });
        }
        let (chunk, consumed, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        total += chunk.len();
        if !discarding && buf.len() + chunk.len() <= max {
            buf.extend_from_slice(chunk);
        } else {
            discarding = true;
            buf.clear();
        }
        reader.consume(consumed);
        if done {
            if discarding {
                return Ok(Line::TooLong(total));
            }
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Line::Complete);
        }
    }
}

/// What the replier writes for one request, in order.
enum Pending {
    Ready(String),
    Waiting(oneshot::Receiver<AppendResult>),
    /// `{"op":"status"}`, taken when its turn to be answered comes, so that it reflects every
    /// event acknowledged before it on the same connection.
    Status,
    /// `{"op":"state"}`, taken at its turn too. The projection is folded by its own task
    /// from durable events, so it may not include an event acknowledged just before.
    State,
}

fn error_line(message: &str) -> String {
    json!({"ok": false, "error": message}).to_string()
}

/// Shared context of the ingest server.
#[derive(Clone)]
pub struct Ingest {
    pub config: IngestConfig,
    pub writer: WriterHandle,
    pub log: Log,
    pub health: Arc<Health>,
    /// The writer's durable seq: what wakes followers.
    pub durable: watch::Receiver<u64>,
    /// The daemon's incremental projection.
    pub state: Arc<std::sync::Mutex<State>>,
    /// Size of an event's upstream MQTT packet (`forward::publish_bytes` of its encoding).
    pub upstream_bytes: Arc<dyn Fn(&Event) -> usize + Send + Sync>,
}

/// Accepts clients until `shutdown` turns true; then stops reading requests, lets answers to
/// requests already read go out, and returns.
pub async fn serve(listener: UnixListener, ingest: Ingest, mut shutdown: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(ingest.config.max_clients));
    let mut clients = JoinSet::new();
    let client_shutdown = shutdown.clone();
    loop {
        tokio::select! {
            _ = crate::wait_true(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let ingest = ingest.clone();
                        let shutdown = client_shutdown.clone();
                        clients.spawn(async move {
                            serve_client(stream, ingest, shutdown).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        let max = ingest.config.max_clients;
                        tokio::spawn(refuse(stream, max));
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::task::yield_now().await;
                }
            },
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
        }
    }
    while clients.join_next().await.is_some() {}
}

/// Tells a client over `max_clients` why it is refused, then closes gently: the write side is
/// shut down and a bounded amount of what it already sent is drained, so the peer reads the
/// error line instead of a connection reset.
async fn refuse(mut stream: UnixStream, max: usize) {
    use tokio::io::AsyncReadExt;
    let line = error_line(&format!("too many clients (ingest.max_clients = {max})"));
    if stream
        .write_all(format!("{line}\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut total = 0usize;
        while total < crate::limits::REFUSED_DRAIN_BYTES_MAX {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let drain_ms = std::time::Duration::from_millis(crate::limits::REFUSED_DRAIN_MS);
    let _ = tokio::time::timeout(drain_ms, drain).await;
}

async fn serve_client(stream: UnixStream, ingest: Ingest, shutdown: watch::Receiver<bool>) {
    let (read, write) = stream.into_split();
    let (pending_tx, pending_rx) = mpsc::channel(CLIENT_PIPELINE_MAX);
    let replier = tokio::spawn(reply_in_order(
        write,
        pending_rx,
        ingest.clone(),
        shutdown.clone(),
    ));
    let follow = read_requests(read, &ingest, pending_tx, shutdown.clone()).await;
    // Answers to everything read before go out first, then the connection may turn into a
    // subscription.
    let Ok(Some(write)) = replier.await else {
        return;
    };
    if let Some(follow) = follow {
        crate::follow::serve(
            write,
            follow,
            ingest.log.clone(),
            ingest.durable.clone(),
            shutdown,
        )
        .await;
    }
}

/// Reads requests until EOF, shutdown, or a follow request (returned).
async fn read_requests(
    read: OwnedReadHalf,
    ingest: &Ingest,
    pending: mpsc::Sender<Pending>,
    mut shutdown: watch::Receiver<bool>,
) -> Option<Follow> {
    let max = ingest.config.max_event_bytes;
    let mut reader = BufReader::with_capacity(
        max.clamp(LINE_BUFFER_BYTES_MIN, LINE_BUFFER_BYTES_MAX),
        read,
    );
    let mut line = Vec::with_capacity(max);
    loop {
        let read = tokio::select! {
            _ = crate::wait_true(&mut shutdown) => return None,
            read = read_line_bounded(&mut reader, &mut line, max) => read,
        };
        let item = match read {
            Err(_) | Ok(Line::Eof) => return None,
            Ok(Line::TooLong(n)) => Pending::Ready(error_line(&format!(
                "request line is {n} bytes, over ingest.max_event_bytes ({max}); nothing stored"
            ))),
            Ok(Line::Complete) => match parse_request(&line) {
                Err(message) => Pending::Ready(error_line(&message)),
                Ok(Request::Status) => Pending::Status,
                Ok(Request::State) => Pending::State,
                Ok(Request::Follow(follow)) => return Some(follow),
                Ok(Request::Append(event)) => {
                    match upstream_too_large(ingest, &event, line.len()) {
                        Some(message) => Pending::Ready(error_line(&message)),
                        None => Pending::Waiting(ingest.writer.append(event).await),
                    }
                }
            },
        };
        if pending.send(item).await.is_err() {
            return None;
        }
    }
}

/// The refusal of an event whose upstream JSON would be over the MQTT packet limit (JSON
/// re-encoding grows some values: `9e15` becomes `9000000000000000.0`). Lines shorter than
/// `UPSTREAM_CHECK_LINE_BYTES` cannot get there and are not encoded twice.
fn upstream_too_large(ingest: &Ingest, event: &Event, line_bytes: usize) -> Option<String> {
    if line_bytes <= UPSTREAM_CHECK_LINE_BYTES {
        return None;
    }
    let bytes = (ingest.upstream_bytes)(event);
    (bytes > MQTT_PACKET_BYTES_MAX).then(|| {
        format!(
            "field `value`: its upstream MQTT packet would be {bytes} bytes, over the limit ({MQTT_PACKET_BYTES_MAX}); nothing stored"
        )
    })
}

/// Writes answers in order; hands the write half back when the requests end. After
/// shutdown, a client that does not read gets `REPLY_GRACE_MS`, then its connection closes.
async fn reply_in_order(
    write: OwnedWriteHalf,
    pending: mpsc::Receiver<Pending>,
    ingest: Ingest,
    mut shutdown: watch::Receiver<bool>,
) -> Option<OwnedWriteHalf> {
    let replies = write_replies(write, pending, ingest);
    tokio::pin!(replies);
    tokio::select! {
        done = &mut replies => return done,
        _ = crate::wait_true(&mut shutdown) => {}
    }
    let grace = std::time::Duration::from_millis(REPLY_GRACE_MS);
    tokio::time::timeout(grace, replies).await.ok().flatten()
}

async fn write_replies(
    mut write: OwnedWriteHalf,
    mut pending: mpsc::Receiver<Pending>,
    ingest: Ingest,
) -> Option<OwnedWriteHalf> {
    let mut out = Vec::with_capacity(256);
    while let Some(item) = pending.recv().await {
        let line = match item {
            Pending::Ready(line) => line,
            Pending::Status => ingest.health.to_json(&ingest.log).to_string(),
            Pending::State => ingest
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .to_json()
                .to_string(),
            Pending::Waiting(rx) => match rx.await {
                Ok(Ok(seq)) => json!({"ok": true, "seq": seq}).to_string(),
                Ok(Err(message)) => error_line(&message),
                Err(_) => error_line("daemon stopped before the event was stored"),
            },
        };
        out.clear();
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
        if write.write_all(&out).await.is_err() {
            return None;
        }
    }
    Some(write)
}

/// Binds the ingest socket: refuses if a live daemon answers there, removes a stale socket,
/// and never removes anything else found at that path (a regular file, a directory).
pub fn bind_socket(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt as _;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!(
                "ingest.socket {} exists and is not a socket; not removing it",
                path.display()
            );
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "ingest.socket {} is in use by a running daemon",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {:o} {}", mode, path.display()))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> String {
        match parse_request(line.as_bytes()) {
            Err(e) => e,
            Ok(r) => panic!("{line} parsed as {r:?}"),
        }
    }

    #[test]
    fn bad_requests_name_the_field() {
        assert!(err("").contains("empty"));
        assert!(err("nope").contains("JSON"));
        assert!(err("[1]").contains("object"));
        assert!(err(r#"{"source":"a"}"#).contains("`value`"));
        assert!(err(r#"{"value":1}"#).contains("`source`"));
        assert!(err(r#"{"source":"","value":1}"#).contains("`source`"));
        assert!(
            err(&format!(r#"{{"source":"{}","value":1}}"#, "a".repeat(65))).contains("`source`")
        );
        assert!(err(r#"{"source":"a","value":1,"kind":"system"}"#).contains("`kind`"));
        assert!(err(r#"{"source":"a","value":1,"ts":"later"}"#).contains("`ts`"));
        assert!(err(r#"{"source":"a","value":1,"x":2}"#).contains("`x`"));
        assert!(parse_request(&[0xff, 0xfe]).unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn good_requests() {
        match parse_request(br#"{"source":"t0","value":null,"ts":1700000000000}"#).unwrap() {
            Request::Append(e) => {
                assert_eq!(e.value, edgecap_storage::Value::Null);
                assert_eq!(e.wall_ms, 1_700_000_000_000);
            }
            r => panic!("{r:?}"),
        }
        assert!(matches!(
            parse_request(br#"{"op":"status"}"#).unwrap(),
            Request::Status
        ));
    }

    #[tokio::test]
    async fn bounded_reader_discards_long_lines() {
        let data = format!("{}\nshort\r\n{}", "x".repeat(100), "tail");
        let mut reader = BufReader::with_capacity(16, data.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(
            read_line_bounded(&mut reader, &mut buf, 10).await.unwrap(),
            Line::TooLong(100)
        );
        assert!(buf.capacity() < 100);
        assert_eq!(
            read_line_bounded(&mut reader, &mut buf, 10).await.unwrap(),
            Line::Complete
        );
        assert_eq!(buf, b"short");
        assert_eq!(
            read_line_bounded(&mut reader, &mut buf, 10).await.unwrap(),
            Line::Complete
        );
        assert_eq!(buf, b"tail");
        assert_eq!(
            read_line_bounded(&mut reader, &mut buf, 10).await.unwrap(),
            Line::Eof
        );
    }
}
