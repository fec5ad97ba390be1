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
pub use crate::ratelimit::RateLimiter;
use mev_proto::envelope::Opened;
use mev_proto::{ErrorCode, Rejection};
use std::time::Instant;

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
                limiter.per_second(), limiter.burst()
            ),
        ),
    )))
}
