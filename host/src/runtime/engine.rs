//! The wasmtime `Engine` a worker shares among all its plugins, and the epoch ticker that lets
//! CPU-bound guests yield.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Interval between epoch ticks. A running guest yields to the async executor at each tick, so
/// this bounds how long one guest occupies a worker thread and how late a deadline is noticed.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Core wasm instances one plugin component may create. A Rust `wasm32-wasip2` component has
/// three or four (the program plus the adapter shims); the rest is headroom.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
/// Linear memories per component instance; guests have one, the rest is headroom.
const MEMORIES_PER_COMPONENT: u32 = 2;
/// Tables per component instance; the program's function table plus the shims' tables.
const TABLES_PER_COMPONENT: u32 = 4;
/// Linear memory kept resident (reset with `memset` instead of `madvise`) per pooled memory slot
/// after use, which makes instantiating the next guest in that slot cheaper.
const KEEP_RESIDENT_BYTES: usize = 1 << 20;

/// Instance allocation strategy of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// Slots reserved up front for `instances` concurrent component instances.
    Pooling { instances: u32 },
    /// Memory mapped per instantiation; used when the pool's address space cannot be reserved.
    OnDemand,
}

/// Builds the engine with async support, epoch interruption and, when its address space can be
/// reserved, a pooling allocator with room for `max_instances` concurrent component instances.
/// Falls back to on-demand allocation with a warning otherwise.
pub fn build_engine(max_instances: u32) -> wasmtime::Result<(Engine, Allocator)> {
    let max_instances = max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(max_instances)
        .total_core_instances(max_instances * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(max_instances * MEMORIES_PER_COMPONENT)
        .total_tables(max_instances * TABLES_PER_COMPONENT)
        .total_stacks(max_instances)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES)
        .pagemap_scan(Enabled::Auto);

    let mut config = base_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&config) {
        Ok(engine) => Ok((
            engine,
            Allocator::Pooling {
                instances: max_instances,
            },
        )),
        Err(error) => {
            tracing::warn!(
                error = %error,
                instances = max_instances,
                "could not reserve the instance pool; allocating plugin instances on demand, which makes each job's sandbox slower to create"
            );
            Ok((Engine::new(&base_config())?, Allocator::OnDemand))
        }
    }
}

fn base_config() -> Config {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .parallel_compilation(true)
        // Pinned so that the compiled-artifact cache key does not depend on the
        // `WASMTIME_BACKTRACE_DETAILS` environment variable.
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);
    config
}

/// A thread that advances the engine's epoch every `EPOCH_TICK`.
///
/// It is an OS thread rather than a tokio task on purpose: guests yield only when the epoch
/// advances, so a tick that waits for a free executor thread could wait forever behind guests that
/// occupy every executor thread. The thread stops when this value is dropped or the engine is
/// gone.
#[derive(Debug)]
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> std::io::Result<Self> {
        let weak = engine.weak();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("jobhost-epoch".to_string())
            .spawn(move || {
                while !thread_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
