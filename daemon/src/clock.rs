//! Time on a device without a real-time clock.
//!
//! Every event carries the wall clock (Unix ms), the monotonic time since boot
//! (`CLOCK_BOOTTIME`, which also counts suspend) and the boot identity
//! (`/proc/sys/kernel/random/boot_id`), plus whether the kernel considered the wall clock
//! synchronised (`adjtimex`: not `TIME_ERROR`) at capture. Together they let a reader order
//! events within a boot and correct wall times captured before NTP stepped the clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::limits::{CLOCK_CHECK_FALLBACK_MS, CLOCK_CHECK_INTERVAL_MS, CLOCK_STEP_THRESHOLD_MS};
use crate::system::SystemEvent;
use crate::writer;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A capture stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub wall_ms: i64,
    pub mono_ms: u64,
    pub clock_synced: bool,
}

/// Now.
pub fn now() -> Stamp {
    Stamp {
        wall_ms: wall_ms(),
        mono_ms: boottime_ms(),
        clock_synced: clock_synced(),
    }
}

/// Wall clock, Unix milliseconds.
pub fn wall_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// `CLOCK_BOOTTIME` in milliseconds.
pub fn boottime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    assert_eq!(
        rc, 0,
        "CLOCK_BOOTTIME is available on every Linux we support"
    );
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Whether the kernel says the clock is synchronised (NTP discipline active).
pub fn clock_synced() -> bool {
    // SAFETY: adjtimex with modes = 0 only reads; the struct is ours and zeroed.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    state >= 0 && state != libc::TIME_ERROR
}

/// The boot identity, 16 bytes (all zero when unavailable, e.g. outside Linux procfs); read
/// once per process.
pub fn boot_id() -> [u8; 16] {
    static BOOT_ID: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    *BOOT_ID.get_or_init(read_boot_id)
}

fn read_boot_id() -> [u8; 16] {
    let mut out = [0u8; 16];
    if let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        let hex: Vec<u8> = text.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
        if hex.len() == 32 {
            for (i, pair) in hex.chunks(2).enumerate() {
                let s = std::str::from_utf8(pair).unwrap_or("00");
                out[i] = u8::from_str_radix(s, 16).unwrap_or(0);
            }
        }
    }
    out
}

/// Boot id as 32 hex digits.
pub fn boot_id_hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Clock steps seen in the log, to correct wall times captured before a step.
///
/// A step is stored as a `system` event `{"event":"clock_step","offset_ms":O}` with the boot
/// id and monotonic time of the moment it was seen. Every event of the same boot with a
/// smaller monotonic time was captured on the old clock: its corrected time is its wall time
/// plus the offsets of all later steps of that boot. An event is *trusted* when it was captured
/// with a synchronised clock or a later step corrected it.
#[derive(Debug, Clone, Default)]
pub struct Corrections {
    steps: Vec<([u8; 16], u64, i64)>,
}

impl Corrections {
    /// Records one step.
    pub fn add(&mut self, boot_id: [u8; 16], mono_ms: u64, offset_ms: i64) {
        self.steps.push((boot_id, mono_ms, offset_ms));
    }

    /// Records `event` if it is a clock step.
    pub fn observe(&mut self, event: &edgecap_storage::Event) {
        use edgecap_storage::{Kind, Value};
        if event.kind != Kind::System {
            return;
        }
        let Value::Object(members) = &event.value else {
            return;
        };
        let is_step = members
            .iter()
            .any(|(k, v)| k == "event" && *v == Value::String("clock_step".into()));
        if !is_step {
            return;
        }
        let offset = members.iter().find_map(|(k, v)| match (k.as_str(), v) {
            ("offset_ms", Value::Int(i)) => Some(*i),
            ("offset_ms", Value::UInt(u)) => Some(*u as i64),
            _ => None,
        });
        if let Some(offset) = offset {
            self.add(event.boot_id, event.mono_ms, offset);
        }
    }

    /// (corrected wall ms, trusted) of a capture.
    pub fn correct(
        &self,
        boot_id: [u8; 16],
        mono_ms: u64,
        wall_ms: i64,
        synced: bool,
    ) -> (i64, bool) {
        let mut corrected = wall_ms;
        let mut stepped = false;
        for &(boot, at, offset) in &self.steps {
            if boot == boot_id && at > mono_ms {
                corrected = corrected.saturating_add(offset);
                stepped = true;
            }
        }
        (corrected, synced || stepped)
    }
}

/// Unix ms → `2026-11-26T12:00:00.123Z`.
pub fn format_rfc3339_ms(wall_ms: i64) -> String {
    let nanos = i128::from(wall_ms) * 1_000_000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => wall_ms.to_string(),
    }
}

