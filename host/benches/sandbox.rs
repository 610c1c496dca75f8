//! Sandbox costs, in three parts:
//! - one job's sandbox (create the store, instantiate, call `run`, drop) for the testkit's
//!   `TEST_NOOP`, on one and on two threads;
//! - cold compile against cached load of each bundled plugin;
//! - end-to-end throughput of no-op jobs through the file queue and a worker.
//!
//! Run with `cargo bench -p jobhost --bench sandbox`. Prints plain text; the per-job target is a
//! median of at most 15 µs.

use chrono::Utc;
use jobhost::artifacts::ArtifactStore;
use jobhost::events::EventStore;
use jobhost::job::{Job, JobStatus};
use jobhost::llm::OfflineModel;
use jobhost::queue::{EnqueueOptions, FileQueue, Queue, QueueSettings};
use jobhost::runtime::cache::ArtifactCache;
use jobhost::runtime::{AttemptOutcome, HostServices, LoadedPlugin, Runtime, RuntimeSettings};
use jobhost::state::StateStore;
use jobhost::worker::{self, WorkerSettings};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Timed sandbox runs per thread, after the warm-up.
const SANDBOX_RUNS: usize = 20_000;
const WARM_UP_RUNS: usize = 1_000;
/// Compiles and cached loads per plugin.
const LOAD_REPEATS: usize = 3;
/// No-op jobs pushed through the queue and a worker.
const THROUGHPUT_JOBS: usize = 2_000;

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "sandbox benchmark ({} logical CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    sandbox_per_job(dir.path(), 1);
    sandbox_per_job(dir.path(), 2);
    compile_and_load(dir.path());
    worker_throughput(dir.path());
}

fn testkit_bytes() -> Vec<u8> {
    std::fs::read(env!("JOBHOST_TESTKIT_WASM")).expect("read testkit.wasm")
}

fn new_runtime(data_dir: &Path, instances: u32) -> Runtime {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let services = HostServices {
        events: EventStore::open(data_dir).expect("event store"),
        state: StateStore::open(data_dir).expect("state store"),
        artifacts: ArtifactStore::open(data_dir).expect("artifact store"),
        chat: Arc::new(OfflineModel::new(None)),
        stopping: CancellationToken::new(),
    };
    let settings = RuntimeSettings {
        data_dir: data_dir.to_path_buf(),
        max_instances: instances,
        ..RuntimeSettings::default()
    };
    Runtime::new(settings, services).expect("runtime")
}

fn noop_job() -> Job {
    let now = Utc::now();
    Job {
        id: jobhost::job::new_id(),
        job_type: "TEST_NOOP".to_string(),
        payload: serde_json::Value::Null,
        status: JobStatus::Running,
        attempts: 1,
        max_attempts: 1,
        priority: 0,
        run_at: now,
        idempotency_key: None,
        run_id: jobhost::job::new_id(),
        locked_by: Some("bench".to_string()),
        locked_until: None,
        created_at: now,
        updated_at: now,
        started_at: Some(now),
        finished_at: None,
        result: None,
        last_error: None,
        request_id: None,
    }
}

/// Times `SANDBOX_RUNS` no-op attempts on each of `threads` threads.
fn sandbox_per_job(root: &Path, threads: usize) {
    let data_dir = root.join(format!("sandbox-{threads}"));
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let samples = tokio.block_on(async {
        let runtime = Arc::new(new_runtime(&data_dir, threads as u32 + 1));
        let path = data_dir.join("testkit.wasm");
        let plugin = Arc::new(
            runtime
                .load_plugin(&path, testkit_bytes())
                .await
                .expect("load testkit"),
        );
        println!(
            "\nper-job sandbox, TEST_NOOP, {threads} thread(s), {:?} allocator:",
            runtime.allocator()
        );

        let mut tasks = Vec::new();
        for _ in 0..threads {
            let (runtime, plugin) = (Arc::clone(&runtime), Arc::clone(&plugin));
            tasks.push(tokio::spawn(async move {
                time_attempts(&runtime, &plugin).await
            }));
        }
        let mut samples = Vec::new();
        for task in tasks {
            samples.extend(task.await.expect("bench task"));
        }
        samples
    });
    report("create + instantiate + run + drop", samples);
}

