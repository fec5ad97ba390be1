//! The broker's pipeline, read top to bottom:
//! decode → validate → verify → authorize → record (dedup, outbox) →
//! receipt (outbox) → ack. Publishing is the outbox's job ([`crate::outbox`]).
//!
//! Deliveries are taken from the ingress in micro-batches (up to
//! `batch_size` or `batch_window`; the window is waited only while another
//! batch is in flight). The CPU stages run in parallel on the
//! blocking pool; the whole batch — dedup index, open requests, envelopes,
//! events, the forwards and the receipts (signed once per sender per batch)
//! placed in the outbox — is one store transaction (one fsync); only then
//! are the inputs acked, with one AMQP `multiple` ack per channel once every
//! earlier batch has settled its own ([`AckTurn`]). A crash before the ack redelivers the inputs, which
//! are recognised by id and only get their receipt again.
//! Every refusal leaves by one path: a journal event, a signed negative
//! receipt to the sender where it can be identified, and an ack.

pub mod authorize;
pub mod decode;
pub mod ratelimit;
pub mod receipt;
pub mod record;
pub mod validate;
pub mod verify;

pub use crate::context::Context;
use crate::store::prelude::*;
use mev_proto::envelope::Opened;
use mev_transport::{Consumer, Delivery};
use record::Verdict;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A batch closes once its bodies add up to this many bytes, whatever
/// `batch_size` says, so that a stream of large messages cannot make one
/// batch (and the copies decoding makes of it) hold gigabytes.
pub const BATCH_MAX_BYTES: usize = 32 * 1024 * 1024;

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
    ratelimit::run(ctx, &opened)?;
    authorize::run(ctx, &opened)?;
    Ok(opened)
}

/// Batches processed at once: while one waits for its fsync, the next is
/// decoded and verified. Their store transactions still commit one at a
/// time, each atomically, and no message can depend on another that is not
/// committed yet (a reply exists only once its request was forwarded, which
/// is after its commit; copies of one message are told apart by the dedup
/// index whichever commits first).
pub const BATCHES_IN_FLIGHT: usize = 2;

/// Consumes the ingress until `shutdown` flips to true; returns once every
/// batch taken is processed.
pub async fn run(
    ctx: Arc<Context>,
    mut ingress: Consumer,
    batching: Batching,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut in_flight = tokio::task::JoinSet::new();
    let mut earlier = None;
    loop {
        let first = tokio::select! {
            d = ingress.next() => match d { Some(d) => d, None => break },
            _ = shutdown.changed() => break,
            // A failed store accepts nothing more: stop taking deliveries
            // (what is unacked returns to the queue when the broker exits).
            _ = ctx.store.failed() => break,
        };
        let mut bytes = first.body.len();
        let mut batch = vec![first];
        while let Some(r) = in_flight.try_join_next() {
            log_failed(r);
        }
        // With no batch in flight the store and the checks are idle: waiting
        // for more would only add the window to this message's latency. The
        // window gathers a batch while another one is being processed, which
        // is when batching pays (one fsync for many).
        let window = if in_flight.is_empty() {
            Duration::ZERO
        } else {
            batching.batch_window
        };
        let deadline = tokio::time::Instant::now() + window;
        while batch.len() < batching.batch_size && bytes < BATCH_MAX_BYTES {
            let d = match ingress.try_next() {
                Some(d) => d,
                None if window.is_zero() => break,
                None => match tokio::time::timeout_at(deadline, ingress.next()).await {
                    Ok(Some(d)) => d,
                    _ => break,
                },
            };
            bytes += d.body.len();
            batch.push(d);
        }
        while in_flight.len() >= BATCHES_IN_FLIGHT {
            if let Some(r) = in_flight.join_next().await {
                log_failed(r);
            }
        }
        let ctx = ctx.clone();
        let (done, next) = tokio::sync::oneshot::channel();
        let turn = AckTurn {
            earlier: earlier.replace(next),
            done,
        };
        in_flight.spawn(async move { process_batch(&ctx, batch, turn).await });
    }
    while in_flight.join_next().await.is_some() {}
}

fn log_failed(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        // Its deliveries stay unacked: RabbitMQ redelivers them when the
        // channel closes, and they are recognised by id.
        tracing::error!(error = %e, "a batch task failed");
    }
}

