//! The HTTP API: enqueues jobs and debates, and serves their state, events and artifacts.
//!
//! The API process never runs job work. Workers do, through the shared queue and data directory.
//! Every response carries an `X-Request-Id`, every error has the JSON body of `error::ApiError`,
//! and every POST route requires the bearer token when `API_TOKEN` is set.
//!
//! # Layout
//! - `debates`, `jobs`, `runs`, `system`: the route handlers, by resource.
//! - `sse`: the live event stream of a run.
//! - `extract`: JSON, query and path extractors that reject bad input with an `ApiError`.
//! - `auth`, `request_id`: middleware for the token check and the per-request span and id.
//! - `metrics`, `openapi`: `/metrics` and `/openapi.json`.

mod auth;
mod debates;
pub mod error;
mod extract;
mod jobs;
mod metrics;
mod openapi;
mod request_id;
mod runs;
mod sse;
mod system;

pub use error::ApiError;
pub use metrics::Metrics;
pub use openapi::openapi_document;
pub use request_id::RequestId;

use crate::artifacts::ArtifactStore;
use crate::config::Secret;
use crate::debate::DebateStore;
use crate::events::EventStore;
use crate::queue::Queue;
use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{MethodRouter, get, post};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// API settings, with the defaults in `Default`.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Bearer token required on POST routes. `None` leaves them open.
    pub api_token: Option<Secret>,
    /// Largest accepted request body. Default 1 MiB.
    pub max_body_bytes: usize,
    /// How often a live event stream checks the run's event log for new lines. Default 250 ms.
    pub sse_poll_interval: Duration,
    /// Interval of keep-alive comments on an idle event stream. Default 15 s.
    pub sse_keep_alive: Duration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            api_token: None,
            max_body_bytes: 1024 * 1024,
            sse_poll_interval: Duration::from_millis(250),
            sse_keep_alive: Duration::from_secs(15),
        }
    }
}

/// Everything a handler needs. Cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    pub queue: Arc<dyn Queue>,
    pub events: EventStore,
    pub artifacts: ArtifactStore,
    pub debates: DebateStore,
    pub data_dir: Arc<PathBuf>,
    pub settings: Arc<ApiSettings>,
    pub metrics: Arc<Metrics>,
    /// Token cancelled at shutdown. Live event streams end on it so that the server can stop.
    pub shutdown: CancellationToken,
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("data_dir", &self.data_dir)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Opens the stores under `data_dir` that the API reads and writes besides the queue.
    pub fn new(
        data_dir: &Path,
        queue: Arc<dyn Queue>,
        events: EventStore,
        settings: ApiSettings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let artifacts = ArtifactStore::open(data_dir).with_context(|| {
            format!(
                "failed to open the artifact store in {}",
                data_dir.display()
            )
        })?;
        let debates = DebateStore::open(data_dir).with_context(|| {
            format!("failed to open the debate store in {}", data_dir.display())
        })?;
        Ok(AppState {
            queue,
            events,
            artifacts,
            debates,
            data_dir: Arc::new(data_dir.to_path_buf()),
            settings: Arc::new(settings),
            metrics: Arc::new(Metrics::new()),
            shutdown,
        })
    }
}

/// Lists the routes as one table, so that `/openapi.json` can be checked against it.
fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/debates", post(debates::create).get(debates::list)),
        ("/api/debates/run", post(debates::create)),
        ("/api/debates/{debateId}", get(debates::get)),
        (
            "/api/debates/{debateId}/transcript",
            get(debates::transcript),
        ),
        ("/api/jobs", post(jobs::create).get(jobs::list)),
        ("/api/jobs/{jobId}", get(jobs::get)),
        ("/api/jobs/{jobId}/cancel", post(jobs::cancel)),
        ("/api/jobs/{jobId}/retry", post(jobs::retry)),
        ("/api/runs", get(runs::list)),
        ("/api/runs/{runId}", get(runs::get)),
        ("/api/runs/{runId}/events", get(runs::events)),
        ("/api/plugins", get(system::plugins)),
        ("/api/workers", get(system::workers)),
        ("/healthz", get(system::healthz)),
        ("/readyz", get(system::readyz)),
        ("/metrics", get(metrics::scrape)),
        ("/openapi.json", get(openapi::document)),
    ]
}

/// Paths of every route, in the router's `{param}` syntax.
pub fn route_paths() -> Vec<&'static str> {
    routes().into_iter().map(|(path, _)| path).collect()
}

/// Builds the router with its middleware: request id and span outermost, then the body limit,
/// then the token check.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for (path, method_router) in routes() {
        router = router.route(path, method_router);
    }
    router
        .fallback(system::route_not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_id::trace_request,
        ))
        .with_state(state)
}

/// Serves the API on `listener` until `state.shutdown` is cancelled, then finishes in-flight
/// requests and returns.
pub async fn serve(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Runs blocking file I/O off the async threads.
async fn blocking<T, F>(work: F) -> Result<T, ApiError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ApiError::internal(format!("blocking task failed: {error}")))
}
