//! Marker files that let `dequeue` and the lease sweep find their jobs without reading finished
//! ones: `index/pending/<jobType>/<marker>` per pending job and `index/running/<jobId>` per
//! running job.
//!
//! The job files are the truth and the markers a derived index. Writers hold the queue lock and
//! order their steps so that a process crash can only leave a marker too many, never one too few.
//! A marker is created before the job file that needs it is written. It is removed after the job
//! file that no longer needs it is written. A marker too many is removed when it is next read
//! (`dequeue` checks each marker against its job file; the sweep checks running markers).
//!
//! Markers are written without `fsync`: a process crash keeps them in the page cache, and after an
//! operating system crash `repair` rebuilds the whole index from the job files before the first
//! queue operation of the new boot.

use super::layout::{Layout, list_names};
use crate::job::{Job, PRIORITY_MAX};
use chrono::{DateTime, Utc};
use std::fs::{self, File};
use std::io;

/// The parsed name of a pending marker: `<rank>_<createdAt µs>_<runAt µs>_<jobId>`, where rank is
/// `PRIORITY_MAX - priority`, so sorting by (rank, createdAt, id) puts higher priority first and
/// then older jobs first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PendingMarker {
    pub rank: u32,
    pub created_micros: u64,
    pub run_at_micros: u64,
    pub job_id: String,
}

impl PendingMarker {
    pub fn of_job(job: &Job) -> Self {
        PendingMarker {
            rank: (PRIORITY_MAX - job.priority).clamp(0, 9999) as u32,
            created_micros: micros(job.created_at),
            run_at_micros: micros(job.run_at),
            job_id: job.id.clone(),
        }
    }

    pub fn file_name(&self) -> String {
        format!(
            "{:04}_{:020}_{:020}_{}",
            self.rank, self.created_micros, self.run_at_micros, self.job_id
        )
    }

    /// Parses a marker name; `None` for anything else (such as a stray temporary file).
    pub fn parse(name: &str) -> Option<Self> {
        let mut fields = name.splitn(4, '_');
        let rank = fields.next()?.parse().ok()?;
        let created_micros = fields.next()?.parse().ok()?;
        let run_at_micros = fields.next()?.parse().ok()?;
        let job_id = fields.next()?;
        crate::job::validate_id("job id", job_id).ok()?;
        Some(PendingMarker {
            rank,
            created_micros,
            run_at_micros,
            job_id: job_id.to_string(),
        })
    }

    /// Returns the claim order key; lower is claimed first.
    pub fn claim_order(&self) -> (u32, u64, &str) {
        (self.rank, self.created_micros, &self.job_id)
    }

    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.run_at_micros <= micros(now)
    }

    pub fn run_at(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(i64::try_from(self.run_at_micros).ok()?)
    }
}

/// Microseconds since the Unix epoch; times before it count as the epoch.
fn micros(time: DateTime<Utc>) -> u64 {
    u64::try_from(time.timestamp_micros()).unwrap_or(0)
}

/// Lists the pending markers of one job type.
pub(super) fn pending_markers(layout: &Layout, job_type: &str) -> io::Result<Vec<PendingMarker>> {
    let names = list_names(&layout.pending_dir(job_type))?;
    Ok(names
        .iter()
        .filter_map(|name| PendingMarker::parse(name))
        .collect())
}

/// Lists the job types that have a pending directory.
pub(super) fn pending_job_types(layout: &Layout) -> io::Result<Vec<String>> {
    let names = list_names(&layout.pending)?;
    Ok(names
        .into_iter()
        .filter(|name| crate::job::validate_job_type(name).is_ok())
        .collect())
}

pub(super) fn add_pending(layout: &Layout, job: &Job) -> io::Result<()> {
    let dir = layout.pending_dir(&job.job_type);
    let path = dir.join(PendingMarker::of_job(job).file_name());
    match File::create(&path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(&dir)?;
            File::create(&path).map(drop)
        }
        Err(error) => Err(error),
    }
}

pub(super) fn remove_pending(
    layout: &Layout,
    job_type: &str,
    marker: &PendingMarker,
) -> io::Result<()> {
    remove_if_present(&layout.pending_dir(job_type).join(marker.file_name()))
}

pub(super) fn pending_exists(layout: &Layout, job: &Job) -> bool {
    layout
        .pending_dir(&job.job_type)
        .join(PendingMarker::of_job(job).file_name())
        .exists()
}

pub(super) fn add_running(layout: &Layout, job_id: &str) -> io::Result<()> {
    File::create(layout.running_marker(job_id)).map(drop)
}

pub(super) fn remove_running(layout: &Layout, job_id: &str) -> io::Result<()> {
    remove_if_present(&layout.running_marker(job_id))
}

/// Lists the job ids that have a running marker.
pub(super) fn running_job_ids(layout: &Layout) -> io::Result<Vec<String>> {
    let names = list_names(&layout.running)?;
    Ok(names
        .into_iter()
        .filter(|name| crate::job::validate_id("job id", name).is_ok())
        .collect())
}

fn remove_if_present(path: &std::path::Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn marker_name_round_trips_and_orders() {
        let created = Utc.timestamp_micros(1_700_000_000_123_456).single();
        let Some(created) = created else {
            panic!("test timestamp out of range");
        };
        let high = PendingMarker {
            rank: 0,
            created_micros: micros(created),
            run_at_micros: micros(created),
            job_id: "0190-b".to_string(),
        };
        let parsed = PendingMarker::parse(&high.file_name());
        assert_eq!(parsed.as_ref(), Some(&high));

        let low_older = PendingMarker {
            rank: 1000,
            created_micros: 1,
            ..high.clone()
        };
        assert!(high.claim_order() < low_older.claim_order());
        assert!(PendingMarker::parse(".tmp_1_2_x").is_none());
        assert!(PendingMarker::parse("0001_2_3_../x").is_none());
    }
}
