//! `/api/runs`: runs from the event store (finished ones) and from the queue (pending and
//! running ones) in one list, one run with its events, and a run's event log as JSON or as a
//! live server-sent event stream.

use super::error::ApiError;
use super::extract::{ApiQuery, PathId};
use super::jobs::{ListQuery, page_limit};
use super::{AppState, blocking, sse};
use crate::events::{Event, EventError, RunFilter, RunSummary};
use crate::job::{Job, JobStatus, LastError, validate_id, validate_job_type};
use crate::queue::{JobFilter, Queue};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashSet;

/// Page size used to read the queue's pending and running jobs.
const QUEUE_PAGE: usize = 500;
/// Upper bound on the queue pages read for one request.
// NOTE: with more than 10,000 pending or running jobs of one status, the run list and the
// run-id lookup miss the older ones. A queue lookup by run id would remove this bound.
const MAX_QUEUE_PAGES: usize = 20;

/// Source of a run's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunSource {
    /// The run's event log and summary.
    Events,
    /// The queue's job record, because the run has no events yet.
    Queue,
}

/// One run as the API lists it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub run_id: String,
    pub status: String,
    pub source: RunSource,
    pub job_id: Option<String>,
    pub job_type: Option<String>,
    pub attempt: Option<u32>,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Duration of the last attempt, from the `RunFinished` event.
    pub latency_ms: Option<u64>,
    pub error: Option<EventError>,
}

impl RunView {
    fn from_summary(summary: RunSummary) -> Self {
        RunView {
            run_id: summary.run_id,
            status: summary.status,
            source: RunSource::Events,
            job_id: summary.job_id,
            job_type: summary.job_type,
            attempt: summary.attempt,
            request_id: summary.request_id,
            created_at: summary.created_at,
            updated_at: summary.updated_at,
            finished_at: summary.finished_at,
            latency_ms: summary.latency_ms,
            error: summary.error,
        }
    }

    fn from_job(job: &Job) -> Self {
        RunView {
            run_id: job.run_id.clone(),
            status: job.status.to_string(),
            source: RunSource::Queue,
            job_id: Some(job.id.clone()),
            job_type: Some(job.job_type.clone()),
            attempt: (job.attempts > 0).then_some(job.attempts),
            request_id: job.request_id.clone(),
            created_at: job.created_at,
            updated_at: job.updated_at,
            finished_at: job.finished_at,
            latency_ms: None,
            error: job.last_error.as_ref().map(event_error),
        }
    }

    /// Takes the job's state over the summary's where they disagree, because the queue is the
    /// authority on a job's state and a summary lags when an event could not be written.
    fn apply_job(&mut self, job: &Job) {
        if job.run_id != self.run_id {
            return;
        }
        self.status = job.status.to_string();
        self.attempt = (job.attempts > 0).then_some(job.attempts).or(self.attempt);
        self.finished_at = job.finished_at.or(self.finished_at);
        if self.error.is_none() {
            self.error = job.last_error.as_ref().map(event_error);
        }
    }
}

