//! Reading and writing job files, and moving unreadable ones to quarantine.

use super::layout::Layout;
use crate::durable;
use crate::events::RunContext;
use crate::job::Job;
use crate::queue::QueueError;
use chrono::Utc;
use serde_json::json;
use std::fs;
use std::io;

use super::lifecycle::QueueEvent;

/// Content of a job file as read.
#[derive(Debug)]
pub(super) enum JobFile {
    Found(Box<Job>),
    Missing,
    /// The file exists but is not the job record of its name, for the given reason.
    Corrupt(String),
}

/// Reads `jobs/<job_id>.json`. The id must be validated. Needs no lock, because writers replace
/// the file by rename and a reader sees either the old or the new record.
pub(super) fn read_job(layout: &Layout, job_id: &str) -> Result<JobFile, QueueError> {
    let path = layout.job_file(job_id);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(JobFile::Missing),
        Err(error) => return Err(QueueError::io(&path, error)),
    };
    match serde_json::from_slice::<Job>(&bytes) {
        Ok(job) if job.id == job_id => Ok(JobFile::Found(Box::new(job))),
        Ok(job) => Ok(JobFile::Corrupt(format!(
            "the record's id is {:?}, not the file name's {job_id:?}",
            job.id
        ))),
        Err(error) => Ok(JobFile::Corrupt(error.to_string())),
    }
}

/// Replaces the job's file durably (`durable::write_atomic`). Call with the queue lock held.
pub(super) fn write_job(layout: &Layout, job: &Job) -> Result<(), QueueError> {
    let path = layout.job_file(&job.id);
    let bytes =
        serde_json::to_vec_pretty(job).map_err(|error| QueueError::io(&path, error.into()))?;
    durable::write_atomic(&path, &bytes).map_err(|error| QueueError::io(&path, error))
}

/// Moves the job file to `quarantine/` when it is still unreadable, and returns the `Error` event
/// to record. Call with the queue lock held: a reader without the lock may have seen a file that
/// a writer has since replaced with a valid record, and that record must not be moved.
pub(super) fn quarantine(layout: &Layout, job_id: &str) -> Result<Option<QueueEvent>, QueueError> {
    let JobFile::Corrupt(reason) = read_job(layout, job_id)? else {
        return Ok(None);
    };

    let source = layout.job_file(job_id);
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
    let target = layout.quarantine.join(format!("{job_id}.json.{stamp}"));
    fs::rename(&source, &target).map_err(|error| QueueError::io(&source, error))?;
    durable::sync_dir(&layout.jobs).map_err(|error| QueueError::io(&layout.jobs, error))?;
    super::index::remove_running(layout, job_id)
        .map_err(|error| QueueError::io(&layout.running, error))?;

    let file = layout.display(&source);
    let moved_to = layout.display(&target);
    Ok(Some(QueueEvent::Error {
        context: RunContext {
            job_id: Some(job_id.to_string()),
            ..RunContext::maintenance()
        },
        code: "job_file_corrupt",
        message: format!(
            "job file {file} is not a valid job record ({reason}); moved it to {moved_to}: repair it, move it back as {file} and run `jobhost queue repair`, or delete it"
        ),
        data: json!({ "file": file, "quarantinedTo": moved_to, "error": reason }),
    }))
}
