//! The HTTP API in process: the router from `jobhost::api::router` over a file queue in a
//! temporary data directory, driven with `tower::ServiceExt::oneshot`. No worker runs here, so
//! where a test needs a run's progress it writes the events a worker and the debate plugin would
//! write.

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::Utc;
use jobhost::api::{self, ApiSettings, AppState};
use jobhost::artifacts::ArtifactStore;
use jobhost::config::Secret;
use jobhost::events::{Event, EventStore, RunContext, event_type};
use jobhost::job::JobStatus;
use jobhost::queue::{FileQueue, Queue, QueueSettings};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

struct TestApi {
    dir: TempDir,
    router: Router,
    queue: Arc<dyn Queue>,
    events: EventStore,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "response is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl TestApi {
    fn new() -> Self {
        TestApi::with_settings(ApiSettings::default())
    }

    fn with_settings(settings: ApiSettings) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let events = EventStore::open(dir.path()).expect("event store");
        let queue: Arc<dyn Queue> = Arc::new(
            FileQueue::open(dir.path(), QueueSettings::default(), events.clone()).expect("queue"),
        );
        let state = AppState::new(
            dir.path(),
            queue.clone(),
            events.clone(),
            settings,
            CancellationToken::new(),
        )
        .expect("app state");
        TestApi {
            router: api::router(state),
            dir,
            queue,
            events,
        }
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("response body");
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Reply {
        self.send(
            Request::get(uri)
                .body(Body::empty())
                .expect("request builds"),
        )
        .await
    }

    async fn post_json(&self, uri: &str, body: &Value) -> Reply {
        self.post_raw(uri, Some("application/json"), body.to_string())
            .await
    }

    async fn post_raw(&self, uri: &str, content_type: Option<&str>, body: String) -> Reply {
        let mut request = Request::post(uri);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        self.send(request.body(Body::from(body)).expect("request builds"))
            .await
    }

    /// Appends an event to `run_id` as the worker or a plugin would.
    fn append(&self, run_id: &str, job_id: &str, event_type: &str, data: Value) -> Event {
        let context = RunContext {
            run_id: run_id.to_string(),
            job_id: Some(job_id.to_string()),
            job_type: Some("RUN_DEBATE".to_string()),
            request_id: None,
            attempt: Some(1),
        };
        let event = Event::new(&context, event_type, "test").with_data(data);
        self.events.append(&event).expect("append event");
        event
    }
}

/// Files under `<data>/<sub>`, so that a test can check a rejected request wrote nothing.
fn files_under(data_dir: &Path, sub: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![data_dir.join(sub)];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn read_example(name: &str) -> Value {
    let path = examples_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_json::from_str(&text).expect("example is JSON")
}

#[tokio::test]
async fn debate_post_returns_202_with_links() {
    let api = TestApi::new();
    let reply = api
        .post_json("/api/debates", &read_example("debate-ai-regulation.json"))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());

    let body = reply.json();
    let debate_id = body["debateId"].as_str().expect("debateId");
    let job_id = body["jobId"].as_str().expect("jobId");
    let run_id = body["runId"].as_str().expect("runId");
    assert_eq!(body["status"], "pending");
    assert_eq!(body["links"]["self"], format!("/api/debates/{debate_id}"));
    assert_eq!(body["links"]["debate"], format!("/api/debates/{debate_id}"));
    assert_eq!(body["links"]["run"], format!("/api/runs/{run_id}"));
    assert_eq!(
        body["links"]["events"],
        format!("/api/runs/{run_id}/events")
    );
    assert_eq!(
        body["links"]["transcript"],
        format!("/api/debates/{debate_id}/transcript")
    );
    assert_eq!(body["links"]["job"], format!("/api/jobs/{job_id}"));
    assert!(
        api.data_dir()
            .join("debates")
            .join(format!("{debate_id}.json"))
            .is_file()
    );

    let job = api
        .queue
        .get(job_id)
        .await
        .expect("queue read")
        .expect("job exists");
    assert_eq!(job.job_type, "RUN_DEBATE");
    assert_eq!(
        job.idempotency_key.as_deref(),
        Some(format!("RUN_DEBATE:{debate_id}").as_str())
    );
    assert_eq!(job.payload["debateId"], debate_id);
    assert_eq!(job.payload["personas"].as_array().map(Vec::len), Some(3));
    assert_eq!(job.payload["settings"]["rounds"], 2);
    let request_id = reply.headers["x-request-id"].to_str().expect("header text");
    assert_eq!(job.payload["requestId"], request_id);
    assert_eq!(job.request_id.as_deref(), Some(request_id));
}

