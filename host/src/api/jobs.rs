//! `/api/jobs`: enqueue any job type, list, read, cancel and retry jobs.

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, PathId};
use super::{AppState, RequestId};
use crate::job::{
    Job, JobStatus, MAX_ATTEMPTS_LIMIT, PRIORITY_MAX, PRIORITY_MIN, validate_job_type,
};
use crate::queue::{EnqueueOptions, JobFilter, JobPage, QueueError};
use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Maximum length of an idempotency key, in characters. The queue enforces the same bound.
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 256;
/// Largest page of `GET /api/jobs`.
const MAX_PAGE: usize = 500;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnqueueRequest {
    #[serde(rename = "type")]
    job_type: String,
    /// The plugin's input, `null` when absent.
    #[serde(default)]
    payload: Value,
    idempotency_key: Option<String>,
    max_attempts: Option<u32>,
    run_at: Option<DateTime<Utc>>,
    priority: Option<i32>,
}

/// The body of a `202 Accepted` (or `200` for an idempotent repeat) enqueue.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobAccepted {
    pub job_id: String,
    pub run_id: String,
    pub status: JobStatus,
    pub links: JobLinks,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobLinks {
    pub job: String,
    pub run: String,
    pub events: String,
}

impl JobLinks {
    pub fn of(job: &Job) -> Self {
        JobLinks {
            job: format!("/api/jobs/{}", job.id),
            run: format!("/api/runs/{}", job.run_id),
            events: format!("/api/runs/{}/events", job.run_id),
        }
    }
}

pub async fn create(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(request): ApiJson<EnqueueRequest>,
) -> Result<(StatusCode, Json<JobAccepted>), ApiError> {
    let options = validate_enqueue(&request, &request_id)?;
    let enqueued = state
        .queue
        .enqueue(&request.job_type, request.payload, options)
        .await?;

    let job = enqueued.job;
    let status = if enqueued.existing {
        StatusCode::OK
    } else {
        state.metrics.record_enqueued(&job.job_type);
        tracing::info!(job_id = %job.id, run_id = %job.run_id, job_type = %job.job_type, "job enqueued");
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        Json(JobAccepted {
            links: JobLinks::of(&job),
            job_id: job.id,
            run_id: job.run_id,
            status: job.status,
        }),
    ))
}

/// Checks the fields the queue would also reject, so that the 422 names the field.
fn validate_enqueue(
    request: &EnqueueRequest,
    request_id: &RequestId,
) -> Result<EnqueueOptions, ApiError> {
    validate_job_type(&request.job_type)
        .map_err(|message| ApiError::invalid_field("type", message))?;
    // A debate's job must match its stored debate and own the key `RUN_DEBATE:<debateId>`, so
    // debates are only enqueued through `/api/debates`.
    if request.job_type == crate::debate::JOB_TYPE {
        return Err(ApiError::invalid_field(
            "type",
            format!(
                "job type {} is enqueued through POST /api/debates, which validates and stores the debate; post the debate there",
                crate::debate::JOB_TYPE
            ),
        ));
    }

    if let Some(max_attempts) = request.max_attempts
        && !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts)
    {
        return Err(ApiError::invalid_field(
            "maxAttempts",
            format!("maxAttempts is {max_attempts}: use 1 to {MAX_ATTEMPTS_LIMIT}"),
        ));
    }
    if let Some(priority) = request.priority
        && !(PRIORITY_MIN..=PRIORITY_MAX).contains(&priority)
    {
        return Err(ApiError::invalid_field(
            "priority",
            format!("priority is {priority}: use {PRIORITY_MIN} to {PRIORITY_MAX}"),
        ));
    }
    if let Some(key) = &request.idempotency_key {
        let chars = key.chars().count();
        if chars == 0 || chars > MAX_IDEMPOTENCY_KEY_CHARS {
            return Err(ApiError::invalid_field(
                "idempotencyKey",
                format!(
                    "idempotencyKey has {chars} characters: use 1 to {MAX_IDEMPOTENCY_KEY_CHARS}"
                ),
            ));
        }
    }

    Ok(EnqueueOptions {
        idempotency_key: request.idempotency_key.clone(),
        max_attempts: request.max_attempts,
        priority: request.priority.unwrap_or(0),
        run_at: request.run_at,
        request_id: Some(request_id.0.clone()),
    })
}

/// Query of `GET /api/jobs` and `GET /api/runs`: filters and a page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub(super) status: Option<JobStatus>,
    #[serde(rename = "type")]
    pub(super) job_type: Option<String>,
    pub(super) limit: Option<usize>,
    pub(super) cursor: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let limit = page_limit(query.limit)?;
    if let Some(job_type) = &query.job_type {
        validate_job_type(job_type)
            .map_err(|message| ApiError::bad_request("invalid_query", message))?;
    }
    let filter = JobFilter {
        status: query.status,
        job_type: query.job_type,
        limit,
        cursor: query.cursor,
    };
    let page = state
        .queue
        .list(&filter)
        .await
        .map_err(|error| match error {
            QueueError::Invalid(message) => ApiError::bad_request("invalid_query", message),
            other => other.into(),
        })?;
    Ok(Json(page))
}

/// Returns the page size for `limit`: 50 when absent, otherwise 1 to 500.
pub fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(50),
        Some(limit) if (1..=MAX_PAGE).contains(&limit) => Ok(limit),
        Some(limit) => Err(ApiError::bad_request(
            "invalid_query",
            format!("limit is {limit}: use 1 to {MAX_PAGE}"),
        )),
    }
}

pub async fn get(State(state): State<AppState>, id: PathId) -> Result<Json<Job>, ApiError> {
    let job_id = id.checked("job id")?;
    match state.queue.get(&job_id).await? {
        Some(job) => Ok(Json(job)),
        None => Err(job_not_found(&job_id)),
    }
}

pub fn job_not_found(job_id: &str) -> ApiError {
    ApiError::not_found("job_not_found", format!("job {job_id} not found"))
}

/// Cancels a pending or running job. A running job's worker stops it at its next heartbeat.
pub async fn cancel(State(state): State<AppState>, id: PathId) -> Result<Json<Job>, ApiError> {
    let job_id = id.checked("job id")?;
    let job = state.queue.cancel(&job_id).await?;
    tracing::info!(job_id = %job.id, run_id = %job.run_id, status = %job.status, "job cancel requested");
    Ok(Json(job))
}

/// Moves a failed or cancelled job back to pending under a new run id.
pub async fn retry(
    State(state): State<AppState>,
    id: PathId,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let job_id = id.checked("job id")?;
    let job = state.queue.retry(&job_id).await?;
    tracing::info!(job_id = %job.id, run_id = %job.run_id, "job retried");
    Ok((StatusCode::ACCEPTED, Json(job)))
}
