//! One sandbox: a fresh `Store` per call of a plugin export, with WASI narrowed to clocks,
//! random and logged stdio, the store's resource caps, epoch yields, and the race of the call
//! against its deadline and cancellation.

use super::bindings::JobPlugin;
use super::imports::HostState;
use super::limits::StoreLimiter;
use super::output::{GuestOutput, OutputLabels, Stream};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Everything a store holds for one call.
pub struct StoreData {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: StoreLimiter,
    pub host: HostState,
    pub stdout: GuestOutput,
    pub stderr: GuestOutput,
}

impl std::fmt::Debug for StoreData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreData")
            .field("limiter", &self.limiter)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Builds the linker every plugin is instantiated with: WASI preview 2 plus the `job-plugin`
/// imports.
pub fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<StoreData>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    JobPlugin::add_to_linker::<StoreData, HasSelf<HostState>>(&mut linker, |data| &mut data.host)?;
    Ok(linker)
}

/// Creates the store for one call. The guest gets no environment, no arguments, no preopened
/// directories and no sockets; its stdout and stderr go to the worker's log.
pub fn new_store(
    engine: &Engine,
    host: HostState,
    memory_limit_bytes: usize,
    labels: OutputLabels,
) -> Store<StoreData> {
    let stdout = GuestOutput::new(Stream::Stdout, labels.clone());
    let stderr = GuestOutput::new(Stream::Stderr, labels);
    let wasi = WasiCtxBuilder::new()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    let data = StoreData {
        wasi,
        table: ResourceTable::new(),
        limiter: StoreLimiter::new(memory_limit_bytes),
        host,
        stdout,
        stderr,
    };

    let mut store = Store::new(engine, data);
    store.limiter(|data| &mut data.limiter);
    // Yield to the executor at every epoch tick, so a guest that computes without host calls
    // still lets other jobs, lease heartbeats and the deadline timer run.
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    store
}

/// End of a raced guest call.
#[derive(Debug)]
pub enum CallEnd<T> {
    /// The export returned.
    Returned(T),
    /// The guest trapped, or instantiation failed.
    Failed(wasmtime::Error),
    /// The deadline passed first; the call was dropped.
    DeadlineExceeded,
    /// `cancel` fired first; the call was dropped.
    Interrupted,
}

/// Awaits `run` (an instantiation and an export call) racing `deadline` and `cancel`.
/// Dropping the call on a deadline or cancellation also drops any host call in flight, such as a
/// model request, because host futures run inside the guest call's future.
pub async fn race<T>(
    run: impl Future<Output = wasmtime::Result<T>>,
    deadline: Duration,
    cancel: &CancellationToken,
) -> CallEnd<T> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => CallEnd::Interrupted,
        _ = tokio::time::sleep(deadline) => CallEnd::DeadlineExceeded,
        result = run => match result {
            Ok(value) => CallEnd::Returned(value),
            Err(error) => CallEnd::Failed(error),
        },
    }
}