/// A batch's place in the order its deliveries were taken. One `multiple`
/// ack covers every earlier delivery of its channel, so a batch acks that
/// way only once every earlier batch has settled its own (acked them, or
/// returned them to the queue). `earlier` resolves to whether everything
/// before this batch is settled; a batch that failed without settling (a
/// panic) drops its sender, and from then on batches ack one by one.
struct AckTurn {
    earlier: Option<tokio::sync::oneshot::Receiver<bool>>,
    done: tokio::sync::oneshot::Sender<bool>,
}

/// Runs one batch through every stage.
///
/// Each body is moved, never copied, from its delivery through the checks
/// into the store transaction, so a batch holds one copy of every message
/// (plus what decoding extracts from it): a stream of large messages costs
/// about `batch_size × size`, not a multiple of it.
async fn process_batch(ctx: &Arc<Context>, mut batch: Vec<Delivery>, turn: AckTurn) {
    let recorded = record_batch(ctx, &mut batch).await;
    let settled = recorded || requeue_all(&batch).await;
    ack_in_turn(&batch, recorded, settled, turn).await;
}

/// Once every earlier batch has settled, acks `batch` if it was `recorded`
/// (durable): one `multiple` ack per channel, or one by one if an earlier
/// batch ended without settling its deliveries. Then tells the next batch
/// whether everything up to this one is settled (`settled`: this batch's
/// own deliveries were recorded or returned to the queue).
async fn ack_in_turn(batch: &[Delivery], recorded: bool, settled: bool, turn: AckTurn) {
    let in_order = match turn.earlier {
        Some(earlier) => earlier.await.unwrap_or(false),
        None => true,
    };
    if recorded {
        // Durable now: ack the inputs. Delivery is the outbox's job.
        let acked = if in_order {
            mev_transport::ack_all(batch).await
        } else {
            tracing::warn!(
                "an earlier batch ended without settling its deliveries; acking one by one"
            );
            ack_each(batch).await
        };
        if let Err((unacked, e)) = acked {
            // The channel is gone: RabbitMQ returns every unacked delivery to
            // the queue, so the rest need not wait for their own failure.
            tracing::warn!(
                error = %e,
                unacked,
                "ack failed; these will be redelivered and deduplicated"
            );
        }
    }
    let _ = turn.done.send(settled && in_order);
}

async fn ack_each(batch: &[Delivery]) -> Result<(), (usize, mev_transport::TransportError)> {
    for (i, d) in batch.iter().enumerate() {
        d.ack().await.map_err(|e| (batch.len() - i, e))?;
    }
    Ok(())
}

/// Checks and records one batch; true once it is durable, false if it must
/// go back to the queue.
async fn record_batch(ctx: &Arc<Context>, batch: &mut [Delivery]) -> bool {
    let started = std::time::Instant::now();
    let now = ctx.clock.now();
    let now_ms = now.timestamp_millis();
    ctx.counters.batches.fetch_add(1, Ordering::Relaxed);

    // CPU stages, in parallel across the blocking pool.
    let mut bodies: Vec<Vec<u8>> = batch
        .iter_mut()
        .map(|d| std::mem::take(&mut d.body))
        .collect();
    let workers = cores().min(bodies.len());
    let chunk = bodies.len().div_ceil(workers.max(1)).max(1);
    let mut tasks = Vec::new();
    while !bodies.is_empty() {
        // Front to back, so the results come back in delivery order.
        let rest = bodies.split_off(chunk.min(bodies.len()));
        let part = std::mem::replace(&mut bodies, rest);
        let ctx = ctx.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            part.into_iter()
                .map(|b| (check(&ctx, &b, now), b))
                .collect::<Vec<_>>()
        }));
    }
    let mut checked = Vec::with_capacity(batch.len());
    for t in tasks {
        match t.await {
            Ok(v) => checked.extend(v),
            Err(e) => {
                tracing::error!(error = %e, "verification task failed; batch returned to the queue");
                return false;
            }
        }
    }

    // Record the whole batch, its forwards and its signed receipts in one
    // transaction: one fsync, after which everything is in the outbox.
    let verdicts = {
        let ctx2 = ctx.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut sla = Vec::new();
            ctx2.store
                .write(|t| {
                    let verdicts = checked
                        .into_iter()
                        .map(|(item, raw)| record::apply(&ctx2, t, now_ms, item, raw, &mut sla))
                        .collect::<Result<Vec<_>, _>>()?;
                    receipt::enqueue(&ctx2, t, &verdicts, now)?;
                    Ok(verdicts)
                })
                .map(|v| (v, sla))
        })
        .await;
        match result {
            Ok(Ok((v, sla))) => {
                ctx.counters.sla(&sla);
                ctx.counters.routed(started.elapsed(), batch.len());
                v
            }
            Ok(Err(e)) => {
                if e.is_fatal() {
                    // Fail-stop: nothing of this batch is acked; the server
                    // stops the broker (see `server::run`).
                    tracing::error!(error = %e, "the store failed; batch returned to the queue, not acked");
                } else {
                    tracing::error!(error = %e, "store write failed; batch returned to the queue");
                }
                return false;
            }
            Err(e) => {
                tracing::error!(error = %e, "store task failed; batch returned to the queue");
                return false;
            }
        }
    };

    for v in &verdicts {
        count(ctx, v);
    }
    true
}

