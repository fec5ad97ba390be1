//! Stage 3b: a per-agency rate limit, so that one agency cannot starve the
//! others (the operator answers for uninterrupted operation, UZ annex 2 §27).
//! A token bucket per sender: `per_second` tokens a second, at most `burst`
//! saved up. It runs after the signature is verified, so nobody can spend
//! another agency's budget by claiming its name; a message over the limit is
//! refused with `RateLimited` (410) in a signed receipt, and the sender's
//! outbox or operator sends it again later.
//!
//! Replies are never limited: each answers a request that was admitted (a
//! reply to anything else is refused by the authorize stage), so requests
//! already bound them, and throttling an answer the law requires within a
//! deadline would only make it late.

use super::decode::Refused;
use super::Context;
use mev_proto::envelope::Opened;
use mev_proto::{ErrorCode, Rejection};
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

/// Refuses a message whose (verified) sender is over its rate.
pub fn run(ctx: &Context, opened: &Opened) -> Result<(), Box<Refused>> {
    let Some(limiter) = &ctx.rate_limit else {
        return Ok(());
    };
    if opened.header.kind == mev_proto::pb::Kind::Reply as i32 {
        return Ok(());
    }
    let sender = &opened.header.sender;
    if limiter.admit(sender, Instant::now()) {
        return Ok(());
    }
    Err(Box::new(Refused::of(
        opened,
        Rejection::new(
            ErrorCode::RateLimited,
            format!(
                "{sender} is sending more than {} messages a second (bursts of {}); send it again later",
                limiter.per_second, limiter.burst
            ),
        ),
    )))
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
