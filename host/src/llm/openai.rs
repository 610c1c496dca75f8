//! Client for the OpenAI chat-completions API (`POST {base_url}/chat/completions`), which OpenAI,
//! Ollama, vLLM and the llama.cpp server all serve.

use super::{ChatError, ChatModel, ChatRequest, ChatResponse, LlmSettings, Usage};
use async_trait::async_trait;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};
use std::fmt;
use std::time::Duration;

const PROVIDER: &str = "openai-compatible";

/// First backoff delay; each retry doubles it.
const BASE_BACKOFF: Duration = Duration::from_millis(500);
/// Upper bound on a backoff delay and on a server's `Retry-After`, so that one call cannot hold a
/// job for long: past it the error goes back to the queue, which retries with its own backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Maximum length, in characters, of a server error message kept in a [`ChatError`].
const MAX_ERROR_CHARS: usize = 500;

/// OpenAI-compatible chat-completions client.
///
/// `Debug` prints the API key as `<redacted>`, and error messages replace the key with
/// `<redacted>` should a server echo it.
#[derive(Clone)]
pub struct OpenAiCompatible {
    client: reqwest::Client,
    endpoint: Url,
    /// `endpoint` without the password a URL may carry, for logs and messages.
    endpoint_display: String,
    api_key: Option<String>,
    default_model: Option<String>,
    max_retries: u32,
}

impl fmt::Debug for OpenAiCompatible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiCompatible")
            .field("endpoint", &self.endpoint_display)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("default_model", &self.default_model)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

/// One failed HTTP exchange, with the delay the server asked for.
struct Failure {
    error: ChatError,
    retry_after: Option<Duration>,
}

impl From<ChatError> for Failure {
    fn from(error: ChatError) -> Self {
        Failure {
            error,
            retry_after: None,
        }
    }
}

impl OpenAiCompatible {
    /// Creates a client for `base_url` with the key, default model, timeout and retry count of
    /// `settings` (its `base_url` is ignored).
    ///
    /// # Errors
    /// A message naming `base_url` when it is not an `http://` or `https://` URL with a host, or
    /// when the HTTP client cannot be built.
    pub fn new(base_url: &str, settings: &LlmSettings) -> Result<Self, String> {
        let endpoint = chat_completions_url(base_url)?;
        let client = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| format!("failed to build the HTTP client for {base_url}: {e}"))?;
        let mut display = endpoint.clone();
        if display.password().is_some() {
            let _ = display.set_password(Some("redacted"));
        }
        Ok(OpenAiCompatible {
            client,
            endpoint,
            endpoint_display: display.to_string(),
            api_key: settings.api_key.clone().filter(|key| !key.is_empty()),
            default_model: settings.model.clone(),
            max_retries: settings.max_retries,
        })
    }

    /// Sends the request once and classifies the outcome.
    async fn send_once(&self, body: &Value, model: &str) -> Result<ChatResponse, Failure> {
        let mut request = self.client.post(self.endpoint.clone()).json(body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| self.transport_error(e))?;

        let status = response.status();
        let retry_after = retry_after(response.headers());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))?;
        if !status.is_success() {
            let error = self.status_error(status, &bytes);
            return Err(Failure { error, retry_after });
        }
        Ok(parse_completion(&bytes, model)?)
    }

    fn transport_error(&self, error: reqwest::Error) -> Failure {
        // The URL is dropped from reqwest's message because it may carry a password.
        let error = error.without_url();
        let mut message = format!("request to {} failed: {error}", self.endpoint_display);
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        let message = self.redact(&message);
        let code = if error.is_timeout() {
            "timeout"
        } else if error.is_connect() {
            "connection_failed"
        } else {
            "request_failed"
        };
        ChatError::retryable(code, message).into()
    }

    fn status_error(&self, status: StatusCode, body: &[u8]) -> ChatError {
        let detail = self.redact(&server_message(body));
        let message = format!("{} returned HTTP {status}: {detail}", self.endpoint_display);
        match status.as_u16() {
            429 => ChatError::retryable("rate_limited", message),
            408 => ChatError::retryable("timeout", message),
            500..=599 => ChatError::retryable("server_error", message),
            400 | 422 => ChatError::fatal("bad_request", message),
            401 | 403 => ChatError::fatal("unauthorized", format!("{message}; check LLM_API_KEY")),
            404 => ChatError::fatal(
                "not_found",
                format!(
                    "{message}; check LLM_BASE_URL (it usually ends in /v1) and the model name"
                ),
            ),
            _ => ChatError::fatal("client_error", message),
        }
    }

    fn redact(&self, text: &str) -> String {
        match &self.api_key {
            Some(key) => text.replace(key.as_str(), "<redacted>"),
            None => text.to_string(),
        }
    }
}

