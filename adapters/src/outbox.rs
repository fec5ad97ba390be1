//! The durable outbox: every message the adapter sends is on disk before the
//! send returns, and is published from there until RabbitMQ confirms it.
//!
//! - The **writer** task takes the enqueue requests of all callers (requests,
//!   status updates, the inbox loop's replies with their request marked
//!   handled, dedup marks) and writes every request waiting in its channel in
//!   ONE durable write transaction (group commit: one fsync for many
//!   messages), then answers each caller and wakes the drain. Dedup marks
//!   that only hold back an ack (receipts, replies, notices: see
//!   [`Outbox::mark_handled`]) wait up to [`LINGER`] to ride on the next
//!   such transaction instead of paying a fsync of their own, unless half
//!   the inbox's prefetch is waiting so.
//! - The **drain** task is the outbox's drain shared with the broker
//!   ([`mev_store::outbox::drain`]): it publishes the outbox in sequence
//!   order, in rounds of up to [`BATCH`] messages with their confirms in
//!   flight together and up to [`ROUNDS_IN_FLIGHT`] rounds awaiting
//!   confirms at once, taking what the writer just committed from memory;
//!   has what was confirmed removed (lazily, by the writer's next
//!   transaction: losing a removal only re-publishes, and receivers drop
//!   duplicates by message id; a durable one of its own after [`QUIET`]);
//!   and after a failure waits a capped, jittered exponential back-off (the
//!   link's for a lost connection, the route's for a nack or an unroutable
//!   message) before reading again from the oldest message. What is in the
//!   outbox at start (after a crash or an outage) is drained the same way.

use crate::error::AdapterError;
use crate::store::{self, Store, StoreError};
use crate::transport::{Outgoing, Transport, TransportError};
use mev_store::outbox::drain::{self, Hooks};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Messages published together by the drain.
pub(crate) const BATCH: usize = 256;
/// Enqueue requests written in one transaction at most.
const MAX_GROUP: usize = 1024;
/// The first retry delay after a failed publish.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest retry delay.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Dedup keys forgotten per pruning pass at most.
const PRUNE_LIMIT: usize = 10_000;
/// How long dedup marks wait for a transaction to ride on before they are
/// written in one of their own.
pub(crate) const LINGER: Duration = Duration::from_millis(50);

struct WriteReq {
    messages: Vec<Outgoing>,
    handled: Vec<String>,
    /// Nobody waits on this but an ack: it may wait for company.
    lazy: bool,
    done: oneshot::Sender<Result<(), StoreError>>,
}

enum Msg {
    Write(WriteReq),
    Close,
}

/// The enqueueing side of the outbox.
pub(crate) struct Outbox {
    tx: mpsc::Sender<Msg>,
    depth: Arc<watch::Sender<u64>>,
}

/// What the drain task needs.
pub(crate) struct DrainParts {
    pub store: Arc<Store>,
    pub depth: Arc<watch::Sender<u64>>,
}

impl Outbox {
    /// Starts the writer over `store`; dedup keys older than `retention`
    /// are pruned now and then.
    /// `marks_at`: lingering marks are written without waiting once this
    /// many wait (half the inbox's prefetch: each holds back a delivery's
    /// ack, and the inbox must not run out of deliveries meanwhile).
    pub(crate) fn start(
        store: Arc<Store>,
        retention: Duration,
        marks_at: usize,
    ) -> Result<(Outbox, JoinHandle<()>), StoreError> {
        let outbox = Self::unstarted(&store)?;
        let (tx, rx) = mpsc::channel(4 * MAX_GROUP);
        let writer = tokio::spawn(writer(
            store,
            rx,
            outbox.depth.clone(),
            retention,
            marks_at.clamp(1, MAX_GROUP),
        ));
        Ok((Outbox { tx, ..outbox }, writer))
    }

    fn unstarted(store: &Store) -> Result<Outbox, StoreError> {
        let (depth, _) = watch::channel(store.outbox_len()?);
        let (tx, _) = mpsc::channel(1);
        Ok(Outbox {
            tx,
            depth: Arc::new(depth),
        })
    }

