//! Cancelling a running job, and the worker's graceful stop, in-process.

mod worker_support;

use chrono::Utc;
use jobhost::job::JobStatus;
use jobhost::queue::Queue;
use jobhost::worker::WorkerStatus;
use serde_json::json;
use std::time::Duration;
use worker_support::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_running_job_is_interrupted() {
    let harness = Harness::new();
    harness.install_testkit("");
    let worker = harness.start_worker(harness.settings("canceller")).await;
    worker.wait_job_type("TEST_SPIN").await;

    let job = harness.enqueue("TEST_SPIN", json!({ "ms": null })).await;
    harness.wait_status(&job.id, JobStatus::Running).await;
    harness.queue.cancel(&job.id).await.expect("cancel");

    // The worker learns of the cancel at its next lease heartbeat and stops the guest.
    worker
        .wait_record("no attempt in flight", |record| record.in_flight.is_empty())
        .await;
    let job = harness.wait_finished(&job.id).await;
    assert_eq!(job.status, JobStatus::Cancelled);
    let finished = harness.run_finished(&job.run_id);
    assert_eq!(finished.data["status"], json!("cancelled"));
    assert_eq!(
        finished.error.as_ref().map(|e| e.code.as_str()),
        Some("cancelled")
    );
    assert!(harness.running_jobs().await.is_empty());

    // The worker carries on.
    let echo = harness.enqueue("TEST_ECHO", json!("next")).await;
    let echo = harness.wait_finished(&echo.id).await;
    assert_eq!(echo.status, JobStatus::Completed);
    worker.stop().await.expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_running_job_is_stopped() {
    let harness = Harness::new();
    harness.install_testkit("");
    let worker = harness.start_worker(harness.settings("corrupted")).await;
    worker.wait_job_type("TEST_SLEEP").await;

    let job = harness.enqueue("TEST_SLEEP", json!({ "ms": 60_000 })).await;
    harness.wait_status(&job.id, JobStatus::Running).await;
    let job_file = harness
        .data_dir
        .join("queue/jobs")
        .join(format!("{}.json", job.id));
    std::fs::write(&job_file, b"{ not json").expect("corrupt the job file");

    // The next lease heartbeat quarantines the file, and the one after finds no job and stops the
    // attempt instead of retrying the heartbeat until the attempt ends.
    worker_support::wait_until("a job_gone error", || async {
        let errors = harness.events_of(&job.run_id, "Error");
        errors
            .iter()
            .any(|event| event.error.as_ref().is_some_and(|e| e.code == "job_gone"))
            .then_some(())
    })
    .await;
    worker
        .wait_record("no attempt in flight", |record| record.in_flight.is_empty())
        .await;
    assert!(!job_file.exists(), "the corrupt file was not quarantined");

    let echo = harness.enqueue("TEST_ECHO", json!("next")).await;
    let echo = harness.wait_finished(&echo.id).await;
    assert_eq!(echo.status, JobStatus::Completed);
    worker.stop().await.expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_short_jobs_and_releases_long_ones() {
    let harness = Harness::new();
    harness.install_testkit("");
    let mut settings = harness.settings("stopper");
    // The short jobs below need 1.5 s, so they are still running when the stop starts, and the
    // grace period leaves them ample room to end on a slow machine.
    settings.shutdown_grace = Duration::from_secs(5);
    let worker = harness.start_worker(settings).await;
    worker.wait_job_type("TEST_SPIN").await;

    // Ends within the grace period; it makes no host calls, so it cannot notice the stop.
    let short_spin = harness.enqueue("TEST_SPIN", json!({ "ms": 1_500 })).await;
    // Ends within the grace period while checking `is-cancelled` every 50 ms, which stays false.
    let short_sleep = harness.enqueue("TEST_SLEEP", json!({ "ms": 1_500 })).await;
    // Never ends by itself and makes no host calls: interrupted when the grace period is over.
    let spin = harness.enqueue("TEST_SPIN", json!({ "ms": null })).await;
    // Checks `is-cancelled`, but runs past the grace period and is interrupted.
    let long_sleep = harness.enqueue("TEST_SLEEP", json!({ "ms": 60_000 })).await;
    for job in [&short_spin, &short_sleep, &spin, &long_sleep] {
        harness.wait_status(&job.id, JobStatus::Running).await;
    }

    let stop_requested = Utc::now();
    worker.stop().await.expect("worker stops cleanly");

    for (job, result_key) in [(&short_spin, "spunMs"), (&short_sleep, "sleptMs")] {
        let job = harness.wait_finished(&job.id).await;
        assert_eq!(job.status, JobStatus::Completed, "{:?}", job.last_error);
        let result = job.result.as_ref().expect("a completed job has a result");
        assert_eq!(result[result_key], json!(1_500), "{result}");
        // Finished during the grace period, not before the stop.
        let finished = harness.run_finished(&job.run_id);
        assert!(
            finished.ts > stop_requested,
            "job {} finished at {} before the stop at {stop_requested}",
            job.id,
            finished.ts
        );
    }
    for job in [&spin, &long_sleep] {
        let job = harness.job(&job.id).await;
        assert_eq!(
            job.status,
            JobStatus::Pending,
            "job {} was not handed back",
            job.id
        );
        assert!(job.last_error.is_none(), "{:?}", job.last_error);
        let finished = harness.run_finished(&job.run_id);
        assert_eq!(finished.data["status"], json!("pending"));
        assert_eq!(finished.data["released"], json!(true));
    }
    assert!(harness.running_jobs().await.is_empty());

    let record = jobhost::worker::record::read_record(&harness.data_dir, "stopper")
        .expect("read record")
        .expect("record exists");
    assert_eq!(record.status, WorkerStatus::Stopped);
    assert!(record.in_flight.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_job_keeps_its_lease() {
    // A 1 s lease, heartbeated every third of it, for a job that runs three times as long, with
    // a second worker waiting to claim anything whose lease runs out.
    let harness = Harness::with_queue_settings(jobhost::queue::QueueSettings {
        lease: Duration::from_secs(1),
        ..jobhost::queue::QueueSettings::default()
    });
    harness.install_testkit("");
    let first = harness.start_worker(harness.settings("lease-first")).await;
    first.wait_job_type("TEST_SLEEP").await;

    let job = harness.enqueue("TEST_SLEEP", json!({ "ms": 3_000 })).await;
    harness.wait_status(&job.id, JobStatus::Running).await;
    let second = harness.start_worker(harness.settings("lease-second")).await;
    second.wait_job_type("TEST_SLEEP").await;

    let job = harness.wait_finished(&job.id).await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.last_error);
    assert_eq!(job.attempts, 1);
    let started = harness.events_of(&job.run_id, "RunStarted");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].data["workerId"], json!("lease-first"));
    assert_eq!(harness.events_of(&job.run_id, "RunFinished").len(), 1);

    first.stop().await.expect("first worker stops cleanly");
    second.stop().await.expect("second worker stops cleanly");
}
