//! The configuration file (TOML): parsed into a raw struct that mirrors the file, then
//! validated into [`Config`]. Every error names the key (`storage.segment_size`), and unknown
//! keys are errors (`deny_unknown_fields`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgecap_storage::{LogOptions, OnFull};
use serde::{Deserialize, Serialize};

use crate::limits::*;

/// A configuration error; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("invalid `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    /// A value of the wrong type, found while parsing: `key` is its dotted path.
    #[error("invalid `{key}`: {reason}")]
    Type { key: String, reason: String },
}

fn invalid<T>(key: &'static str, reason: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        key,
        reason: reason.into(),
    })
}

/// A size: an integer of bytes or a string with a unit ("16MiB").
#[derive(Debug, Clone)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size: a whole number of bytes or a string like \"16MiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<RawSize, E> {
                u64::try_from(n)
                    .map(RawSize::Bytes)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &self))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(text.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

fn parse_size(key: &'static str, raw: &RawSize) -> Result<u64, ConfigError> {
    let text = match raw {
        RawSize::Bytes(n) => return Ok(*n),
        RawSize::Text(t) => t.trim(),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .or_else(|_| invalid(key, format!("{text:?} is not a size like 16MiB")))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return invalid(
                key,
                format!("unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB, GB)"),
            )
        }
    };
    number
        .checked_mul(factor)
        .map_or_else(|| invalid(key, format!("{text} overflows")), Ok)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    device_id: Option<String>,
    storage: Option<RawStorage>,
    #[serde(default)]
    ingest: RawIngest,
    upstream: Option<RawUpstream>,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    breaker: RawBreaker,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    dir: Option<PathBuf>,
    segment_size: Option<RawSize>,
    max_disk: Option<RawSize>,
    on_full: Option<String>,
    sync: Option<String>,
    sync_interval_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngest {
    socket: Option<PathBuf>,
    socket_mode: Option<String>,
    max_event_bytes: Option<RawSize>,
    max_clients: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    host: Option<String>,
    port: Option<u64>,
    client_id: Option<String>,
    topic_prefix: Option<String>,
    keep_alive_secs: Option<u64>,
    max_inflight: Option<u64>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial_backoff_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    failure_threshold: Option<u64>,
    open_secs: Option<u64>,
}

/// When a write is acknowledged to the producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncPolicy {
    /// Reply only after the event is durable (group commit).
    Always,
    /// Reply after the write; sync every `sync_interval`.
    Interval,
}

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub device_id: String,
    pub storage: StorageConfig,
    pub ingest: IngestConfig,
    pub upstream: Option<UpstreamConfig>,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
}

#[derive(Debug, Clone, Serialize)]
pub struct StorageConfig {
    pub dir: PathBuf,
    pub segment_size: u64,
    pub max_disk: u64,
    pub on_full: String,
    pub sync: SyncPolicy,
    pub sync_interval_ms: u64,
}

