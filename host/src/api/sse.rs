//! The live event stream of a run (`GET /api/runs/{runId}/events` with
//! `Accept: text/event-stream`).
//!
//! Each event is sent as `id: <event id>`, `event: <event type>`, `data: <event JSON>`. The
//! stream polls the run's event log, sends keep-alive comments while idle, resumes after the
//! `Last-Event-ID` a reconnecting client sends, and ends once the run reaches a terminal status
//! or the server shuts down.

use super::AppState;
use crate::events::{Event, event_type};
use crate::job::JobStatus;
use axum::response::sse::{self, KeepAlive, Sse};
use futures::Stream;
use serde_json::Value;
use std::convert::Infallible;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Every this many polls, the stream also checks the run summary and the job, so that it ends
/// for a run that finished without a final event it could see.
const POLLS_PER_STATUS_CHECK: u32 = 8;

/// Starts streaming the events of `run_id`. `job_id` is the run's job when known.
pub fn stream(
    state: AppState,
    run_id: String,
    job_id: Option<String>,
    last_event_id: Option<String>,
) -> Sse<impl Stream<Item = Result<sse::Event, Infallible>>> {
    let keep_alive = state.settings.sse_keep_alive;
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(follow_run(state, run_id, job_id, last_event_id, sender));
    Sse::new(ReceiverStream::new(receiver)).keep_alive(KeepAlive::new().interval(keep_alive))
}

/// Sends the run's events to `sender` until the run ends, the client goes away or the server
/// shuts down.
async fn follow_run(
    state: AppState,
    run_id: String,
    job_id: Option<String>,
    last_event_id: Option<String>,
    sender: mpsc::Sender<Result<sse::Event, Infallible>>,
) {
    let mut offset = 0;
    let mut resume_after = resume_point(last_event_id);
    let mut polls: u32 = 0;

    loop {
        // Check the status before reading, so that every event written before the run ended is
        // read and sent before the stream closes.
        let ended_before_read = polls.is_multiple_of(POLLS_PER_STATUS_CHECK)
            && run_has_ended(&state, &run_id, job_id.as_deref()).await;
        polls = polls.wrapping_add(1);

        let events = state.events.clone();
        let id = run_id.clone();
        let read = tokio::task::spawn_blocking(move || events.read_from(&id, offset)).await;
        let batch = match read {
            Ok(Ok((batch, next_offset))) => {
                offset = next_offset;
                batch
            }
            Ok(Err(error)) => {
                tracing::error!(run_id = %run_id, %error, "event stream could not read the run's events");
                return;
            }
            Err(error) => {
                tracing::error!(run_id = %run_id, %error, "event stream read task failed");
                return;
            }
        };

        let mut ended = ended_before_read;
        for event in skip_seen(batch, &mut resume_after) {
            ended |= is_final(&event);
            let Ok(message) = sse::Event::default()
                .id(event.id.clone())
                .event(event.event_type.clone())
                .json_data(&event)
            else {
                continue;
            };
            if sender.send(Ok(message)).await.is_err() {
                return;
            }
        }
        if ended {
            return;
        }

        tokio::select! {
            () = tokio::time::sleep(state.settings.sse_poll_interval) => {}
            () = state.shutdown.cancelled() => return,
            () = sender.closed() => return,
        }
    }
}

/// Returns the event id to resume after. Event ids are UUIDs, so any other `Last-Event-ID` cannot
/// name a sent event and the stream starts from the beginning.
fn resume_point(last_event_id: Option<String>) -> Option<String> {
    last_event_id.filter(|id| uuid::Uuid::parse_str(id).is_ok())
}

/// Drops the events a reconnecting client has already seen: everything up to and including the
/// event with id `resume_after`. When that id is not in the batch, it drops every event whose id
/// is not above it, because event ids are UUID v7, which sort by time.
fn skip_seen(batch: Vec<Event>, resume_after: &mut Option<String>) -> Vec<Event> {
    let Some(last_seen) = resume_after.as_deref() else {
        return batch;
    };
    if batch.is_empty() {
        return batch;
    }
    let remaining = match batch.iter().position(|event| event.id == last_seen) {
        Some(index) => batch.into_iter().skip(index + 1).collect(),
        None => batch
            .into_iter()
            .filter(|event| event.id.as_str() > last_seen)
            .collect(),
    };
    *resume_after = None;
    remaining
}

/// Returns true for the `RunFinished` event that leaves the job in a terminal status.
fn is_final(event: &Event) -> bool {
    event.event_type == event_type::RUN_FINISHED
        && event
            .data
            .get("status")
            .and_then(Value::as_str)
            .and_then(|status| status.parse::<JobStatus>().ok())
            .is_some_and(JobStatus::is_terminal)
}

async fn run_has_ended(state: &AppState, run_id: &str, job_id: Option<&str>) -> bool {
    let events = state.events.clone();
    let id = run_id.to_string();
    let summary = tokio::task::spawn_blocking(move || events.run_summary(&id)).await;
    if let Ok(Ok(Some(summary))) = summary
        && summary.is_finished()
    {
        return true;
    }
    let Some(job_id) = job_id else {
        return false;
    };
    match state.queue.get(job_id).await {
        Ok(Some(job)) => job.run_id != run_id || job.status.is_terminal(),
        Ok(None) => true,
        Err(error) => {
            tracing::warn!(run_id, job_id, %error, "event stream could not read the run's job");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::RunContext;
    use serde_json::json;

    fn event(event_type: &str) -> Event {
        let context = RunContext {
            run_id: "run-1".to_string(),
            ..RunContext::default()
        };
        Event::new(&context, event_type, "test")
    }

    #[test]
    fn skip_seen_resumes_after_known_id() {
        let batch: Vec<Event> = (0..4).map(|_| event("A")).collect();
        let ids: Vec<String> = batch.iter().map(|e| e.id.clone()).collect();
        let mut resume = Some(ids[1].clone());
        let remaining = skip_seen(batch, &mut resume);
        assert_eq!(
            remaining.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
            ids[2..].to_vec()
        );
        assert_eq!(resume, None);
    }

    #[test]
    fn malformed_last_event_id_replays_all() {
        assert_eq!(resume_point(Some("garbage".to_string())), None);
        assert_eq!(resume_point(Some(String::new())), None);
        let id = crate::job::new_id();
        assert_eq!(resume_point(Some(id.clone())), Some(id));
    }

    #[test]
    fn skip_seen_without_resume_keeps_all() {
        let batch: Vec<Event> = (0..3).map(|_| event("A")).collect();
        assert_eq!(skip_seen(batch, &mut None).len(), 3);
    }

    #[test]
    fn final_event_needs_terminal_status() {
        let finished =
            |status: &str| event(event_type::RUN_FINISHED).with_data(json!({ "status": status }));
        assert!(is_final(&finished("completed")));
        assert!(is_final(&finished("cancelled")));
        assert!(!is_final(&finished("pending")));
        assert!(!is_final(&event(event_type::RUN_STARTED)));
    }
}
