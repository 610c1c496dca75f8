//! The OpenAI-compatible client against local servers on 127.0.0.1: an axum server that replays
//! scripted replies and records requests, and raw TCP servers that never reply.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use jobhost::llm::{
    ChatMessage, ChatModel, ChatRequest, LlmSettings, OpenAiCompatible, Role, build_chat_model,
};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Guard against a hanging test; no test waits this long when the code works.
const TEST_GUARD: Duration = Duration::from_secs(30);

/// One scripted reply.
struct Reply {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Reply {
    fn json(status: StatusCode, body: Value) -> Self {
        Reply {
            status,
            headers: vec![("content-type", "application/json".to_string())],
            body: body.to_string(),
        }
    }

    fn completion(text: &str) -> Self {
        Reply::json(
            StatusCode::OK,
            json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": "test-model-v2",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
            }),
        )
    }

    fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

/// A request the mock server received.
struct Recorded {
    headers: HeaderMap,
    body: Value,
}

#[derive(Default)]
struct Script {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
}

impl Script {
    fn request_count(&self) -> usize {
        self.requests.lock().expect("requests lock").len()
    }
}

async fn chat_completions(
    State(script): State<Arc<Script>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body = serde_json::from_str(&body).unwrap_or(Value::Null);
    script
        .requests
        .lock()
        .expect("requests lock")
        .push(Recorded { headers, body });
    let reply = script.replies.lock().expect("replies lock").pop_front();
    let Some(reply) = reply else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no scripted reply left").into_response();
    };
    let mut response = (reply.status, reply.body).into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    response
}

/// Starts the scripted server on 127.0.0.1 and returns its base URL (ending in `/v1`).
async fn start_server(replies: Vec<Reply>) -> (String, Arc<Script>) {
    let script = Arc::new(Script {
        replies: Mutex::new(replies.into()),
        requests: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .with_state(script.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (format!("http://{addr}/v1"), script)
}

fn settings(base_url: &str) -> LlmSettings {
    LlmSettings {
        base_url: Some(base_url.to_string()),
        api_key: None,
        model: Some("test-model".to_string()),
        request_timeout: Duration::from_secs(10),
        max_retries: 3,
    }
}

fn client(settings: &LlmSettings) -> OpenAiCompatible {
    let base_url = settings.base_url.as_deref().expect("base URL");
    OpenAiCompatible::new(base_url, settings).expect("client")
}

fn request() -> ChatRequest {
    ChatRequest {
        messages: vec![
            ChatMessage {
                role: Role::System,
                content: "You are terse.".to_string(),
            },
            ChatMessage {
                role: Role::User,
                content: "Say hi.".to_string(),
            },
        ],
        model: None,
        temperature: Some(0.5),
        max_tokens: Some(64),
    }
}

#[tokio::test]
async fn success_returns_text_and_usage() {
    let (base_url, script) = start_server(vec![Reply::completion("hi there")]).await;
    let model = build_chat_model(&settings(&base_url)).expect("client");
    assert_eq!(model.provider(), "openai-compatible");

    let response = model.chat(request()).await.expect("completion");
    assert_eq!(response.text, "hi there");
    assert_eq!(response.model, "test-model-v2");
    assert_eq!(response.provider, "openai-compatible");
    assert_eq!(response.usage.prompt_tokens, 12);
    assert_eq!(response.usage.completion_tokens, 5);
    assert_eq!(response.usage.total_tokens, 17);

    let requests = script.requests.lock().expect("requests lock");
    assert_eq!(requests.len(), 1);
    let body = &requests[0].body;
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][1]["role"], "user");
    assert_eq!(body["messages"][1]["content"], "Say hi.");
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["stream"], false);
    assert!(requests[0].headers.get("authorization").is_none());
}

#[tokio::test]
async fn request_model_overrides_default() {
    let (base_url, script) = start_server(vec![Reply::completion("ok")]).await;
    let mut chat = request();
    chat.model = Some("other-model".to_string());
    client(&settings(&base_url))
        .chat(chat)
        .await
        .expect("completion");
    let requests = script.requests.lock().expect("requests lock");
    assert_eq!(requests[0].body["model"], "other-model");
}

#[tokio::test]
async fn missing_usage_counts_zero() {
    let body = json!({"choices": [{"message": {"role": "assistant", "content": "x"}}]});
    let (base_url, _script) = start_server(vec![Reply::json(StatusCode::OK, body)]).await;
    let response = client(&settings(&base_url))
        .chat(request())
        .await
        .expect("completion");
    assert_eq!(response.usage.total_tokens, 0);
    assert_eq!(response.model, "test-model");
}

#[tokio::test]
async fn rate_limit_waits_retry_after_then_succeeds() {
    let limited = Reply::json(
        StatusCode::TOO_MANY_REQUESTS,
        json!({"error": {"message": "slow down"}}),
    )
    .with_header("retry-after", "1");
    let (base_url, script) = start_server(vec![limited, Reply::completion("done")]).await;

    let started = Instant::now();
    let response = client(&settings(&base_url))
        .chat(request())
        .await
        .expect("completion after retry");
    assert_eq!(response.text, "done");
    assert_eq!(script.request_count(), 2);
    // A lower bound only: the client must not retry before the server's Retry-After.
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn server_errors_exhaust_retries() {
    let failing = || {
        Reply::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": {"message": "backend overloaded"}}),
        )
    };
    let (base_url, script) = start_server(vec![failing(), failing(), failing()]).await;
    let mut settings = settings(&base_url);
    settings.max_retries = 2;

    let error = client(&settings)
        .chat(request())
        .await
        .expect_err("retries exhausted");
    assert!(error.retryable);
    assert_eq!(error.code, "server_error");
    assert!(error.message.contains("500"), "{}", error.message);
    assert!(
        error.message.contains("backend overloaded"),
        "{}",
        error.message
    );
    assert_eq!(script.request_count(), 3);
}

