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
    last_error: Mutex<Option<String>>,
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
            last_error: Mutex::new(None),
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

    pub fn set_error(&self, error: impl Into<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.into());
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
            "upstream": self.upstream_enabled,
            "first_seq": stats.first_seq,
            "syncs": stats.syncs,
            "published": self.published.load(Ordering::Relaxed),
            "version": env!("CARGO_PKG_VERSION"),
        })
    }
}