impl StorageConfig {
    /// Options for the storage crate; the record limit follows `max_event_bytes`.
    pub fn log_options(&self, event_bytes_max: usize) -> LogOptions {
        LogOptions {
            segment_bytes: self.segment_size,
            disk_bytes_max: self.max_disk,
            on_full: if self.on_full == "reject" {
                OnFull::Reject
            } else {
                OnFull::DropOldest
            },
            record_bytes_max: record_bytes_max(event_bytes_max),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestConfig {
    pub socket: PathBuf,
    /// Octal permission bits for the socket file.
    pub socket_mode: String,
    #[serde(skip)]
    pub socket_mode_bits: u32,
    pub max_event_bytes: usize,
    pub max_clients: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpstreamConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub topic_prefix: String,
    pub keep_alive_secs: u64,
    pub max_inflight: u16,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// The contents of `password_file`, read at validation.
    #[serde(skip)]
    pub password: Option<Secret>,
    /// Absent: plain MQTT over TCP.
    pub tls: Option<TlsConfig>,
}

/// A secret that `Debug` does not print.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `[upstream] tls = { ca, cert, key }`, checked and loaded (see `crate::tls`).
#[derive(Debug, Clone, Serialize)]
pub struct TlsConfig {
    /// The CA certificates the broker's certificate must chain to (default: the system bundle).
    pub ca: PathBuf,
    /// Client certificate chain and key, for brokers that require mutual TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(skip)]
    pub client_config: std::sync::Arc<rustls::ClientConfig>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetryConfig {
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub open_secs: u64,
}

impl BreakerConfig {
    pub fn open_duration(&self) -> Duration {
        Duration::from_secs(self.open_secs)
    }
}

/// `[A-Za-z0-9_-]{1,64}`.
pub fn valid_device_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        // serde_path_to_error tracks where in the document a type error happened, so the
        // message names the dotted key (`storage.segment_size`) and not only the line.
        let raw: RawConfig = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let key = e.path().to_string();
                let reason = e.inner().to_string().trim_end().to_string();
                if key.is_empty() || key == "." {
                    ConfigError::Parse(format!("invalid config: {reason}"))
                } else {
                    ConfigError::Type { key, reason }
                }
            })?;
        let device_id = match raw.device_id {
            Some(id) if valid_device_id(&id) => id,
            Some(id) => {
                return invalid(
                    "device_id",
                    format!("{id:?} must be 1-64 characters of [A-Za-z0-9_-]"),
                )
            }
            None => return invalid("device_id", "missing (required)"),
        };
        let Some(storage) = raw.storage else {
            return invalid("storage.dir", "missing (required)");
        };
        let ingest = validate_ingest(raw.ingest)?;
        let storage = validate_storage(storage, ingest.max_event_bytes)?;
        let upstream = match raw.upstream {
            Some(u) => Some(validate_upstream(u, &device_id)?),
            None => None,
        };
        let retry = RetryConfig {
            initial_backoff_ms: raw
                .retry
                .initial_backoff_ms
                .unwrap_or(BACKOFF_MS_INITIAL_DEFAULT),
            max_backoff_ms: raw.retry.max_backoff_ms.unwrap_or(BACKOFF_MS_MAX_DEFAULT),
        };
        if retry.initial_backoff_ms == 0 {
            return invalid("retry.initial_backoff_ms", "must be at least 1");
        }
        if retry.max_backoff_ms < retry.initial_backoff_ms {
            return invalid(
                "retry.max_backoff_ms",
                format!(
                    "{} is below retry.initial_backoff_ms ({})",
                    retry.max_backoff_ms, retry.initial_backoff_ms
                ),
            );
        }
        if retry.max_backoff_ms > 3_600_000 {
            return invalid("retry.max_backoff_ms", "at most 3600000 (one hour)");
        }
        let failure_threshold = raw
            .breaker
            .failure_threshold
            .unwrap_or(BREAKER_FAILURE_THRESHOLD_DEFAULT as u64);
        if !(1..=1000).contains(&failure_threshold) {
            return invalid("breaker.failure_threshold", "must be 1..=1000");
        }
        let open_secs = raw.breaker.open_secs.unwrap_or(BREAKER_OPEN_SECS_DEFAULT);
        if !(1..=86_400).contains(&open_secs) {
            return invalid("breaker.open_secs", "must be 1..=86400");
        }
        Ok(Config {
            device_id,
            storage,
            ingest,
            upstream,
            retry,
            breaker: BreakerConfig {
                failure_threshold: failure_threshold as u32,
                open_secs,
            },
        })
    }

