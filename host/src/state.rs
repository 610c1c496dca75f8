//! Job-scoped plugin state: a small map of string keys to string values per job, kept across
//! attempts in `<data>/state/<jobId>.json` so that a retried attempt can resume where an earlier
//! one stopped. Plugins reach it through the runtime's `state` import.
//!
//! Only the attempt that holds a job's lease writes its state, so writes need no lock. Every write
//! replaces the whole file atomically, which is why the whole state is capped at 4 MiB.

use crate::durable;
use crate::job::validate_id;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Maximum key length, in characters.
pub const MAX_KEY_CHARS: usize = 128;
/// Maximum value size, in UTF-8 bytes.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;
/// Maximum state size of one job: the sum of its keys' and values' UTF-8 bytes.
pub const MAX_STATE_BYTES: usize = 4 * 1024 * 1024;

/// A failed state operation.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A key, value or job id is not acceptable; the message names it and the limit.
    #[error("{0}")]
    Invalid(String),

    #[error("job state storage failed at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },

    #[error("job state at {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
}

fn io_error(path: &Path, source: io::Error) -> StateError {
    StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The state of one job, held in memory by the attempt that uses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobState {
    values: BTreeMap<String, String>,
    /// Sum of the UTF-8 bytes of all keys and values.
    size: usize,
}

impl JobState {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Stores `value` under `key` and returns the previous value. Leaves the state unchanged when
    /// the key, the value or the resulting total is over its limit.
    pub fn set(&mut self, key: &str, value: &str) -> Result<Option<String>, StateError> {
        validate_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(StateError::Invalid(format!(
                "value of state key {key:?} is {} bytes, above the {MAX_VALUE_BYTES}-byte limit: store less per key",
                value.len()
            )));
        }
        let replaced = self.values.get(key).map_or(0, |old| key.len() + old.len());
        let size = self.size - replaced + key.len() + value.len();
        if size > MAX_STATE_BYTES {
            return Err(StateError::Invalid(format!(
                "setting state key {key:?} would make the job's state {size} bytes, above the {MAX_STATE_BYTES}-byte limit: delete keys that are no longer needed"
            )));
        }
        self.size = size;
        Ok(self.values.insert(key.to_string(), value.to_string()))
    }

    /// Removes `key` and returns its value; removing a missing key changes nothing.
    pub fn delete(&mut self, key: &str) -> Option<String> {
        let removed = self.values.remove(key)?;
        self.size -= key.len() + removed.len();
        Some(removed)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Sum of the UTF-8 bytes of all keys and values.
    pub fn size_bytes(&self) -> usize {
        self.size
    }

    /// Encodes the state as the JSON object stored on disk.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // serde_json fails only for non-string map keys or a failing `Serialize`; a map of
        // strings has neither.
        serde_json::to_vec(&self.values).unwrap_or_default()
    }

    fn from_values(values: BTreeMap<String, String>) -> Self {
        let size = values.iter().map(|(k, v)| k.len() + v.len()).sum();
        JobState { values, size }
    }
}

/// Checks a state key: 1 to 128 characters, none of them a control character.
pub fn validate_key(key: &str) -> Result<(), StateError> {
    let chars = key.chars().count();
    if chars == 0 || chars > MAX_KEY_CHARS || key.chars().any(char::is_control) {
        return Err(StateError::Invalid(format!(
            "invalid state key {key:?}: use 1 to {MAX_KEY_CHARS} characters with no control characters"
        )));
    }
    Ok(())
}

