//! The behaviour every `Queue` backend must show, as a suite of checks that takes any backend.
//!
//! Each check is a public async function that takes a fresh [`Backend`] and panics on the first
//! deviation. [`queue_conformance_tests!`](crate::queue_conformance_tests) expands to one
//! `#[tokio::test]` per check, given an async factory that builds a backend from
//! [`QueueSettings`]:
//!
//! ```text
//! async fn file_backend(settings: QueueSettings) -> Backend { /* open on a temp dir */ }
//! jobhost::queue_conformance_tests!(file_backend);
//! ```
//!
//! `host/tests/queue_conformance.rs` is the complete version for the file backend.
//!
//! The checks use real time with the short lease of [`settings`], and assert no durations beyond
//! "not claimed before `runAt`" and bounds on the delays a backend records.

use crate::events::{EventStore, event_type};
use crate::job::{
    FailureKind, Job, JobFailure, JobStatus, Lease, MAX_ATTEMPTS_LIMIT, PRIORITY_MAX,
};
use crate::queue::{EnqueueOptions, FailOptions, JobFilter, Queue, QueueError, QueueSettings};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Job types the checks enqueue.
const TYPE_A: &str = "TEST_A";
const TYPE_B: &str = "TEST_B";

/// How long a check waits for something that should happen within a few leases.
const PATIENCE: Duration = Duration::from_secs(5);

/// A backend under test: the queue, the event store it records into, the settings it was built
/// with, and whatever must live as long as it (a temporary directory, a database).
pub struct Backend {
    pub queue: Arc<dyn Queue>,
    pub events: EventStore,
    pub settings: QueueSettings,
    _resources: Box<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Backend {
    pub fn new(
        queue: Arc<dyn Queue>,
        events: EventStore,
        settings: QueueSettings,
        resources: impl Any + Send + Sync,
    ) -> Self {
        Backend {
            queue,
            events,
            settings,
            _resources: Box::new(resources),
        }
    }
}

/// Returns the settings the suite builds backends with: a 500 ms lease, a 50 ms backoff base and
/// a 16 KiB payload limit. Expiries and retries then happen within a test, and a heartbeat every
/// eighth of a second stays ahead of a slow disk.
pub fn settings() -> QueueSettings {
    QueueSettings {
        lease: Duration::from_millis(500),
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_secs(2),
        max_payload_bytes: 16 * 1024,
        default_max_attempts: 3,
    }
}

/// Expands to one `#[tokio::test]` per conformance check. The argument is an async function (or
/// closure) that takes `QueueSettings` and returns a fresh `jobhost::queue::conformance::Backend`.
#[macro_export]
macro_rules! queue_conformance_tests {
    ($factory:expr) => {
        $crate::queue_conformance_tests!(@checks $factory;
            enqueue_get_round_trip,
            unknown_job_is_not_found,
            priority_then_age_order,
            run_at_delays_claim,
            concurrent_dequeue_claims_once,
            attempts_counted_at_claim,
            heartbeat_keeps_job_claimed,
            stale_lease_is_fenced,
            expired_lease_is_reclaimed,
            expired_last_attempt_fails_worker_lost,
            retry_backoff_grows,
            retry_after_overrides_backoff,
            non_retryable_failure_fails_at_once,
            last_attempt_failure_fails,
            idempotency_key_returns_existing,
            idempotency_key_frees_after_failed_or_cancelled,
            concurrent_idempotent_enqueue_creates_one,
            cancel_pending_job,
            cancel_running_job,
            cancelled_attempt_cannot_touch_retried_run,
            cancelled_attempt_frees_retry_after_lease,
            idempotency_key_is_scoped_by_type,
            cancel_terminal_job,
            retry_failed_and_cancelled,
            release_does_not_count_attempt,
            list_filters_and_pages,
            prune_deletes_old_finished_jobs,
            counts_by_type_and_status,
            payload_size_limit,
            invalid_input_is_rejected,
            wait_for_work_wakes_on_enqueue,
            wait_for_work_wakes_when_job_due,
        );
    };
    (@checks $factory:expr; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let backend = ($factory)($crate::queue::conformance::settings()).await;
                $crate::queue::conformance::$check(backend).await;
            }
        )+
    };
}

// ---- helpers ----

async fn enqueue(queue: &Arc<dyn Queue>, job_type: &str, opts: EnqueueOptions) -> Job {
    let enqueued = queue
        .enqueue(job_type, json!({ "n": 1 }), opts)
        .await
        .unwrap_or_else(|error| panic!("enqueue of {job_type} failed: {error}"));
    enqueued.job
}

async fn enqueue_default(queue: &Arc<dyn Queue>, job_type: &str) -> Job {
    enqueue(queue, job_type, EnqueueOptions::default()).await
}

fn types(list: &[&str]) -> Vec<String> {
    list.iter().map(|t| t.to_string()).collect()
}

async fn try_claim(
    queue: &Arc<dyn Queue>,
    worker: &str,
    job_types: &[&str],
) -> Option<(Job, Lease)> {
    queue
        .dequeue(worker, &types(job_types))
        .await
        .unwrap_or_else(|error| panic!("dequeue by {worker} failed: {error}"))
}

async fn claim(queue: &Arc<dyn Queue>, worker: &str, job_types: &[&str]) -> (Job, Lease) {
    try_claim(queue, worker, job_types)
        .await
        .unwrap_or_else(|| panic!("{worker} found no due job of {job_types:?}"))
}

/// Dequeues repeatedly until a job is claimed or `PATIENCE` passes.
async fn claim_eventually(
    queue: &Arc<dyn Queue>,
    worker: &str,
    job_types: &[&str],
) -> (Job, Lease) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(claimed) = try_claim(queue, worker, job_types).await {
            return claimed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{worker} claimed nothing of {job_types:?} within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get(queue: &Arc<dyn Queue>, job_id: &str) -> Job {
    queue
        .get(job_id)
        .await
        .unwrap_or_else(|error| panic!("get {job_id} failed: {error}"))
        .unwrap_or_else(|| panic!("job {job_id} not found"))
}

fn failure(kind: FailureKind, code: &str) -> JobFailure {
    JobFailure::new(kind, code, format!("{code} happened"))
}

async fn fail(
    queue: &Arc<dyn Queue>,
    lease: &Lease,
    failure: JobFailure,
    opts: FailOptions,
) -> Job {
    queue
        .fail(lease, failure, opts)
        .await
        .unwrap_or_else(|error| panic!("fail of {} failed: {error}", lease.job_id))
}

fn event_types(events: &EventStore, run_id: &str) -> Vec<String> {
    events
        .read(run_id)
        .unwrap_or_else(|error| panic!("reading events of run {run_id} failed: {error}"))
        .into_iter()
        .map(|event| event.event_type)
        .collect()
}

fn assert_lease_lost<T: std::fmt::Debug>(result: Result<T, QueueError>, call: &str) {
    assert!(
        matches!(result, Err(QueueError::LeaseLost { .. })),
        "{call} with a stale lease returned {result:?}, expected LeaseLost"
    );
}

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, QueueError>, call: &str) {
    assert!(
        matches!(result, Err(QueueError::Invalid(_))),
        "{call} returned {result:?}, expected Invalid"
    );
}

