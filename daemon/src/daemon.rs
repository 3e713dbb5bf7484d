//! `edgecap run`: wires the log, the writer thread, the ingest socket and the forwarder, and
//! stops them in order when `shutdown` resolves: intake first, then forwarding (the cursor is
//! persisted), then the writer drains and syncs everything appended.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use edgecap_storage::Log;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::forward::{Forwarder, FORWARD_CURSOR};
use crate::ingest::{self, Ingest};
use crate::limits::{FATAL_QUEUE_MAX, SHUTDOWN_TIMEOUT_MS};
use crate::notify;
use crate::project::{self, State};
use crate::start::{append_system, record_start};
use crate::status::Health;
use crate::system::SystemEvent;
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
    let (fatal_tx, mut fatal_rx) = mpsc::channel(FATAL_QUEUE_MAX);
    let (writer, writer_thread) = writer::spawn(
        log.clone(),
        config.storage.sync,
        Duration::from_millis(config.storage.sync_interval_ms),
        durable_tx,
        fatal_tx.clone(),
    );
    let listener = ingest::bind_socket(&config.ingest.socket, config.ingest.socket_mode_bits)?;
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
    let finished = finish(&config, &log, reason, all_stopped && writer_done);
    match tokio::time::timeout_at(deadline, finished).await {
        Ok(result) => result,
        Err(_) => anyhow::bail!(
            "shutdown did not finish within {SHUTDOWN_TIMEOUT_MS} ms (the final sync)"
        ),
    }
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
    let projector = tokio::spawn(project::run(
        log.clone(),
        config.storage.dir.clone(),
        durable_rx.clone(),
        shutdown_rx.clone(),
        state.clone(),
    ));
    let clock_watch = tokio::spawn(crate::clock::watch_steps(
        writer.clone(),
        shutdown_rx.clone(),
    ));
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
    let (ping_tx, ping_rx) = mpsc::channel(crate::limits::PING_QUEUE_MAX);
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
