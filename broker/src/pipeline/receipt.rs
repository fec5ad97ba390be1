//! Stage 7: receipts. One receipt message per sender per batch lists the
//! digest of each of its messages with the outcome and a stable code; one
//! signature by the exchange covers it, and its time is the legal receipt
//! time of all of them (UZ annex 2 §16).

use super::record::Verdict;
use super::Context;
use crate::sign::{seal_own, Own};
use crate::store::prelude::*;
use crate::store::{Event, EventKind, OutboxEntry, Purpose, StoreError, Txn};
use mev_proto::pb::{self, Kind};
use mev_proto::ErrorCode;
use prost::Message;
use std::collections::BTreeMap;

/// Signs the receipts of a batch, keeps each envelope and puts it in the
/// outbox to its sender, all in the batch's transaction: a receipt is sent
/// only for what that transaction makes durable.
pub fn enqueue<T: Txn>(
    ctx: &Context,
    t: &mut T,
    verdicts: &[Verdict],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<usize, StoreError> {
    let mut by_sender: BTreeMap<String, Vec<pb::ReceiptEntry>> = BTreeMap::new();
    for v in verdicts {
        let (sender, entry) = match v {
            Verdict::Forward { opened, .. } => (
                opened.header.sender.clone(),
                pb::ReceiptEntry {
                    message_id: opened.header.message_id.clone(),
                    digest: opened.digest.to_vec(),
                    accepted: true,
                    code: 0,
                    reason: String::new(),
                },
            ),
            Verdict::Duplicate { opened } => (
                opened.header.sender.clone(),
                pb::ReceiptEntry {
                    message_id: opened.header.message_id.clone(),
                    digest: opened.digest.to_vec(),
                    accepted: true,
                    code: ErrorCode::Duplicate.as_code(),
                    reason: "already accepted; this copy was not forwarded again".into(),
                },
            ),
            Verdict::Reject(r) => (
                r.sender.clone().unwrap_or_default(),
                pb::ReceiptEntry {
                    message_id: r.message_id.clone(),
                    digest: r.digest.map(|d| d.to_vec()).unwrap_or_default(),
                    accepted: false,
                    code: r.rejection.code.as_code(),
                    reason: r.rejection.reason.clone(),
                },
            ),
            Verdict::Garbage(_) => continue,
        };
        by_sender.entry(sender).or_default().push(entry);
    }

    let at_ms = now.timestamp_millis();
    let mut n = 0;
    for (sender, entries) in by_sender {
        let message_id = uuid::Uuid::now_v7().to_string();
        let bytes = match seal_receipt(ctx, &message_id, &sender, entries, now) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(%sender, error = %e, "cannot sign receipt");
                continue;
            }
        };
        let entry = t.journal().append_with(
            &Event {
                message_id: message_id.clone(),
                sender: ctx.identity.agency.clone(),
                recipient: sender.clone(),
                ..Event::new(at_ms, EventKind::ReceiptSent)
            },
            &bytes,
        )?;
        t.outbox().enqueue(
            &OutboxEntry {
                to: sender,
                message_id,
                purpose: Purpose::Receipt,
                entry: Some(entry),
            },
            &bytes,
        )?;
        n += 1;
    }
    Ok(n)
}

fn seal_receipt(
    ctx: &Context,
    message_id: &str,
    recipient: &str,
    entries: Vec<pb::ReceiptEntry>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<u8>, mev_proto::SealError> {
    let receipt = pb::Receipt {
        accepted_at: Some(mev_proto::time::to_wire(now)),
        entries,
    };
    seal_own(
        &ctx.identity,
        Own {
            message_id,
            kind: Kind::Receipt,
            recipient,
            in_reply_to: "",
            schema: "mev.v1.Receipt",
        },
        receipt.encode_to_vec(),
        now,
    )
}
