//! The broker's outbox: publishes, in order, what the pipeline (forwards,
//! receipts) and the deadline timers (notices) put in the store, and removes
//! an entry only once RabbitMQ has confirmed it.
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
use mev_adapter::backoff::Backoff;
use mev_adapter::transport::{Outgoing, Route, Transport, TransportError};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Entries published per round, all confirms in flight together.
const TAKE: usize = 512;
/// Entries looked at per round to find `TAKE` whose recipient is not backing off.
const SCAN: usize = 16 * 1024;
/// Longest wait between two looks at the store, whatever happens.
const IDLE: Duration = Duration::from_secs(1);

fn default_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_secs(5))
}

struct Waiting {
    backoff: Backoff,
    until: Instant,
}

/// Drains the outbox until `shutdown` flips to true.
pub async fn run<T: Transport>(
    store: Arc<Store>,
    transport: T,
    counters: Arc<Counters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut global: Option<Waiting> = None;
    let mut routes: HashMap<String, Waiting> = HashMap::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = Instant::now();
        if let Some(w) = global.as_ref().filter(|w| w.until > now) {
            tokio::select! {
                _ = tokio::time::sleep_until(w.until) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let blocked: HashSet<String> = routes
            .iter()
            .filter(|(_, w)| w.until > now)
            .map(|(r, _)| r.clone())
            .collect();
        let s = store.clone();
        let items = match tokio::task::spawn_blocking(move || {
            s.outbox_next(SCAN, TAKE, |e| blocked.contains(&e.to))
        })
        .await
        {
            Ok(Ok(items)) => items,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the outbox");
                wait(&store, &mut shutdown, now + IDLE).await;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "outbox task failed");
                wait(&store, &mut shutdown, now + IDLE).await;
                continue;
            }
        };
        if items.is_empty() {
            let next = routes
                .values()
                .map(|w| w.until)
                .filter(|u| *u > now)
                .min()
                .unwrap_or(now + IDLE)
                .min(now + IDLE);
            wait(&store, &mut shutdown, next).await;
            continue;
        }

        let mut done = Vec::new();
        let mut batch = Vec::new();
        let mut sent: Vec<(u64, OutboxEntry)> = Vec::new();
        for (seq, entry, body) in items {
            match body {
                Some(body) => {
                    batch.push(Outgoing {
                        route: Route::Inbox(entry.to.clone()),
                        body: body.into(),
                        message_id: entry.message_id.clone(),
                    });
                    sent.push((seq, entry));
                }
                None => {
                    // Cannot happen: the envelope is written in the same
                    // transaction as its entry. Dropped loudly, not retried forever.
                    tracing::error!(message_id = %entry.message_id, "outbox entry without its envelope; dropped");
                    done.push(seq);
                }
            }
        }
        let results = transport.publish_batch(batch).await;
        let mut redeclare = HashSet::new();
        let mut lost_link = false;
        let mut delivered = Vec::new();
        let at_ms = chrono::Utc::now().timestamp_millis();
        for ((seq, entry), r) in sent.into_iter().zip(results) {
            match r {
                Ok(()) => {
                    done.push(seq);
                    routes.remove(&entry.to);
                    if entry.purpose == Purpose::Forward {
                        delivered.push(Event {
                            message_id: entry.message_id.clone(),
                            recipient: entry.to.clone(),
                            ..Event::new(at_ms, EventKind::Delivered)
                        });
                    }
                    match entry.purpose {
                        Purpose::Forward => &counters.forwarded,
                        Purpose::Receipt => &counters.receipts,
                        Purpose::Notice => &counters.notices,
                    }
                    .fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    counters.publish_failures.fetch_add(1, Ordering::Relaxed);
                    match e {
                        TransportError::Connection(_) => lost_link = true,
                        TransportError::Unroutable(_) => {
                            redeclare.insert(entry.to.clone());
                            back_off(&mut routes, &entry.to, now);
                        }
                        _ => back_off(&mut routes, &entry.to, now),
                    }
                }
            }
        }
        if lost_link {
            let w = global.get_or_insert_with(|| Waiting {
                backoff: default_backoff(),
                until: now,
            });
            w.until = Instant::now() + w.backoff.next_delay();
            tracing::warn!(
                attempts = w.backoff.attempts(),
                "message broker unreachable; the outbox keeps its messages and retries"
            );
        } else {
            global = None;
        }
        for agency in redeclare {
            tracing::warn!(%agency, "inbox unroutable; declaring it again");
            if let Err(e) = transport.declare_inbox(&agency).await {
                tracing::warn!(%agency, error = %e, "cannot declare the inbox");
            }
        }
        if !done.is_empty() {
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.outbox_remove(&done, &delivered)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot remove delivered entries; they will be published again and deduplicated")
                }
                Err(e) => tracing::warn!(error = %e, "outbox removal task failed"),
            }
        }
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
