//! The outbox's tests, once for both of its users: the table protocol, and
//! the drain against a scripted transport on tokio's paused clock.

use super::drain::{self, Config, Host};
use super::*;
use crate::engine::TableDefinition;
use mev_transport::{Confirms, Consumer, Names, Route, Transport, TransportError};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

const TABLE: Def = TableDefinition::new("outbox");
/// Where a removal's `Done` goes, in the removal's transaction.
const DELIVERED: TableDefinition<&str, ()> = TableDefinition::new("delivered");

/// Records: the route, a 0 byte, the message id, a 0 byte, the body. The
/// `Done` of an entry is its id, written to `DELIVERED`.
struct Messages;

impl Schema for Messages {
    type Item = Outgoing;
    type Done = String;
    type Error = crate::wal::Error;
    type Reader<'t> = ();
    const TABLE: Def = TABLE;

    fn reader(&self, _tx: &ReadTransaction) -> Result<(), Self::Error> {
        Ok(())
    }

    fn read(
        &self,
        _reader: &(),
        seq: u64,
        record: &[u8],
        skip: &mut impl FnMut(&str) -> bool,
    ) -> Result<Option<Outgoing>, Self::Error> {
        let corrupt = || crate::wal::Error::Corrupt {
            path: "outbox".into(),
            reason: format!("record {seq}"),
        };
        let mut parts = record.splitn(3, |b| *b == 0);
        let mut text = || {
            parts
                .next()
                .and_then(|p| std::str::from_utf8(p).ok())
                .map(str::to_string)
                .ok_or_else(corrupt)
        };
        let (to, id) = (text()?, text()?);
        if skip(&to) {
            return Ok(None);
        }
        let body = parts.next().ok_or_else(corrupt)?;
        Ok(Some(Outgoing {
            route: Route::Inbox(to),
            body: body.into(),
            message_id: id,
        }))
    }

    fn done(&self, item: &Outgoing) -> Option<String> {
        Some(item.message_id.clone())
    }
}

fn record(m: &Outgoing) -> Vec<u8> {
    let mut r = format!("{}\0{}\0", m.route(), m.message_id).into_bytes();
    r.extend_from_slice(&m.body);
    r
}

fn msg(to: &str, id: &str) -> Outgoing {
    Outgoing {
        route: Route::Inbox(to.into()),
        body: id.as_bytes().into(),
        message_id: id.into(),
    }
}

struct Store {
    db: Db,
    outbox: Outbox<Messages>,
}

impl Store {
    fn new() -> Store {
        Store::over(Db::in_memory().unwrap())
    }

    /// The store over `db`, as a process opening it (nothing in memory).
    fn over(db: Db) -> Store {
        let tx = db.begin(true).unwrap();
        let outbox = Outbox::open(Messages, &tx).unwrap();
        tx.open(DELIVERED).unwrap();
        tx.commit().unwrap();
        Store { db, outbox }
    }

    /// One write: the confirmed entries removed and their ids written to
    /// `DELIVERED`, then `messages` enqueued, unless `fail`.
    fn write(&self, messages: &[Outgoing], fail: bool) -> Result<Vec<u64>, crate::wal::Error> {
        self.outbox.write(&self.db, true, |tx, mut w, done| {
            let mut delivered = tx.open(DELIVERED)?;
            for id in done {
                delivered.insert(id.as_str(), ())?;
            }
            let mut seqs = Vec::new();
            for m in messages {
                seqs.push(w.push(&record(m), m.clone())?);
            }
            if fail {
                return Err(crate::wal::Error::Corrupt {
                    path: "test".into(),
                    reason: "refused".into(),
                });
            }
            Ok((seqs, w))
        })
    }

    fn enqueue(&self, messages: &[Outgoing]) -> Vec<u64> {
        self.write(messages, false).unwrap()
    }

    fn len(&self) -> u64 {
        self.outbox.len(&self.db).unwrap()
    }

