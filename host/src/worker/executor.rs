//! One claimed attempt, from `RunStarted` to `RunFinished`: run it in the plugin's sandbox while
//! heartbeating its lease, then ack, fail or release it and record the outcome.

use super::WorkerContext;
use super::heartbeat::{AttemptStop, Interrupt, keep_lease};
use crate::events::{Event, Level, RunContext, event_type};
use crate::job::{Job, JobFailure, JobStatus, Lease};
use crate::queue::{FailOptions, QueueError};
use crate::runtime::failure::code;
use crate::runtime::{AttemptOutcome, LoadedPlugin};
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// `component` of the events the worker writes.
const COMPONENT: &str = "worker";

/// Tries of a queue call that fails with an I/O error before the error is reported.
const QUEUE_TRIES: u32 = 3;

/// Runs the claimed attempt of `job` to its end, recording every error in the run's events and
/// the log instead of returning it.
pub async fn execute(ctx: Arc<WorkerContext>, job: Job, lease: Lease) {
    let span = tracing::info_span!(
        "attempt",
        job_id = %job.id,
        run_id = %job.run_id,
        job_type = %job.job_type,
        attempt = job.attempts,
        worker_id = %ctx.settings.worker_id,
    );
    Attempt::new(ctx, job, lease).run().instrument(span).await;
}

struct Attempt {
    ctx: Arc<WorkerContext>,
    job: Job,
    lease: Lease,
    context: RunContext,
    started: Instant,
}

impl Attempt {
    fn new(ctx: Arc<WorkerContext>, job: Job, lease: Lease) -> Self {
        let context = RunContext::of_job(&job);
        Attempt {
            ctx,
            job,
            lease,
            context,
            started: Instant::now(),
        }
    }

    async fn run(self) {
        // The plugin may have been unloaded between the claim and now.
        let Some(plugin) = self.ctx.registry.plugin_for(&self.job.job_type) else {
            tracing::warn!("no plugin handles the job type any more; handing the job back");
            self.release("no plugin handles the job type").await;
            return;
        };

        let stop = AttemptStop::child_of(&self.ctx.grace_over);
        self.ctx.in_flight.insert(&self.job, stop.clone());
        self.record_started(&plugin).await;

        let heartbeat_done = CancellationToken::new();
        let heartbeat = tokio::spawn(keep_lease(
            Arc::clone(&self.ctx.queue),
            self.lease.clone(),
            self.ctx.lease_heartbeat_interval(),
            stop.clone(),
            heartbeat_done.clone(),
        ));

        let runtime = self.ctx.registry.runtime();
        let outcome = runtime.run_attempt(&plugin, &self.job, &stop.token).await;
        heartbeat_done.cancel();
        if let Err(error) = heartbeat.await {
            tracing::error!(%error, "lease heartbeat task failed");
        }

        match outcome {
            AttemptOutcome::Completed(result) => self.complete(result).await,
            AttemptOutcome::Failed(failure) => self.fail(failure).await,
            AttemptOutcome::Stopped(failure) => self.stopped_early(failure, stop.reason()).await,
            AttemptOutcome::Interrupted => {
                self.interrupted(stop.reason().unwrap_or(Interrupt::Shutdown))
                    .await
            }
        }
        self.ctx.in_flight.remove(&self.job.id);
    }

    async fn record_started(&self, plugin: &LoadedPlugin) {
        tracing::info!(plugin = %plugin.name, version = %plugin.version, "attempt started");
        let data = json!({
            "jobId": self.job.id,
            "jobType": self.job.job_type,
            "attempt": self.job.attempts,
            "workerId": self.ctx.settings.worker_id,
            "plugin": plugin.name,
            "pluginVersion": plugin.version,
        });
        self.append(Event::new(&self.context, event_type::RUN_STARTED, COMPONENT).with_data(data))
            .await;
    }

    async fn complete(&self, result: Value) {
        let acked = with_retries("ack", || self.ctx.queue.ack(&self.lease, result.clone())).await;
        if let Err(error) = acked {
            self.rejected("ack", error).await;
            return;
        }

        // A completed job never runs again, so its state is no longer needed. It is deleted
        // before `RunFinished` is recorded, so once the event exists the state is gone.
        let state = self.ctx.state.clone();
        let job_id = self.job.id.clone();
        let removed = tokio::task::spawn_blocking(move || state.remove(&job_id)).await;
        if let Ok(Err(error)) = removed {
            tracing::warn!(%error, "could not delete the completed job's state");
        }

        tracing::info!(latency_ms = self.latency_ms(), "attempt completed");
        let data = json!({ "status": "completed", "attempt": self.job.attempts, "result": result });
        self.finished(data).await;
    }

    /// Handles an error the plugin returned after `is-cancelled` returned true. When the shutdown
    /// grace period is over, the job goes back to the queue without using up the attempt.
    /// Otherwise the error counts like any other, and the queue rejects it for a cancelled job.
    async fn stopped_early(&self, failure: JobFailure, reason: Option<Interrupt>) {
        if reason == Some(Interrupt::Shutdown) {
            tracing::info!(code = %failure.code, "plugin stopped early because the shutdown grace period is over; handing the job back");
            self.release("worker shutting down").await;
        } else {
            self.fail(failure).await;
        }
    }

