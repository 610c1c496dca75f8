//! The `debate` plugin: handles `RUN_DEBATE`, a debate between 2 to 8 model-played personas.
//!
//! In each round every persona argues in turn; a moderator, when included, summarises each
//! round; a synthesis closes the debate. Each turn is one model call, emitted as a `DebateTurn`
//! event as soon as it exists and kept in job state so that a retried attempt resumes where the
//! failed one stopped (see `run` for the exact rules). The Markdown transcript is stored as the
//! artifact `transcript.md`.
//!
//! # Layout
//! - `payload`: the payload, its defaults and limits.
//! - `turns`: the turn plan and the turn record.
//! - `prompt`: the chat request of each turn and the cleaning of replies.
//! - `words`: word counting and trimming.
//! - `transcript`: the Markdown transcript.
//! - `run`: one attempt, written against a `Host` trait; `WitHost` here binds it to the imports.

mod payload;
mod prompt;
mod run;
mod transcript;
mod turns;
mod words;

use jobhost_plugin_sdk::llm::{ChatError, ChatRequest, ChatResponse};
use jobhost_plugin_sdk::{Guest, Job, JobError, Level, PluginInfo, export_plugin, to_result};
use serde_json::{Value, json};

const JOB_TYPE: &str = "RUN_DEBATE";

struct Debate;

impl Guest for Debate {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "debate".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            job_types: vec![JOB_TYPE.to_string()],
            description: "Runs a moderated debate between model-played personas".to_string(),
        }
    }

    fn run(job: Job) -> Result<String, JobError> {
        if job.job_type != JOB_TYPE {
            return Err(JobError::fatal(
                "unknown_job_type",
                format!("the debate plugin handles {JOB_TYPE}, not {}", job.job_type),
            ));
        }
        let result = run::run_debate(&mut WitHost, &job.payload)?;
        to_result(&result)
    }
}

export_plugin!(Debate);

/// [`run::Host`] over the component's imports.
struct WitHost;

impl run::Host for WitHost {
    fn is_cancelled(&mut self) -> bool {
        jobhost_plugin_sdk::is_cancelled()
    }

    fn chat(&mut self, request: &ChatRequest) -> Result<ChatResponse, ChatError> {
        let response = jobhost_plugin_sdk::chat(request);
        if let Err(error) = &response {
            jobhost_plugin_sdk::log(
                Level::Warn,
                "model call failed",
                &json!({ "code": error.code, "retryable": error.retryable }),
            );
        }
        response
    }

    fn state_get(&mut self, key: &str) -> Option<String> {
        jobhost_plugin_sdk::state_get(key)
    }

    fn state_set(&mut self, key: &str, value: &str) -> Result<(), JobError> {
        jobhost_plugin_sdk::state_set(key, value)
    }

    fn emit(&mut self, name: &str, data: &Value) -> Result<(), JobError> {
        jobhost_plugin_sdk::emit_event(name, data)
    }

    fn progress(&mut self, done: u32, total: u32, message: &str) {
        jobhost_plugin_sdk::progress(done, total, message);
    }

    fn put_artifact(
        &mut self,
        name: &str,
        content_type: &str,
        content: &[u8],
    ) -> Result<(), JobError> {
        jobhost_plugin_sdk::put_artifact(name, content_type, content)
    }
}