#[async_trait]
impl ChatModel for OpenAiCompatible {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ChatError> {
        let Some(model) = request.model.clone().or_else(|| self.default_model.clone()) else {
            return Err(ChatError::fatal(
                "model_not_set",
                "the request names no model and LLM_MODEL is not set; set LLM_MODEL to a model \
                 the server at LLM_BASE_URL serves",
            ));
        };
        let body = request_body(&model, &request);

        let mut retries = 0;
        loop {
            let started = std::time::Instant::now();
            let failure = match self.send_once(&body, &model).await {
                Ok(response) => {
                    tracing::debug!(
                        provider = PROVIDER,
                        model = %response.model,
                        latency_ms = started.elapsed().as_millis() as u64,
                        total_tokens = response.usage.total_tokens,
                        "model call succeeded"
                    );
                    return Ok(response);
                }
                Err(failure) => failure,
            };
            if !failure.error.retryable || retries >= self.max_retries {
                tracing::warn!(
                    provider = PROVIDER,
                    model = %model,
                    code = %failure.error.code,
                    retries,
                    error = %failure.error.message,
                    "model call failed"
                );
                return Err(failure.error);
            }
            let delay = backoff(retries, failure.retry_after);
            tracing::warn!(
                provider = PROVIDER,
                model = %model,
                code = %failure.error.code,
                retry = retries + 1,
                max_retries = self.max_retries,
                delay_ms = delay.as_millis() as u64,
                error = %failure.error.message,
                "model call failed; retrying"
            );
            tokio::time::sleep(delay).await;
            retries += 1;
        }
    }

    fn provider(&self) -> &str {
        PROVIDER
    }
}

/// Checks `base_url` and appends `chat/completions` to its path.
fn chat_completions_url(base_url: &str) -> Result<Url, String> {
    let invalid = |reason: &str| {
        format!(
            "invalid LLM base URL {base_url:?}: {reason}; expected an http:// or https:// URL such \
             as http://127.0.0.1:11434/v1"
        )
    };
    let url = Url::parse(base_url).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(&format!(
            "scheme {:?} is not supported",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    let joined = format!("{}/chat/completions", base_url.trim_end_matches('/'));
    Url::parse(&joined).map_err(|e| invalid(&e.to_string()))
}

fn request_body(model: &str, request: &ChatRequest) -> Value {
    let mut body = json!({
        "model": model,
        "messages": request.messages,
        "stream": false,
    });
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    if let Some(max_tokens) = request.max_tokens {
        body["max_tokens"] = json!(max_tokens);
    }
    body
}

#[derive(Deserialize)]
struct CompletionBody {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<UsageBody>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    /// Null when the model only called tools, which these requests never offer.
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct UsageBody {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    #[serde(default)]
    total_tokens: Option<u32>,
}

/// Parses a completion; `requested_model` names the model when the reply does not.
fn parse_completion(bytes: &[u8], requested_model: &str) -> Result<ChatResponse, ChatError> {
    let body: CompletionBody = serde_json::from_slice(bytes).map_err(|e| {
        ChatError::fatal(
            "invalid_response",
            format!(
                "the model server's reply is not a chat completion: {e}; reply starts with {:?}",
                truncate(&String::from_utf8_lossy(bytes), 200)
            ),
        )
    })?;
    let Some(choice) = body.choices.into_iter().next() else {
        return Err(ChatError::fatal(
            "invalid_response",
            "the model server's reply has no choices",
        ));
    };
    let usage = body.usage.map_or(Usage::default(), |u| Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u
            .total_tokens
            .unwrap_or(u.prompt_tokens.saturating_add(u.completion_tokens)),
    });
    Ok(ChatResponse {
        text: choice.message.content.unwrap_or_default(),
        model: body.model.unwrap_or_else(|| requested_model.to_string()),
        usage,
        provider: PROVIDER.to_string(),
    })
}

/// Extracts the error message from an error body: OpenAI's `{"error": {"message": ...}}`,
/// Ollama's `{"error": "..."}`, or the body as text.
fn server_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed.as_ref().and_then(|value| {
        let error = value.get("error")?;
        error
            .get("message")
            .and_then(Value::as_str)
            .or_else(|| error.as_str())
            .map(str::to_string)
    });
    let message = message.unwrap_or_else(|| text.trim().to_string());
    if message.is_empty() {
        return "empty response body".to_string();
    }
    truncate(&message, MAX_ERROR_CHARS)
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((offset, _)) => format!("{}…", &text[..offset]),
        None => text.to_string(),
    }
}

