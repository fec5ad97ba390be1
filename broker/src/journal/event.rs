//! What the journal records: one [`Event`] per thing that happened, of an
//! [`EventKind`]; [`super::entry`] encodes it with its envelope.

use serde::{Deserialize, Serialize};

/// One thing that happened, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When (UTC, ms since the epoch).
    pub at_ms: i64,
    pub kind: EventKind,
    pub message_id: String,
    pub sender: String,
    pub recipient: String,
    pub service: String,
    /// The request a reply or status refers to.
    pub in_reply_to: String,
    /// Stable code (0 when accepted).
    pub code: u32,
    pub reason: String,
    /// The deadline concerned (UTC ms), for deadline events and replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<i64>,
    /// How far past the deadline (ms): a late reply, a breach noticed late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_by_ms: Option<i64>,
}

impl Event {
    /// An event of `kind` at `at_ms` with every other field empty; set the
    /// ones that apply with struct update syntax.
    pub fn new(at_ms: i64, kind: EventKind) -> Self {
        Event {
            at_ms,
            kind,
            message_id: String::new(),
            sender: String::new(),
            recipient: String::new(),
            service: String::new(),
            in_reply_to: String::new(),
            code: 0,
            reason: String::new(),
            deadline_ms: None,
            late_by_ms: None,
        }
    }
}

/// Kinds of recorded events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Received,
    Rejected,
    Duplicate,
    Forwarded,
    ReceiptSent,
    ReplyReceived,
    RequestClosed,
    Garbage,
    /// A notice the exchange signed (deadlines), placed in the outbox.
    NoticeSent,
    /// The at-risk fraction of the allowed time passed without a reply.
    DeadlineAtRisk,
    /// The deadline passed without a reply.
    DeadlineBreached,
    /// A reply within its deadline.
    ReplyOnTime,
    /// A reply after its deadline (still delivered).
    ReplyLate,
    /// A request sent after the consumer's dispatch deadline (UZ annex 2 §12).
    LateDispatch,
    /// No deadline could be computed (a calendar lacks a year): the request
    /// is routed, and the reason recorded.
    DeadlineUnknown,
    /// The broker started with a register (its digest and size in `reason`).
    RegisterLoaded,
    /// An accepted message was published to its recipient and confirmed.
    Delivered,
}
