//! The durable job queue: the `Queue` trait every backend implements, its options and errors.
//!
//! # Layout
//! - `file`: the embedded backend, one JSON file per job under `<data>/queue/`, shared by any
//!   number of processes.
//! - `conformance`: the behaviour every backend must show, as a suite of checks that takes any
//!   backend; `host/tests/queue_conformance.rs` runs it against the file backend.
//!
//! A PostgreSQL backend is not written yet; it implements the same trait and must pass the same
//! suite.

pub mod conformance;
pub mod file;

pub use file::FileQueue;

use crate::job::{Job, JobFailure, JobStatus, Lease};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

/// Options for `Queue::enqueue`; `Default` gives priority 0, run now, the queue's default
/// `max_attempts`, and no idempotency key.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// While a job with this key is pending, running or completed, `enqueue` returns that job
    /// instead of creating another. At most 256 characters.
    pub idempotency_key: Option<String>,
    /// Attempts before the job fails for good, 1 to `MAX_ATTEMPTS_LIMIT`; `None` uses the queue's
    /// default (3).
    pub max_attempts: Option<u32>,
    /// From `PRIORITY_MIN` to `PRIORITY_MAX`; higher is claimed first.
    pub priority: i32,
    /// Earliest claim time; `None` means now.
    pub run_at: Option<DateTime<Utc>>,
    /// Id of the HTTP request that enqueued the job, copied onto the run's events.
    pub request_id: Option<String>,
}

/// The outcome of `enqueue`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Enqueued {
    pub job: Job,
    /// True when the idempotency key matched an existing job and nothing new was created.
    pub existing: bool,
}

/// Options for `Queue::fail`.
#[derive(Debug, Clone, Default)]
pub struct FailOptions {
    /// Wait this long before the retry instead of the exponential backoff, for example a model
    /// server's `Retry-After`. Capped by the queue's maximum backoff.
    pub retry_after: Option<Duration>,
}

/// Filter and page for `Queue::list`. Results are newest first.
#[derive(Debug, Clone)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub job_type: Option<String>,
    /// 1 to 500.
    pub limit: usize,
    /// Opaque cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl Default for JobFilter {
    fn default() -> Self {
        JobFilter {
            status: None,
            job_type: None,
            limit: 50,
            cursor: None,
        }
    }
}

/// One page of `Queue::list`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass as `JobFilter::cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Number of jobs in one state for one job type, for metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusCount {
    pub job_type: String,
    pub status: JobStatus,
    pub count: u64,
}

/// Tunables shared by every backend; `Default` lists the defaults.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Lease granted at claim and by each heartbeat. Default 30 s.
    pub lease: Duration,
    /// Retry backoff is `backoff_base * 2^attempt` plus up to one `backoff_base` of jitter.
    /// Default 1 s.
    pub backoff_base: Duration,
    /// Upper bound on any retry delay. Default 10 min.
    pub backoff_max: Duration,
    /// Largest accepted payload, as serialized JSON. Default 1 MiB.
    pub max_payload_bytes: usize,
    /// `max_attempts` of jobs enqueued without one. Default 3.
    pub default_max_attempts: u32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            lease: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            max_payload_bytes: 1024 * 1024,
            default_max_attempts: 3,
        }
    }
}

impl QueueSettings {
    /// Computes the delay before the retry that follows failed attempt `attempt` (1-based):
    /// `backoff_base * 2^attempt`, plus uniform jitter in `[0, backoff_base)`, capped at
    /// `backoff_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self
            .backoff_base
            .saturating_mul(2u32.saturating_pow(attempt.min(31)));
        let jitter_ms = match self.backoff_base.as_millis() as u64 {
            0 => 0,
            base_ms => rand::random_range(0..base_ms),
        };
        exponential
            .saturating_add(Duration::from_millis(jitter_ms))
            .min(self.backoff_max)
    }
}

