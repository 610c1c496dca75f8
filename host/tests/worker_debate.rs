//! The bundled debate plugin through the real worker, against a local OpenAI-compatible server.
//! Each reply contains the number of its request, so the tests can check order and resumption.

mod worker_support;

use jobhost::artifacts::ArtifactStore;
use jobhost::job::JobStatus;
use jobhost::queue::EnqueueOptions;
use serde_json::{Value, json};
use std::path::PathBuf;
use worker_support::model_server::ChatServer;
use worker_support::{Harness, install_plugin};

/// Two personas, two rounds, with a moderator: per round two arguments and a summary, then the
/// synthesis, seven turns in all.
fn debate_payload() -> Value {
    json!({
        "debateId": "debate-1",
        "topic": "Should cities ban cars from their centers?",
        "personas": [
            { "id": "ada", "displayName": "Ada" },
            { "id": "bo", "displayName": "Bo" }
        ],
        "settings": { "rounds": 2, "includeModerator": true }
    })
}

const TURNS: usize = 7;

fn install_debate(harness: &Harness) {
    let wasm = PathBuf::from(env!("JOBHOST_BUNDLED_PLUGINS_DIR")).join("debate.wasm");
    let bytes = std::fs::read(&wasm).expect("read the bundled debate.wasm");
    install_plugin(&harness.plugins_dir, "debate", &bytes, None);
}

