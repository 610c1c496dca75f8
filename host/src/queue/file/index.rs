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

/// Width of the zero-padded microsecond fields in marker names.
const MICROS_WIDTH: usize = 20;

/// The parsed name of a pending marker: `<rank>_<createdAt µs>_<jobId>_<runAt µs>`, where rank is
/// `PRIORITY_MAX - priority`.
///
/// Marker names compare as text in claim order: higher priority first, then older `createdAt`,
/// then lower id. Rank and `createdAt` are zero-padded to a fixed width and job ids are UUIDs of
/// one length, so `dequeue` orders markers without parsing them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PendingMarker {
    pub rank: u32,
    pub created_micros: u64,
    pub job_id: String,
    pub run_at_micros: u64,
}

impl PendingMarker {
    pub fn of_job(job: &Job) -> Self {
        PendingMarker {
            rank: (PRIORITY_MAX - job.priority).clamp(0, 9999) as u32,
            created_micros: micros(job.created_at),
            job_id: job.id.clone(),
            run_at_micros: micros(job.run_at),
        }
    }

    pub fn file_name(&self) -> String {
        format!(
            "{:04}_{:0width$}_{}_{:0width$}",
            self.rank,
            self.created_micros,
            self.job_id,
            self.run_at_micros,
            width = MICROS_WIDTH
        )
    }

    /// Parses a marker name; `None` for anything else (such as a stray temporary file).
    pub fn parse(name: &str) -> Option<Self> {
        let (head, run_at) = name.rsplit_once('_')?;
        let (rank, rest) = head.split_once('_')?;
        let (created, job_id) = rest.split_once('_')?;
        crate::job::validate_id("job id", job_id).ok()?;
        Some(PendingMarker {
            rank: rank.parse().ok()?,
            created_micros: created.parse().ok()?,
            job_id: job_id.to_string(),
            run_at_micros: run_at.parse().ok()?,
        })
    }

    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.run_at_micros <= micros(now)
    }

    pub fn run_at(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(i64::try_from(self.run_at_micros).ok()?)
    }
}

/// Formats `time` as the `runAt` field of a marker name, for `name_is_due`.
pub(super) fn due_field(time: DateTime<Utc>) -> String {
    format!("{:0width$}", micros(time), width = MICROS_WIDTH)
}

/// Returns true when the marker `name` has a `runAt` field at or before `due_field`. Compares
/// the fixed-width fields as text, so `dequeue` need not parse every marker. A name that is not a
/// marker may pass; parsing the chosen marker rejects it.
pub(super) fn name_is_due(name: &str, due_field: &str) -> bool {
    let Some(separator) = name.len().checked_sub(MICROS_WIDTH + 1) else {
        return false;
    };
    match (
        name.get(separator..separator + 1),
        name.get(separator + 1..),
    ) {
        (Some("_"), Some(run_at)) => run_at <= due_field,
        _ => false,
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

    fn marker(rank: u32, created_micros: u64, job_id: &str, run_at_micros: u64) -> PendingMarker {
        PendingMarker {
            rank,
            created_micros,
            job_id: job_id.to_string(),
            run_at_micros,
        }
    }

    #[test]
    fn marker_name_round_trips() {
        let original = marker(
            1000,
            1_700_000_000_123_456,
            "0190a5c2-7d1e-7c3a-9a5b-000000000001",
            1_700_000_000_999_999,
        );
        assert_eq!(PendingMarker::parse(&original.file_name()), Some(original));
        let underscored = marker(3, 4, "job_with_underscores", 5);
        assert_eq!(
            PendingMarker::parse(&underscored.file_name()),
            Some(underscored)
        );
        assert!(PendingMarker::parse(".tmp_1_2_x").is_none());
        assert!(PendingMarker::parse("0001_2_../x_3").is_none());
        assert!(PendingMarker::parse("garbage").is_none());
    }

    #[test]
    fn marker_names_sort_in_claim_order() {
        let id_a = "0190a5c2-7d1e-7c3a-9a5b-00000000000a";
        let id_b = "0190a5c2-7d1e-7c3a-9a5b-00000000000b";
        let expected = [
            marker(0, 900, id_b, 9_999_999),
            marker(10, 100, id_b, 1),
            marker(10, 200, id_a, 1),
            marker(10, 200, id_b, 0),
            marker(2000, 50, id_a, 1),
        ];
        let mut names: Vec<String> = expected.iter().map(PendingMarker::file_name).collect();
        names.reverse();
        names.sort();
        let expected_names: Vec<String> = expected.iter().map(PendingMarker::file_name).collect();
        assert_eq!(names, expected_names);
    }

    #[test]
    fn due_check_compares_run_at_field() {
        let now = 1_700_000_000_000_000;
        let Some(now_time) = DateTime::from_timestamp_micros(now) else {
            panic!("test time out of range");
        };
        let field = due_field(now_time);
        let id = "0190a5c2-7d1e-7c3a-9a5b-00000000000a";
        assert!(name_is_due(
            &marker(0, 1, id, now as u64).file_name(),
            &field
        ));
        assert!(name_is_due(&marker(0, 1, id, 5).file_name(), &field));
        assert!(!name_is_due(
            &marker(0, 1, id, now as u64 + 1).file_name(),
            &field
        ));
        assert!(!name_is_due("short", &field));
        assert!(!name_is_due("ééééééééééééééééééééééé", &field));
    }
}