/// Job states under one data directory. Cloning is cheap; clones share the directory.
///
/// Methods do blocking file I/O; async callers should use `spawn_blocking`.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// Opens (creating when missing) the store in `<data_dir>/state`.
    pub fn open(data_dir: &Path) -> Result<Self, StateError> {
        let dir = data_dir.join("state");
        fs::create_dir_all(&dir).map_err(|error| io_error(&dir, error))?;
        Ok(StateStore { dir })
    }

    /// Path of a job's state file.
    pub fn path(&self, job_id: &str) -> Result<PathBuf, StateError> {
        validate_id("job id", job_id).map_err(StateError::Invalid)?;
        Ok(self.dir.join(format!("{job_id}.json")))
    }

    /// Reads a job's state; a job that never stored anything has an empty state.
    pub fn load(&self, job_id: &str) -> Result<JobState, StateError> {
        let path = self.path(job_id)?;
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(JobState::default());
            }
            Err(error) => return Err(io_error(&path, error)),
        };
        let values: BTreeMap<String, String> =
            serde_json::from_slice(&bytes).map_err(|error| StateError::Corrupt {
                path: path.display().to_string(),
                reason: format!("expected a JSON object of string values: {error}"),
            })?;
        Ok(JobState::from_values(values))
    }

    /// Replaces a job's state file durably with `state`.
    pub fn save(&self, job_id: &str, state: &JobState) -> Result<(), StateError> {
        self.save_encoded(job_id, &state.to_json_bytes())
    }

    /// Replaces a job's state file durably with `bytes`, the output of `JobState::to_json_bytes`.
    /// Lets async callers encode on their own thread and write on a blocking one.
    pub fn save_encoded(&self, job_id: &str, bytes: &[u8]) -> Result<(), StateError> {
        let path = self.path(job_id)?;
        durable::write_atomic(&path, bytes).map_err(|error| io_error(&path, error))
    }

    /// Deletes a job's state; a job with no state is not an error.
    pub fn remove(&self, job_id: &str) -> Result<(), StateError> {
        let path = self.path(job_id)?;
        durable::remove(&path).map_err(|error| io_error(&path, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_delete_and_persist() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = StateStore::open(dir.path()).expect("open");
        let job = crate::job::new_id();

        let mut state = store.load(&job).expect("load empty");
        assert!(state.is_empty());
        assert_eq!(state.set("turn:0", "hello").expect("set"), None);
        assert_eq!(
            state.set("turn:0", "again").expect("set again"),
            Some("hello".to_string())
        );
        state.set("turn:1", "x").expect("set second");
        store.save(&job, &state).expect("save");

        let mut reloaded = store.load(&job).expect("reload");
        assert_eq!(reloaded.get("turn:0"), Some("again"));
        assert_eq!(reloaded.size_bytes(), state.size_bytes());
        assert_eq!(reloaded.delete("turn:0"), Some("again".to_string()));
        assert_eq!(reloaded.delete("turn:0"), None);
        assert_eq!(reloaded.size_bytes(), "turn:1".len() + 1);

        store.remove(&job).expect("remove");
        assert!(store.load(&job).expect("load after remove").is_empty());
        store.remove(&job).expect("remove twice");
    }

    #[test]
    fn key_limits() {
        let mut state = JobState::default();
        state.set(&"k".repeat(128), "v").expect("128-character key");
        for bad in [String::new(), "k".repeat(129), "line\nbreak".to_string()] {
            assert!(
                matches!(state.set(&bad, "v"), Err(StateError::Invalid(_))),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn value_limit() {
        let mut state = JobState::default();
        state
            .set("k", &"v".repeat(MAX_VALUE_BYTES))
            .expect("value at the limit");
        let error = state
            .set("k", &"v".repeat(MAX_VALUE_BYTES + 1))
            .expect_err("value over the limit");
        assert!(error.to_string().contains("262144-byte limit"), "{error}");
        assert_eq!(state.get("k").map(str::len), Some(MAX_VALUE_BYTES));
    }

    #[test]
    fn total_limit_leaves_state_unchanged() {
        let mut state = JobState::default();
        let value = "v".repeat(MAX_VALUE_BYTES);
        let mut stored = 0;
        loop {
            match state.set(&format!("key-{stored:03}"), &value) {
                Ok(_) => stored += 1,
                Err(error) => {
                    assert!(error.to_string().contains("4194304-byte limit"), "{error}");
                    break;
                }
            }
        }
        assert_eq!(stored, 15);
        assert_eq!(state.len(), 15);
        assert!(state.size_bytes() <= MAX_STATE_BYTES);

        // Replacing an existing key counts only the difference.
        state
            .set("key-000", "small")
            .expect("shrink an existing value");
        state.set("key-015", &value).expect("room after shrinking");
    }

    #[test]
    fn corrupt_file_is_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = StateStore::open(dir.path()).expect("open");
        let job = crate::job::new_id();
        fs::write(store.path(&job).expect("path"), b"[1, 2]").expect("write");
        assert!(matches!(store.load(&job), Err(StateError::Corrupt { .. })));
        assert!(matches!(
            store.load("../escape"),
            Err(StateError::Invalid(_))
        ));
    }
}
