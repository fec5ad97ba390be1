use super::*;

fn event(kind: EventKind) -> Event {
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
                assert_eq!(t.seen("m")?, None);
                t.accept("m", &[7; 32], 5)?;
                t.insert_open_request(
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
                t.record_with(&event(EventKind::Received), b"env")?;
                Ok(())
            })
            .unwrap();
        store
            .write(|t| t.record(&event(EventKind::Forwarded)).map(|_| ()))
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let seen = store.write(|t| t.seen("m")).unwrap().unwrap();
    assert_eq!(seen.digest, [7; 32]);
    assert_eq!(seen.accepted_at_ms, 5);
    assert_eq!(store.counts().unwrap(), (1, 1, 2));
    let closed = store.write(|t| t.close_request("m")).unwrap();
    assert_eq!(closed.unwrap().recipient, "B");
    assert_eq!(store.events().unwrap()[1].kind, EventKind::Forwarded);
    assert_eq!(store.envelope("m").unwrap().unwrap(), b"env");
}

/// Accepts message `id` (its envelope: the id's bytes), journals it
/// and puts it in the outbox for `to`; returns the outbox sequence.
pub(crate) fn forward(t: &mut Txn<'_>, to: &str, id: &str, at_ms: i64) -> Result<u64, StoreError> {
    t.accept(id, &[id.len() as u8; 32], at_ms)?;
    let entry = t.record_with(
        &Event {
            message_id: id.into(),
            ..event(EventKind::Received)
        },
        id.as_bytes(),
    )?;
    t.enqueue(
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
    assert!(reopened.write(|t| t.seen("m19-2")).unwrap().is_some());
    // And the reopened store goes on from there.
    reopened
        .write(|t| forward(t, "A", "after", 100).map(|_| ()))
        .unwrap();
    assert_eq!(reopened.journal_head().unwrap().0, 63);
}

#[test]
fn outbox_survives_reopen_keeps_order_and_skips() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .write(|t| {
                for (i, to) in ["A", "B", "A", "C"].iter().enumerate() {
                    let id = format!("m{i}");
                    forward(t, to, &id, 1)?;
                }
                Ok(())
            })
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.outbox_depth().unwrap(), 4);
    // The drain reads nothing from a cursor at the end: after a restart the
    // end is past what the outbox still holds, so its backlog is read.
    assert_eq!(store.outbox_end(), 4);
    let all = store.outbox_next(0, 100, 100, |_| false).unwrap().items;
    let ids: Vec<_> = all.iter().map(|(_, e, _)| e.message_id.as_str()).collect();
    assert_eq!(ids, ["m0", "m1", "m2", "m3"]);
    assert_eq!(all[2].2.as_deref(), Some(&b"m2"[..]));
    let not_a = store.outbox_next(0, 100, 1, |to| to == "A").unwrap();
    assert_eq!(not_a.next, 2, "past the skipped entry and the one taken");
    let not_a = not_a.items;
    assert_eq!(not_a[0].1.message_id, "m1");
    store.outbox_remove(&[all[0].0, all[3].0], &[]).unwrap();
    let left = store.outbox_next(0, 100, 100, |_| false).unwrap().items;
    assert_eq!(left.len(), 2);
    assert_eq!(left[0].1.message_id, "m1");
    // New entries go after what is left, never reusing a live sequence.
    store
        .write(|t| forward(t, "D", "m9", 1).map(|_| ()))
        .unwrap();
    let seqs: Vec<u64> = store
        .outbox_next(0, 100, 100, |_| false)
        .unwrap()
        .items
        .iter()
        .map(|(s, _, _)| *s)
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[test]
fn outbox_sequences_keep_rising_after_the_outbox_empties() {
    // The drain reads on from a cursor past what it took: a sequence
    // handed out again below it would never be published.
    let store = Store::in_memory().unwrap();
    let first = store.write(|t| forward(t, "A", "a", 1)).unwrap();
    store.outbox_remove(&[first], &[]).unwrap();
    assert_eq!(store.outbox_depth().unwrap(), 0);
    let second = store.write(|t| forward(t, "B", "b", 1)).unwrap();
    assert!(second > first, "{second} after {first}");
    assert_eq!(
        store.outbox_end(),
        second + 1,
        "the end follows each commit"
    );
    let read = store.outbox_next(first + 1, 10, 10, |_| false).unwrap();
    assert_eq!(read.items.len(), 1);
    assert_eq!(read.items[0].1.message_id, "b");
    assert_eq!(read.items[0].2.as_deref(), Some(&b"b"[..]));
}

