//! The worker heartbeat record, `<data>/workers/<workerId>.json`, rewritten every
//! `heartbeat_interval` so the API can list live workers, their plugins, load errors and the
//! attempts they run. A record whose `heartbeatAt` is older than three heartbeat intervals
//! belongs to a worker that is gone.

use super::WorkerContext;
use crate::runtime::{LoadErrorRecord, PluginRegistry};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Lifecycle of a worker as its record shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    /// Claiming and running jobs.
    Running,
    /// Claims no more jobs; waiting for running attempts to finish or be handed back.
    Stopping,
    /// Exited cleanly; nothing of it runs.
    Stopped,
}

/// A loaded plugin in the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginRecord {
    pub name: String,
    pub version: String,
    pub description: String,
    pub job_types: Vec<String>,
    pub file: String,
    pub sha256: String,
    pub loaded_at: DateTime<Utc>,
}

/// A plugin file that did not load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadErrorEntry {
    pub file: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

impl From<LoadErrorRecord> for LoadErrorEntry {
    fn from(record: LoadErrorRecord) -> Self {
        LoadErrorEntry {
            file: record.file,
            message: record.message,
            at: record.at,
        }
    }
}

/// An attempt the worker is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InFlightRecord {
    pub job_id: String,
    pub run_id: String,
    pub job_type: String,
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
}

/// The content of a worker's heartbeat record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRecord {
    pub worker_id: String,
    pub pid: u32,
    pub hostname: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// The interval at which the record is rewritten, in milliseconds.
    pub heartbeat_interval_ms: u64,
    pub status: WorkerStatus,
    pub concurrency: usize,
    /// Job types the worker claims, sorted.
    pub job_types: Vec<String>,
    pub plugins: Vec<PluginRecord>,
    pub load_errors: Vec<LoadErrorEntry>,
    pub in_flight: Vec<InFlightRecord>,
}

impl WorkerRecord {
    /// Returns whether the record's worker missed three heartbeats as of `now`.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        let limit = chrono::Duration::milliseconds(
            i64::try_from(self.heartbeat_interval_ms.saturating_mul(3)).unwrap_or(i64::MAX),
        );
        now.signed_duration_since(self.heartbeat_at) > limit
    }
}

/// Path of the record of `worker_id` under `data_dir`. Characters other than letters, digits,
/// `_`, `.` and `-` in the id become `_`, so any id gives one plain file name.
pub fn record_path(data_dir: &Path, worker_id: &str) -> PathBuf {
    let mut name: String = worker_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        name.insert(0, '_');
    }
    data_dir.join("workers").join(format!("{name}.json"))
}

/// Builds the plugin part of a record from the registry's current state.
pub fn plugin_records(registry: &PluginRegistry) -> (Vec<PluginRecord>, Vec<LoadErrorEntry>) {
    let plugins = registry
        .plugins()
        .iter()
        .map(|plugin| PluginRecord {
            name: plugin.name.clone(),
            version: plugin.version.clone(),
            description: plugin.description.clone(),
            job_types: plugin.job_types.clone(),
            file: plugin.file.display().to_string(),
            sha256: plugin.sha256.clone(),
            loaded_at: plugin.loaded_at,
        })
        .collect();
    let errors = registry
        .load_errors()
        .into_iter()
        .map(LoadErrorEntry::from)
        .collect();
    (plugins, errors)
}

/// Writes `record` durably to its path, creating the `workers` directory when needed.
pub fn write_record(data_dir: &Path, record: &WorkerRecord) -> std::io::Result<()> {
    let path = record_path(data_dir, &record.worker_id);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    crate::durable::write_atomic(&path, &bytes)
}

