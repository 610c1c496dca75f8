//! The job record every queue backend stores, its states, and the validation of the ids and job
//! types that come from outside.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// The state of a job, stored as lowercase text (`"pending"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting to be claimed: new, delayed until `runAt`, or waiting out a retry backoff.
    /// In: `enqueue`, `fail` with attempts left, `retry`, lease expiry with attempts left, and
    /// `release` at worker shutdown. Out: a worker's `dequeue` (to `running`) or `cancel`.
    Pending,
    /// Claimed by one worker, which holds a lease until `lockedUntil` and extends it by heartbeat.
    /// In: `dequeue`. Out: the claiming worker's `ack`, `fail` or `release`, `cancel`, or lease
    /// expiry (back to `pending`, or to `failed` when no attempt is left).
    Running,
    /// Finished with a result. In: `ack`. Out: none, but `prune` deletes it after the retention
    /// period.
    Completed,
    /// Finished without success: a non-retryable error, attempts used up, or the worker lost on
    /// the last attempt. In: `fail`, lease expiry. Out: `retry` (to `pending`) or `prune`.
    Failed,
    /// Stopped by a user. In: `cancel` from `pending` or `running`. Out: `retry` or `prune`.
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// Returns true for the states no worker will move the job out of.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
            .ok_or_else(|| {
                format!(
                    "invalid job status {value:?}: expected one of pending, running, completed, failed, cancelled"
                )
            })
    }
}

/// Whether retrying a failed attempt can help: the three kinds of `error-kind` in the WIT contract,
/// which the host also uses for the failures it detects itself (deadline, trap, lost worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The payload is wrong, so retrying cannot help.
    InvalidPayload,
    /// A transient failure, retried with backoff while attempts remain.
    Retryable,
    /// A permanent failure: the job fails at once.
    Fatal,
}

impl FailureKind {
    pub fn is_retryable(self) -> bool {
        self == FailureKind::Retryable
    }
}

/// A failed attempt as reported to `Queue::fail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobFailure {
    pub kind: FailureKind,
    /// Stable machine-readable code such as `deadline_exceeded` or `invalid_payload`.
    pub code: String,
    pub message: String,
}

impl JobFailure {
    pub fn new(kind: FailureKind, code: impl Into<String>, message: impl Into<String>) -> Self {
        JobFailure {
            kind,
            code: code.into(),
            message: message.into(),
        }
    }
}

/// The last failure recorded on a job (`lastError`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    pub kind: FailureKind,
    pub code: String,
    pub message: String,
    /// The attempt that failed.
    pub attempt: u32,
    pub at: DateTime<Utc>,
}

/// One job as every queue backend stores it. Serialized in camelCase; the file backend writes
/// exactly this record to `queue/jobs/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: String,
    #[serde(rename = "type")]
    pub job_type: String,
    pub payload: Value,
    pub status: JobStatus,
    /// Attempts claimed so far, counted at claim time, so a job that crashes its worker still
    /// uses up its attempts.
    pub attempts: u32,
    pub max_attempts: u32,
    /// Higher runs first; from `PRIORITY_MIN` to `PRIORITY_MAX`.
    pub priority: i32,
    /// Not claimed before this time.
    pub run_at: DateTime<Utc>,
    pub idempotency_key: Option<String>,
    /// The run this job's attempts belong to; events and artifacts are filed under it. A manual
    /// `retry` starts a new run.
    pub run_id: String,
    /// Id of the worker holding the lease while `running`.
    pub locked_by: Option<String>,
    /// End of the current lease while `running`.
    pub locked_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the latest attempt was claimed.
    pub started_at: Option<DateTime<Utc>>,
    /// When the job reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
    pub result: Option<Value>,
    pub last_error: Option<LastError>,
    /// Id of the HTTP request that enqueued the job, copied onto the run's events.
    #[serde(default)]
    pub request_id: Option<String>,
}

impl Job {
    /// Returns the lease of the running attempt, as its worker has it; `None` unless running.
    pub fn lease(&self) -> Option<Lease> {
        if self.status != JobStatus::Running {
            return None;
        }
        Some(Lease {
            job_id: self.id.clone(),
            run_id: self.run_id.clone(),
            attempt: self.attempts,
            worker_id: self.locked_by.clone()?,
        })
    }
}

/// Proof of a claim, which `ack`, `fail`, `heartbeat` and `release` take. They are rejected when
/// the job has since left `running` or been claimed again. A new claim can come from a newer
/// attempt, another worker, or a new run after `cancel` and `retry` reset the attempt count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub job_id: String,
    /// The run the claimed attempt belongs to; `retry` starts a new one.
    pub run_id: String,
    /// The attempt number this lease was granted for.
    pub attempt: u32,
    pub worker_id: String,
}

pub const PRIORITY_MIN: i32 = -1000;
pub const PRIORITY_MAX: i32 = 1000;
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// Checks an id that came from outside (a URL, a CLI argument, a payload) before it is used as a
/// file name: 1 to 64 characters of `[A-Za-z0-9_-]`, so it can never name a path.
pub fn validate_id(kind: &str, value: &str) -> Result<(), String> {
    let valid_chars = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if value.is_empty() || value.len() > 64 || !valid_chars {
        return Err(format!(
            "invalid {kind} {value:?}: use 1 to 64 characters of letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

/// Checks a job type: 1 to 64 characters of `[A-Za-z0-9_.:-]`, not starting with '.' or '-'.
pub fn validate_job_type(value: &str) -> Result<(), String> {
    let valid_chars = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    let valid_start = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if value.len() > 64 || !valid_chars || !valid_start {
        return Err(format!(
            "invalid job type {value:?}: use 1 to 64 characters of letters, digits, '_', '.', ':' and '-', starting with a letter, digit or '_'"
        ));
    }
    Ok(())
}

/// Generates a new time-ordered id (a UUID v7), so ids sort by creation time.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_rejects_path_like_values() {
        for bad in [
            "",
            "../etc",
            "a/b",
            "a\\b",
            ".",
            "..",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(validate_id("job id", bad).is_err(), "{bad:?} was accepted");
        }
        assert!(validate_id("job id", &new_id()).is_ok());
    }

    #[test]
    fn job_type_rules() {
        for good in ["RUN_DEBATE", "ingest.docs", "a:b-c", "_x"] {
            assert!(validate_job_type(good).is_ok(), "{good:?} was rejected");
        }
        for bad in ["", ".hidden", "-x", "a/b", "..", "a b", &"T".repeat(65)] {
            assert!(validate_job_type(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn status_round_trips_through_text() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(status));
        }
        assert!("done".parse::<JobStatus>().is_err());
    }
}
