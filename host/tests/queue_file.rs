//! Behaviour of the file queue backend that the conformance suite cannot see: its files on disk,
//! unreadable and stray files, the index and its repair, and several instances on one directory.

use chrono::Utc;
use jobhost::events::{EventStore, MAINTENANCE_RUN_ID, event_type};
use jobhost::job::{Job, JobStatus, new_id};
use jobhost::queue::conformance::settings;
use jobhost::queue::{EnqueueOptions, FileQueue, JobFilter, Queue, QueueError};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const TYPE_A: &str = "TEST_A";

fn open(dir: &Path) -> (FileQueue, EventStore) {
    let events = EventStore::open(dir).expect("open the event store");
    let queue = FileQueue::open(dir, settings(), events.clone()).expect("open the file queue");
    (queue, events)
}

fn job_file(dir: &Path, job_id: &str) -> PathBuf {
    dir.join("queue/jobs").join(format!("{job_id}.json"))
}

fn names(dir: &Path) -> BTreeSet<String> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| {
                entry
                    .expect("directory entry")
                    .file_name()
                    .into_string()
                    .expect("UTF-8 name")
            })
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

fn pending_markers(dir: &Path, job_type: &str) -> BTreeSet<String> {
    names(&dir.join("queue/index/pending").join(job_type))
}

fn running_markers(dir: &Path) -> BTreeSet<String> {
    names(&dir.join("queue/index/running"))
}

fn quarantined(dir: &Path) -> BTreeSet<String> {
    names(&dir.join("queue/quarantine"))
}

async fn enqueue(queue: &FileQueue) -> Job {
    queue
        .enqueue(TYPE_A, json!({ "n": 1 }), EnqueueOptions::default())
        .await
        .expect("enqueue")
        .job
}

fn types() -> Vec<String> {
    vec![TYPE_A.to_string()]
}

/// Makes the next `open` behave as the first one after an operating system restart.
fn pretend_restart(dir: &Path) {
    fs::write(dir.join("queue/index/boot-id"), "a-previous-boot").expect("write boot id");
}

#[tokio::test]
async fn job_file_is_the_job_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (queue, _) = open(dir.path());
    let job = enqueue(&queue).await;

    let bytes = fs::read(job_file(dir.path(), &job.id)).expect("read the job file");
    let stored: Job = serde_json::from_slice(&bytes).expect("parse the job file");
    assert_eq!(stored, job);
    let raw: Value = serde_json::from_slice(&bytes).expect("parse as JSON");
    assert_eq!(raw["type"], json!(TYPE_A));
    assert_eq!(raw["maxAttempts"], json!(3));
    assert_eq!(raw["status"], json!("pending"));
}

#[tokio::test]
async fn corrupt_job_file_is_quarantined() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (queue, events) = open(dir.path());
    let broken = enqueue(&queue).await;
    let healthy = enqueue(&queue).await;
    let path = job_file(dir.path(), &broken.id);
    let text = fs::read_to_string(&path).expect("read job file");
    fs::write(&path, &text[..text.len() / 2]).expect("truncate job file");

    // The broken job is older, so dequeue meets it first and must go past it.
    let (claimed, _) = queue
        .dequeue("w1", &types())
        .await
        .expect("dequeue past a corrupt file")
        .expect("the healthy job");
    assert_eq!(claimed.id, healthy.id);

    assert!(!path.exists(), "the corrupt file is still in jobs/");
    let moved = quarantined(dir.path());
    assert_eq!(moved.len(), 1, "quarantine holds {moved:?}");
    let moved_name = moved.iter().next().expect("one quarantined file");
    assert!(moved_name.starts_with(&format!("{}.json.", broken.id)));
    let moved_text =
        fs::read_to_string(dir.path().join("queue/quarantine").join(moved_name)).expect("read");
    assert_eq!(moved_text, text[..text.len() / 2]);
    assert!(pending_markers(dir.path(), TYPE_A).is_empty());

    let errors = events.read(MAINTENANCE_RUN_ID).expect("maintenance events");
    assert_eq!(errors.len(), 1, "events: {errors:?}");
    assert_eq!(errors[0].event_type, event_type::ERROR);
    let error = errors[0].error.as_ref().expect("error part");
    assert_eq!(error.code, "job_file_corrupt");
    assert!(
        error
            .message
            .contains(&format!("queue/jobs/{}.json", broken.id))
    );
    assert!(
        error.message.contains("EOF"),
        "parse error missing: {}",
        error.message
    );
    assert_eq!(
        errors[0].data["file"],
        json!(format!("queue/jobs/{}.json", broken.id))
    );

    assert!(queue.get(&broken.id).await.expect("get").is_none());
}