#[test]
fn outbox_entries_of_older_stores_publish_from_the_envelopes_table() {
    // Stores written before the journal held the one copy kept the
    // envelope under its message id, and their entries name no journal entry.
    let store = Store::in_memory().unwrap();
    let tx = store.db.begin(true).unwrap();
    tx.open(ENVELOPES)
        .unwrap()
        .insert("old", b"body".as_slice())
        .unwrap();
    tx.commit().unwrap();
    store
        .write(|t| {
            t.accept("old", &[1; 32], 1)?;
            t.enqueue(
                &OutboxEntry {
                    to: "A".into(),
                    message_id: "old".into(),
                    purpose: Purpose::Forward,
                    entry: None,
                },
                b"body",
            )
        })
        .unwrap();
    let read = store.outbox_next(0, 10, 10, |_| false).unwrap();
    assert_eq!(read.items[0].2.as_deref(), Some(&b"body"[..]));
    assert_eq!(store.envelope("old").unwrap().unwrap(), b"body");
    assert_eq!(store.outbox_oldest_entry().unwrap(), None);
}

#[test]
fn dedup_retention_prunes_old_ids_but_keeps_envelopes() {
    let store = Store::in_memory().unwrap();
    store
        .write(|t| {
            forward(t, "A", "old", 1_000)?;
            forward(t, "A", "new", 9_000)?;
            Ok(())
        })
        .unwrap();
    assert_eq!(store.prune_dedup(5_000, 100).unwrap(), 1);
    assert_eq!(store.write(|t| t.seen("old")).unwrap(), None);
    assert!(store.write(|t| t.seen("new")).unwrap().is_some());
    assert_eq!(store.envelope("old").unwrap().unwrap(), b"old");
    assert_eq!(store.prune_dedup(5_000, 100).unwrap(), 0);
}

#[test]
fn confirmed_entries_go_with_the_next_write_or_stay_if_it_fails() {
    let store = Store::in_memory().unwrap();
    store
        .write(|t| {
            for i in 0..3 {
                forward(t, "A", &format!("m{i}"), i)?;
            }
            Ok(())
        })
        .unwrap();
    let read = store.outbox_next(0, 3, 10, |_| false).unwrap();
    let seqs: Vec<u64> = read.items.iter().map(|i| i.0).collect();
    let delivered = |i: usize| Event {
        message_id: read.items[i].1.message_id.clone(),
        ..event(EventKind::Delivered)
    };
    assert_eq!(store.outbox_confirmed(vec![seqs[0]], vec![delivered(0)]), 1);
    assert_eq!(store.outbox_depth().unwrap(), 3, "noted, not yet removed");
    // A write that fails takes nothing with it.
    let failed =
        store.write(|_| -> Result<(), StoreError> { Err(StoreError::Journal("no".into())) });
    assert!(failed.is_err());
    assert_eq!(store.outbox_confirmed(vec![seqs[1]], vec![delivered(1)]), 2);
    // The next write removes both and journals both deliveries, in order,
    // before its own entries.
    store
        .write(|t| forward(t, "B", "m3", 3).map(|_| ()))
        .unwrap();
    assert_eq!(store.outbox_confirmed_len(), 0);
    assert_eq!(store.outbox_depth().unwrap(), 2);
    let kinds: Vec<(EventKind, String)> = store
        .events()
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.message_id))
        .collect();
    let n = kinds.len();
    assert_eq!(
        kinds[n - 3..n - 1],
        [
            (EventKind::Delivered, "m0".to_string()),
            (EventKind::Delivered, "m1".to_string())
        ]
    );
    // Alone: a transaction of their own.
    store.outbox_confirmed(vec![seqs[2]], vec![delivered(2)]);
    store.outbox_remove_confirmed().unwrap();
    assert_eq!(store.outbox_depth().unwrap(), 1);
    assert_eq!(store.events().unwrap().len(), n + 1);
}

