//! Stage 5: in one write transaction for the whole batch — drop duplicates by
//! message id, correlate replies and status updates with their open request,
//! open and close requests, keep the envelopes, put each accepted message in
//! the outbox for its recipient, and record every event.

use super::decode::Refused;
use super::Context;
use crate::metrics::SlaEvent;
use crate::store::prelude::*;
use crate::store::{Event, EventKind, OutboxEntry, Purpose, StoreError, Txn};
use mev_proto::envelope::Opened;
use mev_proto::pb::Kind;
use mev_proto::{ErrorCode, Rejection};

/// What to do with one message after recording.
pub enum Verdict {
    /// Accepted: forward the envelope to `to` and confirm to the sender.
    Forward { opened: Box<Opened>, to: String },
    /// A copy of a message already accepted (a sender's re-publish after a
    /// lost confirm, a redelivery after a crash): its forward is already in
    /// the outbox, so it only gets its receipt again.
    Duplicate { opened: Box<Opened> },
    /// Refused; a negative receipt goes to the sender if it is a registered agency.
    Reject(Box<Refused>),
    /// Bytes that cannot be attributed to any registered sender.
    Garbage(Box<Refused>),
}

fn event(kind: EventKind, now_ms: i64, opened: &Opened) -> Event {
    let h = &opened.header;
    Event {
        at_ms: now_ms,
        kind,
        message_id: h.message_id.clone(),
        sender: h.sender.clone(),
        recipient: h.recipient.clone(),
        service: h.service.clone(),
        in_reply_to: h.in_reply_to.clone(),
        code: 0,
        reason: String::new(),
        deadline_ms: None,
        late_by_ms: None,
    }
}

fn refused_event(kind: EventKind, now_ms: i64, r: &Refused) -> Event {
    Event {
        at_ms: now_ms,
        kind,
        message_id: r.message_id.clone(),
        sender: r.sender.clone().unwrap_or_default(),
        recipient: r.recipient.clone(),
        service: r.service.clone(),
        in_reply_to: r.in_reply_to.clone(),
        code: r.rejection.code.as_code(),
        reason: r.rejection.reason.clone(),
        deadline_ms: None,
        late_by_ms: None,
    }
}

/// Records one checked message and decides its verdict.
pub fn apply<T: Txn>(
    ctx: &Context,
    t: &mut T,
    now_ms: i64,
    item: Result<Opened, Box<Refused>>,
    raw: Vec<u8>,
    sla: &mut Vec<SlaEvent>,
) -> Result<Verdict, StoreError> {
    let opened = match item {
        Ok(x) => x,
        Err(refused) => return reject(ctx, t, now_ms, refused, &raw),
    };
    let id = opened.header.message_id.clone();
    if let Some(seen) = t.dedup().seen(&id)? {
        if seen.digest != opened.digest {
            let r = Refused::of(
                &opened,
                Rejection::new(
                    ErrorCode::DuplicateConflict,
                    format!("header.message_id: {id} was already accepted with different contents"),
                ),
            );
            return reject(ctx, t, now_ms, Box::new(r), &raw);
        }
        t.journal()
            .append(&event(EventKind::Duplicate, now_ms, &opened))?;
        return Ok(Verdict::Duplicate {
            opened: Box::new(opened),
        });
    }
    let h = &opened.header;
    // The journal entry recording the arrival keeps the envelope (its one
    // copy in the store); the outbox publishes it from there.
    let (to, entry) = match opened.kind() {
        Kind::Request => {
            let mut notices = Vec::new();
            let open = crate::deadline::track::on_request(
                &ctx.register,
                ctx.at_risk_fraction,
                t,
                now_ms,
                &opened,
                sla,
                &mut notices,
            )?;
            for notice in &notices {
                crate::sign::send_notice(&ctx.identity, t, now_ms, notice)?;
            }
            t.requests().open(&id, &open)?;
            let mut received = event(EventKind::Received, now_ms, &opened);
            received.deadline_ms = open.deadline_ms;
            received.reason = open.policy;
            let entry = t.journal().append_with(&received, &raw)?;
            (h.recipient.clone(), entry)
        }
        Kind::Reply => {
            if let Err(r) = check_reply(ctx, t, &opened)? {
                return reject(ctx, t, now_ms, Box::new(Refused::of(&opened, r)), &raw);
            }
            if let Some(req) = t.requests().close(&h.in_reply_to)? {
                crate::deadline::track::on_reply(t, now_ms, &h.in_reply_to, &req, sla)?;
            }
            let mut received = event(EventKind::ReplyReceived, now_ms, &opened);
            received.reason = reply_kind(h).to_string();
            let entry = t.journal().append_with(&received, &raw)?;
            let mut closed = event(EventKind::RequestClosed, now_ms, &opened);
            closed.message_id = h.in_reply_to.clone();
            t.journal().append(&closed)?;
            (h.recipient.clone(), entry)
        }
        Kind::Status => {
            if let Err(r) = check_status(t, &opened)? {
                return reject(ctx, t, now_ms, Box::new(Refused::of(&opened, r)), &raw);
            }
            let entry = t
                .journal()
                .append_with(&event(EventKind::Received, now_ms, &opened), &raw)?;
            (h.recipient.clone(), entry)
        }
        other => {
            let r = Rejection::new(
                ErrorCode::KindNotAllowed,
                format!("{other:?} is not routed"),
            );
            return reject(ctx, t, now_ms, Box::new(Refused::of(&opened, r)), &raw);
        }
    };
    t.dedup().accept(&id, &opened.digest, now_ms)?;
    t.outbox().enqueue(
        &OutboxEntry {
            to: to.clone(),
            message_id: id,
            purpose: Purpose::Forward,
            entry: Some(entry),
        },
        &raw,
    )?;
    Ok(Verdict::Forward {
        opened: Box::new(opened),
        to,
    })
}

