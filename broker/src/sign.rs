//! What the exchange itself signs: receipts (built by the pipeline's
//! receipt stage) and notices (asked for by the deadline tracker), sealed
//! with the broker's identity, journalled and put in the outbox in the
//! caller's store transaction, so a receipt or a notice is sent only for
//! what that transaction makes durable.

use crate::journal::{Event, EventKind};
use crate::store::prelude::*;
use crate::store::{OutboxEntry, Purpose, StoreError, Txn};
use chrono::{DateTime, TimeZone, Utc};
use mev_proto::crypto::Identity;
use mev_proto::envelope;
use mev_proto::pb::{self, Classification, Header, Kind, NoticeKind};
use prost::Message;

/// The header fields of a message the exchange itself sends.
pub struct Own<'a> {
    pub message_id: &'a str,
    pub kind: Kind,
    pub recipient: &'a str,
    pub in_reply_to: &'a str,
    pub schema: &'a str,
}

/// Signs a message from the exchange (a receipt, a notice) with its identity.
pub fn seal_own(
    identity: &Identity,
    own: Own<'_>,
    payload: Vec<u8>,
    now: DateTime<Utc>,
) -> Result<Vec<u8>, mev_proto::SealError> {
    let header = Header {
        message_id: own.message_id.to_string(),
        kind: own.kind as i32,
        sender: identity.agency.clone(),
        recipient: own.recipient.to_string(),
        in_reply_to: own.in_reply_to.to_string(),
        sent_at: Some(mev_proto::time::to_wire(now)),
        payload_schema: own.schema.into(),
        classification: Classification::Unclassified as i32,
        ..Default::default()
    };
    let env = envelope::seal(
        header,
        payload,
        identity.signer.as_ref(),
        &identity.certificate_chain,
    )?;
    Ok(env.encode_to_vec())
}

/// A notice the deadline tracker wants sent: to whom, of what kind, about
/// which request, its text and the deadline concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub to: String,
    pub kind: NoticeKind,
    pub request_id: String,
    pub text: String,
    pub deadline: DateTime<Utc>,
}

/// Signs `notice`, journals it and puts it in the outbox, in `t`. A notice
/// that cannot be signed is logged and skipped (the deadline event itself
/// is journalled by the tracker either way).
pub fn send_notice<T: Txn>(
    identity: &Identity,
    t: &mut T,
    now_ms: i64,
    notice: &Notice,
) -> Result<(), StoreError> {
    let payload = pb::Notice {
        kind: notice.kind as i32,
        request_id: notice.request_id.clone(),
        text: notice.text.clone(),
        deadline: Some(mev_proto::time::to_wire(notice.deadline)),
    };
    let message_id = uuid::Uuid::now_v7().to_string();
    let now = Utc
        .timestamp_millis_opt(now_ms)
        .single()
        .unwrap_or_default();
    let bytes = match seal_own(
        identity,
        Own {
            message_id: &message_id,
            kind: Kind::Notice,
            recipient: &notice.to,
            in_reply_to: &notice.request_id,
            schema: "mev.v1.Notice",
        },
        payload.encode_to_vec(),
        now,
    ) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(to = %notice.to, error = %e, "cannot sign a notice");
            return Ok(());
        }
    };
    let entry = t.journal().append_with(
        &Event {
            message_id: message_id.clone(),
            sender: identity.agency.clone(),
            recipient: notice.to.clone(),
            in_reply_to: notice.request_id.clone(),
            code: notice.kind as u32,
            reason: notice.text.clone(),
            deadline_ms: Some(notice.deadline.timestamp_millis()),
            ..Event::new(now_ms, EventKind::NoticeSent)
        },
        &bytes,
    )?;
    t.outbox().enqueue(
        &OutboxEntry {
            to: notice.to.clone(),
            message_id,
            purpose: Purpose::Notice,
            entry: Some(entry),
        },
        &bytes,
    )?;
    Ok(())
}
