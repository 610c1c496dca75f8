//! Throughput and latency of the file queue on the local disk.
//!
//! Run: `cargo bench -p jobhost --bench queue`. Sizes come from environment variables, so a quick
//! run is possible (`QUEUE_BENCH_JOBS=200 QUEUE_BENCH_FINISHED=1000 cargo bench ...`):
//! - `QUEUE_BENCH_JOBS` (default 2000): jobs enqueued, and claimed and acked per worker count.
//! - `QUEUE_BENCH_FINISHED` (default 100000): finished jobs on disk for the second latency run.
//! - `QUEUE_BENCH_SAMPLES` (default 1000): dequeue calls timed per latency run.
//! - `QUEUE_BENCH_DIR` (default: a temporary directory): where the data directories go; use a
//!   directory on the disk you want to measure.
//!
//! Claiming workers are separate OS processes (this binary started again with
//! `QUEUE_BENCH_ROLE=claimer`), because processes contend for the queue lock through `flock` and
//! for the disk the way real workers do, which threads in one process would not show. The
//! workers only claim and ack, with no plugin, so the numbers are the queue's own cost.

use jobhost::durable;
use jobhost::events::EventStore;
use jobhost::job::{Job, new_id};
use jobhost::queue::{EnqueueOptions, FileQueue, Queue, QueueSettings};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const JOB_TYPE: &str = "BENCH_NOOP";
const ROLE_VAR: &str = "QUEUE_BENCH_ROLE";
const CLAIM_DIR_VAR: &str = "QUEUE_BENCH_CLAIM_DIR";

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if std::env::var(ROLE_VAR).as_deref() == Ok("claimer") {
        let dir = PathBuf::from(std::env::var(CLAIM_DIR_VAR)?);
        return runtime.block_on(claim_until_empty(&dir));
    }
    runtime.block_on(run_benchmarks())
}

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .map_err(|error| anyhow::anyhow!("invalid {name}={text:?}: {error}")),
        Err(_) => Ok(default),
    }
}

async fn run_benchmarks() -> anyhow::Result<()> {
    let jobs = env_usize("QUEUE_BENCH_JOBS", 2000)?;
    let finished = env_usize("QUEUE_BENCH_FINISHED", 100_000)?;
    let samples = env_usize("QUEUE_BENCH_SAMPLES", 1000)?;
    let base = match std::env::var("QUEUE_BENCH_DIR") {
        Ok(dir) => tempfile::tempdir_in(dir)?,
        Err(_) => tempfile::tempdir()?,
    };
    println!(
        "file queue benchmark: jobs={jobs} finished={finished} samples={samples} dir={}",
        base.path().display()
    );

    let floor = write_atomic_latency(&base.path().join("floor"), 200)?;
    println!(
        "durable::write_atomic of a 1 KiB file (2 fsyncs): median {:.3} ms, p99 {:.3} ms",
        ms(floor.median),
        ms(floor.p99)
    );

    let dir = base.path().join("throughput-1");
    let rate = enqueue_rate(&dir, jobs).await?;
    println!("enqueue (1 process, sequential): {rate:.0} jobs/s");

    for workers in [1usize, 4] {
        let dir = base.path().join(format!("claim-{workers}"));
        fill(&dir, jobs).await?;
        let rate = claim_ack_rate(&dir, workers, jobs)?;
        println!("claim+ack ({workers} worker processes): {rate:.0} jobs/s");
    }

    for finished_jobs in [0, finished] {
        let dir = base.path().join(format!("latency-{finished_jobs}"));
        let latency = dequeue_latency(&dir, finished_jobs, samples).await?;
        println!(
            "dequeue with {finished_jobs} finished jobs on disk: median {:.3} ms, p99 {:.3} ms",
            ms(latency.median),
            ms(latency.p99)
        );
    }
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

struct Latency {
    median: Duration,
    p99: Duration,
}

fn percentiles(mut samples: Vec<Duration>) -> Latency {
    samples.sort_unstable();
    let at = |fraction: f64| {
        let index = ((samples.len() as f64 - 1.0) * fraction).round() as usize;
        samples.get(index).copied().unwrap_or_default()
    };
    Latency {
        median: at(0.5),
        p99: at(0.99),
    }
}

fn open(dir: &Path) -> anyhow::Result<FileQueue> {
    std::fs::create_dir_all(dir)?;
    let events = EventStore::open(dir)?;
    Ok(FileQueue::open(dir, QueueSettings::default(), events)?)
}

fn write_atomic_latency(dir: &Path, count: usize) -> anyhow::Result<Latency> {
    std::fs::create_dir_all(dir)?;
    let bytes = vec![b'x'; 1024];
    let mut samples = Vec::with_capacity(count);
    for index in 0..count {
        let started = Instant::now();
        durable::write_atomic(&dir.join(format!("{}.json", index % 16)), &bytes)?;
        samples.push(started.elapsed());
    }
    Ok(percentiles(samples))
}

async fn enqueue_rate(dir: &Path, jobs: usize) -> anyhow::Result<f64> {
    let queue = open(dir)?;
    let started = Instant::now();
    for index in 0..jobs {
        queue
            .enqueue(JOB_TYPE, json!({ "n": index }), EnqueueOptions::default())
            .await?;
    }
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

async fn fill(dir: &Path, jobs: usize) -> anyhow::Result<()> {
    let queue = open(dir)?;
    for index in 0..jobs {
        queue
            .enqueue(JOB_TYPE, json!({ "n": index }), EnqueueOptions::default())
            .await?;
    }
    Ok(())
}

/// Starts `workers` claimer processes on `dir` and returns claimed jobs per second, measured
/// from the first process's first claim to the last process's last ack, so process start-up is
/// not counted.
fn claim_ack_rate(dir: &Path, workers: usize, jobs: usize) -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for _ in 0..workers {
        children.push(
            Command::new(&exe)
                .env(ROLE_VAR, "claimer")
                .env(CLAIM_DIR_VAR, dir)
                .stdout(Stdio::piped())
                .spawn()?,
        );
    }

    let mut claimed = 0u64;
    let mut first_start = u128::MAX;
    let mut last_end = 0u128;
    for child in children {
        let output = child.wait_with_output()?;
        anyhow::ensure!(
            output.status.success(),
            "a claimer process failed: {}",
            output.status
        );
        let report: Value = serde_json::from_slice(&output.stdout)?;
        claimed += report["claimed"].as_u64().unwrap_or(0);
        if let (Some(start), Some(end)) =
            (report["startMicros"].as_u64(), report["endMicros"].as_u64())
        {
            first_start = first_start.min(u128::from(start));
            last_end = last_end.max(u128::from(end));
        }
    }
    anyhow::ensure!(
        claimed == jobs as u64,
        "claimers acked {claimed} jobs, expected {jobs}"
    );
    let seconds = last_end.saturating_sub(first_start) as f64 / 1_000_000.0;
    Ok(claimed as f64 / seconds)
}

fn epoch_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros())
        .unwrap_or_default()
}

