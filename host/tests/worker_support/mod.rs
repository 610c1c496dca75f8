//! Shared set-up of the runtime and worker tests. It provides a temporary data directory with a
//! file queue, a plugin directory with copies of the testkit plugin, a worker running in-process,
//! and local HTTP servers on 127.0.0.1 in place of a model server.
//!
//! Waits poll with a generous upper bound, so a broken feature fails the test instead of
//! hanging it. They assert no speed.

#![allow(dead_code)]

pub mod model_server;

use jobhost::events::{Event, EventStore, event_type};
use jobhost::job::{Job, JobStatus};
use jobhost::queue::{EnqueueOptions, FileQueue, Queue, QueueSettings};
use jobhost::worker::{self, WorkerRecord, WorkerSettings};
use serde_json::Value;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Upper bound of every wait; reached only when the feature under test is broken.
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// Path of the testkit component the build script installs.
pub fn testkit_wasm() -> PathBuf {
    PathBuf::from(env!("JOBHOST_TESTKIT_WASM"))
}

/// Copies `wasm` into `dir` as `<name>.wasm` the recommended way: write a dot-file, then rename,
/// so the worker never reads a partial file. Writes `<name>.toml` first when `manifest` is set.
pub fn install_plugin(dir: &Path, name: &str, wasm: &[u8], manifest: Option<&str>) {
    if let Some(manifest) = manifest {
        let temp = dir.join(format!(".{name}.toml.tmp"));
        std::fs::write(&temp, manifest).expect("write manifest");
        std::fs::rename(&temp, dir.join(format!("{name}.toml"))).expect("rename manifest");
    }
    let temp = dir.join(format!(".{name}.wasm.tmp"));
    std::fs::write(&temp, wasm).expect("write plugin");
    std::fs::rename(&temp, dir.join(format!("{name}.wasm"))).expect("rename plugin");
}

/// Reads the testkit component.
pub fn testkit_bytes() -> Vec<u8> {
    std::fs::read(testkit_wasm()).expect("read testkit.wasm; the build script installs it")
}

/// Appends a custom section (id 0, size, name length, name, payload) to a component, which
/// changes its bytes and hash but not its behavior.
pub fn with_custom_section(wasm: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    leb128(&mut body, name.len() as u64);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut bytes = wasm.to_vec();
    bytes.push(0);
    leb128(&mut bytes, body.len() as u64);
    bytes.extend_from_slice(&body);
    bytes
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A data directory, a plugin directory and a file queue.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub plugins_dir: PathBuf,
    pub events: EventStore,
    pub queue: Arc<FileQueue>,
    pub queue_settings: QueueSettings,
}

impl Harness {
    /// Creates the directories and opens the queue with a short lease (3 s), so lease
    /// heartbeats run often, and a short retry backoff.
    pub fn new() -> Self {
        let queue_settings = QueueSettings {
            lease: Duration::from_secs(3),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
            ..QueueSettings::default()
        };
        Self::with_queue_settings(queue_settings)
    }

