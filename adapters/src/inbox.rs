//! The inbox loop: takes what the exchange delivers to this agency, verifies
//! it, and dispatches it — receipts and replies to the callers waiting on
//! them, requests to the handler (once per message id), notices and status
//! updates to the events channel. A delivery is acked only once it is dealt
//! with: a request's delivery only once its reply is in the durable outbox
//! and its id marked handled, in the same write transaction; anything else
//! once its id is marked handled. So a redelivered message (a lost ack, a
//! crash, a restart) is recognised by its id and not handled again.
//! Receipt entries are recognised by the digest they name, so a repeated
//! receipt for a message is surfaced once.

use crate::dedup::{receipt_key, Claim};
use crate::message::{AdapterEvent, IncomingReply, IncomingRequest, ReceiptInfo, ReplyBody};
use crate::transport::{Consumer, Delivery, Transport};
use crate::{AdapterError, Handler, Shared};
use mev_proto::envelope::{self, Opened};
use mev_proto::pb::{self, Header, Kind};
use mev_proto::{time, Rejection};
use prost::Message;
use std::sync::Arc;
use tokio::sync::{watch, Semaphore};

pub(crate) async fn run<T: Transport>(
    shared: Arc<Shared<T>>,
    mut consumer: Consumer,
    handler: Option<Arc<dyn Handler>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(shared.config.prefetch.max(1) as usize));
    loop {
        let delivery = tokio::select! {
            d = consumer.next() => match d { Some(d) => d, None => break },
            _ = shutdown.changed() => break,
            // A failed store can record nothing: stop taking deliveries
            // rather than return each to the queue for ever.
            reason = shared.store.failed() => {
                tracing::error!(agency = shared.agency(), %reason, "the store failed; the inbox is no longer consumed");
                break;
            }
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let shared = shared.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            dispatch(&shared, delivery, handler.as_deref()).await;
            // Let go of the store before the shutdown can see this task done.
            drop(shared);
            drop(permit);
        });
    }
    // Let handlers in progress finish before returning.
    let _ = slots
        .acquire_many(shared.config.prefetch.max(1) as u32)
        .await;
}

async fn dispatch<T: Transport>(
    shared: &Shared<T>,
    delivery: Delivery,
    handler: Option<&dyn Handler>,
) {
    let opened = match envelope::open(&delivery.body, &shared.config.limits) {
        Ok(o) => o,
        Err(r) => {
            // Only the exchange writes to an inbox; garbage here is a fault upstream.
            tracing::error!(agency = shared.agency(), rejection = %r, "undecodable message in inbox, dropped");
            let _ = delivery.ack().await;
            return;
        }
    };
    let handled = match opened.kind() {
        Kind::Receipt => verify_broker(shared, &opened).and_then(|()| on_receipt(shared, &opened)),
        Kind::Notice => verify_broker(shared, &opened).map(|()| on_notice(shared, &opened)),
        Kind::Reply => {
            verify_sender(shared, &opened).map(|()| on_reply(shared, &opened, &delivery.body))
        }
        Kind::Status => verify_sender(shared, &opened).map(|()| on_status(shared, &opened)),
        Kind::Request => match verify_sender(shared, &opened) {
            Ok(()) => {
                on_request(shared, opened, delivery, handler).await;
                return;
            }
            Err(r) => Err(r),
        },
        Kind::Unspecified => Err(Rejection::new(
            mev_proto::ErrorCode::MalformedHeader,
            "unknown kind",
        )),
    };
    match handled {
        Ok(claims) => mark_handled(shared, claims).await,
        Err(r) => {
            tracing::error!(agency = shared.agency(), id = %opened.header.message_id, rejection = %r, "message in inbox failed verification, dropped");
        }
    }
    let _ = delivery.ack().await;
}

