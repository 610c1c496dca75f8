//! The host imports as a plugin uses them, through the real worker: events, progress,
//! artifacts, state, config, the model, and how the errors a plugin returns become job failures.

mod worker_support;

use jobhost::artifacts::ArtifactStore;
use jobhost::job::{FailureKind, JobStatus};
use jobhost::queue::EnqueueOptions;
use serde_json::json;
use worker_support::Harness;
use worker_support::model_server::ChatServer;

fn attempts(max: u32) -> EnqueueOptions {
    EnqueueOptions {
        max_attempts: Some(max),
        ..EnqueueOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_progress_and_artifacts_are_recorded() {
    let harness = Harness::new();
    harness.install_testkit("");
    let worker = harness.start_worker(harness.settings("emitter")).await;
    worker.wait_job_type("TEST_EMIT").await;

    let job = harness.enqueue("TEST_EMIT", json!({ "count": 3 })).await;
    let job = harness.wait_finished(&job.id).await;
    assert_eq!(job.result, Some(json!({ "emitted": 3 })));

    let events = harness.events_of(&job.run_id, "TestEvent");
    assert_eq!(events.len(), 3);
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event.data["index"], json!(index));
        assert_eq!(event.component, "plugin:testkit");
        assert_eq!(event.job_id.as_deref(), Some(job.id.as_str()));
        assert_eq!(event.attempt, Some(1));
    }
    let progress = harness.events_of(&job.run_id, "Progress");
    assert_eq!(progress.len(), 3);
    assert_eq!(
        progress[2].data,
        json!({ "done": 3, "total": 3, "message": "emitting test events" })
    );

    let artifacts = ArtifactStore::open(&harness.data_dir).expect("artifact store");
    let artifact = artifacts
        .get(&job.run_id, "out.txt")
        .expect("read artifact")
        .expect("out.txt stored");
    assert_eq!(artifact.content_type, "text/plain");
    assert_eq!(artifact.bytes, b"event 0\nevent 1\nevent 2\n");

    // Lifecycle events frame the plugin's events.
    let all = harness.events.read(&job.run_id).expect("read events");
    let types: Vec<&str> = all.iter().map(|event| event.event_type.as_str()).collect();
    assert_eq!(types.first(), Some(&"RunQueued"));
    assert_eq!(types.get(1), Some(&"RunStarted"));
    assert_eq!(types.last(), Some(&"RunFinished"));
    let started = &all[1];
    assert_eq!(started.data["workerId"], json!("emitter"));
    assert_eq!(started.data["plugin"], json!("testkit"));
    assert_eq!(started.data["jobType"], json!("TEST_EMIT"));

    worker.stop().await.expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_config_are_scoped() {
    let harness = Harness::new();
    harness.install_testkit("[config]\ngreeting = \"hello\"\nlimit = 3\n");
    let worker = harness.start_worker(harness.settings("state-config")).await;
    worker.wait_job_type("TEST_STATE").await;

    let config = harness
        .enqueue("TEST_CONFIG", json!({ "key": "greeting" }))
        .await;
    let config = harness.wait_finished(&config.id).await;
    assert_eq!(config.result, Some(json!({ "value": "hello" })));
    let number = harness
        .enqueue("TEST_CONFIG", json!({ "key": "limit" }))
        .await;
    let number = harness.wait_finished(&number.id).await;
    assert_eq!(number.result, Some(json!({ "value": "3" })));
    let missing = harness
        .enqueue("TEST_CONFIG", json!({ "key": "absent" }))
        .await;
    let missing = harness.wait_finished(&missing.id).await;
    assert_eq!(missing.result, Some(json!({ "value": null })));

    // Each job has its own state: a second job does not see the first job's key.
    let first = harness
        .enqueue("TEST_STATE", json!({ "key": "k", "value": "one" }))
        .await;
    let first = harness.wait_finished(&first.id).await;
    assert_eq!(first.result, Some(json!({ "previous": null })));
    let second = harness
        .enqueue("TEST_STATE", json!({ "key": "k", "value": "two" }))
        .await;
    let second = harness.wait_finished(&second.id).await;
    assert_eq!(second.result, Some(json!({ "previous": null })));

    worker.stop().await.expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_errors_map_to_failures() {
    let harness = Harness::new();
    harness.install_testkit("[config]\nsucceed_on_attempt = 2\n");
    let worker = harness.start_worker(harness.settings("errors")).await;
    worker.wait_job_type("TEST_FAIL").await;

    let cases = [
        ("retryable", FailureKind::Retryable, 3),
        ("fatal", FailureKind::Fatal, 1),
        ("invalid-payload", FailureKind::InvalidPayload, 1),
    ];
    for (kind, expected_kind, expected_attempts) in cases {
        let job = harness
            .enqueue_with(
                "TEST_FAIL",
                json!({ "kind": kind, "code": "test_code", "message": format!("failed as {kind}") }),
                attempts(3),
            )
            .await;
        let job = harness.wait_finished(&job.id).await;
        assert_eq!(job.status, JobStatus::Failed, "{kind}");
        assert_eq!(job.attempts, expected_attempts, "{kind}");
        let error = job.last_error.as_ref().expect("lastError");
        assert_eq!(error.kind, expected_kind);
        assert_eq!(error.code, "test_code");
        assert_eq!(error.message, format!("failed as {kind}"));

        let finished = harness.events_of(&job.run_id, "RunFinished");
        assert_eq!(finished.len() as u32, expected_attempts, "{kind}");
        let last = finished.last().expect("RunFinished");
        assert_eq!(last.data["status"], json!("failed"));
        assert_eq!(last.data["willRetry"], json!(false));
        assert_eq!(last.data["error"]["code"], json!("test_code"));
        assert_eq!(
            harness.events_of(&job.run_id, "Error").len() as u32,
            expected_attempts
        );
    }

    // A retryable failure on the first attempt, success on the second.
    let job = harness
        .enqueue_with("TEST_ATTEMPT", json!({}), attempts(3))
        .await;
    let job = harness.wait_finished(&job.id).await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.last_error);
    assert_eq!(job.result, Some(json!({ "attempt": 2 })));
    let finished = harness.events_of(&job.run_id, "RunFinished");
    assert_eq!(finished.len(), 2);
    assert_eq!(finished[0].data["status"], json!("pending"));
    assert_eq!(finished[0].data["willRetry"], json!(true));
    assert_eq!(finished[0].data["attempt"], json!(1));
    assert_eq!(finished[1].data["status"], json!("completed"));
    assert_eq!(finished[1].data["attempt"], json!(2));

    worker.stop().await.expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_call_is_recorded_and_can_be_disabled() {
    let server = ChatServer::start([]).await;
    let harness = Harness::new();
    harness.install_testkit("");
    let mut settings = harness.settings("chat");
    settings.llm.base_url = Some(server.base_url());
    settings.llm.model = Some("test-model".to_string());
    let worker = harness.start_worker(settings).await;
    worker.wait_job_type("TEST_CHAT").await;

    let job = harness
        .enqueue("TEST_CHAT", json!({ "prompt": "ping" }))
        .await;
    let job = harness.wait_finished(&job.id).await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.last_error);
    let result = job.result.expect("result");
    assert_eq!(result["text"], json!("reply 1: ping"));
    assert_eq!(result["provider"], json!("openai-compatible"));
    let calls = harness.events_of(&job.run_id, "LlmCall");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].data["usage"]["totalTokens"], json!(15));
    assert_eq!(calls[0].data["model"], json!("test-model"));
    assert_eq!(calls[0].component, "plugin:testkit");

    // A manifest change that disables model calls takes effect without a restart.
    harness.install_testkit("allow_llm = false\n[config]\nversion = \"1.0.1\"\n");
    worker
        .wait_record("the manifest change", |record| {
            record
                .plugins
                .iter()
                .any(|plugin| plugin.version == "1.0.1")
        })
        .await;
    let denied = harness
        .enqueue_with("TEST_CHAT", json!({ "prompt": "ping" }), attempts(1))
        .await;
    let denied = harness.wait_finished(&denied.id).await;
    assert_eq!(denied.status, JobStatus::Failed);
    let error = denied.last_error.expect("lastError");
    assert_eq!(error.code, "not_allowed");
    assert!(
        error.message.contains("allow_llm = false"),
        "{}",
        error.message
    );
    assert_eq!(server.requests(), 1);

    worker.stop().await.expect("worker stops cleanly");
}
