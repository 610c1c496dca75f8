//! Running one job attempt in a fresh sandbox and turning its end into an outcome.

use super::Runtime;
use super::bindings::Job as WitJob;
use super::failure;
use super::imports::{HostState, JobScope};
use super::output::OutputLabels;
use super::plugin::LoadedPlugin;
use super::sandbox::{CallEnd, new_store, race};
use crate::events::RunContext;
use crate::job::{Job, JobFailure};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Result of one attempt.
#[derive(Debug)]
pub enum AttemptOutcome {
    /// The plugin returned this result.
    Completed(Value),
    /// The plugin returned an error, trapped, ran out of memory or time.
    Failed(JobFailure),
    /// The plugin returned an error after `control.is-cancelled` returned true, so the error most
    /// likely means "stopped early" rather than a failure of the job.
    Stopped(JobFailure),
    /// `cancel` fired before the attempt ended; the guest was stopped.
    Interrupted,
}

impl Runtime {
    /// Deadline of an attempt of `job_type` run by `plugin`.
    pub fn deadline_for(&self, plugin: &LoadedPlugin, job_type: &str) -> Duration {
        plugin
            .manifest
            .timeout_for(job_type, self.settings.default_timeout)
    }

    /// Runs `job`'s current attempt in a fresh instance of `plugin`. The attempt ends at the
    /// plugin's deadline for the job type or when `cancel` fires. Either way the guest is stopped
    /// and any host call it waits on is dropped.
    pub async fn run_attempt(
        &self,
        plugin: &LoadedPlugin,
        job: &Job,
        cancel: &CancellationToken,
    ) -> AttemptOutcome {
        let deadline = self.deadline_for(plugin, &job.job_type);
        let scope = JobScope::new(RunContext::of_job(job), &job.id, &job.run_id, job.attempts);
        let host = HostState::new(
            &plugin.name,
            Arc::clone(&plugin.config),
            plugin.manifest.allow_llm,
            Arc::clone(&self.services),
            Some(scope),
            cancel.clone(),
        );
        let labels = OutputLabels {
            plugin: plugin.name.clone(),
            job_id: job.id.clone(),
            run_id: job.run_id.clone(),
            attempt: job.attempts,
        };
        let mut store = new_store(
            &self.engine,
            host,
            self.memory_limit(&plugin.manifest),
            labels,
        );
        let wit_job = WitJob {
            id: job.id.clone(),
            job_type: job.job_type.clone(),
            run_id: job.run_id.clone(),
            attempt: job.attempts,
            max_attempts: job.max_attempts,
            payload: job.payload.to_string(),
            request_id: job.request_id.clone(),
        };

        let end = {
            let store = &mut store;
            let pre = &plugin.pre;
            let call = async move {
                let instance = pre.instantiate_async(&mut *store).await?;
                instance.call_run(&mut *store, &wit_job).await
            };
            race(call, deadline, cancel).await
        };
        let data = store.data();
        data.stdout.finish();
        data.stderr.finish();

        match end {
            CallEnd::Returned(Ok(text)) => match serde_json::from_str(&text) {
                Ok(result) => AttemptOutcome::Completed(result),
                Err(error) => AttemptOutcome::Failed(failure::invalid_result(&plugin.name, &error)),
            },
            CallEnd::Returned(Err(error)) if data.host.saw_cancel => {
                AttemptOutcome::Stopped(failure::from_job_error(error, &plugin.name))
            }
            CallEnd::Returned(Err(error)) => {
                AttemptOutcome::Failed(failure::from_job_error(error, &plugin.name))
            }
            CallEnd::Failed(error) if error.is::<wasmtime::PoolConcurrencyLimitError>() => {
                AttemptOutcome::Failed(failure::sandbox_unavailable(&plugin.name, &error))
            }
            CallEnd::Failed(error) => AttemptOutcome::Failed(failure::classify_trap(
                &error,
                &data.limiter,
                &data.stderr.tail(),
                &plugin.name,
            )),
            CallEnd::DeadlineExceeded => {
                AttemptOutcome::Failed(failure::deadline_exceeded(deadline))
            }
            CallEnd::Interrupted => AttemptOutcome::Interrupted,
        }
    }
}