/// Asserts `time` lies in `[from + low, to + high]`.
fn assert_delay_within(
    time: DateTime<Utc>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    low: Duration,
    high: Duration,
    label: &str,
) {
    let earliest = from + low;
    let latest = to + high;
    assert!(time >= earliest, "{label} is {time}, before {earliest}");
    assert!(time <= latest, "{label} is {time}, after {latest}");
}

// ---- checks ----

/// Checks that a new job reads back with every field the request set, and that its run starts
/// with `RunQueued`.
pub async fn enqueue_get_round_trip(backend: Backend) {
    let queue = &backend.queue;
    let run_at = Utc::now() - chrono::Duration::seconds(1);
    let enqueued = queue
        .enqueue(
            TYPE_A,
            json!({ "topic": "tabs or spaces", "rounds": 2 }),
            EnqueueOptions {
                priority: 7,
                max_attempts: Some(5),
                run_at: Some(run_at),
                request_id: Some("req-42".to_string()),
                ..EnqueueOptions::default()
            },
        )
        .await
        .expect("enqueue");
    assert!(!enqueued.existing);
    let job = enqueued.job;

    let stored = get(queue, &job.id).await;
    assert_eq!(stored, job);
    assert_eq!(stored.job_type, TYPE_A);
    assert_eq!(
        stored.payload,
        json!({ "topic": "tabs or spaces", "rounds": 2 })
    );
    assert_eq!(stored.status, JobStatus::Pending);
    assert_eq!(stored.attempts, 0);
    assert_eq!(stored.max_attempts, 5);
    assert_eq!(stored.priority, 7);
    assert_eq!(stored.run_at, run_at);
    assert_eq!(stored.request_id.as_deref(), Some("req-42"));
    assert!(stored.locked_by.is_none());
    assert!(stored.finished_at.is_none());
    assert_ne!(stored.run_id, stored.id);

    let default_job = enqueue_default(queue, TYPE_A).await;
    assert_eq!(
        default_job.max_attempts,
        backend.settings.default_max_attempts
    );
    assert_eq!(default_job.priority, 0);

    let events = backend.events.read(&job.run_id).expect("read events");
    let queued: Vec<_> = events
        .iter()
        .filter(|event| event.event_type == event_type::RUN_QUEUED)
        .collect();
    assert_eq!(queued.len(), 1, "RunQueued events: {events:?}");
    assert_eq!(queued[0].component, "queue");
    assert_eq!(queued[0].job_id.as_deref(), Some(job.id.as_str()));
    assert_eq!(queued[0].request_id.as_deref(), Some("req-42"));
    assert_eq!(queued[0].data["jobType"], json!(TYPE_A));
    assert_eq!(queued[0].data["priority"], json!(7));
    assert_eq!(queued[0].data["maxAttempts"], json!(5));
    assert!(queued[0].data["runAt"].is_string());
}

/// Checks that operations on an id that names no job report it as not found.
pub async fn unknown_job_is_not_found(backend: Backend) {
    let queue = &backend.queue;
    let missing = crate::job::new_id();
    assert!(queue.get(&missing).await.expect("get").is_none());
    assert!(matches!(
        queue.cancel(&missing).await,
        Err(QueueError::NotFound { .. })
    ));
    assert!(matches!(
        queue.retry(&missing).await,
        Err(QueueError::NotFound { .. })
    ));
    let lease = Lease {
        job_id: missing,
        run_id: crate::job::new_id(),
        attempt: 1,
        worker_id: "w1".to_string(),
    };
    assert!(matches!(
        queue.ack(&lease, Value::Null).await,
        Err(QueueError::NotFound { .. })
    ));
}

/// Checks that higher priority is claimed first, then older jobs, and only jobs of the requested
/// types.
pub async fn priority_then_age_order(backend: Backend) {
    let queue = &backend.queue;
    let with_priority = |priority| EnqueueOptions {
        priority,
        ..EnqueueOptions::default()
    };
    let low_old = enqueue(queue, TYPE_A, with_priority(0)).await;
    let other_type = enqueue(queue, TYPE_B, with_priority(PRIORITY_MAX)).await;
    let high = enqueue(queue, TYPE_A, with_priority(10)).await;
    let low_new = enqueue(queue, TYPE_A, with_priority(0)).await;
    let middle = enqueue(queue, TYPE_A, with_priority(5)).await;
    let negative = enqueue(queue, TYPE_A, with_priority(-5)).await;

    let mut order = Vec::new();
    while let Some((job, _)) = try_claim(queue, "w1", &[TYPE_A]).await {
        order.push(job.id);
    }
    assert_eq!(
        order,
        vec![high.id, middle.id, low_old.id, low_new.id, negative.id]
    );
    assert_eq!(get(queue, &other_type.id).await.status, JobStatus::Pending);

    let (job, _) = claim(queue, "w1", &[TYPE_A, TYPE_B]).await;
    assert_eq!(job.id, other_type.id);
}

/// Checks that a job with a future `runAt` is not claimed before it, and is claimed after it.
pub async fn run_at_delays_claim(backend: Backend) {
    let queue = &backend.queue;
    let run_at = Utc::now() + chrono::Duration::milliseconds(400);
    let job = enqueue(
        queue,
        TYPE_A,
        EnqueueOptions {
            run_at: Some(run_at),
            ..EnqueueOptions::default()
        },
    )
    .await;

    assert!(try_claim(queue, "w1", &[TYPE_A]).await.is_none());
    let (claimed, _) = claim_eventually(queue, "w1", &[TYPE_A]).await;
    let claimed_at = Utc::now();
    assert_eq!(claimed.id, job.id);
    assert!(
        claimed_at >= run_at,
        "claimed at {claimed_at}, before runAt {run_at}"
    );
    assert!(
        claimed.started_at.is_some_and(|started| started >= run_at),
        "startedAt {:?} is before runAt {run_at}",
        claimed.started_at
    );
}

