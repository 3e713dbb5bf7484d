//! `edgecap run`: wires the log, the writer thread, the ingest socket and the forwarder, and
//! stops them in order when `shutdown` resolves: intake first, then forwarding (the cursor is
//! persisted), then the writer drains and syncs everything appended.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use edgecap_storage::{Log, RecoveryReport, SeqRange, Value};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::forward::{Forwarder, FORWARD_CURSOR};
use crate::ingest::{self, Ingest};
use crate::limits::{CLOCK_CHECK_INTERVAL_MS, CLOCK_STEP_THRESHOLD_MS, SHUTDOWN_TIMEOUT_MS};
use crate::notify;
use crate::project::State;
use crate::snapshot::{self, SNAPSHOT_EVERY_EVENTS};
use crate::status::Health;
use crate::system::{is_system, SystemEvent};
use crate::writer;

/// Why the daemon stops.
enum StopReason {
    /// SIGTERM/SIGINT (or the test's shutdown future): a clean stop, exit 0.
    Requested,
    /// A fault the process cannot repair (a failed sync, a cursor that cannot be written):
    /// exit 1, so that `Restart=` reopens the log and recovery runs.
    Fatal(String),
}

/// The running parts, in the order they are stopped.
struct Tasks {
    supervisor: JoinHandle<()>,
    ingest: JoinHandle<()>,
    clock_watch: JoinHandle<()>,
    projector: JoinHandle<()>,
    forwarder: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Runs the daemon until `shutdown` resolves or a fatal fault. Errors are fatal (exit 1).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let dir = config.storage.dir.clone();
    let options = config.storage.log_options(config.ingest.max_event_bytes);
    let (log, report) = tokio::task::spawn_blocking(move || Log::open(&dir, options))
        .await?
        .with_context(|| format!("opening the log in {}", config.storage.dir.display()))?;
    record_start(&log, &report, &config)?;

    let forwarded = log.cursor(FORWARD_CURSOR).unwrap_or(0);
    let health = Arc::new(Health::new(config.upstream.is_some(), forwarded));
    let (durable_tx, durable_rx) = watch::channel(log.durable_seq());
    let (fatal_tx, mut fatal_rx) = mpsc::channel(4);
    let (writer, writer_thread) = writer::spawn(
        log.clone(),
        config.storage.sync,
        Duration::from_millis(config.storage.sync_interval_ms),
        durable_tx,
        fatal_tx.clone(),
    );
    let listener = bind_socket(&config.ingest.socket, config.ingest.socket_mode_bits)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let tasks = start_tasks(
        &config,
        &log,
        &health,
        writer,
        durable_rx,
        listener,
        &shutdown_rx,
        fatal_tx,
    );
    notify::ready(&format!("capturing; next seq {}", log.appended_seq() + 1));
    tracing::info!(
        socket = %config.ingest.socket.display(),
        dir = %config.storage.dir.display(),
        next_seq = log.appended_seq() + 1,
        upstream = config.upstream.is_some(),
        "edgecap running"
    );

    let reason = tokio::select! {
        _ = shutdown => StopReason::Requested,
        Some(why) = fatal_rx.recv() => StopReason::Fatal(why),
    };
    if let StopReason::Fatal(why) = &reason {
        health.set_fatal(why.clone());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(SHUTDOWN_TIMEOUT_MS);
    tracing::info!("shutting down: stopping intake");
    notify::stopping();
    let _ = shutdown_tx.send(true);
    let all_stopped = stop_tasks(tasks, deadline).await;
    let writer_done = tokio::time::timeout_at(
        deadline,
        tokio::task::spawn_blocking(move || writer_thread.join()),
    )
    .await
    .is_ok();
    let reason = match fatal_rx.try_recv() {
        Ok(why) if matches!(reason, StopReason::Requested) => StopReason::Fatal(why),
        _ => reason,
    };
    finish(&config, &log, reason, all_stopped && writer_done).await
}

/// Starts every task of a running daemon.
#[allow(clippy::too_many_arguments)]
fn start_tasks(
    config: &Config,
    log: &Log,
    health: &Arc<Health>,
    writer: writer::WriterHandle,
    durable_rx: watch::Receiver<u64>,
    listener: UnixListener,
    shutdown_rx: &watch::Receiver<bool>,
    fatal: writer::Fatal,
) -> Tasks {
    let state = Arc::new(Mutex::new(State::default()));
    let projector = tokio::spawn(project(
        log.clone(),
        config.storage.dir.clone(),
        durable_rx.clone(),
        shutdown_rx.clone(),
        state.clone(),
    ));
    let clock_watch = tokio::spawn(watch_clock(writer.clone(), shutdown_rx.clone()));
    let ingest = tokio::spawn(ingest::serve(
        listener,
        Ingest {
            config: config.ingest.clone(),
            writer: writer.clone(),
            log: log.clone(),
            health: health.clone(),
            durable: durable_rx.clone(),
            state,
            upstream_bytes: upstream_bytes(config),
        },
        shutdown_rx.clone(),
    ));
    let (ping_tx, ping_rx) = mpsc::channel(1);
    let forwarder = config.upstream.clone().map(|upstream| {
        let forwarder = Forwarder {
            upstream,
            device_id: config.device_id.clone(),
            retry: config.retry.clone(),
            breaker: config.breaker.clone(),
            log: log.clone(),
            writer: writer.clone(),
            health: health.clone(),
            durable: durable_rx.clone(),
            event_bytes_max: config.ingest.max_event_bytes,
            pings: ping_rx,
            dir: config.storage.dir.clone(),
            fatal,
        };
        tokio::spawn(forwarder.run(shutdown_rx.clone()))
    });
    let supervisor = tokio::spawn(notify::supervise(
        log.clone(),
        health.clone(),
        writer,
        forwarder.is_some().then_some(ping_tx),
        shutdown_rx.clone(),
    ));
    Tasks {
        supervisor,
        ingest,
        clock_watch,
        projector,
        forwarder,
    }
}

/// How many bytes an event would take upstream, for ingest's refusal of events that would
/// be over the MQTT packet limit (whether or not `[upstream]` is configured now).
fn upstream_bytes(config: &Config) -> Arc<dyn Fn(&edgecap_storage::Event) -> usize + Send + Sync> {
    let device = config.device_id.clone();
    let prefix = config
        .upstream
        .as_ref()
        .map_or_else(|| "edgecap".to_string(), |u| u.topic_prefix.clone());
    Arc::new(move |event| {
        let (topic, payload) = crate::forward::encode_upstream(event, &device, &prefix);
        crate::forward::publish_bytes(&topic, &payload)
    })
}

/// Waits for every task in stop order until `deadline`, then aborts what is left; returns
/// whether all of them finished by themselves.
async fn stop_tasks(tasks: Tasks, deadline: tokio::time::Instant) -> bool {
    let mut all = true;
    let wait = |name: &'static str, task: JoinHandle<()>| {
        let abort = task.abort_handle();
        async move {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                tracing::error!(
                    task = name,
                    "did not stop within the shutdown bound; abandoned"
                );
                abort.abort();
                return false;
            }
            true
        }
    };
    all &= wait("supervisor", tasks.supervisor).await;
    all &= wait("ingest", tasks.ingest).await;
    all &= wait("clock watch", tasks.clock_watch).await;
    all &= wait("projection", tasks.projector).await;
    if let Some(task) = tasks.forwarder {
        let abort = task.abort_handle();
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "forwarder failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "forwarder panicked"),
            Ok(Ok(Ok(()))) => {}
            Err(_) => {
                tracing::error!(
                    task = "forwarder",
                    "did not stop within the shutdown bound; abandoned"
                );
                abort.abort();
                all = false;
            }
        }
    }
    all
}

