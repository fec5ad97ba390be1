//! Per-agency token buckets: `per_second` tokens a second, at most `burst`
//! saved up (the pipeline's rate-limit stage uses them; UZ annex 2 §27: the
//! operator answers for uninterrupted operation, so one agency must not
//! starve the others).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Token buckets by agency.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_second` messages a second per agency, bursts of up to `burst`.
    pub fn new(per_second: f64, burst: u32) -> Self {
        RateLimiter {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Messages a second per agency.
    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// The largest burst an agency may send.
    pub fn burst(&self) -> f64 {
        self.burst
    }

    /// Whether `agency` may send one more message at `now`.
    pub fn admit(&self, agency: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = buckets
            .entry(agency.to_string())
            .or_insert((self.burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.per_second).min(self.burst);
        *last = now.max(*last);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate_per_agency_and_others_unaffected() {
        let l = RateLimiter::new(10.0, 5);
        let t0 = Instant::now();
        let admitted = (0..20).filter(|_| l.admit("A", t0)).count();
        assert_eq!(admitted, 5, "the burst");
        assert!(l.admit("B", t0), "another agency has its own bucket");
        assert!(!l.admit("A", t0 + Duration::from_millis(50)));
        assert!(
            l.admit("A", t0 + Duration::from_millis(120)),
            "one token after 100 ms"
        );
        // A long pause refills up to the burst, no more.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| l.admit("A", later)).count(), 5);
    }
}
