//! `wait_for_work`: wakes waiting workers when any process creates a pending marker, watched
//! with inotify (through the `notify` crate), or when the earliest delayed job becomes due.

use super::index;
use super::layout::Layout;
use chrono::Utc;
use notify::event::{EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Extra wait past a delayed job's `runAt`, so the wake-up does not land just before it is due.
const DUE_SLACK: Duration = Duration::from_millis(5);

/// The change watcher of one `FileQueue`, started by the first `wait_for_work` so processes
/// that never wait (the API, the CLI) do not watch.
pub(super) struct Wake {
    pending_dir: PathBuf,
    notify: Arc<Notify>,
    /// `None` until the first wait; `Some(None)` when watching failed and waits fall back to
    /// their timeout.
    watcher: Mutex<Option<Option<RecommendedWatcher>>>,
}

impl Wake {
    pub fn new(pending_dir: PathBuf) -> Self {
        Wake {
            pending_dir,
            notify: Arc::new(Notify::new()),
            watcher: Mutex::new(None),
        }
    }

    /// Returns when a pending marker is created, when the earliest delayed pending job becomes
    /// due, or after `max_wait`. A change seen while no caller waited makes the next wait return at
    /// once, so a change between a caller's empty `dequeue` and its wait is not missed.
    pub async fn wait(&self, layout: &Layout, max_wait: Duration) {
        self.start_watching();

        let layout = layout.clone();
        let until_due = tokio::task::spawn_blocking(move || time_until_next_due(&layout))
            .await
            .ok()
            .flatten();
        let timeout = until_due.map_or(max_wait, |wait| max_wait.min(wait + DUE_SLACK));

        tokio::select! {
            () = self.notify.notified() => {}
            () = tokio::time::sleep(timeout) => {}
        }
    }

    fn start_watching(&self) {
        let mut watcher = self
            .watcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if watcher.is_some() {
            return;
        }
        let started = watch(&self.pending_dir, Arc::clone(&self.notify));
        if let Err(error) = &started {
            tracing::warn!(
                dir = %self.pending_dir.display(),
                %error,
                "cannot watch the pending index; workers will find new jobs only when their poll interval passes"
            );
        }
        *watcher = Some(started.ok());
    }
}

fn watch(dir: &std::path::Path, notify: Arc<Notify>) -> notify::Result<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let creates = match event {
            Ok(event) => matches!(
                event.kind,
                EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_)) | EventKind::Any
            ),
            // A lost or failed event may hide a new job, so it wakes the waiters too.
            Err(_) => true,
        };
        if creates {
            // Wakes one caller now or, when none waits, the next one; then every other waiter.
            notify.notify_one();
            notify.notify_waiters();
        }
    })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    Ok(watcher)
}

/// Time until the earliest pending job that is not due yet becomes due, over all job types.
/// Jobs already due are not counted: they belong to types this caller did not ask for, or they
/// would have been claimed.
fn time_until_next_due(layout: &Layout) -> Option<Duration> {
    let now = Utc::now();
    let job_types = index::pending_job_types(layout).ok()?;
    let next_due = job_types
        .iter()
        .filter_map(|job_type| index::pending_markers(layout, job_type).ok())
        .flatten()
        .filter(|marker| !marker.is_due(now))
        .filter_map(|marker| marker.run_at())
        .min()?;
    (next_due - now).to_std().ok()
}
