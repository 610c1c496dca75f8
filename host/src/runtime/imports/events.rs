//! `events`: plugin events and progress in the run's event log.

use super::{HostState, not_during_describe, truncate};
use crate::events::{Event, event_type};
use crate::runtime::bindings::jobhost::plugin::events::Host;
use serde_json::{Value, json};

/// Largest event data, as JSON text.
pub const MAX_EVENT_DATA_BYTES: usize = 256 * 1024;
/// Events (including progress) one attempt may write, so a runaway plugin cannot fill the disk.
pub const MAX_EVENTS_PER_ATTEMPT: u64 = 100_000;
/// Maximum progress message, in bytes.
const MAX_PROGRESS_MESSAGE_BYTES: usize = 1024;

impl Host for HostState {
    async fn emit(&mut self, name: String, data: String) -> Result<(), String> {
        if self.job.is_none() {
            return Err(not_during_describe("events.emit"));
        }
        validate_event_name(&name)?;
        if data.len() > MAX_EVENT_DATA_BYTES {
            return Err(format!(
                "data of event {name:?} is {} bytes, above the {MAX_EVENT_DATA_BYTES}-byte limit: emit less data or store it as an artifact",
                data.len()
            ));
        }
        let data: Value = serde_json::from_str(&data)
            .map_err(|error| format!("data of event {name:?} is not valid JSON: {error}"))?;
        self.count_event()?;

        let Some(event) = self.event(&name) else {
            return Err(not_during_describe("events.emit"));
        };
        self.append_event(event.with_data(data)).await
    }

    async fn progress(&mut self, done: u32, total: u32, mut message: String) {
        if self.job.is_none() {
            return;
        }
        if let Err(error) = self.count_event() {
            tracing::warn!(plugin = %self.plugin, job_id = %self.job_id(), run_id = %self.run_id(), %error, "progress not recorded");
            return;
        }
        truncate(&mut message, MAX_PROGRESS_MESSAGE_BYTES);
        let data = json!({ "done": done.min(total), "total": total, "message": message });
        let Some(event) = self.event(event_type::PROGRESS) else {
            return;
        };
        let event = event.with_data(data);
        if let Err(error) = self.append_event(event).await {
            tracing::warn!(plugin = %self.plugin, job_id = %self.job_id(), run_id = %self.run_id(), %error, "failed to record a Progress event");
        }
    }
}

impl HostState {
    /// Creates an event of `event_type` from this plugin, filed under the attempt's run; `None`
    /// during `describe`.
    pub(super) fn event(&self, event_type: &str) -> Option<Event> {
        let job = self.job.as_ref()?;
        Some(Event::new(&job.context, event_type, &self.component()))
    }

    fn count_event(&mut self) -> Result<(), String> {
        if self.events_emitted >= MAX_EVENTS_PER_ATTEMPT {
            return Err(format!(
                "the attempt already wrote {MAX_EVENTS_PER_ATTEMPT} events, the per-attempt limit: emit fewer, larger events"
            ));
        }
        self.events_emitted += 1;
        Ok(())
    }
}

/// Checks a plugin event name: 1 to 64 characters of `[A-Za-z0-9_.:-]`, not a name the host
/// reserves for lifecycle events.
pub fn validate_event_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    if name.is_empty() || name.len() > 64 || !valid_chars {
        return Err(format!(
            "invalid event name {name:?}: use 1 to 64 characters of letters, digits, '_', '.', ':' and '-'"
        ));
    }
    if event_type::RESERVED.contains(&name) {
        return Err(format!(
            "event name {name:?} is reserved for the host: reserved names are {}",
            event_type::RESERVED.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names() {
        for good in ["DebateTurn", "a.b:c-d_e", &"E".repeat(64)] {
            assert!(validate_event_name(good).is_ok(), "{good:?} was rejected");
        }
        for bad in ["", "has space", "a/b", "ü", &"E".repeat(65)] {
            assert!(validate_event_name(bad).is_err(), "{bad:?} was accepted");
        }
        for reserved in ["RunQueued", "RunStarted", "RunFinished", "Error", "LlmCall"] {
            let error = validate_event_name(reserved).expect_err(reserved);
            assert!(error.contains("reserved"), "{error}");
        }
    }
}
