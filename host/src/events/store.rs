//! The file-backed event store.

use super::{Event, EventError, Level, RunContext, event_type};
use crate::durable;
use crate::job::{JobStatus, validate_id};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A failed event-store operation.
#[derive(Debug, thiserror::Error)]
pub enum EventStoreError {
    #[error("{0}")]
    InvalidRunId(String),

    #[error("event store failed at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &Path, source: io::Error) -> EventStoreError {
    EventStoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The latest lifecycle state of one run, kept beside its event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub run_id: String,
    pub job_id: Option<String>,
    pub job_type: Option<String>,
    pub request_id: Option<String>,
    /// A job status (`pending`, `running`, `completed`, `failed`, `cancelled`).
    pub status: String,
    pub attempt: Option<u32>,
    /// Time of the run's first lifecycle event.
    pub created_at: DateTime<Utc>,
    /// Time of the lifecycle event that set `status`.
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub latency_ms: Option<u64>,
    pub error: Option<EventError>,
}

impl RunSummary {
    pub fn is_finished(&self) -> bool {
        self.status
            .parse::<JobStatus>()
            .is_ok_and(JobStatus::is_terminal)
    }
}

/// Filter and page for `EventStore::list_runs`. Runs are listed newest first.
#[derive(Debug, Clone)]
pub struct RunFilter {
    pub status: Option<String>,
    pub job_type: Option<String>,
    pub limit: usize,
    /// The last run id of the previous page.
    pub cursor: Option<String>,
}

impl Default for RunFilter {
    fn default() -> Self {
        RunFilter {
            status: None,
            job_type: None,
            limit: 50,
            cursor: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunPage {
    pub runs: Vec<RunSummary>,
    pub next_cursor: Option<String>,
}

/// Event logs under one data directory. Cloning is cheap; clones share the directory.
///
/// Methods do blocking file I/O of a few small writes each, with one `fsync` per append. Async
/// callers on a busy runtime should use `spawn_blocking` for bulk reads.
#[derive(Debug, Clone)]
pub struct EventStore {
    root: PathBuf,
    runs_dir: PathBuf,
}

impl EventStore {
    /// Opens (creating when missing) the store in `<data_dir>/events`.
    pub fn open(data_dir: &Path) -> Result<Self, EventStoreError> {
        let root = data_dir.join("events");
        let runs_dir = root.join("runs");
        fs::create_dir_all(&runs_dir).map_err(|error| io_error(&runs_dir, error))?;
        Ok(EventStore { root, runs_dir })
    }

    /// Path of a run's event log.
    pub fn log_path(&self, run_id: &str) -> Result<PathBuf, EventStoreError> {
        validate_id("run id", run_id).map_err(EventStoreError::InvalidRunId)?;
        Ok(self.root.join(format!("{run_id}.jsonl")))
    }

    /// Appends `event` durably and, for lifecycle events, updates the run's summary.
    pub fn append(&self, event: &Event) -> Result<(), EventStoreError> {
        let path = self.log_path(&event.run_id)?;
        let mut line = serde_json::to_vec(event).map_err(|error| io_error(&path, error.into()))?;
        line.push(b'\n');
        append_line(&path, &line).map_err(|error| io_error(&path, error))?;

        if is_lifecycle(&event.event_type) {
            self.update_summary(event)?;
        }
        Ok(())
    }

    /// Records an `Error` event and logs it. This is the one way code records an `Error` event.
    /// A failure to write the event is logged, not returned, because the caller is already
    /// handling an error.
    pub fn record_error_event(
        &self,
        context: &RunContext,
        component: &str,
        code: &str,
        message: &str,
        data: Value,
    ) -> Event {
        tracing::error!(
            run_id = %context.run_id,
            job_id = context.job_id.as_deref().unwrap_or(""),
            attempt = context.attempt.unwrap_or(0),
            component,
            code,
            "{message}"
        );
        let event = Event::new(context, event_type::ERROR, component)
            .with_level(Level::Error)
            .with_error(code, message)
            .with_data(data);
        if let Err(error) = self.append(&event) {
            tracing::error!(run_id = %context.run_id, %error, "failed to record an Error event");
        }
        event
    }

    /// Reads all of a run's events; an unknown run has none.
    pub fn read(&self, run_id: &str) -> Result<Vec<Event>, EventStoreError> {
        Ok(self.read_from(run_id, 0)?.0)
    }

    /// Reads the complete lines from byte `offset` on and returns them with the offset to resume
    /// from. A line still being written (no newline yet) is left for the next call. A line that is
    /// not a valid event, such as a torn write after a crash, is skipped with a warning.
    pub fn read_from(
        &self,
        run_id: &str,
        offset: u64,
    ) -> Result<(Vec<Event>, u64), EventStoreError> {
        let path = self.log_path(run_id)?;
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(error) => return Err(io_error(&path, error)),
        };
        file.seek(SeekFrom::Start(offset))
            .map_err(|error| io_error(&path, error))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|error| io_error(&path, error))?;

        let complete = bytes
            .iter()
            .rposition(|&byte| byte == b'\n')
            .map_or(0, |index| index + 1);
        let events = bytes[..complete]
            .split(|&byte| byte == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .filter_map(|line| match serde_json::from_slice::<Event>(line) {
                Ok(event) => Some(event),
                Err(error) => {
                    tracing::warn!(run_id, path = %path.display(), %error, "skipping an unreadable event line");
                    None
                }
            })
            .collect();
        Ok((events, offset + complete as u64))
    }

    /// Returns a run's summary, or `None` for a run with no lifecycle event.
    pub fn run_summary(&self, run_id: &str) -> Result<Option<RunSummary>, EventStoreError> {
        validate_id("run id", run_id).map_err(EventStoreError::InvalidRunId)?;
        let path = self.summary_path(run_id);
        match fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error(&path, error)),
        }
    }

