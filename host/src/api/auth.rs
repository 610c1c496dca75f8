//! Bearer-token check on mutating routes when `API_TOKEN` is set.

use super::AppState;
use super::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Rejects a POST, PUT, PATCH or DELETE request without `Authorization: Bearer <API_TOKEN>` with
/// 401. GET requests and every request when no token is configured pass through.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.settings.api_token.as_ref() else {
        return next.run(request).await;
    };
    if !is_mutating(request.method()) {
        return next.run(request).await;
    }

    let provided = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token);
    match provided {
        Some(token) if tokens_match(token, expected.expose()) => next.run(request).await,
        Some(_) => unauthorized("the bearer token is not valid for this API"),
        None => unauthorized(
            "this route requires the header Authorization: Bearer <token> (the API_TOKEN of the server)",
        ),
    }
}

fn unauthorized(message: &str) -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response()
}

fn is_mutating(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Extracts the token of an `Authorization: Bearer <token>` value. The scheme is
/// case-insensitive.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares SHA-256 digests of both tokens without an early exit, so the time taken reveals
/// neither the token's length nor how many leading bytes matched.
fn tokens_match(provided: &str, expected: &str) -> bool {
    let provided = Sha256::digest(provided.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    provided
        .iter()
        .zip(expected.iter())
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }

    #[test]
    fn token_comparison() {
        assert!(tokens_match("secret-token", "secret-token"));
        assert!(!tokens_match("secret-tokem", "secret-token"));
        assert!(!tokens_match("secret", "secret-token"));
        assert!(!tokens_match("", "secret-token"));
    }
}