    fn delivered(&self) -> Vec<String> {
        let tx = self.db.begin_read().unwrap();
        let t = tx.open_table(DELIVERED).unwrap();
        t.iter()
            .unwrap()
            .map(|e| e.unwrap().0.value().to_string())
            .collect()
    }
}

impl Host for Store {
    type Schema = Messages;
    fn outbox(&self) -> &Outbox<Messages> {
        &self.outbox
    }
    fn db(&self) -> &Db {
        &self.db
    }
    fn remove_confirmed(&self, _durable: bool) -> Result<(), crate::wal::Error> {
        self.write(&[], false).map(|_| ())
    }
}

fn ids<I: Item>(read: &Read<I>) -> Vec<String> {
    read.items
        .iter()
        .filter_map(|(_, i)| i.message().map(|m| m.message_id))
        .collect()
}

#[test]
fn sequences_follow_commits_and_keep_rising_after_the_outbox_empties() {
    let s = Store::new();
    assert_eq!(s.outbox.end(), 0);
    assert_eq!(s.enqueue(&[msg("A", "m0"), msg("B", "m1")]), [0, 1]);
    assert_eq!(s.outbox.end(), 2, "end follows each commit");
    // A write that fails leaves nothing behind, in memory either, and
    // keeps the confirmed entries it took for the next write.
    assert_eq!(s.outbox.confirmed([0], ["m0".to_string()]), 1);
    assert!(s.write(&[msg("A", "lost")], true).is_err());
    assert_eq!(s.outbox.end(), 2);
    assert_eq!(s.outbox.confirmed_len(), 1);
    assert_eq!(s.len(), 2, "noted, not removed");
    // The next write removes them, with what goes with them.
    assert_eq!(s.enqueue(&[msg("A", "m2")]), [2]);
    assert_eq!(s.outbox.confirmed_len(), 0);
    assert_eq!(s.delivered(), ["m0"]);
    let all = s.outbox.read(&s.db, 0, 100, 100, |_| false).unwrap();
    assert_eq!(ids(&all), ["m1", "m2"]);
    assert_eq!(all.next, 3);
    // Emptied: new entries still go after the last.
    s.outbox.confirmed([1, 2], []);
    s.write(&[], false).unwrap();
    assert_eq!(s.len(), 0);
    assert_eq!(s.enqueue(&[msg("A", "m3")]), [3]);
    // And after a restart, past what is stored.
    let s = Store::over(s.db);
    assert_eq!(s.outbox.end(), 4);
    assert!(s.outbox.take_recent(3, 10, 10, |_| false).is_none());
    assert_eq!(
        ids(&s.outbox.read(&s.db, 0, 10, 10, |_| false).unwrap()),
        ["m3"]
    );
}

/// The drain takes what the last commits enqueued from memory, the same
/// entries a read of the store gives, in order; what it skipped stays in
/// the store; a cursor memory does not hold reads the store, and the two
/// meet without a gap.
#[test]
fn fresh_entries_are_taken_from_memory_as_the_store_would_give_them() {
    let s = Store::new();
    s.enqueue(&[msg("A", "m0"), msg("B", "m1")]);
    s.enqueue(&[msg("A", "m2"), msg("C", "m3")]);
    // Skipping A: m0 skipped, m1 taken, and the read stops after `take`.
    let first = s.outbox.take_recent(0, 100, 1, |to| to == "A").unwrap();
    assert_eq!(ids(&first), ["m1"]);
    assert_eq!(first.next, 2);
    let rest = s.outbox.take_recent(2, 100, 100, |_| false).unwrap();
    assert_eq!(ids(&rest), ["m2", "m3"]);
    assert_eq!(rest.next, 4);
    let stored = s.outbox.read(&s.db, 0, 100, 100, |_| false).unwrap();
    assert_eq!(ids(&stored), ["m0", "m1", "m2", "m3"]);
    for (got, want) in first
        .items
        .iter()
        .chain(&rest.items)
        .zip(&stored.items[1..])
    {
        assert_eq!(got.0, want.0);
        assert_eq!(got.1.body, want.1.body);
        assert_eq!(got.1.route, want.1.route);
    }
    // Taken means gone from memory, not from the store.
    assert!(s.outbox.take_recent(0, 100, 100, |_| false).is_none());
    assert_eq!(s.len(), 4);

    // More than memory keeps: the oldest are read, the newest come from
    // memory.
    let many: Vec<_> = (0..RECENT + 10)
        .map(|i| msg("B", &format!("n{i}")))
        .collect();
    s.enqueue(&many);
    assert!(s.outbox.take_recent(4, 100, 100, |_| false).is_none());
    let read = s.outbox.read(&s.db, 4, 10, 10, |_| false).unwrap();
    assert_eq!(read.next, 14);
    let from_memory = s
        .outbox
        .take_recent(read.next, 100, 100, |_| false)
        .unwrap();
    assert_eq!(ids(&from_memory)[0], "n10");
    assert_eq!(from_memory.next, 114);
}

