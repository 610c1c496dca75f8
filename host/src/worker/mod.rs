//! The worker process loop: claim jobs of the loaded plugins' types, run each attempt in its
//! plugin's sandbox, and record every outcome.
//!
//! # Layout
//! - `executor`: one attempt, from `RunStarted` to `RunFinished`.
//! - `heartbeat`: lease heartbeats of a running attempt and the reasons it is interrupted.
//! - `record`: the worker heartbeat record under `<data>/workers/`.
//! - `shutdown`: the graceful stop that hands unfinished jobs back to the queue.
//!
//! A worker runs at most `concurrency` attempts at once. Most of them wait on a model server, so
//! the default is higher than the number of cores. It claims only job types that a loaded
//! plugin handles, and the set follows the plugin directories while it runs.

mod executor;
mod heartbeat;
pub mod record;
mod shutdown;

pub use heartbeat::Interrupt;
pub use record::{WorkerRecord, WorkerStatus};

use crate::artifacts::ArtifactStore;
use crate::events::EventStore;
use crate::job::Job;
use crate::llm::{LlmSettings, build_chat_model};
use crate::queue::{Queue, QueueSettings};
use crate::runtime::manifest::mib_to_bytes;
use crate::runtime::{
    HostServices, PluginRegistry, RegistrySettings, Runtime, RuntimeSettings, limits,
};
use crate::state::StateStore;
use chrono::Utc;
use heartbeat::AttemptStop;
use record::InFlightRecord;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Settings of a worker; `Default` lists the defaults.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Data directory shared with the queue and the API. Default `./data`.
    pub data_dir: PathBuf,
    /// Directories to load plugins from, in order. Default `./plugins`.
    pub plugin_dirs: Vec<PathBuf>,
    /// Id in leases, events and the worker record. Default `<host name>-<process id>`.
    pub worker_id: String,
    /// Attempts run at the same time. Default 16.
    pub concurrency: usize,
    /// Maximum wait between checks for due jobs when idle; new jobs usually wake the worker
    /// sooner. Default 1 s.
    pub poll_interval: Duration,
    /// Time running attempts get to finish after shutdown starts before they are interrupted
    /// and handed back to the queue. Default 30 s.
    pub shutdown_grace: Duration,
    /// Interval of the worker heartbeat record. Default 5 s.
    pub heartbeat_interval: Duration,
    /// The queue's settings; the worker heartbeats each lease every `queue.lease / 3`.
    pub queue: QueueSettings,
    /// Model settings of the `llm` import.
    pub llm: LlmSettings,
    /// Deadline of an attempt whose plugin manifest sets none. Default 15 min.
    pub default_job_timeout: Duration,
    /// Memory cap of a plugin instance whose manifest sets none, in bytes. Default 256 MiB.
    pub default_memory_limit: usize,
    /// How long a new or changed plugin file must stay unchanged before it loads. Default 500 ms.
    pub plugin_settle: Duration,
    /// Interval of the plugin rescan that backs up the file watcher. Default 2 s.
    pub plugin_rescan_interval: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        let registry = RegistrySettings::default();
        WorkerSettings {
            data_dir: PathBuf::from("./data"),
            plugin_dirs: vec![PathBuf::from("./plugins")],
            worker_id: default_worker_id(),
            concurrency: 16,
            poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            queue: QueueSettings::default(),
            llm: LlmSettings::default(),
            default_job_timeout: Duration::from_secs(15 * 60),
            default_memory_limit: mib_to_bytes(limits::DEFAULT_MEMORY_MIB),
            plugin_settle: registry.settle,
            plugin_rescan_interval: registry.rescan_interval,
        }
    }
}

/// Returns `<host name>-<process id>`, the default worker id.
pub fn default_worker_id() -> String {
    let host = hostname::get()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "worker".to_string());
    format!("{host}-{}", std::process::id())
}

/// Runs a worker until `shutdown` fires, then stops gracefully: no new claims, running attempts
/// get `shutdown_grace` to finish, the rest are interrupted and handed back to the queue, and the
/// worker record is marked `stopped`.
///
/// # Errors
/// Fails before claiming anything when the settings are invalid or the stores, the model client
/// or the engine cannot be set up.
pub async fn run(
    settings: WorkerSettings,
    queue: Arc<dyn Queue>,
    events: EventStore,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        settings.concurrency >= 1,
        "worker concurrency is 0: set it to at least 1"
    );
    anyhow::ensure!(
        !settings.worker_id.is_empty(),
        "worker id is empty: set one or leave the default"
    );

    let ctx = Arc::new(WorkerContext::open(settings, queue, events)?);
    ctx.registry.scan().await;
    // Plugin files written moments before the start wait out one settle period here, so that
    // `worker started` is logged with them loaded.
    if ctx.registry.has_settling() {
        tokio::time::sleep(ctx.settings.plugin_settle).await;
        ctx.registry.scan().await;
    }

    // Background tasks outlive the claim loop until the drain is over.
    let background = CancellationToken::new();
    let watcher = tokio::spawn(Arc::clone(&ctx.registry).watch(background.clone()));
    let started_at = Utc::now();
    let recorder = tokio::spawn(record::keep_record(
        Arc::clone(&ctx),
        started_at,
        background.clone(),
    ));

    tracing::info!(
        worker_id = %ctx.settings.worker_id,
        concurrency = ctx.settings.concurrency,
        job_types = ?ctx.registry.job_types(),
        allocator = ?ctx.registry.runtime().allocator(),
        "worker started"
    );
    let attempts = claim_loop(&ctx, &shutdown).await;

    tracing::info!(worker_id = %ctx.settings.worker_id, running = ctx.in_flight.len(), "worker stopping");
    ctx.set_status(WorkerStatus::Stopping);
    record::write_now(&ctx, started_at).await;
    shutdown::drain(&ctx, attempts).await;

    background.cancel();
    let _ = watcher.await;
    let _ = recorder.await;
    ctx.set_status(WorkerStatus::Stopped);
    record::write_now(&ctx, started_at).await;
    tracing::info!(worker_id = %ctx.settings.worker_id, "worker stopped");
    Ok(())
}

