//! Append-only run events: one JSON line per event in `<data>/events/<runId>.jsonl`, plus a small
//! summary per run in `<data>/events/runs/<runId>.json` so that listing runs reads one file per
//! listed run instead of every event.
//!
//! Any number of processes append to the same run file; each event is one `write` on a file opened
//! with `O_APPEND`, followed by `fsync`. A torn last line after a crash is skipped when reading.

mod store;

pub use store::{EventStore, EventStoreError, RunFilter, RunPage, RunSummary};

use crate::job::Job;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Lifecycle and host event types. Plugins may emit any other name.
pub mod event_type {
    /// A job was enqueued or retried: a run begins. Written by the queue.
    pub const RUN_QUEUED: &str = "RunQueued";
    /// A worker claimed an attempt. Written by the worker.
    pub const RUN_STARTED: &str = "RunStarted";
    /// An attempt ended; `data.status` is the job's state afterwards. Written by the worker, or by
    /// the queue when it ends a job no worker is running (cancel, lost worker).
    pub const RUN_FINISHED: &str = "RunFinished";
    /// Something failed; written only through `EventStore::record_error_event`.
    pub const ERROR: &str = "Error";
    /// Plugin progress (`data.done`, `data.total`, `data.message`).
    pub const PROGRESS: &str = "Progress";
    /// A language-model call with its token usage.
    pub const LLM_CALL: &str = "LlmCall";

    /// Names a plugin may not emit because the host owns them.
    pub const RESERVED: [&str; 5] = [RUN_QUEUED, RUN_STARTED, RUN_FINISHED, ERROR, LLM_CALL];
}

/// Run id under which the queue records maintenance events that belong to no readable job, such
/// as the quarantine of a corrupt job file.
pub const MAINTENANCE_RUN_ID: &str = "queue-maintenance";

/// Severity of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// The error part of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventError {
    pub code: String,
    pub message: String,
}

/// One line of a run's event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Time-ordered unique id (UUID v7).
    pub id: String,
    pub ts: DateTime<Utc>,
    pub event_type: String,
    /// The writer of the event: `queue`, `worker`, `api`, or `plugin:<name>`.
    pub component: String,
    pub run_id: String,
    pub job_id: Option<String>,
    pub job_type: Option<String>,
    pub request_id: Option<String>,
    pub attempt: Option<u32>,
    pub level: Level,
    pub latency_ms: Option<u64>,
    #[serde(default)]
    pub data: Value,
    pub error: Option<EventError>,
}

/// The ids an event is filed under, taken from the job it is about.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunContext {
    pub run_id: String,
    pub job_id: Option<String>,
    pub job_type: Option<String>,
    pub request_id: Option<String>,
    pub attempt: Option<u32>,
}

impl RunContext {
    /// Builds the context of `job`'s current attempt, with no attempt while it was never claimed.
    pub fn of_job(job: &Job) -> Self {
        RunContext {
            run_id: job.run_id.clone(),
            job_id: Some(job.id.clone()),
            job_type: Some(job.job_type.clone()),
            request_id: job.request_id.clone(),
            attempt: (job.attempts > 0).then_some(job.attempts),
        }
    }

    /// Builds a context that belongs to no job.
    pub fn maintenance() -> Self {
        RunContext {
            run_id: MAINTENANCE_RUN_ID.to_string(),
            ..RunContext::default()
        }
    }
}

impl Event {
    /// Creates an event of `event_type` at `Level::Info`, stamped now, with null data.
    pub fn new(context: &RunContext, event_type: &str, component: &str) -> Self {
        Event {
            id: crate::job::new_id(),
            ts: Utc::now(),
            event_type: event_type.to_string(),
            component: component.to_string(),
            run_id: context.run_id.clone(),
            job_id: context.job_id.clone(),
            job_type: context.job_type.clone(),
            request_id: context.request_id.clone(),
            attempt: context.attempt,
            level: Level::Info,
            latency_ms: None,
            data: Value::Null,
            error: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    pub fn with_level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    pub fn with_latency_ms(mut self, latency_ms: u64) -> Self {
        self.latency_ms = Some(latency_ms);
        self
    }

    pub fn with_error(mut self, code: &str, message: &str) -> Self {
        self.error = Some(EventError {
            code: code.to_string(),
            message: message.to_string(),
        });
        self
    }
}
