//! Stage 7: receipts. One receipt message per sender per batch lists the
//! digest of each of its messages with the outcome and a stable code; one
//! signature by the exchange covers it, and its time is the legal receipt
//! time of all of them (UZ annex 2 §16).

use super::record::Verdict;
use super::Context;
use crate::store::{Event, EventKind};
use mev_adapter::transport::{Outgoing, Route, Transport};
use mev_proto::pb::{self, Classification, Header, Kind};
use mev_proto::{envelope, ErrorCode};
use prost::Message;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;

/// Sends the receipts of a batch; returns the senders whose receipt could
/// not be delivered (their inputs are returned to the queue).
pub async fn send<T: Transport>(
    ctx: &Context,
    transport: &T,
    verdicts: &[Verdict],
    forward_failed: &[bool],
    now: chrono::DateTime<chrono::Utc>,
) -> HashSet<String> {
    let mut by_sender: BTreeMap<String, Vec<pb::ReceiptEntry>> = BTreeMap::new();
    for (v, failed) in verdicts.iter().zip(forward_failed) {
        if *failed {
            continue;
        }
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
                    reason: "already accepted and delivered; this copy was not forwarded again"
                        .into(),
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

    let mut messages = Vec::new();
    let mut senders = Vec::new();
    for (sender, entries) in by_sender {
        match seal_receipt(ctx, &sender, entries, now) {
            Ok(bytes) => {
                messages.push(Outgoing {
                    route: Route::Inbox(sender.clone()),
                    body: bytes.into(),
                    message_id: String::new(),
                });
                senders.push(sender);
            }
            Err(e) => {
                tracing::error!(%sender, error = %e, "cannot sign receipt");
            }
        }
    }
    let results = transport.publish_batch(messages).await;
    let mut failed = HashSet::new();
    let mut sent = Vec::new();
    for (sender, r) in senders.into_iter().zip(results) {
        match r {
            Ok(()) => {
                ctx.counters.receipts.fetch_add(1, Ordering::Relaxed);
                sent.push(sender);
            }
            Err(e) => {
                tracing::warn!(%sender, error = %e, "receipt not delivered");
                failed.insert(sender);
            }
        }
    }
    if !sent.is_empty() {
        let at_ms = now.timestamp_millis();
        let _ = ctx.store.write_lazy(|t| {
            for s in &sent {
                t.record(&Event {
                    at_ms,
                    kind: EventKind::ReceiptSent,
                    message_id: String::new(),
                    sender: ctx.identity.agency.clone(),
                    recipient: s.clone(),
                    service: String::new(),
                    in_reply_to: String::new(),
                    code: 0,
                    reason: String::new(),
                })?;
            }
            Ok(())
        });
    }
    failed
}

fn seal_receipt(
    ctx: &Context,
    recipient: &str,
    entries: Vec<pb::ReceiptEntry>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<u8>, mev_proto::SealError> {
    let receipt = pb::Receipt {
        accepted_at: Some(mev_proto::time::to_wire(now)),
        entries,
    };
    let header = Header {
        message_id: uuid::Uuid::now_v7().to_string(),
        kind: Kind::Receipt as i32,
        sender: ctx.identity.agency.clone(),
        recipient: recipient.to_string(),
        sent_at: Some(mev_proto::time::to_wire(now)),
        payload_schema: "mev.v1.Receipt".into(),
        classification: Classification::Unclassified as i32,
        ..Default::default()
    };
    let env = envelope::seal(
        header,
        receipt.encode_to_vec(),
        ctx.identity.signer.as_ref(),
        &ctx.identity.certificate_chain,
    )?;
    Ok(env.encode_to_vec())
}