#[tokio::test]
async fn debate_repost_returns_same_job() {
    let api = TestApi::new();
    let first = api
        .post_json(
            "/api/debates",
            &json!({ "debateId": "city-cars", "topic": "Should cities ban cars?" }),
        )
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text());

    let second = api
        .post_json(
            "/api/debates/run",
            &json!({ "debateId": "city-cars", "topic": "A different topic" }),
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    assert_eq!(second.json()["jobId"], first.json()["jobId"]);
    assert_eq!(second.json()["runId"], first.json()["runId"]);

    let stored = api.get("/api/debates/city-cars").await;
    assert_eq!(stored.status, StatusCode::OK);
    assert_eq!(stored.json()["topic"], "Should cities ban cars?");
    let jobs = api.get("/api/jobs?type=RUN_DEBATE").await.json();
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn debate_repost_after_cancel_starts_new_job() {
    let api = TestApi::new();
    let request = json!({ "debateId": "retry-me", "topic": "Nuclear power in 2040" });
    let first = api.post_json("/api/debates", &request).await.json();
    let job_id = first["jobId"].as_str().expect("jobId");

    let cancelled = api
        .post_raw(&format!("/api/jobs/{job_id}/cancel"), None, String::new())
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text());
    assert_eq!(cancelled.json()["status"], "cancelled");

    let again = api.post_json("/api/debates", &request).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.text());
    assert_ne!(again.json()["jobId"], first["jobId"]);

    let stored = api.get("/api/debates/retry-me").await.json();
    assert_eq!(stored["jobId"], again.json()["jobId"]);
    assert_eq!(stored["status"], "pending");
}

#[tokio::test]
async fn debate_get_shows_progress_turns_and_usage() {
    let api = TestApi::new();
    let accepted = api
        .post_json("/api/debates", &read_example("debate-minimal.json"))
        .await
        .json();
    let debate_id = accepted["debateId"].as_str().expect("debateId");
    let run_id = accepted["runId"].as_str().expect("runId");
    let job_id = accepted["jobId"].as_str().expect("jobId");

    let turn = |index: u64, kind: &str, text: &str, resumed: bool| {
        json!({
            "debateId": debate_id, "turn": index, "round": 1, "kind": kind,
            "speakerId": "advocate", "speakerName": "The Advocate", "text": text,
            "model": "offline", "resumed": resumed,
            "usage": { "promptTokens": 10, "completionTokens": 5, "totalTokens": 15 },
        })
    };
    api.append(
        run_id,
        job_id,
        "DebateTurn",
        turn(0, "argument", "first", false),
    );
    api.append(
        run_id,
        job_id,
        "DebateTurn",
        turn(1, "argument", "second", false),
    );
    api.append(
        run_id,
        job_id,
        "DebateTurn",
        turn(1, "argument", "second", true),
    );
    api.append(
        run_id,
        job_id,
        event_type::PROGRESS,
        json!({ "done": 2, "total": 9, "message": "turn 2 of 9" }),
    );

    let view = api.get(&format!("/api/debates/{debate_id}")).await;
    assert_eq!(view.status, StatusCode::OK, "{}", view.text());
    let view = view.json();
    assert_eq!(view["status"], "pending");
    assert_eq!(
        view["topic"],
        "Is a four-day work week good for small companies?"
    );
    assert_eq!(view["personas"].as_array().map(Vec::len), Some(3));
    assert_eq!(view["turns"].as_array().map(Vec::len), Some(2));
    assert_eq!(view["turns"][1]["text"], "second");
    assert_eq!(view["progress"]["done"], 2);
    assert_eq!(view["progress"]["total"], 9);
    assert_eq!(view["usage"]["totalTokens"], 30);
    assert!(view["synthesis"].is_null());
}

#[tokio::test]
async fn transcript_is_404_until_stored() {
    let api = TestApi::new();
    let accepted = api
        .post_json("/api/debates", &json!({ "topic": "Homework bans" }))
        .await
        .json();
    let debate_id = accepted["debateId"].as_str().expect("debateId");
    let run_id = accepted["runId"].as_str().expect("runId");
    let uri = format!("/api/debates/{debate_id}/transcript");

    let missing = api.get(&uri).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_code(), "transcript_not_ready");

    let artifacts = ArtifactStore::open(api.data_dir()).expect("artifact store");
    artifacts
        .put(
            run_id,
            "transcript.md",
            "text/markdown",
            b"# Homework bans\n\nTranscript.\n",
        )
        .expect("put transcript");
    let found = api.get(&uri).await;
    assert_eq!(found.status, StatusCode::OK);
    let content_type = found.headers[header::CONTENT_TYPE]
        .to_str()
        .expect("header text");
    assert!(content_type.starts_with("text/markdown"), "{content_type}");
    assert!(found.text().starts_with("# Homework bans"));
}

#[tokio::test]
async fn debate_list_pages_newest_first() {
    let api = TestApi::new();
    let mut ids = Vec::new();
    for topic in ["Topic one", "Topic two", "Topic three"] {
        let accepted = api
            .post_json("/api/debates", &json!({ "topic": topic }))
            .await
            .json();
        ids.push(accepted["debateId"].as_str().expect("id").to_string());
    }

    let first = api.get("/api/debates?limit=2").await.json();
    let listed: Vec<&str> = first["debates"]
        .as_array()
        .expect("debates")
        .iter()
        .filter_map(|debate| debate["debateId"].as_str())
        .collect();
    assert_eq!(listed, [ids[2].as_str(), ids[1].as_str()]);
    assert_eq!(first["debates"][0]["status"], "pending");
    let cursor = first["nextCursor"].as_str().expect("cursor");

    let second = api
        .get(&format!("/api/debates?limit=2&cursor={cursor}"))
        .await
        .json();
    assert_eq!(second["debates"][0]["debateId"], ids[0].as_str());
    assert!(second["nextCursor"].is_null());
}

