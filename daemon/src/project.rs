//! Projections: the state rebuilt by replaying the log (event sourcing).
//!
//! [`State::apply`] folds one event into the state; the same function serves the daemon's
//! incremental projection, a replay from seq 1, and a replay from a snapshot, so the three
//! agree by construction (and `tests` checks it on random event sequences). What is kept:
//! - per sensor source: last value, its seq and time, count, and for numbers min/max/mean;
//! - per command name: the last command (value, seq, time) and a count;
//! - for the daemon itself: boots, recoveries (bytes and records cut, seq ranges lost), drops
//!   (seq ranges), clock steps — totals, plus the most recent [`HISTORY_MAX`] of each.
//!
//! **Serialized into snapshots with postcard: do not reorder fields** (bump
//! `snapshot::SNAPSHOT_VERSION` instead).

use std::collections::{BTreeMap, VecDeque};

use edgecap_storage::{Event, Kind, Value};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use crate::clock::{format_rfc3339_ms, Corrections};
use crate::json::to_json;
use crate::limits::{PROJECT_BATCH_EVENTS, SNAPSHOT_EVERY_EVENTS};
use crate::snapshot;
use edgecap_storage::Log;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

pub use crate::limits::{HISTORY_MAX, KEYS_MAX};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    pub last_value: Option<Value>,
    pub last_seq: u64,
    pub last_wall_ms: i64,
    pub last_mono_ms: u64,
    pub last_boot_id: [u8; 16],
    pub last_clock_synced: bool,
    pub count: u64,
    pub numeric_count: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub sum: f64,
}

impl SourceState {
    pub fn mean(&self) -> Option<f64> {
        (self.numeric_count > 0).then(|| self.sum / self.numeric_count as f64)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommandState {
    pub last_value: Option<Value>,
    pub last_seq: u64,
    pub last_wall_ms: i64,
    pub last_mono_ms: u64,
    pub last_boot_id: [u8; 16],
    pub last_clock_synced: bool,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    pub seq: u64,
    pub bytes_cut: u64,
    pub records_cut: u64,
    pub lost_ranges: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dropped {
    pub seq: u64,
    pub from_seq: u64,
    pub to_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClockStep {
    pub seq: u64,
    pub offset_ms: i64,
    pub boot_id: [u8; 16],
    pub mono_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DaemonState {
    pub boots: u64,
    pub last_start_seq: u64,
    pub last_version: Option<String>,
    pub recoveries_total: u64,
    pub recoveries: VecDeque<Recovery>,
    pub dropped_events_total: u64,
    pub drops: VecDeque<Dropped>,
    pub clock_steps_total: u64,
    pub clock_steps: VecDeque<ClockStep>,
}

/// The projection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Seq of the last event applied (0: none).
    pub seq: u64,
    pub events: u64,
    pub sources: BTreeMap<String, SourceState>,
    pub commands: BTreeMap<String, CommandState>,
    pub daemon: DaemonState,
    pub untracked_events: u64,
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Int(i) => Some(*i as f64),
        Value::UInt(u) => Some(*u as f64),
        Value::Float(f) if f.is_finite() => Some(*f),
        _ => None,
    }
}

fn field<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    match value {
        Value::Object(members) => members.iter().find(|(k, _)| k == name).map(|(_, v)| v),
        _ => None,
    }
}

fn field_u64(value: &Value, name: &str) -> u64 {
    match field(value, name) {
        Some(Value::UInt(u)) => *u,
        Some(Value::Int(i)) if *i >= 0 => *i as u64,
        _ => 0,
    }
}

/// The entry for `key`, created if there is room for one more key (at most `KEYS_MAX`).
fn bounded_entry<'a, T: Default>(map: &'a mut BTreeMap<String, T>, key: &str) -> Option<&'a mut T> {
    if !map.contains_key(key) && map.len() >= KEYS_MAX {
        return None;
    }
    Some(map.entry(key.to_string()).or_default())
}

fn push_bounded<T>(list: &mut VecDeque<T>, item: T) {
    if list.len() == HISTORY_MAX {
        list.pop_front();
    }
    list.push_back(item);
}