/// Marks what was just handled in the dedup index (durably, riding on the
/// writer's next transaction: what was handled is already surfaced, and only
/// the ack waits for the mark), then releases the claims.
async fn mark_handled<T: Transport>(shared: &Shared<T>, claims: Vec<Claim<'_>>) {
    let keys: Vec<String> = claims
        .iter()
        .map(|c| c.key().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    if keys.is_empty() {
        return;
    }
    if let Err(e) = shared.outbox.mark_handled(keys).await {
        tracing::warn!(agency = shared.agency(), error = %e, "could not mark messages handled; a redelivery may surface them again");
    }
    drop(claims);
}

/// The exchange's signature (receipts and notices).
fn verify_broker<T: Transport>(shared: &Shared<T>, opened: &Opened) -> Result<(), Rejection> {
    opened
        .verify_as(
            &shared.config.broker_id,
            &shared.config.trust,
            shared.config.verifier.as_ref(),
            chrono::Utc::now(),
        )
        .map(|_| ())
}

fn emit<T: Transport>(shared: &Shared<T>, event: AdapterEvent) {
    if shared.events.try_send(event).is_err() {
        tracing::warn!(
            agency = shared.agency(),
            "events channel full or closed; event dropped"
        );
    }
}

/// The original sender's signature, end to end, and that it is addressed to us.
fn verify_sender<T: Transport>(shared: &Shared<T>, opened: &Opened) -> Result<(), Rejection> {
    if opened.header.recipient != shared.agency() {
        return Err(Rejection::new(
            mev_proto::ErrorCode::WrongRecipient,
            format!("addressed to {}, not to us", opened.header.recipient),
        ));
    }
    opened
        .verify(
            &shared.config.trust,
            shared.config.verifier.as_ref(),
            chrono::Utc::now(),
        )
        .map(|_| ())
}

fn on_receipt<'a, T: Transport>(
    shared: &'a Shared<T>,
    opened: &Opened,
) -> Result<Vec<Claim<'a>>, Rejection> {
    let receipt = pb::Receipt::decode(opened.envelope.payload.as_slice()).map_err(|e| {
        Rejection::new(
            mev_proto::ErrorCode::Malformed,
            format!("receipt payload: {e}"),
        )
    })?;
    let mut claims = match shared.dedup.claim(&opened.header.message_id) {
        Ok(c) => vec![c],
        Err(seen) => {
            tracing::debug!(id = %opened.header.message_id, ?seen, "repeated receipt dropped");
            return Ok(Vec::new());
        }
    };
    let accepted_at = receipt
        .accepted_at
        .as_ref()
        .and_then(time::from_wire)
        .unwrap_or_else(chrono::Utc::now);
    for entry in receipt.entries {
        let Ok(digest) = <[u8; 32]>::try_from(entry.digest.as_slice()) else {
            continue;
        };
        let info = ReceiptInfo {
            message_id: entry.message_id.clone(),
            digest,
            accepted: entry.accepted,
            code: entry.code,
            reason: entry.reason,
            accepted_at,
        };
        let claim = shared.dedup.claim(&receipt_key(&digest));
        let (waiter, reply_waiter) = {
            let mut p = shared.pending();
            let w = p.receipts.remove(&digest);
            let r = if info.accepted {
                None
            } else {
                p.replies.remove(&entry.message_id)
            };
            (w, r)
        };
        if let (Some(rw), Some(rejection)) = (reply_waiter, info.rejection()) {
            let _ = rw.send(Err(AdapterError::Rejected(rejection)));
        }
        match (waiter, claim) {
            // A caller waits on this digest (it may have sent the same bytes
            // again on purpose): it gets the receipt.
            (Some(w), claim) => {
                let _ = w.send(info);
                claims.extend(claim.ok());
            }
            (None, Ok(claim)) => {
                emit(shared, AdapterEvent::Receipt(info));
                claims.push(claim);
            }
            (None, Err(seen)) => {
                tracing::debug!(message_id = %info.message_id, ?seen, "receipt entry for a digest already receipted; not surfaced again");
            }
        }
    }
    Ok(claims)
}

