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

/// The highest seq of any CRC-valid frame anywhere on the medium (every file, every 8-byte
/// boundary: data, tail-page copies, cut and quarantine files), found without the log's own
/// code. Recovery must hand out seqs past it: a seq that reached the medium is never reused.
/// Frame layout as FORMAT.md gives it: length u32, crc32 u32 over bytes 0..4 ++ 8..16+length,
/// seq u64, payload.
pub fn highest_seq_on_medium(medium: &edgecap_storage::SimMedium) -> u64 {
    const PAYLOAD_MAX: usize = 1024 * 1024;
    let mut highest = 0;
    for name in medium.names() {
        let bytes = medium.file_bytes(&name).unwrap_or_default();
        for at in (0..bytes.len().saturating_sub(16)).step_by(8) {
            let word = |from: usize| bytes[at + from..at + from + 4].try_into().unwrap();
            let len = u32::from_le_bytes(word(0)) as usize;
            if len == 0 || len > PAYLOAD_MAX || at + 16 + len > bytes.len() {
                continue;
            }
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&bytes[at..at + 4]);
            hasher.update(&bytes[at + 8..at + 16 + len]);
            if hasher.finalize() == u32::from_le_bytes(word(4)) {
                let seq = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
                highest = highest.max(seq);
            }
        }
    }
    highest
}
