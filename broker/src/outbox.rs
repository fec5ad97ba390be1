//! The broker's outbox: publishes, in order, what the pipeline (forwards,
//! receipts) and the deadline timers (notices) put in the store, and removes
//! an entry only once RabbitMQ has confirmed it.
//!
//! Publishing is pipelined: up to [`ROUNDS_IN_FLIGHT`] rounds of up to
//! [`TAKE`] messages await their confirms while the next round is read and
//! published, so a message committed during a round does not wait for it.
//! Rounds are read from a cursor past the last entry taken. After a failure,
//! or once a recipient whose entries a read skipped (it was backing off) may
//! receive again, no new round starts until those in flight are done, and
//! the next read starts again from the oldest entry, so whatever failed or
//! was skipped is taken again; so it does at least every [`SWEEP`].
//!
//! What RabbitMQ confirmed is removed, and its delivery journalled, by the
//! store's next write transaction (the pipeline's next batch, most often),
//! not by one of its own per round; the drain writes one itself once
//! [`REMOVE_AT`] entries wait, after [`REMOVE_IDLE`] idle, before a read
//! from the oldest entry and at stop.
//!
//! Whatever cannot be delivered stays on disk and is retried (KZ order §9;
//! Tatarstan §1.3): an outage or a lost connection backs off every
//! recipient; a nack (a full inbox with `x-overflow = reject-publish`) or a
//! returned, unroutable message backs off only that recipient, so one stuck
//! agency does not hold up the others. Back-off doubles from 50 ms to 5 s
//! with jitter ([`Backoff`]). An unroutable inbox is declared again before the next try.
//! lapin's recovery rejects confirms in flight; those entries stay and are
//! published again, and receivers drop the copies by message id.

use crate::metrics::Counters;
use crate::store::{Event, EventKind, OutboxEntry, Purpose, Store};
use mev_transport::backoff::Backoff;
use mev_transport::{Outgoing, Route, Topology, TransportError};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Entries published per round at most, their confirms in flight together.
const TAKE: usize = 512;
/// Rounds awaiting their confirms at once.
pub const ROUNDS_IN_FLIGHT: usize = 4;
/// Entries looked at per round to find `TAKE` whose recipient is not backing off.
const SCAN: usize = 16 * 1024;
/// Longest wait between two looks at the store, whatever happens.
const IDLE: Duration = Duration::from_secs(1);
/// Longest the drain goes without reading again from the oldest entry: a
/// sweep, so that an entry left behind the cursor by any path waits at most
/// this long, not for ever.
const SWEEP: Duration = Duration::from_secs(30);
/// How long a stop waits for the confirms of rounds in flight.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// Confirmed entries wait for the store's next write transaction (see
/// `Store::outbox_confirmed`) until this many wait, or the drain has been
/// idle this long: then it removes them in a transaction of its own.
const REMOVE_AT: usize = 4 * TAKE;
const REMOVE_IDLE: Duration = Duration::from_millis(100);

fn default_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_secs(5))
}

struct Waiting {
    backoff: Backoff,
    until: Instant,
}

/// A round published and awaiting its confirms.
struct Round {
    sent: Vec<(u64, OutboxEntry)>,
    /// Entries dropped without publishing (no envelope), to remove.
    dropped: Vec<u64>,
    confirms: JoinHandle<Vec<Result<(), TransportError>>>,
}

/// The drain's state between rounds.
struct Drain<T> {
    store: Arc<Store>,
    transport: T,
    counters: Arc<Counters>,
    /// Every recipient backs off after a lost link.
    global: Option<Waiting>,
    /// Recipients backing off after a nack or an unroutable message.
    routes: HashMap<String, Waiting>,
    in_flight: VecDeque<Round>,
    /// The next read starts here (past every entry in flight).
    cursor: u64,
    /// A round failed, or a recipient whose entries were skipped takes
    /// messages again: start no new round until those in flight are done,
    /// then read again from the oldest entry.
    rescan: bool,
    /// Recipients whose entries a read skipped (they were backing off), so
    /// that some of theirs are behind the cursor until the next rescan.
    skipped: HashSet<String>,
    /// When the last read from the oldest entry was.
    swept: Instant,
    /// Since when the drain has been idle with confirmed entries waiting
    /// for a write transaction.
    confirmed_since: Option<Instant>,
}