async fn time_attempts(runtime: &Runtime, plugin: &LoadedPlugin) -> Vec<Duration> {
    let job = noop_job();
    let cancel = CancellationToken::new();
    let mut samples = Vec::with_capacity(SANDBOX_RUNS);
    for run in 0..WARM_UP_RUNS + SANDBOX_RUNS {
        let started = Instant::now();
        let outcome = runtime.run_attempt(plugin, &job, &cancel).await;
        let elapsed = started.elapsed();
        assert!(
            matches!(outcome, AttemptOutcome::Completed(serde_json::Value::Null)),
            "{outcome:?}"
        );
        if run >= WARM_UP_RUNS {
            samples.push(elapsed);
        }
    }
    samples
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let at = |fraction: f64| samples[((samples.len() - 1) as f64 * fraction) as usize];
    println!(
        "  {label}: median {:.1} µs, p99 {:.1} µs, max {:.1} µs over {} runs",
        micros(at(0.5)),
        micros(at(0.99)),
        micros(at(1.0)),
        samples.len()
    );
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// Times a cold compile (empty cache) against a load from the artifact cache, per plugin.
fn compile_and_load(root: &Path) {
    println!("\ncold compile vs cached load (median of {LOAD_REPEATS}):");
    let (engine, _) = jobhost::runtime::engine::build_engine(2).expect("engine");
    let bundled = PathBuf::from(env!("JOBHOST_BUNDLED_PLUGINS_DIR"));
    let plugins = [
        ("testkit", PathBuf::from(env!("JOBHOST_TESTKIT_WASM"))),
        ("debate", bundled.join("debate.wasm")),
        ("workflow", bundled.join("workflow.wasm")),
        ("ingest_docs", bundled.join("ingest_docs.wasm")),
    ];
    for (name, path) in plugins {
        let wasm = std::fs::read(&path).expect("read plugin");
        let sha = hex::encode(Sha256::digest(&wasm));
        let mut cold = Vec::new();
        let mut cached = Vec::new();
        for repeat in 0..LOAD_REPEATS {
            let cache_dir = root.join(format!("cache-{name}-{repeat}"));
            let cache = ArtifactCache::new(&cache_dir, &engine);
            let started = Instant::now();
            cache.load(&engine, &wasm, &sha).expect("compile");
            cold.push(started.elapsed());
            let started = Instant::now();
            cache.load(&engine, &wasm, &sha).expect("cached load");
            cached.push(started.elapsed());
        }
        cold.sort_unstable();
        cached.sort_unstable();
        println!(
            "  {name} ({} KiB): compile {:.1} ms, cached load {:.2} ms",
            wasm.len() / 1024,
            cold[LOAD_REPEATS / 2].as_secs_f64() * 1e3,
            cached[LOAD_REPEATS / 2].as_secs_f64() * 1e3
        );
    }
}

/// Enqueues `THROUGHPUT_JOBS` no-op jobs and times a worker (concurrency 16) completing them.
fn worker_throughput(root: &Path) {
    let data_dir = root.join("throughput");
    let plugins_dir = root.join("throughput-plugins");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    std::fs::create_dir_all(&plugins_dir).expect("plugins dir");
    std::fs::write(plugins_dir.join("testkit.wasm"), testkit_bytes()).expect("install testkit");

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    tokio.block_on(async {
        let events = EventStore::open(&data_dir).expect("event store");
        let queue = Arc::new(
            FileQueue::open(&data_dir, QueueSettings::default(), events.clone()).expect("queue"),
        );
        for _ in 0..THROUGHPUT_JOBS {
            queue
                .enqueue("TEST_NOOP", serde_json::Value::Null, EnqueueOptions::default())
                .await
                .expect("enqueue");
        }

        let shutdown = CancellationToken::new();
        let settings = WorkerSettings {
            data_dir: data_dir.clone(),
            plugin_dirs: vec![plugins_dir.clone()],
            worker_id: "bench".to_string(),
            concurrency: 16,
            poll_interval: Duration::from_millis(50),
            ..WorkerSettings::default()
        };
        let started = Instant::now();
        let worker = tokio::spawn(worker::run(
            settings,
            queue.clone() as Arc<dyn Queue>,
            events,
            shutdown.clone(),
        ));
        loop {
            let counts = queue.counts().await.expect("counts");
            let completed: u64 = counts
                .iter()
                .filter(|count| count.status == JobStatus::Completed)
                .map(|count| count.count)
                .sum();
            if completed as usize >= THROUGHPUT_JOBS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        shutdown.cancel();
        worker
            .await
            .expect("worker task")
            .expect("worker stopped cleanly");
        println!(
            "\nworker throughput, {THROUGHPUT_JOBS} TEST_NOOP jobs through the file queue, concurrency 16:\n  {:.0} jobs/s ({:.2} s including worker start-up)",
            THROUGHPUT_JOBS as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64()
        );
    });
}
