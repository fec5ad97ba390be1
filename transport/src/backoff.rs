//! Capped exponential back-off with jitter, shared by the adapter's and the
//! broker's outboxes: a retry after a failure waits `min · 2^attempt`, never
//! more than `max`, spread ±25 % so that many clients do not retry in step.

use std::time::Duration;

/// A small xorshift generator for the jitter (`rand` is not a dependency).
#[derive(Debug, Clone)]
struct Jitter(u64);

impl Jitter {
    fn from_clock() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Jitter(nanos | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// The delays between retries of one failing thing.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    jitter: Jitter,
}

impl Backoff {
    /// Starting at `min`, doubling, capped at `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            attempt: 0,
            jitter: Jitter::from_clock(),
        }
    }

    /// The delay before the next retry; each call counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// After a success: the next failure starts again at `min`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failures since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The delay for retry number `attempt` (0-based), within ±25 % of
    /// `min · 2^attempt` and never above `max`.
    fn delay(&mut self, attempt: u32) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        // A factor in [0.75, 1.25).
        let factor = 0.75 + (self.jitter.next() >> 11) as f64 / (1u64 << 53) as f64 / 2.0;
        base.mul_f64(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(5);

    #[test]
    fn grows_is_capped_and_jittered() {
        let mut b = Backoff::new(MIN, MAX);
        for _ in 0..200 {
            let first = b.delay(0);
            assert!(
                first >= Duration::from_micros(37_500) && first < Duration::from_micros(62_500)
            );
            let fourth = b.delay(3);
            assert!(fourth >= Duration::from_millis(300) && fourth < Duration::from_millis(500));
            for attempt in [7, 8, 20, 64, u32::MAX] {
                let d = b.delay(attempt);
                assert!(d <= MAX, "{d:?}");
                assert!(d >= MAX.mul_f64(0.75), "{d:?}");
            }
        }
        // Each attempt within ±25 % of 50 ms × 2^attempt, capped at 5 s.
        for attempt in 0..20u32 {
            let base = Duration::from_millis(50 << attempt).min(MAX);
            for _ in 0..50 {
                let d = b.delay(attempt);
                assert!(d >= base.mul_f64(0.75), "{attempt}: {d:?}");
                assert!(d <= base.mul_f64(1.25).min(MAX), "{attempt}: {d:?}");
            }
        }
        // The jitter spreads the delays.
        let spread: std::collections::BTreeSet<_> = (0..50).map(|_| b.delay(5)).collect();
        assert!(spread.len() > 10);
    }

    #[test]
    fn counts_failures_and_resets() {
        let mut b = Backoff::new(MIN, MAX);
        let first = b.next_delay();
        let _ = b.next_delay();
        let third = b.next_delay();
        assert_eq!(b.attempts(), 3);
        assert!(third > first);
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert!(b.next_delay() < Duration::from_micros(62_500));
    }
}
