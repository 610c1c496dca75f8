//! Stored debates: `<data>/debates/<debateId>.json`, one `DebateRecord` per file, each written
//! whole by `durable::write_atomic` so that readers never see a partial record.

use super::DebateRecord;
use crate::durable;
use crate::job::validate_id;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A failed debate-store operation.
#[derive(Debug, thiserror::Error)]
pub enum DebateStoreError {
    #[error("{0}")]
    InvalidId(String),

    #[error("debate store failed at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },

    #[error("stored debate at {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
}

fn io_error(path: &Path, source: io::Error) -> DebateStoreError {
    DebateStoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Debates under one data directory. Cloning is cheap. Methods do blocking file I/O.
#[derive(Debug, Clone)]
pub struct DebateStore {
    dir: PathBuf,
}

impl DebateStore {
    /// Opens (creating when missing) the store in `<data_dir>/debates`.
    pub fn open(data_dir: &Path) -> Result<Self, DebateStoreError> {
        let dir = data_dir.join("debates");
        fs::create_dir_all(&dir).map_err(|error| io_error(&dir, error))?;
        Ok(DebateStore { dir })
    }

    fn path(&self, debate_id: &str) -> Result<PathBuf, DebateStoreError> {
        validate_id("debate id", debate_id).map_err(DebateStoreError::InvalidId)?;
        Ok(self.dir.join(format!("{debate_id}.json")))
    }

    /// Returns the debate, or `None` when none is stored under `debate_id`.
    pub fn get(&self, debate_id: &str) -> Result<Option<DebateRecord>, DebateStoreError> {
        let path = self.path(debate_id)?;
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error(&path, error)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|error| DebateStoreError::Corrupt {
                path: path.display().to_string(),
                reason: error.to_string(),
            })
    }

    /// Writes `record`, replacing any stored debate with the same id.
    pub fn put(&self, record: &DebateRecord) -> Result<(), DebateStoreError> {
        let path = self.path(&record.spec.debate_id)?;
        let bytes = serialize(&path, record)?;
        durable::write_atomic(&path, &bytes).map_err(|error| io_error(&path, error))
    }

    /// Writes `record` only when no debate with its id is stored, and returns false when one is.
    pub fn create(&self, record: &DebateRecord) -> Result<bool, DebateStoreError> {
        let path = self.path(&record.spec.debate_id)?;
        let bytes = serialize(&path, record)?;
        match durable::create_new(&path, &bytes) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(io_error(&path, error)),
        }
    }

    /// Lists debates in descending id order, `limit` at a time, starting after the id `cursor`.
    /// Generated debate ids are UUID v7, so for them this is newest first. Returns the page and
    /// the cursor of the next page.
    pub fn list(
        &self,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<DebateRecord>, Option<String>), DebateStoreError> {
        let mut ids = self.ids()?;
        ids.sort_unstable_by(|a, b| b.cmp(a));

        let mut records = Vec::new();
        let mut remaining = ids
            .into_iter()
            .filter(|id| cursor.is_none_or(|cursor| id.as_str() < cursor));
        for id in remaining.by_ref() {
            // A file removed between listing and reading is skipped.
            if let Some(record) = self.get(&id)? {
                records.push(record);
            }
            if records.len() == limit {
                break;
            }
        }
        let next_cursor = match remaining.next() {
            Some(_) => records.last().map(|record| record.spec.debate_id.clone()),
            None => None,
        };
        Ok((records, next_cursor))
    }

    fn ids(&self) -> Result<Vec<String>, DebateStoreError> {
        let entries = fs::read_dir(&self.dir).map_err(|error| io_error(&self.dir, error))?;
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| io_error(&self.dir, error))?;
            let name = entry.file_name();
            if let Some(id) = name.to_str().and_then(|name| name.strip_suffix(".json"))
                && validate_id("debate id", id).is_ok()
            {
                ids.push(id.to_string());
            }
        }
        Ok(ids)
    }
}

fn serialize(path: &Path, record: &DebateRecord) -> Result<Vec<u8>, DebateStoreError> {
    serde_json::to_vec_pretty(record).map_err(|error| io_error(path, error.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debate::{DebateSettings, DebateSpec, default_panel};
    use chrono::Utc;

    fn record(id: &str) -> DebateRecord {
        DebateRecord {
            spec: DebateSpec {
                debate_id: id.to_string(),
                topic: "Four-day work week".to_string(),
                context: None,
                personas: default_panel(),
                settings: DebateSettings::default(),
            },
            created_at: Utc::now(),
            request_id: Some("req-1".to_string()),
            job_id: "job-1".to_string(),
            run_id: "run-1".to_string(),
        }
    }

    #[test]
    fn put_get_round_trip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = DebateStore::open(dir.path()).expect("open");
        let stored = record("d1");
        store.put(&stored).expect("put");
        assert_eq!(store.get("d1").expect("get"), Some(stored));
        assert_eq!(store.get("missing").expect("get"), None);
    }

    #[test]
    fn create_keeps_existing_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = DebateStore::open(dir.path()).expect("open");
        let first = record("d1");
        assert!(store.create(&first).expect("first create"));
        let mut second = record("d1");
        second.spec.topic = "Another topic".to_string();
        assert!(!store.create(&second).expect("second create"));
        assert_eq!(store.get("d1").expect("get"), Some(first));
    }

    #[test]
    fn list_pages_in_descending_id_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = DebateStore::open(dir.path()).expect("open");
        for id in ["a", "b", "c", "d", "e"] {
            store.put(&record(id)).expect("put");
        }
        let ids = |records: &[DebateRecord]| {
            records
                .iter()
                .map(|record| record.spec.debate_id.clone())
                .collect::<Vec<_>>()
        };

        let (first, cursor) = store.list(2, None).expect("first page");
        assert_eq!(ids(&first), ["e", "d"]);
        assert_eq!(cursor.as_deref(), Some("d"));
        let (second, cursor) = store.list(2, cursor.as_deref()).expect("second page");
        assert_eq!(ids(&second), ["c", "b"]);
        let (third, cursor) = store.list(2, cursor.as_deref()).expect("third page");
        assert_eq!(ids(&third), ["a"]);
        assert_eq!(cursor, None);
    }

    #[test]
    fn path_like_id_is_rejected() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = DebateStore::open(dir.path()).expect("open");
        assert!(matches!(
            store.get("../queue"),
            Err(DebateStoreError::InvalidId(_))
        ));
    }
}
