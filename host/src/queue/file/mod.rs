//! The embedded queue backend: one JSON file per job under `<data>/queue/`, shared by the API
//! process and any number of worker processes on one host.
//!
//! # Layout
//! - `jobs/<jobId>.json`: the job record (exactly `Job`), the only source of truth.
//! - `index/pending/<jobType>/<marker>`, `index/running/<jobId>`: markers that let `dequeue` and
//!   the lease sweep read only pending and running jobs (see `index`).
//! - `keys/<sha256 of key>`: the id of the job holding an idempotency key.
//! - `quarantine/`: job files that could not be parsed, moved aside with an `Error` event.
//! - `.lock`: the exclusive lock held by every read-modify-write (see `lock`).
//!
//! Every state change writes the job file with `durable::write_atomic` while the lock is held, so
//! after a crash each job is in its old or its new state. `get`, `list` and `counts` take no lock.
//!
//! The backend does not work on a network file system: `flock` and `inotify` are local to one
//! host, and so is the boot id that marks when the index must be rebuilt.

mod claim;
mod enqueue;
mod index;
mod layout;
mod lease;
mod lifecycle;
mod lock;
mod manage;
mod read;
mod repair;
mod store;
mod wake;

pub use repair::RepairReport;

use crate::events::EventStore;
use crate::job::{Job, JobFailure, Lease};
use crate::queue::{
    EnqueueOptions, Enqueued, FailOptions, JobFilter, JobPage, Queue, QueueError, QueueSettings,
    StatusCount,
};
use async_trait::async_trait;
use layout::Layout;
use lifecycle::QueueEvent;
use lock::QueueLock;
use serde_json::Value;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Maximum time between two sweeps for expired leases in one process. Leases under 4 s are swept
/// four times per lease length, so an expired lease is noticed within about a quarter of it.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A queue stored in files under `<data>/queue/`. Cloning is cheap; clones share one lock handle
/// and one change watcher.
#[derive(Clone)]
pub struct FileQueue {
    inner: Arc<Inner>,
}

struct Inner {
    layout: Layout,
    settings: QueueSettings,
    events: EventStore,
    lock: QueueLock,
    /// When this process last swept for expired leases.
    last_sweep: Mutex<Option<Instant>>,
    wake: wake::Wake,
}

impl fmt::Debug for FileQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileQueue")
            .field("root", &self.inner.layout.root)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl FileQueue {
    /// Opens (creating when missing) the queue in `<data_dir>/queue`.
    ///
    /// The first open after the operating system restarted, or after `queue/index` was deleted,
    /// rebuilds the index from the job files while holding the queue lock (see `repair_index`).
    /// That reads every job file once, and other opens read none. Blocks, so call it at startup
    /// or from a blocking context.
    pub fn open(
        data_dir: &Path,
        settings: QueueSettings,
        events: EventStore,
    ) -> Result<FileQueue, QueueError> {
        let layout = Layout::new(data_dir);
        layout
            .create_dirs()
            .map_err(|error| QueueError::io(&layout.root, error))?;
        let lock = QueueLock::open(&layout.lock)?;
        let inner = Arc::new(Inner {
            wake: wake::Wake::new(layout.pending.clone()),
            layout,
            settings,
            events,
            lock,
            last_sweep: Mutex::new(None),
        });
        repair::repair_after_restart(&inner)?;
        Ok(FileQueue { inner })
    }

    /// Rebuilds the index (pending and running markers, idempotency-key records) from the job
    /// files and moves unreadable job files to quarantine. `open` does this by itself after an
    /// operating system restart; call it after restoring or editing job files by hand. Reads every
    /// job file while holding the queue lock.
    pub async fn repair_index(&self) -> Result<RepairReport, QueueError> {
        self.blocking(repair::repair_index).await
    }

    /// Runs `operation` on a blocking thread, because every operation does file I/O and may wait
    /// for the cross-process lock.
    async fn blocking<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&Inner) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let inner = Arc::clone(&self.inner);
        match tokio::task::spawn_blocking(move || operation(&inner)).await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => Err(QueueError::io(
                &self.inner.layout.root,
                std::io::Error::other(format!("queue operation was cancelled: {error}")),
            )),
        }
    }
}