/// Checks that 12 concurrent dequeue loops claim each of 24 jobs once per attempt.
pub async fn concurrent_dequeue_claims_once(backend: Backend) {
    let queue = &backend.queue;
    let mut enqueued = BTreeSet::new();
    for _ in 0..24 {
        enqueued.insert(enqueue_default(queue, TYPE_A).await.id);
    }

    let mut tasks = Vec::new();
    for worker in 0..12 {
        let queue = Arc::clone(queue);
        tasks.push(tokio::spawn(async move {
            let worker_id = format!("w{worker}");
            let mut claimed = Vec::new();
            while let Some((job, lease)) = try_claim(&queue, &worker_id, &[TYPE_A]).await {
                claimed.push((job.id, lease.attempt));
                // A slow disk may let the lease expire before the ack. The job is then claimed
                // again as the next attempt, which is correct, so the check below allows it.
                let _ = queue.ack(&lease, Value::Null).await;
            }
            claimed
        }));
    }

    // Two claims of one job for the same attempt would mean two workers held it at once.
    let mut claims: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for task in tasks {
        for (job_id, attempt) in task.await.expect("dequeue task") {
            claims.entry(job_id).or_default().push(attempt);
        }
    }
    for (job_id, attempts) in &claims {
        let distinct: BTreeSet<u32> = attempts.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            attempts.len(),
            "job {job_id} was claimed twice for one attempt: {attempts:?}"
        );
        assert!(distinct.contains(&1), "job {job_id} claims: {attempts:?}");
    }
    let claimed: BTreeSet<String> = claims.into_keys().collect();
    assert_eq!(claimed, enqueued);
}

/// `attempts` counts at claim, before the attempt reports anything.
pub async fn attempts_counted_at_claim(backend: Backend) {
    let queue = &backend.queue;
    let job = enqueue_default(queue, TYPE_A).await;
    let (claimed, lease) = claim(queue, "w1", &[TYPE_A]).await;
    assert_eq!(claimed.attempts, 1);
    assert_eq!(lease.attempt, 1);
    assert_eq!(lease.job_id, job.id);
    assert_eq!(lease.worker_id, "w1");

    let stored = get(queue, &job.id).await;
    assert_eq!(stored.status, JobStatus::Running);
    assert_eq!(stored.attempts, 1);
    assert_eq!(stored.locked_by.as_deref(), Some("w1"));
    assert!(stored.locked_until.is_some_and(|until| until > Utc::now()));
    assert_eq!(stored.lease(), Some(lease));
}

/// Checks that while its worker heartbeats, a job is not claimed by another worker, even for
/// several leases.
pub async fn heartbeat_keeps_job_claimed(backend: Backend) {
    let queue = &backend.queue;
    let job = enqueue_default(queue, TYPE_A).await;
    let (_, lease) = claim(queue, "w1", &[TYPE_A]).await;
    let lease_length = backend.settings.lease;

    let mut last_until = None;
    for _ in 0..12 {
        tokio::time::sleep(lease_length / 4).await;
        let beat = queue.heartbeat(&lease).await.expect("heartbeat");
        assert!(
            beat.locked_until > last_until,
            "heartbeat did not extend the lease"
        );
        last_until = beat.locked_until;
        assert!(try_claim(queue, "w2", &[TYPE_A]).await.is_none());
    }

    let done = queue.ack(&lease, json!({ "ok": true })).await.expect("ack");
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.attempts, 1);
    assert_eq!(done.result, Some(json!({ "ok": true })));
    assert!(done.finished_at.is_some());
    assert_eq!(get(queue, &job.id).await.status, JobStatus::Completed);
}

/// Checks that once a job is claimed again, every call with the earlier attempt's lease is
/// rejected, and the new lease still works.
pub async fn stale_lease_is_fenced(backend: Backend) {
    let queue = &backend.queue;
    enqueue_default(queue, TYPE_A).await;
    let (_, stale) = claim(queue, "w1", &[TYPE_A]).await;
    tokio::time::sleep(backend.settings.lease + Duration::from_millis(50)).await;
    let (job, current) = claim_eventually(queue, "w2", &[TYPE_A]).await;
    assert_eq!(job.attempts, 2);

    assert_lease_lost(queue.heartbeat(&stale).await, "heartbeat");
    assert_lease_lost(queue.ack(&stale, Value::Null).await, "ack");
    assert_lease_lost(
        queue
            .fail(
                &stale,
                failure(FailureKind::Retryable, "boom"),
                FailOptions::default(),
            )
            .await,
        "fail",
    );
    assert_lease_lost(queue.release(&stale, "shutdown").await, "release");

    let forged = Lease {
        worker_id: "w1".to_string(),
        ..current.clone()
    };
    assert_lease_lost(
        queue.ack(&forged, Value::Null).await,
        "ack by another worker id",
    );

    let stored = get(queue, &job.id).await;
    assert_eq!(stored.status, JobStatus::Running);
    assert_eq!(stored.locked_by.as_deref(), Some("w2"));

    let done = queue
        .ack(&current, json!(1))
        .await
        .expect("ack with the current lease");
    assert_eq!(done.status, JobStatus::Completed);
    assert_lease_lost(queue.heartbeat(&current).await, "heartbeat after ack");
}

/// Checks that a job whose lease expired without a heartbeat is claimed again as the next
/// attempt.
pub async fn expired_lease_is_reclaimed(backend: Backend) {
    let queue = &backend.queue;
    let job = enqueue_default(queue, TYPE_A).await;
    claim(queue, "w1", &[TYPE_A]).await;
    assert!(try_claim(queue, "w2", &[TYPE_A]).await.is_none());

    tokio::time::sleep(backend.settings.lease).await;
    let (reclaimed, lease) = claim_eventually(queue, "w2", &[TYPE_A]).await;
    assert_eq!(reclaimed.id, job.id);
    assert_eq!(reclaimed.attempts, 2);
    assert_eq!(lease.attempt, 2);
    assert_eq!(reclaimed.locked_by.as_deref(), Some("w2"));
    let last_error = reclaimed.last_error.expect("lastError of the lost attempt");
    assert_eq!(last_error.code, "worker_lost");
    assert_eq!(last_error.attempt, 1);
}