/// Claims and acks jobs until the queue is empty, then prints a JSON report (the claimer
/// process's whole work).
async fn claim_until_empty(dir: &Path) -> anyhow::Result<()> {
    let queue = open(dir)?;
    let worker_id = format!("bench-{}", std::process::id());
    let job_types = vec![JOB_TYPE.to_string()];
    let mut claimed = 0u64;
    let mut start = None;
    while let Some((_, lease)) = queue.dequeue(&worker_id, &job_types).await? {
        start.get_or_insert_with(epoch_micros);
        queue.ack(&lease, Value::Null).await?;
        claimed += 1;
    }
    let end = epoch_micros();
    println!(
        "{}",
        json!({
            "claimed": claimed,
            "startMicros": start.unwrap_or(end) as u64,
            "endMicros": end as u64,
        })
    );
    Ok(())
}

/// Times `samples` dequeue calls (each claims one job) with `finished` completed jobs on disk.
/// The finished jobs are copies of one acked job written straight to disk, without `fsync`,
/// because only their presence matters here.
async fn dequeue_latency(dir: &Path, finished: usize, samples: usize) -> anyhow::Result<Latency> {
    let queue = open(dir)?;
    queue
        .enqueue(JOB_TYPE, json!({}), EnqueueOptions::default())
        .await?;
    let job_types = vec![JOB_TYPE.to_string()];
    let Some((_, lease)) = queue.dequeue("bench", &job_types).await? else {
        anyhow::bail!("the template job was not claimed");
    };
    let template = queue.ack(&lease, Value::Null).await?;

    let jobs_dir = dir.join("queue/jobs");
    for _ in 0..finished {
        let job = Job {
            id: new_id(),
            run_id: new_id(),
            ..template.clone()
        };
        std::fs::write(
            jobs_dir.join(format!("{}.json", job.id)),
            serde_json::to_vec(&job)?,
        )?;
    }
    for index in 0..samples {
        queue
            .enqueue(JOB_TYPE, json!({ "n": index }), EnqueueOptions::default())
            .await?;
    }

    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let claimed = queue.dequeue("bench", &job_types).await?;
        latencies.push(started.elapsed());
        let Some((_, lease)) = claimed else {
            anyhow::bail!("dequeue found no pending job");
        };
        // Acked outside the timing, as a worker would, so running markers do not pile up.
        queue.ack(&lease, Value::Null).await?;
    }
    Ok(percentiles(latencies))
}
