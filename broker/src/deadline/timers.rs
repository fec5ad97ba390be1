//! Durable timers: the deadline timers of every open request live in the
//! store, ordered by due time; this task reads only the nearest, sleeps
//! until it is due (at most a second, so a moved clock is noticed), and fires
//! what is due in slices, each slice one transaction. Memory does not grow
//! with the number of open requests. Timers that fell due while the broker
//! was down fire at once on restart, recorded with how late they fired.

use super::track;
use crate::context::Context;
use crate::store::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Timers fired per transaction.
const SLICE: usize = 512;
/// The longest sleep between two looks at the clock.
const LOOK: Duration = Duration::from_secs(1);

/// Fires every timer due now; returns how many fired.
pub async fn fire_due(ctx: &Arc<Context>) -> usize {
    let mut fired = 0;
    loop {
        let now_ms = ctx.clock.now().timestamp_millis();
        // A read first: arming a timer wakes this task after every batch,
        // and a write transaction (an fsync, and the write lock the
        // pipeline needs) for nothing due would cost each of them.
        match ctx.store.next_timer() {
            Ok(Some(due)) if due <= now_ms => {}
            Ok(_) => return fired,
            Err(e) => {
                tracing::error!(error = %e, "deadline timers: cannot read the next one");
                return fired;
            }
        }
        let c = ctx.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut sla = Vec::new();
            let n = c.store.write(|t| {
                let due = t.timers().take_due(now_ms, SLICE)?;
                let mut notices = Vec::new();
                for timer in &due {
                    track::fire(&c.register, t, now_ms, timer, &mut sla, &mut notices)?;
                }
                for notice in &notices {
                    crate::sign::send_notice(&c.identity, t, now_ms, notice)?;
                }
                Ok(due.len())
            })?;
            Ok::<_, crate::store::StoreError>((n, sla))
        })
        .await;
        match result {
            Ok(Ok((n, sla))) => {
                ctx.counters.sla(&sla);
                fired += n;
                if n < SLICE {
                    return fired;
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "deadline timers: store write failed; retrying");
                return fired;
            }
            Err(e) => {
                tracing::error!(error = %e, "deadline timers: task failed");
                return fired;
            }
        }
    }
}

/// Runs the timers until `shutdown` flips to true.
pub async fn run(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        fire_due(&ctx).await;
        let wait = match ctx.store.next_timer() {
            Ok(Some(due)) => {
                let ms = due - ctx.clock.now().timestamp_millis();
                Duration::from_millis(ms.clamp(0, LOOK.as_millis() as i64) as u64)
            }
            Ok(None) => LOOK,
            Err(e) => {
                tracing::error!(error = %e, "deadline timers: cannot read the next one");
                LOOK
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.store.timers_changed() => {}
            _ = shutdown.changed() => {}
        }
    }
}