fn event_error(error: &LastError) -> EventError {
    EventError {
        code: error.code.clone(),
        message: error.message.clone(),
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunPage {
    pub runs: Vec<RunView>,
    /// The last run id of this page. Pass it as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// Lists runs newest first (by run id, a UUID v7). Pending and running runs come from the queue,
/// finished runs from the event store.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<RunPage>, ApiError> {
    let limit = page_limit(query.limit)?;
    if let Some(job_type) = &query.job_type {
        validate_job_type(job_type)
            .map_err(|message| ApiError::bad_request("invalid_query", message))?;
    }
    if let Some(cursor) = &query.cursor {
        validate_id("cursor", cursor)
            .map_err(|message| ApiError::bad_request("invalid_query", message))?;
    }

    // Active runs: every pending and running job, read from the queue.
    let active_statuses: Vec<JobStatus> = match query.status {
        Some(status) if status.is_terminal() => Vec::new(),
        Some(status) => vec![status],
        None => vec![JobStatus::Pending, JobStatus::Running],
    };
    let mut active = Vec::new();
    for status in active_statuses {
        active
            .extend(jobs_with_status(state.queue.as_ref(), status, query.job_type.clone()).await?);
    }
    let active_run_ids: HashSet<String> = active.iter().map(|job| job.run_id.clone()).collect();
    let mut runs: Vec<RunView> = active
        .iter()
        .filter(|job| {
            query
                .cursor
                .as_ref()
                .is_none_or(|cursor| job.run_id.as_str() < cursor.as_str())
        })
        .map(RunView::from_job)
        .collect();

    // Finished runs: read event summaries page by page until this page is full.
    let mut events_have_more = false;
    if query.status.is_none_or(JobStatus::is_terminal) {
        let mut filter = RunFilter {
            status: query.status.map(|status| status.to_string()),
            job_type: query.job_type.clone(),
            limit,
            cursor: query.cursor.clone(),
        };
        let mut finished = 0;
        loop {
            let events = state.events.clone();
            let page_filter = filter.clone();
            let page = blocking(move || events.list_runs(&page_filter))
                .await?
                .map_err(ApiError::internal)?;
            for summary in page.runs {
                if active_run_ids.contains(&summary.run_id) {
                    continue;
                }
                if let Some(view) = finished_run(state.queue.as_ref(), summary).await? {
                    runs.push(view);
                    finished += 1;
                }
            }
            match page.next_cursor {
                Some(cursor) if finished < limit => filter.cursor = Some(cursor),
                Some(_) => {
                    events_have_more = true;
                    break;
                }
                None => break,
            }
        }
    }

    runs.sort_unstable_by(|a, b| b.run_id.cmp(&a.run_id));
    let has_more = runs.len() > limit || events_have_more;
    runs.truncate(limit);
    let next_cursor = if has_more {
        runs.last().map(|run| run.run_id.clone())
    } else {
        None
    };
    Ok(Json(RunPage { runs, next_cursor }))
}

/// Builds the view of a summary outside the active set. A finished run is shown as it is. An
/// unfinished one is shown, with its job's state, only when the job has since finished under this
/// run without a final event, which happens when an event write failed.
async fn finished_run(queue: &dyn Queue, summary: RunSummary) -> Result<Option<RunView>, ApiError> {
    if summary.is_finished() {
        return Ok(Some(RunView::from_summary(summary)));
    }
    let Some(job_id) = summary.job_id.clone() else {
        return Ok(None);
    };
    match queue.get(&job_id).await? {
        Some(job) if job.run_id == summary.run_id && job.status.is_terminal() => {
            let mut view = RunView::from_summary(summary);
            view.apply_job(&job);
            Ok(Some(view))
        }
        _ => Ok(None),
    }
}

async fn jobs_with_status(
    queue: &dyn Queue,
    status: JobStatus,
    job_type: Option<String>,
) -> Result<Vec<Job>, ApiError> {
    let mut filter = JobFilter {
        status: Some(status),
        job_type,
        limit: QUEUE_PAGE,
        cursor: None,
    };
    let mut jobs = Vec::new();
    for _ in 0..MAX_QUEUE_PAGES {
        let page = queue.list(&filter).await?;
        jobs.extend(page.jobs);
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => break,
        }
    }
    Ok(jobs)
}

/// One run with its events, or with its queue job when it has no events yet.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Event>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
}

/// Everything stored about one run: its summary, events and job.
pub struct RunState {
    pub summary: Option<RunSummary>,
    pub events: Vec<Event>,
    pub job: Option<Job>,
}

