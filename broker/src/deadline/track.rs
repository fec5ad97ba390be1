//! Deadlines of open requests, kept on disk: what happens when a request is
//! accepted, when its reply arrives, and when one of its timers fires. All of
//! it runs inside the store transaction of the batch (or of the timer sweep),
//! so a deadline, its timers and its notices are durable together.
//!
//! - accepted: the reply deadline is fixed (the service's policy, the archive
//!   exemption, a per-interaction override; UZ annex 2 §13, §18, §22, annex 1
//!   §8; Tatarstan §2.7; RU 963 §10), and two timers are armed: the at-risk
//!   warning and the breach. A request sent after the consumer's dispatch
//!   deadline (UZ annex 2 §12) is recorded as a late dispatch and the consumer
//!   gets a notice.
//! - at risk: a signed notice to the provider.
//! - breached: a signed notice to both agencies and a record of how late the
//!   timer fired (if the broker was down when it passed, it fires on restart).
//! - replied: on time or late (a late reply is still delivered), and the
//!   timers are disarmed.
//!
//! The tracker signs nothing itself: it returns the notices it wants sent
//! (in `notices`), and its caller has them signed and put in the outbox in
//! the same transaction ([`crate::sign::send_notice`]).

use super::{at_risk_at, for_request, format_local, Calendar};
use crate::journal::{Event, EventKind};
use crate::metrics::{SlaEvent, SlaOutcome};
use crate::register::Register;
use crate::sign::Notice;
use crate::store::prelude::*;
use crate::store::{OpenRequest, StoreError, Timer, TimerKind, Txn};
use chrono::{DateTime, TimeZone, Utc};
use mev_proto::envelope::Opened;
use mev_proto::pb::NoticeKind;

