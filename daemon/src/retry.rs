//! Reconnect policy: exponential backoff with jitter, behind a circuit breaker.
//!
//! Backoff: attempt n (from 0) waits a random time in `[d/2, d]` where
//! `d = min(initial * 2^n, max)` ("equal jitter": never zero, so a fleet that lost its broker
//! at once does not reconnect in lock-step, and never longer than the cap).
//!
//! Breaker: `Closed` counts consecutive failed attempts; at `failure_threshold` it turns
//! `Open` and no attempt is made for `open_secs`; then `HalfOpen` lets exactly one probe
//! through: success → `Closed` (counters reset), failure → `Open` again. Every transition is a
//! `tracing` event. Time is passed in (`tokio::time::Instant`), so tests drive it with tokio's
//! paused clock.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::config::{BreakerConfig, RetryConfig};

/// Exponential backoff with equal jitter, capped.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    attempt: u32,
}

impl Backoff {
    pub fn new(config: &RetryConfig) -> Backoff {
        Backoff {
            initial_ms: config.initial_backoff_ms,
            max_ms: config.max_backoff_ms,
            attempt: 0,
        }
    }

    /// The cap for the current attempt, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u64.checked_shl(self.attempt.min(32)).unwrap_or(u64::MAX);
        Duration::from_millis(self.initial_ms.saturating_mul(factor).min(self.max_ms))
    }

    /// The next delay (and count the attempt).
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling().as_millis() as u64;
        self.attempt = self.attempt.saturating_add(1);
        let low = ceiling / 2;
        Duration::from_millis(rand::thread_rng().gen_range(low..=ceiling.max(low)))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Breaker states, as shown in `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// The circuit breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: BreakerState,
    failures: u32,
    threshold: u32,
    open_for: Duration,
    opened_at: Option<Instant>,
}

impl Breaker {
    pub fn new(config: &BreakerConfig) -> Breaker {
        Breaker {
            state: BreakerState::Closed,
            failures: 0,
            threshold: config.failure_threshold,
            open_for: config.open_duration(),
            opened_at: None,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Consecutive failures counted so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// When an attempt may be made: now (Closed, HalfOpen) or when the open period ends.
    pub fn next_attempt_at(&self, now: Instant) -> Instant {
        match (self.state, self.opened_at) {
            (BreakerState::Open, Some(at)) => at + self.open_for,
            _ => now,
        }
    }

    /// Called just before an attempt: an Open breaker whose period is over becomes HalfOpen.
    /// Returns whether the attempt may go ahead.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed | BreakerState::HalfOpen => true,
            BreakerState::Open => {
                if now >= self.next_attempt_at(now) {
                    self.transition(BreakerState::HalfOpen);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// A successful connection.
    pub fn on_success(&mut self) {
        self.failures = 0;
        self.opened_at = None;
        if self.state != BreakerState::Closed {
            self.transition(BreakerState::Closed);
        }
    }

    /// A failed attempt (or a connection lost).
    pub fn on_failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        match self.state {
            BreakerState::HalfOpen => self.open(now),
            BreakerState::Closed if self.failures >= self.threshold => self.open(now),
            _ => {}
        }
    }

    fn open(&mut self, now: Instant) {
        self.opened_at = Some(now);
        self.transition(BreakerState::Open);
    }

    fn transition(&mut self, to: BreakerState) {
        tracing::info!(
            from = self.state.as_str(),
            to = to.as_str(),
            failures = self.failures,
            "circuit breaker"
        );
        self.state = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(&BreakerConfig {
            failure_threshold: 3,
            open_secs: 30,
        })
    }

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let mut b = Backoff::new(&RetryConfig {
            initial_backoff_ms: 200,
            max_backoff_ms: 1000,
        });
        let ceilings: Vec<u64> = (0..6)
            .map(|_| {
                let ceiling = b.ceiling().as_millis() as u64;
                let d = b.next_delay().as_millis() as u64;
                assert!(
                    d >= ceiling / 2 && d <= ceiling,
                    "{d} outside [{}, {ceiling}]",
                    ceiling / 2
                );
                ceiling
            })
            .collect();
        assert_eq!(ceilings, vec![200, 400, 800, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.ceiling().as_millis(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_half_opens_and_closes_on_paused_clock() {
        let mut br = breaker();
        let start = Instant::now();
        for _ in 0..2 {
            assert!(br.allow(Instant::now()));
            br.on_failure(Instant::now());
        }
        assert_eq!(br.state(), BreakerState::Closed);
        br.on_failure(Instant::now());
        assert_eq!(br.state(), BreakerState::Open);
        assert!(!br.allow(Instant::now()));
        assert_eq!(
            br.next_attempt_at(Instant::now()),
            start + Duration::from_secs(30)
        );

        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(!br.allow(Instant::now()), "still open before open_secs");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(br.allow(Instant::now()));
        assert_eq!(br.state(), BreakerState::HalfOpen);

        // The probe fails: open again for a full period.
        br.on_failure(Instant::now());
        assert_eq!(br.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(br.allow(Instant::now()));
        br.on_success();
        assert_eq!(br.state(), BreakerState::Closed);
        assert_eq!(br.failures(), 0);
    }
}