/// RFC 3339 text → Unix ms, or `None` when it does not parse.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Watches for wall-clock steps (NTP sync after boot on a Pi without RTC): when the offset
/// between the wall clock and the boot-time clock moves by more than
/// `CLOCK_STEP_THRESHOLD_MS`, stores a `system` clock_step event with the offset, so earlier
/// timestamps of this boot can be corrected. The kernel says when the clock is set (a timerfd
/// with `TFD_TIMER_CANCEL_ON_SET`), so an idle daemon is not woken to look; a slow check every
/// `CLOCK_CHECK_FALLBACK_MS` stays as a backstop (every `CLOCK_CHECK_INTERVAL_MS` where no
/// timerfd can be made).
pub async fn watch_steps(writer: writer::WriterHandle, mut shutdown: watch::Receiver<bool>) {
    let offset = || crate::clock::wall_ms() - crate::clock::boottime_ms() as i64;
    let mut set_watch = ClockSetWatch::new()
        .inspect_err(|e| tracing::warn!(error = %e, "no timerfd for clock steps; polling"))
        .ok();
    // Read after arming: a clock set in between is seen by the next comparison.
    let mut last = offset();
    let period = match set_watch {
        Some(_) => CLOCK_CHECK_FALLBACK_MS,
        None => CLOCK_CHECK_INTERVAL_MS,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(period));
    loop {
        tokio::select! {
            _ = crate::wait_true(&mut shutdown) => return,
            _ = tick.tick() => {}
            set = wait_clock_set(set_watch.as_ref()) => {
                if let Err(e) = set {
                    // A watch that fails once would fail at once every time: poll instead.
                    tracing::warn!(error = %e, "clock-set watch failed; polling every {CLOCK_CHECK_INTERVAL_MS} ms");
                    set_watch = None;
                    tick = tokio::time::interval(Duration::from_millis(CLOCK_CHECK_INTERVAL_MS));
                }
            }
        }
        let now = offset();
        let step = now - last;
        if step.abs() > CLOCK_STEP_THRESHOLD_MS {
            record_step(&writer, step).await;
        }
        last = now;
    }
}

async fn record_step(writer: &writer::WriterHandle, step: i64) {
    tracing::info!(offset_ms = step, "wall clock stepped");
    let system = SystemEvent::ClockStep {
        offset_ms: step,
        synced: crate::clock::clock_synced(),
    };
    if let Ok(Err(e)) = writer.append(system.into_event()).await.await {
        tracing::error!(error = %e, "cannot record the clock step");
    }
}

async fn wait_clock_set(watch: Option<&ClockSetWatch>) -> std::io::Result<()> {
    match watch {
        Some(watch) => watch.wait().await,
        None => std::future::pending().await,
    }
}

/// A `CLOCK_REALTIME` timerfd armed for a far-off absolute time with `TFD_TIMER_CANCEL_ON_SET`:
/// reading it fails with `ECANCELED` as soon as anyone sets the wall clock (timerfd_create(2)).
struct ClockSetWatch {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

impl ClockSetWatch {
    fn new() -> std::io::Result<ClockSetWatch> {
        use std::os::fd::FromRawFd as _;
        // SAFETY: timerfd_create(2) has no memory arguments; a valid fd is owned from here on.
        let raw = unsafe {
            libc::timerfd_create(libc::CLOCK_REALTIME, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        arm_far_off(&fd)?;
        // SAFETY: the OwnedFd is moved in and closed only when the AsyncFd drops it, so the
        // descriptor stays open and the same for the AsyncFd's whole life.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(fd) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(ClockSetWatch { fd })
    }

    /// Returns when the wall clock was set (and re-arms), or on an error.
    async fn wait(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd as _;
        loop {
            let mut ready = self.fd.readable().await?;
            let read = ready.try_io(|fd| {
                let mut expirations = [0u8; 8];
                // SAFETY: reads at most 8 bytes into a buffer of 8.
                let n = unsafe { libc::read(fd.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
                if n < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
            match read {
                Err(_would_block) => continue,
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ECANCELED) => {
                    arm_far_off(self.fd.get_ref())?;
                    return Ok(());
                }
                // The far-off time came (ten years of uptime): re-arm.
                Ok(Ok(())) => arm_far_off(self.fd.get_ref())?,
                Ok(Err(e)) => return Err(e),
            }
        }
    }
}

/// Arms `fd` for ten years from now (absolute, cancelled when the clock is set).
fn arm_far_off(fd: &std::os::fd::OwnedFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let now_secs = crate::clock::wall_ms().div_euclid(1000);
    let far = now_secs.saturating_add(10 * 365 * 86_400);
    // 32-bit time_t (armv7/armv6 glibc) ends in 2038: the furthest it can say.
    let far = libc::time_t::try_from(far).unwrap_or(libc::time_t::MAX);
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: far,
            tv_nsec: 0,
        },
    };
    let flags = libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET;
    // SAFETY: `spec` outlives the call; a null old-value pointer is allowed.
    let rc = unsafe { libc::timerfd_settime(fd.as_raw_fd(), flags, &spec, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clock_set_watch_arms_and_waits_without_firing() {
        let watch = ClockSetWatch::new().expect("a timerfd");
        let waited = tokio::time::timeout(Duration::from_millis(50), watch.wait()).await;
        assert!(
            waited.is_err(),
            "the watch fired without a clock set: {waited:?}"
        );
    }

    #[test]
    fn rfc3339_round_trip() {
        let ms = parse_rfc3339_ms("2026-11-26T12:00:00.123Z").unwrap();
        assert_eq!(format_rfc3339_ms(ms), "2026-11-26T12:00:00.123Z");
        assert_eq!(parse_rfc3339_ms("2026-11-26T13:00:00.123+01:00"), Some(ms));
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }
}
