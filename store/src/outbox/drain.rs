//! The drain: publishes an [`Outbox`] in order and has what RabbitMQ
//! confirmed removed.
//!
//! Publishing is pipelined: up to [`Config::rounds`] rounds of up to
//! [`Config::take`] entries await their confirms while the next round is
//! taken and published ([`Transport::publish_start`]), so an entry committed
//! during a round does not wait for it. Rounds are taken from a cursor past
//! the last entry taken, from memory when the last commits left the entries
//! there ([`Outbox::take_recent`]: no read transaction), else from the store
//! on the blocking pool; a read only when something was committed past the
//! cursor ([`Outbox::end`]).
//!
//! After a failure, or once a route whose entries a read skipped (it was
//! backing off) may take messages again, no new round starts until those in
//! flight are done, and the next read starts again from the oldest entry, so
//! whatever failed or was skipped is taken again; so it does at least every
//! [`Config::sweep`]. A lost link ([`TransportError::Connection`]) backs off
//! every route; a nack (a full queue with `x-overflow = reject-publish`), an
//! unroutable message or any other refusal backs off only its route, so one
//! stuck recipient does not hold up the others. Whatever cannot be delivered
//! stays on disk and is retried (guaranteed delivery: KZ order §9;
//! Tatarstan §1.3); lapin's recovery rejects confirms in flight, and those
//! entries are published again, receivers dropping the copies by message id.
//!
//! What RabbitMQ confirmed is removed by the store's next write transaction
//! ([`Outbox::write`]), not by one per round: the drain writes one itself
//! ([`Host::remove_confirmed`]) once [`Config::remove_at`] entries wait,
//! after [`Config::remove_idle`] idle, before a read from the oldest entry
//! (which must not find them) and at stop, which waits up to
//! [`Config::stop_wait`] for the confirms of the rounds in flight.