    /// The parts the drain task shares with this outbox.
    pub(crate) fn drain_parts(&self, store: Arc<Store>) -> DrainParts {
        DrainParts {
            store,
            depth: self.depth.clone(),
        }
    }

    /// Puts `messages` in the outbox and marks `handled` keys as handled,
    /// atomically and durably; returns once that is on disk.
    pub(crate) async fn commit(
        &self,
        messages: Vec<Outgoing>,
        handled: Vec<String>,
    ) -> Result<(), AdapterError> {
        let rx = self.enqueue(messages, handled, false).await?;
        rx.await
            .map_err(|_| AdapterError::Closed)?
            .map_err(AdapterError::Store)
    }

    /// Marks `handled` keys as handled durably; returns once that is on disk,
    /// which may be up to [`LINGER`] later than [`commit`](Self::commit)
    /// would: the marks ride on the next transaction written for anyone
    /// else, or get one of their own once they have waited that long. For a
    /// delivery already dealt with whose ack is all that waits on the mark
    /// (a receipt, a reply surfaced to its caller): at low load each would
    /// otherwise cost a fsync.
    pub(crate) async fn mark_handled(&self, handled: Vec<String>) -> Result<(), AdapterError> {
        let rx = self.enqueue(Vec::new(), handled, true).await?;
        rx.await
            .map_err(|_| AdapterError::Closed)?
            .map_err(AdapterError::Store)
    }

    async fn enqueue(
        &self,
        messages: Vec<Outgoing>,
        handled: Vec<String>,
        lazy: bool,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, AdapterError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Msg::Write(WriteReq {
                messages,
                handled,
                lazy,
                done,
            }))
            .await
            .map_err(|_| AdapterError::Closed)?;
        Ok(rx)
    }

    /// Messages on disk not yet confirmed by RabbitMQ.
    pub(crate) fn depth(&self) -> u64 {
        *self.depth.borrow()
    }

    /// Waits until the outbox is empty, for at most `timeout`.
    pub(crate) async fn flush(&self, timeout: Duration) -> Result<(), AdapterError> {
        let mut rx = self.depth.subscribe();
        let drained = tokio::time::timeout(timeout, async {
            let _ = rx.wait_for(|d| *d == 0).await;
        })
        .await;
        drained.map_err(|_| AdapterError::Timeout("the outbox to drain"))
    }

    /// Stops the writer once what is already queued is written.
    pub(crate) async fn close(&self) {
        let _ = self.tx.send(Msg::Close).await;
    }
}

/// The writer's loop; its commits wake the drain (the shared outbox does).
async fn writer(
    store: Arc<Store>,
    mut rx: mpsc::Receiver<Msg>,
    depth: Arc<watch::Sender<u64>>,
    retention: Duration,
    marks_at: usize,
) {
    let prune_every = (retention / 16).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let mut last_prune: Option<Instant> = None;
    // Lazy marks waiting for a transaction, and when they stop waiting.
    let mut lingering: Vec<WriteReq> = Vec::new();
    let mut due: Option<tokio::time::Instant> = None;
    loop {
        if last_prune.is_none_or(|t| t.elapsed() >= prune_every) {
            last_prune = Some(Instant::now());
            let cutoff = store::now_ms().saturating_sub(retention.as_millis() as u64);
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.prune(cutoff, PRUNE_LIMIT)).await {
                Ok(Ok(n)) if n == PRUNE_LIMIT => last_prune = None,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "pruning the dedup index failed"),
                Err(e) => tracing::warn!(error = %e, "pruning the dedup index panicked"),
            }
        }
        let first = match due {
            Some(at) => tokio::select! {
                m = rx.recv() => m,
                _ = tokio::time::sleep_until(at) => {
                    due = None;
                    write_group(&store, std::mem::take(&mut lingering), &depth).await;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let mut group = Vec::new();
        let mut closing = first.is_none();
        let mut next = first;
        while let Some(m) = next.take() {
            match m {
                Msg::Write(w) if w.lazy => lingering.push(w),
                Msg::Write(w) => group.push(w),
                Msg::Close => closing = true,
            }
            if !closing && group.len() + lingering.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        if group.is_empty() && !closing && lingering.len() < marks_at {
            // Only a few marks so far: they wait for company, up to LINGER.
            if !lingering.is_empty() && due.is_none() {
                due = Some(tokio::time::Instant::now() + LINGER);
            }
            continue;
        }
        group.append(&mut lingering);
        due = None;
        if !group.is_empty() {
            write_group(&store, group, &depth).await;
        }
        if closing {
            break;
        }
    }
    // The adapter stops (or was dropped): close the store cleanly, so the
    // next start replays nothing. Blocking I/O, off the runtime's threads.
    if let Some(reason) = store.failure() {
        tracing::error!(%reason, "the adapter's store failed; its redo log is left for the next start to replay");
        return;
    }
    let s = store.clone();
    match tokio::task::spawn_blocking(move || s.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "closing the store failed; the next start replays its redo log")
        }
        Err(e) => tracing::warn!(error = %e, "closing the store panicked"),
    }
}

