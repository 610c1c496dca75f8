use crate::bindings::jobhost::plugin::llm::ChatError;
use crate::{ErrorKind, JobError};

impl JobError {
    /// Builds an `invalid-payload` error, for a payload that no retry can fix.
    pub fn invalid_payload(code: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidPayload, code, message)
    }

    /// Builds a `retryable` error, for a transient failure: the queue retries the job while
    /// attempts remain.
    pub fn retryable(code: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Retryable, code, message)
    }

    /// Builds a `fatal` error, for a permanent failure: the job fails at once.
    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Fatal, code, message)
    }

    /// Builds the fatal error `cancelled`, for a plugin that stops because
    /// [`is_cancelled`](crate::is_cancelled) returned true.
    pub fn cancelled() -> Self {
        Self::fatal(
            "cancelled",
            "the job was cancelled or the worker is shutting down",
        )
    }

    fn new(kind: ErrorKind, code: &str, message: impl Into<String>) -> Self {
        JobError {
            kind,
            code: code.to_string(),
            message: message.into(),
        }
    }
}

/// Keeps the model's code, and whether a retry can help: a retryable chat error makes the job
/// retryable, any other one fatal.
impl From<ChatError> for JobError {
    fn from(error: ChatError) -> Self {
        let message = format!("model call failed: {}", error.message);
        if error.retryable {
            JobError::retryable(&error.code, message)
        } else {
            JobError::fatal(&error.code, message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_chat_error_stays_retryable() {
        let error = JobError::from(ChatError {
            retryable: true,
            code: "rate_limited".into(),
            message: "HTTP 429".into(),
        });
        assert_eq!(error.kind, ErrorKind::Retryable);
        assert_eq!(error.code, "rate_limited");
        assert_eq!(error.message, "model call failed: HTTP 429");
    }

    #[test]
    fn other_chat_error_is_fatal() {
        let error = JobError::from(ChatError {
            retryable: false,
            code: "bad_request".into(),
            message: "HTTP 400".into(),
        });
        assert_eq!(error.kind, ErrorKind::Fatal);
        assert_eq!(error.code, "bad_request");
    }
}