#[tokio::test]
async fn bad_request_is_fatal_with_server_message() {
    let reply = Reply::json(
        StatusCode::BAD_REQUEST,
        json!({"error": {"message": "model 'nope' does not exist", "type": "invalid_request"}}),
    );
    let (base_url, script) = start_server(vec![reply]).await;

    let error = client(&settings(&base_url))
        .chat(request())
        .await
        .expect_err("bad request");
    assert!(!error.retryable);
    assert_eq!(error.code, "bad_request");
    assert!(error.message.contains("400"), "{}", error.message);
    assert!(
        error.message.contains("model 'nope' does not exist"),
        "{}",
        error.message
    );
    assert_eq!(script.request_count(), 1);
}

#[tokio::test]
async fn malformed_json_is_fatal() {
    let reply = Reply {
        status: StatusCode::OK,
        headers: vec![("content-type", "application/json".to_string())],
        body: "{\"choices\": [".to_string(),
    };
    let (base_url, script) = start_server(vec![reply]).await;
    let error = client(&settings(&base_url))
        .chat(request())
        .await
        .expect_err("malformed reply");
    assert!(!error.retryable);
    assert_eq!(error.code, "invalid_response");
    assert_eq!(script.request_count(), 1);
}

#[tokio::test]
async fn api_key_is_sent_and_never_shown() {
    const KEY: &str = "sk-test-0123456789abcdef";
    let unauthorized = Reply::json(
        StatusCode::UNAUTHORIZED,
        json!({"error": {"message": format!("Incorrect API key provided: {KEY}")}}),
    );
    let (base_url, script) = start_server(vec![Reply::completion("ok"), unauthorized]).await;
    let mut settings = settings(&base_url);
    settings.api_key = Some(KEY.to_string());
    let model = build_chat_model(&settings).expect("client");

    model.chat(request()).await.expect("completion");
    let error = model.chat(request()).await.expect_err("unauthorized");

    let requests = script.requests.lock().expect("requests lock");
    for recorded in requests.iter() {
        let header = recorded
            .headers
            .get("authorization")
            .expect("authorization header");
        assert_eq!(header.to_str().expect("ascii"), format!("Bearer {KEY}"));
    }
    assert!(!error.retryable);
    assert_eq!(error.code, "unauthorized");
    assert!(
        error.message.contains("Incorrect API key provided"),
        "{}",
        error.message
    );
    assert!(!error.message.contains(KEY), "{}", error.message);
    assert!(!error.to_string().contains(KEY));
    assert!(!format!("{error:?}").contains(KEY));
    assert!(!format!("{model:?}").contains(KEY));
    assert!(!format!("{settings:?}").contains(KEY));
}

#[tokio::test]
async fn refused_connection_is_retryable() {
    // Bind to learn a free port, then close it so that connecting is refused.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    let mut settings = settings(&format!("http://{addr}/v1"));
    settings.max_retries = 0;

    let error = client(&settings)
        .chat(request())
        .await
        .expect_err("refused");
    assert!(error.retryable);
    assert_eq!(error.code, "connection_failed");
    assert!(
        error
            .message
            .contains(&format!("http://{addr}/v1/chat/completions")),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn missing_model_is_fatal() {
    let (base_url, script) = start_server(vec![Reply::completion("unused")]).await;
    let mut settings = settings(&base_url);
    settings.model = None;
    let error = client(&settings)
        .chat(request())
        .await
        .expect_err("no model");
    assert!(!error.retryable);
    assert_eq!(error.code, "model_not_set");
    assert_eq!(script.request_count(), 0);
}

/// Starts a server that accepts one connection, reads the request, never replies, and reports
/// through the returned receivers when the request arrived and when the client closed the
/// connection.
async fn start_silent_server() -> (SocketAddr, oneshot::Receiver<()>, oneshot::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (received_tx, received_rx) = oneshot::channel();
    let (closed_tx, closed_rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut received_tx = Some(received_tx);
        let mut buffer = [0u8; 4096];
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if let Some(tx) = received_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        }
        let _ = closed_tx.send(());
    });
    (addr, received_rx, closed_rx)
}

#[tokio::test]
async fn unanswered_request_times_out_and_closes() {
    let (addr, _received, closed) = start_silent_server().await;
    let mut settings = settings(&format!("http://{addr}/v1"));
    settings.request_timeout = Duration::from_millis(300);
    settings.max_retries = 0;

    let error = tokio::time::timeout(TEST_GUARD, client(&settings).chat(request()))
        .await
        .expect("the client's own timeout fires")
        .expect_err("timed out");
    assert!(error.retryable);
    assert_eq!(error.code, "timeout");

    tokio::time::timeout(TEST_GUARD, closed)
        .await
        .expect("the client closes the connection")
        .expect("server task reports");
}

#[tokio::test]
async fn dropped_call_closes_connection() {
    let (addr, received, closed) = start_silent_server().await;
    let mut settings = settings(&format!("http://{addr}/v1"));
    settings.request_timeout = Duration::from_secs(600);
    let model = client(&settings);

    let call = tokio::spawn(async move { model.chat(request()).await });
    tokio::time::timeout(TEST_GUARD, received)
        .await
        .expect("the request reaches the server")
        .expect("server task reports");

    // Cancelling drops the future, as the worker does on a deadline or a cancelled job.
    call.abort();
    assert!(call.await.expect_err("aborted").is_cancelled());

    tokio::time::timeout(TEST_GUARD, closed)
        .await
        .expect("dropping the call closes the connection")
        .expect("server task reports");
}
