//! Fault injection for the watchdog tests: `EDGECAP_FAULT_WEDGE=writer:MS` (or
//! `forwarder:MS`) makes that part hang forever once `MS` milliseconds have passed since start,
//! as a writer stuck in `fdatasync` on a dying card would. Compiled only with the
//! `fault-injection` feature, which the device build (`--no-default-features`) leaves out.

use std::time::{Duration, Instant};

/// A hang scheduled for one part of the daemon.
#[derive(Debug, Clone, Copy)]
pub struct Wedge {
    at: Option<Instant>,
}

impl Wedge {
    /// Reads `EDGECAP_FAULT_WEDGE` for `part`.
    pub fn from_env(part: &str) -> Wedge {
        #[cfg(feature = "fault-injection")]
        {
            let at = std::env::var("EDGECAP_FAULT_WEDGE").ok().and_then(|spec| {
                let (name, ms) = spec.split_once(':')?;
                let ms: u64 = ms.parse().ok()?;
                (name == part).then(|| Instant::now() + Duration::from_millis(ms))
            });
            if at.is_some() {
                tracing::warn!(
                    part,
                    "fault injection: this part will hang (EDGECAP_FAULT_WEDGE)"
                );
            }
            Wedge { at }
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            let _ = part;
            Wedge { at: None }
        }
    }

    fn due(&self) -> bool {
        self.at.is_some_and(|at| Instant::now() >= at)
    }

    /// Blocks the calling thread forever once due.
    pub fn maybe_block(&self) {
        while self.due() {
            std::thread::park_timeout(Duration::from_secs(3600));
        }
    }

    /// Never returns once due.
    pub async fn maybe_block_async(&self) {
        if self.due() {
            std::future::pending::<()>().await;
        }
    }
}