/// The drain takes what the last commits put in the outbox from memory,
/// the same entries and envelopes a read of the store gives, in order; what
/// it skipped stays in the store; a cursor memory does not hold (a read
/// from the oldest entry, more than memory keeps) reads the store; and
/// nothing a read passed comes back from memory, so what was published
/// and removed is not published again after a read from the oldest entry.
#[test]
fn fresh_outbox_entries_are_taken_from_memory_as_the_store_would_give_them() {
    let ids = |r: &OutboxRead| -> Vec<String> {
        r.items
            .iter()
            .map(|(_, e, _)| e.message_id.clone())
            .collect()
    };
    let store = Store::in_memory().unwrap();
    store
        .write(|t| {
            for (i, to) in ["A", "B", "A", "C"].iter().enumerate() {
                forward(t, to, &format!("m{i}"), 1)?;
            }
            Ok(())
        })
        .unwrap();
    // A transaction that fails leaves nothing behind, in memory either.
    let failed: Result<(), _> = store.write(|t| {
        forward(t, "A", "lost", 1)?;
        Err(StoreError::Journal("refused".into()))
    });
    assert!(failed.is_err());

    // Skipping A: m0 skipped, m1 taken, and the read stops after `take`.
    let first = store.outbox_recent(0, 100, 1, |to| to == "A").unwrap();
    assert_eq!(ids(&first), ["m1"]);
    assert_eq!(first.next, 2);
    let rest = store.outbox_recent(2, 100, 100, |_| false).unwrap();
    assert_eq!(ids(&rest), ["m2", "m3"]);
    assert_eq!(rest.next, 4);
    // What the store gives for the same entries.
    let from_store = store.outbox_next(0, 100, 100, |_| false).unwrap();
    assert_eq!(ids(&from_store), ["m0", "m1", "m2", "m3"]);
    for (got, want) in first
        .items
        .iter()
        .chain(&rest.items)
        .zip(&from_store.items[1..])
    {
        assert_eq!((got.0, &got.1, &got.2), (want.0, &want.1, &want.2));
    }
    // Taken means gone from memory, not from the store: the skipped m0 is
    // read again from the oldest entry.
    assert!(store.outbox_recent(0, 100, 100, |_| false).is_none());
    assert!(store.outbox_recent(4, 100, 100, |_| false).is_none());
    assert_eq!(store.outbox_depth().unwrap(), 4);

    // More than memory keeps: the oldest are read from the store, the
    // newest come from memory, and the two meet without a gap.
    store
        .write(|t| {
            for i in 0..mev_store::outbox::RECENT + 10 {
                forward(t, "B", &format!("n{i}"), 1)?;
            }
            Ok(())
        })
        .unwrap();
    assert!(store.outbox_recent(4, 100, 100, |_| false).is_none());
    let read = store.outbox_next(4, 10, 10, |_| false).unwrap();
    assert_eq!(read.next, 14);
    let from_memory = store.outbox_recent(read.next, 100, 100, |_| false).unwrap();
    assert_eq!(from_memory.items[0].1.message_id, "n10");
    assert_eq!(from_memory.next, 114);

    // A read of the store passes entries memory still holds (a commit that
    // left a gap, a read from the oldest entry): the drain publishes them
    // from that read, and after starting again from the oldest entry (they
    // may have been confirmed and removed meanwhile) gets them from the
    // store, not from memory.
    let read = store.outbox_next(114, 10, 10, |_| false).unwrap();
    assert_eq!(read.next, 124);
    let removed: Vec<u64> = read.items.iter().map(|(s, _, _)| *s).collect();
    store.outbox_remove(&removed, &[]).unwrap();
    assert!(store.outbox_recent(114, 100, 100, |_| false).is_none());
    assert!(store.outbox_recent(123, 100, 100, |_| false).is_none());
    let again = store.outbox_next(114, 1, 1, |_| false).unwrap();
    assert_eq!(
        again.items[0].0, 124,
        "the removed entries are not read again"
    );
    let rest = store
        .outbox_recent(125, usize::MAX, usize::MAX, |_| false)
        .unwrap();
    assert_eq!(rest.items[0].0, 125);
    assert_eq!(rest.next, store.outbox_end());
}

#[tokio::test]
async fn a_failed_store_refuses_every_write_says_why_and_wakes_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
    store.write(|t| t.accept("kept", &[1; 32], 5)).unwrap();
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
        .write(|t| t.accept("lost", &[2; 32], 6))
        .expect_err("nothing more is written");
    assert!(e.is_fatal(), "{e}");
    assert!(e.to_string().contains("No space left"), "{e}");
    assert!(store.prune_dedup(i64::MAX, 10).unwrap_err().is_fatal());
    assert!(store.close().is_err(), "no clean close of a failed store");
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    store
        .write(|t| {
            assert!(t.seen("kept")?.is_some(), "what was durable is there");
            assert!(t.seen("lost")?.is_none());
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
