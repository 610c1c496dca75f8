//! Sandbox limits through the real worker and file queue, in obeyed/violated pairs: the wall-clock
//! deadline (for a guest computing, sleeping, or waiting on a model call), the memory cap, and
//! traps. Each violated limit fails the attempt with its own code and leaves the worker running.

mod worker_support;

use jobhost::job::{FailureKind, JobStatus};
use jobhost::queue::{EnqueueOptions, Queue};
use serde_json::json;
use std::time::Duration;
use worker_support::model_server::SilentServer;
use worker_support::{Harness, wait_until};

/// Returns options that allow one attempt only, so a failure is final and easy to inspect.
fn single_attempt() -> EnqueueOptions {
    EnqueueOptions {
        max_attempts: Some(1),
        ..EnqueueOptions::default()
    }
}

/// Returns the last error of a job that failed.
fn last_error(job: &jobhost::job::Job) -> &jobhost::job::LastError {
    job.last_error
        .as_ref()
        .unwrap_or_else(|| panic!("job {} has no lastError", job.id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_loop_stops_at_deadline_while_others_run() {
    let harness = Harness::new();
    harness.install_testkit("timeout_secs = 1\n");
    let mut settings = harness.settings("spin-worker");
    settings.concurrency = 2;
    settings.heartbeat_interval = Duration::from_millis(500);
    let worker = harness.start_worker(settings).await;
    worker.wait_job_type("TEST_SPIN").await;

    let spin = harness
        .enqueue_with("TEST_SPIN", json!({ "ms": null }), single_attempt())
        .await;
    harness.wait_status(&spin.id, JobStatus::Running).await;
    let mut echoes = Vec::new();
    for index in 0..10 {
        echoes.push(
            harness
                .enqueue("TEST_ECHO", json!({ "index": index }))
                .await,
        );
    }

    // The worker record stays fresh while the guest spins.
    let spin_id = spin.id.clone();
    let queue = harness.queue.clone();
    wait_until("the spinning job to end", || {
        let queue = queue.clone();
        let spin_id = spin_id.clone();
        let record = worker.record();
        async move {
            if let Some(record) = record {
                assert!(
                    !record.is_stale(chrono::Utc::now()),
                    "worker record went stale while a guest spun: {record:?}"
                );
            }
            let job = queue.get(&spin_id).await.ok().flatten()?;
            job.status.is_terminal().then_some(())
        }
    })
    .await;
    let spin = harness.wait_finished(&spin_id).await;

    let error = last_error(&spin);
    assert_eq!(spin.status, JobStatus::Failed);
    assert_eq!(error.code, "deadline_exceeded");
    assert!(
        error.message.contains("job exceeded its 1s deadline"),
        "{}",
        error.message
    );
    let finished = harness.run_finished(&spin.run_id);
    let latency = finished.latency_ms.expect("RunFinished has latencyMs");
    assert!(
        latency >= 1_000,
        "stopped before its deadline: {latency} ms"
    );
    // Far below anything but an interruption at the deadline.
    assert!(latency < 6_000, "stopped {latency} ms after it started");

    for echo in &echoes {
        let echo = harness.wait_finished(&echo.id).await;
        assert_eq!(echo.status, JobStatus::Completed, "{echo:?}");
        assert!(
            echo.finished_at <= spin.finished_at,
            "echo job {} finished after the spinning job ended",
            echo.id
        );
    }

    assert!(worker.is_running(), "the worker stopped after a deadline");
    assert!(harness.running_jobs().await.is_empty());
    worker.stop().await.expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_ending_before_deadline_completes() {
    let harness = Harness::new();
    harness.install_testkit("timeout_secs = 5\n");
    let worker = harness.start_worker(harness.settings("spin-ok")).await;
    worker.wait_job_type("TEST_SPIN").await;

    let job = harness
        .enqueue_with("TEST_SPIN", json!({ "ms": 200 }), single_attempt())
        .await;
    let job = harness.wait_finished(&job.id).await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.last_error);
    worker.stop().await.expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_growth_past_cap_fails() {
    let harness = Harness::new();
    harness.install_testkit("memory_mib = 64\n");
    let worker = harness.start_worker(harness.settings("grow")).await;
    worker.wait_job_type("TEST_GROW").await;

    let over = harness
        .enqueue_with("TEST_GROW", json!({ "mib": 100 }), single_attempt())
        .await;
    let under = harness
        .enqueue_with("TEST_GROW", json!({ "mib": 16 }), single_attempt())
        .await;

    let over = harness.wait_finished(&over.id).await;
    let error = last_error(&over);
    assert_eq!(over.status, JobStatus::Failed);
    assert_eq!(error.code, "memory_limit_exceeded");
    assert_eq!(error.kind, FailureKind::Fatal);
    assert!(error.message.contains("64 MiB"), "{}", error.message);

    let under = harness.wait_finished(&under.id).await;
    assert_eq!(under.status, JobStatus::Completed, "{:?}", under.last_error);
    assert_eq!(under.result, Some(json!({ "grewMib": 16 })));

    assert!(worker.is_running());
    worker.stop().await.expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_fails_as_trap_with_message() {
    let harness = Harness::new();
    harness.install_testkit("");
    let worker = harness.start_worker(harness.settings("panic")).await;
    worker.wait_job_type("TEST_PANIC").await;

    let job = harness
        .enqueue_with(
            "TEST_PANIC",
            json!({ "message": "deliberate test panic" }),
            EnqueueOptions {
                max_attempts: Some(3),
                ..EnqueueOptions::default()
            },
        )
        .await;
    let job = harness.wait_finished(&job.id).await;
    let error = last_error(&job);
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(error.code, "trap");
    assert_eq!(error.kind, FailureKind::Fatal);
    // Fatal: the first attempt is the last.
    assert_eq!(job.attempts, 1);
    assert!(
        error.message.contains("deliberate test panic"),
        "{}",
        error.message
    );

    // The next job runs normally in a fresh instance.
    let echo = harness.enqueue("TEST_ECHO", json!("after panic")).await;
    let echo = harness.wait_finished(&echo.id).await;
    assert_eq!(echo.result, Some(json!("after panic")));
    worker.stop().await.expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleep_past_deadline_is_stopped() {
    let harness = Harness::new();
    harness.install_testkit("timeout_secs = 1\n");
    let worker = harness.start_worker(harness.settings("sleeper")).await;
    worker.wait_job_type("TEST_SLEEP").await;

    let job = harness
        .enqueue_with("TEST_SLEEP", json!({ "ms": 10_000 }), single_attempt())
        .await;
    let job = harness.wait_finished(&job.id).await;
    let error = last_error(&job);
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(error.code, "deadline_exceeded");
    assert!(error.message.contains("1s deadline"), "{}", error.message);
    let latency = harness
        .run_finished(&job.run_id)
        .latency_ms
        .expect("latencyMs");
    // The guest asked to sleep 10 s; ending well before that means it was interrupted.
    assert!(latency < 6_000, "attempt took {latency} ms");

    let sleep_ok = harness
        .enqueue_with("TEST_SLEEP", json!({ "ms": 100 }), single_attempt())
        .await;
    let sleep_ok = harness.wait_finished(&sleep_ok.id).await;
    assert_eq!(sleep_ok.result, Some(json!({ "sleptMs": 100 })));

    assert!(harness.running_jobs().await.is_empty());
    worker.stop().await.expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_model_call_is_dropped_at_deadline() {
    let server = SilentServer::start().await;
    let harness = Harness::new();
    harness.install_testkit("timeout_secs = 1\n");
    let mut settings = harness.settings("hung-model");
    settings.llm.base_url = Some(server.base_url());
    settings.llm.model = Some("test-model".to_string());
    let worker = harness.start_worker(settings).await;
    worker.wait_job_type("TEST_CHAT").await;

    let job = harness
        .enqueue_with("TEST_CHAT", json!({ "prompt": "hello?" }), single_attempt())
        .await;
    let job = harness.wait_finished(&job.id).await;
    let error = last_error(&job);
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(error.code, "deadline_exceeded");
    assert!(error.message.contains("1s deadline"), "{}", error.message);

    // The request reached the server, and dropping it closed the connection.
    assert_eq!(server.accepted(), 1);
    wait_until("the model server to see the connection close", || {
        let closed = server.closed();
        async move { (closed == 1).then_some(()) }
    })
    .await;

    assert!(harness.running_jobs().await.is_empty());
    assert!(worker.is_running());
    worker.stop().await.expect("worker stops cleanly");
}
