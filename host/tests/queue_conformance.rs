//! The queue conformance suite, run against the file backend on a fresh temporary directory per
//! check.

use jobhost::events::EventStore;
use jobhost::queue::conformance::Backend;
use jobhost::queue::{FileQueue, QueueSettings};
use std::sync::Arc;

async fn file_backend(settings: QueueSettings) -> Backend {
    let dir = tempfile::tempdir().expect("create a temporary data directory");
    let events = EventStore::open(dir.path()).expect("open the event store");
    let queue =
        FileQueue::open(dir.path(), settings.clone(), events.clone()).expect("open the file queue");
    Backend::new(Arc::new(queue), events, settings, dir)
}

jobhost::queue_conformance_tests!(file_backend);
