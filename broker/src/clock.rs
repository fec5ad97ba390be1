//! The broker's clock: the system's, or a manual one that tests move by hand
//! (deadlines of a working day cannot be waited for in a test).

use chrono::{DateTime, TimeDelta, Utc};
use std::sync::{Arc, Mutex};

/// Where the broker reads the time (UTC).
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock(Arc::new(Utc::now))
    }

    /// A clock standing at `start` until moved through the returned handle.
    pub fn manual(start: DateTime<Utc>) -> (Self, ManualClock) {
        let at = Arc::new(Mutex::new(start));
        let read = at.clone();
        (
            Clock(Arc::new(move || {
                *read.lock().unwrap_or_else(|p| p.into_inner())
            })),
            ManualClock(at),
        )
    }

    /// Now.
    pub fn now(&self) -> DateTime<Utc> {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

/// Moves a [`Clock::manual`] clock.
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    /// Sets the time.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }
    /// Moves the time forward (or back, with a negative delta).
    pub fn advance(&self, by: TimeDelta) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += by;
    }
    /// The time it shows.
    pub fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_by_hand() {
        let start = DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let (clock, hand) = Clock::manual(start);
        assert_eq!(clock.now(), start);
        hand.advance(TimeDelta::hours(30));
        assert_eq!(clock.now(), start + TimeDelta::hours(30));
        assert_eq!(hand.now(), clock.now());
    }
}