/// Reads a run's summary, events and job. Fails with 404 when none of them exists.
pub async fn load_run(state: &AppState, run_id: &str) -> Result<RunState, ApiError> {
    let events = state.events.clone();
    let id = run_id.to_string();
    let (summary, run_events) =
        blocking(move || (events.run_summary(&id), events.read(&id))).await?;
    let summary = summary.map_err(ApiError::internal)?;
    let run_events = run_events.map_err(ApiError::internal)?;

    let job_id = summary
        .as_ref()
        .and_then(|summary| summary.job_id.clone())
        .or_else(|| run_events.iter().find_map(|event| event.job_id.clone()));
    let job = match job_id {
        Some(job_id) => state.queue.get(&job_id).await?,
        None => find_job_by_run(state.queue.as_ref(), run_id).await?,
    };

    if summary.is_none() && run_events.is_empty() && job.is_none() {
        return Err(run_not_found(run_id));
    }
    Ok(RunState {
        summary,
        events: run_events,
        job,
    })
}

pub fn run_not_found(run_id: &str) -> ApiError {
    ApiError::not_found("run_not_found", format!("run {run_id} not found"))
}

/// Finds the job whose current run is `run_id` by listing the queue, for a run with no events.
async fn find_job_by_run(queue: &dyn Queue, run_id: &str) -> Result<Option<Job>, ApiError> {
    let mut filter = JobFilter {
        limit: QUEUE_PAGE,
        ..JobFilter::default()
    };
    for _ in 0..MAX_QUEUE_PAGES {
        let page = queue.list(&filter).await?;
        if let Some(job) = page.jobs.into_iter().find(|job| job.run_id == run_id) {
            return Ok(Some(job));
        }
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => break,
        }
    }
    Ok(None)
}

pub async fn get(State(state): State<AppState>, id: PathId) -> Result<Json<RunDetail>, ApiError> {
    let run_id = id.checked("run id")?;
    let run = load_run(&state, &run_id).await?;

    let detail = match (run.summary, run.job) {
        (Some(summary), job) if !run.events.is_empty() => {
            let mut view = RunView::from_summary(summary);
            if let Some(job) = &job {
                view.apply_job(job);
            }
            RunDetail {
                run: view,
                events: Some(run.events),
                job: None,
            }
        }
        (_, Some(job)) => RunDetail {
            run: RunView::from_job(&job),
            events: (!run.events.is_empty()).then_some(run.events),
            job: Some(job),
        },
        (Some(summary), None) => RunDetail {
            run: RunView::from_summary(summary),
            events: (!run.events.is_empty()).then_some(run.events),
            job: None,
        },
        (None, None) => RunDetail {
            run: events_only_view(&run_id, &run.events).ok_or_else(|| run_not_found(&run_id))?,
            events: Some(run.events),
            job: None,
        },
    };
    Ok(Json(detail))
}

/// Builds the view of a run that has events but neither a summary nor a job, such as the
/// queue's maintenance run.
fn events_only_view(run_id: &str, events: &[Event]) -> Option<RunView> {
    let first = events.first()?;
    let last = events.last()?;
    Some(RunView {
        run_id: run_id.to_string(),
        status: "unknown".to_string(),
        source: RunSource::Events,
        job_id: first.job_id.clone(),
        job_type: first.job_type.clone(),
        attempt: last.attempt,
        request_id: first.request_id.clone(),
        created_at: first.ts,
        updated_at: last.ts,
        finished_at: None,
        latency_ms: None,
        error: None,
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventList {
    pub run_id: String,
    pub events: Vec<Event>,
}

/// Returns a run's events as JSON, or streams them live when the request accepts
/// `text/event-stream`.
pub async fn events(
    State(state): State<AppState>,
    id: PathId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let run_id = id.checked("run id")?;
    let run = load_run(&state, &run_id).await?;

    if accepts_event_stream(&headers) {
        let last_event_id = headers
            .get("last-event-id")
            .and_then(|value| value.to_str().ok())
            .map(|value| value.trim().to_string())
            .filter(|value| !value.is_empty());
        let job_id = run.job.map(|job| job.id);
        return Ok(sse::stream(state, run_id, job_id, last_event_id).into_response());
    }
    Ok(Json(EventList {
        run_id,
        events: run.events,
    })
    .into_response())
}

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}