#[tokio::test]
async fn corrupt_file_does_not_stop_get_or_list() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (queue, events) = open(dir.path());
    let first = enqueue(&queue).await;
    let edited = enqueue(&queue).await;
    let renamed = enqueue(&queue).await;
    fs::write(job_file(dir.path(), &edited.id), "{ hand edited").expect("overwrite");
    // A valid record under another job's name is as wrong as broken JSON.
    let mut other = renamed.clone();
    other.id = new_id();
    fs::write(
        job_file(dir.path(), &renamed.id),
        serde_json::to_vec(&other).expect("serialize"),
    )
    .expect("overwrite");

    let page = queue.list(&JobFilter::default()).await.expect("list");
    let listed: Vec<_> = page.jobs.iter().map(|job| job.id.clone()).collect();
    assert_eq!(listed, vec![first.id.clone()]);
    assert_eq!(quarantined(dir.path()).len(), 2);
    assert!(queue.get(&edited.id).await.expect("get").is_none());
    assert_eq!(
        queue.get(&first.id).await.expect("get").map(|job| job.id),
        Some(first.id)
    );
    let counts = queue.counts().await.expect("counts");
    assert_eq!(counts.iter().map(|count| count.count).sum::<u64>(), 1);
    let errors = events.read(MAINTENANCE_RUN_ID).expect("maintenance events");
    assert_eq!(errors.len(), 2);
}

#[tokio::test]
async fn stray_and_temporary_files_are_ignored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (queue, _) = open(dir.path());
    let job = enqueue(&queue).await;
    let jobs = dir.path().join("queue/jobs");
    // What a crash in the middle of `write_atomic` leaves behind, plus files an operator dropped.
    fs::write(
        jobs.join(format!(".{}.json.00ff00ff00ff00ff.tmp", job.id)),
        "{\"id\":",
    )
    .expect("write temp");
    fs::write(jobs.join("README.txt"), "notes").expect("write stray");
    fs::write(jobs.join("not an id.json"), "garbage").expect("write stray json");
    let pending = dir.path().join("queue/index/pending").join(TYPE_A);
    fs::write(pending.join(".marker.tmp"), "").expect("write stray marker");
    fs::write(pending.join("garbage"), "").expect("write stray marker");

    let page = queue.list(&JobFilter::default()).await.expect("list");
    assert_eq!(page.jobs.len(), 1);
    let counts = queue.counts().await.expect("counts");
    assert_eq!(counts.iter().map(|count| count.count).sum::<u64>(), 1);
    let (claimed, _) = queue
        .dequeue("w1", &types())
        .await
        .expect("dequeue")
        .expect("the job");
    assert_eq!(claimed.id, job.id);
    assert!(quarantined(dir.path()).is_empty());
    assert!(jobs.join("README.txt").exists());
}