    /// Lists run summaries newest first. Run ids are UUID v7, so name order is creation order and
    /// only the listed runs' summaries are read when no filter is set.
    pub fn list_runs(&self, filter: &RunFilter) -> Result<RunPage, EventStoreError> {
        let mut run_ids = self.run_ids()?;
        run_ids.sort_unstable_by(|a, b| b.cmp(a));

        let limit = filter.limit.clamp(1, 500);
        let mut runs = Vec::new();
        let mut next_cursor = None;
        let after_cursor = run_ids
            .into_iter()
            .filter(|id| filter.cursor.as_ref().is_none_or(|cursor| id < cursor));
        for run_id in after_cursor {
            let Some(summary) = self.run_summary(&run_id)? else {
                continue;
            };
            if filter.status.as_ref().is_some_and(|s| *s != summary.status)
                || filter
                    .job_type
                    .as_ref()
                    .is_some_and(|t| Some(t) != summary.job_type.as_ref())
            {
                continue;
            }
            if runs.len() == limit {
                next_cursor = runs.last().map(|last: &RunSummary| last.run_id.clone());
                break;
            }
            runs.push(summary);
        }
        Ok(RunPage { runs, next_cursor })
    }

    fn run_ids(&self) -> Result<Vec<String>, EventStoreError> {
        let entries =
            fs::read_dir(&self.runs_dir).map_err(|error| io_error(&self.runs_dir, error))?;
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| io_error(&self.runs_dir, error))?;
            let name = entry.file_name();
            if let Some(id) = name.to_str().and_then(|name| name.strip_suffix(".json"))
                && !id.starts_with('.')
            {
                ids.push(id.to_string());
            }
        }
        Ok(ids)
    }

    fn summary_path(&self, run_id: &str) -> PathBuf {
        self.runs_dir.join(format!("{run_id}.json"))
    }

    /// Applies a lifecycle event to the run's summary under an exclusive lock, because the API
    /// process and workers may update one run at the same moment. An event older than the one
    /// that set the current status (a late `RunQueued`) does not move the status back.
    fn update_summary(&self, event: &Event) -> Result<(), EventStoreError> {
        let lock_path = self.runs_dir.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|error| io_error(&lock_path, error))?;
        lock.lock().map_err(|error| io_error(&lock_path, error))?;

        let path = self.summary_path(&event.run_id);
        let current = self.run_summary(&event.run_id)?;
        let summary = apply_lifecycle(current, event);
        let bytes = serde_json::to_vec(&summary).map_err(|error| io_error(&path, error.into()))?;
        durable::write_atomic(&path, &bytes).map_err(|error| io_error(&path, error))
    }
}