#[tokio::test]
async fn jobs_enqueue_read_cancel_retry() {
    let api = TestApi::new();
    let example = read_example("job-workflow.json");
    let created = api.post_json("/api/jobs", &example).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.text());
    let created = created.json();
    let job_id = created["jobId"].as_str().expect("jobId").to_string();
    assert_eq!(created["status"], "pending");

    let repeated = api.post_json("/api/jobs", &example).await;
    assert_eq!(repeated.status, StatusCode::OK);
    assert_eq!(repeated.json()["jobId"], job_id.as_str());

    let job = api.get(&format!("/api/jobs/{job_id}")).await.json();
    assert_eq!(job["type"], "RUN_WORKFLOW");
    assert_eq!(job["priority"], 10);
    assert_eq!(job["maxAttempts"], 3);
    assert_eq!(job["payload"]["name"], "weekly-report");

    let other = api
        .post_json("/api/jobs", &json!({ "type": "TEST_NOOP" }))
        .await;
    assert_eq!(other.status, StatusCode::ACCEPTED);
    let filtered = api
        .get("/api/jobs?type=RUN_WORKFLOW&status=pending")
        .await
        .json();
    assert_eq!(filtered["jobs"].as_array().map(Vec::len), Some(1));
    let paged = api.get("/api/jobs?limit=1").await.json();
    assert_eq!(paged["jobs"].as_array().map(Vec::len), Some(1));
    assert!(paged["nextCursor"].is_string());

    let cancelled = api
        .post_raw(&format!("/api/jobs/{job_id}/cancel"), None, String::new())
        .await;
    assert_eq!(cancelled.status, StatusCode::OK);
    assert_eq!(cancelled.json()["status"], "cancelled");

    let retried = api
        .post_raw(&format!("/api/jobs/{job_id}/retry"), None, String::new())
        .await;
    assert_eq!(retried.status, StatusCode::ACCEPTED, "{}", retried.text());
    assert_eq!(retried.json()["status"], "pending");
    assert_ne!(retried.json()["runId"], created["runId"]);

    let retry_pending = api
        .post_raw(&format!("/api/jobs/{job_id}/retry"), None, String::new())
        .await;
    assert_eq!(retry_pending.status, StatusCode::CONFLICT);
    assert_eq!(retry_pending.error_code(), "invalid_state");
}

#[tokio::test]
async fn completed_job_cannot_be_cancelled() {
    let api = TestApi::new();
    let created = api
        .post_json(
            "/api/jobs",
            &json!({ "type": "TEST_ECHO", "payload": { "x": 1 } }),
        )
        .await
        .json();
    let job_id = created["jobId"].as_str().expect("jobId");
    let (_, lease) = api
        .queue
        .dequeue("worker-1", &["TEST_ECHO".to_string()])
        .await
        .expect("dequeue")
        .expect("a job is due");
    api.queue.ack(&lease, json!({ "x": 1 })).await.expect("ack");

    let reply = api
        .post_raw(&format!("/api/jobs/{job_id}/cancel"), None, String::new())
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.error_code(), "invalid_state");
}

/// A rejected request: what to send and the status and error code (and field) expected.
struct BadRequest {
    method: Method,
    uri: &'static str,
    content_type: Option<&'static str>,
    body: String,
    status: StatusCode,
    code: &'static str,
    field: Option<&'static str>,
}

fn bad(
    method: Method,
    uri: &'static str,
    content_type: Option<&'static str>,
    body: &str,
    status: StatusCode,
    code: &'static str,
    field: Option<&'static str>,
) -> BadRequest {
    BadRequest {
        method,
        uri,
        content_type,
        body: body.to_string(),
        status,
        code,
        field,
    }
}

