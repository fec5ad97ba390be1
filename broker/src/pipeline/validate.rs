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
    if let Some(skew) = ctx.max_clock_skew {
        let sent = opened
            .header
            .sent_at
            .as_ref()
            .and_then(mev_proto::time::from_wire)
            .unwrap_or(now);
        // Only the future is checked: a message signed before an outage
        // legitimately arrives late, from its sender's outbox (KZ order §9).
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
