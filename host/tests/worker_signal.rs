//! SIGTERM to a `jobhost worker` process with jobs in flight. The worker lets the jobs that end
//! within the shutdown grace period finish and hands the rest back to the queue, recording why.
//! It then marks its record `stopped` and exits with status 0.

mod worker_support;

use chrono::Utc;
use jobhost::job::JobStatus;
use jobhost::queue::Queue;
use jobhost::worker::WorkerStatus;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use worker_support::{Harness, WAIT_LIMIT, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_short_jobs_and_releases_long_ones() {
    let harness = Harness::new();
    harness.install_testkit("");
    // Checks `is-cancelled` every 50 ms and ends within the grace period below.
    let short_sleep = harness.enqueue("TEST_SLEEP", json!({ "ms": 1_500 })).await;
    // Never ends by itself: interrupted when the grace period is over.
    let spin = harness.enqueue("TEST_SPIN", json!({ "ms": null })).await;
    // Checks `is-cancelled`, but runs past the grace period and is interrupted.
    let long_sleep = harness.enqueue("TEST_SLEEP", json!({ "ms": 60_000 })).await;

    let mut child = Command::new(env!("CARGO_BIN_EXE_jobhost"))
        .arg("worker")
        .arg("--data-dir")
        .arg(&harness.data_dir)
        .arg("--plugins-dir")
        .arg(&harness.plugins_dir)
        .args(["--worker-id", "signal-worker", "--concurrency", "4"])
        .args([
            "--poll-ms",
            "50",
            "--lease-secs",
            "30",
            // Ample room for the 1.5 s job on a slow machine.
            "--shutdown-grace-secs",
            "5",
        ])
        // The model is never called; an unset base URL keeps the worker offline.
        .env_remove("LLM_BASE_URL")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start jobhost worker");

    // Collect the worker's log lines on a thread.
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let stderr = child.stderr.take().expect("stderr");
    let lines = Arc::clone(&log);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            lines.lock().expect("log lines").push(line);
        }
    });

    let started = Arc::clone(&log);
    wait_until("the worker to log `worker started`", || {
        let found = started
            .lock()
            .expect("log lines")
            .iter()
            .any(|line| line.contains("worker started"));
        async move { found.then_some(()) }
    })
    .await;
    for job in [&short_sleep, &spin, &long_sleep] {
        harness.wait_status(&job.id, JobStatus::Running).await;
    }

    let signal_sent = Utc::now();
    let pid = child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid} failed");

    let deadline = Instant::now() + WAIT_LIMIT;
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("poll the worker process") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    reader.join().expect("log reader");
    let log = log.lock().expect("log lines").join("\n");
    assert!(exit.success(), "worker exited with {exit}; log:\n{log}");
    assert!(log.contains("worker stopped"), "{log}");

    // The short job finished during the grace period, not before the signal.
    let short_sleep = harness.job(&short_sleep.id).await;
    assert_eq!(
        short_sleep.status,
        JobStatus::Completed,
        "{:?}; log:\n{log}",
        short_sleep.last_error
    );
    assert_eq!(short_sleep.result, Some(json!({ "sleptMs": 1_500 })));
    let finished = harness.run_finished(&short_sleep.run_id);
    assert_eq!(finished.data["status"], json!("completed"));
    assert!(
        finished.ts > signal_sent,
        "job {} finished at {} before SIGTERM at {signal_sent}",
        short_sleep.id,
        finished.ts
    );

    // Nothing is left running; the other jobs went back to the queue.
    for job in [&spin, &long_sleep] {
        let job = harness
            .queue
            .get(&job.id)
            .await
            .expect("get job")
            .expect("job exists");
        assert_eq!(
            job.status,
            JobStatus::Pending,
            "job {}; log:\n{log}",
            job.id
        );
        let finished = harness.run_finished(&job.run_id);
        assert_eq!(finished.data["status"], json!("pending"));
        assert_eq!(finished.data["released"], json!(true));
    }
    assert!(harness.running_jobs().await.is_empty());

    let record = jobhost::worker::record::read_record(&harness.data_dir, "signal-worker")
        .expect("read record")
        .expect("record exists");
    assert_eq!(record.status, WorkerStatus::Stopped);
    assert!(record.in_flight.is_empty());
}