#[tokio::test]
async fn bad_input_is_rejected_and_writes_nothing() {
    let api = TestApi::with_settings(ApiSettings {
        max_body_bytes: 4096,
        ..ApiSettings::default()
    });
    let json = Some("application/json");
    let big_topic = format!("{{\"topic\": \"{}\"}}", "x".repeat(5000));
    let cases = vec![
        bad(
            Method::POST,
            "/api/debates",
            json,
            "{\"topic\": ",
            StatusCode::BAD_REQUEST,
            "invalid_json",
            None,
        ),
        bad(
            Method::POST,
            "/api/debates",
            json,
            "",
            StatusCode::BAD_REQUEST,
            "invalid_json",
            None,
        ),
        bad(
            Method::POST,
            "/api/debates",
            json,
            "{\"topic\": \"abc\"} x",
            StatusCode::BAD_REQUEST,
            "invalid_json",
            None,
        ),
        bad(
            Method::POST,
            "/api/debates",
            json,
            "{\"topic\": 42}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("topic"),
        ),
        bad(
            Method::POST,
            "/api/debates",
            json,
            "{}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            None,
        ),
        bad(
            Method::POST,
            "/api/debates",
            json,
            "{\"topic\": \"abc\", \"settings\": {\"rounds\": \"two\"}}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("settings.rounds"),
        ),
        bad(
            Method::POST,
            "/api/debates",
            json,
            "{\"topic\": \"abc\", \"settings\": {\"rounds\": 11}}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("settings.rounds"),
        ),
        bad(
            Method::POST,
            "/api/debates",
            json,
            "{\"topic\": \"ab\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("topic"),
        ),
        bad(
            Method::POST,
            "/api/debates",
            json,
            "{\"topic\": \"abc\", \"personas\": [{\"id\": \"a\", \"displayName\": \"A\"}, {\"id\": \"a\", \"displayName\": \"B\"}]}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("personas[1].id"),
        ),
        bad(
            Method::POST,
            "/api/debates",
            json,
            "{\"topic\": \"abc\", \"personas\": [{\"id\": \"a\"}, {\"id\": \"b\", \"displayName\": \"B\"}]}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("personas[0]"),
        ),
        bad(
            Method::POST,
            "/api/debates",
            json,
            "{\"topic\": \"abc\", \"debateId\": \"../etc\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("debateId"),
        ),
        bad(
            Method::POST,
            "/api/debates",
            json,
            "{\"topic\": \"abc\", \"rounds\": 3}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            None,
        ),
        bad(
            Method::POST,
            "/api/debates",
            Some("text/plain"),
            "{\"topic\": \"abc\"}",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
        ),
        bad(
            Method::POST,
            "/api/debates",
            None,
            "{\"topic\": \"abc\"}",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
        ),
        bad(
            Method::POST,
            "/api/debates",
            json,
            &big_topic,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            None,
        ),
        bad(
            Method::POST,
            "/api/jobs",
            json,
            "{\"payload\": {}}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            None,
        ),
        bad(
            Method::POST,
            "/api/jobs",
            json,
            "{\"type\": \"../x\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("type"),
        ),
        bad(
            Method::POST,
            "/api/jobs",
            json,
            "{\"type\": \"T\", \"maxAttempts\": 0}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("maxAttempts"),
        ),
        bad(
            Method::POST,
            "/api/jobs",
            json,
            "{\"type\": \"T\", \"priority\": 5000}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("priority"),
        ),
        bad(
            Method::POST,
            "/api/jobs",
            json,
            "{\"type\": \"T\", \"runAt\": \"tomorrow\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("runAt"),
        ),
        bad(
            Method::POST,
            "/api/jobs",
            json,
            "{\"type\": \"T\", \"idempotencyKey\": \"\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("idempotencyKey"),
        ),
        bad(
            Method::POST,
            "/api/jobs",
            json,
            "{\"type\": \"RUN_DEBATE\", \"payload\": {}, \"idempotencyKey\": \"RUN_DEBATE:board\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("type"),
        ),
        bad(
            Method::POST,
            "/api/debates",
            json,
            "{\"debateId\": \"run\", \"topic\": \"Tabs or spaces?\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("debateId"),
        ),
        bad(
            Method::GET,
            "/api/nothing-here",
            None,
            "",
            StatusCode::NOT_FOUND,
            "route_not_found",
            None,
        ),
        bad(
            Method::DELETE,
            "/api/jobs",
            None,
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            None,
        ),
        bad(
            Method::GET,
            "/api/jobs/0190a0b0-0000-7000-8000-000000000000",
            None,
            "",
            StatusCode::NOT_FOUND,
            "job_not_found",
            None,
        ),
        bad(
            Method::POST,
            "/api/jobs/0190a0b0-0000-7000-8000-000000000000/cancel",
            None,
            "",
            StatusCode::NOT_FOUND,
            "job_not_found",
            None,
        ),
        bad(
            Method::GET,
            "/api/runs/0190a0b0-0000-7000-8000-000000000000",
            None,
            "",
            StatusCode::NOT_FOUND,
            "run_not_found",
            None,
        ),
        bad(
            Method::GET,
            "/api/runs/0190a0b0-0000-7000-8000-000000000000/events",
            None,
            "",
            StatusCode::NOT_FOUND,
            "run_not_found",
            None,
        ),
        bad(
            Method::GET,
            "/api/debates/no-such-debate",
            None,
            "",
            StatusCode::NOT_FOUND,
            "debate_not_found",
            None,
        ),
        bad(
            Method::GET,
            "/api/debates/no-such-debate/transcript",
            None,
            "",
            StatusCode::NOT_FOUND,
            "debate_not_found",
            None,
        ),
        bad(
            Method::GET,
            "/api/jobs/bad.id",
            None,
            "",
            StatusCode::BAD_REQUEST,
            "invalid_id",
            None,
        ),
        bad(
            Method::GET,
            "/api/runs/..%2Fqueue",
            None,
            "",
            StatusCode::BAD_REQUEST,
            "invalid_id",
            None,
        ),
        bad(
            Method::GET,
            "/api/debates/a%20b",
            None,
            "",
            StatusCode::BAD_REQUEST,
            "invalid_id",
            None,
        ),
        bad(
            Method::GET,
            "/api/jobs?status=done",
            None,
            "",
            StatusCode::BAD_REQUEST,
            "invalid_query",
            None,
        ),
        bad(
            Method::GET,
            "/api/jobs?limit=0",
            None,
            "",
            StatusCode::BAD_REQUEST,
            "invalid_query",
            None,
        ),
        bad(
            Method::GET,
            "/api/runs?limit=abc",
            None,
            "",
            StatusCode::BAD_REQUEST,
            "invalid_query",
            None,
        ),
        bad(
            Method::GET,
            "/api/debates?cursor=../x",
            None,
            "",
            StatusCode::BAD_REQUEST,
            "invalid_query",
            None,
        ),
    ];

    for case in cases {
        let mut request = Request::builder().method(case.method.clone()).uri(case.uri);
        if let Some(content_type) = case.content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let reply = api
            .send(
                request
                    .body(Body::from(case.body.clone()))
                    .expect("request builds"),
            )
            .await;
        let label = format!("{} {} {:?}", case.method, case.uri, case.body);
        assert_eq!(reply.status, case.status, "{label}: {}", reply.text());
        assert_eq!(reply.error_code(), case.code, "{label}: {}", reply.text());
        let body = reply.json();
        assert!(body["error"]["message"].is_string(), "{label}");
        if let Some(field) = case.field {
            assert_eq!(body["error"]["field"], field, "{label}: {}", reply.text());
        }
        assert!(reply.headers.contains_key("x-request-id"), "{label}");
    }

    for sub in ["queue/jobs", "queue/keys", "debates", "events", "artifacts"] {
        assert_eq!(
            files_under(api.data_dir(), sub),
            Vec::<PathBuf>::new(),
            "{sub}"
        );
    }
}

