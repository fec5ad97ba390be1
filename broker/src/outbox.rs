//! The broker's outbox: publishes, in order, what the pipeline (forwards,
//! receipts) and the deadline timers (notices) put in the store, and removes
//! an entry only once RabbitMQ has confirmed it.
//!
//! The outbox is [`mev_store::outbox`]'s, shared with the adapter: its table
//! protocol in the store ([`crate::store::Entries`] says what an entry is:
//! a JSON [`crate::store::OutboxEntry`] whose envelope is in a journal
//! entry) and its pipelined drain ([`drain::run`]: up to
//! [`ROUNDS_IN_FLIGHT`] rounds of up to [`TAKE`] messages awaiting their
//! confirms; after a failure, or once a recipient whose entries a read
//! skipped may receive again, and at least every [`SWEEP`], a read again
//! from the oldest entry). This module gives it the broker's pacing and what
//! the broker does after a round: the counters, and declaring an
//! unroutable inbox again before the next try.
//!
//! What RabbitMQ confirmed is removed, and its delivery journalled, by the
//! store's next write transaction (the pipeline's next batch, most often);
//! the drain writes one itself once [`REMOVE_AT`] entries wait, after
//! [`REMOVE_IDLE`] idle, before a read from the oldest entry and at stop.
//!
//! Whatever cannot be delivered stays on disk and is retried (KZ order §9;
//! Tatarstan §1.3): an outage or a lost connection backs off every
//! recipient; a nack (a full inbox with `x-overflow = reject-publish`) or a
//! returned, unroutable message backs off only that recipient, so one stuck
//! agency does not hold up the others. Back-off doubles from 50 ms to 5 s
//! with jitter. lapin's recovery rejects confirms in flight; those entries
//! stay and are published again, and receivers drop the copies by message id.

use crate::metrics::Counters;
use crate::store::{Purpose, Queued, Store};
use mev_store::outbox::drain::{self, Hooks};
use mev_transport::{Topology, TransportError};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Entries published per round at most, their confirms in flight together.
const TAKE: usize = 512;
/// Rounds awaiting their confirms at once.
pub const ROUNDS_IN_FLIGHT: usize = 4;
/// Entries looked at per round to find `TAKE` whose recipient is not backing off.
const SCAN: usize = 16 * 1024;
/// Longest wait between two looks at the store, whatever happens.
const IDLE: Duration = Duration::from_secs(1);
/// Longest the drain goes without reading again from the oldest entry.
const SWEEP: Duration = Duration::from_secs(30);
/// How long a stop waits for the confirms of rounds in flight.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// Confirmed entries wait for the store's next write transaction (see
/// `OutboxState::outbox_confirmed`) until this many wait, or the drain has been
/// idle this long: then it removes them in a transaction of its own (lazy:
/// the next durable commit carries it to disk).
const REMOVE_AT: usize = 4 * TAKE;
const REMOVE_IDLE: Duration = Duration::from_millis(100);

/// The broker's pacing of the drain.
fn config() -> drain::Config {
    drain::Config {
        take: TAKE,
        rounds: ROUNDS_IN_FLIGHT,
        scan: SCAN,
        idle: IDLE,
        sweep: SWEEP,
        remove_at: REMOVE_AT,
        remove_idle: REMOVE_IDLE,
        durable_when_idle: false,
        stop_wait: STOP_WAIT,
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_secs(5),
    }
}

/// What the broker does after a round: counts, and declares an unroutable
/// inbox again.
struct Broker<T> {
    transport: T,
    counters: Arc<Counters>,
}