fn is_lifecycle(event_type: &str) -> bool {
    matches!(
        event_type,
        event_type::RUN_QUEUED | event_type::RUN_STARTED | event_type::RUN_FINISHED
    )
}

fn apply_lifecycle(current: Option<RunSummary>, event: &Event) -> RunSummary {
    let status = match event.event_type.as_str() {
        event_type::RUN_QUEUED => JobStatus::Pending.as_str().to_string(),
        event_type::RUN_STARTED => JobStatus::Running.as_str().to_string(),
        _ => event
            .data
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or(JobStatus::Completed.as_str())
            .to_string(),
    };
    let finished = status
        .parse::<JobStatus>()
        .is_ok_and(JobStatus::is_terminal);

    let mut summary = current.unwrap_or_else(|| RunSummary {
        run_id: event.run_id.clone(),
        job_id: None,
        job_type: None,
        request_id: None,
        status: status.clone(),
        attempt: None,
        created_at: event.ts,
        updated_at: event.ts,
        finished_at: None,
        latency_ms: None,
        error: None,
    });
    summary.job_id = summary.job_id.or_else(|| event.job_id.clone());
    summary.job_type = summary.job_type.or_else(|| event.job_type.clone());
    summary.request_id = summary.request_id.or_else(|| event.request_id.clone());
    summary.created_at = summary.created_at.min(event.ts);
    if event.ts < summary.updated_at {
        return summary;
    }

    summary.status = status;
    summary.updated_at = event.ts;
    summary.attempt = event.attempt.or(summary.attempt);
    if event.event_type == event_type::RUN_FINISHED {
        summary.latency_ms = event.latency_ms;
        summary.error = event.error.clone();
    }
    summary.finished_at = finished.then_some(event.ts);
    summary
}

