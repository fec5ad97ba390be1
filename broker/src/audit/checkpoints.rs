//! The task that signs checkpoints of the journal in the store: every
//! [`EVERY`] while entries arrive, and when the broker stops.

use crate::context::Context;
use crate::journal::checkpoint::{Checkpoint, EVERY};
use crate::store::prelude::*;
use crate::store::StoreError;
use mev_proto::crypto::Identity;
use std::sync::Arc;
use tokio::sync::watch;

/// Signs and keeps a checkpoint of the journal now, unless the newest one
/// already covers it. Returns the new checkpoint, if one was written.
pub fn write(
    store: &impl JournalState,
    identity: &Identity,
    at_ms: i64,
) -> Result<Option<Checkpoint>, StoreError> {
    let (size, root) = store.journal_head()?;
    let newest = store.checkpoints()?.last().map(|(s, _)| *s);
    if size == 0 || newest == Some(size) {
        return Ok(None);
    }
    let cp = Checkpoint::sign(identity, size, &root, at_ms).map_err(StoreError::Journal)?;
    store.put_checkpoint(size, &serde_json::to_vec(&cp)?)?;
    Ok(Some(cp))
}

/// Writes a checkpoint every [`EVERY`] while the journal grows, until
/// `shutdown` flips (the broker writes the last one once everything stopped).
pub async fn run(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.changed() => return,
        }
        let c = ctx.clone();
        let done = tokio::task::spawn_blocking(move || {
            write(&*c.store, &c.identity, c.clock.now().timestamp_millis())
        })
        .await;
        match done {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot write a journal checkpoint"),
            Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