fn on_notice<'a, T: Transport>(shared: &'a Shared<T>, opened: &Opened) -> Vec<Claim<'a>> {
    let Ok(claim) = shared.dedup.claim(&opened.header.message_id) else {
        tracing::debug!(id = %opened.header.message_id, "duplicate notice dropped");
        return Vec::new();
    };
    if let Ok(notice) = pb::Notice::decode(opened.envelope.payload.as_slice()) {
        emit(
            shared,
            AdapterEvent::Notice {
                header: opened.header.clone(),
                notice,
            },
        );
    }
    vec![claim]
}

fn on_status<'a, T: Transport>(shared: &'a Shared<T>, opened: &Opened) -> Vec<Claim<'a>> {
    let Ok(claim) = shared.dedup.claim(&opened.header.message_id) else {
        tracing::debug!(id = %opened.header.message_id, "duplicate status update dropped");
        return Vec::new();
    };
    if let Ok(status) = pb::StatusUpdate::decode(opened.envelope.payload.as_slice()) {
        emit(
            shared,
            AdapterEvent::Status {
                header: opened.header.clone(),
                status,
            },
        );
    }
    vec![claim]
}

fn on_reply<'a, T: Transport>(
    shared: &'a Shared<T>,
    opened: &Opened,
    raw: &[u8],
) -> Vec<Claim<'a>> {
    let Ok(claim) = shared.dedup.claim(&opened.header.message_id) else {
        tracing::debug!(id = %opened.header.message_id, "duplicate reply dropped");
        return Vec::new();
    };
    let payload = match decrypt_payload(shared, opened) {
        Ok(p) => p,
        Err(why) => {
            // Signed by the provider and accepted by the exchange, but not
            // readable here: the waiting caller learns why.
            tracing::error!(agency = shared.agency(), id = %opened.header.message_id, in_reply_to = %opened.header.in_reply_to, reason = %why, "reply payload cannot be read");
            if let Some(w) = shared.pending().replies.remove(&opened.header.in_reply_to) {
                let _ = w.send(Err(crate::AdapterError::Invalid(
                    mev_proto::Rejection::new(
                        mev_proto::ErrorCode::InvalidField,
                        format!("reply payload: {why}"),
                    ),
                )));
            }
            return vec![claim];
        }
    };
    let Some(body) = ReplyBody::from_wire(&opened.header, payload) else {
        return vec![claim];
    };
    let reply = IncomingReply {
        header: opened.header.clone(),
        body,
        envelope: raw.to_vec(),
    };
    let waiter = shared.pending().replies.remove(&reply.header.in_reply_to);
    match waiter {
        Some(w) => {
            if let Err(Ok(reply)) = w.send(Ok(reply)) {
                emit(shared, AdapterEvent::Reply(reply));
            }
        }
        None => emit(shared, AdapterEvent::Reply(reply)),
    }
    vec![claim]
}