/// Checks that a lost worker on the last attempt fails the job with `worker_lost`, an `Error`
/// event and a `RunFinished` event, and that no worker claims it again.
pub async fn expired_last_attempt_fails_worker_lost(backend: Backend) {
    let queue = &backend.queue;
    let job = enqueue(
        queue,
        TYPE_A,
        EnqueueOptions {
            max_attempts: Some(1),
            ..EnqueueOptions::default()
        },
    )
    .await;
    claim(queue, "lost-worker", &[TYPE_A]).await;
    tokio::time::sleep(backend.settings.lease).await;

    let deadline = tokio::time::Instant::now() + PATIENCE;
    let failed = loop {
        assert!(
            try_claim(queue, "w2", &[TYPE_A]).await.is_none(),
            "a job without attempts left was claimed"
        );
        let stored = get(queue, &job.id).await;
        if stored.status == JobStatus::Failed {
            break stored;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job still {} after {PATIENCE:?}",
            stored.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    assert_eq!(failed.attempts, 1);
    assert!(failed.finished_at.is_some());
    assert!(failed.locked_by.is_none());
    let last_error = failed.last_error.expect("lastError");
    assert_eq!(last_error.code, "worker_lost");
    assert_eq!(last_error.attempt, 1);
    assert!(
        last_error.message.contains("lost-worker"),
        "message: {}",
        last_error.message
    );
    assert!(
        last_error.message.contains("attempt 1"),
        "message: {}",
        last_error.message
    );

    let events = backend.events.read(&job.run_id).expect("read events");
    let error = events
        .iter()
        .find(|event| event.event_type == event_type::ERROR)
        .expect("an Error event for the lost worker");
    assert_eq!(
        error.error.as_ref().map(|e| e.code.as_str()),
        Some("worker_lost")
    );
    let finished: Vec<_> = events
        .iter()
        .filter(|event| event.event_type == event_type::RUN_FINISHED)
        .collect();
    assert_eq!(finished.len(), 1, "RunFinished events: {finished:?}");
    assert_eq!(finished[0].data["status"], json!("failed"));
}

/// Checks that retry delays follow `backoff_base * 2^attempt` plus jitter below one base, capped at
/// `backoff_max`, and the backend applies them.
pub async fn retry_backoff_grows(backend: Backend) {
    let settings = &backend.settings;
    let base = settings.backoff_base;
    for attempt in 1..=40u32 {
        let delay = settings.backoff(attempt);
        let exponential = base.saturating_mul(2u32.saturating_pow(attempt.min(31)));
        assert!(
            delay <= settings.backoff_max,
            "attempt {attempt}: {delay:?} above the cap"
        );
        if exponential + base <= settings.backoff_max {
            assert!(
                delay >= exponential,
                "attempt {attempt}: {delay:?} below {exponential:?}"
            );
            assert!(
                delay < exponential + base,
                "attempt {attempt}: {delay:?} has jitter of a base or more"
            );
        } else if exponential >= settings.backoff_max {
            assert_eq!(delay, settings.backoff_max, "attempt {attempt}");
        }
    }

    let queue = &backend.queue;
    let job = enqueue(
        queue,
        TYPE_A,
        EnqueueOptions {
            max_attempts: Some(4),
            ..EnqueueOptions::default()
        },
    )
    .await;
    for attempt in 1..=2u32 {
        let (_, lease) = claim_eventually(queue, "w1", &[TYPE_A]).await;
        assert_eq!(lease.attempt, attempt);
        let before = Utc::now();
        let retried = fail(
            queue,
            &lease,
            failure(FailureKind::Retryable, "flaky"),
            FailOptions::default(),
        )
        .await;
        let after = Utc::now();
        assert_eq!(retried.status, JobStatus::Pending);
        assert_eq!(retried.attempts, attempt);
        let exponential = base * 2u32.pow(attempt);
        assert_delay_within(
            retried.run_at,
            before,
            after,
            exponential,
            exponential + base,
            "runAt after a retryable failure",
        );
        let last_error = retried.last_error.expect("lastError");
        assert_eq!(last_error.code, "flaky");
        assert_eq!(last_error.attempt, attempt);
        assert_eq!(last_error.kind, FailureKind::Retryable);
    }
    assert_eq!(get(queue, &job.id).await.attempts, 2);
}

/// `retry_after` replaces the backoff, capped at `backoff_max`.
pub async fn retry_after_overrides_backoff(backend: Backend) {
    let queue = &backend.queue;
    enqueue_default(queue, TYPE_A).await;

    let (_, lease) = claim(queue, "w1", &[TYPE_A]).await;
    let retry_after = Duration::from_millis(300);
    let before = Utc::now();
    let job = fail(
        queue,
        &lease,
        failure(FailureKind::Retryable, "rate_limited"),
        FailOptions {
            retry_after: Some(retry_after),
        },
    )
    .await;
    let after = Utc::now();
    assert_delay_within(
        job.run_at,
        before,
        after,
        retry_after,
        retry_after,
        "runAt with retry_after",
    );

    let (_, lease) = claim_eventually(queue, "w1", &[TYPE_A]).await;
    let before = Utc::now();
    let job = fail(
        queue,
        &lease,
        failure(FailureKind::Retryable, "rate_limited"),
        FailOptions {
            retry_after: Some(Duration::from_secs(3600)),
        },
    )
    .await;
    let after = Utc::now();
    let cap = backend.settings.backoff_max;
    assert_delay_within(
        job.run_at,
        before,
        after,
        cap,
        cap,
        "runAt with retry_after above the cap",
    );
}

/// Checks that fatal and invalid-payload failures end the job at once, whatever attempts remain.
pub async fn non_retryable_failure_fails_at_once(backend: Backend) {
    let queue = &backend.queue;
    for (kind, code) in [
        (FailureKind::Fatal, "not_implemented"),
        (FailureKind::InvalidPayload, "invalid_payload"),
    ] {
        let job = enqueue(
            queue,
            TYPE_A,
            EnqueueOptions {
                max_attempts: Some(5),
                ..EnqueueOptions::default()
            },
        )
        .await;
        let (_, lease) = claim(queue, "w1", &[TYPE_A]).await;
        let failed = fail(queue, &lease, failure(kind, code), FailOptions::default()).await;
        assert_eq!(failed.status, JobStatus::Failed, "{code}");
        assert_eq!(failed.attempts, 1);
        assert!(failed.finished_at.is_some());
        let last_error = failed.last_error.expect("lastError");
        assert_eq!(last_error.kind, kind);
        assert_eq!(last_error.code, code);
        assert_eq!(last_error.message, format!("{code} happened"));
        assert_eq!(last_error.attempt, 1);
        assert_eq!(get(queue, &job.id).await.status, JobStatus::Failed);
        assert!(try_claim(queue, "w1", &[TYPE_A]).await.is_none());
    }
}

/// Checks that a retryable failure of the last attempt fails the job.
pub async fn last_attempt_failure_fails(backend: Backend) {
    let queue = &backend.queue;
    enqueue(
        queue,
        TYPE_A,
        EnqueueOptions {
            max_attempts: Some(2),
            ..EnqueueOptions::default()
        },
    )
    .await;
    let (_, lease) = claim(queue, "w1", &[TYPE_A]).await;
    let retried = fail(
        queue,
        &lease,
        failure(FailureKind::Retryable, "flaky"),
        FailOptions::default(),
    )
    .await;
    assert_eq!(retried.status, JobStatus::Pending);

    let (_, lease) = claim_eventually(queue, "w1", &[TYPE_A]).await;
    assert_eq!(lease.attempt, 2);
    let failed = fail(
        queue,
        &lease,
        failure(FailureKind::Retryable, "flaky"),
        FailOptions::default(),
    )
    .await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.attempts, 2);
    assert_eq!(failed.last_error.map(|error| error.attempt), Some(2));
}

/// Checks that while the job holding a key is pending, running or completed, enqueue returns it.
pub async fn idempotency_key_returns_existing(backend: Backend) {
    let queue = &backend.queue;
    let keyed = || EnqueueOptions {
        idempotency_key: Some("debate-7".to_string()),
        ..EnqueueOptions::default()
    };
    let first = queue
        .enqueue(TYPE_A, json!(1), keyed())
        .await
        .expect("first enqueue");
    assert!(!first.existing);
    assert_eq!(first.job.idempotency_key.as_deref(), Some("debate-7"));

    let again = queue
        .enqueue(TYPE_A, json!(2), keyed())
        .await
        .expect("pending");
    assert!(again.existing);
    assert_eq!(again.job.id, first.job.id);
    assert_eq!(again.job.payload, json!(1));

    let (_, lease) = claim(queue, "w1", &[TYPE_A]).await;
    let running = queue
        .enqueue(TYPE_A, json!(3), keyed())
        .await
        .expect("running");
    assert!(running.existing);
    assert_eq!(running.job.id, first.job.id);

    queue.ack(&lease, Value::Null).await.expect("ack");
    let completed = queue
        .enqueue(TYPE_A, json!(4), keyed())
        .await
        .expect("completed");
    assert!(completed.existing);
    assert_eq!(completed.job.id, first.job.id);
    assert_eq!(completed.job.status, JobStatus::Completed);

    let other = queue
        .enqueue(
            TYPE_A,
            json!(5),
            EnqueueOptions {
                idempotency_key: Some("debate-8".to_string()),
                ..EnqueueOptions::default()
            },
        )
        .await
        .expect("other key");
    assert!(!other.existing);
    assert_ne!(other.job.id, first.job.id);
}

/// Checks that after the job holding a key failed or was cancelled, the key starts a new job.
pub async fn idempotency_key_frees_after_failed_or_cancelled(backend: Backend) {
    let queue = &backend.queue;
    let keyed = || EnqueueOptions {
        idempotency_key: Some("nightly".to_string()),
        max_attempts: Some(1),
        ..EnqueueOptions::default()
    };
    let first = queue
        .enqueue(TYPE_A, json!(1), keyed())
        .await
        .expect("first");
    let (_, lease) = claim(queue, "w1", &[TYPE_A]).await;
    fail(
        queue,
        &lease,
        failure(FailureKind::Fatal, "broken"),
        FailOptions::default(),
    )
    .await;

    let second = queue
        .enqueue(TYPE_A, json!(2), keyed())
        .await
        .expect("after failed");
    assert!(!second.existing);
    assert_ne!(second.job.id, first.job.id);

    queue.cancel(&second.job.id).await.expect("cancel");
    let third = queue
        .enqueue(TYPE_A, json!(3), keyed())
        .await
        .expect("after cancelled");
    assert!(!third.existing);
    assert_ne!(third.job.id, second.job.id);

    let fourth = queue
        .enqueue(TYPE_A, json!(4), keyed())
        .await
        .expect("while pending");
    assert!(fourth.existing);
    assert_eq!(fourth.job.id, third.job.id);
}

/// Checks that many concurrent enqueues with one key create exactly one job.
pub async fn concurrent_idempotent_enqueue_creates_one(backend: Backend) {
    let queue = &backend.queue;
    let mut tasks = Vec::new();
    for index in 0..16 {
        let queue = Arc::clone(queue);
        tasks.push(tokio::spawn(async move {
            queue
                .enqueue(
                    TYPE_A,
                    json!(index),
                    EnqueueOptions {
                        idempotency_key: Some("same-key".to_string()),
                        ..EnqueueOptions::default()
                    },
                )
                .await
                .expect("enqueue")
        }));
    }
    let mut ids = BTreeSet::new();
    let mut created = 0;
    for task in tasks {
        let enqueued = task.await.expect("enqueue task");
        ids.insert(enqueued.job.id);
        created += u32::from(!enqueued.existing);
    }
    assert_eq!(ids.len(), 1, "jobs created: {ids:?}");
    assert_eq!(created, 1);
    let page = queue.list(&JobFilter::default()).await.expect("list");
    assert_eq!(page.jobs.len(), 1);
}

/// Checks that cancelling a pending job ends it at once with a `RunFinished` event; it is never
/// claimed.
pub async fn cancel_pending_job(backend: Backend) {
    let queue = &backend.queue;
    let job = enqueue_default(queue, TYPE_A).await;
    let cancelled = queue.cancel(&job.id).await.expect("cancel");
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(cancelled.finished_at.is_some());
    assert!(try_claim(queue, "w1", &[TYPE_A]).await.is_none());

    let again = queue.cancel(&job.id).await.expect("cancel again");
    assert_eq!(again, cancelled);

    let events = backend.events.read(&job.run_id).expect("read events");
    let finished: Vec<_> = events
        .iter()
        .filter(|event| event.event_type == event_type::RUN_FINISHED)
        .collect();
    assert_eq!(finished.len(), 1, "RunFinished events: {finished:?}");
    assert_eq!(finished[0].data["status"], json!("cancelled"));
    assert_eq!(finished[0].component, "queue");
}

/// Checks that cancelling a running job makes its worker's next heartbeat fail with `LeaseLost`;
/// the queue leaves the run's end to the worker.
pub async fn cancel_running_job(backend: Backend) {
    let queue = &backend.queue;
    let job = enqueue_default(queue, TYPE_A).await;
    let (_, lease) = claim(queue, "w1", &[TYPE_A]).await;
    let cancelled = queue.cancel(&job.id).await.expect("cancel");
    assert_eq!(cancelled.status, JobStatus::Cancelled);

    let heartbeat = queue.heartbeat(&lease).await;
    assert!(
        matches!(
            heartbeat,
            Err(QueueError::LeaseLost {
                status: JobStatus::Cancelled,
                ..
            })
        ),
        "heartbeat after cancel returned {heartbeat:?}"
    );
    assert_lease_lost(queue.ack(&lease, Value::Null).await, "ack after cancel");
    assert_eq!(get(queue, &job.id).await.status, JobStatus::Cancelled);

    tokio::time::sleep(backend.settings.lease).await;
    assert!(try_claim(queue, "w2", &[TYPE_A]).await.is_none());
    assert_eq!(get(queue, &job.id).await.status, JobStatus::Cancelled);
    assert!(
        !event_types(&backend.events, &job.run_id).contains(&event_type::RUN_FINISHED.to_string())
    );
}

/// Checks that a job cancelled while running cannot be retried until its worker learns of the
/// cancel, and that the cancelled attempt's lease cannot touch the new run, even when the same
/// worker claims it as attempt 1 again.
pub async fn cancelled_attempt_cannot_touch_retried_run(backend: Backend) {
    let queue = &backend.queue;
    let job = enqueue_default(queue, TYPE_A).await;
    let (_, old_lease) = claim(queue, "w1", &[TYPE_A]).await;
    queue.cancel(&job.id).await.expect("cancel");

    let early = queue.retry(&job.id).await;
    assert!(
        matches!(early, Err(QueueError::AttemptStopping { .. })),
        "retry while the cancelled attempt still runs returned {early:?}"
    );
    let heartbeat = queue.heartbeat(&old_lease).await;
    assert!(
        matches!(
            heartbeat,
            Err(QueueError::LeaseLost {
                status: JobStatus::Cancelled,
                ..
            })
        ),
        "heartbeat of the cancelled attempt returned {heartbeat:?}"
    );

    let retried = queue
        .retry(&job.id)
        .await
        .expect("retry after the worker stopped");
    assert_ne!(retried.run_id, job.run_id);
    let (claimed, new_lease) = claim(queue, "w1", &[TYPE_A]).await;
    assert_eq!(claimed.id, job.id);
    assert_eq!(new_lease.attempt, old_lease.attempt);

    assert_lease_lost(
        queue.ack(&old_lease, Value::Null).await,
        "ack with the cancelled run's lease",
    );
    assert_lease_lost(
        queue.heartbeat(&old_lease).await,
        "heartbeat with the cancelled run's lease",
    );
    assert_eq!(get(queue, &job.id).await.status, JobStatus::Running);
    queue
        .ack(&new_lease, Value::Null)
        .await
        .expect("ack of the new run");
}

/// Checks that a job cancelled while running can be retried once its lease has run out, when its
/// worker died without learning of the cancel.
pub async fn cancelled_attempt_frees_retry_after_lease(backend: Backend) {
    let queue = &backend.queue;
    let job = enqueue_default(queue, TYPE_A).await;
    claim(queue, "w1", &[TYPE_A]).await;
    queue.cancel(&job.id).await.expect("cancel");
    assert!(matches!(
        queue.retry(&job.id).await,
        Err(QueueError::AttemptStopping { .. })
    ));

    tokio::time::sleep(backend.settings.lease + Duration::from_millis(50)).await;
    let retried = queue
        .retry(&job.id)
        .await
        .expect("retry after the lease ran out");
    assert_eq!(retried.status, JobStatus::Pending);
}

/// Checks that idempotency keys are scoped by job type: a job of another type with the same key
/// neither returns nor blocks the first type's job.
pub async fn idempotency_key_is_scoped_by_type(backend: Backend) {
    let queue = &backend.queue;
    let keyed = |key: &str| EnqueueOptions {
        idempotency_key: Some(key.to_string()),
        ..EnqueueOptions::default()
    };
    let other = queue
        .enqueue(TYPE_B, json!("other"), keyed("RUN:1"))
        .await
        .expect("enqueue of the other type");
    let first = queue
        .enqueue(TYPE_A, json!("first"), keyed("RUN:1"))
        .await
        .expect("enqueue");
    assert!(!first.existing, "a job of another type took the key");
    assert_ne!(first.job.id, other.job.id);

    let again = queue
        .enqueue(TYPE_A, json!("again"), keyed("RUN:1"))
        .await
        .expect("repeat");
    assert!(again.existing);
    assert_eq!(again.job.id, first.job.id);
}

/// Checks that completed and failed jobs cannot be cancelled.
pub async fn cancel_terminal_job(backend: Backend) {
    let queue = &backend.queue;
    let done = enqueue_default(queue, TYPE_A).await;
    let (_, lease) = claim(queue, "w1", &[TYPE_A]).await;
    queue.ack(&lease, Value::Null).await.expect("ack");

    let broken = enqueue_default(queue, TYPE_A).await;
    let (_, lease) = claim(queue, "w1", &[TYPE_A]).await;
    fail(
        queue,
        &lease,
        failure(FailureKind::Fatal, "broken"),
        FailOptions::default(),
    )
    .await;

    for (job, status) in [(done, JobStatus::Completed), (broken, JobStatus::Failed)] {
        let result = queue.cancel(&job.id).await;
        assert!(
            matches!(
                result,
                Err(QueueError::InvalidState {
                    action: "cancel",
                    ..
                })
            ),
            "cancel of a {status} job returned {result:?}"
        );
        assert_eq!(get(queue, &job.id).await.status, status);
    }
}

/// Checks that failed and cancelled jobs go back to pending as a new run with attempts reset; other
/// states cannot be retried.
pub async fn retry_failed_and_cancelled(backend: Backend) {
    let queue = &backend.queue;
    let failed = enqueue_default(queue, TYPE_A).await;
    let (_, lease) = claim(queue, "w1", &[TYPE_A]).await;
    fail(
        queue,
        &lease,
        failure(FailureKind::Fatal, "broken"),
        FailOptions::default(),
    )
    .await;
    let cancelled = enqueue_default(queue, TYPE_A).await;
    queue.cancel(&cancelled.id).await.expect("cancel");

    for job in [failed, cancelled] {
        let retried = queue.retry(&job.id).await.expect("retry");
        assert_eq!(retried.status, JobStatus::Pending);
        assert_eq!(retried.attempts, 0);
        assert_ne!(retried.run_id, job.run_id);
        assert!(retried.finished_at.is_none());
        assert!(
            retried.last_error.is_none(),
            "retry kept the old run's error"
        );
        assert!(retried.run_at <= Utc::now());
        assert_eq!(
            event_types(&backend.events, &retried.run_id),
            vec![event_type::RUN_QUEUED.to_string()]
        );

        let (claimed, lease) = claim(queue, "w1", &[TYPE_A]).await;
        assert_eq!(claimed.id, job.id);
        assert_eq!(lease.attempt, 1);
        let done = queue.ack(&lease, Value::Null).await.expect("ack");
        let result = queue.retry(&done.id).await;
        assert!(
            matches!(
                result,
                Err(QueueError::InvalidState {
                    action: "retry",
                    ..
                })
            ),
            "retry of a completed job returned {result:?}"
        );
    }

    let pending = enqueue_default(queue, TYPE_A).await;
    let result = queue.retry(&pending.id).await;
    assert!(
        matches!(
            result,
            Err(QueueError::InvalidState {
                action: "retry",
                ..
            })
        ),
        "retry of a pending job returned {result:?}"
    );
}

/// Checks that a released attempt goes back to pending, due at once, and is not counted.
pub async fn release_does_not_count_attempt(backend: Backend) {
    let queue = &backend.queue;
    let job = enqueue_default(queue, TYPE_A).await;
    let (_, lease) = claim(queue, "w1", &[TYPE_A]).await;
    let released = queue
        .release(&lease, "worker shutting down")
        .await
        .expect("release");
    assert_eq!(released.status, JobStatus::Pending);
    assert_eq!(released.attempts, 0);
    assert!(released.locked_by.is_none());
    assert!(released.run_at <= Utc::now());
    assert_lease_lost(queue.ack(&lease, Value::Null).await, "ack after release");

    let (claimed, lease) = claim(queue, "w2", &[TYPE_A]).await;
    assert_eq!(claimed.id, job.id);
    assert_eq!(lease.attempt, 1);
}

/// `list` returns newest first, filters by state and type, and pages with a cursor.
pub async fn list_filters_and_pages(backend: Backend) {
    let queue = &backend.queue;
    let mut a_jobs = Vec::new();
    for _ in 0..5 {
        a_jobs.push(enqueue_default(queue, TYPE_A).await.id);
    }
    let mut b_jobs = Vec::new();
    for _ in 0..3 {
        b_jobs.push(enqueue_default(queue, TYPE_B).await.id);
    }
    let mut completed = Vec::new();
    for _ in 0..2 {
        let (job, lease) = claim(queue, "w1", &[TYPE_A]).await;
        queue.ack(&lease, Value::Null).await.expect("ack");
        completed.push(job.id);
    }

    let mut newest_first: Vec<String> = a_jobs.iter().chain(&b_jobs).cloned().collect();
    newest_first.reverse();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = queue
            .list(&JobFilter {
                limit: 3,
                cursor: cursor.clone(),
                ..JobFilter::default()
            })
            .await
            .expect("list page");
        assert!(page.jobs.len() <= 3);
        seen.extend(page.jobs.into_iter().map(|job| job.id));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, newest_first);

    let b_page = queue
        .list(&JobFilter {
            job_type: Some(TYPE_B.to_string()),
            ..JobFilter::default()
        })
        .await
        .expect("list by type");
    let mut expected_b = b_jobs.clone();
    expected_b.reverse();
    assert_eq!(
        b_page
            .jobs
            .iter()
            .map(|job| job.id.clone())
            .collect::<Vec<_>>(),
        expected_b
    );
    assert!(b_page.next_cursor.is_none());

    let done_page = queue
        .list(&JobFilter {
            status: Some(JobStatus::Completed),
            ..JobFilter::default()
        })
        .await
        .expect("list by status");
    let mut expected_done = completed.clone();
    expected_done.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(
        done_page
            .jobs
            .iter()
            .map(|job| job.id.clone())
            .collect::<Vec<_>>(),
        expected_done
    );

    let pending_a = queue
        .list(&JobFilter {
            status: Some(JobStatus::Pending),
            job_type: Some(TYPE_A.to_string()),
            limit: 2,
            cursor: None,
        })
        .await
        .expect("list by status and type");
    assert_eq!(pending_a.jobs.len(), 2);
    assert!(
        pending_a
            .jobs
            .iter()
            .all(|job| job.status == JobStatus::Pending && job.job_type == TYPE_A)
    );
    assert!(
        pending_a.next_cursor.is_some(),
        "a third pending TEST_A job exists"
    );
}