/// Commit 5d86566's case: a read of the store passes entries memory still
/// holds; they are published from that read, confirmed and removed; the
/// drain reads again from the oldest entry. Memory must not give them
/// again. (Without `pass` in `Outbox::read`, `take_recent(0)` returns m0
/// to m3 here, as the adapter's and the broker's copies once did.)
#[test]
fn nothing_a_read_of_the_store_passed_comes_back_from_memory() {
    let s = Store::new();
    let seqs = s.enqueue(&[
        msg("A", "m0"),
        msg("A", "m1"),
        msg("A", "m2"),
        msg("A", "m3"),
    ]);
    s.enqueue(&[msg("A", "m4")]);
    let read = s.outbox.read(&s.db, 0, 4, 4, |_| false).unwrap();
    assert_eq!(ids(&read), ["m0", "m1", "m2", "m3"]);
    s.outbox.confirmed(seqs.clone(), []);
    s.write(&[], false).unwrap();
    // From the oldest entry again: the store, which no longer has them.
    assert!(s.outbox.take_recent(0, 100, 100, |_| false).is_none());
    let again = s.outbox.read(&s.db, 0, 100, 100, |_| false).unwrap();
    assert_eq!(ids(&again), ["m4"]);
    // A commit noted after a read passed it is not kept either.
    let late = s.outbox.read(&s.db, 0, 100, 100, |_| false).unwrap();
    assert_eq!(late.next, 5);
    assert!(s.outbox.take_recent(4, 100, 100, |_| false).is_none());
}

/// Confirms every publish after `DELAY`, nacking those to `FULL` while it
/// is full and failing every one while the link is down; records what was
/// published and what was confirmed.
#[derive(Clone)]
struct Scripted {
    names: Names,
    full: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
    published: Arc<Mutex<Vec<String>>>,
    confirmed: Arc<Mutex<Vec<String>>>,
}

const DELAY: Duration = Duration::from_secs(1);
const FULL: &str = "X";

impl Scripted {
    fn new() -> Scripted {
        Scripted {
            names: Names::new("test"),
            full: Arc::default(),
            down: Arc::default(),
            published: Arc::default(),
            confirmed: Arc::default(),
        }
    }

    fn published(&self) -> Vec<String> {
        lock(&self.published).clone()
    }

    fn confirmed(&self) -> Vec<String> {
        lock(&self.confirmed).clone()
    }
}