/// Claims and starts attempts until `shutdown` fires; returns the attempts still running.
async fn claim_loop(ctx: &Arc<WorkerContext>, shutdown: &CancellationToken) -> JoinSet<()> {
    let slots = Arc::new(Semaphore::new(ctx.settings.concurrency));
    let mut attempts = JoinSet::new();
    let mut plugin_changes = ctx.registry.subscribe();
    let poll = ctx.settings.poll_interval;

    loop {
        while let Some(result) = attempts.try_join_next() {
            if let Err(error) = result {
                tracing::error!(worker_id = %ctx.settings.worker_id, %error, "attempt task failed");
            }
        }

        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };

        let job_types = ctx.registry.job_types();
        if job_types.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = plugin_changes.changed() => {}
                _ = tokio::time::sleep(poll) => {}
            }
            continue;
        }

        match ctx.queue.dequeue(&ctx.settings.worker_id, &job_types).await {
            Ok(Some((job, lease))) => {
                let ctx = Arc::clone(ctx);
                attempts.spawn(async move {
                    executor::execute(ctx, job, lease).await;
                    drop(slot);
                });
            }
            Ok(None) => {
                drop(slot);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ctx.queue.wait_for_work(poll) => {}
                    _ = plugin_changes.changed() => {}
                }
            }
            Err(error) => {
                drop(slot);
                tracing::error!(worker_id = %ctx.settings.worker_id, %error, "claiming a job failed; retrying after the poll interval");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        }
    }
    attempts
}

/// Everything the worker's tasks share.
struct WorkerContext {
    settings: WorkerSettings,
    queue: Arc<dyn Queue>,
    events: EventStore,
    state: StateStore,
    registry: Arc<PluginRegistry>,
    in_flight: InFlight,
    /// Fires when the shutdown grace period is over. Every attempt's stop token is its child, so
    /// this interrupts all of them, and `control.is-cancelled` returns true from then on.
    grace_over: CancellationToken,
    status: Mutex<WorkerStatus>,
}

impl std::fmt::Debug for WorkerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerContext")
            .field("settings", &self.settings)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl WorkerContext {
    fn open(
        settings: WorkerSettings,
        queue: Arc<dyn Queue>,
        events: EventStore,
    ) -> anyhow::Result<Self> {
        let state = StateStore::open(&settings.data_dir)?;
        let artifacts = ArtifactStore::open(&settings.data_dir)?;
        let chat = build_chat_model(&settings.llm)
            .map_err(|error| anyhow::anyhow!("cannot set up the model client: {error}"))?;
        let grace_over = CancellationToken::new();
        let services = HostServices {
            events: events.clone(),
            state: state.clone(),
            artifacts,
            chat,
            stopping: grace_over.clone(),
        };
        let runtime_settings = RuntimeSettings {
            data_dir: settings.data_dir.clone(),
            max_instances: instance_slots(settings.concurrency),
            default_timeout: settings.default_job_timeout,
            default_memory_limit_bytes: settings.default_memory_limit,
            ..RuntimeSettings::default()
        };
        let runtime = Arc::new(Runtime::new(runtime_settings, services)?);
        let registry = PluginRegistry::new(
            runtime,
            RegistrySettings {
                plugin_dirs: settings.plugin_dirs.clone(),
                settle: settings.plugin_settle,
                rescan_interval: settings.plugin_rescan_interval,
            },
        );
        Ok(WorkerContext {
            settings,
            queue,
            events,
            state,
            registry,
            in_flight: InFlight::default(),
            grace_over,
            status: Mutex::new(WorkerStatus::Running),
        })
    }

    /// Returns a third of the lease, so two heartbeats can fail before the lease runs out.
    fn lease_heartbeat_interval(&self) -> Duration {
        (self.settings.queue.lease / 3).max(Duration::from_millis(100))
    }

    fn status(&self) -> WorkerStatus {
        *self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_status(&self, status: WorkerStatus) {
        *self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = status;
    }
}

/// Pool slots for `concurrency` attempts plus `describe` calls of plugins being loaded.
fn instance_slots(concurrency: usize) -> u32 {
    u32::try_from(concurrency)
        .unwrap_or(u32::MAX)
        .saturating_add(2)
}

/// The attempts running now, by job id.
#[derive(Debug, Default)]
struct InFlight(Mutex<BTreeMap<String, (InFlightRecord, AttemptStop)>>);

impl InFlight {
    fn insert(&self, job: &Job, stop: AttemptStop) {
        let record = InFlightRecord {
            job_id: job.id.clone(),
            run_id: job.run_id.clone(),
            job_type: job.job_type.clone(),
            attempt: job.attempts,
            started_at: job.started_at.unwrap_or_else(Utc::now),
        };
        self.lock().insert(job.id.clone(), (record, stop));
    }

    fn remove(&self, job_id: &str) {
        self.lock().remove(job_id);
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn records(&self) -> Vec<InFlightRecord> {
        self.lock()
            .values()
            .map(|(record, _)| record.clone())
            .collect()
    }

    /// Interrupts every running attempt with `reason`.
    fn stop_all(&self, reason: Interrupt) {
        for (_, stop) in self.lock().values() {
            stop.stop(reason);
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, (InFlightRecord, AttemptStop)>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