impl Inner {
    /// Runs `change` while holding the queue lock, then records the events it collected, also
    /// when it failed part way (a quarantine may already have happened).
    fn locked<T>(
        &self,
        change: impl FnOnce(&Layout, &mut Vec<QueueEvent>) -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        let mut events = Vec::new();
        let result = match self.lock.acquire() {
            Ok(_guard) => change(&self.layout, &mut events),
            Err(error) => Err(error),
        };
        lifecycle::record(&self.events, events);
        result
    }

    /// Returns true, at most once per sweep interval, when this process should sweep for expired
    /// leases.
    fn take_sweep_turn(&self) -> bool {
        let interval = MAX_SWEEP_INTERVAL.min(self.settings.lease / 4);
        let mut last = self
            .last_sweep
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|at| at.elapsed() < interval) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

/// Maps an I/O error on `path` to `QueueError::Io`.
fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
    move |error| QueueError::io(path, error)
}

#[async_trait]
impl Queue for FileQueue {
    async fn enqueue(
        &self,
        job_type: &str,
        payload: Value,
        opts: EnqueueOptions,
    ) -> Result<Enqueued, QueueError> {
        let job_type = job_type.to_string();
        self.blocking(move |inner| enqueue::enqueue(inner, &job_type, payload, opts))
            .await
    }

    async fn dequeue(
        &self,
        worker_id: &str,
        job_types: &[String],
    ) -> Result<Option<(Job, Lease)>, QueueError> {
        let worker_id = worker_id.to_string();
        let job_types = job_types.to_vec();
        self.blocking(move |inner| claim::dequeue(inner, &worker_id, &job_types))
            .await
    }

    async fn ack(&self, lease: &Lease, result: Value) -> Result<Job, QueueError> {
        let lease = lease.clone();
        self.blocking(move |inner| lease::ack(inner, &lease, result))
            .await
    }

    async fn fail(
        &self,
        lease: &Lease,
        failure: JobFailure,
        opts: FailOptions,
    ) -> Result<Job, QueueError> {
        let lease = lease.clone();
        self.blocking(move |inner| lease::fail(inner, &lease, failure, opts))
            .await
    }

    async fn heartbeat(&self, lease: &Lease) -> Result<Job, QueueError> {
        let lease = lease.clone();
        self.blocking(move |inner| lease::heartbeat(inner, &lease))
            .await
    }

    async fn release(&self, lease: &Lease, reason: &str) -> Result<Job, QueueError> {
        let lease = lease.clone();
        let reason = reason.to_string();
        self.blocking(move |inner| lease::release(inner, &lease, &reason))
            .await
    }

    /// Returns `None` for an unknown job, and also for a job file that cannot be parsed: that
    /// file is moved to quarantine with an `Error` event, so the job is no longer in the queue.
    async fn get(&self, job_id: &str) -> Result<Option<Job>, QueueError> {
        let job_id = job_id.to_string();
        self.blocking(move |inner| read::get(inner, &job_id)).await
    }

    async fn list(&self, filter: &JobFilter) -> Result<JobPage, QueueError> {
        let filter = filter.clone();
        self.blocking(move |inner| read::list(inner, &filter)).await
    }

    async fn cancel(&self, job_id: &str) -> Result<Job, QueueError> {
        let job_id = job_id.to_string();
        self.blocking(move |inner| manage::cancel(inner, &job_id))
            .await
    }

    async fn retry(&self, job_id: &str) -> Result<Job, QueueError> {
        let job_id = job_id.to_string();
        self.blocking(move |inner| manage::retry(inner, &job_id))
            .await
    }

    async fn prune(&self, older_than: Duration) -> Result<u64, QueueError> {
        self.blocking(move |inner| manage::prune(inner, older_than))
            .await
    }

    async fn counts(&self) -> Result<Vec<StatusCount>, QueueError> {
        self.blocking(read::counts).await
    }

    async fn wait_for_work(&self, max_wait: Duration) {
        let inner = Arc::clone(&self.inner);
        inner.wake.wait(&inner.layout, max_wait).await;
    }
}