async fn on_request<T: Transport>(
    shared: &Shared<T>,
    opened: Opened,
    delivery: Delivery,
    handler: Option<&dyn Handler>,
) {
    let id = opened.header.message_id.clone();
    let Some(handler) = handler else {
        tracing::warn!(agency = shared.agency(), %id, "request arrived but no handler is set; returned to the queue");
        // Back off so an adapter without a handler does not spin on the request.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let _ = delivery.requeue().await;
        return;
    };
    let claim = match shared.dedup.claim(&id) {
        Ok(c) => c,
        Err(_) => {
            // Handled (or being handled by the first copy): this copy is a redelivery.
            let _ = delivery.ack().await;
            return;
        }
    };
    let request_header = opened.header.clone();
    let body = match decrypt_payload(shared, &opened) {
        Ok(payload) => {
            handler
                .handle(IncomingRequest {
                    header: opened.header,
                    payload,
                    envelope: delivery.body.clone(),
                })
                .await
        }
        // A confidential request we cannot read never reaches the handler;
        // the sender learns why from a signed reply instead of a silence.
        Err(why) => {
            tracing::error!(agency = shared.agency(), %id, sender = %request_header.sender, reason = %why, "encrypted request payload cannot be decrypted; answered with insufficient data");
            ReplyBody::InsufficientData {
                missing: vec![format!("payload: {why}")],
            }
        }
    };
    let (outcome, schema, payload) = body.into_wire();
    let mut reply = Header {
        message_id: uuid::Uuid::now_v7().to_string(),
        kind: Kind::Reply as i32,
        in_reply_to: id.clone(),
        sender: shared.agency().to_string(),
        recipient: request_header.sender.clone(),
        service: request_header.service.clone(),
        sent_at: Some(time::to_wire(chrono::Utc::now())),
        official: Some(shared.config.official.clone()),
        payload_schema: schema,
        classification: request_header.classification,
        test: request_header.test,
        archive: request_header.archive,
        reply: Some(outcome),
        ..Default::default()
    };
    let payload = seal_reply_payload(shared, &request_header, &mut reply, payload);
    // The reply in the outbox and the request marked handled: one transaction.
    let stored = match payload.and_then(|payload| shared.seal_for_ingress(reply, payload)) {
        Ok((message, _)) => shared.outbox.commit(vec![message], vec![id.clone()]).await,
        Err(e) => Err(e),
    };
    drop(claim);
    match stored {
        Ok(()) => {
            let _ = delivery.ack().await;
        }
        Err(e) => {
            if matches!(e, crate::AdapterError::Invalid(_)) {
                // The handler's answer cannot be sent as it is (too large,
                // say): the operator must see it, and the request must not
                // spin through the handler meanwhile.
                tracing::error!(agency = shared.agency(), %id, error = %e, "the handler's reply cannot be sent; request returned to the queue");
            } else {
                tracing::warn!(agency = shared.agency(), %id, error = %e, "reply not stored; request returned to the queue");
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let _ = delivery.requeue().await;
        }
    }
}

/// The reply's payload as it goes out: encrypted to the consumer's agreement
/// key when [`AdapterConfig::recipient_keys`](crate::AdapterConfig) has one,
/// so the exchange routes the documents without reading them. A confidential
/// request is never answered with documents in clear: without the consumer's
/// key, the reply is not sent (an error for the operator to fix).
fn seal_reply_payload<T: Transport>(
    shared: &Shared<T>,
    request: &Header,
    reply: &mut Header,
    payload: Vec<u8>,
) -> Result<Vec<u8>, crate::AdapterError> {
    if payload.is_empty() {
        return Ok(payload);
    }
    let invalid = |why: String| {
        crate::AdapterError::Invalid(mev_proto::Rejection::new(
            mev_proto::ErrorCode::InvalidField,
            why,
        ))
    };
    match shared.config.recipient_keys.get(&reply.recipient) {
        Some(key) => mev_proto::confidential::encrypt_payload(reply, &payload, key)
            .map_err(|e| invalid(format!("reply payload encryption: {e}"))),
        None if mev_proto::confidential::is_encrypted(request) => Err(invalid(format!(
            "the request was encrypted, so its documents may not go back in clear:              add {}'s agreement key to AdapterConfig::recipient_keys",
            reply.recipient
        ))),
        None => Ok(payload),
    }
}

/// The request's payload for the handler: as it came, or decrypted with our
/// agreement key if the sender encrypted it (see `mev_proto::confidential`).
/// The error says why it cannot be read.
fn decrypt_payload<T: Transport>(shared: &Shared<T>, opened: &Opened) -> Result<Vec<u8>, String> {
    if !mev_proto::confidential::is_encrypted(&opened.header) {
        return Ok(opened.envelope.payload.clone());
    }
    let key =
        shared.config.agreement_key.as_ref().ok_or_else(|| {
            "encrypted, but this agency has no agreement key configured".to_string()
        })?;
    key.open(&opened.header, &opened.envelope.payload)
        .map_err(|e| format!("cannot be decrypted: {e}"))
}