/// Reads `Retry-After` as seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// Computes the delay before retry number `retries + 1`, at most [`MAX_BACKOFF`]. It is the
/// server's `Retry-After` when the server sent one. Otherwise it is [`BASE_BACKOFF`], doubled per
/// retry, plus up to 25 % random jitter.
fn backoff(retries: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(wait) = retry_after {
        return wait.min(MAX_BACKOFF);
    }
    let exponential = BASE_BACKOFF.saturating_mul(2u32.saturating_pow(retries.min(16)));
    let jitter = exponential.mul_f64(rand::random::<f64>() * 0.25);
    (exponential + jitter).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn endpoint_appends_path() {
        let url = chat_completions_url("http://127.0.0.1:11434/v1/").expect("valid URL");
        assert_eq!(url.as_str(), "http://127.0.0.1:11434/v1/chat/completions");
    }

    #[test]
    fn debug_hides_url_password() {
        let settings = LlmSettings::default();
        let client = OpenAiCompatible::new("http://user:hunter2@127.0.0.1:8080/v1", &settings)
            .expect("client");
        let debug = format!("{client:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(
            debug.contains("127.0.0.1:8080/v1/chat/completions"),
            "{debug}"
        );
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
    }

    #[test]
    fn retry_after_reads_http_date() {
        let mut headers = HeaderMap::new();
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        // A date in the past means retry now.
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));

        let future = (chrono::Utc::now() + chrono::Duration::seconds(100))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&future).expect("header"));
        let wait = retry_after(&headers).expect("date");
        assert!(wait > Duration::from_secs(90), "{wait:?}");
        assert!(wait <= Duration::from_secs(100), "{wait:?}");
    }

    #[test]
    fn retry_after_ignores_garbage() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn backoff_is_capped() {
        assert_eq!(backoff(0, Some(Duration::from_secs(3600))), MAX_BACKOFF);
        assert_eq!(backoff(30, None), MAX_BACKOFF);
        let first = backoff(0, None);
        assert!(first >= BASE_BACKOFF, "{first:?}");
        assert!(first <= BASE_BACKOFF.mul_f64(1.25), "{first:?}");
    }

    #[test]
    fn server_message_reads_openai_and_ollama_shapes() {
        assert_eq!(
            server_message(br#"{"error": {"message": "model not found", "type": "x"}}"#),
            "model not found"
        );
        assert_eq!(
            server_message(br#"{"error": "model \"m\" not found"}"#),
            "model \"m\" not found"
        );
        assert_eq!(server_message(b"  plain text  "), "plain text");
        assert_eq!(server_message(b""), "empty response body");
    }

    #[test]
    fn completion_without_usage_has_zero_usage() {
        let response = parse_completion(br#"{"choices": [{"message": {"content": "hi"}}]}"#, "m")
            .expect("valid");
        assert_eq!(response.text, "hi");
        assert_eq!(response.model, "m");
        assert_eq!(response.usage, Usage::default());
    }

    #[test]
    fn completion_without_choices_is_invalid() {
        let error = parse_completion(br#"{"choices": []}"#, "m").expect_err("no choices");
        assert_eq!(error.code, "invalid_response");
        assert!(!error.retryable);
    }
}
