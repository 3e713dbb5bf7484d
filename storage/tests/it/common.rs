//! Helpers shared by the storage tests.
#![allow(dead_code)]

use edgecap_storage::{Event, Kind, LogOptions, OnFull, SplitMix64, Value};

/// Tiny segments (the 24 KiB minimum: one 4 KiB data page) so rotation and retention happen
/// constantly.
pub fn tiny_options() -> LogOptions {
    LogOptions {
        segment_bytes: 24 * 1024,
        disk_bytes_max: 24 * 1024 * 16,
        on_full: OnFull::DropOldest,
        record_bytes_max: 1024,
    }
}

/// A deterministic event of varying size and shape.
pub fn event(rng: &mut SplitMix64, n: u64) -> Event {
    let value = match rng.below(6) {
        0 => Value::Null,
        1 => Value::Float(n as f64 * 0.5),
        2 => Value::Int(-(n as i64)),
        3 => Value::String("x".repeat(rng.below(300) as usize)),
        4 => Value::Array(vec![Value::Bool(true), Value::UInt(u64::MAX)]),
        _ => Value::Object(vec![("k".into(), Value::String(format!("v{n}")))]),
    };
    let mut event = Event::new(Kind::Sensor, &format!("s{}", rng.below(4)), value).unwrap();
    event.wall_ms = n as i64;
    event.mono_ms = n;
    event
}

/// The seed base: `EDGECAP_SEED` if set (to rerun a failure), else the fixed default.
pub fn seed_base(default: u64) -> u64 {
    std::env::var("EDGECAP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
