//! `edgecap run`: wires the log, the writer thread, the ingest socket and the forwarder, and
//! stops them in order when `shutdown` resolves: intake first, then forwarding (the cursor is
//! persisted), then the writer drains and syncs everything appended.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use edgecap_storage::{Log, RecoveryReport, Value};
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::forward::{Forwarder, FORWARD_CURSOR};
use crate::ingest::{self, Ingest};
use crate::status::Health;
use crate::writer::{self, system_event};

/// Runs the daemon until `shutdown` resolves. Errors are fatal (exit 1).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let dir = config.storage.dir.clone();
    let options = config.storage.log_options();
    let (log, report) = tokio::task::spawn_blocking(move || Log::open(&dir, options))
        .await?
        .with_context(|| format!("opening the log in {}", config.storage.dir.display()))?;
    record_start(&log, &report, &config)?;

    let forwarded = log.cursor(FORWARD_CURSOR).unwrap_or(0);
    let health = Arc::new(Health::new(config.upstream.is_some(), forwarded));
    let (durable_tx, durable_rx) = watch::channel(log.durable_seq());
    let (writer, writer_thread) = writer::spawn(
        log.clone(),
        config.storage.sync,
        Duration::from_millis(config.storage.sync_interval_ms),
        durable_tx,
    );
    let listener = bind_socket(&config.ingest.socket, config.ingest.socket_mode_bits)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let ingest_task = tokio::spawn(ingest::serve(
        listener,
        Ingest {
            config: config.ingest.clone(),
            writer: writer.clone(),
            log: log.clone(),
            health: health.clone(),
        },
        shutdown_rx.clone(),
    ));
    let forward_task = config.upstream.clone().map(|upstream| {
        let forwarder = Forwarder {
            upstream,
            device_id: config.device_id.clone(),
            retry: config.retry.clone(),
            breaker: config.breaker.clone(),
            log: log.clone(),
            writer: writer.clone(),
            health: health.clone(),
            durable: durable_rx.clone(),
        };
        tokio::spawn(forwarder.run(shutdown_rx.clone()))
    });
    drop(writer);
    tracing::info!(
        socket = %config.ingest.socket.display(),
        dir = %config.storage.dir.display(),
        next_seq = log.appended_seq() + 1,
        upstream = config.upstream.is_some(),
        "edgecap running"
    );

    shutdown.await;
    tracing::info!("shutting down: stopping intake");
    let _ = shutdown_tx.send(true);
    let _ = ingest_task.await;
    if let Some(task) = forward_task {
        match task.await {
            Ok(Err(e)) => tracing::error!(error = %e, "forwarder failed"),
            Err(e) => tracing::error!(error = %e, "forwarder panicked"),
            Ok(Ok(())) => {}
        }
    }
    tokio::task::spawn_blocking(move || writer_thread.join()).await?;
    let durable = tokio::task::spawn_blocking({
        let log = log.clone();
        move || log.sync()
    })
    .await??;
    let _ = std::fs::remove_file(&config.ingest.socket);
    tracing::info!(durable_seq = durable, "stopped cleanly");
    Ok(())
}

/// Stores the `system` events of a start: the start itself and what recovery found.
fn record_start(log: &Log, report: &RecoveryReport, config: &Config) -> anyhow::Result<()> {
    for problem in report.problems() {
        tracing::warn!(%problem, "recovery");
    }
    let boot = crate::clock::boot_id_hex(&crate::clock::boot_id());
    log.append(system_event(
        "edgecap",
        Value::Object(vec![
            ("event".into(), Value::String("start".into())),
            (
                "version".into(),
                Value::String(env!("CARGO_PKG_VERSION").into()),
            ),
            ("boot_id".into(), Value::String(boot)),
            ("device".into(), Value::String(config.device_id.clone())),
        ]),
    ))?;
    if !report.is_clean() || !report.gaps.is_empty() {
        let cut = report.tail_cut.as_ref();
        let lost: Vec<Value> = report
            .damaged
            .iter()
            .filter_map(|d| d.lost)
            .chain(report.quarantined.iter().filter_map(|q| q.lost))
            .map(|r| Value::Array(vec![Value::UInt(r.from), Value::UInt(r.to)]))
            .collect();
        log.append(system_event(
            "edgecap",
            Value::Object(vec![
                ("event".into(), Value::String("recovery".into())),
                ("bytes_cut".into(), Value::UInt(cut.map_or(0, |c| c.bytes))),
                (
                    "records_cut".into(),
                    Value::UInt(cut.map_or(0, |c| c.records)),
                ),
                ("lost_ranges".into(), Value::Array(lost)),
                (
                    "problems".into(),
                    Value::Array(report.problems().into_iter().map(Value::String).collect()),
                ),
            ]),
        ))?;
    }
    log.sync()?;
    Ok(())
}

/// Binds the ingest socket: refuses if a live daemon answers there, removes a stale file.
fn bind_socket(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    if path.exists() {
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
