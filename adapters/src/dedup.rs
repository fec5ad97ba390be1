//! Which message ids were already handled, so a redelivered message is not
//! handed to a handler twice. Ids are kept for a retention window.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The state of a message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// First time: the caller now owns handling it.
    New,
    /// Being handled right now by another delivery.
    InProgress,
    /// Already handled.
    Done,
}

#[derive(Default)]
struct State {
    ids: HashMap<String, bool>,
    order: VecDeque<(Instant, String)>,
}

pub(crate) struct Dedup {
    retention: Duration,
    state: Mutex<State>,
}

impl Dedup {
    pub(crate) fn new(retention: Duration) -> Self {
        Dedup {
            retention,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `id` for handling unless it was seen.
    pub(crate) fn claim(&self, id: &str) -> Seen {
        let mut st = self.lock();
        let now = Instant::now();
        while let Some((t, _)) = st.order.front() {
            if now.duration_since(*t) < self.retention {
                break;
            }
            if let Some((_, old)) = st.order.pop_front() {
                st.ids.remove(&old);
            }
        }
        match st.ids.get(id) {
            Some(true) => Seen::Done,
            Some(false) => Seen::InProgress,
            None => {
                st.ids.insert(id.to_string(), false);
                st.order.push_back((now, id.to_string()));
                Seen::New
            }
        }
    }

    /// Marks a claimed id as handled.
    pub(crate) fn done(&self, id: &str) {
        if let Some(v) = self.lock().ids.get_mut(id) {
            *v = true;
        }
    }

    /// Releases a claim whose handling failed, so a redelivery is handled.
    pub(crate) fn release(&self, id: &str) {
        let mut st = self.lock();
        if st.ids.get(id) == Some(&false) {
            st.ids.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_once() {
        let d = Dedup::new(Duration::from_secs(60));
        assert_eq!(d.claim("a"), Seen::New);
        assert_eq!(d.claim("a"), Seen::InProgress);
        d.done("a");
        assert_eq!(d.claim("a"), Seen::Done);
        assert_eq!(d.claim("b"), Seen::New);
        d.release("b");
        assert_eq!(d.claim("b"), Seen::New);
    }

    #[test]
    fn forgets_after_retention() {
        let d = Dedup::new(Duration::ZERO);
        assert_eq!(d.claim("a"), Seen::New);
        d.done("a");
        assert_eq!(d.claim("x"), Seen::New);
        assert_eq!(d.claim("a"), Seen::New);
    }
}
