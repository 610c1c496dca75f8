//! Rebuilding the index (markers and idempotency-key records) from the job files.
//!
//! Markers and key records are written without `fsync` (see `index`), so after an operating
//! system crash they may be missing or stale. `open` compares the kernel's boot id with the one
//! stored in `index/boot-id` when the index was last rebuilt. When they differ, because the
//! machine restarted or the index was deleted, it rebuilds the index before the process does
//! anything else. Within one boot, writers keep the index consistent by ordering their steps.

use super::enqueue::{read_key_record, scoped_key, write_key_record};
use super::index::{self, PendingMarker};
use super::layout::{Layout, job_id_of_file_name, list_names};
use super::lifecycle::QueueEvent;
use super::store::{self, JobFile};
use super::{Inner, io_at};
use crate::durable;
use crate::job::{JobStatus, validate_job_type};
use crate::queue::QueueError;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;

/// Path of the random id Linux generates at every boot.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// Counts of what a rebuild of the index read and fixed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairReport {
    pub jobs_read: u64,
    pub markers_added: u64,
    pub markers_removed: u64,
    pub key_records_fixed: u64,
    pub files_quarantined: u64,
}

/// Rebuilds the index when the boot id differs from the stored one. Without a readable boot id
/// (not Linux) every open rebuilds it.
pub(super) fn repair_after_restart(inner: &Inner) -> Result<(), QueueError> {
    let boot_id = fs::read_to_string(BOOT_ID_PATH)
        .ok()
        .map(|text| text.trim().to_string());
    let layout = &inner.layout;
    let report = inner.locked(|layout, events| {
        let stored = fs::read_to_string(&layout.boot_id).ok();
        if boot_id.is_some() && stored.as_deref().map(str::trim) == boot_id.as_deref() {
            return Ok(None);
        }
        let report = rebuild(layout, events)?;
        if let Some(boot_id) = &boot_id {
            durable::write_atomic(&layout.boot_id, boot_id.as_bytes())
                .map_err(io_at(&layout.boot_id))?;
        }
        Ok(Some(report))
    })?;
    if let Some(report) = report {
        log_report(
            layout,
            &report,
            "index checked against the job files after a restart",
        );
    }
    Ok(())
}

pub(super) fn repair_index(inner: &Inner) -> Result<RepairReport, QueueError> {
    let report = inner.locked(rebuild)?;
    log_report(
        &inner.layout,
        &report,
        "index checked against the job files",
    );
    Ok(report)
}

fn log_report(layout: &Layout, report: &RepairReport, message: &str) {
    let fixed = report.markers_added
        + report.markers_removed
        + report.key_records_fixed
        + report.files_quarantined;
    let root = layout.root.display().to_string();
    if fixed > 0 {
        tracing::warn!(queue = %root, ?report, "{message}: repaired inconsistencies");
    } else {
        tracing::info!(queue = %root, jobs = report.jobs_read, "{message}: no inconsistency");
    }
}

/// The index the job files call for.
#[derive(Default)]
struct Expected {
    /// Job type to the marker names of its pending jobs.
    pending: BTreeMap<String, BTreeSet<String>>,
    running: BTreeSet<String>,
    /// Idempotency key to the newest job that carries it.
    keys: BTreeMap<String, String>,
}

/// Reads every job file and makes the markers and key records match them. Call with the lock
/// held.
fn rebuild(layout: &Layout, events: &mut Vec<QueueEvent>) -> Result<RepairReport, QueueError> {
    let mut report = RepairReport::default();
    let expected = read_expected(layout, events, &mut report)?;
    fix_pending(layout, &expected, &mut report)?;
    fix_running(layout, &expected, &mut report)?;
    fix_keys(layout, &expected, &mut report)?;
    Ok(report)
}

