//! The store's tests across its concepts (the outbox's and the dedup
//! index's own are in their modules).

use super::prelude::*;
use super::{Event, EventKind, OpenRequest, OutboxEntry, Purpose, Store, StoreError};

pub(crate) fn event(kind: EventKind) -> Event {
    Event {
        at_ms: 1,
        kind,
        message_id: "m".into(),
        sender: "A".into(),
        recipient: "B".into(),
        service: "S".into(),
        in_reply_to: String::new(),
        code: 0,
        reason: String::new(),
        deadline_ms: None,
        late_by_ms: None,
    }
}

#[test]
fn accept_open_close_and_events_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .write(|t| {
                assert_eq!(t.dedup().seen("m")?, None);
                t.dedup().accept("m", &[7; 32], 5)?;
                t.requests().open(
                    "m",
                    &OpenRequest {
                        sender: "A".into(),
                        recipient: "B".into(),
                        service: "S".into(),
                        accepted_at_ms: 5,
                        policy: String::new(),
                        deadline_ms: None,
                        at_risk_ms: None,
                        breached: false,
                    },
                )?;
                t.journal()
                    .append_with(&event(EventKind::Received), b"env")?;
                Ok(())
            })
            .unwrap();
        store
            .write(|t| t.journal().append(&event(EventKind::Forwarded)).map(|_| ()))
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let seen = store.write(|t| t.dedup().seen("m")).unwrap().unwrap();
    assert_eq!(seen.digest, [7; 32]);
    assert_eq!(seen.accepted_at_ms, 5);
    assert_eq!(store.counts().unwrap(), (1, 1, 2));
    let closed = store.write(|t| t.requests().close("m")).unwrap();
    assert_eq!(closed.unwrap().recipient, "B");
    assert_eq!(store.events().unwrap()[1].kind, EventKind::Forwarded);
    assert_eq!(store.envelope("m").unwrap().unwrap(), b"env");
}

/// Accepts message `id` (its envelope: the id's bytes), journals it
/// and puts it in the outbox for `to`; returns the outbox sequence.
pub(crate) fn forward<T: Txn>(
    t: &mut T,
    to: &str,
    id: &str,
    at_ms: i64,
) -> Result<u64, StoreError> {
    t.dedup().accept(id, &[id.len() as u8; 32], at_ms)?;
    let entry = t.journal().append_with(
        &Event {
            message_id: id.into(),
            ..event(EventKind::Received)
        },
        id.as_bytes(),
    )?;
    t.outbox().enqueue(
        &OutboxEntry {
            to: to.into(),
            message_id: id.into(),
            purpose: Purpose::Forward,
            entry: Some(entry),
        },
        id.as_bytes(),
    )
}

#[test]
fn a_crash_keeps_every_durable_batch_through_the_redo_log() {
    // KZ order §9, Tatarstan §1.3: nothing accepted is lost. Batches
    // committed durably since the last checkpoint are only in the log;
    // a crash (the files copied as the disk holds them, the store still
    // open) must bring them all back, journal and Merkle tree in step.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for b in 0..20 {
        store
            .write(|t| {
                for i in 0..3 {
                    forward(t, "A", &format!("m{b}-{i}"), b)?;
                }
                Ok(())
            })
            .unwrap();
    }
    // A lazy removal, then one more durable batch that carries it.
    let read = store.outbox_next(0, 1, 10, |_| false).unwrap();
    let delivered = Event {
        message_id: read.items[0].1.message_id.clone(),
        ..event(EventKind::Delivered)
    };
    store
        .outbox_remove(&[read.items[0].0], &[delivered])
        .unwrap();
    store
        .write(|t| forward(t, "B", "last", 99).map(|_| ()))
        .unwrap();
    let crashed = tempfile::tempdir().unwrap();
    for f in ["broker.redb", "broker.redb.wal"] {
        std::fs::copy(dir.path().join(f), crashed.path().join(f)).unwrap();
    }
    let live = (store.events().unwrap(), store.journal_head().unwrap());
    let depth = store.outbox_depth().unwrap();
    drop(store);
    let reopened = Store::open(crashed.path()).unwrap();
    assert_eq!(live.0.len(), 62);
    assert_eq!(live.0[60].kind, EventKind::Delivered);
    assert_eq!(
        (reopened.events().unwrap(), reopened.journal_head().unwrap()),
        live
    );
    assert_eq!(reopened.outbox_depth().unwrap(), depth);
    assert_eq!(depth, 60, "the removal came back with the batch after it");
    assert!(reopened
        .write(|t| t.dedup().seen("m19-2"))
        .unwrap()
        .is_some());
    // And the reopened store goes on from there.
    reopened
        .write(|t| forward(t, "A", "after", 100).map(|_| ()))
        .unwrap();
    assert_eq!(reopened.journal_head().unwrap().0, 63);
}

#[tokio::test]
async fn a_failed_store_refuses_every_write_says_why_and_wakes_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
    store
        .write(|t| t.dedup().accept("kept", &[1; 32], 5))
        .unwrap();
    assert_eq!(store.failure(), None);
    let waiter = {
        let s = store.clone();
        tokio::spawn(async move { s.failed().await })
    };
    // What the redo log does when a write or an fsync fails (EIO, ENOSPC).
    store
        .db
        .fail("redo log broker.redb.wal: No space left on device");
    let reason = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("the failure wakes its waiter")
        .unwrap();
    assert!(reason.contains("No space left"), "{reason}");
    assert_eq!(store.failure().as_deref(), Some(reason.as_str()));
    let e = store
        .write(|t| t.dedup().accept("lost", &[2; 32], 6))
        .expect_err("nothing more is written");
    assert!(e.is_fatal(), "{e}");
    assert!(e.to_string().contains("No space left"), "{e}");
    assert!(store.prune_dedup(i64::MAX, 10).unwrap_err().is_fatal());
    assert!(store.close().is_err(), "no clean close of a failed store");
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    store
        .write(|t| {
            assert!(
                t.dedup().seen("kept")?.is_some(),
                "what was durable is there"
            );
            assert!(t.dedup().seen("lost")?.is_none());
            Ok(())
        })
        .unwrap();
    store.close().unwrap();
}

#[test]
fn fatal_errors_are_told_from_others() {
    use mev_store::engine::StorageError;
    assert!(StoreError::Storage(StorageError::PreviousIo).is_fatal());
    assert!(StoreError::Storage(StorageError::Io(std::io::Error::other("eio"))).is_fatal());
    assert!(!StoreError::Journal("x".into()).is_fatal());
    assert!(!StoreError::Storage(StorageError::ValueTooLarge(1)).is_fatal());
}
