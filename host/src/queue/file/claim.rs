//! `dequeue`, and the sweep that takes back jobs whose lease expired.

use super::index::{self, PendingMarker};
use super::layout::{Layout, list_names};
use super::lifecycle::{self, QueueEvent};
use super::store::{self, JobFile};
use super::{Inner, io_at};
use crate::events::RunContext;
use crate::job::{FailureKind, Job, JobStatus, LastError, Lease, validate_job_type};
use crate::queue::{QueueError, QueueSettings};
use chrono::{DateTime, Utc};
use serde_json::json;

/// Longest accepted worker id, in characters.
const MAX_WORKER_ID_CHARS: usize = 256;

pub(super) fn dequeue(
    inner: &Inner,
    worker_id: &str,
    job_types: &[String],
) -> Result<Option<(Job, Lease)>, QueueError> {
    let chars = worker_id.chars().count();
    if chars == 0 || chars > MAX_WORKER_ID_CHARS {
        return Err(QueueError::Invalid(format!(
            "invalid worker id of {chars} characters: use 1 to {MAX_WORKER_ID_CHARS}"
        )));
    }
    for job_type in job_types {
        validate_job_type(job_type).map_err(QueueError::Invalid)?;
    }
    if job_types.is_empty() {
        return Ok(None);
    }

    if inner.take_sweep_turn() {
        sweep_expired_leases(inner)?;
    }

    inner.locked(|layout, events| {
        let mut candidates = due_marker_names(layout, job_types)?;

        // The first candidate in claim order is almost always valid, so taking the minimum
        // repeatedly costs less than sorting every due marker.
        while let Some(index) = first_in_claim_order(&candidates) {
            let (job_type, name) = candidates.swap_remove(index);
            let Some(marker) = PendingMarker::parse(&name) else {
                continue;
            };
            if let Some(job) = checked_pending_job(layout, &job_type, &marker, events)? {
                return claim(layout, &inner.settings, job, worker_id, &job_type, &marker)
                    .map(Some);
            }
        }
        Ok(None)
    })
}

/// Lists the names of the due pending markers of `job_types`, with their job type. Reads marker
/// names only, so the cost follows the number of pending jobs of those types, not the number of
/// jobs on disk.
fn due_marker_names(
    layout: &Layout,
    job_types: &[String],
) -> Result<Vec<(String, String)>, QueueError> {
    let due = index::due_field(Utc::now());
    let mut job_types = job_types.to_vec();
    job_types.sort_unstable();
    job_types.dedup();

    let mut names = Vec::new();
    for job_type in job_types {
        let dir = layout.pending_dir(&job_type);
        for name in list_names(&dir).map_err(io_at(&dir))? {
            if index::name_is_due(&name, &due) {
                names.push((job_type.clone(), name));
            }
        }
    }
    Ok(names)
}

/// Returns the index of the candidate to claim first: marker names compare in claim order.
fn first_in_claim_order(candidates: &[(String, String)]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .min_by(|(_, a), (_, b)| a.1.cmp(&b.1))
        .map(|(index, _)| index)
}

/// Returns the marker's job when the job file agrees that it is pending with exactly this marker.
/// Otherwise the marker is left over from a crash: it is removed, a missing marker for a pending
/// job is created, and an unreadable job file is quarantined.
fn checked_pending_job(
    layout: &Layout,
    job_type: &str,
    marker: &PendingMarker,
    events: &mut Vec<QueueEvent>,
) -> Result<Option<Job>, QueueError> {
    let remove_marker =
        || index::remove_pending(layout, job_type, marker).map_err(io_at(&layout.pending));
    match store::read_job(layout, &marker.job_id)? {
        JobFile::Found(job)
            if job.status == JobStatus::Pending && PendingMarker::of_job(&job) == *marker =>
        {
            Ok(Some(*job))
        }
        JobFile::Found(job) => {
            tracing::warn!(
                job_id = %job.id,
                status = %job.status,
                "removing a pending marker that disagrees with its job file"
            );
            remove_marker()?;
            if job.status == JobStatus::Pending && !index::pending_exists(layout, &job) {
                index::add_pending(layout, &job).map_err(io_at(&layout.pending))?;
            }
            Ok(None)
        }
        JobFile::Missing => {
            tracing::warn!(
                job_id = %marker.job_id,
                "removing a pending marker whose job file is missing"
            );
            remove_marker()?;
            Ok(None)
        }
        JobFile::Corrupt(_) => {
            events.extend(store::quarantine(layout, &marker.job_id)?);
            remove_marker()?;
            Ok(None)
        }
    }
}