    pub fn with_queue_settings(queue_settings: QueueSettings) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let plugins_dir = dir.path().join("plugins");
        std::fs::create_dir_all(&data_dir).expect("data dir");
        std::fs::create_dir_all(&plugins_dir).expect("plugins dir");
        let events = EventStore::open(&data_dir).expect("event store");
        let queue = FileQueue::open(&data_dir, queue_settings.clone(), events.clone())
            .expect("open file queue");
        Harness {
            dir,
            data_dir,
            plugins_dir,
            events,
            queue: Arc::new(queue),
            queue_settings,
        }
    }

    /// Installs the testkit plugin as `testkit.wasm` with `manifest` as `testkit.toml`.
    pub fn install_testkit(&self, manifest: &str) {
        install_plugin(
            &self.plugins_dir,
            "testkit",
            &testkit_bytes(),
            Some(manifest),
        );
    }

    /// Worker settings for this harness: short intervals so tests finish quickly.
    pub fn settings(&self, worker_id: &str) -> WorkerSettings {
        WorkerSettings {
            data_dir: self.data_dir.clone(),
            plugin_dirs: vec![self.plugins_dir.clone()],
            worker_id: worker_id.to_string(),
            concurrency: 4,
            poll_interval: Duration::from_millis(100),
            shutdown_grace: Duration::from_secs(5),
            heartbeat_interval: Duration::from_millis(200),
            queue: self.queue_settings.clone(),
            plugin_settle: Duration::from_millis(200),
            plugin_rescan_interval: Duration::from_millis(300),
            ..WorkerSettings::default()
        }
    }

    /// Starts `worker::run` in-process and waits until its record lists `job_types`.
    pub async fn start_worker(&self, settings: WorkerSettings) -> RunningWorker {
        let shutdown = CancellationToken::new();
        let worker_id = settings.worker_id.clone();
        let queue: Arc<dyn Queue> = self.queue.clone();
        let handle = tokio::spawn(worker::run(
            settings,
            queue,
            self.events.clone(),
            shutdown.clone(),
        ));
        RunningWorker {
            worker_id,
            data_dir: self.data_dir.clone(),
            shutdown,
            handle: Some(handle),
        }
    }

    pub async fn enqueue(&self, job_type: &str, payload: Value) -> Job {
        self.enqueue_with(job_type, payload, EnqueueOptions::default())
            .await
    }

    pub async fn enqueue_with(&self, job_type: &str, payload: Value, opts: EnqueueOptions) -> Job {
        self.queue
            .enqueue(job_type, payload, opts)
            .await
            .expect("enqueue")
            .job
    }

    pub async fn job(&self, job_id: &str) -> Job {
        self.queue
            .get(job_id)
            .await
            .expect("get job")
            .expect("job exists")
    }

    /// Waits until the job reaches a terminal state and its run's last `RunFinished` event
    /// reports that state (the worker records the event just after the queue call), and returns
    /// the job.
    pub async fn wait_finished(&self, job_id: &str) -> Job {
        let queue = Arc::clone(&self.queue);
        let events = self.events.clone();
        let id = job_id.to_string();
        wait_until(&format!("job {job_id} to finish"), || {
            let queue = Arc::clone(&queue);
            let events = events.clone();
            let id = id.clone();
            async move {
                let job = queue.get(&id).await.ok().flatten()?;
                if !job.status.is_terminal() {
                    return None;
                }
                let finished = events
                    .read(&job.run_id)
                    .ok()?
                    .into_iter()
                    .rfind(|event| event.event_type == event_type::RUN_FINISHED)?;
                (finished.data["status"] == job.status.as_str()).then_some(job)
            }
        })
        .await
    }

    /// Waits until the job has status `status` and returns it.
    pub async fn wait_status(&self, job_id: &str, status: JobStatus) -> Job {
        let queue = Arc::clone(&self.queue);
        let id = job_id.to_string();
        wait_until(&format!("job {job_id} to be {status}"), || {
            let queue = Arc::clone(&queue);
            let id = id.clone();
            async move {
                let job = queue.get(&id).await.ok().flatten()?;
                (job.status == status).then_some(job)
            }
        })
        .await
    }

    /// Returns the run's events of `event_type`, in order.
    pub fn events_of(&self, run_id: &str, event_type: &str) -> Vec<Event> {
        self.events
            .read(run_id)
            .expect("read events")
            .into_iter()
            .filter(|event| event.event_type == event_type)
            .collect()
    }

    /// Returns the run's last `RunFinished` event.
    pub fn run_finished(&self, run_id: &str) -> Event {
        self.events_of(run_id, event_type::RUN_FINISHED)
            .pop()
            .unwrap_or_else(|| panic!("run {run_id} has no RunFinished event"))
    }

    /// Lists the jobs that are `running` now.
    pub async fn running_jobs(&self) -> Vec<Job> {
        let filter = jobhost::queue::JobFilter {
            status: Some(JobStatus::Running),
            limit: 500,
            ..jobhost::queue::JobFilter::default()
        };
        self.queue.list(&filter).await.expect("list jobs").jobs
    }
}

/// A worker started by `Harness::start_worker`.
pub struct RunningWorker {
    pub worker_id: String,
    pub data_dir: PathBuf,
    pub shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningWorker {
    pub fn record(&self) -> Option<WorkerRecord> {
        worker::record::read_record(&self.data_dir, &self.worker_id).ok()?
    }

    /// Waits until the worker's record satisfies `check`, and returns it.
    pub async fn wait_record(
        &self,
        condition: &str,
        check: impl Fn(&WorkerRecord) -> bool,
    ) -> WorkerRecord {
        let started = Instant::now();
        loop {
            if let Some(record) = self.record()
                && check(&record)
            {
                return record;
            }
            assert!(
                started.elapsed() < WAIT_LIMIT,
                "timed out waiting for the worker record to show {condition}; last record: {:?}",
                self.record()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the worker claims `job_type`.
    pub async fn wait_job_type(&self, job_type: &str) -> WorkerRecord {
        self.wait_record(&format!("job type {job_type}"), |record| {
            record.job_types.iter().any(|t| t == job_type)
        })
        .await
    }

    /// Signals shutdown and waits for `worker::run` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let handle = self.handle.take().expect("worker handle");
        tokio::time::timeout(WAIT_LIMIT, handle)
            .await
            .expect("worker stops within the wait limit")
            .expect("worker task did not panic")
    }

    /// Returns whether `worker::run` is still running.
    pub fn is_running(&self) -> bool {
        self.handle
            .as_ref()
            .is_some_and(|handle| !handle.is_finished())
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `check` every 25 ms until it returns `Some`, failing after `WAIT_LIMIT`.
pub async fn wait_until<T, F, Fut>(condition: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < WAIT_LIMIT,
            "timed out waiting for {condition}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
