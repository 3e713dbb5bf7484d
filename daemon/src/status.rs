//! Daemon health: what `{"op":"status"}` and `edgecap status` report.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use edgecap_storage::Log;
use serde_json::{json, Value as Json};

use crate::retry::BreakerState;

/// Shared, lock-light health state, written by the forwarder and the writer.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    upstream_enabled: bool,
    connected: AtomicBool,
    breaker: AtomicU8,
    forwarded_seq: AtomicU64,
    published: AtomicU64,
    skipped: AtomicU64,
    /// The most recent error ever reported (sticky: what went wrong last).
    last_error: Mutex<Option<String>>,
    /// Conditions still true now, by area (`upstream`, `subscribe`, `commands`, `storage`);
    /// an area clears its own when it recovers.
    current: Mutex<Vec<(&'static str, String)>>,
    /// A fault the process cannot repair: it is stopping with a non-zero exit.
    fatal: Mutex<Option<String>>,
}

impl Health {
    pub fn new(upstream_enabled: bool, forwarded_seq: u64) -> Health {
        Health {
            started: Instant::now(),
            upstream_enabled,
            connected: AtomicBool::new(false),
            breaker: AtomicU8::new(0),
            forwarded_seq: AtomicU64::new(forwarded_seq),
            published: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            last_error: Mutex::new(None),
            current: Mutex::new(Vec::new()),
            fatal: Mutex::new(None),
        }
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn set_breaker(&self, state: BreakerState) {
        let code = match state {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        };
        self.breaker.store(code, Ordering::Relaxed);
    }

    pub fn breaker(&self) -> BreakerState {
        match self.breaker.load(Ordering::Relaxed) {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    pub fn set_forwarded(&self, seq: u64) {
        self.forwarded_seq.fetch_max(seq, Ordering::Relaxed);
    }

    pub fn forwarded_seq(&self) -> u64 {
        self.forwarded_seq.load(Ordering::Relaxed)
    }

    pub fn count_published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    /// Events the forwarder set aside (never sent; they stay in the log).
    pub fn count_skipped(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// Reports an error of `area`: it becomes `last_error` and the area's `current_error`.
    pub fn set_error(&self, area: &'static str, error: impl Into<String>) {
        let error = error.into();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.retain(|(a, _)| *a != area);
        current.push((area, error.clone()));
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    /// Records a one-off error (a refused command, a skipped record): it becomes `last_error`
    /// but is no condition that `current_error` would keep showing.
    pub fn note_error(&self, error: impl Into<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.into());
    }

    /// `area` works again: its current error clears (`last_error` stays).
    pub fn clear_error(&self, area: &'static str) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.retain(|(a, _)| *a != area);
    }

    /// The newest error still true, if any.
    pub fn current_error(&self) -> Option<String> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.last().map(|(_, e)| e.clone())
    }

    /// Marks the daemon as unable to go on: status says so and the watchdog stops.
    pub fn set_fatal(&self, error: impl Into<String>) {
        let error = error.into();
        self.set_error("storage", error.clone());
        self.fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(error);
    }

    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The status object (INTERFACE.md keys, plus a few more).
    pub fn to_json(&self, log: &Log) -> Json {
        let stats = log.stats();
        let forwarded = self.forwarded_seq();
        let backlog = if self.upstream_enabled {
            stats
                .durable_seq
                .saturating_sub(forwarded.max(stats.first_seq - 1))
        } else {
            0
        };
        let last_error = self.last_error().or_else(|| stats.poisoned.clone());
        let current_error = stats
            .poisoned
            .clone()
            .map(|p| format!("storage: {p}"))
            .or_else(|| self.fatal())
            .or_else(|| self.current_error());
        let healthy = stats.poisoned.is_none() && self.fatal().is_none();
        json!({
            "appended_seq": stats.appended_seq,
            "durable_seq": stats.durable_seq,
            "forwarded_seq": forwarded,
            "backlog": backlog,
            "connected": self.connected(),
            "breaker": self.breaker().as_str(),
            "dropped_events": stats.dropped_events,
            "disk_bytes": stats.disk_bytes,
            "segments": stats.segments,
            "uptime_secs": self.started.elapsed().as_secs(),
            "last_error": last_error,
            "current_error": current_error,
            "healthy": healthy,
            "skipped_events": self.skipped.load(Ordering::Relaxed),
            "upstream": self.upstream_enabled,
            "first_seq": stats.first_seq,
            "syncs": stats.syncs,
            "published": self.published.load(Ordering::Relaxed),
            "version": env!("CARGO_PKG_VERSION"),
        })
    }
}
