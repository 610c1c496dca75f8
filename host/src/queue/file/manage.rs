//! Changes made by users rather than workers: `cancel`, `retry` and `prune`.

use super::enqueue::{read_key_record, scoped_key};
use super::index::{self, PendingMarker};
use super::layout::{Layout, job_id_of_file_name, list_names};
use super::lifecycle::{self, QueueEvent};
use super::store::{self, JobFile};
use super::{Inner, io_at};
use crate::durable;
use crate::job::{Job, JobStatus, new_id, validate_id};
use crate::queue::QueueError;
use chrono::{DateTime, Utc};
use std::fs;
use std::io;
use std::time::{Duration, SystemTime};

/// Jobs deleted per hold of the queue lock during `prune`, so workers are not stalled by a long
/// prune.
const PRUNE_BATCH: usize = 256;

/// Age after which a temporary file left by an interrupted write is deleted by `prune`. Far
/// longer than any write takes, so a write in progress is never touched.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

pub(super) fn cancel(inner: &Inner, job_id: &str) -> Result<Job, QueueError> {
    validate_id("job id", job_id).map_err(QueueError::Invalid)?;
    inner.locked(|layout, events| {
        let mut job = existing_job(layout, job_id, events)?;
        let previous = job.status;
        match previous {
            JobStatus::Cancelled => return Ok(job),
            JobStatus::Completed | JobStatus::Failed => {
                return Err(QueueError::InvalidState {
                    job_id: job.id,
                    action: "cancel",
                    status: previous,
                });
            }
            JobStatus::Pending | JobStatus::Running => {}
        }

        let marker = PendingMarker::of_job(&job);
        let now = Utc::now();
        job.status = JobStatus::Cancelled;
        // A running attempt keeps `lockedBy` and `lockedUntil` until its worker learns of the
        // cancel (its next lease call) or the lease runs out, so `retry` cannot start a new run
        // while the old attempt still runs.
        if previous == JobStatus::Pending {
            job.locked_by = None;
            job.locked_until = None;
        }
        job.finished_at = Some(now);
        job.updated_at = now;
        store::write_job(layout, &job)?;

        // A running job's worker learns of the cancel at its next heartbeat (`LeaseLost`) and
        // records the run's end itself. A pending job has no worker, so the queue records it.
        if previous == JobStatus::Pending {
            index::remove_pending(layout, &job.job_type, &marker)
                .map_err(io_at(&layout.pending))?;
            events.push(lifecycle::run_finished(&job));
        } else {
            index::remove_running(layout, &job.id).map_err(io_at(&layout.running))?;
        }
        tracing::info!(job_id = %job.id, run_id = %job.run_id, was = %previous, "job cancelled");
        Ok(job)
    })
}

pub(super) fn retry(inner: &Inner, job_id: &str) -> Result<Job, QueueError> {
    validate_id("job id", job_id).map_err(QueueError::Invalid)?;
    inner.locked(|layout, events| {
        let mut job = existing_job(layout, job_id, events)?;
        if !matches!(job.status, JobStatus::Failed | JobStatus::Cancelled) {
            return Err(QueueError::InvalidState {
                job_id: job.id,
                action: "retry",
                status: job.status,
            });
        }

        let now = Utc::now();
        if job.status == JobStatus::Cancelled
            && let (Some(worker_id), Some(until)) = (&job.locked_by, job.locked_until)
            && until > now
        {
            return Err(QueueError::AttemptStopping {
                job_id: job.id.clone(),
                worker_id: worker_id.clone(),
                until,
            });
        }

        job.status = JobStatus::Pending;
        job.attempts = 0;
        job.run_id = new_id();
        job.run_at = now;
        job.locked_by = None;
        job.locked_until = None;
        job.started_at = None;
        job.finished_at = None;
        job.result = None;
        job.last_error = None;
        job.updated_at = now;
        index::add_pending(layout, &job).map_err(io_at(&layout.pending))?;
        store::write_job(layout, &job)?;

        tracing::info!(job_id = %job.id, run_id = %job.run_id, "job retried as a new run");
        events.push(lifecycle::run_queued(&job));
        Ok(job)
    })
}