use super::{Item, Outbox, Read, Schema};
use crate::wal::Db;
use mev_transport::backoff::Backoff;
use mev_transport::{Transport, TransportError};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How a drain paces itself.
#[derive(Debug, Clone)]
pub struct Config {
    /// Entries published per round at most, their confirms in flight together.
    pub take: usize,
    /// Rounds awaiting their confirms at once.
    pub rounds: usize,
    /// Entries looked at per read to find `take` whose route is not backing off.
    pub scan: usize,
    /// Longest wait between two looks at the outbox, whatever happens.
    pub idle: Duration,
    /// Longest the drain goes without reading again from the oldest entry,
    /// so that an entry left behind the cursor by any path waits at most
    /// this long.
    pub sweep: Duration,
    /// Confirmed entries wait for the store's next write until this many
    /// wait, or the drain has been idle `remove_idle`: then it writes one.
    pub remove_at: usize,
    pub remove_idle: Duration,
    /// Whether that idle write (and the one at stop) is durable, carrying
    /// every lazy removal before it to disk even when none waits (the
    /// adapter, whose store may go idle for long); else lazy, made durable
    /// by the store's next durable commit (the broker's next batch).
    pub durable_when_idle: bool,
    /// How long a stop waits for the confirms of the rounds in flight.
    pub stop_wait: Duration,
    /// Back-off of a route, or of every route after a lost link.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for Config {
    /// The broker's pacing.
    fn default() -> Self {
        Config {
            take: 512,
            rounds: 4,
            scan: 16 * 1024,
            idle: Duration::from_secs(1),
            sweep: Duration::from_secs(30),
            remove_at: 4 * 512,
            remove_idle: Duration::from_millis(100),
            durable_when_idle: false,
            stop_wait: Duration::from_secs(5),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// The store an outbox lives in.
pub trait Host: Send + Sync + 'static {
    type Schema: Schema;
    fn outbox(&self) -> &Outbox<Self::Schema>;
    fn db(&self) -> &Db;
    /// One write transaction of the store's own (lazy, or `durable`), which
    /// removes the confirmed entries and writes what goes with them, as
    /// every write through [`Outbox::write`] does.
    fn remove_confirmed(&self, durable: bool) -> Result<(), <Self::Schema as Schema>::Error>;
}

/// What the user does after a round's confirms, beyond the removals.
pub trait Hooks<I>: Send + 'static {
    /// A round settled: `results[i]` is `items[i]`'s (shorter if the
    /// transport gave fewer; the rest failed).
    fn settled(&mut self, items: &[(u64, I)], results: &[Result<(), TransportError>]) {
        let _ = (items, results);
    }
    /// `route` was unroutable; called before its next try (the broker
    /// declares the inbox again).
    fn unroutable(&mut self, route: &str) -> impl Future<Output = ()> + Send {
        let _ = route;
        async {}
    }
}

/// No hooks.
impl<I> Hooks<I> for () {}

type ItemOf<H> = <<H as Host>::Schema as Schema>::Item;

struct Waiting {
    backoff: Backoff,
    until: Instant,
}

/// A round published and awaiting its confirms.
struct Round<I> {
    items: Vec<(u64, I)>,
    confirms: JoinHandle<Vec<Result<(), TransportError>>>,
}

/// The drain's state between rounds.
struct Drain<H: Host, T, K> {
    host: Arc<H>,
    transport: T,
    hooks: K,
    config: Config,
    /// Every route backs off after a lost link.
    global: Option<Waiting>,
    /// Routes backing off after a nack, an unroutable message, a refusal.
    routes: HashMap<String, Waiting>,
    in_flight: VecDeque<Round<ItemOf<H>>>,
    /// The next read starts here (past every entry in flight).
    cursor: u64,
    /// A round failed, or a route whose entries were skipped takes messages
    /// again: start no new round until those in flight are done, then read
    /// again from the oldest entry.
    rescan: bool,
    /// Routes whose entries a read skipped (they were backing off), so that
    /// some of theirs are behind the cursor until the next rescan.
    skipped: HashSet<String>,
    /// When the last read from the oldest entry was.
    swept: Instant,
    /// Since when the drain has been idle with a removal waiting.
    idle_since: Option<Instant>,
    /// Removals not yet made durable (for `durable_when_idle`).
    unpersisted: bool,
}

/// Whether to stop: `stop` says so, or its sender is gone.
fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Drains `host`'s outbox through `transport` until `stop` turns true (or
/// its sender is dropped).
pub async fn run<H, T, K>(
    host: Arc<H>,
    transport: T,
    hooks: K,
    config: Config,
    mut stop: watch::Receiver<bool>,
) where
    H: Host,
    T: Transport,
    K: Hooks<ItemOf<H>>,
{
    let mut d = Drain {
        host,
        transport,
        hooks,
        config,
        global: None,
        routes: HashMap::new(),
        in_flight: VecDeque::new(),
        cursor: 0,
        rescan: false,
        skipped: HashSet::new(),
        swept: Instant::now(),
        idle_since: None,
        unpersisted: false,
    };
    loop {
        if stopping(&stop) {
            // What RabbitMQ confirmed is removed before stopping, so a
            // restart does not publish it again; a round whose confirms do
            // not come in time stays and is published again (receivers
            // drop the copies by id).
            let deadline = Instant::now() + d.config.stop_wait;
            while let Some(Round { items, confirms }) = d.in_flight.pop_front() {
                if let Ok(Ok(results)) = tokio::time::timeout_at(deadline, confirms).await {
                    d.finish_round(items, results, Instant::now()).await;
                }
            }
            d.remove_confirmed(d.config.durable_when_idle).await;
            return;
        }
        let now = Instant::now();
        if d.skipped_may_go(now) || now >= d.swept + d.config.sweep {
            // Their entries are behind the cursor: a later entry of theirs,
            // read past them, must not be the only one published.
            d.rescan = true;
        }
        if d.in_flight.is_empty() && (d.rescan || d.link_backoff_ended(now)) {
            // Take again what failed, or waited for a back-off to end; not
            // what was delivered.
            d.remove_confirmed(false).await;
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
                    _ = stop.changed() => {}
                }
                continue;
            }
        }
        if !held && d.in_flight.len() < d.config.rounds {
            match d.start_round(now).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(()) => {
                    wait(d.host.outbox(), &mut stop, now + d.config.idle).await;
                    continue;
                }
            }
        }
        let open = !held && d.in_flight.len() < d.config.rounds;
        if let Some(front) = d.in_flight.front_mut() {
            let confirmed = tokio::select! {
                results = &mut front.confirms => Some(results),
                _ = d.host.outbox().changed(), if open => None,
                _ = stop.changed() => None,
            };
            if let Some(results) = confirmed {
                let round = d.in_flight.pop_front().expect("the front round");
                let results = results.unwrap_or_else(|e| {
                    let e = TransportError::Connection(format!("confirm task failed: {e}"));
                    vec![Err(e); round.items.len()]
                });
                // Back-offs count from now, not from before the wait.
                d.finish_round(round.items, results, Instant::now()).await;
            }
            continue;
        }
        // Nothing in flight and nothing to publish: wait for new entries,
        // the end of a route's back-off, or at most `idle`; a removal waits
        // `remove_idle` for a write to go with.
        if d.removal_waits() {
            let since = *d.idle_since.get_or_insert(now);
            if now >= since + d.config.remove_idle {
                d.remove_confirmed(d.config.durable_when_idle).await;
                continue;
            }
        } else {
            d.idle_since = None;
        }
        let next = d
            .routes
            .values()
            .map(|w| w.until)
            .filter(|u| *u > now)
            .chain(d.idle_since.map(|t| t + d.config.remove_idle))
            .min()
            .unwrap_or(now + d.config.idle)
            .min(now + d.config.idle);
        wait(d.host.outbox(), &mut stop, next).await;
    }
}

