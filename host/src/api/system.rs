//! Health, readiness, the workers and plugins seen through worker records, and the JSON
//! responses for unknown routes.

use super::error::ApiError;
use super::{AppState, blocking};
use crate::queue::JobFilter;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::{fs, io};

/// A worker record is stale when its heartbeat is older than this many heartbeat intervals.
const STALE_INTERVALS: i64 = 3;
/// Heartbeat interval assumed for a record without `heartbeatIntervalMs`.
const DEFAULT_HEARTBEAT_INTERVAL_MS: i64 = 5000;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when the data directory is writable and the queue readable, else 503
/// with the failed check.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let data_dir = state.data_dir.clone();
    let data_dir_check = match blocking(move || probe_writable(&data_dir)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(error.message().to_string()),
    };
    let probe = JobFilter {
        limit: 1,
        ..JobFilter::default()
    };
    let queue_check = state
        .queue
        .list(&probe)
        .await
        .map(|_| ())
        .map_err(|error| error.to_string());

    let describe = |check: &Result<(), String>| match check {
        Ok(()) => json!("ok"),
        Err(message) => json!(message),
    };
    let ready = data_dir_check.is_ok() && queue_check.is_ok();
    if let Err(message) = &data_dir_check {
        tracing::warn!(%message, "readiness check failed: data directory is not writable");
    }
    if let Err(message) = &queue_check {
        tracing::warn!(%message, "readiness check failed: queue is not readable");
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "unavailable" },
            "checks": {
                "dataDir": describe(&data_dir_check),
                "queue": describe(&queue_check),
            },
        })),
    )
}

/// Creates, syncs and removes a small file in `dir`.
fn probe_writable(dir: &Path) -> io::Result<()> {
    let path = dir.join(format!(".readyz-{:016x}", rand::random::<u64>()));
    let result = fs::write(&path, b"ok").and_then(|()| fs::File::open(&path)?.sync_all());
    let removed = fs::remove_file(&path);
    result.and(removed)
}

/// One worker record from `<data>/workers/`, as the worker wrote it, plus `stale`.
#[derive(Debug, Clone)]
pub struct WorkerRecord {
    pub record: Map<String, Value>,
    /// True when the last heartbeat is older than three heartbeat intervals.
    pub stale: bool,
}

impl WorkerRecord {
    fn text(&self, key: &str) -> Option<&str> {
        self.record.get(key).and_then(Value::as_str)
    }

    pub fn worker_id(&self) -> &str {
        self.text("workerId").unwrap_or_default()
    }

    /// Returns true while the worker runs and heartbeats: not stale and not `stopped`.
    pub fn is_live(&self) -> bool {
        !self.stale && self.text("status") != Some("stopped")
    }

    /// Returns `stale` for a stale record, otherwise the recorded status.
    pub fn effective_status(&self) -> &str {
        if self.stale {
            "stale"
        } else {
            self.text("status").unwrap_or("unknown")
        }
    }

    pub fn load_errors(&self) -> &[Value] {
        self.record
            .get("loadErrors")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }
}

/// Reads every worker record, sorted by worker id. Unreadable records are skipped with a
/// warning, because a worker may be replacing its file at that moment.
pub fn read_worker_records(data_dir: &Path, now: DateTime<Utc>) -> io::Result<Vec<WorkerRecord>> {
    let dir = data_dir.join("workers");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };

    let mut records = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let is_record = path.extension().is_some_and(|ext| ext == "json")
            && !path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with('.'));
        if !is_record {
            continue;
        }
        let parsed = fs::read(&path)
            .map_err(|error| error.to_string())
            .and_then(|bytes| {
                serde_json::from_slice::<Map<String, Value>>(&bytes).map_err(|e| e.to_string())
            });
        match parsed {
            Ok(record) => records.push(WorkerRecord {
                stale: is_stale(&record, now),
                record,
            }),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "skipping an unreadable worker record");
            }
        }
    }
    records.sort_by(|a, b| a.worker_id().cmp(b.worker_id()));
    Ok(records)
}