    /// The effective configuration as TOML (for `config check`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

fn validate_storage(raw: RawStorage, event_bytes_max: usize) -> Result<StorageConfig, ConfigError> {
    let Some(dir) = raw.dir else {
        return invalid("storage.dir", "missing (required)");
    };
    if dir.as_os_str().is_empty() {
        return invalid("storage.dir", "must not be empty");
    }
    let segment_size = match &raw.segment_size {
        Some(s) => parse_size("storage.segment_size", s)?,
        None => edgecap_storage::limits::SEGMENT_BYTES_DEFAULT,
    };
    let max_disk = match &raw.max_disk {
        Some(s) => parse_size("storage.max_disk", s)?,
        None => edgecap_storage::limits::DISK_BYTES_MAX_DEFAULT,
    };
    let on_full = raw.on_full.unwrap_or_else(|| "drop_oldest".into());
    if on_full != "drop_oldest" && on_full != "reject" {
        return invalid(
            "storage.on_full",
            format!("{on_full:?} must be \"drop_oldest\" or \"reject\""),
        );
    }
    let sync = match raw.sync.as_deref().unwrap_or("always") {
        "always" => SyncPolicy::Always,
        "interval" => SyncPolicy::Interval,
        other => {
            return invalid(
                "storage.sync",
                format!("{other:?} must be \"always\" or \"interval\""),
            )
        }
    };
    let sync_interval_ms = raw.sync_interval_ms.unwrap_or(SYNC_INTERVAL_MS_DEFAULT);
    if !(1..=60_000).contains(&sync_interval_ms) {
        return invalid("storage.sync_interval_ms", "must be 1..=60000");
    }
    let storage = StorageConfig {
        dir,
        segment_size,
        max_disk,
        on_full,
        sync,
        sync_interval_ms,
    };
    if let Err(edgecap_storage::Error::InvalidOption { option, reason }) =
        storage.log_options(event_bytes_max).validate()
    {
        // The storage crate names its own options; the daemon maps them to its keys. The
        // record limit follows ingest.max_event_bytes, and the fix is a larger segment.
        return match option {
            "disk_bytes_max" => invalid("storage.max_disk", reason),
            "record_bytes_max" => invalid(
                "storage.segment_size",
                format!("{reason} (records follow ingest.max_event_bytes)"),
            ),
            _ => invalid("storage.segment_size", reason),
        };
    }
    Ok(storage)
}

fn validate_ingest(raw: RawIngest) -> Result<IngestConfig, ConfigError> {
    let socket = raw
        .socket
        .unwrap_or_else(|| PathBuf::from("/run/edgecap/ingest.sock"));
    if socket.as_os_str().len() > 100 {
        return invalid(
            "ingest.socket",
            "path longer than 100 bytes (sun_path limit)",
        );
    }
    let socket_mode = raw.socket_mode.unwrap_or_else(|| "0660".into());
    let socket_mode_bits = match u32::from_str_radix(&socket_mode, 8) {
        Ok(bits) if bits <= 0o777 => bits,
        _ => {
            return invalid(
                "ingest.socket_mode",
                format!("{socket_mode:?} must be octal permission bits like \"0660\""),
            )
        }
    };
    let max_event_bytes = match &raw.max_event_bytes {
        Some(s) => parse_size("ingest.max_event_bytes", s)?,
        None => EVENT_BYTES_MAX_DEFAULT as u64,
    };
    if !(64..=EVENT_BYTES_MAX_CEILING as u64).contains(&max_event_bytes) {
        return invalid(
            "ingest.max_event_bytes",
            format!("{max_event_bytes} must be 64..={EVENT_BYTES_MAX_CEILING}"),
        );
    }
    let max_clients = raw.max_clients.unwrap_or(CLIENTS_MAX_DEFAULT as u64);
    if !(1..=CLIENTS_MAX_CEILING as u64).contains(&max_clients) {
        return invalid(
            "ingest.max_clients",
            format!("{max_clients} must be 1..={CLIENTS_MAX_CEILING}"),
        );
    }
    Ok(IngestConfig {
        socket,
        socket_mode,
        socket_mode_bits,
        max_event_bytes: max_event_bytes as usize,
        max_clients: max_clients as usize,
    })
}

fn validate_upstream(raw: RawUpstream, device_id: &str) -> Result<UpstreamConfig, ConfigError> {
    let host = raw.host.unwrap_or_else(|| "127.0.0.1".into());
    if host.is_empty() {
        return invalid("upstream.host", "must not be empty");
    }
    // 8883 is MQTT over TLS's registered port, 1883 plain MQTT's.
    let port = raw.port.unwrap_or(if raw.tls.is_some() {
        MQTT_TLS_PORT_DEFAULT.into()
    } else {
        MQTT_PORT_DEFAULT.into()
    });
    if !(1..=65535).contains(&port) {
        return invalid("upstream.port", format!("{port} must be 1..=65535"));
    }
    let client_id = raw.client_id.unwrap_or_else(|| device_id.to_string());
    if client_id.is_empty() || client_id.len() > crate::limits::CLIENT_ID_BYTES_MAX {
        return invalid("upstream.client_id", "must be 1..=128 characters");
    }
    let topic_prefix = raw.topic_prefix.unwrap_or_else(|| "edgecap".into());
    if let Err(reason) = check_topic_prefix(&topic_prefix) {
        return invalid(
            "upstream.topic_prefix",
            format!("{topic_prefix:?} {reason}"),
        );
    }
    let keep_alive_secs = raw
        .keep_alive_secs
        .unwrap_or(crate::limits::KEEP_ALIVE_SECS_DEFAULT);
    if !(1..=65535).contains(&keep_alive_secs) {
        return invalid("upstream.keep_alive_secs", "must be 1..=65535");
    }
    let max_inflight = raw.max_inflight.unwrap_or(INFLIGHT_MAX_DEFAULT as u64);
    if !(1..=INFLIGHT_MAX_CEILING as u64).contains(&max_inflight) {
        return invalid(
            "upstream.max_inflight",
            format!("{max_inflight} must be 1..={INFLIGHT_MAX_CEILING}"),
        );
    }
    if raw.password_file.is_some() && raw.username.is_none() {
        return invalid("upstream.password_file", "needs upstream.username");
    }
    // Read now, once: a wrong path or mode is a config error (exit 2), never a forwarder that
    // cannot start. A new password takes a restart, like a new certificate.
    let password = match &raw.password_file {
        None => None,
        Some(path) => Some(Secret(read_password(path)?)),
    };
    if raw.tls.is_some() {
        // The name the broker's certificate must carry: checked now rather than at every
        // connection attempt.
        if let Err(e) = rustls::pki_types::ServerName::try_from(host.as_str()) {
            return invalid(
                "upstream.host",
                format!("{host:?} is not a DNS name or IP address a TLS certificate can name: {e}"),
            );
        }
    }
    let tls = match raw.tls {
        None => None,
        Some(raw_tls) => Some(validate_tls(raw_tls)?),
    };
    Ok(UpstreamConfig {
        host,
        port: port as u16,
        client_id,
        topic_prefix,
        keep_alive_secs,
        max_inflight: max_inflight as u16,
        username: raw.username,
        password_file: raw.password_file,
        password,
        tls,
    })
}

/// A topic prefix is 1..=128 bytes of MQTT topic levels: no wildcard (`+`, `#`), no `$` (the
/// broker's own `$SYS` space), no empty level, no control character.
fn check_topic_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() || prefix.len() > crate::limits::TOPIC_PREFIX_BYTES_MAX {
        return Err("must be 1..=128 bytes");
    }
    if prefix.contains(['+', '#']) {
        return Err("must not contain the wildcards + or #");
    }
    if prefix.contains('$') {
        return Err("must not contain $ (topics starting with $ are the broker's)");
    }
    if prefix.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    if prefix.split('/').any(str::is_empty) {
        return Err("must not have an empty level (a leading, trailing or double /)");
    }
    Ok(())
}

