//! Typed wrappers around the imports. They work only inside a component: on the host target the
//! generated import functions panic, so unit tests must not reach them.

use crate::JobError;
use crate::bindings::jobhost::plugin::{artifacts, config, control, events, llm, state};
use crate::{Level, bindings::jobhost::plugin::log as wit_log};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Appends the event `name` with `data` serialized as JSON to the run's event log.
///
/// # Errors
/// A retryable `event_emit_failed` error, with the host's reason, when the host rejects the event
/// or cannot write it. A retry repeats the attempt, so a plugin that emits events it must not
/// repeat keeps its progress in state.
pub fn emit_event(name: &str, data: &impl Serialize) -> Result<(), JobError> {
    let json = serde_json::to_string(data).map_err(|error| {
        JobError::fatal(
            "event_emit_failed",
            format!("failed to serialize the data of event {name}: {error}"),
        )
    })?;
    events::emit(name, &json).map_err(|message| {
        JobError::retryable(
            "event_emit_failed",
            format!("failed to emit event {name}: {message}"),
        )
    })
}

/// Reports `done` of `total` steps, recorded as a `Progress` event.
pub fn progress(done: u32, total: u32, message: &str) {
    events::progress(done, total, message);
}

/// Returns true once the job was cancelled or the worker's shutdown grace period has run out.
pub fn is_cancelled() -> bool {
    control::is_cancelled()
}

/// Returns the job-state value stored under `key`.
pub fn state_get(key: &str) -> Option<String> {
    state::get(key)
}

/// Stores `value` under `key` in the job's state, durably.
///
/// # Errors
/// A retryable `state_write_failed` error when a size limit is exceeded or the write fails.
pub fn state_set(key: &str, value: &str) -> Result<(), JobError> {
    state::set(key, value).map_err(|message| {
        JobError::retryable(
            "state_write_failed",
            format!("failed to store state key {key}: {message}"),
        )
    })
}

/// Removes `key` from the job's state.
///
/// # Errors
/// A retryable `state_write_failed` error when the write fails.
pub fn state_delete(key: &str) -> Result<(), JobError> {
    state::delete(key).map_err(|message| {
        JobError::retryable(
            "state_write_failed",
            format!("failed to delete state key {key}: {message}"),
        )
    })
}

/// Returns the job-state value under `key` parsed from JSON.
///
/// # Errors
/// A fatal `invalid_state` error when the stored value is not JSON of type `T`, which happens
/// when an earlier attempt ran a plugin version that stored another shape.
pub fn state_get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, JobError> {
    let Some(text) = state::get(key) else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|error| {
        JobError::fatal(
            "invalid_state",
            format!("state key {key} does not contain the expected JSON: {error}"),
        )
    })
}

/// Stores `value` as JSON under `key` in the job's state, durably.
///
/// # Errors
/// A retryable `state_write_failed` error when a size limit is exceeded or the write fails, and a
/// fatal one when `value` cannot be serialized.
pub fn state_set_json<T: Serialize>(key: &str, value: &T) -> Result<(), JobError> {
    let json = serde_json::to_string(value).map_err(|error| {
        JobError::fatal(
            "state_write_failed",
            format!("failed to serialize state key {key}: {error}"),
        )
    })?;
    state_set(key, &json)
}

/// Stores `content` as the run's artifact `name` of media type `content_type`.
///
/// # Errors
/// A retryable `artifact_write_failed` error when the host rejects or cannot write it.
pub fn put_artifact(name: &str, content_type: &str, content: &[u8]) -> Result<(), JobError> {
    artifacts::put(name, content_type, content).map_err(|message| {
        JobError::retryable(
            "artifact_write_failed",
            format!("failed to store artifact {name}: {message}"),
        )
    })
}

/// Returns the value of `key` in the `[config]` table of the plugin's manifest.
pub fn config_get(key: &str) -> Option<String> {
    config::get(key)
}

/// Sends one chat-completion request to the worker's model. `JobError::from` turns a failure into
/// a job error that keeps whether a retry can help.
pub fn chat(request: &llm::ChatRequest) -> Result<llm::ChatResponse, llm::ChatError> {
    llm::chat(request)
}

/// Writes `message` to the worker's log at `level`, with `fields` as extra key-value pairs
/// (`serde_json::Value::Null` for none).
pub fn log(level: Level, message: &str, fields: &serde_json::Value) {
    let fields = match fields {
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    wit_log::write(level, message, &fields);
}