/// Bytes of a refused message kept in the journal, at most (a forged or
/// oversized message is evidence, but not worth megabytes per copy).
pub const KEEP_REFUSED: usize = 64 * 1024;

/// Bytes kept of a message nobody can be held to (undecodable, oversized,
/// or naming no registered agency), with the length and SHA-256 of the
/// whole: enough to recognise it, while a flood of garbage from an
/// authenticated RabbitMQ account cannot fill the disk at 64 KiB a message.
pub const KEEP_GARBAGE: usize = 4 * 1024;

fn reject<T: Txn>(
    ctx: &Context,
    t: &mut T,
    now_ms: i64,
    refused: Box<Refused>,
    raw: &[u8],
) -> Result<Verdict, StoreError> {
    let attributable = refused
        .sender
        .as_deref()
        .is_some_and(|s| ctx.register.agency(s).is_some())
        && refused.digest.is_some();
    let (kind, keep) = if attributable {
        (EventKind::Rejected, KEEP_REFUSED)
    } else {
        (EventKind::Garbage, KEEP_GARBAGE)
    };
    let mut ev = refused_event(kind, now_ms, &refused);
    if raw.len() > keep {
        ev.reason = format!(
            "{} (first {keep} of {} bytes kept; SHA-256 of all {})",
            ev.reason,
            raw.len(),
            mev_proto::envelope::hex(&mev_proto::envelope::sha256(raw))
        );
    }
    t.journal().append_with(&ev, &raw[..raw.len().min(keep)])?;
    Ok(if attributable {
        Verdict::Reject(refused)
    } else {
        Verdict::Garbage(refused)
    })
}

/// A reply answers an open request, comes from its recipient, goes back to
/// its sender, and (with documents) matches the service's reply schema.
fn check_reply<T: Txn>(
    ctx: &Context,
    t: &mut T,
    opened: &Opened,
) -> Result<Result<(), Rejection>, StoreError> {
    let h = &opened.header;
    let Some(req) = t.requests().get(&h.in_reply_to)? else {
        let why = if t.dedup().seen(&h.in_reply_to)?.is_some() {
            "has already been answered"
        } else {
            "is not a request the exchange knows"
        };
        return Ok(Err(Rejection::new(
            ErrorCode::UnknownRequest,
            format!("header.in_reply_to: {} {why}", h.in_reply_to),
        )));
    };
    if req.recipient != h.sender {
        return Ok(Err(Rejection::new(
            ErrorCode::ReplyFromWrongAgency,
            format!(
                "header.sender: request {} was sent to {}, not to {}",
                h.in_reply_to, req.recipient, h.sender
            ),
        )));
    }
    if req.sender != h.recipient {
        return Ok(Err(Rejection::new(
            ErrorCode::WrongRecipient,
            format!(
                "header.recipient: the reply goes to the requester {}",
                req.sender
            ),
        )));
    }
    if req.service != h.service {
        return Ok(Err(Rejection::new(
            ErrorCode::InvalidField,
            format!("header.service: the request was for {}", req.service),
        )));
    }
    let Some(service) = ctx.register.service(&req.service) else {
        return Ok(Err(Rejection::new(
            ErrorCode::UnknownService,
            format!(
                "header.service: {} is no longer in the register",
                req.service
            ),
        )));
    };
    Ok(ctx
        .register
        .check_reply(service, h, &opened.envelope.payload))
}

/// A status update is about an open request and goes between its two parties.
fn check_status<T: Txn>(t: &mut T, opened: &Opened) -> Result<Result<(), Rejection>, StoreError> {
    let h = &opened.header;
    let Some(req) = t.requests().get(&h.in_reply_to)? else {
        return Ok(Err(Rejection::new(
            ErrorCode::UnknownRequest,
            format!(
                "header.in_reply_to: {} is not an open request",
                h.in_reply_to
            ),
        )));
    };
    let parties = [&req.sender, &req.recipient];
    if !parties.contains(&&h.sender) || !parties.contains(&&h.recipient) {
        return Ok(Err(Rejection::new(
            ErrorCode::ReplyFromWrongAgency,
            format!(
                "header.sender: only {} and {} may exchange status on this request",
                req.sender, req.recipient
            ),
        )));
    }
    Ok(Ok(()))
}

/// The reply's kind (UZ annex 2 §17): `documents`, `refusal`, `not_held`,
/// `insufficient_data` (recorded with the reply for quality reports).
pub fn reply_kind(h: &mev_proto::pb::Header) -> &'static str {
    use mev_proto::pb::reply_outcome::Outcome;
    match h.reply.as_ref().and_then(|r| r.outcome.as_ref()) {
        Some(Outcome::Documents(_)) => "documents",
        Some(Outcome::Refusal(_)) => "refusal",
        Some(Outcome::NotHeld(_)) => "not_held",
        Some(Outcome::InsufficientData(_)) => "insufficient_data",
        None => "",
    }
}