/// The cores to spread a batch's checks over, read once: on Linux each
/// `available_parallelism` call opens and reads the cgroup's CPU quota files,
/// which at low load, one message per batch, was 1 % of the process's CPU.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// Returns every delivery to the queue; false if some could not be (they
/// come back anyway when their channel closes, but until then they are
/// neither acked nor returned).
async fn requeue_all(batch: &[Delivery]) -> bool {
    let mut all = true;
    for d in batch {
        all &= d.requeue().await.is_ok();
    }
    all
}

fn count(ctx: &Context, v: &Verdict) {
    match v {
        Verdict::Forward { opened, to } => {
            ctx.counters
                .accepted_between(kind_name(opened), &opened.header.sender, to)
        }
        Verdict::Duplicate { .. } => {
            ctx.counters.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        Verdict::Reject(r) => refused(ctx, r),
        Verdict::Garbage(r) => {
            ctx.counters.garbage.fetch_add(1, Ordering::Relaxed);
            refused(ctx, r);
        }
    }
}

/// Counts a refusal and keeps it among the latest shown to operators.
fn refused(ctx: &Context, r: &decode::Refused) {
    let sender = r.sender.as_deref().unwrap_or_default();
    ctx.counters
        .refused(sender, &r.message_id, &r.service, &r.rejection);
}

fn kind_name(opened: &Opened) -> &'static str {
    match opened.kind() {
        mev_proto::Kind::Request => "request",
        mev_proto::Kind::Reply => "reply",
        mev_proto::Kind::Status => "status",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::register::Register;
    use crate::store::Store;
    use mev_transport::{AckHandle, BoxFuture, TransportError};
    use std::sync::Mutex;
    use tokio::sync::oneshot;

    type Log = Arc<Mutex<Vec<(usize, &'static str)>>>;

    /// Records each ack as (delivery, how); every delivery is on channel 1.
    struct Recorder {
        index: usize,
        log: Log,
    }

    impl AckHandle for Recorder {
        fn ack(&self) -> BoxFuture<'_, Result<(), TransportError>> {
            self.log.lock().unwrap().push((self.index, "ack"));
            Box::pin(std::future::ready(Ok(())))
        }
        fn requeue(&self) -> BoxFuture<'_, Result<(), TransportError>> {
            self.log.lock().unwrap().push((self.index, "requeue"));
            Box::pin(std::future::ready(Ok(())))
        }
        fn subscription(&self) -> Option<u64> {
            Some(1)
        }
        fn ack_through(&self) -> BoxFuture<'_, Result<(), TransportError>> {
            self.log.lock().unwrap().push((self.index, "through"));
            Box::pin(std::future::ready(Ok(())))
        }
    }

    fn batch(log: &Log, indexes: std::ops::Range<usize>) -> Vec<Delivery> {
        indexes
            .map(|index| {
                let acker = Recorder {
                    index,
                    log: log.clone(),
                };
                Delivery::new(Vec::new(), false, Box::new(acker))
            })
            .collect()
    }

    /// `ack_in_turn` for deliveries `indexes`, after `earlier`, telling `done`.
    async fn ack(
        log: &Log,
        indexes: std::ops::Range<usize>,
        recorded: bool,
        earlier: Option<oneshot::Receiver<bool>>,
        done: oneshot::Sender<bool>,
    ) {
        ack_in_turn(
            &batch(log, indexes),
            recorded,
            recorded,
            AckTurn { earlier, done },
        )
        .await;
    }

    /// Lets every spawned task run as far as it can.
    async fn settle_tasks() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_lone_delivery_to_an_idle_pipeline_does_not_wait_for_the_window() {
        let register =
            Register::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas"))
                .unwrap();
        let pki = mev_devpki::DevPki::new().unwrap();
        let ctx = Arc::new(Context::new(
            Arc::new(register),
            Arc::new(pki.trust_store().unwrap()),
            pki.issue("MEV-EXCHANGE", mev_devpki::KeyAlg::Ed25519)
                .unwrap(),
            Arc::new(Store::in_memory().unwrap()),
        ));
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let (stop, shutdown) = watch::channel(false);
        // A window far longer than the test may take: only a batch that does
        // not wait for it can be recorded and acked in time.
        let batching = Batching {
            batch_size: 256,
            batch_window: Duration::from_secs(600),
        };
        let pipeline = tokio::spawn(run(ctx, Consumer::new(rx), batching, shutdown));
        let log: Log = Arc::default();
        let acker = Recorder {
            index: 0,
            log: log.clone(),
        };
        // Bytes that are no envelope: recorded as garbage, then acked.
        tx.send(Delivery::new(
            b"no envelope".to_vec(),
            false,
            Box::new(acker),
        ))
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(30), async {
            while log.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("acked without waiting for the batch window");
        assert_eq!(*log.lock().unwrap(), [(0, "through")]);
        stop.send(true).unwrap();
        pipeline.await.unwrap();
    }

    #[tokio::test]
    async fn a_batch_acks_only_after_the_batch_before_it_has_settled() {
        let log: Log = Arc::default();
        let (first_done, first) = oneshot::channel();
        let (second_done, second) = oneshot::channel();
        let later = log.clone();
        let task =
            tokio::spawn(async move { ack(&later, 3..6, true, Some(first), second_done).await });
        settle_tasks().await;
        // Its `multiple` ack would also cover the earlier batch's deliveries,
        // which may not be durable yet: nothing is acked until that batch says so.
        assert!(log.lock().unwrap().is_empty());
        ack(&log, 0..3, true, None, first_done).await;
        task.await.unwrap();
        assert_eq!(*log.lock().unwrap(), [(2, "through"), (5, "through")]);
        assert!(
            second.await.unwrap(),
            "everything up to the second batch is settled"
        );
    }

    #[tokio::test]
    async fn after_a_batch_ends_unsettled_later_batches_ack_one_by_one() {
        let log: Log = Arc::default();
        // The first batch panicked: its sender is dropped without a word.
        let (first_done, first) = oneshot::channel::<bool>();
        drop(first_done);
        let (second_done, second) = oneshot::channel();
        let (third_done, third) = oneshot::channel();
        ack(&log, 0..2, true, Some(first), second_done).await;
        // The broken chain is passed on: the third batch acks one by one too.
        ack(&log, 2..4, true, Some(second), third_done).await;
        assert_eq!(
            *log.lock().unwrap(),
            [(0, "ack"), (1, "ack"), (2, "ack"), (3, "ack")]
        );
        assert!(!third.await.unwrap());
    }

    #[tokio::test]
    async fn a_batch_that_could_not_be_returned_to_the_queue_breaks_the_chain() {
        let log: Log = Arc::default();
        let (first_done, first) = oneshot::channel();
        let (second_done, second) = oneshot::channel();
        // Not recorded, and its requeue failed: nothing acked, chain broken.
        ack(&log, 0..2, false, None, first_done).await;
        ack(&log, 2..5, true, Some(first), second_done).await;
        assert_eq!(*log.lock().unwrap(), [(2, "ack"), (3, "ack"), (4, "ack")]);
        assert!(!second.await.unwrap());
    }
}