#[tokio::test]
async fn token_is_required_on_post_routes() {
    let api = TestApi::with_settings(ApiSettings {
        api_token: Some(Secret::new("s3cret-token")),
        ..ApiSettings::default()
    });
    let body = json!({ "topic": "Token test" }).to_string();
    let post = |authorization: Option<&str>| {
        let mut request =
            Request::post("/api/debates").header(header::CONTENT_TYPE, "application/json");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        request
            .body(Body::from(body.clone()))
            .expect("request builds")
    };

    let missing = api.send(post(None)).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.error_code(), "unauthorized");
    assert_eq!(missing.headers[header::WWW_AUTHENTICATE], "Bearer");
    assert!(!missing.text().contains("s3cret-token"));

    let wrong = api.send(post(Some("Bearer s3cret-tokem"))).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let basic = api.send(post(Some("Basic s3cret-token"))).await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
    let cancel = api
        .post_raw("/api/jobs/some-job/cancel", None, String::new())
        .await;
    assert_eq!(cancel.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        files_under(api.data_dir(), "queue/jobs"),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        files_under(api.data_dir(), "debates"),
        Vec::<PathBuf>::new()
    );

    let right = api.send(post(Some("Bearer s3cret-token"))).await;
    assert_eq!(right.status, StatusCode::ACCEPTED, "{}", right.text());
    let read = api.get("/api/debates").await;
    assert_eq!(read.status, StatusCode::OK);
}

#[tokio::test]
async fn request_id_round_trips_onto_job_and_events() {
    let api = TestApi::new();
    let request = Request::post("/api/jobs")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-request-id", "client-req-42")
        .body(Body::from(json!({ "type": "TEST_NOOP" }).to_string()))
        .expect("request builds");
    let reply = api.send(request).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(reply.headers["x-request-id"], "client-req-42");

    let body = reply.json();
    let job_id = body["jobId"].as_str().expect("jobId");
    let run_id = body["runId"].as_str().expect("runId");
    let job = api.queue.get(job_id).await.expect("read").expect("job");
    assert_eq!(job.request_id.as_deref(), Some("client-req-42"));
    let events = api.events.read(run_id).expect("events");
    assert!(!events.is_empty(), "the queue records RunQueued");
    for event in &events {
        assert_eq!(event.request_id.as_deref(), Some("client-req-42"));
    }

    let invalid = Request::get("/healthz")
        .header("x-request-id", "has spaces/and slashes")
        .body(Body::empty())
        .expect("request builds");
    let reply = api.send(invalid).await;
    let replaced = reply.headers["x-request-id"].to_str().expect("header text");
    assert_ne!(replaced, "has spaces/and slashes");
    assert!(jobhost::job::validate_id("request id", replaced).is_ok());
}

