//! The host side of every interface the `job-plugin` world imports, one file per interface.
//!
//! Every function acts on behalf of one attempt (or one `describe` call) and can reach only that
//! job's state, events and artifacts. Blocking file I/O runs on tokio's blocking threads.

mod artifacts;
mod config;
mod control;
mod events;
mod llm;
mod log;
mod state;

use crate::artifacts::ArtifactStore;
use crate::events::{Event, EventStore, RunContext};
use crate::llm::ChatModel;
use crate::state::{JobState, StateStore};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Stores and services shared by every attempt of one worker.
#[derive(Debug, Clone)]
pub struct HostServices {
    pub events: EventStore,
    pub state: StateStore,
    pub artifacts: ArtifactStore,
    pub chat: Arc<dyn ChatModel>,
    /// Cancelled when the worker's shutdown grace period is over and it interrupts the attempts
    /// still running. From then on `control.is-cancelled` returns true. Shutdown itself does not
    /// cancel it, so attempts that poll `is-cancelled` can finish within the grace period.
    pub stopping: CancellationToken,
}

/// The job an attempt runs, as the imports need it.
#[derive(Debug)]
pub struct JobScope {
    pub context: RunContext,
    pub job_id: String,
    pub run_id: String,
    pub attempt: u32,
    /// Loaded on first use by the `state` import.
    state: Option<JobState>,
}

impl JobScope {
    pub fn new(context: RunContext, job_id: &str, run_id: &str, attempt: u32) -> Self {
        JobScope {
            context,
            job_id: job_id.to_string(),
            run_id: run_id.to_string(),
            attempt,
            state: None,
        }
    }
}

/// The per-store host state behind the imports.
#[derive(Debug)]
pub struct HostState {
    /// Plugin name, or the file name while `describe` has not returned one yet.
    pub plugin: String,
    pub config: Arc<BTreeMap<String, String>>,
    pub allow_llm: bool,
    pub services: Arc<HostServices>,
    /// `None` during `describe`, when only `log` and `config` do anything.
    pub job: Option<JobScope>,
    /// Cancelled when this attempt's job is cancelled or its lease is lost.
    pub cancel: CancellationToken,
    /// Set once `control.is-cancelled` returned true to the guest.
    pub saw_cancel: bool,
    log_records: u64,
    events_emitted: u64,
}

impl HostState {
    pub fn new(
        plugin: &str,
        config: Arc<BTreeMap<String, String>>,
        allow_llm: bool,
        services: Arc<HostServices>,
        job: Option<JobScope>,
        cancel: CancellationToken,
    ) -> Self {
        HostState {
            plugin: plugin.to_string(),
            config,
            allow_llm,
            services,
            job,
            cancel,
            saw_cancel: false,
            log_records: 0,
            events_emitted: 0,
        }
    }

    /// Returns the `component` of events this plugin writes.
    fn component(&self) -> String {
        format!("plugin:{}", self.plugin)
    }

    fn job_id(&self) -> &str {
        self.job.as_ref().map_or("", |job| job.job_id.as_str())
    }

    fn run_id(&self) -> &str {
        self.job.as_ref().map_or("", |job| job.run_id.as_str())
    }

    fn attempt(&self) -> u32 {
        self.job.as_ref().map_or(0, |job| job.attempt)
    }

    /// Appends `event` on a blocking thread.
    async fn append_event(&self, event: Event) -> Result<(), String> {
        let events = self.services.events.clone();
        tokio::task::spawn_blocking(move || events.append(&event))
            .await
            .map_err(|error| format!("event log write did not finish: {error}"))?
            .map_err(|error| error.to_string())
    }
}

/// Message of the error an import returns while `describe` runs.
fn not_during_describe(import_name: &str) -> String {
    format!("{import_name} is not available while the plugin is being described; call it from run")
}

/// Cuts `text` to at most `max` bytes at a character boundary.
fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}