impl Transport for Scripted {
    fn names(&self) -> &Names {
        &self.names
    }
    async fn publish_batch(&self, messages: Vec<Outgoing>) -> Vec<Result<(), TransportError>> {
        self.publish_start(messages).await.await
    }
    #[allow(clippy::async_yields_async)]
    async fn publish_start(&self, messages: Vec<Outgoing>) -> Confirms {
        // Whether a message is taken is decided when it arrives.
        let down = self.down.load(Ordering::SeqCst);
        let full = self.full.load(Ordering::SeqCst);
        let results: Vec<Result<(), TransportError>> = messages
            .iter()
            .map(|m| match &m.route {
                _ if down => Err(TransportError::Connection("down".into())),
                Route::Inbox(to) if to == FULL && full => Err(TransportError::Nacked),
                _ => Ok(()),
            })
            .collect();
        lock(&self.published).extend(messages.iter().map(|m| m.message_id.clone()));
        let confirmed = self.confirmed.clone();
        Box::pin(async move {
            tokio::time::sleep(DELAY).await;
            let mut c = lock(&confirmed);
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

/// A drain over `store` through `transport`, with the broker's pacing.
fn start(
    store: &Arc<Store>,
    transport: &Scripted,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(drain::run(
        store.clone(),
        transport.clone(),
        (),
        Config::default(),
        stop_rx,
    ));
    (stop, task)
}

fn names(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// Entries go out in the order they were committed, each once; what was
/// confirmed leaves the store with what its removal writes, in one
/// transaction, once the drain has been idle a little.
#[tokio::test(start_paused = true)]
async fn order_is_kept_and_confirmed_entries_are_removed() {
    let store = Arc::new(Store::new());
    let transport = Scripted::new();
    // A backlog in the store, then fresh commits while the drain runs.
    store.enqueue(&[msg("A", "m0"), msg("B", "m1")]);
    let (stop, task) = start(&store, &transport);
    for i in 2..8 {
        store.enqueue(&[msg(if i % 2 == 0 { "A" } else { "B" }, &format!("m{i}"))]);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(3 * DELAY).await;
    let all: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    assert_eq!(transport.published(), all, "in commit order, once each");
    assert_eq!(transport.confirmed(), all);
    assert_eq!(store.len(), 0, "removed after the idle wait");
    let mut delivered = store.delivered();
    delivered.sort();
    assert_eq!(delivered, all);
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// Commit 5d86566's case through the drain: after a restart the drain reads
/// the backlog from the store, and that read reaches entries committed since,
/// which memory also holds. X's entries are nacked, Y's confirmed and
/// removed; the drain reads again from the oldest entry, skipping X while it
/// backs off, and must not publish Y's again from memory (it did without
/// `pass` in `Outbox::read`).
#[tokio::test(start_paused = true)]
async fn entries_read_from_the_store_are_not_published_again_from_memory() {
    let db = {
        let s = Store::new();
        s.enqueue(&[msg(FULL, "x1"), msg(FULL, "x2")]);
        s.db
    };
    let store = Arc::new(Store::over(db));
    store.enqueue(&[msg("Y", "y1"), msg("Y", "y2")]);
    let transport = Scripted::new();
    transport.full.store(true, Ordering::SeqCst);
    let (stop, task) = start(&store, &transport);
    // One round of all four; X's nacked after DELAY, then X backs off.
    tokio::time::sleep(DELAY + Duration::from_millis(20)).await;
    assert_eq!(transport.published(), names(&["x1", "x2", "y1", "y2"]));
    transport.full.store(false, Ordering::SeqCst);
    tokio::time::sleep(4 * DELAY).await;
    assert_eq!(
        transport.published(),
        names(&["x1", "x2", "y1", "y2", "x1", "x2"]),
        "Y's entries once, X's again"
    );
    assert_eq!(store.len(), 0);
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// Entries skipped while their route backed off are published once it
/// takes messages again, even when a later entry of the same route, read
/// past them, went through first (guaranteed delivery: KZ order §9;
/// Tatarstan §1.3).
#[tokio::test(start_paused = true)]
async fn entries_skipped_during_a_back_off_are_published_after_it() {
    let store = Arc::new(Store::new());
    let transport = Scripted::new();
    transport.full.store(true, Ordering::SeqCst);
    let (stop, task) = start(&store, &transport);
    let start = Instant::now();
    // X's inbox is full: these are nacked after a second, and X backs off
    // (~50 ms); the next read skips them.
    for i in 1..=5 {
        store.enqueue(&[msg(FULL, &format!("x{i}"))]);
    }
    tokio::time::sleep_until(start + DELAY + Duration::from_millis(10)).await;
    // A round for another route goes out while X backs off, and stays in
    // flight (its confirm takes a second).
    store.enqueue(&[msg("Y", "y1")]);
    tokio::time::sleep(Duration::from_millis(10)).await;
    transport.full.store(false, Ordering::SeqCst);
    // X's back-off is over; a new entry for X is read past the skipped
    // ones, while the round for Y is still in flight.
    tokio::time::sleep_until(start + DELAY + Duration::from_millis(200)).await;
    store.enqueue(&[msg(FULL, "x6")]);
    // Well before the next sweep.
    tokio::time::sleep(5 * DELAY).await;
    assert!(5 * DELAY < Config::default().sweep);
    let mut confirmed = transport.confirmed();
    confirmed.sort();
    assert_eq!(confirmed, ["x1", "x2", "x3", "x4", "x5", "x6", "y1"]);
    assert_eq!(store.len(), 0);
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// A lost link fails a round: every route backs off, no new round starts,
/// and once the back-off ends the drain reads again from the oldest entry,
/// so everything goes out in order, nothing confirmed goes twice.
#[tokio::test(start_paused = true)]
async fn after_a_lost_link_the_drain_reads_again_from_the_oldest_entry() {
    let store = Arc::new(Store::new());
    let transport = Scripted::new();
    let (stop, task) = start(&store, &transport);
    store.enqueue(&[msg("A", "a1"), msg("B", "b1")]);
    tokio::task::yield_now().await;
    // The link goes down after the first round went out: the next ones fail.
    transport.down.store(true, Ordering::SeqCst);
    store.enqueue(&[msg("A", "a2")]);
    tokio::time::sleep(Duration::from_millis(10)).await;
    store.enqueue(&[msg("B", "b2")]);
    tokio::time::sleep(DELAY + Duration::from_millis(100)).await;
    transport.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(10 * DELAY).await;
    assert_eq!(transport.confirmed(), names(&["a1", "b1", "a2", "b2"]));
    let published = transport.published();
    assert_eq!(published[..2], names(&["a1", "b1"]));
    assert_eq!(
        published.iter().filter(|p| *p == "a1").count(),
        1,
        "confirmed, not published again: {published:?}"
    );
    assert_eq!(store.len(), 0);
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// A stop waits for the confirms of the rounds in flight and removes what
/// they confirmed (a restart does not publish it again); a round whose
/// confirms do not come within `stop_wait` stays.
#[tokio::test(start_paused = true)]
async fn a_stop_waits_for_confirms_and_removes_what_they_confirmed() {
    let store = Arc::new(Store::new());
    let transport = Scripted::new();
    let (stop, task) = start(&store, &transport);
    store.enqueue(&[msg("A", "m0"), msg("A", "m1")]);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(transport.published().len(), 2);
    let stopping = Instant::now();
    stop.send(true).unwrap();
    task.await.unwrap();
    let waited = stopping.elapsed();
    assert!(
        waited >= DELAY - Duration::from_millis(10) && waited < Config::default().stop_wait,
        "waited {waited:?} for the round's confirms"
    );
    assert_eq!(store.len(), 0, "removed before the drain returned");
    assert_eq!(store.delivered(), ["m0", "m1"]);

    // Confirms slower than the stop waits: the entry stays.
    let store = Arc::new(Store::new());
    let config = Config {
        stop_wait: DELAY / 2,
        ..Config::default()
    };
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(drain::run(store.clone(), transport.clone(), (), config, rx));
    store.enqueue(&[msg("A", "m2")]);
    tokio::time::sleep(Duration::from_millis(10)).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(store.len(), 1, "not confirmed in time: kept");
}
