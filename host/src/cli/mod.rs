//! The `jobhost` subcommands: start-up, signal handling and shutdown of the API and the worker.
//! The `queue` subcommands live in `queue`.

pub mod queue;

use crate::api::{self, ApiSettings, AppState};
use crate::config::{
    ApiArgs, Cli, Command, CommonArgs, LlmArgs, ServeArgs, UpArgs, WorkerArgs, WorkerOptions,
};
use crate::events::EventStore;
use crate::llm::LlmSettings;
use crate::queue::{FileQueue, Queue, QueueSettings};
use crate::telemetry;
use crate::worker::{self, WorkerSettings};
use anyhow::Context;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Exit code of a second SIGINT or SIGTERM, which skips the graceful shutdown.
const FORCED_EXIT_CODE: i32 = 130;

/// Sets up logging, runs the subcommand on a multi-threaded runtime, and returns the process
/// exit code: 0 after a clean stop, 1 after an error, 2 when logging cannot be set up.
pub fn run(cli: Cli) -> ExitCode {
    let common = match &cli.command {
        Command::Serve(args) => &args.common,
        Command::Worker(args) => &args.common,
        Command::Up(args) => &args.common,
        Command::Queue(args) => &args.common,
    };
    if let Err(message) = telemetry::init(common.log_format, &common.log_filter) {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "failed to start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Worker(args) => worker(args).await,
            Command::Up(args) => up(args).await,
            Command::Queue(args) => queue::run(args.command, &args.common.data_dir).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "jobhost stopped with an error"
            );
            ExitCode::FAILURE
        }
    }
}

/// Returns a token cancelled at the first SIGINT or SIGTERM. A second signal exits the process
/// at once with code 130.
fn shutdown_on_signal() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};

    let token = CancellationToken::new();
    let mut terminate =
        signal(SignalKind::terminate()).context("failed to install the SIGTERM handler")?;
    let mut interrupt =
        signal(SignalKind::interrupt()).context("failed to install the SIGINT handler")?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down: finishing in-flight work");
        cancel.cancel();

        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::warn!(
            signal = name,
            "second signal: exiting without waiting for in-flight work"
        );
        std::process::exit(FORCED_EXIT_CODE);
    });
    Ok(token)
}

/// Opens the event store and the file queue under the data directory, creating it when missing.
fn open_stores(
    common: &CommonArgs,
    settings: QueueSettings,
) -> anyhow::Result<(Arc<dyn Queue>, EventStore)> {
    let data_dir = &common.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("failed to create DATA_DIR {}", data_dir.display()))?;
    let events = EventStore::open(data_dir)
        .with_context(|| format!("failed to open the event store in {}", data_dir.display()))?;
    let queue = FileQueue::open(data_dir, settings, events.clone())
        .with_context(|| format!("failed to open the queue in {}", data_dir.display()))?;
    Ok((Arc::new(queue), events))
}

fn api_settings(args: &ApiArgs) -> ApiSettings {
    ApiSettings {
        api_token: args.api_token().map(crate::config::Secret::new),
        max_body_bytes: args.max_body_bytes,
        ..ApiSettings::default()
    }
}

/// Binds the listener and logs the bound address, which differs from LISTEN_ADDR when its port
/// is 0.
async fn bind(args: &ApiArgs) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(args.listen_addr)
        .await
        .with_context(|| format!("failed to listen on LISTEN_ADDR={}", args.listen_addr))?;
    let address = listener
        .local_addr()
        .context("failed to read the bound address")?;
    tracing::info!(addr = %address, "api listening");
    Ok(listener)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal()?;
    let (queue, events) = open_stores(&args.common, QueueSettings::default())?;
    let state = AppState::new(
        &args.common.data_dir,
        queue,
        events,
        api_settings(&args.api),
        shutdown,
    )?;
    let listener = bind(&args.api).await?;
    api::serve(listener, state)
        .await
        .context("the HTTP server failed")?;
    tracing::info!("api stopped");
    Ok(())
}

fn queue_settings(options: &WorkerOptions) -> QueueSettings {
    QueueSettings {
        lease: options.lease(),
        ..QueueSettings::default()
    }
}

fn worker_settings(common: &CommonArgs, options: &WorkerOptions, llm: &LlmArgs) -> WorkerSettings {
    WorkerSettings {
        data_dir: common.data_dir.clone(),
        plugin_dirs: options.plugins_dir.0.clone(),
        worker_id: options.worker_id(),
        concurrency: options.concurrency,
        poll_interval: options.poll_interval(),
        shutdown_grace: options.shutdown_grace(),
        queue: queue_settings(options),
        llm: LlmSettings {
            base_url: llm.base_url(),
            api_key: llm.api_key(),
            model: llm.model(),
            request_timeout: llm.timeout(),
            ..LlmSettings::default()
        },
        ..WorkerSettings::default()
    }
}

async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal()?;
    let (queue, events) = open_stores(&args.common, queue_settings(&args.worker))?;
    let settings = worker_settings(&args.common, &args.worker, &args.llm);
    worker::run(settings, queue, events, shutdown).await
}

/// Runs the API and a worker on one queue. When either stops, for a signal or an error, the
/// other is shut down too.
async fn up(args: UpArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal()?;
    let (queue, events) = open_stores(&args.common, queue_settings(&args.worker))?;
    let state = AppState::new(
        &args.common.data_dir,
        queue.clone(),
        events.clone(),
        api_settings(&args.api),
        shutdown.clone(),
    )?;
    let listener = bind(&args.api).await?;
    let settings = worker_settings(&args.common, &args.worker, &args.llm);

    let worker_shutdown = shutdown.clone();
    let worker = async move {
        let result = worker::run(settings, queue, events, worker_shutdown.clone()).await;
        worker_shutdown.cancel();
        result
    };
    let server_shutdown = shutdown.clone();
    let server = async move {
        let result = api::serve(listener, state)
            .await
            .context("the HTTP server failed");
        server_shutdown.cancel();
        result
    };
    let (worker_result, server_result) = tokio::join!(worker, server);
    tracing::info!("api stopped");
    match (worker_result, server_result) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(error), Ok(())) | (Ok(()), Err(error)) => Err(error),
        (Err(worker_error), Err(server_error)) => {
            // Both failed: the server's error is returned, so the worker's is logged here.
            tracing::error!(error = format!("{worker_error:#}"), "the worker failed");
            Err(server_error)
        }
    }
}
