//! The queue shared by separate OS processes: `jobhost queue` CLI processes and `jobhost worker`
//! processes running the `testkit` plugin, on one temporary data directory, with workers killed
//! by SIGKILL at chosen moments.
//!
//! The test process reads the outcome through its own `FileQueue` and `EventStore` on the same
//! directory.

use chrono::{DateTime, Utc};
use jobhost::events::{Event, EventStore, event_type};
use jobhost::job::{Job, JobStatus};
use jobhost::queue::{EnqueueOptions, FileQueue, Queue, QueueError, QueueSettings};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a worker may take to load its plugins and start claiming.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a test waits for an outcome that needs a few leases and job runs.
const OUTCOME_TIMEOUT: Duration = Duration::from_secs(120);

/// A data directory with the testkit plugin in its own plugins directory.
struct Setup {
    _dir: tempfile::TempDir,
    data_dir: PathBuf,
    plugins_dir: PathBuf,
    queue: FileQueue,
    events: EventStore,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let data_dir = dir.path().join("data");
        let plugins_dir = dir.path().join("plugins");
        std::fs::create_dir_all(&data_dir).expect("create the data directory");
        std::fs::create_dir_all(&plugins_dir).expect("create the plugins directory");
        std::fs::copy(
            env!("JOBHOST_TESTKIT_WASM"),
            plugins_dir.join("testkit.wasm"),
        )
        .expect("copy the testkit plugin");
        let events = EventStore::open(&data_dir).expect("open the event store");
        let queue = FileQueue::open(&data_dir, QueueSettings::default(), events.clone())
            .expect("open the queue");
        Setup {
            _dir: dir,
            data_dir,
            plugins_dir,
            queue,
            events,
        }
    }

    /// Builds a `jobhost` command on this data directory, with no language-model endpoint
    /// configured.
    fn jobhost(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_jobhost"));
        command
            .env("DATA_DIR", &self.data_dir)
            .env("RUST_LOG", "info")
            .env_remove("LLM_BASE_URL")
            .env_remove("LLM_API_KEY")
            .env_remove("PLUGINS_DIR")
            .env_remove("WORKER_ID");
        command
    }

    /// Starts a worker with concurrency 1, a 100 ms poll interval and a lease of `lease_secs`,
    /// and waits until it logs `worker started`.
    fn start_worker(&self, worker_id: &str, lease_secs: u64) -> Worker {
        let child = self
            .jobhost()
            .args(["worker", "--plugins-dir"])
            .arg(&self.plugins_dir)
            .args(["--worker-id", worker_id, "--concurrency", "1"])
            .args(["--poll-ms", "100", "--shutdown-grace-secs", "1"])
            .args(["--lease-secs", &lease_secs.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start jobhost worker");
        Worker::watch(worker_id, child)
    }

    async fn enqueue(&self, job_type: &str, payload: Value, opts: EnqueueOptions) -> Job {
        self.queue
            .enqueue(job_type, payload, opts)
            .await
            .expect("enqueue")
            .job
    }

    async fn job(&self, job_id: &str) -> Job {
        self.queue
            .get(job_id)
            .await
            .expect("get")
            .expect("job exists")
    }

    fn events_of(&self, job: &Job, event_type: &str) -> Vec<Event> {
        self.events
            .read(&job.run_id)
            .expect("read events")
            .into_iter()
            .filter(|event| event.event_type == event_type)
            .collect()
    }

    /// Returns the run's events of `event_type` once there are at least `count`, or all of them
    /// after `OUTCOME_TIMEOUT`. Workers and the queue append events just after the job state
    /// change they describe, so a reader that saw the state may have to wait for the event.
    async fn wait_for_events(&self, job: &Job, event_type: &str, count: usize) -> Vec<Event> {
        let deadline = Instant::now() + OUTCOME_TIMEOUT;
        loop {
            let events = self.events_of(job, event_type);
            if events.len() >= count || Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the job until `done` returns true, panicking with the workers' logs after
    /// `OUTCOME_TIMEOUT`.
    async fn wait_for(
        &self,
        job_id: &str,
        expected_state: &str,
        workers: &[&Worker],
        done: impl Fn(&Job) -> bool,
    ) -> Job {
        let deadline = Instant::now() + OUTCOME_TIMEOUT;
        loop {
            let job = self.job(job_id).await;
            if done(&job) {
                return job;
            }
            if Instant::now() > deadline {
                panic!(
                    "job {job_id} never became {expected_state}; last state {job:#?}\n{}",
                    all_logs(workers)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A running `jobhost worker` process whose stderr is collected. Killed with SIGKILL when
/// dropped.
struct Worker {
    id: String,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    fn watch(worker_id: &str, mut child: Child) -> Worker {
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("worker started") {
                        let _ = started_tx.send(());
                    }
                    log.lock().expect("log lock").push(line);
                }
            });
        }
        let mut worker = Worker {
            id: worker_id.to_string(),
            child,
            log,
        };
        if started_rx.recv_timeout(STARTUP_TIMEOUT).is_err() {
            let status = worker.child.try_wait().ok().flatten();
            panic!(
                "worker {worker_id} did not log `worker started` within {STARTUP_TIMEOUT:?} (exit status {status:?}); its log:\n{}",
                worker.logs()
            );
        }
        worker
    }

    fn logs(&self) -> String {
        let lines = self.log.lock().expect("log lock");
        format!("--- {} ---\n{}", self.id, lines.join("\n"))
    }

    /// Kills the process with SIGKILL, so it gets no chance to release its jobs.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn all_logs(workers: &[&Worker]) -> String {
    let logs: Vec<String> = workers.iter().map(|worker| worker.logs()).collect();
    format!("worker logs:\n{}", logs.join("\n"))
}

fn sleep_payload(ms: u64) -> Value {
    json!({ "ms": ms, "heartbeat": true })
}

fn max_attempts(attempts: u32) -> EnqueueOptions {
    EnqueueOptions {
        max_attempts: Some(attempts),
        ..EnqueueOptions::default()
    }
}

#[tokio::test]
async fn cli_enqueue_same_key_creates_one() {
    let setup = Setup::new();
    let children: Vec<Child> = (0..8)
        .map(|index| {
            setup
                .jobhost()
                .args(["queue", "enqueue", "--type", "TEST_ECHO"])
                .args(["--payload", &json!({ "process": index }).to_string()])
                .args(["--idempotency-key", "nightly-report"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start jobhost queue enqueue")
        })
        .collect();

    let mut job_ids = BTreeSet::new();
    let mut created = 0;
    for child in children {
        let output = child
            .wait_with_output()
            .expect("wait for jobhost queue enqueue");
        assert!(
            output.status.success(),
            "jobhost queue enqueue failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let printed: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
        job_ids.insert(printed["job"]["id"].as_str().expect("job id").to_string());
        if printed["existing"] == json!(false) {
            created += 1;
        }
    }
    assert_eq!(job_ids.len(), 1, "jobs created: {job_ids:?}");
    assert_eq!(created, 1);
    let counts = setup.queue.counts().await.expect("counts");
    assert_eq!(counts.iter().map(|count| count.count).sum::<u64>(), 1);
}

#[tokio::test]
async fn workers_run_each_job_once() {
    let setup = Setup::new();
    let workers = [
        setup.start_worker("worker-a", 30),
        setup.start_worker("worker-b", 30),
        setup.start_worker("worker-c", 30),
    ];

    let mut jobs = Vec::new();
    for index in 0..12u64 {
        let job = if index % 2 == 0 {
            setup
                .enqueue(
                    "TEST_ECHO",
                    json!({ "index": index }),
                    EnqueueOptions::default(),
                )
                .await
        } else {
            setup
                .enqueue("TEST_SLEEP", sleep_payload(200), EnqueueOptions::default())
                .await
        };
        jobs.push(job);
    }

    let worker_refs: Vec<&Worker> = workers.iter().collect();
    for job in &jobs {
        let done = setup
            .wait_for(&job.id, "completed", &worker_refs, |job| {
                job.status == JobStatus::Completed
            })
            .await;
        assert_eq!(done.attempts, 1, "job {}", job.id);
        assert_eq!(
            setup
                .wait_for_events(job, event_type::RUN_STARTED, 1)
                .await
                .len(),
            1,
            "job {}",
            job.id
        );
        if job.job_type == "TEST_ECHO" {
            assert_eq!(done.result, Some(job.payload.clone()));
        }
    }
}

#[tokio::test]
async fn killed_worker_job_is_recovered_by_another() {
    let setup = Setup::new();
    let mut first = setup.start_worker("doomed-worker", 2);
    let job = setup
        .enqueue("TEST_SLEEP", sleep_payload(3000), EnqueueOptions::default())
        .await;
    let running = setup
        .wait_for(&job.id, "running on doomed-worker", &[&first], |job| {
            job.status == JobStatus::Running
                && job.locked_by.as_deref() == Some("doomed-worker")
                && setup.events_of(job, event_type::RUN_STARTED).len() == 1
        })
        .await;
    let stale_lease = running.lease().expect("lease of the running attempt");
    first.kill();

    let second = setup.start_worker("rescue-worker", 2);
    let done = setup
        .wait_for(&job.id, "completed", &[&first, &second], |job| {
            job.status.is_terminal()
        })
        .await;
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.attempts, 2);
    assert_eq!(done.result, Some(json!({ "sleptMs": 3000 })));
    let lost = done.last_error.expect("lastError of the killed attempt");
    assert_eq!(lost.code, "worker_lost");
    assert_eq!(lost.attempt, 1);
    assert_eq!(
        setup
            .wait_for_events(&job, event_type::RUN_STARTED, 2)
            .await
            .len(),
        2
    );

    let stale_ack = setup.queue.ack(&stale_lease, json!("late")).await;
    assert!(
        matches!(stale_ack, Err(QueueError::LeaseLost { .. })),
        "ack with the dead attempt's lease returned {stale_ack:?}"
    );
    assert_eq!(
        setup.job(&job.id).await.result,
        Some(json!({ "sleptMs": 3000 }))
    );
}

#[tokio::test]
async fn crash_loop_job_fails_after_max_attempts() {
    let setup = Setup::new();
    let crasher = setup
        .enqueue("TEST_SLEEP", sleep_payload(600_000), max_attempts(3))
        .await;
    let mut bystander = None;
    let mut killed = Vec::new();

    for attempt in 1..=3u32 {
        let worker_id = format!("crash-{attempt}");
        let mut worker = setup.start_worker(&worker_id, 1);
        setup
            .wait_for(
                &crasher.id,
                &format!("running attempt {attempt}"),
                &[&worker],
                |job| {
                    // Killed only after the worker recorded the attempt's start.
                    job.status == JobStatus::Running
                        && job.attempts == attempt
                        && setup.events_of(job, event_type::RUN_STARTED).len() == attempt as usize
                },
            )
            .await;
        worker.kill();
        killed.push(worker);

        if attempt == 2 {
            bystander = Some(
                setup
                    .enqueue(
                        "TEST_ECHO",
                        json!({ "bystander": true }),
                        EnqueueOptions::default(),
                    )
                    .await,
            );
        }
    }

    let fourth = setup.start_worker("crash-4", 1);
    let failed = setup
        .wait_for(&crasher.id, "failed", &[&fourth], |job| {
            job.status.is_terminal()
        })
        .await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.attempts, 3);
    let last_error = failed.last_error.expect("lastError");
    assert_eq!(last_error.code, "worker_lost");
    assert_eq!(last_error.attempt, 3);
    assert!(
        last_error.message.contains("crash-3"),
        "{}",
        last_error.message
    );
    assert_eq!(setup.events_of(&crasher, event_type::RUN_STARTED).len(), 3);
    let finished = setup
        .wait_for_events(&crasher, event_type::RUN_FINISHED, 1)
        .await;
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].data["status"], json!("failed"));

    let bystander = bystander.expect("bystander job enqueued");
    let bystander_done = setup
        .wait_for(&bystander.id, "completed", &[&fourth], |job| {
            job.status == JobStatus::Completed
        })
        .await;
    assert_eq!(bystander_done.attempts, 1);

    // The fourth worker keeps running and never starts the failed job again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(setup.events_of(&crasher, event_type::RUN_STARTED).len(), 3);
    assert_eq!(setup.job(&crasher.id).await.status, JobStatus::Failed);
}

#[tokio::test]
async fn delayed_job_is_not_claimed_before_run_at() {
    let setup = Setup::new();
    let lease_secs = 2;
    let workers = [
        setup.start_worker("early-a", lease_secs),
        setup.start_worker("early-b", lease_secs),
    ];
    let run_at: DateTime<Utc> = Utc::now() + Duration::from_secs(2 * lease_secs);
    let job = setup
        .enqueue(
            "TEST_ECHO",
            json!({ "delayed": true }),
            EnqueueOptions {
                run_at: Some(run_at),
                ..EnqueueOptions::default()
            },
        )
        .await;

    let worker_refs: Vec<&Worker> = workers.iter().collect();
    let done = setup
        .wait_for(&job.id, "completed", &worker_refs, |job| {
            job.status.is_terminal()
        })
        .await;
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.attempts, 1);
    assert!(
        done.started_at.is_some_and(|started| started >= run_at),
        "started at {:?}, before runAt {run_at}",
        done.started_at
    );
    let started = setup
        .wait_for_events(&job, event_type::RUN_STARTED, 1)
        .await;
    assert_eq!(started.len(), 1);
    assert!(
        started[0].ts >= run_at,
        "RunStarted at {}, before runAt {run_at}",
        started[0].ts
    );
}

#[tokio::test]
async fn heartbeating_job_is_never_run_twice() {
    let setup = Setup::new();
    let lease_secs = 2;
    let workers = [
        setup.start_worker("steady-a", lease_secs),
        setup.start_worker("steady-b", lease_secs),
    ];
    let job = setup
        .enqueue(
            "TEST_SLEEP",
            sleep_payload(3 * lease_secs * 1000),
            EnqueueOptions::default(),
        )
        .await;

    let worker_refs: Vec<&Worker> = workers.iter().collect();
    let done = setup
        .wait_for(&job.id, "completed", &worker_refs, |job| {
            job.status.is_terminal()
        })
        .await;
    let logs = all_logs(&worker_refs);
    assert_eq!(done.status, JobStatus::Completed, "{logs}");
    assert_eq!(done.attempts, 1, "{logs}");
    assert!(
        done.last_error.is_none(),
        "lastError: {:?}\n{logs}",
        done.last_error
    );
    assert_eq!(
        setup
            .wait_for_events(&job, event_type::RUN_STARTED, 1)
            .await
            .len(),
        1,
        "{logs}"
    );
    let finished = setup
        .wait_for_events(&job, event_type::RUN_FINISHED, 1)
        .await;
    assert_eq!(finished.len(), 1, "{logs}");
    assert_eq!(finished[0].data["status"], json!("completed"));
}
