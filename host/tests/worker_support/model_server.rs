//! Local stand-ins for a model server, bound to 127.0.0.1 on a free port.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// An OpenAI-compatible chat-completions server. Each reply is `reply <n>: <last message>`, where
/// `n` counts the requests from 1, so a test can tell which request produced which text. Requests
/// whose number is in `fail_requests` get HTTP 500.
#[derive(Clone)]
pub struct ChatServer {
    pub addr: SocketAddr,
    shared: Arc<ChatShared>,
}

struct ChatShared {
    requests: AtomicUsize,
    fail_requests: BTreeSet<usize>,
    /// The last message of every request, in arrival order.
    prompts: Mutex<Vec<String>>,
}

impl ChatServer {
    pub async fn start(fail_requests: impl IntoIterator<Item = usize>) -> Self {
        let shared = Arc::new(ChatShared {
            requests: AtomicUsize::new(0),
            fail_requests: fail_requests.into_iter().collect(),
            prompts: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(complete))
            .with_state(Arc::clone(&shared));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ChatServer { addr, shared }
    }

    /// Base URL to put in `LlmSettings::base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests received so far, failed ones included.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Returns the last message of every request, in arrival order.
    pub fn prompts(&self) -> Vec<String> {
        self.shared.prompts.lock().expect("prompts").clone()
    }
}

async fn complete(State(shared): State<Arc<ChatShared>>, Json(body): Json<Value>) -> Response {
    let number = shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let last = body["messages"]
        .as_array()
        .and_then(|messages| messages.last())
        .and_then(|message| message["content"].as_str())
        .unwrap_or_default()
        .to_string();
    shared.prompts.lock().expect("prompts").push(last.clone());
    if shared.fail_requests.contains(&number) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": { "message": "planned failure" } })),
        )
            .into_response();
    }
    let snippet: String = last.chars().take(60).collect();
    let text = format!("reply {number}: {snippet}");
    Json(json!({
        "model": body["model"].as_str().unwrap_or("test-model"),
        "choices": [ { "message": { "role": "assistant", "content": text } } ],
        "usage": { "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15 },
    }))
    .into_response()
}

/// A server that accepts connections and reads requests but never replies. It counts accepted
/// connections and connections the client closed.
#[derive(Clone)]
pub struct SilentServer {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl SilentServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (accepted_count, closed_count) = (Arc::clone(&accepted), Arc::clone(&closed));
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                accepted_count.fetch_add(1, Ordering::SeqCst);
                let closed_count = Arc::clone(&closed_count);
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    // Read until the client closes its end; a read of 0 bytes or an error means
                    // the connection is gone.
                    loop {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                    closed_count.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        SilentServer {
            addr,
            accepted,
            closed,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}
