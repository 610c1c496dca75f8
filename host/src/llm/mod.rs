//! Chat-completion clients that plugins reach through the `llm` import.
//!
//! [`build_chat_model`] picks the provider from [`LlmSettings`]. With a base URL it is
//! [`OpenAiCompatible`], an HTTP client for OpenAI, Ollama, vLLM or the llama.cpp server. Without
//! one it is the embedded [`OfflineModel`], which needs no network and writes deterministic
//! placeholder text marked `[offline model]`.
//!
//! Cancellation is by dropping the future returned by [`ChatModel::chat`]: the HTTP client then
//! drops its connection. Neither client streams replies.

mod offline;
mod openai;

pub use offline::OfflineModel;
pub use openai::OpenAiCompatible;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Author of a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// A chat-completion request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    /// Model name; `None` uses the model of [`LlmSettings::model`].
    pub model: Option<String>,
    /// Sampling temperature, 0.0 to 2.0; `None` uses the server's default.
    pub temperature: Option<f32>,
    /// Upper bound on the completion's tokens; `None` uses the server's default.
    pub max_tokens: Option<u32>,
}

/// Token counts of one call as the provider reports them (zeros when it reports none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

/// A completion.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub text: String,
    /// The model that wrote the completion, as the provider names it.
    pub model: String,
    pub usage: Usage,
    /// [`ChatModel::provider`] of the client that returned the completion.
    pub provider: String,
}

/// A failed call.
///
/// Codes: `rate_limited` (HTTP 429), `server_error` (HTTP 5xx), `timeout`, `connection_failed`
/// and `request_failed` are retryable; `bad_request`, `unauthorized`, `not_found`,
/// `client_error` (other HTTP 4xx), `invalid_response` and `model_not_set` are not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ChatError {
    /// Whether the same request may succeed later. Clients retry such errors themselves before
    /// returning one, so a caller that retries again should wait first.
    pub retryable: bool,
    pub code: String,
    pub message: String,
}

impl ChatError {
    pub fn retryable(code: &str, message: impl Into<String>) -> Self {
        ChatError {
            retryable: true,
            code: code.to_string(),
            message: message.into(),
        }
    }

    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        ChatError {
            retryable: false,
            code: code.to_string(),
            message: message.into(),
        }
    }
}

/// A chat-completion provider.
#[async_trait]
pub trait ChatModel: Send + Sync + fmt::Debug {
    /// Sends `request` and returns the completion. Dropping the future abandons the call.
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ChatError>;

    /// Provider name: `openai-compatible` or `offline`.
    fn provider(&self) -> &str;
}

/// Model settings of a worker.
///
/// `Debug` prints `api_key` as `<redacted>`.
#[derive(Clone, PartialEq)]
pub struct LlmSettings {
    /// Base URL of an OpenAI-compatible API, such as `http://127.0.0.1:11434/v1`; requests go to
    /// `{base_url}/chat/completions`. `None` selects the offline model. Default `None`.
    pub base_url: Option<String>,
    /// Sent as `Authorization: Bearer <key>` when set. Default `None`.
    pub api_key: Option<String>,
    /// Model used when a request names none. Default `None`.
    pub model: Option<String>,
    /// Time limit of one HTTP request, from connecting to the last byte of the reply.
    /// Default 120 s.
    pub request_timeout: Duration,
    /// Retries of a retryable failure (HTTP 429 and 5xx, timeouts, connection errors) before the
    /// error is returned. Default 3.
    pub max_retries: u32,
}

impl Default for LlmSettings {
    fn default() -> Self {
        LlmSettings {
            base_url: None,
            api_key: None,
            model: None,
            request_timeout: Duration::from_secs(120),
            max_retries: 3,
        }
    }
}

impl fmt::Debug for LlmSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmSettings")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("request_timeout", &self.request_timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

/// Builds the chat model that `settings` select: [`OpenAiCompatible`] when `base_url` is set
/// (and not blank), otherwise [`OfflineModel`].
///
/// # Errors
/// A message naming the value when `base_url` is not an `http://` or `https://` URL with a host,
/// or the HTTP client cannot be built.
pub fn build_chat_model(settings: &LlmSettings) -> Result<Arc<dyn ChatModel>, String> {
    match settings.base_url.as_deref().map(str::trim) {
        Some(base_url) if !base_url.is_empty() => {
            if settings
                .model
                .as_deref()
                .is_none_or(|model| model.trim().is_empty())
            {
                tracing::warn!(
                    base_url,
                    "LLM_MODEL is not set: model calls that name no model fail with model_not_set; set LLM_MODEL to the server's model name"
                );
            }
            Ok(Arc::new(OpenAiCompatible::new(base_url, settings)?))
        }
        _ => Ok(Arc::new(OfflineModel::new(settings.model.clone()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_debug_redacts_api_key() {
        let settings = LlmSettings {
            api_key: Some("sk-secret-value".to_string()),
            ..LlmSettings::default()
        };
        let debug = format!("{settings:?}");
        assert!(!debug.contains("sk-secret-value"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn no_base_url_builds_offline_model() {
        let model = build_chat_model(&LlmSettings::default()).expect("offline model");
        assert_eq!(model.provider(), "offline");
        let blank = LlmSettings {
            base_url: Some("  ".to_string()),
            ..LlmSettings::default()
        };
        let model = build_chat_model(&blank).expect("offline model");
        assert_eq!(model.provider(), "offline");
    }

    #[test]
    fn http_base_url_builds_client() {
        let settings = LlmSettings {
            base_url: Some("http://127.0.0.1:11434/v1".to_string()),
            ..LlmSettings::default()
        };
        let model = build_chat_model(&settings).expect("client");
        assert_eq!(model.provider(), "openai-compatible");
    }

    #[test]
    fn invalid_base_urls_are_rejected() {
        for base_url in [
            "ftp://127.0.0.1/v1",
            "127.0.0.1:11434",
            "http://",
            "not a url",
        ] {
            let settings = LlmSettings {
                base_url: Some(base_url.to_string()),
                ..LlmSettings::default()
            };
            let error = build_chat_model(&settings).expect_err(base_url);
            assert!(error.contains(base_url), "{error}");
            assert!(error.contains("http://"), "{error}");
        }
    }
}