impl State {
    /// Folds one event in. Events must come in increasing seq order.
    pub fn apply(&mut self, event: &Event) {
        assert!(event.seq > self.seq, "events are applied in seq order");
        self.seq = event.seq;
        self.events += 1;
        match event.kind {
            Kind::Sensor => {
                let Some(s) = bounded_entry(&mut self.sources, &event.source) else {
                    self.untracked_events += 1;
                    return;
                };
                s.last_value = Some(event.value.clone());
                s.last_seq = event.seq;
                s.last_wall_ms = event.wall_ms;
                s.last_mono_ms = event.mono_ms;
                s.last_boot_id = event.boot_id;
                s.last_clock_synced = event.clock_synced;
                s.count += 1;
                if let Some(x) = number(&event.value) {
                    s.numeric_count += 1;
                    s.sum += x;
                    s.min = Some(s.min.map_or(x, |m| m.min(x)));
                    s.max = Some(s.max.map_or(x, |m| m.max(x)));
                }
            }
            Kind::Command => {
                let Some(c) = bounded_entry(&mut self.commands, &event.source) else {
                    self.untracked_events += 1;
                    return;
                };
                c.last_value = Some(event.value.clone());
                c.last_seq = event.seq;
                c.last_wall_ms = event.wall_ms;
                c.last_mono_ms = event.mono_ms;
                c.last_boot_id = event.boot_id;
                c.last_clock_synced = event.clock_synced;
                c.count += 1;
            }
            Kind::System => self.apply_system(event),
        }
    }

