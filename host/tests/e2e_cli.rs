//! The `jobhost` command line as a process: rejected settings, help text, secrets kept out of
//! logs, `jobhost up`, and `jobhost queue` on the data an API process wrote.

mod e2e_support;

use e2e_support::{Client, Jobhost, TestDirs, is_finished_status};
use serde_json::json;
use std::process::{Command, Output};

/// Runs `jobhost <args>` to completion with only `envs` among the jobhost settings.
fn run_jobhost(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jobhost"));
    command.args(args);
    for setting in jobhost::config::environment_variables("up") {
        command.env_remove(setting);
    }
    for (key, value) in envs {
        command.env(key, value);
    }
    command.output().expect("run jobhost")
}

#[test]
fn invalid_settings_exit_2_naming_the_variable() {
    let dirs = TestDirs::new();
    let unused_data_dir = dirs.root.path().join("never-created");
    let data_dir = unused_data_dir.display().to_string();
    let cases = [
        ("worker", "WORKER_CONCURRENCY", "abc", "1 to 1024"),
        ("worker", "WORKER_CONCURRENCY", "0", "1 to 1024"),
        ("worker", "WORKER_POLL_MS", "5", "10 to 60000"),
        ("worker", "LLM_BASE_URL", "ftp://models.invalid", "http"),
        ("worker", "LLM_TIMEOUT_SECS", "-1", "1 to 3600"),
        ("serve", "LOG_FORMAT", "xml", "text, json"),
        ("serve", "LISTEN_ADDR", "nope", "IP:PORT"),
        ("serve", "MAX_BODY_BYTES", "lots", "1024 to"),
        ("up", "RUST_LOG", "info,=[", "directives"),
    ];
    for (subcommand, variable, value, allowed) in cases {
        let output = run_jobhost(
            &[subcommand],
            &[(variable, value), ("DATA_DIR", data_dir.as_str())],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        let label = format!("{subcommand} with {variable}={value}");
        assert_eq!(output.status.code(), Some(2), "{label}: {stderr}");
        assert!(stderr.contains(variable), "{label}: {stderr}");
        assert!(stderr.contains(value), "{label}: {stderr}");
        assert!(stderr.contains(allowed), "{label}: {stderr}");
    }
    assert!(
        !unused_data_dir.exists(),
        "a rejected start-up created DATA_DIR"
    );
}

#[test]
fn help_lists_settings_with_defaults() {
    let output = run_jobhost(&["up", "--help"], &[("API_TOKEN", "help-secret-1")]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in jobhost::config::environment_variables("up") {
        assert!(
            help.contains(&format!("[env: {variable}")),
            "{variable} missing:\n{help}"
        );
    }
    for default in [
        "[default: 127.0.0.1:3000]",
        "[default: ./data]",
        "[default: ./plugins]",
        "[default: 16]",
        "[default: 1000]",
        "[default: 30]",
        "[default: 120]",
        "[default: 1048576]",
        "[default: text]",
        "[default: info]",
    ] {
        assert!(help.contains(default), "{default} missing:\n{help}");
    }
    assert!(!help.contains("help-secret-1"), "API_TOKEN printed in help");
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_stay_out_of_logs() {
    let dirs = TestDirs::new();
    let data_dir = dirs.data_dir.display().to_string();
    let mut serve = Jobhost::start(
        "serve",
        dirs.root.path(),
        &["serve"],
        &[
            ("DATA_DIR", data_dir.clone()),
            ("LISTEN_ADDR", "127.0.0.1:0".to_string()),
            ("API_TOKEN", "api-secret-7731".to_string()),
            ("RUST_LOG", "debug".to_string()),
        ],
    );
    let base = serve.wait_for_api();
    let client = Client::new(&base);

    let response = client
        .http
        .post(format!("{base}/api/jobs"))
        .bearer_auth("wrong-token-9912")
        .json(&json!({ "type": "TEST_NOOP" }))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 401);
    let response = client
        .http
        .post(format!("{base}/api/jobs"))
        .bearer_auth("api-secret-7731")
        .json(&json!({ "type": "TEST_NOOP" }))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 202);

    let mut worker = Jobhost::start(
        "worker",
        dirs.root.path(),
        &["worker"],
        &[
            ("DATA_DIR", data_dir),
            ("PLUGINS_DIR", dirs.plugins_dir.display().to_string()),
            ("LLM_BASE_URL", "http://127.0.0.1:9/v1".to_string()),
            ("LLM_API_KEY", "llm-secret-4410".to_string()),
            ("RUST_LOG", "debug".to_string()),
        ],
    );
    worker.wait_for_message("worker started");

    assert!(worker.terminate().success(), "{}", worker.log());
    assert!(serve.terminate().success(), "{}", serve.log());
    for (process, log) in [("serve", serve.log()), ("worker", worker.log())] {
        for secret in ["api-secret-7731", "wrong-token-9912", "llm-secret-4410"] {
            assert!(!log.contains(secret), "{process} logged {secret}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn up_serves_and_runs_jobs_in_one_process() {
    let dirs = TestDirs::new();
    dirs.add_testkit();
    let mut up = Jobhost::start(
        "up",
        dirs.root.path(),
        &["up"],
        &[
            ("DATA_DIR", dirs.data_dir.display().to_string()),
            ("PLUGINS_DIR", dirs.plugins_dir.display().to_string()),
            ("LISTEN_ADDR", "127.0.0.1:0".to_string()),
            ("WORKER_POLL_MS", "200".to_string()),
        ],
    );
    let base = up.wait_for_api();
    up.wait_for_message("worker started");
    let client = Client::new(&base);

    let (status, accepted) = client
        .post(
            "/api/jobs",
            &json!({ "type": "TEST_ECHO", "payload": { "hello": "up" } }),
            None,
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let job_id = accepted["jobId"].as_str().expect("jobId");
    let job = client
        .wait_for(&format!("/api/jobs/{job_id}"), is_finished_status)
        .await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["result"], json!({ "hello": "up" }));

    // The queue subcommand reads the same data directory.
    let output = run_jobhost(
        &["queue", "get", job_id],
        &[("DATA_DIR", &dirs.data_dir.display().to_string())],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("queue get prints JSON");
    assert_eq!(printed["status"], "completed", "{printed}");

    assert!(up.terminate().success(), "{}", up.log());
}
