//! `enqueue`: input checks, idempotency keys, and the new job's files.

use super::layout::Layout;
use super::lifecycle::{self, QueueEvent};
use super::store::{self, JobFile};
use super::{Inner, index, io_at};
use crate::job::{
    Job, JobStatus, MAX_ATTEMPTS_LIMIT, PRIORITY_MAX, PRIORITY_MIN, new_id, validate_id,
    validate_job_type,
};
use crate::queue::{EnqueueOptions, Enqueued, QueueError, QueueSettings};
use chrono::Utc;
use serde_json::Value;
use std::fs;
use std::io;

/// Longest accepted idempotency key, in characters.
pub(super) const MAX_IDEMPOTENCY_KEY_CHARS: usize = 256;

pub(super) fn enqueue(
    inner: &Inner,
    job_type: &str,
    payload: Value,
    opts: EnqueueOptions,
) -> Result<Enqueued, QueueError> {
    let max_attempts = check_request(&inner.settings, job_type, &payload, &opts)?;

    inner.locked(|layout, events| {
        if let Some(key) = &opts.idempotency_key
            && let Some(job) = live_job_with_key(layout, job_type, key, events)?
        {
            tracing::debug!(
                job_id = %job.id,
                run_id = %job.run_id,
                "idempotency key matched an existing job"
            );
            return Ok(Enqueued {
                job,
                existing: true,
            });
        }

        let now = Utc::now();
        let job = Job {
            id: new_id(),
            job_type: job_type.to_string(),
            payload,
            status: JobStatus::Pending,
            attempts: 0,
            max_attempts,
            priority: opts.priority,
            run_at: opts.run_at.unwrap_or(now),
            idempotency_key: opts.idempotency_key.clone(),
            run_id: new_id(),
            locked_by: None,
            locked_until: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            result: None,
            last_error: None,
            request_id: opts.request_id.clone(),
        };

        // The key record and the marker go first, so a crash never leaves a job that the key or
        // `dequeue` cannot find. A crash before the job file is written leaves a record naming a
        // missing job, which the next enqueue ignores, and a marker that `dequeue` removes.
        if let Some(key) = &job.idempotency_key {
            write_key_record(layout, &scoped_key(&job.job_type, key), &job.id)?;
        }
        index::add_pending(layout, &job).map_err(io_at(&layout.pending))?;
        store::write_job(layout, &job)?;

        tracing::debug!(
            job_id = %job.id,
            run_id = %job.run_id,
            job_type = %job.job_type,
            "job enqueued"
        );
        events.push(lifecycle::run_queued(&job));
        Ok(Enqueued {
            job,
            existing: false,
        })
    })
}

/// Checks the request and returns the job's `max_attempts`.
fn check_request(
    settings: &QueueSettings,
    job_type: &str,
    payload: &Value,
    opts: &EnqueueOptions,
) -> Result<u32, QueueError> {
    validate_job_type(job_type).map_err(QueueError::Invalid)?;

    if !(PRIORITY_MIN..=PRIORITY_MAX).contains(&opts.priority) {
        return Err(QueueError::Invalid(format!(
            "invalid priority {}: use {PRIORITY_MIN} to {PRIORITY_MAX}",
            opts.priority
        )));
    }

    let max_attempts = opts.max_attempts.unwrap_or(settings.default_max_attempts);
    if !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
        return Err(QueueError::Invalid(format!(
            "invalid maxAttempts {max_attempts}: use 1 to {MAX_ATTEMPTS_LIMIT}"
        )));
    }

    if let Some(key) = &opts.idempotency_key {
        let chars = key.chars().count();
        if chars == 0 || chars > MAX_IDEMPOTENCY_KEY_CHARS {
            return Err(QueueError::Invalid(format!(
                "invalid idempotency key of {chars} characters: use 1 to {MAX_IDEMPOTENCY_KEY_CHARS}"
            )));
        }
    }

    let size = serde_json::to_vec(payload)
        .map_err(|error| QueueError::Invalid(format!("payload cannot be serialized: {error}")))?
        .len();
    if size > settings.max_payload_bytes {
        return Err(QueueError::PayloadTooLarge {
            size,
            limit: settings.max_payload_bytes,
        });
    }
    Ok(max_attempts)
}

/// Returns the name an idempotency key is recorded under. Keys are scoped by job type, so a job of
/// another type cannot take a key such as `RUN_DEBATE:<debateId>` from the jobs it belongs to. A
/// job type never contains a newline, so the name is unambiguous.
pub(super) fn scoped_key(job_type: &str, key: &str) -> String {
    format!("{job_type}\n{key}")
}

/// Returns the job of `job_type` that owns `key` while it is pending, running or completed. A
/// record that names a missing, failed or cancelled job, or a job with another key, frees the key.
fn live_job_with_key(
    layout: &Layout,
    job_type: &str,
    key: &str,
    events: &mut Vec<QueueEvent>,
) -> Result<Option<Job>, QueueError> {
    let Some(job_id) = read_key_record(layout, &scoped_key(job_type, key))? else {
        return Ok(None);
    };
    match store::read_job(layout, &job_id)? {
        JobFile::Found(job)
            if job.idempotency_key.as_deref() == Some(key)
                && job.job_type == job_type
                && matches!(
                    job.status,
                    JobStatus::Pending | JobStatus::Running | JobStatus::Completed
                ) =>
        {
            Ok(Some(*job))
        }
        JobFile::Found(_) | JobFile::Missing => Ok(None),
        JobFile::Corrupt(_) => {
            events.extend(store::quarantine(layout, &job_id)?);
            Ok(None)
        }
    }
}

/// Reads the job id a key record names; `None` when there is no record or it is not an id.
pub(super) fn read_key_record(layout: &Layout, key: &str) -> Result<Option<String>, QueueError> {
    let path = layout.key_record(key);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let job_id = text.trim();
            Ok(validate_id("job id", job_id)
                .is_ok()
                .then(|| job_id.to_string()))
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(QueueError::io(&path, error)),
    }
}

/// Points `key` at `job_id`. Written by rename but without `fsync`, like the markers, because
/// `repair` rebuilds the records from the job files after an operating system crash.
pub(super) fn write_key_record(layout: &Layout, key: &str, job_id: &str) -> Result<(), QueueError> {
    let path = layout.key_record(key);
    let temp = layout
        .keys
        .join(format!(".{:016x}.tmp", rand::random::<u64>()));
    fs::write(&temp, job_id.as_bytes())
        .and_then(|()| fs::rename(&temp, &path))
        .map_err(|error| {
            let _ = fs::remove_file(&temp);
            QueueError::io(&path, error)
        })
}