#[tokio::test]
async fn runs_merge_queue_and_event_sources() {
    let api = TestApi::new();
    let pending = api
        .post_json("/api/jobs", &json!({ "type": "TEST_NOOP" }))
        .await
        .json();
    let finished = api
        .post_json("/api/jobs", &json!({ "type": "TEST_ECHO", "payload": 7 }))
        .await
        .json();
    let finished_run = finished["runId"].as_str().expect("runId");
    let finished_job = finished["jobId"].as_str().expect("jobId");

    // Play the worker: claim, record the attempt, complete.
    let (job, lease) = api
        .queue
        .dequeue("worker-1", &["TEST_ECHO".to_string()])
        .await
        .expect("dequeue")
        .expect("a job is due");
    let context = RunContext::of_job(&job);
    api.events
        .append(&Event::new(&context, event_type::RUN_STARTED, "worker"))
        .expect("append");
    api.queue.ack(&lease, json!(7)).await.expect("ack");
    api.events
        .append(
            &Event::new(&context, event_type::RUN_FINISHED, "worker")
                .with_data(json!({ "status": "completed" }))
                .with_latency_ms(12),
        )
        .expect("append");

    let all = api.get("/api/runs").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text());
    let runs = all.json()["runs"].as_array().cloned().expect("runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["runId"], finished["runId"], "newest first");
    assert_eq!(runs[0]["source"], "events");
    assert_eq!(runs[0]["status"], "completed");
    assert_eq!(runs[0]["latencyMs"], 12);
    assert_eq!(runs[1]["runId"], pending["runId"]);
    assert_eq!(runs[1]["source"], "queue");
    assert_eq!(runs[1]["status"], "pending");

    let completed = api.get("/api/runs?status=completed").await.json();
    assert_eq!(completed["runs"].as_array().map(Vec::len), Some(1));
    let by_type = api.get("/api/runs?type=TEST_NOOP").await.json();
    assert_eq!(by_type["runs"].as_array().map(Vec::len), Some(1));
    let paged = api.get("/api/runs?limit=1").await.json();
    assert_eq!(paged["runs"].as_array().map(Vec::len), Some(1));
    let cursor = paged["nextCursor"].as_str().expect("cursor");
    let rest = api
        .get(&format!("/api/runs?limit=1&cursor={cursor}"))
        .await
        .json();
    assert_eq!(rest["runs"][0]["runId"], pending["runId"]);

    let detail = api.get(&format!("/api/runs/{finished_run}")).await.json();
    assert_eq!(detail["source"], "events");
    assert_eq!(detail["jobId"], finished_job);
    let types: Vec<&str> = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|event| event["eventType"].as_str())
        .collect();
    assert_eq!(types, ["RunQueued", "RunStarted", "RunFinished"]);

    let events = api
        .get(&format!("/api/runs/{finished_run}/events"))
        .await
        .json();
    assert_eq!(events["events"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn run_without_events_comes_from_queue() {
    let api = TestApi::new();
    let created = api
        .post_json("/api/jobs", &json!({ "type": "TEST_NOOP" }))
        .await
        .json();
    let run_id = created["runId"].as_str().expect("runId");

    // A run whose RunQueued event was lost is still found through the queue.
    let events_dir = api.data_dir().join("events");
    std::fs::remove_file(events_dir.join(format!("{run_id}.jsonl"))).expect("remove log");
    std::fs::remove_file(events_dir.join("runs").join(format!("{run_id}.json")))
        .expect("remove summary");

    let detail = api.get(&format!("/api/runs/{run_id}")).await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.text());
    let detail = detail.json();
    assert_eq!(detail["source"], "queue");
    assert_eq!(detail["status"], "pending");
    assert_eq!(detail["jobId"], created["jobId"]);
    assert_eq!(detail["job"]["id"], created["jobId"]);
    assert!(detail.get("events").is_none(), "{detail}");

    let listed = api.get("/api/runs").await.json();
    assert_eq!(listed["runs"][0]["runId"], run_id);
    assert_eq!(listed["runs"][0]["source"], "queue");
}

#[tokio::test]
async fn run_event_stream_ends_at_terminal_status() {
    let api = TestApi::with_settings(ApiSettings {
        sse_poll_interval: Duration::from_millis(20),
        sse_keep_alive: Duration::from_millis(50),
        ..ApiSettings::default()
    });
    let created = api
        .post_json("/api/jobs", &json!({ "type": "TEST_NOOP" }))
        .await
        .json();
    let run_id = created["runId"].as_str().expect("runId").to_string();
    let job_id = created["jobId"].as_str().expect("jobId").to_string();
    let started = api.append(&run_id, &job_id, event_type::RUN_STARTED, Value::Null);

    let request = || {
        Request::get(format!("/api/runs/{run_id}/events"))
            .header(header::ACCEPT, "text/event-stream")
    };
    let response = api
        .router
        .clone()
        .oneshot(request().body(Body::empty()).expect("request builds"))
        .await
        .expect("router is infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("header text")
            .starts_with("text/event-stream")
    );

    // The stream stays open until the run finishes.
    let finisher = {
        let events = api.events.clone();
        let run_id = run_id.clone();
        let job_id = job_id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let context = RunContext {
                run_id,
                job_id: Some(job_id),
                ..RunContext::default()
            };
            events
                .append(
                    &Event::new(&context, event_type::RUN_FINISHED, "worker")
                        .with_data(json!({ "status": "completed" })),
                )
                .expect("append");
        })
    };
    let body = tokio::time::timeout(
        Duration::from_secs(30),
        to_bytes(response.into_body(), usize::MAX),
    )
    .await
    .expect("the stream ends after RunFinished")
    .expect("stream body");
    finisher.await.expect("finisher task");
    let text = String::from_utf8_lossy(&body);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    assert_eq!(names, ["RunQueued", "RunStarted", "RunFinished"], "{text}");
    assert!(text.contains(&format!("id: {}", started.id)), "{text}");
    assert!(
        text.lines().any(|line| line.starts_with(':')),
        "keep-alive comments while the run is idle: {text}"
    );
    let data: Value = text
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).expect("data is JSON"))
        .expect("a data line");
    assert_eq!(data["runId"], run_id.as_str());

    // Resuming after RunStarted sends only what followed it.
    let resumed = api
        .send(
            request()
                .header("last-event-id", started.id.as_str())
                .body(Body::empty())
                .expect("request builds"),
        )
        .await;
    let names: Vec<String> = resumed
        .text()
        .lines()
        .filter_map(|line| line.strip_prefix("event: ").map(str::to_string))
        .collect();
    assert_eq!(names, ["RunFinished"]);
}