/// Writes a group of requests in one durable transaction and answers each.
async fn write_group(store: &Arc<Store>, group: Vec<WriteReq>, depth: &watch::Sender<u64>) {
    let mut messages = Vec::new();
    let mut handled = Vec::new();
    let mut waiters = Vec::with_capacity(group.len());
    for w in group {
        messages.extend(w.messages);
        handled.extend(w.handled);
        waiters.push(w.done);
    }
    let n = messages.len() as u64;
    // Counted before the commit, so the drain never removes what is not counted yet.
    depth.send_modify(|d| *d += n);
    let s = store.clone();
    let result =
        tokio::task::spawn_blocking(move || s.commit(&messages, &handled, store::now_ms()))
            .await
            .unwrap_or_else(|e| Err(StoreError::Database(format!("the commit panicked: {e}"))));
    if let Err(e) = &result {
        tracing::error!(error = %e, messages = n, "outbox commit failed");
        depth.send_modify(|d| *d = d.saturating_sub(n));
    }
    for w in waiters {
        let _ = w.send(result.clone());
    }
}

/// Rounds of up to [`BATCH`] messages awaiting their confirms at once: the
/// next round is published while earlier ones wait, so a message written
/// during a round does not wait for it.
pub(crate) const ROUNDS_IN_FLIGHT: usize = 4;
/// How long the outbox stays idle before its lazy removals are made
/// durable, so a restart does not re-publish what was long confirmed.
const QUIET: Duration = Duration::from_secs(1);

/// The adapter's pacing of the shared drain.
fn drain_config() -> drain::Config {
    drain::Config {
        take: BATCH,
        rounds: ROUNDS_IN_FLIGHT,
        // Confirmed entries waiting for the writer's next transaction at
        // most; past that the drain removes them in a transaction of its
        // own (draining a backlog, nothing new is written).
        remove_at: 4 * BATCH,
        remove_idle: QUIET,
        durable_when_idle: true,
        backoff_min: BACKOFF_MIN,
        backoff_max: BACKOFF_MAX,
        ..drain::Config::default()
    }
}

/// The depth gauge follows the confirms.
struct Depth(Arc<watch::Sender<u64>>);

impl Hooks<Outgoing> for Depth {
    fn settled(&mut self, _items: &[(u64, Outgoing)], results: &[Result<(), TransportError>]) {
        let n = results.iter().filter(|r| r.is_ok()).count() as u64;
        if n > 0 {
            self.0.send_modify(|d| *d = d.saturating_sub(n));
        }
    }
}

/// Publishes the outbox until `stop` is set (or its sender dropped); at
/// stop, waits for the confirms in flight and removes what they confirmed,
/// durably.
pub(crate) async fn drain<T: Transport>(
    transport: T,
    parts: DrainParts,
    stop: watch::Receiver<bool>,
) {
    let DrainParts { store, depth } = parts;
    drain::run(store, transport, Depth(depth), drain_config(), stop).await
}

#[cfg(test)]
mod tests;
