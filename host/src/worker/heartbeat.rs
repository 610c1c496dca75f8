//! Lease heartbeats of one running attempt, and the reasons an attempt is interrupted.

use crate::job::{JobStatus, Lease};
use crate::queue::{Queue, QueueError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Reason a running attempt was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// A user cancelled the job; the queue already marked it `cancelled`.
    Cancelled,
    /// The lease is gone for another reason: it expired, and the job was claimed again or
    /// failed. The job is no longer this worker's to finish.
    LeaseLost { status: JobStatus },
    /// The worker is stopping and the shutdown grace period is over.
    Shutdown,
}

/// The stop signal of one attempt: the first reason set wins, then the guest is interrupted.
#[derive(Debug, Clone, Default)]
pub struct AttemptStop {
    pub token: CancellationToken,
    reason: Arc<OnceLock<Interrupt>>,
}

impl AttemptStop {
    /// Records `reason` (unless another came first) and interrupts the attempt.
    pub fn stop(&self, reason: Interrupt) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    pub fn reason(&self) -> Option<Interrupt> {
        self.reason.get().copied()
    }
}

/// Extends `lease` every `interval` until `done` fires. A heartbeat rejected with `LeaseLost`
/// stops the attempt, as cancelled when the job was cancelled and as lost otherwise. Other
/// failures are logged and retried at the next interval, because the lease usually outlives a
/// few of them.
pub async fn keep_lease(
    queue: Arc<dyn Queue>,
    lease: Lease,
    interval: Duration,
    stop: AttemptStop,
    done: CancellationToken,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match queue.heartbeat(&lease).await {
            Ok(_) => {}
            Err(QueueError::LeaseLost { status, .. }) => {
                let reason = if status == JobStatus::Cancelled {
                    tracing::info!(job_id = %lease.job_id, attempt = lease.attempt, "job was cancelled; stopping its attempt");
                    Interrupt::Cancelled
                } else {
                    tracing::warn!(job_id = %lease.job_id, attempt = lease.attempt, %status, "lease lost; stopping the attempt without finishing the job");
                    Interrupt::LeaseLost { status }
                };
                stop.stop(reason);
                return;
            }
            Err(error) => {
                tracing::warn!(job_id = %lease.job_id, attempt = lease.attempt, %error, "lease heartbeat failed; retrying at the next interval");
            }
        }
    }
}