#[tokio::test]
async fn openapi_documents_every_route() {
    let api = TestApi::new();
    let reply = api.get("/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    let document = reply.json();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");

    for path in api::route_paths() {
        assert!(
            paths.contains_key(path),
            "{path} is missing from /openapi.json"
        );
    }
    assert_eq!(
        paths.len(),
        api::route_paths().len(),
        "extra paths in /openapi.json"
    );

    // Each documented operation reaches a handler, not the route or method fallback.
    for (path, operations) in paths {
        let uri = path
            .replace("{debateId}", "doc-check")
            .replace("{jobId}", "doc-check")
            .replace("{runId}", "doc-check");
        for method in operations.as_object().expect("operations").keys() {
            let method: Method = method.to_uppercase().parse().expect("HTTP method");
            let mut request = Request::builder().method(method.clone()).uri(&uri);
            if method == Method::POST {
                request = request.header(header::CONTENT_TYPE, "application/json");
            }
            let reply = api
                .send(request.body(Body::from("{}")).expect("request builds"))
                .await;
            assert_ne!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            if reply.headers[header::CONTENT_TYPE] == "application/json" {
                let code = reply.json()["error"]["code"].clone();
                assert_ne!(code, "route_not_found", "{method} {path}");
            }
        }
    }
}

/// Checks one line of the Prometheus text format: a comment, or `name{labels} value`.
fn check_exposition_line(line: &str) -> Result<(), String> {
    if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
        return Ok(());
    }
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let name_end = line.find(|c: char| !is_name_char(c)).ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("bad metric name in {line:?}"));
    }
    let mut rest = &line[name_end..];
    if let Some(labels) = rest.strip_prefix('{') {
        let close = labels
            .find("} ")
            .ok_or_else(|| format!("unclosed labels in {line:?}"))?;
        for pair in split_labels(&labels[..close]) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("bad label in {line:?}"))?;
            if key.is_empty() || !key.chars().all(is_name_char) {
                return Err(format!("bad label name {key:?} in {line:?}"));
            }
            if !(value.starts_with('"') && value.ends_with('"') && value.len() >= 2) {
                return Err(format!("unquoted label value in {line:?}"));
            }
        }
        rest = &labels[close + 1..];
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before value in {line:?}"))?;
    value
        .parse::<f64>()
        .map(|_| ())
        .map_err(|_| format!("value {value:?} is not a number in {line:?}"))
}

