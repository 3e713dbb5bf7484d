//! What a start stores: the `start` system event and, after an unclean stop or a recovery
//! problem, a bounded `recovery` event; and how the daemon appends its own events directly.

use edgecap_storage::{Log, RecoveryReport, SeqRange, Value};

use crate::config::Config;
use crate::limits::{PROBLEM_CHARS_MAX, RECOVERY_LIST_MAX};
use crate::system::{is_system, SystemEvent};

/// Stores the `system` events of a start: the start itself and what recovery found.
pub fn record_start(log: &Log, report: &RecoveryReport, config: &Config) -> anyhow::Result<()> {
    for problem in report.problems() {
        tracing::warn!(%problem, "recovery");
    }
    for warning in &report.warnings {
        tracing::warn!(%warning, "data directory");
    }
    // A clean stop leaves a `stop` event last; anything else means the previous run was
    // killed or lost power, which is recorded as a recovery even when no byte was cut.
    let last = log.durable_seq();
    let unclean = last > 0
        && !log
            .reader(last)
            .next()
            .and_then(|e| e.ok())
            .is_some_and(|e| is_system(&e, "stop"));
    let boot = crate::clock::boot_id_hex(&crate::clock::boot_id());
    let start = SystemEvent::Start {
        version: env!("CARGO_PKG_VERSION").into(),
        boot_id: boot,
        device: config.device_id.clone(),
    };
    append_system(log, start.into_event())?;
    // Gaps, the front gap and file-system warnings hold at every start once true: they ride
    // along in a recovery event but never cause one (each start would store another). A new
    // gap always comes with a problem (a cut, a quarantine) or an unclean stop.
    let noteworthy = unclean || !report.is_clean();
    if noteworthy {
        let limit = log.options().record_bytes_max;
        append_system(log, bounded_recovery_event(report, unclean, limit))?;
    }
    log.sync()?;
    Ok(())
}

/// The `recovery` event, shrunk until it fits the record limit: the lists are halved (their
/// totals stay), then dropped. A report that cannot be stored must never stop a start.
fn bounded_recovery_event(
    report: &RecoveryReport,
    unclean: bool,
    limit: usize,
) -> edgecap_storage::Event {
    let mut keep = RECOVERY_LIST_MAX;
    loop {
        let event = recovery_event(report, unclean, keep);
        let fits = postcard::to_stdvec(&event).is_ok_and(|bytes| bytes.len() <= limit);
        if fits || keep == 0 {
            return event;
        }
        keep /= 2;
    }
}

fn recovery_event(report: &RecoveryReport, unclean: bool, keep: usize) -> edgecap_storage::Event {
    let cut = report.tail_cut.as_ref();
    let range = |r: SeqRange| Value::Array(vec![Value::UInt(r.from), Value::UInt(r.to)]);
    let lost: Vec<SeqRange> = report
        .damaged
        .iter()
        .filter_map(|d| d.lost)
        .chain(report.quarantined.iter().filter_map(|q| q.lost))
        .collect();
    let problems: Vec<String> = report
        .problems()
        .into_iter()
        .chain(report.warnings.clone())
        .collect();
    let shorten = |p: &String| {
        let mut end = p.len().min(PROBLEM_CHARS_MAX);
        while !p.is_char_boundary(end) {
            end -= 1;
        }
        Value::String(p[..end].to_string())
    };
    let uint = |n: usize| Value::UInt(n as u64);
    let mut fields = vec![
        ("unclean_shutdown".into(), Value::Bool(unclean)),
        ("bytes_cut".into(), Value::UInt(cut.map_or(0, |c| c.bytes))),
        (
            "records_cut".into(),
            Value::UInt(cut.map_or(0, |c| c.records)),
        ),
        (
            "lost_ranges".into(),
            Value::Array(lost.iter().take(keep).map(|&r| range(r)).collect()),
        ),
        ("lost_ranges_total".into(), uint(lost.len())),
        (
            "problems".into(),
            Value::Array(problems.iter().take(keep).map(shorten).collect()),
        ),
        ("problems_total".into(), uint(problems.len())),
        ("gaps_total".into(), uint(report.gaps.len())),
        ("pages_restored".into(), uint(report.tail_restored.len())),
    ];
    if let Some(front) = report.front_gap {
        fields.push(("front_gap".into(), range(front)));
    }
    if let Some(kept_in) = cut.and_then(|c| c.kept_in.clone()) {
        fields.push(("cut_kept_in".into(), Value::String(kept_in)));
    }
    SystemEvent::Recovery(fields).into_event()
}

/// Appends one of the daemon's own `system` events (start, recovery, stop). With
/// `on_full = "reject"` and the budget used up, the log refuses it like any event: that is
/// logged and the daemon goes on, so a full log still starts, serves status and reads, and
/// stops with exit 0. Any other error is fatal. A `stop` refused this way makes the next
/// start record a `recovery` (unclean shutdown) once there is room: the history then says
/// less than it knows, never more.
pub fn append_system(log: &Log, event: edgecap_storage::Event) -> anyhow::Result<()> {
    match log.append(event) {
        Ok(_) => Ok(()),
        Err(error @ edgecap_storage::Error::Full { .. }) => {
            tracing::warn!(%error, "system event not stored: the log is full");
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgecap_storage::DamageReport;

    /// A report with thousands of damaged places: the event must still fit a small record
    /// limit, or every start would fail to store it.
    fn huge_report() -> RecoveryReport {
        RecoveryReport {
            damaged: (0..5000)
                .map(|i| DamageReport {
                    segment: format!("{:020}.seg", i * 100 + 1),
                    offset: 4096,
                    lost: Some(SeqRange {
                        from: i * 100 + 1,
                        to: i * 100 + 50,
                    }),
                    reason: "CRC mismatch ".repeat(40),
                })
                .collect(),
            front_gap: Some(SeqRange { from: 1, to: 9 }),
            ..RecoveryReport::default()
        }
    }

    #[test]
    fn recovery_event_of_a_huge_report_fits_the_record_limit() {
        for limit in [256, 1024, 13_312] {
            let event = bounded_recovery_event(&huge_report(), true, limit);
            let bytes = postcard::to_stdvec(&event).unwrap().len();
            assert!(bytes <= limit, "{bytes} bytes > limit {limit}");
            let Value::Object(fields) = &event.value else {
                panic!("not an object")
            };
            let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            assert_eq!(get("lost_ranges_total"), Some(Value::UInt(5000)));
            assert_eq!(get("problems_total"), Some(Value::UInt(5000)));
            assert_eq!(
                get("front_gap"),
                Some(Value::Array(vec![Value::UInt(1), Value::UInt(9)]))
            );
        }
    }
}