#[tokio::test]
async fn path_like_values_never_leave_the_data_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    fs::create_dir(&data).expect("create data dir");
    let (queue, _) = open(&data);

    for job_id in ["../outside", "../../etc/passwd", "jobs/../../x", "/tmp/x"] {
        assert!(matches!(
            queue.get(job_id).await,
            Err(QueueError::Invalid(_))
        ));
        assert!(matches!(
            queue.cancel(job_id).await,
            Err(QueueError::Invalid(_))
        ));
    }
    for job_type in ["../../outside", "..", "/abs"] {
        let result = queue
            .enqueue(job_type, json!(1), EnqueueOptions::default())
            .await;
        assert!(matches!(result, Err(QueueError::Invalid(_))), "{result:?}");
        let result = queue.dequeue("w1", &[job_type.to_string()]).await;
        assert!(matches!(result, Err(QueueError::Invalid(_))), "{result:?}");
    }

    // A key record whose content is a path is ignored, not followed.
    let key = "report-2024";
    let record = data.join("queue/keys").join(hex::encode(Sha256::digest(
        format!("{TYPE_A}\n{key}").as_bytes(),
    )));
    fs::write(&record, "../../outside").expect("write key record");
    let enqueued = queue
        .enqueue(
            TYPE_A,
            json!(1),
            EnqueueOptions {
                idempotency_key: Some(key.to_string()),
                ..EnqueueOptions::default()
            },
        )
        .await
        .expect("enqueue with a tampered key record");
    assert!(!enqueued.existing);
    assert_eq!(
        fs::read_to_string(&record).expect("read key record"),
        enqueued.job.id
    );

    assert_eq!(names(dir.path()), BTreeSet::from(["data".to_string()]));
}

#[tokio::test]
async fn dequeue_reads_only_pending_jobs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (queue, _) = open(dir.path());
    enqueue(&queue).await;
    let (_, lease) = queue
        .dequeue("w1", &types())
        .await
        .expect("dequeue")
        .expect("template job");
    let template = queue.ack(&lease, Value::Null).await.expect("ack");

    // 10,000 finished jobs written straight to disk, plus 1,000 unreadable files with job names:
    // any dequeue that read files beyond the pending markers would quarantine the latter.
    let jobs = dir.path().join("queue/jobs");
    for _ in 0..10_000 {
        let mut finished = template.clone();
        finished.id = new_id();
        finished.run_id = new_id();
        fs::write(
            jobs.join(format!("{}.json", finished.id)),
            serde_json::to_vec(&finished).expect("serialize"),
        )
        .expect("write finished job");
    }
    let mut unreadable = BTreeSet::new();
    for _ in 0..1_000 {
        let id = new_id();
        fs::write(jobs.join(format!("{id}.json")), "not json").expect("write unreadable file");
        unreadable.insert(id);
    }
    let pending_job = enqueue(&queue).await;

    assert_eq!(pending_markers(dir.path(), TYPE_A).len(), 1);
    let (claimed, lease) = queue
        .dequeue("w1", &types())
        .await
        .expect("dequeue")
        .expect("the pending job");
    assert_eq!(claimed.id, pending_job.id);
    queue.ack(&lease, Value::Null).await.expect("ack");
    assert!(
        queue
            .dequeue("w1", &types())
            .await
            .expect("dequeue")
            .is_none()
    );

    assert!(
        quarantined(dir.path()).is_empty(),
        "dequeue read files of finished jobs"
    );
    assert!(pending_markers(dir.path(), TYPE_A).is_empty());
    assert!(running_markers(dir.path()).is_empty());
    assert_eq!(names(&jobs).len(), 1 + 10_000 + 1_000 + 1);
    assert_ne!(template.id, pending_job.id);
}

#[tokio::test]
async fn leftover_markers_are_removed_when_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (queue, _) = open(dir.path());
    let job = enqueue(&queue).await;
    let pending = dir.path().join("queue/index/pending").join(TYPE_A);
    let real_marker = pending_markers(dir.path(), TYPE_A)
        .into_iter()
        .next()
        .expect("marker of the job");

    // A crash after a marker was created and before its job file was written, with the highest
    // priority so dequeue reads it first.
    let orphan = format!(
        "0000_00000000000000000001_{}_00000000000000000001",
        new_id()
    );
    fs::write(pending.join(&orphan), "").expect("write orphan marker");
    // A crash after `fail` rescheduled the job and before the old, already due marker was
    // removed: the job itself is due only in an hour.
    let delayed = queue
        .enqueue(
            TYPE_A,
            json!(2),
            EnqueueOptions {
                run_at: Some(Utc::now() + chrono::Duration::hours(1)),
                ..EnqueueOptions::default()
            },
        )
        .await
        .expect("enqueue delayed")
        .job;
    let delayed_marker = pending_markers(dir.path(), TYPE_A)
        .into_iter()
        .find(|name| name.contains(&delayed.id))
        .expect("marker of the delayed job");
    let stale = format!(
        "0000_00000000000000000001_{}_00000000000000000001",
        delayed.id
    );
    fs::write(pending.join(&stale), "").expect("write stale marker");

    let (claimed, _) = queue
        .dequeue("w1", &types())
        .await
        .expect("dequeue")
        .expect("the real job");
    assert_eq!(claimed.id, job.id);
    assert_eq!(
        pending_markers(dir.path(), TYPE_A),
        BTreeSet::from([delayed_marker])
    );
    assert!(!pending.join(&real_marker).exists());
    assert_eq!(
        running_markers(dir.path()),
        BTreeSet::from([job.id.clone()])
    );
}

