//! Stage 2: the header says what it must (UZ annex 2 §14 for requests, the
//! reply rules), an agency sends only what agencies may send, and the
//! sending time is plausible.

use super::decode::Refused;
use super::Context;
use mev_proto::envelope::Opened;
use mev_proto::pb::Kind;
use mev_proto::{ErrorCode, Rejection};

pub fn run(
    ctx: &Context,
    opened: &Opened,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), Box<Refused>> {
    let refuse = |r: Rejection| Box::new(Refused::of(opened, r));
    mev_proto::validate::validate(&opened.header).map_err(refuse)?;
    match opened.kind() {
        Kind::Request | Kind::Reply | Kind::Status => {}
        other => {
            return Err(refuse(Rejection::new(
                ErrorCode::KindNotAllowed,
                format!(
                "header.kind: an agency may not send {other:?} messages; only the exchange does"
            ),
            )))
        }
    }
    let sent = opened
        .header
        .sent_at
        .as_ref()
        .and_then(mev_proto::time::from_wire)
        .unwrap_or(now);
    // A message signed before an outage legitimately arrives late, from its
    // sender's outbox (KZ order §9) — but not later than the dedup index
    // remembers ids, or a captured copy could be replayed as new.
    if let Some(max_age) = ctx.max_message_age {
        let age = now - sent;
        if age > max_age {
            return Err(refuse(Rejection::new(
                ErrorCode::StaleTimestamp,
                format!(
                    "header.sent_at is {} days old; copies older than {} days (the dedup window) are refused as replays",
                    age.num_days(),
                    max_age.num_days()
                ),
            )));
        }
    }
    if let Some(skew) = ctx.max_clock_skew {
        let ahead = sent - now;
        if ahead > skew {
            return Err(refuse(Rejection::new(
                ErrorCode::StaleTimestamp,
                format!(
                    "header.sent_at is {}s ahead of the exchange's clock; at most {}s allowed",
                    ahead.num_seconds(),
                    skew.num_seconds()
                ),
            )));
        }
    }
    Ok(())
}