    async fn fail(&self, failure: JobFailure) {
        let failed = with_retries("fail", || {
            self.ctx
                .queue
                .fail(&self.lease, failure.clone(), FailOptions::default())
        })
        .await;
        let after = match failed {
            Ok(after) => after,
            Err(error) => {
                self.rejected("fail", error).await;
                return;
            }
        };

        let will_retry = after.status == JobStatus::Pending;
        let error =
            json!({ "kind": failure.kind, "code": failure.code, "message": failure.message });
        if will_retry {
            tracing::info!(code = %failure.code, retry_at = %after.run_at, "attempt failed; the job will be retried");
        }
        self.ctx.events.record_error_event(
            &self.context,
            COMPONENT,
            &failure.code,
            &failure.message,
            json!({ "attempt": self.job.attempts, "kind": failure.kind, "willRetry": will_retry }),
        );
        let data = json!({
            "status": after.status,
            "willRetry": will_retry,
            "attempt": self.job.attempts,
            "error": error,
        });
        let event = self
            .finished_event(data)
            .with_level(if will_retry {
                Level::Warn
            } else {
                Level::Error
            })
            .with_error(&failure.code, &failure.message);
        self.append(event).await;
    }

    async fn interrupted(&self, reason: Interrupt) {
        match reason {
            Interrupt::Cancelled => self.cancelled().await,
            Interrupt::LeaseLost { status } => {
                let message = format!(
                    "attempt {} of job {} lost its lease (the job is now {status}); its outcome was discarded",
                    self.job.attempts, self.job.id
                );
                self.lease_lost(&message, status);
            }
            Interrupt::JobGone => self.job_gone().await,
            Interrupt::Shutdown => {
                tracing::info!("worker stopping; handing the running job back to the queue");
                self.release("worker shutting down").await;
            }
        }
    }

    /// Records that the attempt's outcome was discarded because its lease is gone.
    fn lease_lost(&self, message: &str, status: JobStatus) {
        self.ctx.events.record_error_event(
            &self.context,
            COMPONENT,
            code::LEASE_LOST,
            message,
            json!({ "attempt": self.job.attempts, "status": status }),
        );
    }

    /// Records that the job vanished from the queue under a running attempt.
    async fn job_gone(&self) {
        let message = format!(
            "job {} no longer exists in the queue (its file was quarantined or deleted); the outcome of attempt {} was discarded",
            self.job.id, self.job.attempts
        );
        self.ctx.events.record_error_event(
            &self.context,
            COMPONENT,
            code::JOB_GONE,
            &message,
            json!({ "attempt": self.job.attempts }),
        );
    }

    async fn cancelled(&self) {
        tracing::info!("attempt stopped because the job was cancelled");
        let data = json!({ "status": "cancelled", "attempt": self.job.attempts });
        let message = format!("job was cancelled while attempt {} ran", self.job.attempts);
        let event = self
            .finished_event(data)
            .with_error(code::CANCELLED, &message);
        self.append(event).await;
    }

    /// Hands the job back to the queue without using up the attempt.
    async fn release(&self, reason: &str) {
        match with_retries("release", || self.ctx.queue.release(&self.lease, reason)).await {
            Ok(_) => {
                let data = json!({ "status": "pending", "released": true, "attempt": self.job.attempts, "reason": reason });
                self.finished(data).await;
            }
            Err(error) => self.rejected("release", error).await,
        }
    }

    /// Records a queue call that did not take: the lease is gone (the job was cancelled or
    /// claimed again), or the queue failed.
    async fn rejected(&self, operation: &str, error: QueueError) {
        match error {
            QueueError::LeaseLost {
                status: JobStatus::Cancelled,
                ..
            } => self.cancelled().await,
            QueueError::NotFound { .. } => self.job_gone().await,
            QueueError::LeaseLost { status, .. } => {
                let message = format!(
                    "could not {operation} attempt {} of job {}: its lease is gone (the job is now {status})",
                    self.job.attempts, self.job.id
                );
                self.lease_lost(&message, status);
            }
            error => {
                let message = format!(
                    "could not {operation} attempt {} of job {}: {error}; the job stays running until its lease expires",
                    self.job.attempts, self.job.id
                );
                self.ctx.events.record_error_event(
                    &self.context,
                    COMPONENT,
                    code::QUEUE_ERROR,
                    &message,
                    json!({ "attempt": self.job.attempts }),
                );
            }
        }
    }

    async fn finished(&self, data: Value) {
        let event = self.finished_event(data);
        self.append(event).await;
    }

    fn finished_event(&self, data: Value) -> Event {
        Event::new(&self.context, event_type::RUN_FINISHED, COMPONENT)
            .with_data(data)
            .with_latency_ms(self.latency_ms())
    }

    async fn append(&self, event: Event) {
        let events = self.ctx.events.clone();
        let event_type = event.event_type.clone();
        let result = tokio::task::spawn_blocking(move || events.append(&event)).await;
        let error = match result {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error.to_string(),
            Err(error) => error.to_string(),
        };
        tracing::error!(event_type, %error, "failed to record a run event");
    }

    fn latency_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Runs a queue call, trying again twice (after 100 ms, then 200 ms) when it fails with an I/O
/// error.
async fn with_retries<T, F, Fut>(operation: &str, mut call: F) -> Result<T, QueueError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, QueueError>>,
{
    let mut delay = Duration::from_millis(100);
    let mut tries = 1;
    loop {
        match call().await {
            Err(error @ QueueError::Io { .. }) if tries < QUEUE_TRIES => {
                tracing::warn!(operation, %error, try_number = tries, "queue call failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                tries += 1;
            }
            result => return result,
        }
    }
}
