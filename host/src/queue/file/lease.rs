//! The calls a worker makes with its lease: `ack`, `fail`, `heartbeat` and `release`.
//!
//! A lease holds while the job is `running` under the same run id, attempt and worker id, so a
//! worker that still runs an attempt of a cancelled and retried job cannot touch the new run.

use super::index;
use super::layout::Layout;
use super::store::{self, JobFile};
use super::{Inner, io_at};
use crate::job::{Job, JobFailure, JobStatus, LastError, Lease, validate_id};
use crate::queue::{FailOptions, QueueError};
use chrono::Utc;
use serde_json::Value;

pub(super) fn ack(inner: &Inner, lease: &Lease, result: Value) -> Result<Job, QueueError> {
    with_lease(inner, lease, |layout, mut job| {
        let now = Utc::now();
        job.status = JobStatus::Completed;
        job.result = Some(result);
        job.locked_by = None;
        job.locked_until = None;
        job.finished_at = Some(now);
        job.updated_at = now;
        store::write_job(layout, &job)?;
        index::remove_running(layout, &job.id).map_err(io_at(&layout.running))?;
        tracing::debug!(
            job_id = %job.id,
            run_id = %job.run_id,
            worker_id = %lease.worker_id,
            attempt = lease.attempt,
            "job completed"
        );
        Ok(job)
    })
}

pub(super) fn fail(
    inner: &Inner,
    lease: &Lease,
    failure: JobFailure,
    opts: FailOptions,
) -> Result<Job, QueueError> {
    let settings = &inner.settings;
    with_lease(inner, lease, |layout, mut job| {
        let now = Utc::now();
        let retry = failure.kind.is_retryable() && job.attempts < job.max_attempts;
        job.last_error = Some(LastError {
            kind: failure.kind,
            code: failure.code.clone(),
            message: failure.message.clone(),
            attempt: job.attempts,
            at: now,
        });
        job.locked_by = None;
        job.locked_until = None;
        job.updated_at = now;

        if retry {
            let delay = match opts.retry_after {
                Some(retry_after) => retry_after.min(settings.backoff_max),
                None => settings.backoff(job.attempts),
            };
            job.status = JobStatus::Pending;
            job.run_at = now + delay;
            index::add_pending(layout, &job).map_err(io_at(&layout.pending))?;
            store::write_job(layout, &job)?;
            index::remove_running(layout, &job.id).map_err(io_at(&layout.running))?;
            tracing::info!(
                job_id = %job.id,
                run_id = %job.run_id,
                worker_id = %lease.worker_id,
                attempt = lease.attempt,
                code = %failure.code,
                delay_ms = delay.as_millis() as u64,
                "attempt failed; retry scheduled"
            );
        } else {
            job.status = JobStatus::Failed;
            job.finished_at = Some(now);
            store::write_job(layout, &job)?;
            index::remove_running(layout, &job.id).map_err(io_at(&layout.running))?;
            tracing::info!(
                job_id = %job.id,
                run_id = %job.run_id,
                worker_id = %lease.worker_id,
                attempt = lease.attempt,
                code = %failure.code,
                retryable = failure.kind.is_retryable(),
                "job failed"
            );
        }
        Ok(job)
    })
}

pub(super) fn heartbeat(inner: &Inner, lease: &Lease) -> Result<Job, QueueError> {
    let lease_length = inner.settings.lease;
    with_lease(inner, lease, |layout, mut job| {
        let now = Utc::now();
        job.locked_until = Some(now + lease_length);
        job.updated_at = now;
        store::write_job(layout, &job)?;
        tracing::trace!(job_id = %job.id, worker_id = %lease.worker_id, "lease extended");
        Ok(job)
    })
}

pub(super) fn release(inner: &Inner, lease: &Lease, reason: &str) -> Result<Job, QueueError> {
    with_lease(inner, lease, |layout, mut job| {
        let now = Utc::now();
        job.status = JobStatus::Pending;
        job.attempts = job.attempts.saturating_sub(1);
        job.run_at = now;
        job.locked_by = None;
        job.locked_until = None;
        job.updated_at = now;
        index::add_pending(layout, &job).map_err(io_at(&layout.pending))?;
        store::write_job(layout, &job)?;
        index::remove_running(layout, &job.id).map_err(io_at(&layout.running))?;
        tracing::info!(
            job_id = %job.id,
            run_id = %job.run_id,
            worker_id = %lease.worker_id,
            attempt = lease.attempt,
            reason,
            "job released; the attempt is not counted"
        );
        Ok(job)
    })
}

/// Runs `change` on the leased job under the queue lock, after checking that the lease still
/// holds: the job is running the lease's attempt for the lease's worker.
fn with_lease<T>(
    inner: &Inner,
    lease: &Lease,
    change: impl FnOnce(&Layout, Job) -> Result<T, QueueError>,
) -> Result<T, QueueError> {
    validate_id("job id", &lease.job_id).map_err(QueueError::Invalid)?;
    inner.locked(|layout, events| {
        let mut job = match store::read_job(layout, &lease.job_id)? {
            JobFile::Found(job) => *job,
            JobFile::Missing => {
                return Err(QueueError::NotFound {
                    job_id: lease.job_id.clone(),
                });
            }
            JobFile::Corrupt(reason) => {
                events.extend(store::quarantine(layout, &lease.job_id)?);
                return Err(QueueError::Corrupt {
                    path: layout.display(&layout.job_file(&lease.job_id)),
                    reason,
                });
            }
        };
        let same_attempt = job.run_id == lease.run_id
            && job.attempts == lease.attempt
            && job.locked_by.as_deref() == Some(lease.worker_id.as_str());
        if !(same_attempt && job.status == JobStatus::Running) {
            // The worker of a cancelled attempt learns of the cancel here and stops it, so the
            // job is free to be retried from now on.
            if same_attempt && job.status == JobStatus::Cancelled {
                job.locked_by = None;
                job.locked_until = None;
                job.updated_at = Utc::now();
                store::write_job(layout, &job)?;
            }
            return Err(QueueError::LeaseLost {
                job_id: job.id,
                attempt: lease.attempt,
                status: job.status,
                current_attempt: job.attempts,
            });
        }
        change(layout, job)
    })
}