/// The last step: a clean stop records `stop` and syncs; a fatal one stores nothing more
/// (the next start records the unclean shutdown) and fails.
async fn finish(
    config: &Config,
    log: &Log,
    reason: StopReason,
    all_stopped: bool,
) -> anyhow::Result<()> {
    if let StopReason::Fatal(why) = reason {
        anyhow::bail!("{why}");
    }
    if !all_stopped {
        anyhow::bail!("shutdown did not finish within {SHUTDOWN_TIMEOUT_MS} ms");
    }
    let durable = tokio::task::spawn_blocking({
        let log = log.clone();
        move || -> anyhow::Result<u64> {
            append_system(&log, SystemEvent::Stop.into_event())?;
            Ok(log.sync()?)
        }
    })
    .await??;
    let _ = std::fs::remove_file(&config.ingest.socket);
    tracing::info!(durable_seq = durable, "stopped cleanly");
    Ok(())
}

/// The daemon's incremental projection: starts from the newest snapshot, folds in every
/// durable event, and writes a snapshot every `SNAPSHOT_EVERY_EVENTS` events.
async fn project(
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
        let mut batch = Vec::with_capacity(1024);
        let mut reader = log.reader(next);
        for item in reader.by_ref().take(1024) {
            match item {
                Ok(event) => batch.push(event),
                Err(e) => tracing::warn!(error = %e, "projection skipped a corrupt record"),
            }
        }
        let caught_up = batch.len() < 1024;
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

/// Watches for wall-clock steps (NTP sync after boot on a Pi without RTC): when the offset
/// between the wall clock and the boot-time clock moves by more than
/// `CLOCK_STEP_THRESHOLD_MS`, stores a `system` clock_step event with the offset, so earlier
/// timestamps of this boot can be corrected.
async fn watch_clock(writer: writer::WriterHandle, mut shutdown: watch::Receiver<bool>) {
    let offset = || crate::clock::wall_ms() - crate::clock::boottime_ms() as i64;
    let mut last = offset();
    let mut tick = tokio::time::interval(Duration::from_millis(CLOCK_CHECK_INTERVAL_MS));
    loop {
        tokio::select! {
            _ = crate::wait_true(&mut shutdown) => return,
            _ = tick.tick() => {}
        }
        let now = offset();
        let step = now - last;
        if step.abs() > CLOCK_STEP_THRESHOLD_MS {
            tracing::info!(offset_ms = step, "wall clock stepped");
            let system = SystemEvent::ClockStep {
                offset_ms: step,
                synced: crate::clock::clock_synced(),
            };
            if let Ok(Err(e)) = writer.append(system.into_event()).await.await {
                tracing::error!(error = %e, "cannot record the clock step");
            }
        }
        last = now;
    }
}

/// Stores the `system` events of a start: the start itself and what recovery found.
fn record_start(log: &Log, report: &RecoveryReport, config: &Config) -> anyhow::Result<()> {
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

/// Most problems and lost ranges listed in one `recovery` event; the totals are always there.
const RECOVERY_LIST_MAX: usize = 32;
/// Longest problem sentence kept in a `recovery` event, in bytes.
const PROBLEM_CHARS_MAX: usize = 240;

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
fn append_system(log: &Log, event: edgecap_storage::Event) -> anyhow::Result<()> {
    match log.append(event) {
        Ok(_) => Ok(()),
        Err(error @ edgecap_storage::Error::Full { .. }) => {
            tracing::warn!(%error, "system event not stored: the log is full");
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// Binds the ingest socket: refuses if a live daemon answers there, removes a stale socket,
/// and never removes anything else found at that path (a regular file, a directory).
fn bind_socket(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
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