fn read_expected(
    layout: &Layout,
    events: &mut Vec<QueueEvent>,
    report: &mut RepairReport,
) -> Result<Expected, QueueError> {
    let mut expected = Expected::default();
    let mut job_ids: Vec<String> = list_names(&layout.jobs)
        .map_err(io_at(&layout.jobs))?
        .iter()
        .filter_map(|name| job_id_of_file_name(name))
        .map(str::to_string)
        .collect();
    // Ascending ids are ascending creation times, so the last job seen with a key is the newest.
    job_ids.sort_unstable();

    for job_id in job_ids {
        let job = match store::read_job(layout, &job_id)? {
            JobFile::Found(job) => *job,
            JobFile::Missing => continue,
            JobFile::Corrupt(_) => {
                events.extend(store::quarantine(layout, &job_id)?);
                report.files_quarantined += 1;
                continue;
            }
        };
        report.jobs_read += 1;
        match job.status {
            JobStatus::Pending => {
                expected
                    .pending
                    .entry(job.job_type.clone())
                    .or_default()
                    .insert(PendingMarker::of_job(&job).file_name());
            }
            JobStatus::Running => {
                expected.running.insert(job.id.clone());
            }
            _ => {}
        }
        if let Some(key) = job.idempotency_key {
            expected
                .keys
                .insert(scoped_key(&job.job_type, &key), job.id);
        }
    }
    Ok(expected)
}

fn fix_pending(
    layout: &Layout,
    expected: &Expected,
    report: &mut RepairReport,
) -> Result<(), QueueError> {
    let mut job_types: BTreeSet<String> = index::pending_job_types(layout)
        .map_err(io_at(&layout.pending))?
        .into_iter()
        .collect();
    job_types.extend(expected.pending.keys().cloned());

    let none = BTreeSet::new();
    for job_type in job_types.iter().filter(|t| validate_job_type(t).is_ok()) {
        let dir = layout.pending_dir(job_type);
        let expected_markers = expected.pending.get(job_type).unwrap_or(&none);
        let present: BTreeSet<String> =
            list_names(&dir).map_err(io_at(&dir))?.into_iter().collect();

        for name in present.difference(expected_markers) {
            if PendingMarker::parse(name).is_some() {
                let path = dir.join(name);
                fs::remove_file(&path).map_err(io_at(&path))?;
                report.markers_removed += 1;
            }
        }
        if !expected_markers.is_empty() {
            fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        }
        for name in expected_markers.difference(&present) {
            let path = dir.join(name);
            fs::File::create(&path).map_err(io_at(&path))?;
            report.markers_added += 1;
        }
    }
    Ok(())
}

fn fix_running(
    layout: &Layout,
    expected: &Expected,
    report: &mut RepairReport,
) -> Result<(), QueueError> {
    let present: BTreeSet<String> = index::running_job_ids(layout)
        .map_err(io_at(&layout.running))?
        .into_iter()
        .collect();
    for job_id in present.difference(&expected.running) {
        index::remove_running(layout, job_id).map_err(io_at(&layout.running))?;
        report.markers_removed += 1;
    }
    for job_id in expected.running.difference(&present) {
        index::add_running(layout, job_id).map_err(io_at(&layout.running))?;
        report.markers_added += 1;
    }
    Ok(())
}

fn fix_keys(
    layout: &Layout,
    expected: &Expected,
    report: &mut RepairReport,
) -> Result<(), QueueError> {
    let mut expected_names = BTreeSet::new();
    for (key, job_id) in &expected.keys {
        let path = layout.key_record(key);
        if let Some(name) = path.file_name().and_then(|name| name.to_str()) {
            expected_names.insert(name.to_string());
        }
        if read_key_record(layout, key)?.as_deref() != Some(job_id.as_str()) {
            write_key_record(layout, key, job_id)?;
            report.key_records_fixed += 1;
        }
    }
    for name in list_names(&layout.keys).map_err(io_at(&layout.keys))? {
        if !name.starts_with('.') && !expected_names.contains(&name) {
            let path = layout.keys.join(&name);
            fs::remove_file(&path).map_err(io_at(&path))?;
            report.key_records_fixed += 1;
        }
    }
    Ok(())
}
