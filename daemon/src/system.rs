//! The daemon's own `system` events: one typed enum, one encoder. Every gap, skip and refusal
//! the daemon makes is recorded as one of these, so the log explains itself
//! (docs/INTERFACE.md § System events lists the fields).

use edgecap_storage::{Event, Kind, Value};

/// Source name of every `system` event the daemon stores.
pub const SYSTEM_SOURCE: &str = "edgecap";

/// One `system` event; the `event` field of the stored object names the variant.
#[derive(Debug, Clone, PartialEq)]
pub enum SystemEvent {
    /// The daemon started (after recovery).
    Start {
        version: String,
        boot_id: String,
        device: String,
    },
    /// A clean stop: the last event of a run that ended on SIGTERM/SIGINT.
    Stop,
    /// What recovery found: the fields built by `start::recovery_event` (bounded lists; the
    /// report's many counts stay name-value pairs).
    Recovery(Vec<(String, Value)>),
    /// `on_full = "drop_oldest"` deleted unforwarded events `from..=to`.
    Drop { from: u64, to: u64, reason: String },
    /// The wall clock stepped by `offset_ms` relative to the boot clock.
    ClockStep { offset_ms: i64, synced: bool },
    /// The forwarder set event `seq` aside and will not send it (it stays in the log).
    ForwardSkip { seq: u64, reason: String },
    /// An upstream command was acknowledged to the broker but not stored.
    CommandRefused {
        topic: String,
        bytes: u64,
        reason: String,
    },
}

impl SystemEvent {
    /// The `event` field's value.
    pub fn name(&self) -> &'static str {
        match self {
            SystemEvent::Start { .. } => "start",
            SystemEvent::Stop => "stop",
            SystemEvent::Recovery(_) => "recovery",
            SystemEvent::Drop { .. } => "drop",
            SystemEvent::ClockStep { .. } => "clock_step",
            SystemEvent::ForwardSkip { .. } => "forward_skip",
            SystemEvent::CommandRefused { .. } => "command_refused",
        }
    }

    fn fields(self) -> Vec<(String, Value)> {
        let s = |v: String| Value::String(v);
        match self {
            SystemEvent::Start {
                version,
                boot_id,
                device,
            } => vec![
                ("version".into(), s(version)),
                ("boot_id".into(), s(boot_id)),
                ("device".into(), s(device)),
            ],
            SystemEvent::Stop => Vec::new(),
            SystemEvent::Recovery(fields) => fields,
            SystemEvent::Drop { from, to, reason } => {
                debug_assert!(from <= to, "drop range {from}..={to}");
                vec![
                    ("from_seq".into(), Value::UInt(from)),
                    ("to_seq".into(), Value::UInt(to)),
                    ("count".into(), Value::UInt(to + 1 - from)),
                    ("reason".into(), s(reason)),
                ]
            }
            SystemEvent::ClockStep { offset_ms, synced } => vec![
                ("offset_ms".into(), Value::Int(offset_ms)),
                ("synced".into(), Value::Bool(synced)),
            ],
            SystemEvent::ForwardSkip { seq, reason } => vec![
                ("seq".into(), Value::UInt(seq)),
                ("reason".into(), s(reason)),
            ],
            SystemEvent::CommandRefused {
                topic,
                bytes,
                reason,
            } => vec![
                ("topic".into(), s(topic)),
                ("bytes".into(), Value::UInt(bytes)),
                ("reason".into(), s(reason)),
            ],
        }
    }

    /// The event to append, stamped now.
    pub fn into_event(self) -> Event {
        let mut object = vec![("event".to_string(), Value::String(self.name().into()))];
        object.extend(self.fields());
        let stamp = crate::clock::now();
        let mut event =
            Event::new(Kind::System, SYSTEM_SOURCE, Value::Object(object)).expect("static source");
        event.wall_ms = stamp.wall_ms;
        event.mono_ms = stamp.mono_ms;
        event.clock_synced = stamp.clock_synced;
        event.boot_id = crate::clock::boot_id();
        event
    }
}

/// Whether `event` is the daemon's own `system` event named `name`.
pub fn is_system(event: &Event, name: &str) -> bool {
    event.kind == Kind::System
        && matches!(&event.value, Value::Object(m)
            if m.iter().any(|(k, v)| k == "event" && matches!(v, Value::String(s) if s == name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_names_itself_in_the_event_field() {
        let all = [
            SystemEvent::Stop,
            SystemEvent::Drop {
                from: 3,
                to: 5,
                reason: "r".into(),
            },
            SystemEvent::ForwardSkip {
                seq: 9,
                reason: "r".into(),
            },
        ];
        for system in all {
            let name = system.name();
            let event = system.into_event();
            assert!(is_system(&event, name), "{name}");
            assert_eq!(event.source.as_str(), SYSTEM_SOURCE);
        }
    }

    #[test]
    fn drop_counts_its_range() {
        let event = SystemEvent::Drop {
            from: 3,
            to: 5,
            reason: "r".into(),
        }
        .into_event();
        let Value::Object(fields) = event.value else {
            panic!()
        };
        assert!(fields.contains(&("count".into(), Value::UInt(3))));
    }
}
