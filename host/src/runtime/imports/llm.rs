//! `llm`: chat completions through the worker's `ChatModel`, each recorded as an `LlmCall` event.
//!
//! The call is not raced against the deadline here: the runtime races the whole guest call, so
//! when the deadline passes or the job is cancelled the pending request future is dropped, which
//! closes its HTTP connection.

use super::HostState;
use crate::events::{Event, Level, event_type};
use crate::llm;
use crate::runtime::bindings::jobhost::plugin::llm::{
    ChatError, ChatRequest, ChatResponse, Host, Message, Role, Usage,
};
use serde_json::json;
use std::time::Instant;

impl Host for HostState {
    async fn chat(&mut self, request: ChatRequest) -> Result<ChatResponse, ChatError> {
        if self.job.is_none() {
            return Err(chat_error(
                false,
                "not_allowed",
                "model calls are not available while the plugin is being described; call the model from run",
            ));
        }
        if !self.allow_llm {
            return Err(chat_error(
                false,
                "not_allowed",
                &format!(
                    "plugin {} may not call the model: its manifest sets allow_llm = false",
                    self.plugin
                ),
            ));
        }
        if let Some(temperature) = request.temperature
            && !(0.0..=2.0).contains(&temperature)
        {
            return Err(chat_error(
                false,
                "bad_request",
                &format!("temperature {temperature} is out of range: use 0.0 to 2.0"),
            ));
        }

        let requested_model = request.model.clone();
        let message_count = request.messages.len();
        let started = Instant::now();
        let result = self.services.chat.chat(into_host_request(request)).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

        let event = self.llm_call_event(
            &result,
            requested_model.as_deref(),
            message_count,
            latency_ms,
        );
        if let Some(event) = event
            && let Err(error) = self.append_event(event).await
        {
            tracing::warn!(plugin = %self.plugin, job_id = %self.job_id(), run_id = %self.run_id(), %error, "failed to record an LlmCall event");
        }

        match result {
            Ok(response) => Ok(ChatResponse {
                text: response.text,
                model: response.model,
                usage: Usage {
                    prompt_tokens: response.usage.prompt_tokens,
                    completion_tokens: response.usage.completion_tokens,
                    total_tokens: response.usage.total_tokens,
                },
                provider: response.provider,
            }),
            Err(error) => Err(ChatError {
                retryable: error.retryable,
                code: error.code,
                message: error.message,
            }),
        }
    }
}

impl HostState {
    fn llm_call_event(
        &self,
        result: &Result<llm::ChatResponse, llm::ChatError>,
        requested_model: Option<&str>,
        message_count: usize,
        latency_ms: u64,
    ) -> Option<Event> {
        let provider = self.services.chat.provider().to_string();
        let event = self
            .event(event_type::LLM_CALL)?
            .with_latency_ms(latency_ms);
        Some(match result {
            Ok(response) => event.with_data(json!({
                "provider": response.provider,
                "model": response.model,
                "messages": message_count,
                "usage": {
                    "promptTokens": response.usage.prompt_tokens,
                    "completionTokens": response.usage.completion_tokens,
                    "totalTokens": response.usage.total_tokens,
                },
            })),
            Err(error) => event
                .with_level(Level::Warn)
                .with_error(&error.code, &error.message)
                .with_data(json!({
                    "provider": provider,
                    "model": requested_model,
                    "messages": message_count,
                    "retryable": error.retryable,
                })),
        })
    }
}

fn into_host_request(request: ChatRequest) -> llm::ChatRequest {
    llm::ChatRequest {
        messages: request
            .messages
            .into_iter()
            .map(into_host_message)
            .collect(),
        model: request.model,
        temperature: request.temperature,
        max_tokens: request.max_tokens,
    }
}

fn into_host_message(message: Message) -> llm::ChatMessage {
    let role = match message.role {
        Role::System => llm::Role::System,
        Role::User => llm::Role::User,
        Role::Assistant => llm::Role::Assistant,
    };
    llm::ChatMessage {
        role,
        content: message.content,
    }
}

fn chat_error(retryable: bool, code: &str, message: &str) -> ChatError {
    ChatError {
        retryable,
        code: code.to_string(),
        message: message.to_string(),
    }
}
