//! The inbox loop: takes what the exchange delivers to this agency, verifies
//! it, and dispatches it — receipts and replies to the callers waiting on
//! them, requests to the handler (once per message id), notices and status
//! updates to the events channel. A delivery is acked only once it is dealt
//! with; a request's delivery only once its reply is confirmed by RabbitMQ.

use crate::dedup::Seen;
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
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let shared = shared.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            dispatch(&shared, delivery, handler.as_deref()).await;
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
    let now = chrono::Utc::now();
    let outcome = match opened.kind() {
        Kind::Receipt => {
            match opened.verify_as(
                &shared.config.broker_id,
                &shared.config.trust,
                shared.config.verifier.as_ref(),
                now,
            ) {
                Ok(_) => on_receipt(shared, &opened),
                Err(r) => Err(r),
            }
        }
        Kind::Notice => match opened.verify_as(
            &shared.config.broker_id,
            &shared.config.trust,
            shared.config.verifier.as_ref(),
            now,
        ) {
            Ok(_) => {
                if let Ok(notice) = pb::Notice::decode(opened.envelope.payload.as_slice()) {
                    emit(
                        shared,
                        AdapterEvent::Notice {
                            header: opened.header.clone(),
                            notice,
                        },
                    );
                }
                Ok(())
            }
            Err(r) => Err(r),
        },
        Kind::Reply => match verify_sender(shared, &opened) {
            Ok(()) => {
                on_reply(shared, opened, &delivery.body);
                let _ = delivery.ack().await;
                return;
            }
            Err(r) => Err(r),
        },
        Kind::Status => match verify_sender(shared, &opened) {
            Ok(()) => {
                if shared.dedup.claim(&opened.header.message_id) == Seen::New {
                    shared.dedup.done(&opened.header.message_id);
                    if let Ok(status) = pb::StatusUpdate::decode(opened.envelope.payload.as_slice())
                    {
                        emit(
                            shared,
                            AdapterEvent::Status {
                                header: opened.header.clone(),
                                status,
                            },
                        );
                    }
                }
                Ok(())
            }
            Err(r) => Err(r),
        },
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
    if let Err(r) = outcome {
        tracing::error!(agency = shared.agency(), id = %opened.header.message_id, rejection = %r, "message in inbox failed verification, dropped");
    }
    let _ = delivery.ack().await;
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

fn on_receipt<T: Transport>(shared: &Shared<T>, opened: &Opened) -> Result<(), Rejection> {
    let receipt = pb::Receipt::decode(opened.envelope.payload.as_slice()).map_err(|e| {
        Rejection::new(
            mev_proto::ErrorCode::Malformed,
            format!("receipt payload: {e}"),
        )
    })?;
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
        match waiter {
            Some(w) => {
                let _ = w.send(info);
            }
            None => emit(shared, AdapterEvent::Receipt(info)),
        }
    }
    Ok(())
}

fn on_reply<T: Transport>(shared: &Shared<T>, opened: Opened, raw: &[u8]) {
    let id = opened.header.message_id.clone();
    if shared.dedup.claim(&id) != Seen::New {
        tracing::debug!(%id, "duplicate reply dropped");
        return;
    }
    shared.dedup.done(&id);
    let Some(body) = ReplyBody::from_wire(&opened.header, opened.envelope.payload.clone()) else {
        return;
    };
    let reply = IncomingReply {
        header: opened.header,
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
    match shared.dedup.claim(&id) {
        Seen::Done | Seen::InProgress => {
            // Handled (or being handled by the first copy): this copy is a redelivery.
            let _ = delivery.ack().await;
            return;
        }
        Seen::New => {}
    }
    let request_header = opened.header.clone();
    let body = handler
        .handle(IncomingRequest {
            header: opened.header,
            payload: opened.envelope.payload,
            envelope: delivery.body.clone(),
        })
        .await;
    let (outcome, schema, payload) = body.into_wire();
    let reply = Header {
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
    match shared.seal_and_send(reply, payload).await {
        Ok(_) => {
            shared.dedup.done(&id);
            let _ = delivery.ack().await;
        }
        Err(e) => {
            tracing::warn!(agency = shared.agency(), %id, error = %e, "reply not sent; request returned to the queue");
            shared.dedup.release(&id);
            let _ = delivery.requeue().await;
        }
    }
}
