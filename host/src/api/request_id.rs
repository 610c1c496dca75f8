//! The request id of each request and the middleware that opens the request's span, logs its
//! completion and counts it.

use super::AppState;
use crate::job::{new_id, validate_id};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";

/// Id of the current request: the client's `X-Request-Id` when it is a valid id (1 to 64
/// characters of letters, digits, '-' and '_'), otherwise a new UUID v7.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

fn request_id_from(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| validate_id("request id", value).is_ok())
        .map(str::to_string)
        .unwrap_or_else(new_id)
}

/// Assigns the request id, runs the request inside a span with method, path, route and request
/// id, returns the id in `X-Request-Id`, and records the status in the log and the metrics.
pub async fn trace_request(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let request_id = request_id_from(request.headers());
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));

    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let span = tracing::info_span!(
        "http_request",
        method = %method,
        path = %request.uri().path(),
        route = %route,
        request_id = %request_id,
        status = tracing::field::Empty,
    );

    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("status", status.as_u16());

    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(HEADER, value);
    }
    state
        .metrics
        .record_request(method.as_str(), &route, status.as_u16());
    span.in_scope(|| {
        tracing::info!(
            latency_ms = started.elapsed().as_millis() as u64,
            "request finished"
        );
    });
    response
}
