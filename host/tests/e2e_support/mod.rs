//! Shared pieces of the end-to-end tests: a temporary data and plugins directory, `jobhost`
//! processes with their JSON logs, an HTTP client with polling, and a local OpenAI-compatible
//! model server. Everything listens on and talks to 127.0.0.1 only.

#![allow(dead_code)]

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::{Value, json};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Bound on every wait in these tests. It only stops a hung test, and nothing asserts on speed.
pub const WAIT: Duration = Duration::from_secs(180);

/// A temporary data directory and a plugins directory holding copies of the bundled plugins.
pub struct TestDirs {
    pub root: TempDir,
    pub data_dir: PathBuf,
    pub plugins_dir: PathBuf,
}

impl TestDirs {
    pub fn new() -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let data_dir = root.path().join("data");
        let plugins_dir = root.path().join("plugins");
        std::fs::create_dir_all(&data_dir).expect("data dir");
        std::fs::create_dir_all(&plugins_dir).expect("plugins dir");
        copy_plugins(Path::new(env!("JOBHOST_BUNDLED_PLUGINS_DIR")), &plugins_dir);
        TestDirs {
            root,
            data_dir,
            plugins_dir,
        }
    }

    /// Adds the test plugin (`TEST_*` job types) to the plugins directory.
    pub fn add_testkit(&self) {
        std::fs::copy(
            env!("JOBHOST_TESTKIT_WASM"),
            self.plugins_dir.join("testkit.wasm"),
        )
        .expect("copy testkit.wasm");
    }
}

/// Copies every `.wasm` and `.toml` file of `from` into `to`.
pub fn copy_plugins(from: &Path, to: &Path) {
    let mut copied = 0;
    for entry in std::fs::read_dir(from)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", from.display()))
    {
        let path = entry.expect("dir entry").path();
        let is_plugin_file = path
            .extension()
            .is_some_and(|ext| ext == "wasm" || ext == "toml");
        if is_plugin_file {
            let name = path.file_name().expect("file name");
            std::fs::copy(&path, to.join(name)).expect("copy plugin");
            copied += 1;
        }
    }
    assert!(copied > 0, "no plugins in {}", from.display());
}

/// A running `jobhost` process whose stderr (JSON log lines) goes to a file.
pub struct Jobhost {
    pub name: String,
    child: Child,
    log_path: PathBuf,
}

impl Jobhost {
    /// Starts `jobhost <args>` with exactly `envs` among the jobhost settings, JSON logs and
    /// `RUST_LOG=info` unless `envs` sets them.
    pub fn start(name: &str, log_dir: &Path, args: &[&str], envs: &[(&str, String)]) -> Self {
        let log_path = log_dir.join(format!("{name}.log"));
        let log = File::create(&log_path).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_jobhost"));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        // Every setting the binary reads (`up` reads them all) is removed from the inherited
        // environment, so that the developer's shell cannot change a test.
        for setting in jobhost::config::environment_variables("up") {
            command.env_remove(setting);
        }
        command.env("LOG_FORMAT", "json").env("RUST_LOG", "info");
        for (key, value) in envs {
            command.env(key, value);
        }
        let child = command.spawn().expect("start jobhost");
        Jobhost {
            name: name.to_string(),
            child,
            log_path,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Returns the log lines parsed as JSON, skipping lines that are not JSON.
    pub fn log_lines(&self) -> Vec<Value> {
        self.log()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits for a log line whose `message` is `message` and returns it.
    pub fn wait_for_message(&mut self, message: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self
                .log_lines()
                .into_iter()
                .find(|line| line["message"] == message)
            {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited with {status} before logging {message:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not log {message:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the `api listening` line and returns `http://<address>`.
    pub fn wait_for_api(&mut self) -> String {
        let line = self.wait_for_message("api listening");
        let address = line["addr"].as_str().expect("addr field").to_string();
        format!("http://{address}")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status;
        }
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop after SIGTERM:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Jobhost {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `jobhost serve` on a free port of 127.0.0.1 and returns it with its base URL.
pub fn start_serve(dirs: &TestDirs, extra: &[(&str, String)]) -> (Jobhost, String) {
    let mut envs = vec![
        ("DATA_DIR", dirs.data_dir.display().to_string()),
        ("LISTEN_ADDR", "127.0.0.1:0".to_string()),
    ];
    envs.extend(extra.iter().cloned());
    let mut serve = Jobhost::start("serve", dirs.root.path(), &["serve"], &envs);
    let base = serve.wait_for_api();
    (serve, base)
}

/// Starts `jobhost worker` on the test directories and waits until it claims jobs.
pub fn start_worker(dirs: &TestDirs, name: &str, extra: &[(&str, String)]) -> Jobhost {
    let mut envs = vec![
        ("DATA_DIR", dirs.data_dir.display().to_string()),
        ("PLUGINS_DIR", dirs.plugins_dir.display().to_string()),
        ("WORKER_ID", name.to_string()),
        ("WORKER_CONCURRENCY", "4".to_string()),
        ("WORKER_POLL_MS", "200".to_string()),
    ];
    envs.extend(extra.iter().cloned());
    let mut worker = Jobhost::start(name, dirs.root.path(), &["worker"], &envs);
    worker.wait_for_message("worker started");
    worker
}

/// A JSON HTTP client for one API base URL.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Client {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("HTTP client"),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    pub async fn post(&self, path: &str, body: &Value, request_id: Option<&str>) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(request_id) = request_id {
            request = request.header("x-request-id", request_id);
        }
        let response = request.send().await.expect("POST");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Polls `GET path` until `done` accepts the body, and panics with the last body after
    /// `WAIT`.
    pub async fn wait_for(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, body) = self.get(path).await;
            if done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "GET {path} never matched; last body: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One chat request the model server received.
#[derive(Debug, Clone)]
pub struct ReceivedChat {
    pub authorization: Option<String>,
    pub body: Value,
}

/// A local OpenAI-compatible chat-completions server with a fixed reply and an optional delay.
pub struct ModelServer {
    pub base_url: String,
    pub received: Arc<Mutex<Vec<ReceivedChat>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct ModelState {
    received: Arc<Mutex<Vec<ReceivedChat>>>,
    delay: Duration,
}

impl ModelServer {
    pub async fn start(delay: Duration) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = ModelState {
            received: received.clone(),
            delay,
        };
        let router = axum::Router::new()
            .route("/v1/chat/completions", post(chat_completion))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind model server");
        let address = listener.local_addr().expect("model server address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        ModelServer {
            base_url: format!("http://{address}/v1"),
            received,
            task,
        }
    }

    pub fn requests(&self) -> Vec<ReceivedChat> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The text every reply of the model server carries.
pub const MODEL_REPLY: &str =
    "Licensing every release would slow research, but audits of the largest models are reasonable.";

async fn chat_completion(
    State(state): State<ModelState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let authorization = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let model = body["model"].as_str().unwrap_or("mock-default").to_string();
    state.received.lock().expect("lock").push(ReceivedChat {
        authorization,
        body,
    });
    tokio::time::sleep(state.delay).await;
    Json(json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": MODEL_REPLY },
            "finish_reason": "stop",
        }],
        "usage": { "prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52 },
    }))
}

/// True when `body["status"]` is a terminal job status.
pub fn is_finished_status(body: &Value) -> bool {
    matches!(
        body["status"].as_str(),
        Some("completed" | "failed" | "cancelled")
    )
}
