//! The sandboxed WebAssembly component runtime: it loads job-type plugins, keeps them current
//! as their files change, and runs each job attempt in a fresh, capped instance.
//!
//! # Layout
//! - `engine`: the shared wasmtime engine (async, pooling allocator, epoch interruption) and the
//!   epoch ticker thread.
//! - `cache`: compiled components under `<data>/cache/plugins`.
//! - `manifest`: the optional `<name>.toml` beside a plugin.
//! - `limits`: per-store memory, instance and table caps.
//! - `sandbox`: store creation with narrowed WASI, and the race of a call against its deadline.
//! - `imports`: the host side of the `job-plugin` world's imports.
//! - `output`: guest stdout and stderr into the worker's log.
//! - `plugin`: loading one plugin file and calling `describe`.
//! - `attempt`: running one job attempt.
//! - `failure`: the failures the runtime reports and whether each is retryable.
//! - `registry`: the loaded plugins by job type, rescanned as plugin files change.
//!
//! # Sandbox
//! A guest gets WASI clocks and random numbers, and stdout and stderr that go to the worker's
//! log. It gets no environment variables, arguments, preopened directories or sockets. Everything
//! else it can do goes through the `job-plugin` imports, scoped to its own job.

pub mod attempt;
pub mod bindings;
pub mod cache;
pub mod engine;
pub mod failure;
pub mod imports;
pub mod limits;
pub mod manifest;
pub mod output;
pub mod plugin;
pub mod registry;
pub mod sandbox;

pub use attempt::AttemptOutcome;
pub use failure::HostTrap;
pub use imports::HostServices;
pub use plugin::{LoadError, LoadedPlugin};
pub use registry::{LoadErrorRecord, PluginRegistry, RegistrySettings};

use cache::ArtifactCache;
use engine::{Allocator, EpochTicker};
use sandbox::StoreData;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::Engine;
use wasmtime::component::Linker;

/// Tunables of a `Runtime`; `Default` lists the defaults.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Data directory; compiled artifacts go to `<data_dir>/cache/plugins`.
    pub data_dir: PathBuf,
    /// Component instances that may exist at once: the worker's concurrency plus room for
    /// `describe` calls. Sizes the instance pool. Default 18.
    pub max_instances: u32,
    /// Deadline of an attempt whose plugin manifest sets none. Default 15 min.
    pub default_timeout: Duration,
    /// Memory cap of an instance whose plugin manifest sets none. Default 256 MiB.
    pub default_memory_limit_bytes: usize,
    /// Deadline of a `describe` call. Default 5 s.
    pub describe_timeout: Duration,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            data_dir: PathBuf::from("data"),
            max_instances: 18,
            default_timeout: Duration::from_secs(15 * 60),
            default_memory_limit_bytes: manifest::mib_to_bytes(limits::DEFAULT_MEMORY_MIB),
            describe_timeout: Duration::from_secs(5),
        }
    }
}

/// The engine, linker and services every plugin of one worker shares.
pub struct Runtime {
    engine: Engine,
    allocator: Allocator,
    linker: Linker<StoreData>,
    cache: ArtifactCache,
    services: Arc<HostServices>,
    settings: RuntimeSettings,
    _ticker: EpochTicker,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("allocator", &self.allocator)
            .field("cache", &self.cache)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine (pooling when possible), the linker, and starts the epoch ticker.
    pub fn new(settings: RuntimeSettings, services: HostServices) -> anyhow::Result<Self> {
        let (engine, allocator) =
            engine::build_engine(settings.max_instances).map_err(into_anyhow)?;
        let linker = sandbox::build_linker(&engine).map_err(into_anyhow)?;
        let cache = ArtifactCache::new(&settings.data_dir, &engine);
        let ticker = EpochTicker::start(&engine)
            .map_err(|error| anyhow::anyhow!("cannot start the epoch ticker thread: {error}"))?;
        Ok(Runtime {
            engine,
            allocator,
            linker,
            cache,
            services: Arc::new(services),
            settings,
            _ticker: ticker,
        })
    }

    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    pub fn settings(&self) -> &RuntimeSettings {
        &self.settings
    }

    pub fn services(&self) -> &HostServices {
        &self.services
    }
}

/// Converts a wasmtime error, keeping its chain of causes.
pub fn into_anyhow(error: wasmtime::Error) -> anyhow::Error {
    anyhow::Error::from_boxed(error.into_boxed_dyn_error())
}
