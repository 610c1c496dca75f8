//! `jobhost queue ...`: inspect and change the file queue of a data directory from the command
//! line. Every subcommand prints one JSON document to stdout.
//!
//! The commands work on the files directly, so they need no running API, and they are safe to
//! run while the API and workers use the same data directory.

use crate::events::EventStore;
use crate::job::JobStatus;
use crate::queue::{EnqueueOptions, FileQueue, JobFilter, Queue, QueueSettings};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A queue subcommand.
#[derive(Debug, Clone, Subcommand)]
pub enum QueueCommand {
    /// Add a job and print `{"job": ..., "existing": bool}`; `existing` is true when the
    /// idempotency key matched a job that is pending, running or completed.
    Enqueue(EnqueueArgs),
    /// Print one job.
    Get {
        /// Job id.
        id: String,
    },
    /// Print a page of jobs, newest first, as `{"jobs": [...], "nextCursor": ...}`.
    List(ListArgs),
    /// Cancel a pending or running job and print it. A running job's worker stops at its next
    /// heartbeat.
    Cancel {
        /// Job id.
        id: String,
    },
    /// Move a failed or cancelled job back to pending as a new run and print it.
    Retry {
        /// Job id.
        id: String,
    },
    /// Delete completed, failed and cancelled jobs that finished before the cutoff, and print
    /// `{"pruned": N}`.
    Prune {
        /// Age in seconds a finished job must exceed to be deleted.
        #[arg(long, value_name = "SECONDS")]
        older_than_secs: u64,
    },
    /// Print the number of jobs per job type and state.
    Counts,
    /// Rebuild the queue's index from the job files and print what was fixed. Needed only after
    /// job files were restored or edited by hand; the queue does it by itself after a reboot.
    Repair,
}

/// Arguments of `jobhost queue enqueue`.
#[derive(Debug, Clone, Args)]
pub struct EnqueueArgs {
    /// Job type, such as RUN_WORKFLOW. Debates go through POST /api/debates, which stores the
    /// debate the RUN_DEBATE job refers to.
    #[arg(long = "type", value_name = "JOB_TYPE")]
    pub job_type: String,
    /// Payload as JSON text, or `@FILE` to read it from a file (`@-` reads stdin).
    #[arg(long, value_name = "JSON|@FILE")]
    pub payload: String,
    /// Return the existing job instead of creating one while a job with this key is pending,
    /// running or completed (1 to 256 characters).
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Attempts before the job fails for good (1 to 100); default 3.
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Claim order, -1000 to 1000; higher is claimed first.
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "P"
    )]
    pub priority: i32,
    /// Earliest claim time, RFC 3339 (for example 2030-01-01T09:00:00Z).
    #[arg(long, value_name = "TIME", conflicts_with = "delay_ms")]
    pub run_at: Option<DateTime<Utc>>,
    /// Earliest claim time as a delay from now, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub delay_ms: Option<u64>,
}

/// Arguments of `jobhost queue list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only jobs in this state: pending, running, completed, failed or cancelled.
    #[arg(long)]
    pub status: Option<JobStatus>,
    /// Only jobs of this type.
    #[arg(long = "type", value_name = "JOB_TYPE")]
    pub job_type: Option<String>,
    /// Page size, 1 to 500.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// `nextCursor` of the previous page.
    #[arg(long)]
    pub cursor: Option<String>,
}

/// Runs `command` on the queue in `data_dir` (created when missing) and prints the result as JSON.
pub async fn run(command: QueueCommand, data_dir: &Path) -> anyhow::Result<()> {
    let queue = open(data_dir).await?;
    let output = match command {
        QueueCommand::Enqueue(args) => enqueue(&queue, args).await?,
        QueueCommand::Get { id } => match queue.get(&id).await? {
            Some(job) => to_json(&job)?,
            None => bail!("job {id} not found in {}", data_dir.display()),
        },
        QueueCommand::List(args) => to_json(&queue.list(&list_filter(args)).await?)?,
        QueueCommand::Cancel { id } => to_json(&queue.cancel(&id).await?)?,
        QueueCommand::Retry { id } => to_json(&queue.retry(&id).await?)?,
        QueueCommand::Prune { older_than_secs } => {
            let pruned = queue.prune(Duration::from_secs(older_than_secs)).await?;
            json!({ "pruned": pruned })
        }
        QueueCommand::Counts => json!({ "counts": queue.counts().await? }),
        QueueCommand::Repair => to_json(&queue.repair_index().await?)?,
    };
    print_json(&output)
}

async fn open(data_dir: &Path) -> anyhow::Result<FileQueue> {
    let data_dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("failed to create DATA_DIR {}", data_dir.display()))?;
        let events = EventStore::open(&data_dir)
            .with_context(|| format!("failed to open the event store in {}", data_dir.display()))?;
        FileQueue::open(&data_dir, QueueSettings::default(), events)
            .with_context(|| format!("failed to open the queue in {}", data_dir.display()))
    })
    .await
    .context("opening the queue was interrupted")?
}

async fn enqueue(queue: &FileQueue, args: EnqueueArgs) -> anyhow::Result<Value> {
    let payload = read_payload(&args.payload)?;
    let run_at = match (args.run_at, args.delay_ms) {
        (Some(run_at), _) => Some(run_at),
        (None, Some(delay_ms)) => {
            let delay = i64::try_from(delay_ms)
                .ok()
                .and_then(chrono::TimeDelta::try_milliseconds)
                .and_then(|delay| Utc::now().checked_add_signed(delay));
            Some(delay.with_context(|| {
                format!("invalid --delay-ms {delay_ms}: the run time would be out of range")
            })?)
        }
        (None, None) => None,
    };
    let opts = EnqueueOptions {
        idempotency_key: args.idempotency_key,
        max_attempts: args.max_attempts,
        priority: args.priority,
        run_at,
        request_id: None,
    };
    to_json(&queue.enqueue(&args.job_type, payload, opts).await?)
}