/// Splits `a="x",b="y,z"` on the commas between pairs, not those inside quotes.
fn split_labels(labels: &str) -> Vec<&str> {
    let mut pairs = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (index, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                pairs.push(&labels[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    if start < labels.len() {
        pairs.push(&labels[start..]);
    }
    pairs
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text() {
    let api = TestApi::new();
    api.post_json("/api/debates", &json!({ "topic": "Metrics topic" }))
        .await;
    api.get("/api/nothing").await;
    write_worker_record(api.data_dir(), "worker-a", Utc::now(), 1);

    let reply = api.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.headers[header::CONTENT_TYPE]
            .to_str()
            .expect("header text")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = reply.text();
    for line in text.lines() {
        if let Err(problem) = check_exposition_line(line) {
            panic!("{problem}\n{text}");
        }
    }
    assert!(
        text.contains("jobhost_jobs{type=\"RUN_DEBATE\",status=\"pending\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("jobhost_jobs_enqueued_total{type=\"RUN_DEBATE\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "jobhost_http_requests_total{method=\"POST\",route=\"/api/debates\",status=\"202\"} 1\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "jobhost_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("jobhost_plugin_load_errors{worker_id=\"worker-a\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("jobhost_workers{status=\"running\"} 1\n"),
        "{text}"
    );
}

#[test]
fn exposition_checker_rejects_bad_lines() {
    assert!(check_exposition_line("jobhost_x{a=\"1\"} 2").is_ok());
    assert!(check_exposition_line("jobhost_x 2.5").is_ok());
    assert!(check_exposition_line("jobhost_x{a=1} 2").is_err());
    assert!(check_exposition_line("jobhost_x{a=\"1\"}").is_err());
    assert!(check_exposition_line("jobhost_x two").is_err());
    assert!(check_exposition_line("9x 1").is_err());
}

/// Writes a worker record in the shape the worker writes, with one plugin and `load_errors`
/// load errors.
fn write_worker_record(
    data_dir: &Path,
    worker_id: &str,
    heartbeat_at: chrono::DateTime<Utc>,
    load_errors: usize,
) {
    let dir = data_dir.join("workers");
    std::fs::create_dir_all(&dir).expect("workers dir");
    let errors: Vec<Value> = (0..load_errors)
        .map(|index| {
            json!({ "file": format!("/plugins/broken{index}.wasm"), "message": "not a component", "at": heartbeat_at })
        })
        .collect();
    let record = json!({
        "workerId": worker_id,
        "pid": 4242,
        "hostname": "test-host",
        "startedAt": heartbeat_at,
        "heartbeatAt": heartbeat_at,
        "heartbeatIntervalMs": 2000,
        "status": "running",
        "concurrency": 4,
        "jobTypes": ["RUN_DEBATE"],
        "plugins": [{
            "name": "debate", "version": "0.1.0", "description": "AI debates",
            "jobTypes": ["RUN_DEBATE"], "file": "/plugins/debate.wasm",
            "sha256": "ab12", "loadedAt": heartbeat_at,
        }],
        "loadErrors": errors,
        "inFlight": [],
    });
    std::fs::write(
        dir.join(format!("{worker_id}.json")),
        serde_json::to_vec(&record).expect("serialize"),
    )
    .expect("write record");
}

#[tokio::test]
async fn workers_and_plugins_come_from_records() {
    let api = TestApi::new();
    write_worker_record(api.data_dir(), "worker-live", Utc::now(), 0);
    write_worker_record(
        api.data_dir(),
        "worker-gone",
        Utc::now() - chrono::Duration::minutes(5),
        2,
    );

    let workers = api.get("/api/workers").await.json();
    let workers = workers["workers"].as_array().cloned().expect("workers");
    assert_eq!(workers.len(), 2);
    assert_eq!(workers[0]["workerId"], "worker-gone");
    assert_eq!(workers[0]["stale"], true);
    assert_eq!(workers[1]["workerId"], "worker-live");
    assert_eq!(workers[1]["stale"], false);

    let plugins = api.get("/api/plugins").await.json();
    assert_eq!(plugins["plugins"].as_array().map(Vec::len), Some(1));
    assert_eq!(plugins["plugins"][0]["name"], "debate");
    assert_eq!(plugins["plugins"][0]["workers"], json!(["worker-live"]));
    assert_eq!(plugins["jobTypes"]["RUN_DEBATE"], json!(["debate"]));
    assert_eq!(
        plugins["loadErrors"].as_array().map(Vec::len),
        Some(0),
        "stale workers' load errors are left out"
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let api = TestApi::new();
    let health = api.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["status"], "ok");

    let ready = api.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
    assert_eq!(ready.json()["checks"]["dataDir"], "ok");
    assert_eq!(ready.json()["checks"]["queue"], "ok");
}

#[tokio::test]
async fn examples_are_accepted() {
    let api = TestApi::new();
    let mut seen = 0;
    let mut names: Vec<String> = std::fs::read_dir(examples_dir())
        .expect("examples dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    for name in names {
        let route = if name.starts_with("debate-") {
            "/api/debates"
        } else if name.starts_with("job-") {
            "/api/jobs"
        } else {
            panic!("example {name} has no known route: name it debate-* or job-*");
        };
        let reply = api.post_json(route, &read_example(&name)).await;
        assert_eq!(
            reply.status,
            StatusCode::ACCEPTED,
            "{name}: {}",
            reply.text()
        );
        seen += 1;
    }
    assert!(seen >= 3, "expected at least three examples, found {seen}");

    let jobs = api.get("/api/jobs?limit=100").await.json();
    let statuses: Vec<JobStatus> = jobs["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|job| serde_json::from_value(job["status"].clone()).expect("status"))
        .collect();
    assert_eq!(statuses.len(), seen);
    assert!(statuses.iter().all(|status| *status == JobStatus::Pending));
}