#[tokio::test]
async fn index_is_rebuilt_after_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (queue, _) = open(dir.path());
    let lost_marker = enqueue(&queue).await;
    let running = enqueue(&queue).await;
    let keyed = queue
        .enqueue(
            TYPE_A,
            json!(3),
            EnqueueOptions {
                idempotency_key: Some("keyed".to_string()),
                priority: -1,
                ..EnqueueOptions::default()
            },
        )
        .await
        .expect("enqueue keyed")
        .job;
    let (claimed, first_lease) = queue
        .dequeue("w1", &types())
        .await
        .expect("dequeue")
        .expect("a job");
    assert_eq!(claimed.id, lost_marker.id);
    let (claimed, _) = queue
        .dequeue("w1", &types())
        .await
        .expect("dequeue")
        .expect("a job");
    assert_eq!(claimed.id, running.id);
    let lost_marker = queue.cancel(&lost_marker.id).await.expect("cancel");
    // The worker learns of the cancel at its heartbeat, which frees the job for a retry.
    assert!(queue.heartbeat(&first_lease).await.is_err());
    let lost_marker = queue.retry(&lost_marker.id).await.expect("retry");
    let expected_pending = pending_markers(dir.path(), TYPE_A);
    assert_eq!(expected_pending.len(), 2);
    drop(queue);

    // What an operating system crash can leave: markers and key records never reached the disk,
    // or stale ones did.
    let pending = dir.path().join("queue/index/pending").join(TYPE_A);
    for name in &expected_pending {
        if name.contains(&lost_marker.id) {
            fs::remove_file(pending.join(name)).expect("remove marker");
        }
    }
    fs::remove_file(dir.path().join("queue/index/running").join(&running.id))
        .expect("remove running marker");
    fs::write(pending.join(format!("0000_1_{}_1", new_id())), "").expect("orphan marker");
    fs::write(dir.path().join("queue/index/running").join(new_id()), "").expect("orphan marker");
    let keys = dir.path().join("queue/keys");
    for name in names(&keys) {
        fs::remove_file(keys.join(name)).expect("remove key record");
    }
    fs::write(keys.join("0123abcd"), new_id()).expect("orphan key record");
    pretend_restart(dir.path());

    let (queue, _) = open(dir.path());
    assert_eq!(pending_markers(dir.path(), TYPE_A), expected_pending);
    assert_eq!(
        running_markers(dir.path()),
        BTreeSet::from([running.id.clone()])
    );
    let key_records = names(&keys);
    assert_eq!(key_records.len(), 1, "key records: {key_records:?}");
    let again = queue
        .enqueue(
            TYPE_A,
            json!(4),
            EnqueueOptions {
                idempotency_key: Some("keyed".to_string()),
                ..EnqueueOptions::default()
            },
        )
        .await
        .expect("enqueue with the key again");
    assert!(again.existing);
    assert_eq!(again.job.id, keyed.id);

    // The running job whose marker was lost is still taken back when its lease expires.
    tokio::time::sleep(settings().lease).await;
    let mut reclaimed = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while reclaimed.len() < 3 && tokio::time::Instant::now() < deadline {
        match queue.dequeue("w2", &types()).await.expect("dequeue") {
            Some((job, _)) => {
                reclaimed.insert(job.id);
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(
        reclaimed,
        BTreeSet::from([lost_marker.id, running.id, keyed.id])
    );
}

#[tokio::test]
async fn repair_index_reports_fixes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (queue, _) = open(dir.path());
    let job = enqueue(&queue).await;
    let clean = queue.repair_index().await.expect("repair");
    assert_eq!(clean.jobs_read, 1);
    assert_eq!(clean.markers_added + clean.markers_removed, 0);

    let pending = dir.path().join("queue/index/pending").join(TYPE_A);
    for name in names(&pending) {
        fs::remove_file(pending.join(name)).expect("remove marker");
    }
    fs::write(job_file(dir.path(), &new_id()), "{").expect("write corrupt job");
    let report = queue.repair_index().await.expect("repair");
    assert_eq!(report.markers_added, 1);
    assert_eq!(report.files_quarantined, 1);
    let (claimed, _) = queue
        .dequeue("w1", &types())
        .await
        .expect("dequeue")
        .expect("the job");
    assert_eq!(claimed.id, job.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_instances_claim_each_job_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, _) = open(dir.path());
    let mut enqueued = BTreeSet::new();
    for _ in 0..30 {
        enqueued.insert(enqueue(&first).await.id);
    }

    // Each instance has its own lock file handle, as separate processes do.
    let mut tasks = Vec::new();
    for instance in 0..4 {
        let (queue, _) = open(dir.path());
        let queue = Arc::new(queue);
        for task in 0..3 {
            let queue = Arc::clone(&queue);
            tasks.push(tokio::spawn(async move {
                let worker = format!("w{instance}-{task}");
                let mut claimed = Vec::new();
                while let Some((job, lease)) =
                    queue.dequeue(&worker, &types()).await.expect("dequeue")
                {
                    claimed.push((job.id, lease.attempt));
                    // An expired lease on a slow disk means a correct second claim, as attempt 2.
                    let _ = queue.ack(&lease, Value::Null).await;
                }
                claimed
            }));
        }
    }
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.expect("claim task"));
    }
    let unique: BTreeSet<(String, u32)> = claimed.iter().cloned().collect();
    assert_eq!(
        claimed.len(),
        unique.len(),
        "a job was claimed twice for one attempt"
    );
    let first_claims: BTreeSet<String> = unique
        .into_iter()
        .filter(|(_, attempt)| *attempt == 1)
        .map(|(job_id, _)| job_id)
        .collect();
    assert_eq!(first_claims, enqueued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_by_another_instance_wakes_waiter() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (waiting, _) = open(dir.path());
    let (enqueuing, _) = open(dir.path());
    let waiting = Arc::new(waiting);

    let waiter = {
        let waiting = Arc::clone(&waiting);
        tokio::spawn(async move {
            loop {
                waiting.wait_for_work(Duration::from_secs(60)).await;
                if let Some((job, _)) = waiting.dequeue("w1", &types()).await.expect("dequeue") {
                    return job;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let job = enqueue(&enqueuing).await;
    let claimed = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter woke after another instance enqueued")
        .expect("waiter task");
    assert_eq!(claimed.id, job.id);
}

#[tokio::test]
async fn lost_worker_job_keeps_its_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (queue, events) = open(dir.path());
    let job = enqueue(&queue).await;
    queue
        .dequeue("crashed-worker", &types())
        .await
        .expect("dequeue")
        .expect("job");
    tokio::time::sleep(settings().lease).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (reclaimed, _) = loop {
        if let Some(claimed) = queue.dequeue("w2", &types()).await.expect("dequeue") {
            break claimed;
        }
        assert!(tokio::time::Instant::now() < deadline, "never reclaimed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(reclaimed.status, JobStatus::Running);
    let errors: Vec<_> = events
        .read(&job.run_id)
        .expect("events")
        .into_iter()
        .filter(|event| event.event_type == event_type::ERROR)
        .collect();
    assert_eq!(errors.len(), 1);
    let message = &errors[0].error.as_ref().expect("error part").message;
    assert!(message.contains("crashed-worker"), "{message}");
    assert!(message.contains("attempt 2 of 3"), "{message}");
}