/// Reads a worker record; `None` when it does not exist.
pub fn read_record(data_dir: &Path, worker_id: &str) -> std::io::Result<Option<WorkerRecord>> {
    let path = record_path(data_dir, worker_id);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Rewrites the worker's record every `heartbeat_interval` until `stop` fires.
pub(super) async fn keep_record(
    ctx: Arc<WorkerContext>,
    started_at: DateTime<Utc>,
    stop: CancellationToken,
) {
    let interval = ctx.settings.heartbeat_interval;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A plugin loaded or removed shows in the record at once rather than at the next tick.
    let mut plugin_changes = ctx.registry.subscribe();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => write_now(&ctx, started_at).await,
            // `changed` fails only once the registry's sender is dropped, and `ctx` keeps the
            // registry alive for this whole loop.
            Ok(()) = plugin_changes.changed() => write_now(&ctx, started_at).await,
        }
    }
}

/// Writes the worker's record as of now; a failure is logged, since the next interval retries.
pub(super) async fn write_now(ctx: &WorkerContext, started_at: DateTime<Utc>) {
    let (plugins, load_errors) = plugin_records(&ctx.registry);
    let record = WorkerRecord {
        worker_id: ctx.settings.worker_id.clone(),
        pid: std::process::id(),
        hostname: hostname::get()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        started_at,
        heartbeat_at: Utc::now(),
        heartbeat_interval_ms: u64::try_from(ctx.settings.heartbeat_interval.as_millis())
            .unwrap_or(u64::MAX),
        status: ctx.status(),
        concurrency: ctx.settings.concurrency,
        job_types: ctx.registry.job_types(),
        plugins,
        load_errors,
        in_flight: ctx.in_flight.records(),
    };
    let data_dir = ctx.settings.data_dir.clone();
    let written = tokio::task::spawn_blocking(move || write_record(&data_dir, &record)).await;
    let error = match written {
        Ok(Ok(())) => return,
        Ok(Err(error)) => error.to_string(),
        Err(error) => error.to_string(),
    };
    tracing::warn!(worker_id = %ctx.settings.worker_id, %error, "could not write the worker record");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_path_sanitizes_the_id() {
        let dir = Path::new("/data");
        assert_eq!(
            record_path(dir, "host-1.example-42"),
            PathBuf::from("/data/workers/host-1.example-42.json")
        );
        assert_eq!(
            record_path(dir, "a:b/c"),
            PathBuf::from("/data/workers/a_b_c.json")
        );
        assert_eq!(
            record_path(dir, ".."),
            PathBuf::from("/data/workers/_...json")
        );
    }

    #[test]
    fn staleness_is_three_intervals() {
        let now = Utc::now();
        let mut record = WorkerRecord {
            worker_id: "w".to_string(),
            pid: 1,
            hostname: "h".to_string(),
            started_at: now,
            heartbeat_at: now - chrono::Duration::milliseconds(14_000),
            heartbeat_interval_ms: 5_000,
            status: WorkerStatus::Running,
            concurrency: 1,
            job_types: Vec::new(),
            plugins: Vec::new(),
            load_errors: Vec::new(),
            in_flight: Vec::new(),
        };
        assert!(!record.is_stale(now));
        record.heartbeat_at = now - chrono::Duration::milliseconds(16_000);
        assert!(record.is_stale(now));
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().expect("temp dir");
        let record = WorkerRecord {
            worker_id: "worker:1".to_string(),
            pid: 7,
            hostname: "h".to_string(),
            started_at: Utc::now(),
            heartbeat_at: Utc::now(),
            heartbeat_interval_ms: 5_000,
            status: WorkerStatus::Stopping,
            concurrency: 4,
            job_types: vec!["TEST_ECHO".to_string()],
            plugins: Vec::new(),
            load_errors: Vec::new(),
            in_flight: Vec::new(),
        };
        write_record(dir.path(), &record).expect("write");
        let text = std::fs::read_to_string(record_path(dir.path(), "worker:1")).expect("read");
        assert!(text.contains("\"heartbeatIntervalMs\": 5000"), "{text}");
        assert!(text.contains("\"status\": \"stopping\""), "{text}");
        let read = read_record(dir.path(), "worker:1")
            .expect("read")
            .expect("present");
        assert_eq!(read, record);
    }
}
