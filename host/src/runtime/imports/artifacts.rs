//! `artifacts`: files the run produces.

use super::{HostState, not_during_describe};
use crate::runtime::bindings::jobhost::plugin::artifacts::Host;

impl Host for HostState {
    async fn put(
        &mut self,
        name: String,
        content_type: String,
        content: Vec<u8>,
    ) -> Result<(), String> {
        let Some(job) = &self.job else {
            return Err(not_during_describe("artifacts.put"));
        };
        let store = self.services.artifacts.clone();
        let run_id = job.run_id.clone();
        tokio::task::spawn_blocking(move || store.put(&run_id, &name, &content_type, &content))
            .await
            .map_err(|error| format!("artifact write did not finish: {error}"))?
            .map(|_| ())
            .map_err(|error| error.to_string())
    }
}
