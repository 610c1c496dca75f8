//! `get`, `list` and `counts`: reads without the queue lock. A file found unreadable is checked
//! again under the lock and quarantined, and the read goes on without it.

use super::Inner;
use super::layout::{job_id_of_file_name, list_names};
use super::store::{self, JobFile};
use crate::job::{Job, JobStatus, validate_id, validate_job_type};
use crate::queue::{JobFilter, JobPage, QueueError, StatusCount};
use std::collections::BTreeMap;

/// Largest page `list` returns.
const MAX_PAGE: usize = 500;

pub(super) fn get(inner: &Inner, job_id: &str) -> Result<Option<Job>, QueueError> {
    validate_id("job id", job_id).map_err(QueueError::Invalid)?;
    read_or_quarantine(inner, job_id)
}

/// Reads a job; `None` when it is missing or its file was unreadable and is now in quarantine.
fn read_or_quarantine(inner: &Inner, job_id: &str) -> Result<Option<Job>, QueueError> {
    match store::read_job(&inner.layout, job_id)? {
        JobFile::Found(job) => Ok(Some(*job)),
        JobFile::Missing => Ok(None),
        JobFile::Corrupt(_) => {
            inner.locked(|layout, events| {
                events.extend(store::quarantine(layout, job_id)?);
                Ok(())
            })?;
            // A writer may have replaced the file with a valid record before the lock was taken.
            match store::read_job(&inner.layout, job_id)? {
                JobFile::Found(job) => Ok(Some(*job)),
                JobFile::Missing | JobFile::Corrupt(_) => Ok(None),
            }
        }
    }
}

/// Lists jobs newest first. Job ids are UUID v7, so name order is creation order and, without a
/// filter, only the listed jobs' files are read.
pub(super) fn list(inner: &Inner, filter: &JobFilter) -> Result<JobPage, QueueError> {
    if !(1..=MAX_PAGE).contains(&filter.limit) {
        return Err(QueueError::Invalid(format!(
            "invalid limit {}: use 1 to {MAX_PAGE}",
            filter.limit
        )));
    }
    if let Some(job_type) = &filter.job_type {
        validate_job_type(job_type).map_err(QueueError::Invalid)?;
    }
    if let Some(cursor) = &filter.cursor {
        validate_id("cursor", cursor).map_err(QueueError::Invalid)?;
    }

    let mut job_ids = job_ids(inner)?;
    job_ids.sort_unstable_by(|a, b| b.cmp(a));

    let mut jobs: Vec<Job> = Vec::new();
    let mut next_cursor = None;
    let after_cursor = job_ids
        .iter()
        .filter(|id| filter.cursor.as_ref().is_none_or(|cursor| *id < cursor));
    for job_id in after_cursor {
        let Some(job) = read_or_quarantine(inner, job_id)? else {
            continue;
        };
        let matches = filter.status.is_none_or(|status| status == job.status)
            && filter
                .job_type
                .as_ref()
                .is_none_or(|job_type| *job_type == job.job_type);
        if !matches {
            continue;
        }
        // One match past the page shows that another page exists.
        if jobs.len() == filter.limit {
            next_cursor = jobs.last().map(|last| last.id.clone());
            break;
        }
        jobs.push(job);
    }
    Ok(JobPage { jobs, next_cursor })
}

/// Counts jobs by type and state, in job type order.
///
/// NOTE: reads every job file, as `list` with a filter may, so the cost grows with the finished
/// jobs kept on disk until `prune` deletes them. `dequeue` does not have this cost.
pub(super) fn counts(inner: &Inner) -> Result<Vec<StatusCount>, QueueError> {
    let mut tally: BTreeMap<(String, usize), u64> = BTreeMap::new();
    for job_id in job_ids(inner)? {
        if let Some(job) = read_or_quarantine(inner, &job_id)? {
            let status_index = JobStatus::ALL
                .iter()
                .position(|status| *status == job.status)
                .unwrap_or(0);
            *tally.entry((job.job_type, status_index)).or_default() += 1;
        }
    }
    Ok(tally
        .into_iter()
        .map(|((job_type, status_index), count)| StatusCount {
            job_type,
            status: JobStatus::ALL[status_index],
            count,
        })
        .collect())
}

fn job_ids(inner: &Inner) -> Result<Vec<String>, QueueError> {
    let layout = &inner.layout;
    let names = list_names(&layout.jobs).map_err(|error| QueueError::io(&layout.jobs, error))?;
    Ok(names
        .iter()
        .filter_map(|name| job_id_of_file_name(name))
        .map(str::to_string)
        .collect())
}
