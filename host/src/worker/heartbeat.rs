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
    /// The job no longer exists in the queue: its file was quarantined as corrupt, or deleted.
    JobGone,
    /// The worker is stopping and the shutdown grace period is over.
    Shutdown,
}

/// The stop signal of one attempt: the first reason set wins, then the guest is interrupted.
#[derive(Debug, Clone)]
pub struct AttemptStop {
    pub token: CancellationToken,
    reason: Arc<OnceLock<Interrupt>>,
}

impl AttemptStop {
    /// Creates the stop signal of an attempt, which also fires when `grace_over` fires.
    pub fn child_of(grace_over: &CancellationToken) -> Self {
        AttemptStop {
            token: grace_over.child_token(),
            reason: Arc::default(),
        }
    }

    /// Records `reason` (unless another came first) and interrupts the attempt.
    pub fn stop(&self, reason: Interrupt) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Returns why the attempt was stopped, or `None` while it was not. A token cancelled
    /// without a reason was cancelled through its parent, which fires only when the shutdown
    /// grace period is over.
    pub fn reason(&self) -> Option<Interrupt> {
        let reason = self.reason.get().copied();
        reason.or_else(|| self.token.is_cancelled().then_some(Interrupt::Shutdown))
    }
}

/// Extends `lease` every `interval` until `done` fires. A heartbeat rejected with `LeaseLost`
/// stops the attempt, as cancelled when the job was cancelled and as lost otherwise. One rejected
/// with `NotFound` stops it because the job is gone. Other failures are logged and retried at the
/// next interval, because the lease usually outlives a few of them.
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
            Err(QueueError::NotFound { .. }) => {
                tracing::warn!(job_id = %lease.job_id, attempt = lease.attempt, "job no longer exists in the queue (quarantined or deleted); stopping its attempt");
                stop.stop(Interrupt::JobGone);
                return;
            }
            Err(error) => {
                tracing::warn!(job_id = %lease.job_id, attempt = lease.attempt, %error, "lease heartbeat failed; retrying at the next interval");
            }
        }
    }
}
