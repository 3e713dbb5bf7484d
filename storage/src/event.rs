//! The event, as stored in a record's payload (postcard-encoded).
//!
//! The storage crate knows nothing of JSON: [`Value`] is its own tree, which the daemon converts
//! to and from JSON without loss (object members keep their order; integers stay integers).
//!
//! **On-disk type: do not reorder fields or enum variants.** postcard encodes struct fields in
//! declaration order and enum variants by index; reordering changes the format. Add new fields
//! only with a format version bump (FORMAT.md, "Version history").

use serde::{Deserialize, Serialize};

use crate::limits::SOURCE_BYTES_MAX;

/// A bounded source name: at most [`SOURCE_BYTES_MAX`] bytes, no heap allocation.
pub type Source = heapless::String<SOURCE_BYTES_MAX>;

/// What produced an event. Do not reorder: the index is the on-disk encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A measurement from a producer on the device.
    Sensor,
    /// A command, from a local producer or from upstream.
    Command,
    /// Something the daemon records about itself (start, recovery, drops, clock steps).
    System,
}

impl Kind {
    /// The name used in JSON and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sensor => "sensor",
            Kind::Command => "command",
            Kind::System => "system",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Kind> {
        match name {
            "sensor" => Some(Kind::Sensor),
            "command" => Some(Kind::Command),
            "system" => Some(Kind::System),
            _ => None,
        }
    }
}

/// A JSON-shaped value. Do not reorder variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// A positive integer above `i64::MAX`.
    UInt(u64),
    Float(f64),
    String(String),
    Array(Vec<Value>),
    /// Members in their original order.
    Object(Vec<(String, Value)>),
}

/// One stored event. **Do not reorder fields** (postcard encodes them in this order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log; assigned by the log at append, starts at 1, never reused.
    pub seq: u64,
    /// Wall-clock capture time, Unix milliseconds (may be wrong before NTP sync; see below).
    pub wall_ms: i64,
    /// Monotonic time since boot at capture, milliseconds (`CLOCK_BOOTTIME`).
    pub mono_ms: u64,
    /// Identity of the boot during which the event was captured (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: [u8; 16],
    /// Whether the wall clock was known synchronised (NTP) at capture.
    pub clock_synced: bool,
    pub kind: Kind,
    pub source: Source,
    pub value: Value,
}

impl Event {
    /// A new event with `seq` 0 (the log assigns it) and zeroed time fields.
    pub fn new(kind: Kind, source: &str, value: Value) -> Result<Event, crate::Error> {
        Ok(Event {
            seq: 0,
            wall_ms: 0,
            mono_ms: 0,
            boot_id: [0; 16],
            clock_synced: false,
            kind,
            source: source_from_str(source)?,
            value,
        })
    }
}

/// Converts a `&str` into a bounded [`Source`], or a clear error naming the field.
pub fn source_from_str(source: &str) -> Result<Source, crate::Error> {
    if source.is_empty() {
        return Err(crate::Error::InvalidField {
            field: "source",
            reason: "must not be empty".into(),
        });
    }
    Source::try_from(source).map_err(|_| crate::Error::InvalidField {
        field: "source",
        reason: format!(
            "is {} bytes, at most {SOURCE_BYTES_MAX} allowed",
            source.len()
        ),
    })
}
