//! Small statistics over measured samples: medians of rounds, percentiles of latencies.

use std::time::Duration;

/// The median of the rounds' figures (the middle one; the mean of the two middle ones for an
/// even count). Panics on no samples: a figure nobody measured is a bug, not a zero.
pub fn median(mut values: Vec<f64>) -> f64 {
    assert!(!values.is_empty(), "median of no samples");
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The `p` quantile (0..=1, nearest rank) of `samples`, in microseconds.
pub fn percentile_us(samples: &mut [Duration], p: f64) -> f64 {
    assert!(!samples.is_empty(), "percentile of no samples");
    assert!((0.0..=1.0).contains(&p));
    samples.sort();
    let rank = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1].as_secs_f64() * 1e6
}

/// Events per second.
pub fn rate(events: u64, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile_us(&mut samples, 0.5), 50.0);
        assert_eq!(percentile_us(&mut samples, 0.99), 99.0);
        assert_eq!(percentile_us(&mut samples, 1.0), 100.0);
    }
}