    fn apply_system(&mut self, event: &Event) {
        let d = &mut self.daemon;
        let what = match field(&event.value, "event") {
            Some(Value::String(s)) => s.as_str(),
            _ => return,
        };
        match what {
            "start" => {
                d.boots += 1;
                d.last_start_seq = event.seq;
                if let Some(Value::String(v)) = field(&event.value, "version") {
                    d.last_version = Some(v.clone());
                }
            }
            "recovery" => {
                d.recoveries_total += 1;
                let lost_ranges = match field(&event.value, "lost_ranges") {
                    Some(Value::Array(ranges)) => ranges
                        .iter()
                        .filter_map(|r| match r {
                            Value::Array(pair) if pair.len() == 2 => {
                                Some((number(&pair[0])? as u64, number(&pair[1])? as u64))
                            }
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                push_bounded(
                    &mut d.recoveries,
                    Recovery {
                        seq: event.seq,
                        bytes_cut: field_u64(&event.value, "bytes_cut"),
                        records_cut: field_u64(&event.value, "records_cut"),
                        lost_ranges,
                    },
                );
            }
            "drop" => {
                let from_seq = field_u64(&event.value, "from_seq");
                let to_seq = field_u64(&event.value, "to_seq");
                d.dropped_events_total += (to_seq + 1).saturating_sub(from_seq);
                push_bounded(
                    &mut d.drops,
                    Dropped {
                        seq: event.seq,
                        from_seq,
                        to_seq,
                    },
                );
            }
            "clock_step" => {
                d.clock_steps_total += 1;
                let offset_ms = match field(&event.value, "offset_ms") {
                    Some(Value::Int(i)) => *i,
                    Some(Value::UInt(u)) => *u as i64,
                    _ => 0,
                };
                push_bounded(
                    &mut d.clock_steps,
                    ClockStep {
                        seq: event.seq,
                        offset_ms,
                        boot_id: event.boot_id,
                        mono_ms: event.mono_ms,
                    },
                );
            }
            _ => {}
        }
    }

    /// Clock-step corrections known to this state.
    pub fn corrections(&self) -> Corrections {
        let mut c = Corrections::default();
        for step in &self.daemon.clock_steps {
            c.add(step.boot_id, step.mono_ms, step.offset_ms);
        }
        c
    }

    /// The documented, stable JSON form, with the clock steps this state knows of.
    pub fn to_json(&self) -> Json {
        self.to_json_with(&self.corrections())
    }

    /// The documented, stable JSON form (`edgecap state --json`). Times are corrected with
    /// `corrections` (steps *after* an event correct it, so callers pass the whole log's);
    /// `last_ts_trusted` is false when a time was captured with an unsynchronised clock and
    /// no later step corrected it.
    pub fn to_json_with(&self, corrections: &Corrections) -> Json {
        let value = |v: &Option<Value>| v.as_ref().map_or(Json::Null, to_json);
        let sources: serde_json::Map<String, Json> = self
            .sources
            .iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    json!({
                        "last_value": value(&s.last_value),
                        "last_seq": s.last_seq,
                        "last_ts": format_rfc3339_ms(corrections.correct(s.last_boot_id, s.last_mono_ms, s.last_wall_ms, s.last_clock_synced).0),
                        "last_ts_trusted": corrections.correct(s.last_boot_id, s.last_mono_ms, s.last_wall_ms, s.last_clock_synced).1,
                        "count": s.count,
                        "numeric_count": s.numeric_count,
                        "min": s.min,
                        "max": s.max,
                        "mean": s.mean(),
                    }),
                )
            })
            .collect();
        let commands: serde_json::Map<String, Json> = self
            .commands
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    json!({
                        "last_value": value(&c.last_value),
                        "last_seq": c.last_seq,
                        "last_ts": format_rfc3339_ms(corrections.correct(c.last_boot_id, c.last_mono_ms, c.last_wall_ms, c.last_clock_synced).0),
                        "last_ts_trusted": corrections.correct(c.last_boot_id, c.last_mono_ms, c.last_wall_ms, c.last_clock_synced).1,
                        "count": c.count,
                    }),
                )
            })
            .collect();
        let d = &self.daemon;
        json!({
            "seq": self.seq,
            "events": self.events,
            "sources": sources,
            "commands": commands,
            "daemon": {
                "boots": d.boots,
                "last_start_seq": d.last_start_seq,
                "version": d.last_version,
                "recoveries_total": d.recoveries_total,
                "recoveries": d.recoveries.iter().map(|r| json!({
                    "seq": r.seq, "bytes_cut": r.bytes_cut, "records_cut": r.records_cut,
                    "lost_ranges": r.lost_ranges,
                })).collect::<Vec<_>>(),
                "dropped_events_total": d.dropped_events_total,
                "drops": d.drops.iter().map(|x| json!({
                    "seq": x.seq, "from_seq": x.from_seq, "to_seq": x.to_seq,
                })).collect::<Vec<_>>(),
                "clock_steps_total": d.clock_steps_total,
                "clock_steps": d.clock_steps.iter().map(|c| json!({
                    "seq": c.seq, "offset_ms": c.offset_ms,
                })).collect::<Vec<_>>(),
            },
            "untracked_events": self.untracked_events,
        })
    }

    /// A readable table (`edgecap state`). Times are corrected for clock steps; a `?` marks
    /// one captured with an unsynchronised clock that no later step corrected.
    pub fn to_table(&self, corrections: &Corrections) -> String {
        use std::fmt::Write;
        let time = |boot, mono, wall, synced| {
            let (wall, trusted) = corrections.correct(boot, mono, wall, synced);
            format!(
                "{}{}",
                format_rfc3339_ms(wall),
                if trusted { " " } else { "?" }
            )
        };
        let mut out = String::new();
        let _ = writeln!(out, "state after seq {} ({} events)", self.seq, self.events);
        if !self.sources.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<24} {:>8} {:>10} {:>26}  {:>10} {:>10} {:>10}  last value",
                "SOURCE", "COUNT", "LAST SEQ", "LAST TIME", "MIN", "MAX", "MEAN"
            );
            let num = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.3}"));
            for (name, s) in &self.sources {
                let last = s.last_value.as_ref().map_or(Json::Null, to_json);
                let _ = writeln!(
                    out,
                    "{:<24} {:>8} {:>10} {:>26}  {:>10} {:>10} {:>10}  {}",
                    name,
                    s.count,
                    s.last_seq,
                    time(
                        s.last_boot_id,
                        s.last_mono_ms,
                        s.last_wall_ms,
                        s.last_clock_synced
                    ),
                    num(s.min),
                    num(s.max),
                    num(s.mean()),
                    last
                );
            }
        }
        if !self.commands.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<24} {:>8} {:>10} {:>26}  last command",
                "COMMAND", "COUNT", "LAST SEQ", "LAST TIME"
            );
            for (name, c) in &self.commands {
                let last = c.last_value.as_ref().map_or(Json::Null, to_json);
                let _ = writeln!(
                    out,
                    "{:<24} {:>8} {:>10} {:>26}  {}",
                    name,
                    c.count,
                    c.last_seq,
                    time(
                        c.last_boot_id,
                        c.last_mono_ms,
                        c.last_wall_ms,
                        c.last_clock_synced
                    ),
                    last
                );
            }
        }
        let d = &self.daemon;
        let _ = writeln!(
            out,
            "\ndaemon: {} boots, {} recoveries, {} events dropped, {} clock steps",
            d.boots, d.recoveries_total, d.dropped_events_total, d.clock_steps_total
        );
        for r in &d.recoveries {
            let _ = writeln!(
                out,
                "  recovery at seq {}: {} bytes / {} records cut, lost {:?}",
                r.seq, r.bytes_cut, r.records_cut, r.lost_ranges
            );
        }
        for x in &d.drops {
            let _ = writeln!(
                out,
                "  drop at seq {}: seqs {}..={} (disk budget)",
                x.seq, x.from_seq, x.to_seq
            );
        }
        for c in &d.clock_steps {
            let _ = writeln!(out, "  clock step at seq {}: {:+} ms", c.seq, c.offset_ms);
        }
        out
    }
}

