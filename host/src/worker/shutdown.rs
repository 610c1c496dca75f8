//! Graceful stop: claim nothing more, give running attempts the grace period to finish, then
//! interrupt the rest and hand their jobs back to the queue, so no job stays `running` until its
//! lease expires. During the grace period `control.is-cancelled` stays false (unless the job
//! itself is cancelled), so a plugin that polls it keeps working.

use super::{Interrupt, WorkerContext};
use std::sync::Arc;
use tokio::task::JoinSet;

/// Waits for `attempts` for up to `shutdown_grace`, then interrupts those still running and waits
/// for them to release their jobs.
pub(super) async fn drain(ctx: &Arc<WorkerContext>, mut attempts: JoinSet<()>) {
    let grace = tokio::time::sleep(ctx.settings.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            joined = attempts.join_next() => match joined {
                Some(result) => log_join(ctx, result),
                None => return,
            },
            _ = &mut grace => break,
        }
    }

    tracing::info!(
        worker_id = %ctx.settings.worker_id,
        running = ctx.in_flight.len(),
        grace = ?ctx.settings.shutdown_grace,
        "shutdown grace period over; interrupting running attempts and handing their jobs back"
    );
    ctx.in_flight.stop_all(Interrupt::Shutdown);
    // Also reaches attempts that were claimed but not yet in `in_flight`, because their stop
    // tokens are children of this one.
    ctx.grace_over.cancel();
    while let Some(result) = attempts.join_next().await {
        log_join(ctx, result);
    }
}

fn log_join(ctx: &WorkerContext, result: Result<(), tokio::task::JoinError>) {
    if let Err(error) = result {
        tracing::error!(worker_id = %ctx.settings.worker_id, %error, "attempt task failed");
    }
}
