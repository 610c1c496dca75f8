//! Extractors that reject bad input with an `ApiError` instead of axum's plain-text rejections.

use super::AppState;
use super::error::ApiError;
use crate::job::validate_id;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::error::Category;

/// A JSON request body. Rejects a content type other than `application/json` (or `+json`) with
/// 415, a body over the size limit with 413, bad JSON syntax with 400, and JSON of the wrong shape
/// with 422 naming the field, such as `settings.rounds`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "request body must be JSON: send the header Content-Type: application/json",
            ));
        }

        let limit = state.settings.max_body_bytes;
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!(
                            "request body is larger than the {limit}-byte limit (MAX_BODY_BYTES)"
                        ),
                    )
                } else {
                    ApiError::bad_request(
                        "unreadable_body",
                        format!("request body could not be read: {}", rejection.body_text()),
                    )
                }
            })?;

        parse_json(&bytes).map(ApiJson)
    }
}

/// Deserializes `bytes` as one JSON document of type `T`, reporting the path of a field of the
/// wrong type.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "invalid_json",
            "request body is empty: send a JSON object",
        ));
    }

    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            Category::Data => ApiError::invalid_field(
                path_or_empty(&path),
                format!("invalid request body at `{path}`: {inner}"),
            ),
            Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
                "invalid_json",
                format!("request body is not valid JSON: {inner}"),
            ),
        }
    })?;
    deserializer.end().map_err(|error| {
        ApiError::bad_request(
            "invalid_json",
            format!("request body has data after the JSON value: {error}"),
        )
    })?;
    Ok(value)
}

/// Maps the root path, which serde_path_to_error writes as `.`, to no field.
fn path_or_empty(path: &str) -> &str {
    if path == "." { "" } else { path }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media_type == "application/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"))
}

/// Lowercases the first letter of an axum rejection message ("Failed to ..."), so that it reads
/// like the other error messages.
fn lowercase_first(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A query string. An invalid value (such as `status=done`) is a 400 naming the parameter.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(value) =
            Query::<T>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| {
                    ApiError::bad_request("invalid_query", lowercase_first(&rejection.body_text()))
                })?;
        Ok(ApiQuery(value))
    }
}

/// The single id in a route such as `/api/jobs/{jobId}`, not yet validated. Handlers check it
/// with `PathId::checked`, so that the message names the kind of id.
#[derive(Debug)]
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                ApiError::bad_request("invalid_id", lowercase_first(&rejection.body_text()))
            })?;
        Ok(PathId(id))
    }
}

impl PathId {
    /// Validates the id as a file-name-safe id (`validate_id`), with a 400 when it is not one.
    pub fn checked(self, kind: &str) -> Result<String, ApiError> {
        validate_id(kind, &self.0)
            .map_err(|message| ApiError::bad_request("invalid_id", message))?;
        Ok(self.0)
    }
}
