//! systemd integration (`Type=notify`): `READY=1` once the log is open and the socket
//! listens, `STATUS=` lines with the durable seq, backlog and link state, and `WATCHDOG=1`
//! only from proof of life: each period the supervisor sends a ping through the writer
//! thread's queue and through the forwarder's event loop, and pings the watchdog only when
//! both answered in time. A writer stuck in `fdatasync` on a dying SD card, or a wedged
//! forwarder, therefore stops the pings and systemd restarts the service (`WatchdogSec=`).
//! Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op and the supervisor only waits
//! for shutdown; without a watchdog it sends STATUS= but pings no part.

use std::sync::Arc;
use std::time::Duration;

use edgecap_storage::Log;
use sd_notify::NotifyState;
use tokio::sync::{mpsc, oneshot, watch};

use crate::status::Health;
use crate::writer::WriterHandle;

/// STATUS= refresh period when no watchdog is configured.
const STATUS_INTERVAL: Duration = Duration::from_millis(crate::limits::STATUS_INTERVAL_MS);

/// A request for proof of life: answer on the sender.
pub type Ping = oneshot::Sender<()>;

/// Tells systemd the daemon is ready.
pub fn ready(status: &str) {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]) {
        tracing::warn!(error = %e, "sd_notify READY failed");
    }
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// Sends STATUS= and, when every part is alive, WATCHDOG=1, until shutdown.
pub async fn supervise(
    log: Log,
    health: Arc<Health>,
    writer: WriterHandle,
    forwarder: Option<mpsc::Sender<Ping>>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Outside systemd every notification is a no-op: no timer, no pings, no wake-ups.
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        crate::wait_true(&mut shutdown).await;
        return;
    }
    let watchdog = sd_notify::watchdog_enabled();
    // Ping at half the watchdog period (sd_watchdog_enabled(3)); a part must answer within it.
    let floor = Duration::from_millis(crate::limits::WATCHDOG_PERIOD_MS_MIN);
    let period = watchdog.map_or(STATUS_INTERVAL, |d| (d / 2).max(floor));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = crate::wait_true(&mut shutdown) => return,
            _ = tick.tick() => {}
        }
        // Each part must answer within the period; a full queue counts as no answer. A stop
        // never waits for an answer. Without a watchdog nobody acts on the answers: the parts
        // are not woken for them (idle wake-ups, issue 11).
        let answers = async {
            if watchdog.is_none() {
                return (true, true);
            }
            let writer_alive = tokio::time::timeout(period, async { writer.ping().await.await })
                .await
                .is_ok_and(|answer| answer.is_ok());
            let forwarder_alive = match &forwarder {
                None => true,
                Some(tx) => {
                    let (reply, rx) = oneshot::channel();
                    tx.try_send(reply).is_ok()
                        && tokio::time::timeout(period, rx)
                            .await
                            .is_ok_and(|answer| answer.is_ok())
                }
            };
            (writer_alive, forwarder_alive)
        };
        let (writer_alive, forwarder_alive) = tokio::select! {
            _ = crate::wait_true(&mut shutdown) => return,
            answers = answers => answers,
        };
        let stats = log.stats();
        // A daemon that cannot store is not alive, whatever its tasks answer.
        let storing = stats.poisoned.is_none() && health.fatal().is_none();
        let writer_alive = writer_alive && storing;
        let status = format!(
            "durable seq {}, backlog {}, link {}, breaker {}{}",
            stats.durable_seq,
            health.to_json(&log)["backlog"],
            if health.connected() { "up" } else { "down" },
            health.breaker().as_str(),
            if writer_alive && forwarder_alive {
                ""
            } else {
                ", NOT RESPONDING"
            }
        );
        let _ = sd_notify::notify(&[NotifyState::Status(&status)]);
        if watchdog.is_some() {
            if writer_alive && forwarder_alive {
                let _ = sd_notify::notify(&[NotifyState::Watchdog]);
            } else {
                tracing::error!(
                    writer_alive,
                    forwarder_alive,
                    "not alive: withholding the watchdog ping"
                );
            }
        }
    }
}