/// Appends one line with a single `write`. When the file does not end in a newline (a write torn
/// by a crash), a newline goes first so the torn line stays separate and is skipped by readers.
fn append_line(path: &Path, line: &[u8]) -> io::Result<()> {
    let created = !path.exists();
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;

    let length = file.metadata()?.len();
    let mut buffer = Vec::with_capacity(line.len() + 1);
    if length > 0 {
        let mut last = [0u8; 1];
        let mut reader = File::open(path)?;
        reader.seek(SeekFrom::Start(length - 1))?;
        reader.read_exact(&mut last)?;
        if last[0] != b'\n' {
            buffer.push(b'\n');
        }
    }
    buffer.extend_from_slice(line);

    file.write_all(&buffer)?;
    file.sync_data()?;
    if created && let Some(dir) = path.parent() {
        durable::sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context(run_id: &str) -> RunContext {
        RunContext {
            run_id: run_id.to_string(),
            job_id: Some("job-1".to_string()),
            job_type: Some("RUN_DEBATE".to_string()),
            request_id: Some("req-1".to_string()),
            attempt: Some(1),
        }
    }

    #[test]
    fn append_then_read_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EventStore::open(dir.path()).expect("open");
        let run = crate::job::new_id();
        for index in 0..3 {
            let event = Event::new(&context(&run), "DebateTurn", "plugin:debate")
                .with_data(json!({ "index": index }));
            store.append(&event).expect("append");
        }
        let events = store.read(&run).expect("read");
        let indexes: Vec<_> = events.iter().map(|e| e.data["index"].clone()).collect();
        assert_eq!(indexes, vec![json!(0), json!(1), json!(2)]);
        assert_eq!(events[0].request_id.as_deref(), Some("req-1"));
    }

    #[test]
    fn torn_line_skipped_later_appends_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EventStore::open(dir.path()).expect("open");
        let run = crate::job::new_id();
        store
            .append(&Event::new(&context(&run), "A", "test"))
            .expect("append");
        let path = store.log_path(&run).expect("path");
        let mut file = OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open log");
        file.write_all(br#"{"id":"torn","ts":"#)
            .expect("write torn");

        assert_eq!(store.read(&run).expect("read with torn tail").len(), 1);

        store
            .append(&Event::new(&context(&run), "B", "test"))
            .expect("append after torn line");
        let types: Vec<_> = store
            .read(&run)
            .expect("read")
            .into_iter()
            .map(|e| e.event_type)
            .collect();
        assert_eq!(types, vec!["A", "B"]);
    }

    #[test]
    fn read_from_resumes_at_offset() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EventStore::open(dir.path()).expect("open");
        let run = crate::job::new_id();
        store
            .append(&Event::new(&context(&run), "A", "test"))
            .expect("append");
        let (first, offset) = store.read_from(&run, 0).expect("first read");
        store
            .append(&Event::new(&context(&run), "B", "test"))
            .expect("append");
        let (second, _) = store.read_from(&run, offset).expect("second read");
        assert_eq!(first.len(), 1);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].event_type, "B");
    }

    #[test]
    fn summary_follows_lifecycle_and_ignores_late_queued() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EventStore::open(dir.path()).expect("open");
        let run = crate::job::new_id();
        let queued = Event::new(&context(&run), event_type::RUN_QUEUED, "queue");
        let started = Event::new(&context(&run), event_type::RUN_STARTED, "worker");
        store.append(&started).expect("started");
        store.append(&queued).expect("late queued");
        let summary = store.run_summary(&run).expect("read").expect("summary");
        assert_eq!(summary.status, "running");

        let finished = Event::new(&context(&run), event_type::RUN_FINISHED, "worker")
            .with_data(json!({ "status": "completed" }))
            .with_latency_ms(12);
        store.append(&finished).expect("finished");
        let summary = store.run_summary(&run).expect("read").expect("summary");
        assert_eq!(summary.status, "completed");
        assert!(summary.is_finished());
        assert_eq!(summary.latency_ms, Some(12));
    }

    #[test]
    fn list_runs_pages_newest_first_with_filters() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EventStore::open(dir.path()).expect("open");
        let mut runs = Vec::new();
        for index in 0..5 {
            let run = crate::job::new_id();
            let mut ctx = context(&run);
            ctx.job_type = Some(if index % 2 == 0 { "EVEN" } else { "ODD" }.to_string());
            store
                .append(&Event::new(&ctx, event_type::RUN_QUEUED, "queue"))
                .expect("append");
            runs.push(run);
        }

        let first = store
            .list_runs(&RunFilter {
                limit: 2,
                ..RunFilter::default()
            })
            .expect("first page");
        assert_eq!(
            first
                .runs
                .iter()
                .map(|r| r.run_id.clone())
                .collect::<Vec<_>>(),
            vec![runs[4].clone(), runs[3].clone()]
        );
        let second = store
            .list_runs(&RunFilter {
                limit: 2,
                cursor: first.next_cursor.clone(),
                ..RunFilter::default()
            })
            .expect("second page");
        assert_eq!(second.runs[0].run_id, runs[2]);

        let even = store
            .list_runs(&RunFilter {
                job_type: Some("EVEN".to_string()),
                ..RunFilter::default()
            })
            .expect("filtered");
        assert_eq!(even.runs.len(), 3);
        assert!(even.next_cursor.is_none());
    }

    #[test]
    fn path_like_run_id_is_rejected() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EventStore::open(dir.path()).expect("open");
        let event = Event::new(&context("../escape"), "A", "test");
        assert!(matches!(
            store.append(&event),
            Err(EventStoreError::InvalidRunId(_))
        ));
        assert!(store.read("../../etc/passwd").is_err());
    }
}