/// Drains the outbox until `shutdown` flips to true.
pub async fn run<T: Topology>(
    store: Arc<Store>,
    transport: T,
    counters: Arc<Counters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut d = Drain {
        store,
        transport,
        counters,
        global: None,
        routes: HashMap::new(),
        in_flight: VecDeque::new(),
        cursor: 0,
        rescan: false,
        skipped: HashSet::new(),
        swept: Instant::now(),
        confirmed_since: None,
    };
    loop {
        if *shutdown.borrow() {
            // What RabbitMQ confirmed is removed before stopping, so a
            // restart does not publish it again; a round whose confirms do
            // not come in time stays and is published again (receivers
            // drop the copies by id).
            while let Some(round) = d.in_flight.pop_front() {
                let Round {
                    sent,
                    dropped,
                    confirms,
                } = round;
                if let Ok(Ok(results)) = tokio::time::timeout(STOP_WAIT, confirms).await {
                    d.finish_round(sent, dropped, results, Instant::now()).await;
                }
            }
            d.remove_confirmed().await;
            return;
        }
        let now = Instant::now();
        if d.skipped_may_go(now) || now >= d.swept + SWEEP {
            // Their entries are behind the cursor: a later entry of theirs,
            // read past them, must not be the only one published.
            d.rescan = true;
        }
        if d.in_flight.is_empty() && (d.rescan || d.link_backoff_ended(now)) {
            // Take again what failed, or waited for a back-off to end; not
            // what was delivered.
            d.remove_confirmed().await;
            d.cursor = 0;
            d.rescan = false;
            d.skipped.clear();
            d.swept = now;
        }
        let held = d.rescan || d.global.as_ref().is_some_and(|w| w.until > now);
        if d.in_flight.is_empty() {
            if let Some(w) = d.global.as_ref().filter(|w| w.until > now) {
                tokio::select! {
                    _ = tokio::time::sleep_until(w.until) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        }
        if !held && d.in_flight.len() < ROUNDS_IN_FLIGHT {
            match d.start_round(now).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(()) => {
                    wait(&d.store, &mut shutdown, now + IDLE).await;
                    continue;
                }
            }
        }
        let open = !held && d.in_flight.len() < ROUNDS_IN_FLIGHT;
        if let Some(front) = d.in_flight.front_mut() {
            let confirmed = tokio::select! {
                results = &mut front.confirms => Some(results),
                _ = d.store.outbox_changed(), if open => None,
                _ = shutdown.changed() => None,
            };
            if let Some(results) = confirmed {
                let round = d.in_flight.pop_front().expect("the front round");
                let results = results.unwrap_or_else(|e| {
                    let e = TransportError::Connection(format!("confirm task failed: {e}"));
                    vec![Err(e); round.sent.len()]
                });
                // Back-offs count from now, not from before the wait.
                d.finish_round(round.sent, round.dropped, results, Instant::now())
                    .await;
            }
            continue;
        }
        // Nothing in flight and nothing to publish: wait for new entries,
        // the end of a recipient's back-off, or at most `IDLE`; what was
        // confirmed waits `REMOVE_IDLE` for a write to go with.
        if d.store.outbox_confirmed_len() > 0 {
            let since = *d.confirmed_since.get_or_insert(now);
            if now >= since + REMOVE_IDLE {
                d.remove_confirmed().await;
                continue;
            }
        } else {
            d.confirmed_since = None;
        }
        let next = d
            .routes
            .values()
            .map(|w| w.until)
            .filter(|u| *u > now)
            .chain(d.confirmed_since.map(|t| t + REMOVE_IDLE))
            .min()
            .unwrap_or(now + IDLE)
            .min(now + IDLE);
        wait(&d.store, &mut shutdown, next).await;
    }
}

impl<T: Topology> Drain<T> {
    /// Whether the link's back-off has ended.
    fn link_backoff_ended(&self, now: Instant) -> bool {
        self.global.as_ref().is_some_and(|w| w.until <= now)
    }

    /// Whether a recipient whose entries were skipped is no longer backing
    /// off (its back-off ended, or a later entry of its went through).
    fn skipped_may_go(&self, now: Instant) -> bool {
        self.skipped
            .iter()
            .any(|r| self.routes.get(r).is_none_or(|w| w.until <= now))
    }

    /// Reads the next round from the cursor and publishes it; `Ok(false)`
    /// when there is nothing to publish, `Err` when the store cannot be read.
    async fn start_round(&mut self, now: Instant) -> Result<bool, ()> {
        let blocked: HashSet<String> = self
            .routes
            .iter()
            .filter(|(_, w)| w.until > now)
            .map(|(r, _)| r.clone())
            .collect();
        let items = loop {
            // A read only when something was committed past the cursor.
            let end = self.store.outbox_end();
            if self.cursor >= end {
                return Ok(false);
            }
            let from = self.cursor;
            // What the last commits put in the outbox is still in memory.
            let mut skipped = HashSet::new();
            let recent =
                self.store
                    .outbox_recent(from, SCAN, TAKE, skip_blocked(&blocked, &mut skipped));
            self.skipped.extend(skipped);
            let read = match recent {
                Some(read) => read,
                None => self.read_store(from, &blocked).await?,
            };
            // Past what was skipped too: it is taken again from the oldest
            // entry once its recipient's back-off ends.
            self.cursor = read.next;
            if !read.items.is_empty() {
                break read.items;
            }
            if read.next == from {
                // Nothing from the cursor on: what was before `end` is gone.
                self.cursor = end;
                return Ok(false);
            }
        };
        let mut dropped = Vec::new();
        let mut batch = Vec::new();
        let mut sent: Vec<(u64, OutboxEntry)> = Vec::new();
        for (seq, entry, body) in items {
            match body {
                Some(body) => {
                    batch.push(Outgoing {
                        route: Route::Inbox(entry.to.clone()),
                        body,
                        message_id: entry.message_id.clone(),
                    });
                    sent.push((seq, entry));
                }
                None => {
                    // Cannot happen: the envelope is written in the same
                    // transaction as its entry. Dropped loudly, not retried forever.
                    tracing::error!(message_id = %entry.message_id, "outbox entry without its envelope; dropped");
                    dropped.push(seq);
                }
            }
        }
        let confirms = tokio::spawn(self.transport.publish_start(batch).await);
        self.in_flight.push_back(Round {
            sent,
            dropped,
            confirms,
        });
        Ok(true)
    }

    /// Reads a round from the store on the blocking pool (what memory does
    /// not hold: a backlog, a restart, a read from the oldest entry).
    async fn read_store(
        &mut self,
        from: u64,
        blocked: &HashSet<String>,
    ) -> Result<crate::store::OutboxRead, ()> {
        let (s, blocked) = (self.store.clone(), blocked.clone());
        let read = tokio::task::spawn_blocking(move || {
            let mut skipped = HashSet::new();
            let read = s.outbox_next(from, SCAN, TAKE, skip_blocked(&blocked, &mut skipped));
            read.map(|r| (r, skipped))
        })
        .await;
        match read {
            Ok(Ok((read, skipped))) => {
                self.skipped.extend(skipped);
                Ok(read)
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the outbox");
                Err(())
            }
            Err(e) => {
                tracing::error!(error = %e, "outbox task failed");
                Err(())
            }
        }
    }

    /// Acts on a round's confirms: removes and journals what was delivered,
    /// backs off what failed.
    async fn finish_round(
        &mut self,
        sent: Vec<(u64, OutboxEntry)>,
        dropped: Vec<u64>,
        results: Vec<Result<(), TransportError>>,
        now: Instant,
    ) {
        let mut done = dropped;
        let mut redeclare = HashSet::new();
        let mut lost_link = false;
        let mut failed = false;
        let mut delivered = Vec::new();
        let at_ms = chrono::Utc::now().timestamp_millis();
        for ((seq, entry), r) in sent.into_iter().zip(results) {
            match r {
                Ok(()) => {
                    done.push(seq);
                    self.routes.remove(&entry.to);
                    if entry.purpose == Purpose::Forward {
                        delivered.push(Event {
                            message_id: entry.message_id.clone(),
                            recipient: entry.to.clone(),
                            ..Event::new(at_ms, EventKind::Delivered)
                        });
                    }
                    match entry.purpose {
                        Purpose::Forward => &self.counters.forwarded,
                        Purpose::Receipt => &self.counters.receipts,
                        Purpose::Notice => &self.counters.notices,
                    }
                    .fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    failed = true;
                    self.counters
                        .publish_failures
                        .fetch_add(1, Ordering::Relaxed);
                    match e {
                        TransportError::Connection(_) => lost_link = true,
                        TransportError::Unroutable(_) => {
                            redeclare.insert(entry.to.clone());
                            back_off(&mut self.routes, &entry.to, now);
                        }
                        _ => back_off(&mut self.routes, &entry.to, now),
                    }
                }
            }
        }
        if failed {
            self.rescan = true;
        }
        if lost_link {
            let w = self.global.get_or_insert_with(|| Waiting {
                backoff: default_backoff(),
                until: now,
            });
            // One bump per outage however many rounds it failed.
            if w.until <= now {
                w.until = Instant::now() + w.backoff.next_delay();
                tracing::warn!(
                    attempts = w.backoff.attempts(),
                    "message broker unreachable; the outbox keeps its messages and retries"
                );
            }
        } else if !failed {
            self.global = None;
        }
        for agency in redeclare {
            tracing::warn!(%agency, "inbox unroutable; declaring it again");
            if let Err(e) = self.transport.declare_inbox(&agency).await {
                tracing::warn!(%agency, error = %e, "cannot declare the inbox");
            }
        }
        if (!done.is_empty() || !delivered.is_empty())
            && self.store.outbox_confirmed(done, delivered) >= REMOVE_AT
        {
            self.remove_confirmed().await;
        }
    }

    /// Removes and journals, in a transaction of their own, the confirmed
    /// entries still waiting for one.
    async fn remove_confirmed(&mut self) {
        self.confirmed_since = None;
        let s = self.store.clone();
        match tokio::task::spawn_blocking(move || s.outbox_remove_confirmed()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot remove delivered entries; they will be published again and deduplicated")
            }
            Err(e) => tracing::warn!(error = %e, "outbox removal task failed"),
        }
    }
}

/// Skips the entries to `blocked` recipients, noting in `skipped` whose.
fn skip_blocked<'a>(
    blocked: &'a HashSet<String>,
    skipped: &'a mut HashSet<String>,
) -> impl FnMut(&OutboxEntry) -> bool + 'a {
    move |e| {
        let blocked = blocked.contains(&e.to);
        if blocked && !skipped.contains(&e.to) {
            skipped.insert(e.to.clone());
        }
        blocked
    }
}

fn back_off(routes: &mut HashMap<String, Waiting>, to: &str, now: Instant) {
    let w = routes.entry(to.to_string()).or_insert_with(|| Waiting {
        backoff: default_backoff(),
        until: now,
    });
    // One bump per round, however many of its messages failed in it.
    if w.until <= now {
        w.until = now + w.backoff.next_delay();
    }
}

async fn wait(store: &Store, shutdown: &mut watch::Receiver<bool>, until: Instant) {
    tokio::select! {
        _ = store.outbox_changed() => {}
        _ = tokio::time::sleep_until(until) => {}
        _ = shutdown.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mev_transport::{Confirms, Consumer, Names, QueueDepth, Transport};
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;

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