impl<T: Topology> Hooks<Queued> for Broker<T> {
    fn settled(&mut self, items: &[(u64, Queued)], results: &[Result<(), TransportError>]) {
        for (i, (_, q)) in items.iter().enumerate() {
            let counter = match results.get(i) {
                Some(Ok(())) => match q.entry.purpose {
                    Purpose::Forward => &self.counters.forwarded,
                    Purpose::Receipt => &self.counters.receipts,
                    Purpose::Notice => &self.counters.notices,
                },
                _ => &self.counters.publish_failures,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn unroutable(&mut self, agency: &str) {
        tracing::warn!(%agency, "inbox unroutable; declaring it again");
        if let Err(e) = self.transport.declare_inbox(agency).await {
            tracing::warn!(%agency, error = %e, "cannot declare the inbox");
        }
    }
}

/// Drains the outbox until `shutdown` flips to true.
pub async fn run<T: Topology>(
    store: Arc<Store>,
    transport: T,
    counters: Arc<Counters>,
    shutdown: watch::Receiver<bool>,
) {
    let hooks = Broker {
        transport: transport.clone(),
        counters,
    };
    drain::run(store, transport, hooks, config(), shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::prelude::*;
    use mev_transport::{Confirms, Consumer, Names, Outgoing, QueueDepth, Route, Transport};
    use std::collections::HashMap;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;
    use tokio::time::Instant;

    /// Confirms every publish after `DELAY`, nacking those to an inbox while
    /// it is full; records what was confirmed.
    #[derive(Clone)]
    struct Scripted {
        names: Names,
        full: Arc<AtomicBool>,
        confirmed: Arc<Mutex<Vec<String>>>,
    }

    const DELAY: Duration = Duration::from_secs(1);
    const FULL: &str = "X";

    impl Transport for Scripted {
        fn names(&self) -> &Names {
            &self.names
        }
        async fn publish_batch(&self, messages: Vec<Outgoing>) -> Vec<Result<(), TransportError>> {
            self.publish_start(messages).await.await
        }
        #[allow(clippy::async_yields_async)]
        async fn publish_start(&self, messages: Vec<Outgoing>) -> Confirms {
            // Whether the inbox takes a message is decided when it arrives.
            let results: Vec<Result<(), TransportError>> = messages
                .iter()
                .map(|m| match &m.route {
                    Route::Inbox(to) if to == FULL && self.full.load(Ordering::SeqCst) => {
                        Err(TransportError::Nacked)
                    }
                    _ => Ok(()),
                })
                .collect();
            let confirmed = self.confirmed.clone();
            Box::pin(async move {
                tokio::time::sleep(DELAY).await;
                let mut c = confirmed.lock().unwrap();
                for (m, r) in messages.iter().zip(&results) {
                    if r.is_ok() {
                        c.push(m.message_id.clone());
                    }
                }
                results
            })
        }
        async fn consume(&self, _queue: &str, _prefetch: u16) -> Result<Consumer, TransportError> {
            Err(TransportError::Other("not consumed here".into()))
        }
    }

    impl Topology for Scripted {
        async fn declare_ingress(&self) -> Result<(), TransportError> {
            Ok(())
        }
        async fn declare_inbox(&self, _agency: &str) -> Result<(), TransportError> {
            Ok(())
        }
        async fn queue_depth(&self, _queue: &str) -> Result<QueueDepth, TransportError> {
            Err(TransportError::Other("no queues here".into()))
        }
        async fn delete_topology(&self, _agencies: &[String]) -> Result<(), TransportError> {
            Ok(())
        }
    }

    fn enqueue(store: &Store, to: &str, id: &str) {
        store
            .write(|t| crate::store::tests::forward(t, to, id, 0))
            .unwrap();
    }

    /// Entries skipped while their recipient backed off are published once
    /// it takes messages again, even when a later entry of the same
    /// recipient, read past them, went through first (guaranteed delivery:
    /// KZ order §9; Tatarstan §1.3).
    #[tokio::test(start_paused = true)]
    async fn entries_skipped_during_a_back_off_are_published_after_it() {
        let store = Arc::new(Store::in_memory().unwrap());
        store.set_zones(HashMap::new);
        let transport = Scripted {
            names: Names::new("test"),
            full: Arc::new(AtomicBool::new(true)),
            confirmed: Arc::default(),
        };
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(
            store.clone(),
            transport.clone(),
            Arc::new(Counters::default()),
            stop_rx,
        ));
        let start = Instant::now();
        // X's inbox is full: these are nacked after a second, and X backs
        // off (~50 ms); the next read skips them.
        for i in 1..=5 {
            enqueue(&store, FULL, &format!("x{i}"));
        }
        tokio::time::sleep_until(start + DELAY + Duration::from_millis(10)).await;
        // A round for another recipient goes out while X backs off, and
        // stays in flight (its confirm takes a second).
        enqueue(&store, "Y", "y1");
        tokio::time::sleep(Duration::from_millis(10)).await;
        transport.full.store(false, Ordering::SeqCst);
        // X's back-off is over; a new entry for X is read past the skipped
        // ones, while the round for Y is still in flight.
        tokio::time::sleep_until(start + DELAY + Duration::from_millis(200)).await;
        enqueue(&store, FULL, "x6");
        // Well before the next sweep.
        tokio::time::sleep(5 * DELAY).await;
        assert!(5 * DELAY < SWEEP);
        let mut confirmed = transport.confirmed.lock().unwrap().clone();
        confirmed.sort();
        assert_eq!(confirmed, ["x1", "x2", "x3", "x4", "x5", "x6", "y1"]);
        assert_eq!(store.outbox_depth().unwrap(), 0);
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}