fn is_stale(record: &Map<String, Value>, now: DateTime<Utc>) -> bool {
    let Some(heartbeat_at) = record
        .get("heartbeatAt")
        .and_then(Value::as_str)
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
    else {
        return true;
    };
    let interval_ms = record
        .get("heartbeatIntervalMs")
        .and_then(Value::as_i64)
        .filter(|ms| *ms > 0)
        .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL_MS);
    let age = now.signed_duration_since(heartbeat_at.with_timezone(&Utc));
    age.num_milliseconds() > STALE_INTERVALS * interval_ms
}

async fn worker_records(state: &AppState) -> Result<Vec<WorkerRecord>, ApiError> {
    let data_dir = state.data_dir.clone();
    blocking(move || read_worker_records(&data_dir, Utc::now()))
        .await?
        .map_err(|error| ApiError::internal(format!("failed to read worker records: {error}")))
}

/// `GET /api/workers`: every worker record, with `stale` added.
pub async fn workers(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let workers: Vec<Value> = worker_records(&state)
        .await?
        .into_iter()
        .map(|worker| {
            let mut record = worker.record;
            record.insert("stale".to_string(), Value::Bool(worker.stale));
            Value::Object(record)
        })
        .collect();
    Ok(Json(json!({ "workers": workers })))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PluginView {
    name: String,
    version: String,
    description: String,
    job_types: Vec<String>,
    sha256: String,
    /// Live workers that loaded this plugin build.
    workers: Vec<String>,
}

/// `GET /api/plugins`: the plugins live workers have loaded, one entry per name, version and
/// hash, with the job types each handles and the load errors workers reported.
pub async fn plugins(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let records = worker_records(&state).await?;
    let mut plugins: BTreeMap<(String, String, String), PluginView> = BTreeMap::new();
    let mut load_errors = Vec::new();

    for worker in records.iter().filter(|worker| worker.is_live()) {
        let worker_id = worker.worker_id().to_string();
        let loaded = worker
            .record
            .get("plugins")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        for plugin in loaded {
            let text = |key: &str| {
                plugin
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let key = (text("name"), text("version"), text("sha256"));
            let entry = plugins.entry(key).or_insert_with(|| PluginView {
                name: text("name"),
                version: text("version"),
                description: text("description"),
                job_types: plugin
                    .get("jobTypes")
                    .and_then(Value::as_array)
                    .map(|types| {
                        types
                            .iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
                sha256: text("sha256"),
                workers: Vec::new(),
            });
            entry.workers.push(worker_id.clone());
        }
        for error in worker.load_errors() {
            let mut error = error.clone();
            if let Some(object) = error.as_object_mut() {
                object.insert("workerId".to_string(), Value::from(worker_id.clone()));
            }
            load_errors.push(error);
        }
    }

    let mut job_types: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for plugin in plugins.values() {
        for job_type in &plugin.job_types {
            let names = job_types.entry(job_type.clone()).or_default();
            if !names.contains(&plugin.name) {
                names.push(plugin.name.clone());
            }
        }
    }
    let plugins: Vec<PluginView> = plugins.into_values().collect();
    Ok(Json(json!({
        "plugins": plugins,
        "jobTypes": job_types,
        "loadErrors": load_errors,
    })))
}

/// Fallback for a path no route matches.
pub async fn route_not_found(uri: Uri) -> ApiError {
    ApiError::not_found(
        "route_not_found",
        format!(
            "no route for {}: see /openapi.json for the routes",
            uri.path()
        ),
    )
}

/// Fallback for a route that exists but not with this method.
pub async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not accept this method: see /openapi.json for its methods",
            uri.path()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_uses_recorded_interval() {
        let now = Utc::now();
        let record = |age_ms: i64, interval_ms: i64| {
            let heartbeat = now - chrono::Duration::milliseconds(age_ms);
            json!({ "heartbeatAt": heartbeat.to_rfc3339(), "heartbeatIntervalMs": interval_ms })
                .as_object()
                .cloned()
                .expect("object")
        };
        assert!(!is_stale(&record(2_000, 1_000), now));
        assert!(is_stale(&record(3_500, 1_000), now));
        assert!(!is_stale(&record(14_000, 5_000), now));
        assert!(is_stale(&Map::new(), now));
    }
}
