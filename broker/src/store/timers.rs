//! Deadline timers: two per open request (at risk, breach), ordered by due
//! time, so the timer task reads only the nearest; and the signal that
//! wakes it after a commit that armed one.

use super::redb::Redb;
use super::StoreError;
use mev_store::engine::{ReadableTable, ReadableTableMetadata, TableDefinition};
use mev_store::wal::Table;
use std::future::Future;

/// (due ms, request id, [`TimerKind`] byte): the deadline timers of open
/// requests, in time order; only the nearest are ever read into memory.
pub(super) const TIMERS: TableDefinition<(i64, &str, u8), ()> = TableDefinition::new("timers");

/// What a deadline timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// Warn the provider that the deadline is near.
    AtRisk = 0,
    /// The deadline passed: notices to both agencies.
    Breach = 1,
}

impl TimerKind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(TimerKind::AtRisk),
            1 => Some(TimerKind::Breach),
            _ => None,
        }
    }
}

/// A timer that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    pub due_ms: i64,
    pub request_id: String,
    pub kind: TimerKind,
}

/// Deadline timers, in a write transaction.
pub trait DeadlineTimers {
    /// Arms a timer for `request_id`, due at `due_ms`; the timer task is
    /// woken once the transaction commits.
    fn arm(&mut self, due_ms: i64, request_id: &str, kind: TimerKind) -> Result<(), StoreError>;

    /// Disarms a timer (no harm if it already fired).
    fn disarm(&mut self, due_ms: i64, request_id: &str, kind: TimerKind) -> Result<(), StoreError>;

    /// Takes up to `limit` timers due at or before `now_ms`, nearest first,
    /// disarming them: the caller acts on them in this same transaction.
    fn take_due(&mut self, now_ms: i64, limit: usize) -> Result<Vec<Timer>, StoreError>;
}

/// Deadline timers, outside a batch.
pub trait TimerState {
    /// When the nearest timer is due (UTC ms), if any is armed.
    fn next_timer(&self) -> Result<Option<i64>, StoreError>;

    /// Armed timers; O(1).
    fn timers_len(&self) -> Result<u64, StoreError>;

    /// Resolves after a commit that armed a timer.
    fn timers_changed(&self) -> impl Future<Output = ()> + Send + '_;

    /// Wakes whoever waits in [`TimerState::timers_changed`] (a clock moved).
    fn poke_timers(&self);
}

/// The timers' table in a redb write transaction.
pub struct TimerTables<'a> {
    pub(super) timers: Table<'a, (i64, &'static str, u8), ()>,
    /// Whether this transaction armed a timer (the task is woken after it).
    pub(super) armed: bool,
}

impl DeadlineTimers for TimerTables<'_> {
    fn arm(&mut self, due_ms: i64, request_id: &str, kind: TimerKind) -> Result<(), StoreError> {
        self.timers.insert((due_ms, request_id, kind as u8), ())?;
        self.armed = true;
        Ok(())
    }

    fn disarm(&mut self, due_ms: i64, request_id: &str, kind: TimerKind) -> Result<(), StoreError> {
        self.timers.remove((due_ms, request_id, kind as u8))?;
        Ok(())
    }

    fn take_due(&mut self, now_ms: i64, limit: usize) -> Result<Vec<Timer>, StoreError> {
        let due: Vec<(i64, String, u8)> = self
            .timers
            .range::<(i64, &str, u8)>(..(now_ms.saturating_add(1), "", 0))?
            .take(limit)
            .map(|item| {
                item.map(|(k, _)| {
                    let (at, id, kind) = k.value();
                    (at, id.to_string(), kind)
                })
            })
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(due.len());
        for (at, id, kind) in due {
            self.timers.remove((at, id.as_str(), kind))?;
            if let Some(kind) = TimerKind::from_byte(kind) {
                out.push(Timer {
                    due_ms: at,
                    request_id: id,
                    kind,
                });
            }
        }
        Ok(out)
    }
}

impl TimerState for Redb {
    fn next_timer(&self) -> Result<Option<i64>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(TIMERS)?;
        let first = t.first()?.map(|(k, _)| k.value().0);
        Ok(first)
    }

    fn timers_len(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(TIMERS)?.len()?)
    }

    fn timers_changed(&self) -> impl Future<Output = ()> + Send + '_ {
        self.timer_signal.notified()
    }

    fn poke_timers(&self) {
        self.timer_signal.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::{Timer, TimerKind};
    use crate::store::prelude::*;
    use crate::store::{Store, StoreError};
    use std::time::Duration;

    #[tokio::test]
    async fn timers_come_due_in_order_and_a_commit_that_arms_one_wakes_the_task() {
        timers_come_due_in_order_and_a_commit_that_arms_one_wakes_the_task_on(
            &Store::in_memory().unwrap(),
        )
        .await;
    }

    /// Engine-independent: every engine of [`State`] must pass it.
    async fn timers_come_due_in_order_and_a_commit_that_arms_one_wakes_the_task_on<S: State>(
        store: &S,
    ) {
        let woken = || tokio::time::timeout(Duration::from_millis(50), store.timers_changed());
        // A transaction that fails arms nothing and wakes no one.
        let failed: Result<(), _> = store.write(|t| {
            t.timers().arm(5, "x", TimerKind::Breach)?;
            Err(StoreError::Journal("refused".into()))
        });
        assert!(failed.is_err());
        assert_eq!(store.timers_len().unwrap(), 0);
        assert!(woken().await.is_err(), "no commit armed a timer");
        store
            .write(|t| {
                t.timers().arm(30, "b", TimerKind::Breach)?;
                t.timers().arm(10, "a", TimerKind::AtRisk)?;
                t.timers().arm(20, "a", TimerKind::Breach)?;
                Ok(())
            })
            .unwrap();
        assert!(woken().await.is_ok(), "the commit woke the timer task");
        assert_eq!(store.next_timer().unwrap(), Some(10));
        assert_eq!(store.timers_len().unwrap(), 3);
        let due = store.write(|t| t.timers().take_due(20, 10)).unwrap();
        assert_eq!(
            due,
            [
                Timer {
                    due_ms: 10,
                    request_id: "a".into(),
                    kind: TimerKind::AtRisk
                },
                Timer {
                    due_ms: 20,
                    request_id: "a".into(),
                    kind: TimerKind::Breach
                },
            ]
        );
        assert_eq!(store.next_timer().unwrap(), Some(30));
        store
            .write(|t| t.timers().disarm(30, "b", TimerKind::Breach))
            .unwrap();
        assert_eq!(store.timers_len().unwrap(), 0);
        assert_eq!(store.next_timer().unwrap(), None);
        assert!(woken().await.is_err(), "taking and disarming wake no one");
    }
}