/// Claims a checked pending job for `worker_id`: counts the attempt and grants the lease.
fn claim(
    layout: &Layout,
    settings: &QueueSettings,
    mut job: Job,
    worker_id: &str,
    job_type: &str,
    marker: &PendingMarker,
) -> Result<(Job, Lease), QueueError> {
    let now = Utc::now();
    job.status = JobStatus::Running;
    job.attempts += 1;
    job.locked_by = Some(worker_id.to_string());
    job.locked_until = Some(now + settings.lease);
    job.started_at = Some(now);
    job.updated_at = now;

    index::add_running(layout, &job.id).map_err(io_at(&layout.running))?;
    store::write_job(layout, &job)?;
    index::remove_pending(layout, job_type, marker).map_err(io_at(&layout.pending))?;

    tracing::debug!(
        job_id = %job.id,
        run_id = %job.run_id,
        worker_id,
        attempt = job.attempts,
        "job claimed"
    );
    let lease = Lease {
        job_id: job.id.clone(),
        run_id: job.run_id.clone(),
        attempt: job.attempts,
        worker_id: worker_id.to_string(),
    };
    Ok((job, lease))
}

/// Finds running jobs whose lease expired and takes them back: to `pending` while attempts
/// remain, otherwise to `failed` with `lastError` code `worker_lost`. Reads only the jobs that
/// have a running marker, first without the lock, then each candidate again under it.
fn sweep_expired_leases(inner: &Inner) -> Result<(), QueueError> {
    let layout = &inner.layout;
    let now = Utc::now();
    let mut candidates = Vec::new();
    for job_id in index::running_job_ids(layout).map_err(io_at(&layout.running))? {
        let live = matches!(
            store::read_job(layout, &job_id)?,
            JobFile::Found(job) if job.status == JobStatus::Running && !lease_expired(&job, now)
        );
        if !live {
            candidates.push(job_id);
        }
    }
    if candidates.is_empty() {
        return Ok(());
    }

    inner.locked(|layout, events| {
        for job_id in &candidates {
            expire_lease(layout, job_id, events)?;
        }
        Ok(())
    })
}

fn lease_expired(job: &Job, now: DateTime<Utc>) -> bool {
    job.locked_until.is_none_or(|until| until <= now)
}

/// Re-reads one sweep candidate under the lock and takes its job back when its lease is still
/// expired. Removes the running marker when the job is no longer running.
fn expire_lease(
    layout: &Layout,
    job_id: &str,
    events: &mut Vec<QueueEvent>,
) -> Result<(), QueueError> {
    let mut job = match store::read_job(layout, job_id)? {
        JobFile::Found(job) if job.status == JobStatus::Running => job,
        JobFile::Found(_) | JobFile::Missing => {
            return index::remove_running(layout, job_id).map_err(io_at(&layout.running));
        }
        JobFile::Corrupt(_) => {
            events.extend(store::quarantine(layout, job_id)?);
            return Ok(());
        }
    };
    let now = Utc::now();
    if !lease_expired(&job, now) {
        return Ok(());
    }

    let worker = job
        .locked_by
        .clone()
        .unwrap_or_else(|| "(unknown)".to_string());
    let attempt = job.attempts;
    let expired_at = job
        .locked_until
        .map_or_else(|| "an unknown time".to_string(), |until| until.to_rfc3339());
    let message = format!(
        "worker {worker} was lost while running attempt {attempt}: its lease expired at {expired_at} without a heartbeat"
    );
    let context = RunContext::of_job(&job);
    let retry = job.attempts < job.max_attempts;

    job.last_error = Some(LastError {
        kind: FailureKind::Retryable,
        code: "worker_lost".to_string(),
        message: message.clone(),
        attempt,
        at: now,
    });
    job.locked_by = None;
    job.locked_until = None;
    job.updated_at = now;

    // The lease itself was the wait before this retry, so the job is due at once.
    if retry {
        job.status = JobStatus::Pending;
        job.run_at = now;
        index::add_pending(layout, &job).map_err(io_at(&layout.pending))?;
    } else {
        job.status = JobStatus::Failed;
        job.finished_at = Some(now);
    }
    store::write_job(layout, &job)?;
    index::remove_running(layout, job_id).map_err(io_at(&layout.running))?;

    tracing::warn!(
        job_id = %job.id,
        run_id = %job.run_id,
        worker_id = %worker,
        attempt,
        retry,
        "lease expired without a heartbeat; the worker is considered lost"
    );
    let outcome = if retry {
        format!(
            "the job will run again as attempt {} of {}",
            attempt + 1,
            job.max_attempts
        )
    } else {
        format!(
            "no attempt is left of {}, so the job failed",
            job.max_attempts
        )
    };
    events.push(QueueEvent::Error {
        context,
        code: "worker_lost",
        message: format!("{message}; {outcome}"),
        data: json!({ "workerId": worker, "attempt": attempt, "status": job.status }),
    });
    if !retry {
        events.push(lifecycle::run_finished(&job));
    }
    Ok(())
}