/// Reads a job that must exist; an unreadable file is quarantined and reported as not found.
fn existing_job(
    layout: &Layout,
    job_id: &str,
    events: &mut Vec<QueueEvent>,
) -> Result<Job, QueueError> {
    match store::read_job(layout, job_id)? {
        JobFile::Found(job) => Ok(*job),
        JobFile::Missing => Err(QueueError::NotFound {
            job_id: job_id.to_string(),
        }),
        JobFile::Corrupt(_) => {
            events.extend(store::quarantine(layout, job_id)?);
            Err(QueueError::NotFound {
                job_id: job_id.to_string(),
            })
        }
    }
}

/// Deletes terminal jobs that finished before `now - older_than`, with their idempotency-key
/// records, and temporary files left by interrupted writes. Candidates are found without the
/// lock and checked again under it, because `retry` may have revived one in between.
pub(super) fn prune(inner: &Inner, older_than: Duration) -> Result<u64, QueueError> {
    let layout = &inner.layout;
    let cutoff = Utc::now() - older_than;
    let mut candidates = Vec::new();
    for name in list_names(&layout.jobs).map_err(io_at(&layout.jobs))? {
        let Some(job_id) = job_id_of_file_name(&name) else {
            continue;
        };
        if let JobFile::Found(job) = store::read_job(layout, job_id)?
            && is_prunable(&job, cutoff)
        {
            candidates.push(job.id);
        }
    }

    let mut deleted = 0;
    for batch in candidates.chunks(PRUNE_BATCH) {
        deleted += inner.locked(|layout, _| delete_batch(layout, batch, cutoff))?;
    }
    remove_stale_temp_files(&layout.jobs);
    remove_stale_temp_files(&layout.keys);

    if deleted > 0 {
        tracing::info!(
            deleted,
            older_than_secs = older_than.as_secs(),
            "pruned finished jobs"
        );
    }
    Ok(deleted)
}

fn is_prunable(job: &Job, cutoff: DateTime<Utc>) -> bool {
    job.status.is_terminal() && job.finished_at.unwrap_or(job.updated_at) < cutoff
}

fn delete_batch(
    layout: &Layout,
    job_ids: &[String],
    cutoff: DateTime<Utc>,
) -> Result<u64, QueueError> {
    let mut deleted = 0;
    for job_id in job_ids {
        let JobFile::Found(job) = store::read_job(layout, job_id)? else {
            continue;
        };
        if !is_prunable(&job, cutoff) {
            continue;
        }
        if let Some(key) = &job.idempotency_key
            && read_key_record(layout, &scoped_key(&job.job_type, key))?.as_deref()
                == Some(job_id.as_str())
        {
            let record = layout.key_record(&scoped_key(&job.job_type, key));
            fs::remove_file(&record).map_err(io_at(&record))?;
        }
        let path = layout.job_file(job_id);
        fs::remove_file(&path).map_err(io_at(&path))?;
        deleted += 1;
    }
    durable::sync_dir(&layout.jobs).map_err(io_at(&layout.jobs))?;
    Ok(deleted)
}

/// Deletes `.*.tmp` files older than `STALE_TEMP_AGE`; failures are logged, because a leftover
/// temporary file is ignored by every reader and harms nothing.
fn remove_stale_temp_files(dir: &std::path::Path) {
    let names = match list_names(dir) {
        Ok(names) => names,
        Err(error) => {
            tracing::warn!(
                dir = %dir.display(),
                %error,
                "failed to list a queue directory for temporary files"
            );
            return;
        }
    };
    for name in names
        .iter()
        .filter(|name| name.starts_with('.') && name.ends_with(".tmp"))
    {
        let path = dir.join(name);
        let age = fs::metadata(&path)
            .and_then(|metadata| metadata.modified())
            .map(|modified| {
                SystemTime::now()
                    .duration_since(modified)
                    .unwrap_or_default()
            });
        match age {
            Ok(age) if age > STALE_TEMP_AGE => {
                if let Err(error) = fs::remove_file(&path)
                    && error.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!(
                        path = %path.display(),
                        %error,
                        "failed to delete a stale temporary file"
                    );
                }
            }
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(
                    path = %path.display(),
                    %error,
                    "failed to read a temporary file's age"
                );
            }
        }
    }
}