/// A failed queue operation.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("job {job_id} not found")]
    NotFound { job_id: String },

    /// A value from the caller is not acceptable; the message names it and the allowed values.
    #[error("{0}")]
    Invalid(String),

    #[error(
        "payload is {size} bytes, above the {limit}-byte limit: send a smaller payload or store large inputs elsewhere and pass a reference"
    )]
    PayloadTooLarge { size: usize, limit: usize },

    /// The lease no longer matches: the job was claimed again by a newer attempt, finished, or
    /// cancelled. The holder of the stale lease must stop working on the job.
    #[error(
        "lease of job {job_id} for attempt {attempt} is no longer held (job is {status}, attempt {current_attempt})"
    )]
    LeaseLost {
        job_id: String,
        attempt: u32,
        status: JobStatus,
        current_attempt: u32,
    },

    /// `retry` of a job cancelled while running, before its worker stopped the attempt: the
    /// worker learns of the cancel at its next lease heartbeat, or the lease runs out at `until`.
    #[error(
        "cannot retry job {job_id} yet: its cancelled attempt is still stopping on worker {worker_id}; retry once the worker has stopped it, at the latest after {until}"
    )]
    AttemptStopping {
        job_id: String,
        worker_id: String,
        until: DateTime<Utc>,
    },

    /// The requested state change is not allowed from the job's current state.
    #[error("cannot {action} job {job_id}: it is {status}")]
    InvalidState {
        job_id: String,
        action: &'static str,
        status: JobStatus,
    },

    #[error("queue storage failed at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// Stored data could not be read back; the file backend quarantines such files.
    #[error("stored job at {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
}

impl QueueError {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        QueueError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// A durable job queue shared by the API process and any number of worker processes.
///
/// Every state change is durable before the call returns. `ack`, `fail`, `heartbeat` and `release`
/// are fenced by the lease `dequeue` returned.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Adds a job, or returns the existing one (with `existing: true`) when `opts.idempotency_key`
    /// matches a job of the same type that is pending, running or completed. Records a `RunQueued` event for a new
    /// job. Rejects an invalid job type, an oversized payload, and out-of-range options.
    async fn enqueue(
        &self,
        job_type: &str,
        payload: Value,
        opts: EnqueueOptions,
    ) -> Result<Enqueued, QueueError>;

    /// Claims the best due job of one of `job_types`: highest priority, then oldest. Counts the
    /// attempt, grants a lease, and returns the job and its lease; `None` when nothing is due.
    /// Jobs whose lease expired are claimable again, or failed when no attempt is left.
    async fn dequeue(
        &self,
        worker_id: &str,
        job_types: &[String],
    ) -> Result<Option<(Job, Lease)>, QueueError>;

    /// Completes the leased attempt with `result`.
    async fn ack(&self, lease: &Lease, result: Value) -> Result<Job, QueueError>;

    /// Fails the leased attempt: back to `pending` after a backoff when the failure is retryable
    /// and attempts remain, otherwise `failed` with `lastError`.
    async fn fail(
        &self,
        lease: &Lease,
        failure: JobFailure,
        opts: FailOptions,
    ) -> Result<Job, QueueError>;

    /// Extends the lease and returns the job. Fails with `LeaseLost` when the job is no longer
    /// running this attempt, which is how a worker learns that its job was cancelled.
    async fn heartbeat(&self, lease: &Lease) -> Result<Job, QueueError>;

    /// Hands a running attempt back without failing it (worker shutdown): the job becomes
    /// `pending`, due at once, and the attempt is not counted.
    async fn release(&self, lease: &Lease, reason: &str) -> Result<Job, QueueError>;

    async fn get(&self, job_id: &str) -> Result<Option<Job>, QueueError>;

    async fn list(&self, filter: &JobFilter) -> Result<JobPage, QueueError>;

    /// Cancels a pending or running job. A running job's worker learns of it at its next
    /// heartbeat. Cancelling a cancelled job returns it unchanged; a completed or failed job
    /// cannot be cancelled.
    async fn cancel(&self, job_id: &str) -> Result<Job, QueueError>;

    /// Moves a failed or cancelled job back to `pending` as a new run: attempts reset, a new run
    /// id, no `lastError`. A job cancelled while running can be retried once its worker has
    /// stopped the attempt (`AttemptStopping` until then).
    async fn retry(&self, job_id: &str) -> Result<Job, QueueError>;

    /// Deletes completed, failed and cancelled jobs that finished before `now - older_than`, and
    /// returns how many were deleted.
    async fn prune(&self, older_than: Duration) -> Result<u64, QueueError>;

    /// Counts jobs by type and state.
    async fn counts(&self) -> Result<Vec<StatusCount>, QueueError>;

    /// Waits until a job may have become claimable (an enqueue, a release, a retry) or `max_wait`
    /// passes, whichever is first. Wakes within milliseconds of a change made by any process.
    async fn wait_for_work(&self, max_wait: Duration);
}
