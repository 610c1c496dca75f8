//! Test plugin: one job type per host feature the worker's tests and benchmarks exercise (results,
//! errors, traps, limits, cancellation, state, events, artifacts, config, the model).
//!
//! Config keys (the `[config]` table of `testkit.toml`):
//! - `version`: the version `describe` returns, `1.0.0` by default;
//! - `job_types`: comma-separated job types `describe` returns, all of [`JOB_TYPES`] by default,
//!   so a second copy of the plugin can claim other types or conflict on purpose;
//! - `succeed_on_attempt`: the first attempt of `TEST_ATTEMPT` that succeeds, 1 by default.
//!
//! Not for production: `TEST_SPIN` and `TEST_GROW` exist to exhaust the sandbox's limits.

use jobhost_plugin_sdk::{
    ErrorKind, Guest, Job, JobError, PluginInfo, config_get, emit_event, export_plugin,
    invalid_field, is_cancelled, llm, parse_payload, progress, put_artifact, state_get, state_set,
    to_result,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Job types handled when the `job_types` config key is not set.
pub const JOB_TYPES: [&str; 12] = [
    "TEST_ECHO",
    "TEST_NOOP",
    "TEST_SLEEP",
    "TEST_SPIN",
    "TEST_GROW",
    "TEST_PANIC",
    "TEST_FAIL",
    "TEST_CHAT",
    "TEST_STATE",
    "TEST_EMIT",
    "TEST_CONFIG",
    "TEST_ATTEMPT",
];

/// How often `TEST_SLEEP` wakes up to check for cancellation.
const SLEEP_SLICE: Duration = Duration::from_millis(50);

struct Testkit;

impl Guest for Testkit {
    fn describe() -> PluginInfo {
        let job_types = match config_get("job_types") {
            Some(list) => parse_job_types(&list),
            None => JOB_TYPES.iter().map(|t| t.to_string()).collect(),
        };
        PluginInfo {
            name: "testkit".to_string(),
            version: config_get("version").unwrap_or_else(|| "1.0.0".to_string()),
            job_types,
            description: "Test plugin that exercises each host feature on demand".to_string(),
        }
    }

    fn run(job: Job) -> Result<String, JobError> {
        match job.job_type.as_str() {
            "TEST_ECHO" => Ok(job.payload),
            "TEST_NOOP" => Ok("null".to_string()),
            "TEST_SLEEP" => sleep(&job.payload),
            "TEST_SPIN" => spin(&job.payload),
            "TEST_GROW" => grow(&job.payload),
            "TEST_PANIC" => panic_on_request(&job.payload),
            "TEST_FAIL" => Err(requested_error(&job.payload)?),
            "TEST_CHAT" => chat(&job.payload),
            "TEST_STATE" => swap_state(&job.payload),
            "TEST_EMIT" => emit(&job.payload),
            "TEST_CONFIG" => read_config(&job.payload),
            "TEST_ATTEMPT" => check_attempt(&job),
            other => Err(JobError::fatal(
                "unknown_job_type",
                format!("testkit does not handle job type {other}"),
            )),
        }
    }
}

export_plugin!(Testkit);

/// Splits the `job_types` config value at commas, dropping blanks around and between entries.
fn parse_job_types(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

#[derive(Deserialize)]
struct SleepPayload {
    ms: u64,
    /// Reports progress after every slice, so tests can watch a running attempt.
    #[serde(default)]
    heartbeat: bool,
}

/// Sleeps `ms` milliseconds in slices of [`SLEEP_SLICE`] through WASI's monotonic clock, and stops
/// with the fatal error `cancelled` when the job is cancelled.
fn sleep(payload: &str) -> Result<String, JobError> {
    let payload: SleepPayload = parse_payload(payload)?;
    let total = Duration::from_millis(payload.ms);
    let started = Instant::now();
    loop {
        if is_cancelled() {
            return Err(JobError::cancelled());
        }
        let elapsed = started.elapsed();
        if elapsed >= total {
            break;
        }
        std::thread::sleep(SLEEP_SLICE.min(total - elapsed));
        if payload.heartbeat {
            let done = started.elapsed().min(total).as_millis();
            progress(
                clamp_u32(done),
                clamp_u32(total.as_millis()),
                "sleeping (ms)",
            );
        }
    }
    to_result(&json!({ "sleptMs": payload.ms }))
}

#[derive(Deserialize)]
struct SpinPayload {
    /// Milliseconds to spin; `null` spins until the host interrupts the instance.
    ms: Option<u64>,
}

/// Busy-loops without calling any jobhost import, so only the host's interruption (deadline,
/// cancellation) can stop an endless spin. A timed spin reads the WASI clock every few thousand
/// iterations.
fn spin(payload: &str) -> Result<String, JobError> {
    let payload: SpinPayload = parse_payload(payload)?;
    let mut counter: u64 = 0;
    match payload.ms {
        None => loop {
            counter = black_box(counter.wrapping_add(1));
        },
        Some(ms) => {
            let total = Duration::from_millis(ms);
            let started = Instant::now();
            while started.elapsed() < total {
                for _ in 0..10_000 {
                    counter = black_box(counter.wrapping_add(1));
                }
            }
            to_result(&json!({ "spunMs": ms, "iterations": counter }))
        }
    }
}

#[derive(Deserialize)]
struct GrowPayload {
    mib: u32,
}

/// Allocates `mib` MiB and writes to every 4 KiB of it, so the memory is really committed.
///
/// An allocation the host's memory limit denies is returned as the fatal error `out_of_memory`
/// rather than an abort, so both outcomes of a limit test report a clear reason.
fn grow(payload: &str) -> Result<String, JobError> {
    let payload: GrowPayload = parse_payload(payload)?;
    let bytes = usize::try_from(payload.mib)
        .ok()
        .and_then(|mib| mib.checked_mul(1024 * 1024))
        .ok_or_else(|| invalid_field("mib", "does not fit in the guest's address space"))?;

    let mut buffer: Vec<u8> = Vec::new();
    buffer.try_reserve_exact(bytes).map_err(|error| {
        JobError::fatal(
            "out_of_memory",
            format!("failed to allocate {} MiB: {error}", payload.mib),
        )
    })?;
    buffer.resize(bytes, 0);
    for offset in (0..bytes).step_by(4096) {
        buffer[offset] = 1;
    }
    black_box(&buffer);
    to_result(&json!({ "grewMib": payload.mib }))
}

#[derive(Deserialize)]
struct PanicPayload {
    message: String,
}

fn panic_on_request(payload: &str) -> Result<String, JobError> {
    let payload: PanicPayload = parse_payload(payload)?;
    panic!("{}", payload.message);
}

#[derive(Deserialize)]
struct FailPayload {
    kind: String,
    code: String,
    message: String,
}

/// Builds the error that `TEST_FAIL`'s payload requests.
fn requested_error(payload: &str) -> Result<JobError, JobError> {
    let payload: FailPayload = parse_payload(payload)?;
    let kind = match payload.kind.as_str() {
        "retryable" => ErrorKind::Retryable,
        "fatal" => ErrorKind::Fatal,
        "invalid-payload" => ErrorKind::InvalidPayload,
        other => {
            return Err(invalid_field(
                "kind",
                format!("{other:?} is not one of \"retryable\", \"fatal\", \"invalid-payload\""),
            ));
        }
    };
    Ok(JobError {
        kind,
        code: payload.code,
        message: payload.message,
    })
}

#[derive(Deserialize)]
struct ChatPayload {
    prompt: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageJson {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

/// Makes one model call with `prompt` as the user message. A chat error becomes the job's error
/// and keeps whether a retry can help.
fn chat(payload: &str) -> Result<String, JobError> {
    let payload: ChatPayload = parse_payload(payload)?;
    let request = llm::ChatRequest {
        messages: vec![llm::Message {
            role: llm::Role::User,
            content: payload.prompt,
        }],
        model: None,
        temperature: None,
        max_tokens: None,
    };
    let response = jobhost_plugin_sdk::chat(&request)?;
    let usage = UsageJson {
        prompt_tokens: response.usage.prompt_tokens,
        completion_tokens: response.usage.completion_tokens,
        total_tokens: response.usage.total_tokens,
    };
    to_result(&json!({
        "text": response.text,
        "usage": usage,
        "model": response.model,
        "provider": response.provider,
    }))
}

#[derive(Deserialize)]
struct StatePayload {
    key: String,
    value: String,
}

/// Reads `key`, stores `value` under it, and returns the value read.
fn swap_state(payload: &str) -> Result<String, JobError> {
    let payload: StatePayload = parse_payload(payload)?;
    let previous = state_get(&payload.key);
    state_set(&payload.key, &payload.value)?;
    to_result(&json!({ "previous": previous }))
}

#[derive(Deserialize)]
struct EmitPayload {
    count: u32,
}

/// Emits `count` `TestEvent` events, each followed by progress, then stores the artifact
/// `out.txt` with one line per event.
fn emit(payload: &str) -> Result<String, JobError> {
    let payload: EmitPayload = parse_payload(payload)?;
    let mut lines = String::new();
    for index in 0..payload.count {
        emit_event(
            "TestEvent",
            &json!({ "index": index, "count": payload.count }),
        )?;
        progress(index + 1, payload.count, "emitting test events");
        lines.push_str(&format!("event {index}\n"));
    }
    put_artifact("out.txt", "text/plain", lines.as_bytes())?;
    to_result(&json!({ "emitted": payload.count }))
}

#[derive(Deserialize)]
struct ConfigPayload {
    key: String,
}

fn read_config(payload: &str) -> Result<String, JobError> {
    let payload: ConfigPayload = parse_payload(payload)?;
    let value: Value = config_get(&payload.key).map_or(Value::Null, Value::String);
    to_result(&json!({ "value": value }))
}

/// Succeeds from attempt `succeed_on_attempt` on and fails retryably before it.
fn check_attempt(job: &Job) -> Result<String, JobError> {
    let succeed_on = match config_get("succeed_on_attempt") {
        None => 1,
        Some(text) => text.trim().parse::<u32>().map_err(|_| {
            JobError::fatal(
                "invalid_config",
                format!("config key succeed_on_attempt is {text:?}; expected a whole number"),
            )
        })?,
    };
    if job.attempt < succeed_on {
        return Err(JobError::retryable(
            "attempt_too_early",
            format!(
                "attempt {} fails on purpose because config succeed_on_attempt is {succeed_on}",
                job.attempt
            ),
        ));
    }
    to_result(&json!({ "attempt": job.attempt }))
}

fn clamp_u32(value: u128) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_types_split_at_commas() {
        assert_eq!(
            parse_job_types(" TEST_ECHO, OTHER ,,"),
            vec!["TEST_ECHO".to_string(), "OTHER".to_string()]
        );
    }

    #[test]
    fn requested_error_has_requested_kind() {
        let error = requested_error(r#"{"kind": "retryable", "code": "c", "message": "m"}"#)
            .expect("valid payload");
        assert_eq!(error.kind, ErrorKind::Retryable);
        assert_eq!(error.code, "c");
        assert_eq!(error.message, "m");

        let error = requested_error(r#"{"kind": "invalid-payload", "code": "c", "message": "m"}"#)
            .expect("valid payload");
        assert_eq!(error.kind, ErrorKind::InvalidPayload);
    }

    #[test]
    fn requested_error_rejects_unknown_kind() {
        let error = requested_error(r#"{"kind": "odd", "code": "c", "message": "m"}"#)
            .expect_err("unknown kind");
        assert_eq!(error.kind, ErrorKind::InvalidPayload);
        assert!(error.message.contains("`kind`"), "{}", error.message);
    }

    #[test]
    fn grow_allocates_requested_memory() {
        assert_eq!(grow(r#"{"mib": 2}"#).expect("2 MiB"), r#"{"grewMib":2}"#);
    }

    #[test]
    fn spin_with_zero_ms_returns() {
        let result: Value =
            serde_json::from_str(&spin(r#"{"ms": 0}"#).expect("spin")).expect("json");
        assert_eq!(result["spunMs"], 0);
    }
}