/// `prune` deletes only finished jobs older than the cutoff.
pub async fn prune_deletes_old_finished_jobs(backend: Backend) {
    let queue = &backend.queue;
    let completed = enqueue_default(queue, TYPE_A).await;
    let (_, lease) = claim(queue, "w1", &[TYPE_A]).await;
    queue.ack(&lease, Value::Null).await.expect("ack");
    let failed = enqueue_default(queue, TYPE_A).await;
    let (_, lease) = claim(queue, "w1", &[TYPE_A]).await;
    fail(
        queue,
        &lease,
        failure(FailureKind::Fatal, "broken"),
        FailOptions::default(),
    )
    .await;
    let cancelled = enqueue_default(queue, TYPE_A).await;
    queue.cancel(&cancelled.id).await.expect("cancel");
    let pending = enqueue_default(queue, TYPE_B).await;
    enqueue_default(queue, TYPE_A).await;
    let (running, _) = claim(queue, "w1", &[TYPE_A]).await;

    assert_eq!(
        queue
            .prune(Duration::from_secs(3600))
            .await
            .expect("prune with 1 h"),
        0
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        queue.prune(Duration::from_millis(1)).await.expect("prune"),
        3
    );

    for job in [&completed, &failed, &cancelled] {
        assert!(
            queue.get(&job.id).await.expect("get").is_none(),
            "{} survived",
            job.id
        );
    }
    assert_eq!(get(queue, &pending.id).await.status, JobStatus::Pending);
    assert_eq!(get(queue, &running.id).await.status, JobStatus::Running);
}

