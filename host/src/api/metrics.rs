//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4), written by hand.
//!
//! Sources:
//! - `jobhost_jobs{type,status}`: the queue's current counts.
//! - `jobhost_jobs_enqueued_total{type}`, `jobhost_http_requests_total{method,route,status}`:
//!   counted by this API process since it started.
//! - `jobhost_runs_finished_total{type,status}`, `jobhost_job_retries_total{type}` and the
//!   `jobhost_job_duration_seconds{type}` histogram: derived from the run summaries in
//!   `<data>/events/runs/`, so they cover every process and survive restarts. Each finished run
//!   counts once, with its final status. Its retries are its attempts after the first. Its
//!   duration is `latencyMs` of its `RunFinished` event, which is the worker's measure of the last
//!   attempt, so a run ended by the queue without an attempt (a cancelled pending job) has none.
//! - `jobhost_workers{status}`, `jobhost_plugin_load_errors{worker_id}`: the worker records in
//!   `<data>/workers/`, where stale records count as `stale`.

use super::error::ApiError;
use super::system::read_worker_records;
use super::{AppState, blocking};
use crate::events::EventStore;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// Upper bounds of the job duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];

/// Counters of one API process plus the totals derived from run summaries.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Keyed by (method, route, status).
    http_requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    enqueued: Mutex<BTreeMap<String, u64>>,
    runs: Mutex<RunTotals>,
}

#[derive(Debug, Default)]
struct RunTotals {
    /// Runs already counted. A finished run's summary does not change again.
    counted: HashSet<String>,
    finished: BTreeMap<(String, String), u64>,
    retries: BTreeMap<String, u64>,
    durations: BTreeMap<String, Histogram>,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Count per bucket of `DURATION_BUCKETS`, not cumulative.
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(index) = DURATION_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[index] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// Locks a metrics map. A panic while it was held leaves counters that are still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    pub fn record_request(&self, method: &str, route: &str, status: u16) {
        *lock(&self.http_requests)
            .entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
    }

    /// Counts a new job (not an idempotent repeat).
    pub fn record_enqueued(&self, job_type: &str) {
        *lock(&self.enqueued)
            .entry(job_type.to_string())
            .or_default() += 1;
    }

    /// Adds the runs that finished since the last call. Reads only the summaries of runs not yet
    /// counted.
    fn update_runs(&self, events: &EventStore, data_dir: &Path) -> std::io::Result<()> {
        let runs_dir = data_dir.join("events").join("runs");
        let mut run_ids = Vec::new();
        for entry in std::fs::read_dir(&runs_dir)? {
            let name = entry?.file_name();
            if let Some(run_id) = name.to_str().and_then(|name| name.strip_suffix(".json"))
                && !run_id.starts_with('.')
            {
                run_ids.push(run_id.to_string());
            }
        }

        let mut totals = lock(&self.runs);
        for run_id in run_ids {
            if totals.counted.contains(&run_id) {
                continue;
            }
            let Ok(Some(summary)) = events.run_summary(&run_id) else {
                continue;
            };
            if !summary.is_finished() {
                continue;
            }
            let job_type = summary.job_type.clone().unwrap_or_default();
            *totals
                .finished
                .entry((job_type.clone(), summary.status.clone()))
                .or_default() += 1;
            let retries = u64::from(summary.attempt.unwrap_or(1).saturating_sub(1));
            *totals.retries.entry(job_type.clone()).or_default() += retries;
            if let Some(latency_ms) = summary.latency_ms {
                totals
                    .durations
                    .entry(job_type)
                    .or_default()
                    .observe(latency_ms as f64 / 1000.0);
            }
            totals.counted.insert(run_id);
        }
        Ok(())
    }
}

