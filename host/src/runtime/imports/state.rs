//! `state`: the job's durable key-value state, loaded on first use and written through on every
//! change.

use super::{HostState, not_during_describe};
use crate::runtime::HostTrap;
use crate::runtime::bindings::jobhost::plugin::state::Host;
use crate::state::JobState;

impl Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        if self.job.is_none() {
            return Ok(None);
        }
        let state = self.job_state().await.map_err(|message| {
            wasmtime::Error::new(HostTrap::retryable("state_unavailable", message))
        })?;
        Ok(state.get(&key).map(str::to_string))
    }

    async fn set(&mut self, key: String, value: String) -> Result<(), String> {
        self.change_state(|state| {
            state
                .set(&key, &value)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
    }

    async fn delete(&mut self, key: String) -> Result<(), String> {
        self.change_state(|state| {
            state.delete(&key);
            Ok(())
        })
        .await
    }
}

impl HostState {
    /// Returns the job's state, reading it from disk on first use.
    async fn job_state(&mut self) -> Result<&mut JobState, String> {
        let Some(job) = self.job.as_mut() else {
            return Err(not_during_describe("state"));
        };
        if job.state.is_none() {
            let store = self.services.state.clone();
            let job_id = job.job_id.clone();
            let loaded = tokio::task::spawn_blocking(move || store.load(&job_id))
                .await
                .map_err(|error| format!("job state read did not finish: {error}"))?
                .map_err(|error| error.to_string())?;
            job.state = Some(loaded);
        }
        Ok(job.state.get_or_insert_default())
    }

    /// Applies `change` to the job's state and writes the result durably. When the change or the
    /// write fails, the in-memory state stays as it was.
    async fn change_state(
        &mut self,
        change: impl FnOnce(&mut JobState) -> Result<(), String>,
    ) -> Result<(), String> {
        let state = self.job_state().await?;
        let mut changed = state.clone();
        change(&mut changed)?;
        let bytes = changed.to_json_bytes();

        let store = self.services.state.clone();
        let job_id = self.job_id().to_string();
        tokio::task::spawn_blocking(move || store.save_encoded(&job_id, &bytes))
            .await
            .map_err(|error| format!("job state write did not finish: {error}"))?
            .map_err(|error| error.to_string())?;

        if let Some(job) = self.job.as_mut() {
            job.state = Some(changed);
        }
        Ok(())
    }
}
