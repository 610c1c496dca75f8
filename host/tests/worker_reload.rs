//! Plugin hot reload while the worker runs: adding, replacing and deleting plugin files, a file
//! that is still being written, plugins that fail to load, and replacements that fail to load
//! while the version loaded before keeps running.

mod worker_support;

use jobhost::job::JobStatus;
use jobhost::worker::WorkerRecord;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::time::Duration;
use worker_support::{Harness, install_plugin, testkit_bytes, with_custom_section};

fn plugin_version(record: &WorkerRecord, name: &str) -> Option<String> {
    record
        .plugins
        .iter()
        .find(|plugin| plugin.name == name)
        .map(|plugin| plugin.version.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_plugin_claims_pending_job() {
    let harness = Harness::new();
    let worker = harness.start_worker(harness.settings("adder")).await;
    worker
        .wait_record("an empty plugin set", |record| record.job_types.is_empty())
        .await;

    let job = harness
        .enqueue("TEST_ECHO", json!({ "hello": "world" }))
        .await;
    harness.install_testkit("");
    let job = harness.wait_finished(&job.id).await;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.result, Some(json!({ "hello": "world" })));

    let record = worker.wait_job_type("TEST_ECHO").await;
    assert_eq!(plugin_version(&record, "testkit").as_deref(), Some("1.0.0"));
    worker.stop().await.expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_plugin_serves_next_job() {
    let harness = Harness::new();
    harness.install_testkit("[config]\nversion = \"1.0.0\"\n");
    let worker = harness.start_worker(harness.settings("replacer")).await;
    worker.wait_job_type("TEST_SLEEP").await;

    let in_flight = harness.enqueue("TEST_SLEEP", json!({ "ms": 1500 })).await;
    harness.wait_status(&in_flight.id, JobStatus::Running).await;

    // New bytes (a custom section) and a new version, installed by rename.
    let new_bytes = with_custom_section(&testkit_bytes(), "jobhost-test", b"version 2");
    let new_sha = hex::encode(Sha256::digest(&new_bytes));
    install_plugin(
        &harness.plugins_dir,
        "testkit",
        &new_bytes,
        Some("[config]\nversion = \"2.0.0\"\n"),
    );
    let record = worker
        .wait_record("testkit 2.0.0 loaded from the new bytes", |record| {
            record
                .plugins
                .iter()
                .any(|plugin| plugin.version == "2.0.0" && plugin.sha256 == new_sha)
        })
        .await;
    assert_eq!(record.plugins.len(), 1);

    // The attempt in flight finishes on the version it started with.
    let in_flight = harness.wait_finished(&in_flight.id).await;
    assert_eq!(
        in_flight.status,
        JobStatus::Completed,
        "{:?}",
        in_flight.last_error
    );
    let started = harness.events_of(&in_flight.run_id, "RunStarted");
    assert_eq!(started[0].data["pluginVersion"], json!("1.0.0"));

    // The next job runs on the new version.
    let next = harness
        .enqueue("TEST_CONFIG", json!({ "key": "version" }))
        .await;
    let next = harness.wait_finished(&next.id).await;
    assert_eq!(next.result, Some(json!({ "value": "2.0.0" })));
    let started = harness.events_of(&next.run_id, "RunStarted");
    assert_eq!(started[0].data["pluginVersion"], json!("2.0.0"));

    worker.stop().await.expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_plugin_type_is_not_claimed() {
    let harness = Harness::new();
    harness.install_testkit("");
    let worker = harness.start_worker(harness.settings("deleter")).await;
    worker.wait_job_type("TEST_ECHO").await;

    std::fs::remove_file(harness.plugins_dir.join("testkit.wasm")).expect("delete plugin");
    worker
        .wait_record("no job types after the delete", |record| {
            record.job_types.is_empty() && record.plugins.is_empty()
        })
        .await;

    // A job of the removed type stays pending through several poll intervals.
    let job = harness.enqueue("TEST_ECHO", json!(1)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waiting = harness.job(&job.id).await;
    assert_eq!(waiting.status, JobStatus::Pending);
    assert_eq!(waiting.attempts, 0);

    // Putting the plugin back lets the job run.
    harness.install_testkit("");
    let job = harness.wait_finished(&job.id).await;
    assert_eq!(job.status, JobStatus::Completed);
    worker.stop().await.expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_written_plugin_is_not_loaded() {
    let harness = Harness::new();
    let mut settings = harness.settings("half-written");
    // Well above the pauses between chunks below, so a slow machine does not make the copy
    // look finished.
    settings.plugin_settle = Duration::from_secs(1);
    let worker = harness.start_worker(settings).await;
    worker
        .wait_record("an empty plugin set", |record| record.job_types.is_empty())
        .await;

    // Copy slowly, straight to the final name, pausing for less than the settle period between
    // chunks.
    let bytes = testkit_bytes();
    let path = harness.plugins_dir.join("testkit.wasm");
    let mut file = std::fs::File::create(&path).expect("create plugin file");
    let chunk = bytes.len().div_ceil(8);
    for piece in bytes.chunks(chunk) {
        file.write_all(piece).expect("write chunk");
        file.flush().expect("flush chunk");
        tokio::time::sleep(Duration::from_millis(80)).await;
        let record = worker.record().expect("worker record");
        assert!(
            record.job_types.is_empty(),
            "a partial plugin was loaded: {record:?}"
        );
        assert!(
            record.load_errors.is_empty(),
            "a partial plugin was reported as broken: {record:?}"
        );
    }
    drop(file);

    let record = worker.wait_job_type("TEST_ECHO").await;
    assert!(record.load_errors.is_empty(), "{record:?}");
    let job = harness.enqueue("TEST_ECHO", json!("complete")).await;
    let job = harness.wait_finished(&job.id).await;
    assert_eq!(job.result, Some(json!("complete")));
    worker.stop().await.expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_plugin_gets_load_error() {
    let harness = Harness::new();
    harness.install_testkit("");
    let worker = harness.start_worker(harness.settings("conflict")).await;
    worker.wait_job_type("TEST_ECHO").await;

    // A second copy claims TEST_ECHO, which testkit already owns, and one new type.
    install_plugin(
        &harness.plugins_dir,
        "other",
        &testkit_bytes(),
        Some("[config]\njob_types = \"EXTRA_TYPE,TEST_ECHO\"\n"),
    );
    let record = worker
        .wait_record("a load error for other.wasm", |record| {
            record
                .load_errors
                .iter()
                .any(|error| error.file.ends_with("other.wasm"))
        })
        .await;
    let error = &record.load_errors[0];
    assert!(
        error.message.contains("TEST_ECHO") && error.message.contains("testkit"),
        "{}",
        error.message
    );
    assert!(!record.job_types.iter().any(|t| t == "EXTRA_TYPE"));
    assert_eq!(record.plugins.len(), 1);

    // The worker keeps running jobs of the plugin it has.
    let job = harness.enqueue("TEST_ECHO", json!("still here")).await;
    let job = harness.wait_finished(&job.id).await;
    assert_eq!(job.status, JobStatus::Completed);

    // Once the owner is gone, the rejected plugin loads by itself.
    std::fs::remove_file(harness.plugins_dir.join("testkit.wasm")).expect("delete testkit");
    let record = worker.wait_job_type("EXTRA_TYPE").await;
    assert!(record.load_errors.is_empty(), "{record:?}");
    worker.stop().await.expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_plugins_get_load_errors() {
    let harness = Harness::new();
    harness.install_testkit("");
    // Not a component at all.
    install_plugin(&harness.plugins_dir, "garbage", b"not wasm at all", None);
    // A valid core module, which is not a component of the job-plugin world.
    install_plugin(&harness.plugins_dir, "module", b"\0asm\x01\0\0\0", None);
    // Job types that are not valid.
    install_plugin(
        &harness.plugins_dir,
        "badtype",
        &testkit_bytes(),
        Some("[config]\njob_types = \"bad type!\"\n"),
    );
    // No job types at all.
    install_plugin(
        &harness.plugins_dir,
        "notypes",
        &testkit_bytes(),
        Some("[config]\njob_types = \" \"\n"),
    );
    // A manifest with a misspelt key.
    install_plugin(
        &harness.plugins_dir,
        "badmanifest",
        &testkit_bytes(),
        Some("timeout_sec = 5\n"),
    );

    let worker = harness.start_worker(harness.settings("broken")).await;
    let record = worker
        .wait_record("five load errors", |record| record.load_errors.len() == 5)
        .await;
    let message_of = |file: &str| {
        record
            .load_errors
            .iter()
            .find(|error| error.file.ends_with(file))
            .map(|error| error.message.clone())
            .unwrap_or_else(|| panic!("no load error for {file}: {record:?}"))
    };
    assert!(
        message_of("garbage.wasm").contains("not a valid WebAssembly component"),
        "{}",
        message_of("garbage.wasm")
    );
    assert!(
        message_of("module.wasm").contains("WebAssembly component"),
        "{}",
        message_of("module.wasm")
    );
    assert!(
        message_of("badtype.wasm").contains("invalid job type \"bad type!\""),
        "{}",
        message_of("badtype.wasm")
    );
    assert!(
        message_of("notypes.wasm").contains("declares no job types"),
        "{}",
        message_of("notypes.wasm")
    );
    assert!(
        message_of("badmanifest.wasm").contains("timeout_sec"),
        "{}",
        message_of("badmanifest.wasm")
    );

    // The good plugin loaded and runs.
    assert!(record.job_types.iter().any(|t| t == "TEST_ECHO"));
    let job = harness.enqueue("TEST_ECHO", json!(7)).await;
    let job = harness.wait_finished(&job.id).await;
    assert_eq!(job.result, Some(json!(7)));

    // Fixing a broken manifest clears its error.
    install_plugin(
        &harness.plugins_dir,
        "badmanifest",
        &testkit_bytes(),
        Some("timeout_secs = 5\n[config]\njob_types = \"FIXED_TYPE\"\n"),
    );
    let record = worker.wait_job_type("FIXED_TYPE").await;
    assert_eq!(record.load_errors.len(), 4, "{record:?}");
    assert!(
        !record
            .load_errors
            .iter()
            .any(|error| error.file.ends_with("badmanifest.wasm")),
        "{record:?}"
    );
    worker.stop().await.expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_replacement_keeps_old_version() {
    let harness = Harness::new();
    harness.install_testkit("[config]\nversion = \"1.0.0\"\n");
    let old_sha = hex::encode(Sha256::digest(testkit_bytes()));
    let worker = harness
        .start_worker(harness.settings("broken-replacement"))
        .await;
    worker.wait_job_type("TEST_ECHO").await;

    // Garbage renamed over the loaded file.
    install_plugin(&harness.plugins_dir, "testkit", b"garbage\n", None);
    let record = worker
        .wait_record("a load error for testkit.wasm", |record| {
            record
                .load_errors
                .iter()
                .any(|error| error.file.ends_with("testkit.wasm"))
        })
        .await;
    assert_eq!(record.load_errors.len(), 1, "{record:?}");
    let message = &record.load_errors[0].message;
    assert!(
        message.contains("not a valid WebAssembly component"),
        "{message}"
    );
    assert!(message.contains("version 1.0.0"), "{message}");
    assert!(
        record.job_types.iter().any(|t| t == "TEST_ECHO"),
        "{record:?}"
    );
    assert_eq!(record.plugins.len(), 1, "{record:?}");
    assert_eq!(record.plugins[0].sha256, old_sha);

    // A new job of its type runs on the version that loaded before.
    let job = harness.enqueue("TEST_ECHO", json!("old version")).await;
    let job = harness.wait_finished(&job.id).await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.last_error);
    assert_eq!(job.result, Some(json!("old version")));
    let started = harness.events_of(&job.run_id, "RunStarted");
    assert_eq!(started[0].data["pluginVersion"], json!("1.0.0"));

    // A good file replaces the garbage, loads and clears the error.
    let new_bytes = with_custom_section(&testkit_bytes(), "jobhost-test", b"version 2");
    let new_sha = hex::encode(Sha256::digest(&new_bytes));
    install_plugin(
        &harness.plugins_dir,
        "testkit",
        &new_bytes,
        Some("[config]\nversion = \"2.0.0\"\n"),
    );
    let record = worker
        .wait_record("testkit 2.0.0 loaded from the new bytes", |record| {
            record
                .plugins
                .iter()
                .any(|plugin| plugin.version == "2.0.0" && plugin.sha256 == new_sha)
        })
        .await;
    assert!(record.load_errors.is_empty(), "{record:?}");
    assert_eq!(record.plugins.len(), 1, "{record:?}");

    let next = harness
        .enqueue("TEST_CONFIG", json!({ "key": "version" }))
        .await;
    let next = harness.wait_finished(&next.id).await;
    assert_eq!(next.result, Some(json!({ "value": "2.0.0" })));
    worker.stop().await.expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_copy_keeps_old_version() {
    let harness = Harness::new();
    harness.install_testkit("");
    let old_sha = hex::encode(Sha256::digest(testkit_bytes()));
    let worker = harness.start_worker(harness.settings("stalled-copy")).await;
    worker.wait_job_type("TEST_ECHO").await;

    // Overwrite the loaded file in place with the first half of a new version, then stall for
    // longer than the settle period, so the half file is loaded and fails.
    let new_bytes = with_custom_section(&testkit_bytes(), "jobhost-test", b"version 2");
    let new_sha = hex::encode(Sha256::digest(&new_bytes));
    let path = harness.plugins_dir.join("testkit.wasm");
    let mut file = std::fs::File::create(&path).expect("open plugin file");
    let (first_half, second_half) = new_bytes.split_at(new_bytes.len() / 2);
    file.write_all(first_half).expect("write first half");
    file.flush().expect("flush first half");
    let record = worker
        .wait_record("a load error for the half-written testkit.wasm", |record| {
            record
                .load_errors
                .iter()
                .any(|error| error.file.ends_with("testkit.wasm"))
        })
        .await;
    assert!(
        record.job_types.iter().any(|t| t == "TEST_ECHO"),
        "{record:?}"
    );
    assert_eq!(record.plugins.len(), 1, "{record:?}");
    assert_eq!(record.plugins[0].sha256, old_sha);

    // The old version keeps running jobs while the copy stalls.
    let job = harness
        .enqueue("TEST_ECHO", json!("during the stall"))
        .await;
    let job = harness.wait_finished(&job.id).await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.last_error);

    // The finished copy loads and clears the error.
    file.write_all(second_half).expect("write second half");
    file.flush().expect("flush second half");
    drop(file);
    let record = worker
        .wait_record("testkit loaded from the finished copy", |record| {
            record.plugins.iter().any(|plugin| plugin.sha256 == new_sha)
        })
        .await;
    assert!(record.load_errors.is_empty(), "{record:?}");
    worker.stop().await.expect("worker stops cleanly");
}