/// The daemon's incremental projection: starts from the newest snapshot, folds in every
/// durable event, and writes a snapshot every `SNAPSHOT_EVERY_EVENTS` events.
pub async fn run(
    log: Log,
    dir: PathBuf,
    mut durable: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
    state: Arc<Mutex<State>>,
) {
    let start = {
        let dir = dir.clone();
        let target = log.durable_seq();
        tokio::task::spawn_blocking(move || snapshot::load_newest(&dir, target))
            .await
            .ok()
    };
    if let Some((Some(snapshot), _)) = start {
        *state.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }
    let mut last_snapshot = state.lock().unwrap_or_else(|e| e.into_inner()).seq;
    loop {
        let next = state.lock().unwrap_or_else(|e| e.into_inner()).seq + 1;
        let mut batch = Vec::with_capacity(PROJECT_BATCH_EVENTS);
        let mut reader = log.reader(next);
        for item in reader.by_ref().take(PROJECT_BATCH_EVENTS) {
            match item {
                Ok(event) => batch.push(event),
                Err(e) => tracing::warn!(error = %e, "projection skipped a corrupt record"),
            }
        }
        let caught_up = batch.len() < PROJECT_BATCH_EVENTS;
        let snapshot_due = {
            let mut current = state.lock().unwrap_or_else(|e| e.into_inner());
            for event in &batch {
                current.apply(event);
            }
            (current.seq / SNAPSHOT_EVERY_EVENTS > last_snapshot / SNAPSHOT_EVERY_EVENTS)
                .then(|| current.clone())
        };
        if let Some(snapshot) = snapshot_due {
            last_snapshot = snapshot.seq;
            let dir = dir.clone();
            let written =
                tokio::task::spawn_blocking(move || snapshot::write(&dir, &snapshot)).await;
            if let Ok(Err(e)) = written {
                tracing::warn!(error = %e, "cannot write a projection snapshot");
            }
        }
        if !caught_up {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = crate::wait_true(&mut shutdown) => return,
            changed = durable.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgecap_storage::SplitMix64;

    fn random_event(rng: &mut SplitMix64, seq: u64) -> Event {
        let kind = match rng.below(10) {
            0 => Kind::Command,
            1 => Kind::System,
            _ => Kind::Sensor,
        };
        let value = match kind {
            Kind::System => match rng.below(4) {
                0 => Value::Object(vec![("event".into(), Value::String("start".into()))]),
                1 => Value::Object(vec![
                    ("event".into(), Value::String("drop".into())),
                    ("from_seq".into(), Value::UInt(seq / 2)),
                    ("to_seq".into(), Value::UInt(seq / 2 + rng.below(5))),
                ]),
                2 => Value::Object(vec![
                    ("event".into(), Value::String("recovery".into())),
                    ("bytes_cut".into(), Value::UInt(rng.below(4096))),
                    ("records_cut".into(), Value::UInt(rng.below(3))),
                ]),
                _ => Value::Object(vec![
                    ("event".into(), Value::String("clock_step".into())),
                    (
                        "offset_ms".into(),
                        Value::Int(rng.below(100_000) as i64 - 50_000),
                    ),
                ]),
            },
            _ => match rng.below(5) {
                0 => Value::Null,
                1 => Value::String("on".into()),
                2 => Value::Int(rng.below(200) as i64 - 100),
                _ => Value::Float(rng.below(10_000) as f64 / 7.0),
            },
        };
        let mut event = Event::new(kind, &format!("s{}", rng.below(6)), value).unwrap();
        event.seq = seq;
        event.wall_ms = 1_700_000_000_000 + seq as i64 * 10;
        event
    }

    /// For random sequences: the incremental state equals a replay from scratch and a replay
    /// from a snapshot (postcard round trip) at every seq. Prints its seed on failure.
    #[test]
    fn incremental_equals_replay_and_snapshot_replay() {
        let base = std::env::var("EDGECAP_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x57a7e_u64);
        for run in 0..40u64 {
            let seed = base + run;
            let mut rng = SplitMix64::new(seed);
            let n = 1 + rng.below(200);
            let mut seq = 0;
            let events: Vec<Event> = (0..n)
                .map(|_| {
                    seq += 1 + rng.below(3); // gaps, as after drops
                    random_event(&mut rng, seq)
                })
                .collect();
            let mut incremental = State::default();
            for (i, event) in events.iter().enumerate() {
                incremental.apply(event);
                let mut replay = State::default();
                events[..=i].iter().for_each(|e| replay.apply(e));
                assert_eq!(
                    incremental, replay,
                    "seed {seed}: replay differs at seq {}",
                    event.seq
                );
                let cut = rng.below(i as u64 + 1) as usize;
                let mut at_cut = State::default();
                events[..cut].iter().for_each(|e| at_cut.apply(e));
                let bytes = postcard::to_stdvec(&at_cut).unwrap();
                let mut from_snapshot: State = postcard::from_bytes(&bytes).unwrap();
                events[cut..=i].iter().for_each(|e| from_snapshot.apply(e));
                assert_eq!(
                    incremental, from_snapshot,
                    "seed {seed}: snapshot at {cut} replay differs at seq {}",
                    event.seq
                );
            }
        }
    }
}
