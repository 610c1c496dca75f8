//! `/api/debates`: submit a debate (one `RUN_DEBATE` job), list debates, read a debate's progress
//! and turns, and download its transcript.

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, PathId};
use super::jobs::page_limit;
use super::{AppState, RequestId, blocking};
use crate::debate::{self, DebateRecord, DebateRequest, DebateStore, DebateStoreError};
use crate::events::{Event, event_type};
use crate::job::{Job, JobStatus, LastError, validate_id};
use crate::queue::EnqueueOptions;
use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Name of the artifact the debate plugin stores the transcript under.
const TRANSCRIPT: &str = "transcript.md";
/// Event type of one debate turn.
const DEBATE_TURN: &str = "DebateTurn";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DebateAccepted {
    pub debate_id: String,
    pub run_id: String,
    pub job_id: String,
    pub status: JobStatus,
    pub links: DebateLinks,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DebateLinks {
    #[serde(rename = "self")]
    pub self_link: String,
    pub debate: String,
    pub run: String,
    pub events: String,
    pub transcript: String,
    pub job: String,
}

impl DebateLinks {
    fn new(debate_id: &str, run_id: &str, job_id: &str) -> Self {
        DebateLinks {
            self_link: format!("/api/debates/{debate_id}"),
            debate: format!("/api/debates/{debate_id}"),
            run: format!("/api/runs/{run_id}"),
            events: format!("/api/runs/{run_id}/events"),
            transcript: format!("/api/debates/{debate_id}/transcript"),
            job: format!("/api/jobs/{job_id}"),
        }
    }
}

fn store_error(error: DebateStoreError) -> ApiError {
    match error {
        DebateStoreError::InvalidId(message) => ApiError::bad_request("invalid_id", message),
        other => ApiError::internal(other),
    }
}

/// Validates and stores the debate, enqueues its job and returns at once with 202. A debate id
/// whose job is pending, running or completed returns that job with 200 and leaves the stored
/// debate as it is.
pub async fn create(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(request): ApiJson<DebateRequest>,
) -> Result<(StatusCode, Json<DebateAccepted>), ApiError> {
    let spec = request
        .validate()
        .map_err(|error| ApiError::invalid_field(error.field.clone(), error.to_string()))?;

    let options = EnqueueOptions {
        idempotency_key: Some(spec.idempotency_key()),
        request_id: Some(request_id.0.clone()),
        ..EnqueueOptions::default()
    };
    let payload = spec.job_payload(Some(&request_id.0));
    let enqueued = state
        .queue
        .enqueue(debate::JOB_TYPE, payload, options)
        .await?;
    let job = enqueued.job;

    let record = DebateRecord {
        spec,
        created_at: Utc::now(),
        request_id: Some(request_id.0),
        job_id: job.id.clone(),
        run_id: job.run_id.clone(),
    };
    let debate_id = record.spec.debate_id.clone();
    let store = state.debates.clone();
    let status = if enqueued.existing {
        blocking(move || link_existing(&store, record))
            .await?
            .map_err(store_error)?;
        StatusCode::OK
    } else {
        blocking(move || store.put(&record))
            .await?
            .map_err(store_error)?;
        state.metrics.record_enqueued(debate::JOB_TYPE);
        tracing::info!(debate_id = %debate_id, job_id = %job.id, run_id = %job.run_id, "debate enqueued");
        StatusCode::ACCEPTED
    };

    Ok((
        status,
        Json(DebateAccepted {
            links: DebateLinks::new(&debate_id, &job.run_id, &job.id),
            debate_id,
            run_id: job.run_id,
            job_id: job.id,
            status: job.status,
        }),
    ))
}

/// Makes sure an idempotent repeat leaves a stored debate that points at the job it returned:
/// stores the request when no debate is stored (the first request failed after enqueueing), and
/// otherwise only updates the job and run ids.
fn link_existing(store: &DebateStore, record: DebateRecord) -> Result<(), DebateStoreError> {
    match store.get(&record.spec.debate_id)? {
        None => {
            store.create(&record)?;
        }
        Some(mut stored) if stored.job_id != record.job_id => {
            stored.job_id = record.job_id;
            stored.run_id = record.run_id;
            store.put(&stored)?;
        }
        Some(_) => {}
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DebateSummary {
    pub debate_id: String,
    pub topic: String,
    pub created_at: DateTime<Utc>,
    pub job_id: String,
    pub run_id: String,
    /// The job's status, or `unknown` when the job was pruned from the queue.
    pub status: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DebatePage {
    pub debates: Vec<DebateSummary>,
    pub next_cursor: Option<String>,
}

/// Lists debates in descending id order (newest first for generated ids).
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<DebatePage>, ApiError> {
    let limit = page_limit(query.limit)?;
    if let Some(cursor) = &query.cursor {
        validate_id("cursor", cursor)
            .map_err(|message| ApiError::bad_request("invalid_query", message))?;
    }
    let store = state.debates.clone();
    let (records, next_cursor) = blocking(move || store.list(limit, query.cursor.as_deref()))
        .await?
        .map_err(store_error)?;

    let mut debates = Vec::with_capacity(records.len());
    for record in records {
        let job = state.queue.get(&record.job_id).await?;
        debates.push(DebateSummary {
            status: job
                .as_ref()
                .map_or("unknown".to_string(), |job| job.status.to_string()),
            run_id: job.map_or(record.run_id, |job| job.run_id),
            debate_id: record.spec.debate_id,
            topic: record.spec.topic,
            created_at: record.created_at,
            job_id: record.job_id,
        });
    }
    Ok(Json(DebatePage {
        debates,
        next_cursor,
    }))
}

/// A stored debate with the state of its run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DebateView {
    #[serde(flatten)]
    pub record: DebateRecord,
    /// The job's status, or the run summary's when the job was pruned, or `unknown` when
    /// neither exists.
    pub status: String,
    pub attempt: Option<u32>,
    /// Data of the latest `Progress` event (`done`, `total`, `message`) with its time as `at`.
    pub progress: Option<Value>,
    /// Data of the `DebateTurn` events, one per turn index, in turn order.
    pub turns: Vec<Value>,
    pub synthesis: Option<String>,
    pub usage: TokenUsage,
    pub error: Option<LastError>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub links: DebateLinks,
}

/// Token usage summed over the turns, or the plugin's own total once the run completed.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

impl TokenUsage {
    fn add(&mut self, other: &TokenUsage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }
}

pub async fn get(State(state): State<AppState>, id: PathId) -> Result<Json<DebateView>, ApiError> {
    let debate_id = id.checked("debate id")?;
    let (mut record, job) = load_debate(&state, &debate_id).await?;
    if let Some(job) = &job {
        record.run_id = job.run_id.clone();
    }

    let events = state.events.clone();
    let run_id = record.run_id.clone();
    let (run_events, summary) = blocking(move || {
        let run_events = events.read(&run_id);
        let summary = events.run_summary(&run_id);
        (run_events, summary)
    })
    .await?;
    let run_events = run_events.map_err(ApiError::internal)?;
    let summary = summary.map_err(ApiError::internal)?;

    let turns = debate_turns(&run_events);
    let progress = latest_progress(&run_events);
    let result = job.as_ref().and_then(|job| job.result.as_ref());
    let synthesis = result
        .and_then(|result| result.get("synthesis"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| synthesis_from_turns(&turns));
    let usage = result
        .and_then(|result| result.get("usage"))
        .and_then(|usage| serde_json::from_value::<TokenUsage>(usage.clone()).ok())
        .unwrap_or_else(|| usage_of_turns(&turns));

    let status = match (&job, &summary) {
        (Some(job), _) => job.status.to_string(),
        (None, Some(summary)) => summary.status.clone(),
        (None, None) => "unknown".to_string(),
    };
    let links = DebateLinks::new(&debate_id, &record.run_id, &record.job_id);
    Ok(Json(DebateView {
        status,
        attempt: job.as_ref().map(|job| job.attempts).filter(|a| *a > 0),
        progress,
        turns,
        synthesis,
        usage,
        error: job.as_ref().and_then(|job| job.last_error.clone()),
        started_at: job.as_ref().and_then(|job| job.started_at),
        finished_at: job.as_ref().and_then(|job| job.finished_at),
        links,
        record,
    }))
}

/// Serves the `transcript.md` artifact as `text/markdown`. Until the debate plugin has stored
/// it, returns 404 with code `transcript_not_ready` and the run's status.
pub async fn transcript(State(state): State<AppState>, id: PathId) -> Result<Response, ApiError> {
    let debate_id = id.checked("debate id")?;
    let (record, job) = load_debate(&state, &debate_id).await?;
    let run_id = job
        .as_ref()
        .map_or(record.run_id.clone(), |job| job.run_id.clone());

    let artifacts = state.artifacts.clone();
    let artifact = blocking(move || artifacts.get(&run_id, TRANSCRIPT))
        .await?
        .map_err(ApiError::internal)?;
    let Some(artifact) = artifact else {
        let status = job
            .as_ref()
            .map_or("unknown".to_string(), |job| job.status.to_string());
        return Err(ApiError::not_found(
            "transcript_not_ready",
            format!(
                "debate {debate_id} has no transcript yet (its run is {status}); the transcript is stored when the debate finishes"
            ),
        ));
    };

    let content_type = if artifact.content_type.contains("charset") {
        artifact.content_type.clone()
    } else {
        format!("{}; charset=utf-8", artifact.content_type)
    };
    let content_type = HeaderValue::from_str(&content_type)
        .unwrap_or(HeaderValue::from_static("text/markdown; charset=utf-8"));
    Ok(([(header::CONTENT_TYPE, content_type)], artifact.bytes).into_response())
}

async fn load_debate(
    state: &AppState,
    debate_id: &str,
) -> Result<(DebateRecord, Option<Job>), ApiError> {
    let store = state.debates.clone();
    let id = debate_id.to_string();
    let record = blocking(move || store.get(&id))
        .await?
        .map_err(store_error)?
        .ok_or_else(|| {
            ApiError::not_found("debate_not_found", format!("debate {debate_id} not found"))
        })?;
    let job = state.queue.get(&record.job_id).await?;
    Ok((record, job))
}

/// Collects the data of each `DebateTurn` event, keeping the latest event per turn index,
/// because a retried attempt may emit a turn again.
fn debate_turns(events: &[Event]) -> Vec<Value> {
    let mut turns = BTreeMap::new();
    for event in events.iter().filter(|e| e.event_type == DEBATE_TURN) {
        if let Some(index) = event.data.get("turn").and_then(Value::as_u64) {
            turns.insert(index, event.data.clone());
        }
    }
    turns.into_values().collect()
}

fn latest_progress(events: &[Event]) -> Option<Value> {
    let event = events
        .iter()
        .rev()
        .find(|e| e.event_type == event_type::PROGRESS)?;
    let mut progress = event.data.clone();
    if let Some(object) = progress.as_object_mut() {
        object.insert("at".to_string(), Value::from(event.ts.to_rfc3339()));
    }
    Some(progress)
}

fn synthesis_from_turns(turns: &[Value]) -> Option<String> {
    turns
        .iter()
        .rev()
        .find(|turn| turn.get("kind").and_then(Value::as_str) == Some("synthesis"))
        .and_then(|turn| turn.get("text"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn usage_of_turns(turns: &[Value]) -> TokenUsage {
    let mut total = TokenUsage::default();
    for turn in turns {
        if let Some(usage) = turn
            .get("usage")
            .and_then(|usage| serde_json::from_value::<TokenUsage>(usage.clone()).ok())
        {
            total.add(&usage);
        }
    }
    total
}
