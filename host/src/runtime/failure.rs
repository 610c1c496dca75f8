//! Failure reports of attempts that did not complete: the failure codes the runtime itself
//! produces, whether each is worth a retry, and the text of each message.

use super::limits::StoreLimiter;
use crate::job::{FailureKind, JobFailure};
use crate::runtime::bindings::jobhost::plugin::types::{ErrorKind, JobError};
use std::time::Duration;

/// Failure codes the runtime and the worker set (plugins choose their own codes for the errors they
/// return).
pub mod code {
    /// The attempt ran past its wall-clock deadline.
    pub const DEADLINE_EXCEEDED: &str = "deadline_exceeded";
    /// The guest tried to grow its linear memory past the plugin's cap.
    pub const MEMORY_LIMIT_EXCEEDED: &str = "memory_limit_exceeded";
    /// The guest trapped: a panic, an `unreachable`, an out-of-bounds access, a stack overflow.
    pub const TRAP: &str = "trap";
    /// The plugin returned a result that is not JSON.
    pub const INVALID_RESULT: &str = "invalid_result";
    /// The plugin's sandbox could not be created.
    pub const SANDBOX_UNAVAILABLE: &str = "sandbox_unavailable";
    /// The job was cancelled while it ran.
    pub const CANCELLED: &str = "cancelled";
    /// The attempt's lease was gone when the worker tried to finish it.
    pub const LEASE_LOST: &str = "lease_lost";
    /// The job vanished from the queue (quarantined or deleted) while an attempt ran.
    pub const JOB_GONE: &str = "job_gone";
    /// A queue call that finishes an attempt failed.
    pub const QUEUE_ERROR: &str = "queue_error";
}

/// Maximum failure message kept on a job, in bytes.
const MAX_MESSAGE_BYTES: usize = 8 * 1024;
/// Maximum failure code a plugin may set, in bytes.
const MAX_CODE_BYTES: usize = 64;
/// Maximum wasm backtrace kept in a trap message, in bytes.
const MAX_BACKTRACE_BYTES: usize = 3 * 1024;

/// An error a host import raises to stop the guest, carrying its own code and retry decision.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HostTrap {
    pub code: &'static str,
    pub message: String,
    pub retryable: bool,
}

impl HostTrap {
    pub fn retryable(code: &'static str, message: impl Into<String>) -> Self {
        HostTrap {
            code,
            message: message.into(),
            retryable: true,
        }
    }
}

/// Builds the deadline failure. Retryable, because most deadlines pass while the plugin waits on
/// a model server, which may reply in time on the next attempt. A plugin that keeps its progress
/// in job state resumes instead of starting over. A plugin that always overruns uses up its
/// attempts and fails.
pub fn deadline_exceeded(deadline: Duration) -> JobFailure {
    JobFailure::new(
        FailureKind::Retryable,
        code::DEADLINE_EXCEEDED,
        format!(
            "job exceeded its {} deadline: raise timeout_secs in the plugin's manifest if the job needs longer",
            format_duration(deadline)
        ),
    )
}

/// Formats a duration as seconds: `1s`, `1.5s`, `900s`.
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        let text = format!("{:.3}", duration.as_secs_f64());
        format!("{}s", text.trim_end_matches('0'))
    }
}

