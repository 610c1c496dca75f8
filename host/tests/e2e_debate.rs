//! Debates and jobs end to end: `jobhost serve` and `jobhost worker` as separate processes, as
//! docker-compose runs them, on 127.0.0.1 with a temporary data directory and copies of the
//! bundled plugins.

mod e2e_support;

use e2e_support::{
    Client, MODEL_REPLY, ModelServer, TestDirs, WAIT, is_finished_status, start_serve, start_worker,
};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

fn example(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("example file");
    serde_json::from_str(&text).expect("example is JSON")
}

fn event_types(events: &Value) -> Vec<String> {
    events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|event| event["eventType"].as_str().map(str::to_string))
        .collect()
}

fn count(types: &[String], name: &str) -> usize {
    types.iter().filter(|t| *t == name).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn debate_completes_with_offline_model() {
    let dirs = TestDirs::new();
    let (mut serve, base) = start_serve(&dirs, &[]);
    let mut worker = start_worker(&dirs, "worker-offline", &[]);
    let client = Client::new(&base);

    let request = example("debate-ai-regulation.json");
    let (status, accepted) = client
        .post("/api/debates", &request, Some("e2e-offline-1"))
        .await;
    assert_eq!(status, 202, "{accepted}");
    let debate_id = accepted["debateId"].as_str().expect("debateId");
    let run_id = accepted["runId"].as_str().expect("runId");

    let debate = client
        .wait_for(&format!("/api/debates/{debate_id}"), is_finished_status)
        .await;
    assert_eq!(debate["status"], "completed", "{debate}");

    // Three personas, two rounds, a moderator: 3 arguments and 1 summary per round, then the
    // synthesis.
    let turns = debate["turns"].as_array().expect("turns");
    assert_eq!(turns.len(), 9, "{debate}");
    let kinds: Vec<&str> = turns.iter().filter_map(|t| t["kind"].as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "argument").count(), 6);
    assert_eq!(kinds.iter().filter(|k| **k == "summary").count(), 2);
    assert_eq!(kinds.last(), Some(&"synthesis"));
    for persona in ["safety-researcher", "startup-founder", "regulator"] {
        let spoke = turns.iter().filter(|t| t["speakerId"] == persona).count();
        assert_eq!(spoke, 2, "{persona} speaks once per round");
    }
    assert!(
        debate["synthesis"].as_str().is_some_and(|s| !s.is_empty()),
        "{debate}"
    );
    assert!(
        debate["usage"]["totalTokens"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );
    assert_eq!(debate["progress"]["done"], debate["progress"]["total"]);

    let (status, transcript) = client
        .get_text(&format!("/api/debates/{debate_id}/transcript"))
        .await;
    assert_eq!(status, 200, "{transcript}");
    assert!(
        transcript.contains("Should frontier AI models be licensed"),
        "{transcript}"
    );
    for name in ["Dr. Amara Okafor", "Lena Fischer", "Marcus Hale"] {
        assert!(
            transcript.contains(name),
            "{name} missing from the transcript"
        );
    }

    let (_, events) = client.get(&format!("/api/runs/{run_id}/events")).await;
    let types = event_types(&events);
    assert_eq!(
        types.first().map(String::as_str),
        Some("RunQueued"),
        "{types:?}"
    );
    assert_eq!(
        types.last().map(String::as_str),
        Some("RunFinished"),
        "{types:?}"
    );
    assert_eq!(count(&types, "DebateStarted"), 1, "{types:?}");
    assert_eq!(count(&types, "DebateTurn"), 9, "{types:?}");
    assert_eq!(count(&types, "DebateFinished"), 1, "{types:?}");
    for event in events["events"].as_array().expect("events") {
        assert_eq!(
            event["requestId"], "e2e-offline-1",
            "every event of the run carries the request id: {event}"
        );
    }

    let (_, run) = client.get(&format!("/api/runs/{run_id}")).await;
    assert_eq!(run["status"], "completed");
    assert_eq!(run["source"], "events");
    let (_, runs) = client
        .get("/api/runs?status=completed&type=RUN_DEBATE")
        .await;
    assert_eq!(runs["runs"][0]["runId"], run_id);

    let (_, metrics) = client.get_text("/metrics").await;
    assert!(
        metrics
            .contains("jobhost_runs_finished_total{type=\"RUN_DEBATE\",status=\"completed\"} 1\n"),
        "{metrics}"
    );
    // The worker rewrites its record every heartbeat interval, so the loaded plugins show up
    // after the first heartbeat that follows loading.
    let plugins = client
        .wait_for("/api/plugins", |plugins| {
            plugins["jobTypes"]["RUN_DEBATE"].is_array()
        })
        .await;
    assert_eq!(
        plugins["jobTypes"]["RUN_DEBATE"],
        json!(["debate"]),
        "{plugins}"
    );
    let (_, workers) = client.get("/api/workers").await;
    let record = workers["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|w| w["workerId"] == "worker-offline")
        .cloned()
        .expect("the worker's record");
    assert_eq!(record["stale"], false);

    assert!(worker.terminate().success(), "{}", worker.log());
    assert!(serve.terminate().success(), "{}", serve.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn debate_uses_openai_compatible_server() {
    let model = ModelServer::start(Duration::ZERO).await;
    let dirs = TestDirs::new();
    let (_serve, base) = start_serve(&dirs, &[]);
    let mut worker = start_worker(
        &dirs,
        "worker-model",
        &[
            ("LLM_BASE_URL", model.base_url.clone()),
            ("LLM_API_KEY", "test-key-123".to_string()),
            ("LLM_MODEL", "mock-model".to_string()),
        ],
    );
    let client = Client::new(&base);

    let request = json!({
        "topic": "Should schools teach personal finance?",
        "personas": [
            { "id": "teacher", "displayName": "Ms. Ortiz", "role": "high-school teacher" },
            { "id": "economist", "displayName": "Dr. Chen", "role": "economist" },
        ],
        "settings": { "rounds": 1, "includeModerator": true },
    });
    let (status, accepted) = client.post("/api/debates", &request, None).await;
    assert_eq!(status, 202, "{accepted}");
    let debate_id = accepted["debateId"].as_str().expect("debateId");

    let debate = client
        .wait_for(&format!("/api/debates/{debate_id}"), is_finished_status)
        .await;
    assert_eq!(debate["status"], "completed", "{debate}");

    // Two arguments, one summary, one synthesis: one model call each.
    let turns = debate["turns"].as_array().expect("turns");
    assert_eq!(turns.len(), 4, "{debate}");
    for turn in turns {
        assert_eq!(turn["text"], MODEL_REPLY, "{turn}");
        assert_eq!(turn["model"], "mock-model", "{turn}");
    }
    assert_eq!(debate["usage"]["totalTokens"], 4 * 52, "{debate}");

    let requests = model.requests();
    assert_eq!(requests.len(), 4);
    for chat in &requests {
        assert_eq!(chat.authorization.as_deref(), Some("Bearer test-key-123"));
        assert_eq!(chat.body["model"], "mock-model");
        assert!(
            chat.body["messages"]
                .as_array()
                .is_some_and(|m| !m.is_empty())
        );
    }
    assert!(
        !worker.log().contains("test-key-123"),
        "the API key appears in the worker log"
    );
    assert!(worker.terminate().success(), "{}", worker.log());
}

/// One server-sent event.
#[derive(Debug)]
struct SseEvent {
    id: String,
    name: String,
    data: Value,
}

/// Reads server-sent events from `response` and calls `on_event` for each, until the server
/// closes the stream.
async fn read_stream(
    mut response: reqwest::Response,
    mut on_event: impl AsyncFnMut(&SseEvent),
) -> Vec<SseEvent> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(remaining, response.chunk())
            .await
            .expect("the stream ended in time")
            .expect("stream read");
        let Some(chunk) = chunk else {
            return events;
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = SseEvent {
                id: String::new(),
                name: String::new(),
                data: Value::Null,
            };
            for line in block.lines() {
                if let Some(id) = line.strip_prefix("id: ") {
                    event.id = id.to_string();
                } else if let Some(name) = line.strip_prefix("event: ") {
                    event.name = name.to_string();
                } else if let Some(data) = line.strip_prefix("data: ") {
                    event.data = serde_json::from_str(data).expect("data is JSON");
                }
            }
            // A block of only a comment is a keep-alive.
            if !event.name.is_empty() {
                on_event(&event).await;
                events.push(event);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn live_stream_and_idempotent_repost() {
    // A slow model keeps the run going while the stream is read.
    let model = ModelServer::start(Duration::from_millis(400)).await;
    let dirs = TestDirs::new();
    let (_serve, base) = start_serve(&dirs, &[]);
    let _worker = start_worker(
        &dirs,
        "worker-stream",
        &[
            ("LLM_BASE_URL", model.base_url.clone()),
            ("LLM_MODEL", "mock-model".to_string()),
        ],
    );
    let client = Client::new(&base);

    let request = json!({
        "debateId": "stream-check",
        "topic": "Should cities replace parking with parks?",
        "settings": { "rounds": 1 },
    });
    let (status, accepted) = client.post("/api/debates", &request, None).await;
    assert_eq!(status, 202, "{accepted}");
    let run_id = accepted["runId"].as_str().expect("runId").to_string();
    let job_id = accepted["jobId"].as_str().expect("jobId").to_string();

    let response = client
        .http
        .get(format!("{base}/api/runs/{run_id}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("open the stream");
    assert_eq!(response.status(), 200);

    let mut job_status_at_first_turn = None;
    let mut repost = None;
    let events = read_stream(response, async |event: &SseEvent| {
        if event.name == "DebateTurn" && job_status_at_first_turn.is_none() {
            let (_, job) = client.get(&format!("/api/jobs/{job_id}")).await;
            job_status_at_first_turn = Some(job["status"].clone());
            repost = Some(client.post("/api/debates", &request, None).await);
        }
    })
    .await;

    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    let errors: Vec<&Value> = events
        .iter()
        .filter(|e| e.name == "Error")
        .map(|e| &e.data)
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        job_status_at_first_turn,
        Some(json!("running")),
        "the first turn arrives while the run is still going; events: {names:?}"
    );
    let (repost_status, repost_body) = repost.expect("reposted during the run");
    assert_eq!(repost_status, 200, "{repost_body}");
    assert_eq!(repost_body["jobId"], job_id.as_str());
    assert_eq!(repost_body["runId"], run_id.as_str());

    assert_eq!(names.first(), Some(&"RunQueued"), "{names:?}");
    assert_eq!(names.last(), Some(&"RunFinished"), "{names:?}");
    assert_eq!(
        names.iter().filter(|n| **n == "DebateTurn").count(),
        5,
        "{names:?}"
    );
    let last = events.last().expect("events");
    assert_eq!(last.data["data"]["status"], "completed");
    let mut ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "no event is sent twice");

    let (_, jobs) = client.get("/api/jobs?type=RUN_DEBATE").await;
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_interrupts_running_job() {
    let dirs = TestDirs::new();
    dirs.add_testkit();
    let (_serve, base) = start_serve(&dirs, &[]);
    let mut worker = start_worker(
        &dirs,
        "worker-cancel",
        &[("WORKER_LEASE_SECS", "3".to_string())],
    );
    let client = Client::new(&base);

    let (status, accepted) = client
        .post(
            "/api/jobs",
            &json!({ "type": "TEST_SLEEP", "payload": { "ms": 600_000, "heartbeat": true } }),
            None,
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let job_id = accepted["jobId"].as_str().expect("jobId");
    let run_id = accepted["runId"].as_str().expect("runId");
    client
        .wait_for(&format!("/api/jobs/{job_id}"), |job| {
            job["status"] == "running"
        })
        .await;

    let (status, cancelled) = client
        .post(&format!("/api/jobs/{job_id}/cancel"), &json!({}), None)
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");

    // The worker notices at its next heartbeat, stops the attempt and records the end.
    let events = client
        .wait_for(&format!("/api/runs/{run_id}/events"), |events| {
            event_types(events).iter().any(|t| t == "RunFinished")
        })
        .await;
    let finished = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .rfind(|event| event["eventType"] == "RunFinished")
        .cloned()
        .expect("RunFinished");
    assert_eq!(finished["data"]["status"], "cancelled", "{finished}");
    let (_, job) = client.get(&format!("/api/jobs/{job_id}")).await;
    assert_eq!(job["status"], "cancelled");
    assert!(job["result"].is_null(), "{job}");

    // The worker goes on claiming work.
    let (_, echo) = client
        .post(
            "/api/jobs",
            &json!({ "type": "TEST_ECHO", "payload": { "after": "cancel" } }),
            None,
        )
        .await;
    let echo_id = echo["jobId"].as_str().expect("jobId");
    let echoed = client
        .wait_for(&format!("/api/jobs/{echo_id}"), is_finished_status)
        .await;
    assert_eq!(echoed["status"], "completed", "{echoed}");
    assert_eq!(echoed["result"], json!({ "after": "cancel" }));
    assert!(worker.is_running());
}
