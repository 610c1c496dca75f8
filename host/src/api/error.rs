//! The one error type of the HTTP API and its JSON body,
//! `{"error": {"code": "...", "message": "...", "field": "..."?}}`.
//!
//! Client errors (4xx) are not logged, because the response states what the client must fix. Server errors
//! (5xx) are logged here once, inside the request's span, and their body hides the cause.

use crate::queue::QueueError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::fmt;

/// A failed request: an HTTP status, a stable machine-readable code and a message for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The request field the error is about, as a path such as `personas[1].id`.
    field: Option<String>,
    /// The cause of a server error, which is logged and never sent.
    internal: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            internal: None,
        }
    }

    /// 400: the request is malformed (bad JSON syntax, a bad query string or path id).
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 422: the request is well-formed but a value in it is not acceptable.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut error = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message);
        let field = field.into();
        error.field = (!field.is_empty()).then_some(field);
        error
    }

    /// 404 for a resource that does not exist.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 500: logs `cause` once and sends a body that does not reveal it.
    pub fn internal(cause: impl fmt::Display) -> Self {
        let mut error = ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal server error: the cause is in the server log under this response's X-Request-Id",
        );
        error.internal = Some(cause.to_string());
        error
    }

    /// 503: a dependency of the API (the data directory, the queue) is not usable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.internal {
            tracing::error!(code = self.code, error = %cause, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<QueueError> for ApiError {
    fn from(error: QueueError) -> Self {
        match &error {
            QueueError::NotFound { .. } => ApiError::not_found("job_not_found", error.to_string()),
            QueueError::Invalid(message) => ApiError::invalid_field("", message.clone()),
            QueueError::PayloadTooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                error.to_string(),
            ),
            QueueError::InvalidState { .. } | QueueError::LeaseLost { .. } => {
                ApiError::new(StatusCode::CONFLICT, "invalid_state", error.to_string())
            }
            QueueError::AttemptStopping { .. } => {
                ApiError::new(StatusCode::CONFLICT, "attempt_stopping", error.to_string())
            }
            QueueError::Io { .. } | QueueError::Corrupt { .. } => ApiError::internal(error),
        }
    }
}