fn ms_to_utc(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn event(kind: EventKind, now_ms: i64, id: &str, req: &OpenRequest) -> Event {
    Event {
        at_ms: now_ms,
        kind,
        message_id: id.to_string(),
        sender: req.sender.clone(),
        recipient: req.recipient.clone(),
        service: req.service.clone(),
        in_reply_to: String::new(),
        code: 0,
        reason: String::new(),
        deadline_ms: req.deadline_ms,
        late_by_ms: None,
    }
}

/// The open request for an accepted request, with its deadline fixed and
/// its timers armed.
/// `at_risk_fraction`: when the provider is warned (`None`: never).
pub fn on_request<T: Txn>(
    register: &Register,
    at_risk_fraction: Option<f64>,
    t: &mut T,
    now_ms: i64,
    opened: &Opened,
    sla: &mut Vec<SlaEvent>,
    notices: &mut Vec<Notice>,
) -> Result<OpenRequest, StoreError> {
    let h = &opened.header;
    let mut req = OpenRequest {
        sender: h.sender.clone(),
        recipient: h.recipient.clone(),
        service: h.service.clone(),
        accepted_at_ms: now_ms,
        policy: String::new(),
        deadline_ms: None,
        at_risk_ms: None,
        breached: false,
    };
    let fixed = match for_request(register, register.calendars(), h) {
        Ok(d) => d,
        Err(e) => {
            // The request is routed all the same; the gap is loud and recorded.
            tracing::error!(request = %h.message_id, error = %e, "no deadline could be fixed");
            let mut ev = event(EventKind::DeadlineUnknown, now_ms, &h.message_id, &req);
            ev.reason = e.to_string();
            t.journal().append(&ev)?;
            return Ok(req);
        }
    };
    req.policy = fixed.policy_name.to_string();
    if let Some(reply) = &fixed.reply {
        let due = reply.at.timestamp_millis();
        req.deadline_ms = Some(due);
        t.timers().arm(due, &h.message_id, TimerKind::Breach)?;
        if let Some(fraction) = at_risk_fraction {
            let start = h
                .sent_at
                .as_ref()
                .and_then(mev_proto::time::from_wire)
                .unwrap_or_else(|| ms_to_utc(now_ms));
            let at = at_risk_at(start, reply.at, fraction).timestamp_millis();
            if at < due {
                req.at_risk_ms = Some(at);
                t.timers().arm(at, &h.message_id, TimerKind::AtRisk)?;
            }
        }
    }
    if fixed.late_dispatch {
        let mut ev = event(EventKind::LateDispatch, now_ms, &h.message_id, &req);
        ev.deadline_ms = fixed.dispatch.as_ref().map(|d| d.at.timestamp_millis());
        if let (Some(d), Some(sent)) = (
            &fixed.dispatch,
            h.sent_at.as_ref().and_then(mev_proto::time::from_wire),
        ) {
            ev.late_by_ms = Some((sent - d.at).num_milliseconds());
            let text = format!(
                "request {} was sent after its dispatch deadline {} (UZ annex 2 §12: within one working day after the application was received)",
                h.message_id,
                local(register, &h.sender, d.at),
            );
            notices.push(Notice {
                to: h.sender.clone(),
                kind: NoticeKind::LateDispatch,
                request_id: h.message_id.clone(),
                text,
                deadline: d.at,
            });
        }
        t.journal().append(&ev)?;
        sla.push(SlaEvent {
            agency: h.sender.clone(),
            service: h.service.clone(),
            outcome: SlaOutcome::LateDispatch,
            reply_ms: None,
        });
    }
    Ok(req)
}

/// A reply closed `req`: on time or late, and its timers disarmed.
pub fn on_reply<T: Txn>(
    t: &mut T,
    now_ms: i64,
    request_id: &str,
    req: &OpenRequest,
    sla: &mut Vec<SlaEvent>,
) -> Result<(), StoreError> {
    if let Some(at) = req.at_risk_ms {
        t.timers().disarm(at, request_id, TimerKind::AtRisk)?;
    }
    let reply_ms = Some(now_ms - req.accepted_at_ms);
    let Some(due) = req.deadline_ms else {
        sla.push(SlaEvent {
            agency: req.recipient.clone(),
            service: req.service.clone(),
            outcome: SlaOutcome::Replied,
            reply_ms,
        });
        return Ok(());
    };
    t.timers().disarm(due, request_id, TimerKind::Breach)?;
    let late = now_ms > due;
    let mut ev = event(
        if late {
            EventKind::ReplyLate
        } else {
            EventKind::ReplyOnTime
        },
        now_ms,
        request_id,
        req,
    );
    if late {
        ev.late_by_ms = Some(now_ms - due);
    }
    t.journal().append(&ev)?;
    sla.push(SlaEvent {
        agency: req.recipient.clone(),
        service: req.service.clone(),
        outcome: if late {
            SlaOutcome::Late
        } else {
            SlaOutcome::OnTime
        },
        reply_ms,
    });
    Ok(())
}

/// Acts on a timer that fell due (it was taken off the timer table in this
/// transaction). A timer of a request already answered does nothing.
pub fn fire<T: Txn>(
    register: &Register,
    t: &mut T,
    now_ms: i64,
    timer: &Timer,
    sla: &mut Vec<SlaEvent>,
    notices: &mut Vec<Notice>,
) -> Result<(), StoreError> {
    let Some(mut req) = t.requests().get(&timer.request_id)? else {
        return Ok(());
    };
    let id = timer.request_id.as_str();
    let late_by = now_ms - timer.due_ms;
    let deadline = ms_to_utc(req.deadline_ms.unwrap_or(timer.due_ms));
    match timer.kind {
        TimerKind::AtRisk => {
            let text = format!(
                "request {id} for service {} is still unanswered; its deadline is {}",
                req.service,
                local(register, &req.recipient, deadline)
            );
            notices.push(Notice {
                to: req.recipient.clone(),
                kind: NoticeKind::DeadlineAtRisk,
                request_id: id.to_string(),
                text,
                deadline,
            });
            let mut ev = event(EventKind::DeadlineAtRisk, now_ms, id, &req);
            ev.late_by_ms = Some(late_by);
            t.journal().append(&ev)?;
            sla.push(SlaEvent {
                agency: req.recipient.clone(),
                service: req.service.clone(),
                outcome: SlaOutcome::AtRisk,
                reply_ms: None,
            });
        }
        TimerKind::Breach => {
            req.breached = true;
            t.requests().open(id, &req)?;
            let text = format!(
                "request {id} from {} to {} for service {} was not answered by its deadline {}",
                req.sender,
                req.recipient,
                req.service,
                local(register, &req.recipient, deadline)
            );
            for to in [req.sender.clone(), req.recipient.clone()] {
                notices.push(Notice {
                    to,
                    kind: NoticeKind::DeadlineBreached,
                    request_id: id.to_string(),
                    text: text.clone(),
                    deadline,
                });
            }
            let mut ev = event(EventKind::DeadlineBreached, now_ms, id, &req);
            // How late the timer fired: more than a moment means the broker was down.
            ev.late_by_ms = Some(late_by);
            if late_by > 1_000 {
                ev.reason = format!(
                    "noticed {:.1} s after the deadline (the exchange was not running when it passed)",
                    late_by as f64 / 1000.0
                );
            }
            t.journal().append(&ev)?;
            sla.push(SlaEvent {
                agency: req.recipient.clone(),
                service: req.service.clone(),
                outcome: SlaOutcome::Breached,
                reply_ms: None,
            });
        }
    }
    Ok(())
}

/// `at` in `agency`'s local time (KZ order §10), or UTC if its calendar is unknown.
fn local(register: &Register, agency: &str, at: DateTime<Utc>) -> String {
    let calendar: Option<Calendar> = register
        .agency(agency)
        .and_then(|a| register.calendars().for_jurisdiction(&a.jurisdiction).ok());
    match calendar {
        Some(c) => format_local(at, &c),
        None => format!("{} (UTC)", at.format("%Y-%m-%d %H:%M:%S")),
    }
}