/// Parses `--payload`: JSON text, or `@FILE` / `@-` for a file or stdin holding JSON.
fn read_payload(argument: &str) -> anyhow::Result<Value> {
    let (text, source) = match argument.strip_prefix('@') {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("failed to read the payload from stdin")?;
            (text, "stdin".to_string())
        }
        Some(file) => {
            let path = PathBuf::from(file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("failed to read the payload file {}", path.display()))?;
            (text, path.display().to_string())
        }
        None => (argument.to_string(), "--payload".to_string()),
    };
    serde_json::from_str(&text).with_context(|| {
        format!(
            "invalid JSON payload in {source}: pass a JSON value such as '{{\"topic\": \"x\"}}'"
        )
    })
}

fn list_filter(args: ListArgs) -> JobFilter {
    JobFilter {
        status: args.status,
        job_type: args.job_type,
        limit: args.limit,
        cursor: args.cursor,
    }
}

fn to_json(value: &impl Serialize) -> anyhow::Result<Value> {
    serde_json::to_value(value).context("failed to serialize the output")
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("failed to serialize the output")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").context("failed to write to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Harness {
        #[command(subcommand)]
        command: QueueCommand,
    }

    fn parse(args: &[&str]) -> Result<QueueCommand, clap::Error> {
        let argv = std::iter::once("queue").chain(args.iter().copied());
        Harness::try_parse_from(argv).map(|harness| harness.command)
    }

    #[test]
    fn enqueue_arguments_parse() {
        let command = parse(&[
            "enqueue",
            "--type",
            "TEST_ECHO",
            "--payload",
            "{\"a\":1}",
            "--priority",
            "-5",
            "--max-attempts",
            "2",
            "--idempotency-key",
            "k1",
            "--run-at",
            "2030-01-01T09:00:00Z",
        ]);
        let Ok(QueueCommand::Enqueue(args)) = command else {
            panic!("unexpected parse result {command:?}");
        };
        assert_eq!(args.job_type, "TEST_ECHO");
        assert_eq!(args.priority, -5);
        assert_eq!(args.max_attempts, Some(2));
        assert_eq!(args.idempotency_key.as_deref(), Some("k1"));
        assert_eq!(
            args.run_at.map(|time| time.to_rfc3339()),
            Some("2030-01-01T09:00:00+00:00".to_string())
        );
    }

    #[test]
    fn run_at_and_delay_conflict() {
        let result = parse(&[
            "enqueue",
            "--type",
            "T",
            "--payload",
            "1",
            "--run-at",
            "2030-01-01T09:00:00Z",
            "--delay-ms",
            "5",
        ]);
        assert!(result.is_err());
    }

    #[test]
    fn list_rejects_unknown_status() {
        assert!(parse(&["list", "--status", "done"]).is_err());
        let Ok(QueueCommand::List(args)) = parse(&["list", "--status", "failed"]) else {
            panic!("list --status failed did not parse");
        };
        assert_eq!(args.status, Some(JobStatus::Failed));
    }

    #[test]
    fn payload_from_text_and_file() {
        assert_eq!(
            read_payload("{\"a\":[1,2]}").expect("inline JSON"),
            json!({ "a": [1, 2] })
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("payload.json");
        std::fs::write(&path, "{\"topic\":\"x\"}").expect("write payload file");
        let from_file = read_payload(&format!("@{}", path.display())).expect("payload file");
        assert_eq!(from_file, json!({ "topic": "x" }));

        let error = read_payload("{not json").expect_err("invalid JSON");
        assert!(format!("{error:#}").contains("invalid JSON payload"));
        let error = read_payload("@/nonexistent/payload.json").expect_err("missing file");
        assert!(format!("{error:#}").contains("/nonexistent/payload.json"));
    }

    #[tokio::test]
    async fn commands_change_the_queue() {
        let dir = tempfile::tempdir().expect("temp dir");
        let enqueue_args = EnqueueArgs {
            job_type: "TEST_ECHO".to_string(),
            payload: "{\"a\":1}".to_string(),
            idempotency_key: None,
            max_attempts: None,
            priority: 0,
            run_at: None,
            delay_ms: Some(60_000),
        };
        run(QueueCommand::Enqueue(enqueue_args), dir.path())
            .await
            .expect("enqueue");

        let queue = open(dir.path()).await.expect("open");
        let page = queue.list(&JobFilter::default()).await.expect("list");
        assert_eq!(page.jobs.len(), 1);
        let job = &page.jobs[0];
        assert!(job.run_at > Utc::now() + Duration::from_secs(30));
        assert_eq!(job.payload, json!({ "a": 1 }));

        let id = job.id.clone();
        run(QueueCommand::Cancel { id: id.clone() }, dir.path())
            .await
            .expect("cancel");
        run(QueueCommand::Retry { id: id.clone() }, dir.path())
            .await
            .expect("retry");
        let job = queue.get(&id).await.expect("get").expect("job");
        assert_eq!(job.status, JobStatus::Pending);

        let missing = run(
            QueueCommand::Get {
                id: crate::job::new_id(),
            },
            dir.path(),
        )
        .await;
        assert!(missing.is_err());
        let invalid = run(
            QueueCommand::Get {
                id: "../x".to_string(),
            },
            dir.path(),
        )
        .await;
        assert!(invalid.is_err());
    }
}