/// `GET /metrics`.
pub async fn scrape(State(state): State<AppState>) -> Result<Response, ApiError> {
    let counts = state.queue.counts().await?;

    let metrics = state.metrics.clone();
    let events = state.events.clone();
    let data_dir = state.data_dir.clone();
    let workers = blocking(move || {
        metrics.update_runs(&events, &data_dir)?;
        read_worker_records(&data_dir, Utc::now())
    })
    .await?
    .map_err(|error| ApiError::internal(format!("failed to collect metrics: {error}")))?;

    let mut text = String::new();
    let mut jobs = Family::new(
        &mut text,
        "jobhost_jobs",
        "gauge",
        "Jobs in the queue by job type and status.",
    );
    for count in &counts {
        jobs.sample(
            &[("type", &count.job_type), ("status", count.status.as_str())],
            count.count as f64,
        );
    }

    let metrics = &state.metrics;
    let mut enqueued = Family::new(
        &mut text,
        "jobhost_jobs_enqueued_total",
        "counter",
        "New jobs enqueued through this API process since it started.",
    );
    for (job_type, count) in lock(&metrics.enqueued).iter() {
        enqueued.sample(&[("type", job_type)], *count as f64);
    }

    let mut requests = Family::new(
        &mut text,
        "jobhost_http_requests_total",
        "counter",
        "HTTP requests served by this API process since it started, by method, route and status.",
    );
    for ((method, route, status), count) in lock(&metrics.http_requests).iter() {
        requests.sample(
            &[
                ("method", method),
                ("route", route),
                ("status", &status.to_string()),
            ],
            *count as f64,
        );
    }

    write_run_totals(&mut text, &lock(&metrics.runs));
    write_workers(&mut text, &workers);

    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

fn write_run_totals(text: &mut String, totals: &RunTotals) {
    let mut finished = Family::new(
        text,
        "jobhost_runs_finished_total",
        "counter",
        "Finished runs by job type and final status (completed, failed, cancelled).",
    );
    for ((job_type, status), count) in &totals.finished {
        finished.sample(&[("type", job_type), ("status", status)], *count as f64);
    }

    let mut retries = Family::new(
        text,
        "jobhost_job_retries_total",
        "counter",
        "Attempts after the first, summed over finished runs, by job type.",
    );
    for (job_type, count) in &totals.retries {
        retries.sample(&[("type", job_type)], *count as f64);
    }

    let mut durations = Family::new(
        text,
        "jobhost_job_duration_seconds",
        "histogram",
        "Duration of the last attempt of finished runs, by job type.",
    );
    for (job_type, histogram) in &totals.durations {
        let mut cumulative = 0;
        for (bound, count) in DURATION_BUCKETS.iter().zip(histogram.buckets) {
            cumulative += count;
            durations.sample_named(
                "_bucket",
                &[("type", job_type), ("le", &bound.to_string())],
                cumulative as f64,
            );
        }
        durations.sample_named(
            "_bucket",
            &[("type", job_type), ("le", "+Inf")],
            histogram.count as f64,
        );
        durations.sample_named("_sum", &[("type", job_type)], histogram.sum);
        durations.sample_named("_count", &[("type", job_type)], histogram.count as f64);
    }
}

fn write_workers(text: &mut String, workers: &[super::system::WorkerRecord]) {
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    for worker in workers {
        *by_status.entry(worker.effective_status()).or_default() += 1;
    }
    let mut family = Family::new(
        text,
        "jobhost_workers",
        "gauge",
        "Worker records by status; `stale` when the heartbeat stopped.",
    );
    for (status, count) in by_status {
        family.sample(&[("status", status)], count as f64);
    }

    let mut load_errors = Family::new(
        text,
        "jobhost_plugin_load_errors",
        "gauge",
        "Plugin files a live worker failed to load.",
    );
    for worker in workers.iter().filter(|worker| worker.is_live()) {
        load_errors.sample(
            &[("worker_id", worker.worker_id())],
            worker.load_errors().len() as f64,
        );
    }
}

/// One metric family: writes its `# HELP` and `# TYPE` lines, then its samples.
struct Family<'a> {
    text: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(text: &'a mut String, name: &'static str, kind: &str, help: &str) -> Self {
        let _ = writeln!(text, "# HELP {name} {help}");
        let _ = writeln!(text, "# TYPE {name} {kind}");
        Family { text, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.sample_named("", labels, value);
    }

    fn sample_named(&mut self, suffix: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.text, "{}{suffix}", self.name);
        if !labels.is_empty() {
            let rendered: Vec<String> = labels
                .iter()
                .map(|(key, value)| format!("{key}=\"{}\"", escape_label(value)))
                .collect();
            let _ = write!(self.text, "{{{}}}", rendered.join(","));
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut histogram = Histogram::default();
        for seconds in [0.01, 0.2, 0.3, 4000.0] {
            histogram.observe(seconds);
        }
        let mut totals = RunTotals::default();
        totals.durations.insert("T".to_string(), histogram);
        let mut text = String::new();
        write_run_totals(&mut text, &totals);
        assert!(text.contains("jobhost_job_duration_seconds_bucket{type=\"T\",le=\"0.05\"} 1\n"));
        assert!(text.contains("jobhost_job_duration_seconds_bucket{type=\"T\",le=\"0.5\"} 3\n"));
        assert!(text.contains("jobhost_job_duration_seconds_bucket{type=\"T\",le=\"3600\"} 3\n"));
        assert!(text.contains("jobhost_job_duration_seconds_bucket{type=\"T\",le=\"+Inf\"} 4\n"));
        assert!(text.contains("jobhost_job_duration_seconds_count{type=\"T\"} 4\n"));
    }
}
