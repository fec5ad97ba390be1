//! The broker's pipeline, read top to bottom:
//! decode → validate → verify → authorize → record (dedup) → forward →
//! receipt → ack.
//!
//! Deliveries are taken from the ingress in micro-batches (up to
//! `batch_size` or `batch_window`). The CPU stages run in parallel on the
//! blocking pool; the whole batch is recorded in one store transaction (one
//! fsync); forwards are published with their confirms in flight together;
//! receipts are signed once per sender per batch; then the inputs are acked.
//! Every refusal leaves by one path: a journal event, a signed negative
//! receipt to the sender where it can be identified, and an ack.

pub mod authorize;
pub mod decode;
pub mod receipt;
pub mod record;
pub mod validate;
pub mod verify;

use crate::metrics::Counters;
use crate::register::Register;
use crate::store::Store;
use mev_adapter::transport::{Consumer, Delivery, Outgoing, Route, Transport};
use mev_proto::crypto::{Identity, SignatureVerifier};
use mev_proto::envelope::{Limits, Opened};
use mev_proto::trust::TrustStore;
use record::Verdict;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What every stage may read.
pub struct Context {
    pub register: Arc<Register>,
    pub trust: Arc<TrustStore>,
    pub verifier: Arc<dyn SignatureVerifier>,
    /// The broker's own signing identity (receipts, notices).
    pub identity: Identity,
    pub store: Arc<Store>,
    pub limits: Limits,
    /// How far `sent_at` may be from the clock; `None` = unchecked.
    pub max_clock_skew: Option<chrono::TimeDelta>,
    pub counters: Arc<Counters>,
}

/// Batching settings.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub batch_size: usize,
    pub batch_window: Duration,
}

/// Checks one delivery through the CPU stages.
fn check(
    ctx: &Context,
    bytes: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Opened, Box<decode::Refused>> {
    let opened = decode::run(bytes, &ctx.limits)?;
    validate::run(ctx, &opened, now)?;
    verify::run(ctx, &opened, now)?;
    authorize::run(ctx, &opened)?;
    Ok(opened)
}

/// Consumes the ingress until `shutdown` flips to true.
pub async fn run<T: Transport>(
    ctx: Arc<Context>,
    transport: T,
    mut ingress: Consumer,
    batching: Batching,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            d = ingress.next() => match d { Some(d) => d, None => break },
            _ = shutdown.changed() => break,
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + batching.batch_window;
        while batch.len() < batching.batch_size {
            if let Some(d) = ingress.try_next() {
                batch.push(d);
                continue;
            }
            match tokio::time::timeout_at(deadline, ingress.next()).await {
                Ok(Some(d)) => batch.push(d),
                _ => break,
            }
        }
        process_batch(&ctx, &transport, batch).await;
    }
}

/// Runs one batch through every stage.
pub async fn process_batch<T: Transport>(ctx: &Arc<Context>, transport: &T, batch: Vec<Delivery>) {
    let now = chrono::Utc::now();
    let now_ms = now.timestamp_millis();
    ctx.counters.batches.fetch_add(1, Ordering::Relaxed);

    // CPU stages, in parallel across the blocking pool.
    let bodies: Vec<Arc<Vec<u8>>> = batch.iter().map(|d| Arc::new(d.body.clone())).collect();
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(bodies.len());
    let chunk = bodies.len().div_ceil(workers.max(1));
    let mut tasks = Vec::new();
    for part in bodies.chunks(chunk.max(1)) {
        let part: Vec<Arc<Vec<u8>>> = part.to_vec();
        let ctx = ctx.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            part.iter()
                .map(|b| check(&ctx, b, now).map(|o| (o, b.to_vec())))
                .collect::<Vec<_>>()
        }));
    }
    let mut checked = Vec::with_capacity(batch.len());
    for t in tasks {
        match t.await {
            Ok(v) => checked.extend(v),
            Err(e) => {
                tracing::error!(error = %e, "verification task failed; batch returned to the queue");
                for d in &batch {
                    let _ = d.requeue().await;
                }
                return;
            }
        }
    }

    // Record the whole batch in one transaction.
    let verdicts = {
        let ctx2 = ctx.clone();
        let result = tokio::task::spawn_blocking(move || {
            ctx2.store.write(|t| {
                checked
                    .into_iter()
                    .map(|item| record::apply(&ctx2, t, now_ms, item))
                    .collect::<Result<Vec<_>, _>>()
            })
        })
        .await;
        match result {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "store write failed; batch returned to the queue");
                for d in &batch {
                    let _ = d.requeue().await;
                }
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "store task failed; batch returned to the queue");
                for d in &batch {
                    let _ = d.requeue().await;
                }
                return;
            }
        }
    };

    // Forward, all confirms in flight together.
    let mut forwards = Vec::new();
    let mut forward_index = Vec::new();
    for (i, v) in verdicts.iter().enumerate() {
        if let Verdict::Forward {
            opened, raw, to, ..
        } = v
        {
            forwards.push(Outgoing {
                route: Route::Inbox(to.clone()),
                body: raw.as_slice().into(),
                message_id: opened.header.message_id.clone(),
            });
            forward_index.push(i);
        }
    }
    let results = transport.publish_batch(forwards).await;
    let mut failed = vec![false; verdicts.len()];
    let mut confirmed = Vec::new();
    for (i, r) in forward_index.into_iter().zip(results) {
        match r {
            Ok(()) => {
                if let Verdict::Forward { opened, .. } = &verdicts[i] {
                    confirmed.push(opened.header.message_id.clone());
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "forward failed; message returned to the queue");
                failed[i] = true;
            }
        }
    }
    if let Err(e) = ctx.store.mark_forwarded(&confirmed) {
        tracing::warn!(error = %e, "could not mark forwards; they may be forwarded again");
    }

    // Count what is settled now, before the receipts tell the senders.
    for (v, f) in verdicts.iter().zip(&failed) {
        if !f {
            count(ctx, v);
        }
    }

    // Receipts: one signed message per sender per batch.
    let receipt_failed = receipt::send(ctx, transport, &verdicts, &failed, now).await;

    // Ack (or return what could not be forwarded or receipted).
    for (i, (d, v)) in batch.iter().zip(&verdicts).enumerate() {
        // A copy returned to the queue is counted again as a duplicate when it comes back.
        let sender_failed = match v {
            Verdict::Forward { opened, .. } | Verdict::Duplicate { opened } => {
                receipt_failed.contains(&opened.header.sender)
            }
            _ => false,
        };
        if failed[i] || sender_failed {
            let _ = d.requeue().await;
            continue;
        }
        if let Err(e) = d.ack().await {
            tracing::warn!(error = %e, "ack failed; the message will be redelivered and deduplicated");
        }
    }
}

fn count(ctx: &Context, v: &Verdict) {
    match v {
        Verdict::Forward {
            opened,
            again: false,
            ..
        } => ctx.counters.accepted(kind_name(opened)),
        Verdict::Forward { .. } | Verdict::Duplicate { .. } => {
            ctx.counters.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        Verdict::Reject(r) => ctx.counters.rejected(r.rejection.code.as_code()),
        Verdict::Garbage(r) => {
            ctx.counters.garbage.fetch_add(1, Ordering::Relaxed);
            ctx.counters.rejected(r.rejection.code.as_code());
        }
    }
}

fn kind_name(opened: &Opened) -> &'static str {
    match opened.kind() {
        mev_proto::Kind::Request => "request",
        mev_proto::Kind::Reply => "reply",
        mev_proto::Kind::Status => "status",
        _ => "other",
    }
}