/// Classifies an error the guest call ended with. The limiter separates a trap that followed a
/// rejected memory growth from any other trap. `stderr_tail` contains the guest's last output,
/// where a Rust guest prints its panic message before it traps.
pub fn classify_trap(
    error: &wasmtime::Error,
    limiter: &StoreLimiter,
    stderr_tail: &str,
    plugin: &str,
) -> JobFailure {
    if let Some(host) = error.downcast_ref::<HostTrap>() {
        let kind = if host.retryable {
            FailureKind::Retryable
        } else {
            FailureKind::Fatal
        };
        return JobFailure::new(kind, host.code, capped(host.message.clone()));
    }

    // Fatal: the same input requests the same memory again, so only a larger cap helps.
    if let Some(requested) = limiter.rejected_growth() {
        return JobFailure::new(
            FailureKind::Fatal,
            code::MEMORY_LIMIT_EXCEEDED,
            format!(
                "plugin {plugin} exceeded its memory limit of {} MiB (its memory would have grown to {} MiB): raise memory_mib in the plugin's manifest or reduce the job's memory use",
                limiter.memory_limit() >> 20,
                requested.div_ceil(1 << 20)
            ),
        );
    }

    // Fatal: a trap or a panic is a bug in the plugin or a payload it cannot handle, and a
    // retry runs the same code on the same payload.
    let mut message = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("plugin {plugin} trapped: {trap}"),
        None => format!(
            "plugin {plugin} failed in the sandbox: {}",
            error.root_cause()
        ),
    };
    if let Some(panic) = panic_message(stderr_tail) {
        message = format!("plugin {plugin} panicked: {panic}");
    }
    if let Some(backtrace) = error.downcast_ref::<wasmtime::WasmBacktrace>() {
        let mut backtrace = backtrace.to_string();
        cut(&mut backtrace, MAX_BACKTRACE_BYTES);
        message = format!("{message}\n{backtrace}");
    }
    JobFailure::new(FailureKind::Fatal, code::TRAP, capped(message))
}

/// Converts the error a plugin returned.
pub fn from_job_error(error: JobError, plugin: &str) -> JobFailure {
    let kind = match error.kind {
        ErrorKind::InvalidPayload => FailureKind::InvalidPayload,
        ErrorKind::Retryable => FailureKind::Retryable,
        ErrorKind::Fatal => FailureKind::Fatal,
    };
    let mut code = error.code;
    cut(&mut code, MAX_CODE_BYTES);
    if code.is_empty() {
        code = format!("{plugin}_error");
    }
    JobFailure::new(kind, code, capped(error.message))
}

/// Builds the failure for a result that is not JSON. Fatal, because the plugin returns the same
/// text again.
pub fn invalid_result(plugin: &str, error: &serde_json::Error) -> JobFailure {
    JobFailure::new(
        FailureKind::Fatal,
        code::INVALID_RESULT,
        format!("plugin {plugin} returned a result that is not valid JSON: {error}"),
    )
}

/// Builds the failure for a sandbox that could not be created, such as an instance pool that is
/// full. Retryable, because it depends on the worker's load, not on the job.
pub fn sandbox_unavailable(plugin: &str, error: &wasmtime::Error) -> JobFailure {
    JobFailure::new(
        FailureKind::Retryable,
        code::SANDBOX_UNAVAILABLE,
        capped(format!(
            "could not create a sandbox for plugin {plugin}: {error}"
        )),
    )
}

/// Extracts a Rust panic message (`thread '...' panicked at file:line:col:` followed by the
/// message lines) from guest output.
fn panic_message(output: &str) -> Option<String> {
    let start = output.rfind("panicked at ")?;
    let text = &output[start + "panicked at ".len()..];
    let text = match text.find("\nnote: ") {
        Some(end) => &text[..end],
        None => text,
    };
    let text = text.trim();
    (!text.is_empty()).then(|| text.replace('\n', " "))
}

fn capped(mut message: String) -> String {
    cut(&mut message, MAX_MESSAGE_BYTES);
    message
}

fn cut(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_as_seconds() {
        assert_eq!(format_duration(Duration::from_secs(1)), "1s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(900)), "900s");
    }

    #[test]
    fn deadline_message_names_the_deadline() {
        let failure = deadline_exceeded(Duration::from_secs(1));
        assert_eq!(failure.code, "deadline_exceeded");
        assert!(failure.kind.is_retryable());
        assert!(
            failure.message.starts_with("job exceeded its 1s deadline"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn panic_message_is_found_in_output() {
        let output = "some log\nthread '<unnamed>' panicked at src/lib.rs:10:5:\nboom here\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(output).as_deref(),
            Some("src/lib.rs:10:5: boom here")
        );
        assert_eq!(panic_message("no panic\n"), None);
    }

    #[test]
    fn empty_plugin_code_gets_a_default() {
        let failure = from_job_error(
            JobError {
                kind: ErrorKind::Retryable,
                code: String::new(),
                message: "busy".to_string(),
            },
            "testkit",
        );
        assert_eq!(failure.code, "testkit_error");
        assert_eq!(failure.kind, FailureKind::Retryable);
    }
}