impl<H: Host, T: Transport, K: Hooks<ItemOf<H>>> Drain<H, T, K> {
    /// Whether the link's back-off has ended.
    fn link_backoff_ended(&self, now: Instant) -> bool {
        self.global.as_ref().is_some_and(|w| w.until <= now)
    }

    /// Whether a route whose entries were skipped is no longer backing off
    /// (its back-off ended, or a later entry of its went through).
    fn skipped_may_go(&self, now: Instant) -> bool {
        self.skipped
            .iter()
            .any(|r| self.routes.get(r).is_none_or(|w| w.until <= now))
    }

    /// Whether confirmed entries wait for a write, or (made durable when
    /// idle) lazy removals for a durable one.
    fn removal_waits(&self) -> bool {
        self.host.outbox().confirmed_len() > 0
            || (self.config.durable_when_idle && self.unpersisted)
    }

    /// Takes the next round from the cursor and publishes it; `Ok(false)`
    /// when there is nothing to publish, `Err` when the store cannot be read.
    async fn start_round(&mut self, now: Instant) -> Result<bool, ()> {
        let blocked: HashSet<String> = self
            .routes
            .iter()
            .filter(|(_, w)| w.until > now)
            .map(|(r, _)| r.clone())
            .collect();
        let (scan, take) = (self.config.scan, self.config.take);
        let items = loop {
            // A read only when something was committed past the cursor.
            let outbox = self.host.outbox();
            let end = outbox.end();
            if self.cursor >= end {
                return Ok(false);
            }
            let from = self.cursor;
            // What the last commits put in the outbox is still in memory.
            let mut skipped = HashSet::new();
            let recent = outbox.take_recent(from, scan, take, skip(&blocked, &mut skipped));
            self.skipped.extend(skipped);
            let read = match recent {
                Some(read) => read,
                None => self.read_store(from, &blocked).await?,
            };
            // Past what was skipped too: it is taken again from the oldest
            // entry once its route's back-off ends.
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
        let mut batch = Vec::with_capacity(items.len());
        let mut sent = Vec::with_capacity(items.len());
        let mut dropped = Vec::new();
        for (seq, item) in items {
            match item.message() {
                Some(m) => {
                    batch.push(m);
                    sent.push((seq, item));
                }
                None => {
                    // Cannot happen (a body is written in the transaction
                    // of its entry): removed loudly, not retried forever.
                    tracing::error!(
                        seq,
                        route = item.route(),
                        "outbox entry with nothing to publish; dropped"
                    );
                    dropped.push(seq);
                }
            }
        }
        if !dropped.is_empty() {
            self.host.outbox().confirmed(dropped, []);
        }
        if !sent.is_empty() {
            let confirms = tokio::spawn(self.transport.publish_start(batch).await);
            self.in_flight.push_back(Round {
                items: sent,
                confirms,
            });
        }
        Ok(true)
    }

    /// Reads a round from the store on the blocking pool (what memory does
    /// not hold: a backlog, a restart, a read from the oldest entry).
    async fn read_store(
        &mut self,
        from: u64,
        blocked: &HashSet<String>,
    ) -> Result<Read<ItemOf<H>>, ()> {
        let (host, blocked) = (self.host.clone(), blocked.clone());
        let (scan, take) = (self.config.scan, self.config.take);
        let read = tokio::task::spawn_blocking(move || {
            let mut skipped = HashSet::new();
            let read =
                host.outbox()
                    .read(host.db(), from, scan, take, skip(&blocked, &mut skipped));
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
                tracing::error!(error = %e, "outbox read task failed");
                Err(())
            }
        }
    }

    /// Acts on a round's confirms: notes what was delivered for removal,
    /// backs off what failed.
    async fn finish_round(
        &mut self,
        items: Vec<(u64, ItemOf<H>)>,
        mut results: Vec<Result<(), TransportError>>,
        now: Instant,
    ) {
        if results.len() < items.len() {
            let e = TransportError::Other("no confirm from the transport".into());
            results.resize(items.len(), Err(e));
        }
        let mut seqs = Vec::with_capacity(items.len());
        let mut done = Vec::new();
        let mut redeclare = HashSet::new();
        let mut lost_link = false;
        let mut failures = 0usize;
        let mut first_error = None;
        let (min, max) = (self.config.backoff_min, self.config.backoff_max);
        let outbox = self.host.outbox();
        for ((seq, item), r) in items.iter().zip(&results) {
            match r {
                Ok(()) => {
                    seqs.push(*seq);
                    if !self.routes.is_empty() {
                        self.routes.remove(item.route());
                    }
                    done.extend(outbox.schema().done(item));
                }
                Err(e) => {
                    failures += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                    match e {
                        TransportError::Connection(_) => lost_link = true,
                        TransportError::Unroutable(_) => {
                            redeclare.insert(item.route().to_string());
                            back_off(&mut self.routes, item.route(), now, min, max);
                        }
                        _ => back_off(&mut self.routes, item.route(), now, min, max),
                    }
                }
            }
        }
        self.hooks.settled(&items, &results);
        if let Some(error) = first_error {
            tracing::warn!(%error, failed = failures, of = items.len(), "outbox publish failed; will retry");
            self.rescan = true;
        }
        if lost_link {
            let w = self.global.get_or_insert_with(|| Waiting {
                backoff: Backoff::new(min, max),
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
        } else if failures == 0 {
            self.global = None;
        }
        for route in redeclare {
            self.hooks.unroutable(&route).await;
        }
        if !seqs.is_empty() || !done.is_empty() {
            self.unpersisted = true;
            if self.host.outbox().confirmed(seqs, done) >= self.config.remove_at {
                self.remove_confirmed(false).await;
            }
        }
    }

    /// Removes, in a transaction of their own, the confirmed entries still
    /// waiting for one (if any, or if `durable`: then it also carries every
    /// lazy removal before it to disk).
    async fn remove_confirmed(&mut self, durable: bool) {
        self.idle_since = None;
        let durable = durable && self.unpersisted;
        if !durable && self.host.outbox().confirmed_len() == 0 {
            return;
        }
        let host = self.host.clone();
        match tokio::task::spawn_blocking(move || host.remove_confirmed(durable)).await {
            Ok(Ok(())) => {
                if durable {
                    self.unpersisted = false;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot remove delivered entries; they will be published again and deduplicated")
            }
            Err(e) => tracing::warn!(error = %e, "outbox removal task failed"),
        }
    }
}

/// Skips the entries to `blocked` routes, noting in `skipped` whose.
fn skip<'a>(
    blocked: &'a HashSet<String>,
    skipped: &'a mut HashSet<String>,
) -> impl FnMut(&str) -> bool + 'a {
    move |route| {
        if blocked.is_empty() {
            // The usual case: no route backs off.
            return false;
        }
        let blocked = blocked.contains(route);
        if blocked && !skipped.contains(route) {
            skipped.insert(route.to_string());
        }
        blocked
    }
}

fn back_off(
    routes: &mut HashMap<String, Waiting>,
    route: &str,
    now: Instant,
    min: Duration,
    max: Duration,
) {
    let w = routes.entry(route.to_string()).or_insert_with(|| Waiting {
        backoff: Backoff::new(min, max),
        until: now,
    });
    // One bump per round, however many of its messages failed in it.
    if w.until <= now {
        w.until = now + w.backoff.next_delay();
    }
}

async fn wait<S: Schema>(outbox: &Outbox<S>, stop: &mut watch::Receiver<bool>, until: Instant) {
    tokio::select! {
        _ = outbox.changed() => {}
        _ = tokio::time::sleep_until(until) => {}
        _ = stop.changed() => {}
    }
}