/// `counts` reports jobs per type and state.
pub async fn counts_by_type_and_status(backend: Backend) {
    let queue = &backend.queue;
    for _ in 0..3 {
        enqueue_default(queue, TYPE_A).await;
    }
    enqueue_default(queue, TYPE_B).await;
    let (_, lease) = claim(queue, "w1", &[TYPE_A]).await;
    queue.ack(&lease, Value::Null).await.expect("ack");
    claim(queue, "w1", &[TYPE_A]).await;

    let counts: HashMap<(String, JobStatus), u64> = queue
        .counts()
        .await
        .expect("counts")
        .into_iter()
        .map(|count| ((count.job_type, count.status), count.count))
        .collect();
    let count = |job_type: &str, status| {
        counts
            .get(&(job_type.to_string(), status))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(count(TYPE_A, JobStatus::Pending), 1);
    assert_eq!(count(TYPE_A, JobStatus::Running), 1);
    assert_eq!(count(TYPE_A, JobStatus::Completed), 1);
    assert_eq!(count(TYPE_B, JobStatus::Pending), 1);
    assert_eq!(counts.values().sum::<u64>(), 4);
}

/// Checks that a payload at the size limit is accepted and one byte more is rejected.
pub async fn payload_size_limit(backend: Backend) {
    let queue = &backend.queue;
    let limit = backend.settings.max_payload_bytes;
    // A JSON string serializes as its characters plus two quotes.
    let at_limit = Value::String("x".repeat(limit - 2));
    let above_limit = Value::String("x".repeat(limit - 1));

    let accepted = queue
        .enqueue(TYPE_A, at_limit, EnqueueOptions::default())
        .await;
    assert!(
        accepted.is_ok(),
        "payload at the limit returned {accepted:?}"
    );
    let rejected = queue
        .enqueue(TYPE_A, above_limit, EnqueueOptions::default())
        .await;
    let Err(QueueError::PayloadTooLarge {
        size,
        limit: reported_limit,
    }) = rejected
    else {
        panic!("payload above the limit returned {rejected:?}, expected PayloadTooLarge");
    };
    assert_eq!(size, limit + 1);
    assert_eq!(reported_limit, limit);
}

/// Checks that invalid job types, ids, options and leases are rejected before anything is stored.
pub async fn invalid_input_is_rejected(backend: Backend) {
    let queue = &backend.queue;
    for job_type in ["", "../escape", "a/b", ".hidden", "has space"] {
        assert_invalid(
            queue
                .enqueue(job_type, json!(1), EnqueueOptions::default())
                .await,
            &format!("job type {job_type:?}"),
        );
    }
    for priority in [PRIORITY_MAX + 1, -PRIORITY_MAX - 1] {
        let opts = EnqueueOptions {
            priority,
            ..EnqueueOptions::default()
        };
        assert_invalid(
            queue.enqueue(TYPE_A, json!(1), opts).await,
            &format!("priority {priority}"),
        );
    }
    for max_attempts in [0, MAX_ATTEMPTS_LIMIT + 1] {
        let opts = EnqueueOptions {
            max_attempts: Some(max_attempts),
            ..EnqueueOptions::default()
        };
        assert_invalid(
            queue.enqueue(TYPE_A, json!(1), opts).await,
            &format!("max attempts {max_attempts}"),
        );
    }
    for key in [String::new(), "k".repeat(257)] {
        let opts = EnqueueOptions {
            idempotency_key: Some(key.clone()),
            ..EnqueueOptions::default()
        };
        assert_invalid(
            queue.enqueue(TYPE_A, json!(1), opts).await,
            &format!("key of {} characters", key.len()),
        );
    }
    let longest_key = EnqueueOptions {
        idempotency_key: Some("k".repeat(256)),
        ..EnqueueOptions::default()
    };
    assert!(queue.enqueue(TYPE_A, json!(1), longest_key).await.is_ok());

    for job_id in ["../../etc/passwd", "a/b", "", "..", &"x".repeat(65)] {
        assert_invalid(queue.get(job_id).await, &format!("get {job_id:?}"));
        assert_invalid(queue.cancel(job_id).await, &format!("cancel {job_id:?}"));
        assert_invalid(queue.retry(job_id).await, &format!("retry {job_id:?}"));
        let lease = Lease {
            job_id: job_id.to_string(),
            run_id: crate::job::new_id(),
            attempt: 1,
            worker_id: "w1".to_string(),
        };
        assert_invalid(
            queue.ack(&lease, Value::Null).await,
            &format!("ack of {job_id:?}"),
        );
        assert_invalid(
            queue.heartbeat(&lease).await,
            &format!("heartbeat of {job_id:?}"),
        );
    }
    assert_invalid(
        queue.dequeue("w1", &types(&["../x"])).await,
        "dequeue of type ../x",
    );
    assert_invalid(
        queue.dequeue("", &types(&[TYPE_A])).await,
        "dequeue by an empty worker id",
    );
    for limit in [0, 501] {
        let filter = JobFilter {
            limit,
            ..JobFilter::default()
        };
        assert_invalid(queue.list(&filter).await, &format!("list limit {limit}"));
    }
    let filter = JobFilter {
        cursor: Some("../x".to_string()),
        ..JobFilter::default()
    };
    assert_invalid(queue.list(&filter).await, "list cursor ../x");

    let page = queue.list(&JobFilter::default()).await.expect("list");
    assert_eq!(page.jobs.len(), 1, "only the valid enqueue stored a job");
}

/// Checks that a waiting worker wakes soon after a job is enqueued.
pub async fn wait_for_work_wakes_on_enqueue(backend: Backend) {
    let queue = &backend.queue;
    let waiter = {
        let queue = Arc::clone(queue);
        tokio::spawn(async move {
            // A backend may wake early; the worker then finds nothing and waits again.
            loop {
                queue.wait_for_work(Duration::from_secs(60)).await;
                if let Some(claimed) = try_claim(&queue, "w1", &[TYPE_A]).await {
                    return claimed;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let job = enqueue_default(queue, TYPE_A).await;

    let claimed = tokio::time::timeout(PATIENCE, waiter)
        .await
        .unwrap_or_else(|_| panic!("the waiter did not wake within {PATIENCE:?} of an enqueue"))
        .expect("waiter task");
    assert_eq!(claimed.0.id, job.id);
}

/// Checks that a waiting worker wakes when a delayed job becomes due, without any other change.
pub async fn wait_for_work_wakes_when_job_due(backend: Backend) {
    let queue = &backend.queue;
    let run_at = Utc::now() + chrono::Duration::milliseconds(500);
    let job = enqueue(
        queue,
        TYPE_A,
        EnqueueOptions {
            run_at: Some(run_at),
            ..EnqueueOptions::default()
        },
    )
    .await;

    let claimed = tokio::time::timeout(PATIENCE, async {
        loop {
            queue.wait_for_work(Duration::from_secs(60)).await;
            if let Some(claimed) = try_claim(queue, "w1", &[TYPE_A]).await {
                return claimed;
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!("the waiter did not wake within {PATIENCE:?} for a job due at {run_at}")
    });
    assert_eq!(claimed.0.id, job.id);
    assert!(Utc::now() >= run_at);
}
