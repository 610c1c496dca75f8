//! The events the queue records about the jobs it moves: `RunQueued` when a run begins,
//! `RunFinished` when the queue ends a job that no worker is running, and `Error` for a lost
//! worker or a quarantined file.
//!
//! Events are built while the queue lock is held, so their timestamps follow the order of the
//! state changes, and appended after it is released, so the lock is not held across the event
//! store's own writes.

use crate::events::{Event, EventStore, Level, RunContext, event_type};
use crate::job::Job;
use serde_json::{Value, json};

const COMPONENT: &str = "queue";

/// An event to record once the queue lock is released.
#[derive(Debug)]
pub(super) enum QueueEvent {
    Append(Event),
    Error {
        context: RunContext,
        code: &'static str,
        message: String,
        data: Value,
    },
}

pub(super) fn run_queued(job: &Job) -> QueueEvent {
    let data = json!({
        "jobType": job.job_type,
        "priority": job.priority,
        "runAt": job.run_at,
        "maxAttempts": job.max_attempts,
    });
    QueueEvent::Append(
        Event::new(&RunContext::of_job(job), event_type::RUN_QUEUED, COMPONENT).with_data(data),
    )
}

/// `RunFinished` with the job's terminal status, and the last error when it failed.
pub(super) fn run_finished(job: &Job) -> QueueEvent {
    let mut event = Event::new(
        &RunContext::of_job(job),
        event_type::RUN_FINISHED,
        COMPONENT,
    )
    .with_data(json!({ "status": job.status }));
    if let Some(error) = &job.last_error {
        event = event
            .with_level(Level::Error)
            .with_error(&error.code, &error.message);
    }
    QueueEvent::Append(event)
}

/// Appends the events. A failure is logged, not returned: the state change they describe is
/// already durable and must not be reported as failed.
pub(super) fn record(events: &EventStore, queue_events: Vec<QueueEvent>) {
    for queue_event in queue_events {
        match queue_event {
            QueueEvent::Append(event) => {
                if let Err(error) = events.append(&event) {
                    tracing::error!(
                        run_id = %event.run_id,
                        job_id = event.job_id.as_deref().unwrap_or(""),
                        event_type = %event.event_type,
                        %error,
                        "failed to record a queue event"
                    );
                }
            }
            QueueEvent::Error {
                context,
                code,
                message,
                data,
            } => {
                events.record_error_event(&context, COMPONENT, code, &message, data);
            }
        }
    }
}