fn worker_settings(
    harness: &Harness,
    server: &ChatServer,
    id: &str,
) -> jobhost::worker::WorkerSettings {
    let mut settings = harness.settings(id);
    settings.llm.base_url = Some(server.base_url());
    settings.llm.model = Some("test-model".to_string());
    // Model errors reach the plugin at once instead of being retried by the client.
    settings.llm.max_retries = 0;
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debate_runs_turns_in_order() {
    let server = ChatServer::start([]).await;
    let harness = Harness::new();
    install_debate(&harness);
    let worker = harness
        .start_worker(worker_settings(&harness, &server, "debate-worker"))
        .await;
    worker.wait_job_type("RUN_DEBATE").await;

    let job = harness.enqueue("RUN_DEBATE", debate_payload()).await;
    let job = harness.wait_finished(&job.id).await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.last_error);
    assert_eq!(server.requests(), TURNS);

    // Turns arrive in plan order, each with the reply to its own request.
    let turns = harness.events_of(&job.run_id, "DebateTurn");
    assert_eq!(turns.len(), TURNS);
    let kinds: Vec<&str> = turns
        .iter()
        .map(|event| event.data["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        kinds,
        [
            "argument",
            "argument",
            "summary",
            "argument",
            "argument",
            "summary",
            "synthesis"
        ]
    );
    for (index, event) in turns.iter().enumerate() {
        assert_eq!(event.data["turn"], json!(index));
        assert_eq!(event.component, "plugin:debate");
        let text = event.data["text"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(&format!("reply {}:", index + 1)),
            "turn {index} has text {text:?}"
        );
        assert_eq!(event.data["resumed"], json!(false));
    }
    let speakers: Vec<&str> = turns
        .iter()
        .map(|event| event.data["speakerName"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(&speakers[..2], ["Ada", "Bo"]);

    // Each turn reports progress; each model call is recorded with its usage.
    let progress = harness.events_of(&job.run_id, "Progress");
    assert!(
        progress.len() >= TURNS,
        "{} Progress events",
        progress.len()
    );
    let last = progress.last().expect("a Progress event");
    assert_eq!(last.data["done"], json!(TURNS));
    assert_eq!(last.data["total"], json!(TURNS));
    let calls = harness.events_of(&job.run_id, "LlmCall");
    assert_eq!(calls.len(), TURNS);
    for call in &calls {
        assert_eq!(call.data["provider"], json!("openai-compatible"));
        assert_eq!(call.data["model"], json!("test-model"));
        assert_eq!(call.data["usage"]["totalTokens"], json!(15));
        assert!(call.latency_ms.is_some());
    }
    assert_eq!(harness.events_of(&job.run_id, "DebateStarted").len(), 1);
    assert_eq!(harness.events_of(&job.run_id, "DebateFinished").len(), 1);

    // The transcript artifact and the result.
    let artifacts = ArtifactStore::open(&harness.data_dir).expect("artifact store");
    let transcript = artifacts
        .get(&job.run_id, "transcript.md")
        .expect("read artifact")
        .expect("transcript.md stored");
    assert_eq!(transcript.content_type, "text/markdown");
    let text = String::from_utf8(transcript.bytes).expect("UTF-8 transcript");
    assert!(text.contains("reply 7:"), "{text}");

    let result = job.result.expect("result");
    assert_eq!(result["debateId"], json!("debate-1"));
    assert_eq!(
        result["topic"],
        json!("Should cities ban cars from their centers?")
    );
    assert_eq!(result["rounds"], json!(2));
    assert_eq!(result["turnCount"], json!(TURNS));
    assert_eq!(result["transcript"], json!("transcript.md"));
    assert_eq!(result["usage"]["totalTokens"], json!(15 * TURNS));
    let synthesis = result["synthesis"].as_str().unwrap_or_default();
    assert!(synthesis.starts_with("reply 7:"), "{synthesis}");

    // Lifecycle: started once, finished completed with the result.
    assert_eq!(harness.events_of(&job.run_id, "RunStarted").len(), 1);
    let finished = harness.run_finished(&job.run_id);
    assert_eq!(finished.data["status"], json!("completed"));
    assert_eq!(finished.data["result"], result);
    assert!(finished.latency_ms.is_some());

    worker.stop().await.expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debate_resumes_after_model_failure() {
    // The fourth request fails with HTTP 500; the client does not retry it.
    let server = ChatServer::start([4]).await;
    let harness = Harness::new();
    install_debate(&harness);
    let worker = harness
        .start_worker(worker_settings(&harness, &server, "debate-resume"))
        .await;
    worker.wait_job_type("RUN_DEBATE").await;

    let job = harness
        .enqueue_with(
            "RUN_DEBATE",
            debate_payload(),
            EnqueueOptions {
                max_attempts: Some(3),
                ..EnqueueOptions::default()
            },
        )
        .await;
    let job = harness.wait_finished(&job.id).await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.last_error);
    assert_eq!(job.attempts, 2);

    // Completed turns were not requested again: every turn once, plus the failed request.
    assert_eq!(server.requests(), TURNS + 1);
    let prompts = server.prompts();
    assert_eq!(
        prompts[3], prompts[4],
        "the retry asked for the failed turn again"
    );

    // Each turn is reported once; the first turn of the second attempt is marked resumed.
    let turns = harness.events_of(&job.run_id, "DebateTurn");
    assert_eq!(turns.len(), TURNS);
    let resumed: Vec<bool> = turns
        .iter()
        .map(|event| event.data["resumed"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(resumed, [false, false, false, true, false, false, false]);
    for (index, event) in turns.iter().enumerate() {
        assert_eq!(event.data["turn"], json!(index));
    }
    assert_eq!(harness.events_of(&job.run_id, "DebateStarted").len(), 1);

    // The failed attempt was recorded, retried, then finished.
    let finished = harness.events_of(&job.run_id, "RunFinished");
    assert_eq!(finished.len(), 2);
    assert_eq!(finished[0].data["status"], json!("pending"));
    assert_eq!(finished[0].data["willRetry"], json!(true));
    assert_eq!(finished[0].data["error"]["code"], json!("server_error"));
    assert_eq!(finished[1].data["status"], json!("completed"));
    let errors = harness.events_of(&job.run_id, "Error");
    assert_eq!(errors.len(), 1);
    let failed_calls: Vec<_> = harness
        .events_of(&job.run_id, "LlmCall")
        .into_iter()
        .filter(|event| event.error.is_some())
        .collect();
    assert_eq!(failed_calls.len(), 1);

    // A completed job's state is deleted.
    let state = jobhost::state::StateStore::open(&harness.data_dir).expect("state store");
    assert!(state.load(&job.id).expect("load state").is_empty());

    worker.stop().await.expect("worker stops cleanly");
}