/// A password file that any local user can read is worth a warning, like the TLS key.
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(file = %path.display(), "upstream.password_file is readable by every user; chmod 0640 and chgrp edgecap");
        }
    }
}

fn read_password(path: &Path) -> Result<String, ConfigError> {
    warn_if_readable_by_others(path);
    use std::io::Read as _;
    let fail = |e: &dyn std::fmt::Display| ConfigError::Invalid {
        key: "upstream.password_file",
        reason: format!("{}: {e}", path.display()),
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(PASSWORD_FILE_BYTES_MAX + 1)
                .read_to_string(&mut text)
        })
        .map_err(|e| fail(&e))?;
    if text.len() as u64 > PASSWORD_FILE_BYTES_MAX {
        return Err(fail(&format!(
            "longer than {PASSWORD_FILE_BYTES_MAX} bytes"
        )));
    }
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

fn validate_tls(raw: RawTls) -> Result<TlsConfig, ConfigError> {
    let ca = raw
        .ca
        .unwrap_or_else(|| PathBuf::from(crate::tls::SYSTEM_CA_BUNDLE));
    let client = match (&raw.cert, &raw.key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        (Some(_), None) => {
            return invalid("upstream.tls.key", "is required with upstream.tls.cert")
        }
        (None, Some(_)) => {
            return invalid("upstream.tls.cert", "is required with upstream.tls.key")
        }
    };
    let client_config = crate::tls::client_config(&ca, client)?;
    Ok(TlsConfig {
        ca,
        cert: raw.cert,
        key: raw.key,
        client_config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
device_id = "pi-0042"
[storage]
dir = "/tmp/x"
segment_size = "1MiB"
max_disk = "8MiB"
"#;

    #[test]
    fn good_config_and_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.storage.segment_size, 1 << 20);
        assert_eq!(c.storage.sync, SyncPolicy::Always);
        assert_eq!(c.ingest.max_event_bytes, 4096);
        assert!(c.upstream.is_none());
    }

    fn error_of(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key() {
        assert!(error_of("[storage]\ndir='/x'").contains("device_id"));
        assert!(error_of("device_id='a b'\n[storage]\ndir='/x'").contains("device_id"));
        assert!(error_of(&format!("{GOOD}bogus = 1")).contains("bogus"));
        assert!(error_of(&GOOD.replace("1MiB", "1 parsec")).contains("storage.segment_size"));
        assert!(error_of(&GOOD.replace("8MiB", "1MiB")).contains("storage.max_disk"));
        assert!(error_of(&format!("{GOOD}on_full='x'")).contains("storage.on_full"));
        assert!(error_of(&format!("{GOOD}[ingest]\nmax_clients=0")).contains("ingest.max_clients"));
        assert!(error_of(&format!("{GOOD}[upstream]\nmax_inflight=0"))
            .contains("upstream.max_inflight"));
        assert!(error_of(&format!("{GOOD}[retry]\ninitial_backoff_ms=0"))
            .contains("retry.initial_backoff_ms"));
        assert!(error_of(&format!("{GOOD}[breaker]\nfailure_threshold=0"))
            .contains("breaker.failure_threshold"));
    }

    #[test]
    fn topic_prefix_outside_mqtt_topic_levels_is_refused() {
        let with = |prefix: &str| {
            format!(
                "{GOOD}[upstream]\ntopic_prefix = {}\n",
                toml::Value::from(prefix)
            )
        };
        for bad in [
            "",
            "$SYS",
            "a/$x",
            "a/+",
            "#",
            "/a",
            "a/",
            "a//b",
            "a\nb",
            &"x".repeat(129),
        ] {
            let error = error_of(&with(bad));
            assert!(error.contains("upstream.topic_prefix"), "{bad:?}: {error}");
        }
        for good in ["edgecap", "fleet/site-1", &"x".repeat(128)] {
            assert!(Config::parse(&with(good)).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn the_password_is_read_at_validation() {
        let dir = tempfile::tempdir().unwrap();
        let upstream = |file: &Path| {
            format!(
                "{GOOD}[upstream]\nusername='edge'\npassword_file='{}'\n",
                file.display()
            )
        };
        // A directory opens but cannot be read: refused now, not at the first connection.
        assert!(error_of(&upstream(dir.path())).contains("upstream.password_file"));
        assert!(error_of(&upstream(&dir.path().join("missing"))).contains("upstream.password_file"));
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let config = Config::parse(&upstream(&file)).unwrap();
        let upstream = config.upstream.unwrap();
        assert_eq!(upstream.password.as_ref().unwrap().0, "s3cret");
        assert!(
            !format!("{upstream:?}").contains("s3cret"),
            "Debug shows the password"
        );
    }
}
