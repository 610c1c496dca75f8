//! Files a run produces, such as a debate transcript: `<data>/artifacts/<runId>/<name>` with its
//! metadata in `<data>/artifacts/<runId>/<name>.meta.json`
//! (`{"contentType": "...", "size": N, "createdAt": "..."}`).
//!
//! Plugins store artifacts through the runtime's `artifacts` import; the API reads them. An
//! artifact is complete once its metadata file exists, because `put` writes the content first and
//! the metadata second, each by atomic rename.

use crate::durable;
use crate::job::validate_id;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Maximum artifact size, in bytes.
pub const MAX_ARTIFACT_BYTES: usize = 16 * 1024 * 1024;

/// Maximum artifact name length, in characters.
pub const MAX_NAME_CHARS: usize = 128;

const META_SUFFIX: &str = ".meta.json";

/// A failed artifact operation.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A name, run id or content type from the caller is not acceptable; the message names it.
    #[error("{0}")]
    Invalid(String),

    #[error(
        "artifact is {size} bytes, above the {limit}-byte limit: store a smaller artifact or split it"
    )]
    TooLarge { size: usize, limit: usize },

    #[error("artifact storage failed at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &Path, source: io::Error) -> ArtifactError {
    ArtifactError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Metadata stored beside each artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactMeta {
    pub content_type: String,
    /// Content length in bytes.
    pub size: u64,
    pub created_at: DateTime<Utc>,
}

/// One artifact of a run as `list` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactInfo {
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub created_at: DateTime<Utc>,
}

/// An artifact's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// Artifacts under one data directory. Cloning is cheap; clones share the directory.
///
/// Methods do blocking file I/O; async callers should use `spawn_blocking`.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    root: PathBuf,
}

impl ArtifactStore {
    /// Opens (creating when missing) the store in `<data_dir>/artifacts`.
    pub fn open(data_dir: &Path) -> Result<Self, ArtifactError> {
        let root = data_dir.join("artifacts");
        fs::create_dir_all(&root).map_err(|error| io_error(&root, error))?;
        Ok(ArtifactStore { root })
    }

    /// Stores `bytes` as artifact `name` of run `run_id`, replacing an earlier one of that name,
    /// and returns its metadata. Both files are written durably before this returns.
    pub fn put(
        &self,
        run_id: &str,
        name: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<ArtifactMeta, ArtifactError> {
        validate_id("run id", run_id).map_err(ArtifactError::Invalid)?;
        validate_name(name)?;
        validate_content_type(content_type)?;
        if bytes.len() > MAX_ARTIFACT_BYTES {
            return Err(ArtifactError::TooLarge {
                size: bytes.len(),
                limit: MAX_ARTIFACT_BYTES,
            });
        }

        let dir = self.root.join(run_id);
        fs::create_dir_all(&dir).map_err(|error| io_error(&dir, error))?;
        let path = dir.join(name);
        durable::write_atomic(&path, bytes).map_err(|error| io_error(&path, error))?;

        let meta = ArtifactMeta {
            content_type: content_type.to_string(),
            size: bytes.len() as u64,
            created_at: Utc::now(),
        };
        let meta_path = meta_path(&dir, name);
        let meta_bytes =
            serde_json::to_vec(&meta).map_err(|error| io_error(&meta_path, error.into()))?;
        durable::write_atomic(&meta_path, &meta_bytes)
            .map_err(|error| io_error(&meta_path, error))?;
        Ok(meta)
    }

    /// Returns artifact `name` of run `run_id`, or `None` when it does not exist (or its metadata
    /// was never written).
    pub fn get(&self, run_id: &str, name: &str) -> Result<Option<Artifact>, ArtifactError> {
        validate_id("run id", run_id).map_err(ArtifactError::Invalid)?;
        validate_name(name)?;
        let dir = self.root.join(run_id);
        let Some(meta) = read_meta(&meta_path(&dir, name))? else {
            return Ok(None);
        };
        let path = dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(Artifact {
                content_type: meta.content_type,
                bytes,
            })),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error(&path, error)),
        }
    }

    /// Lists the complete artifacts of run `run_id`, sorted by name; an unknown run has none.
    pub fn list(&self, run_id: &str) -> Result<Vec<ArtifactInfo>, ArtifactError> {
        validate_id("run id", run_id).map_err(ArtifactError::Invalid)?;
        let dir = self.root.join(run_id);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io_error(&dir, error)),
        };

        let mut artifacts = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| io_error(&dir, error))?;
            let file_name = entry.file_name();
            let Some(name) = file_name
                .to_str()
                .and_then(|file_name| file_name.strip_suffix(META_SUFFIX))
            else {
                continue;
            };
            if name.starts_with('.') || validate_name(name).is_err() {
                continue;
            }
            if let Some(meta) = read_meta(&entry.path())? {
                artifacts.push(ArtifactInfo {
                    name: name.to_string(),
                    content_type: meta.content_type,
                    size: meta.size,
                    created_at: meta.created_at,
                });
            }
        }
        artifacts.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(artifacts)
    }
}

/// Checks an artifact name: 1 to 128 characters of `[A-Za-z0-9_.-]`, not starting with a dot and
/// not ending in `.meta.json`. So a name never points at a hidden or temporary file, a parent
/// directory, or another artifact's metadata.
pub fn validate_name(name: &str) -> Result<(), ArtifactError> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if name.is_empty()
        || name.len() > MAX_NAME_CHARS
        || !valid_chars
        || name.starts_with('.')
        || name.ends_with(META_SUFFIX)
    {
        return Err(ArtifactError::Invalid(format!(
            "invalid artifact name {name:?}: use 1 to {MAX_NAME_CHARS} characters of letters, digits, '_', '.' and '-', not starting with '.' and not ending in {META_SUFFIX:?}"
        )));
    }
    Ok(())
}

/// Checks a media type such as `text/markdown; charset=utf-8`: printable ASCII with a `/`, at
/// most 255 characters.
fn validate_content_type(content_type: &str) -> Result<(), ArtifactError> {
    let printable = content_type
        .chars()
        .all(|c| c.is_ascii_graphic() || c == ' ');
    let has_slash = content_type
        .split(';')
        .next()
        .is_some_and(|essence| essence.trim().split('/').filter(|p| !p.is_empty()).count() == 2);
    if content_type.len() > 255 || !printable || !has_slash {
        return Err(ArtifactError::Invalid(format!(
            "invalid content type {content_type:?}: use a media type such as \"text/markdown\" or \"application/json\""
        )));
    }
    Ok(())
}

fn meta_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{META_SUFFIX}"))
}

fn read_meta(path: &Path) -> Result<Option<ArtifactMeta>, ArtifactError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(path, error)),
    };
    match serde_json::from_slice(&bytes) {
        Ok(meta) => Ok(Some(meta)),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "skipping unreadable artifact metadata");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ArtifactStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ArtifactStore::open(dir.path()).expect("open");
        (dir, store)
    }

    #[test]
    fn put_get_list_round_trip() {
        let (_dir, store) = store();
        let run = crate::job::new_id();
        store
            .put(&run, "transcript.md", "text/markdown", b"# Debate")
            .expect("put");
        store
            .put(&run, "a.json", "application/json", b"{}")
            .expect("put second");

        let artifact = store
            .get(&run, "transcript.md")
            .expect("get")
            .expect("present");
        assert_eq!(artifact.content_type, "text/markdown");
        assert_eq!(artifact.bytes, b"# Debate");

        let names: Vec<_> = store
            .list(&run)
            .expect("list")
            .into_iter()
            .map(|info| (info.name, info.size))
            .collect();
        assert_eq!(
            names,
            vec![("a.json".to_string(), 2), ("transcript.md".to_string(), 8)]
        );
    }

    #[test]
    fn put_replaces_earlier_artifact() {
        let (_dir, store) = store();
        let run = crate::job::new_id();
        store
            .put(&run, "out.txt", "text/plain", b"one")
            .expect("put");
        store
            .put(&run, "out.txt", "text/plain", b"two")
            .expect("put again");
        let artifact = store.get(&run, "out.txt").expect("get").expect("present");
        assert_eq!(artifact.bytes, b"two");
        assert_eq!(store.list(&run).expect("list").len(), 1);
    }

    #[test]
    fn missing_artifact_and_run_are_none_and_empty() {
        let (_dir, store) = store();
        let run = crate::job::new_id();
        assert!(store.get(&run, "nothing.txt").expect("get").is_none());
        assert!(store.list(&run).expect("list").is_empty());
    }

    #[test]
    fn invalid_names_are_rejected() {
        let (_dir, store) = store();
        let run = crate::job::new_id();
        for bad in [
            "",
            ".hidden",
            "..",
            "a/b",
            "a\\b",
            "x.meta.json",
            "spa ce",
            &"n".repeat(129),
        ] {
            let result = store.put(&run, bad, "text/plain", b"x");
            assert!(
                matches!(result, Err(ArtifactError::Invalid(_))),
                "{bad:?} was accepted"
            );
        }
        assert!(matches!(
            store.put("../escape", "a.txt", "text/plain", b"x"),
            Err(ArtifactError::Invalid(_))
        ));
    }

    #[test]
    fn invalid_content_type_is_rejected() {
        let (_dir, store) = store();
        let run = crate::job::new_id();
        for bad in ["", "text", "text/", "/plain", "text/plain\n"] {
            assert!(
                matches!(
                    store.put(&run, "a.txt", bad, b"x"),
                    Err(ArtifactError::Invalid(_))
                ),
                "{bad:?} was accepted"
            );
        }
        store
            .put(&run, "a.txt", "text/plain; charset=utf-8", b"x")
            .expect("media type with parameter");
    }

    #[test]
    fn oversized_artifact_is_rejected() {
        let (_dir, store) = store();
        let run = crate::job::new_id();
        let bytes = vec![0u8; MAX_ARTIFACT_BYTES + 1];
        assert!(matches!(
            store.put(&run, "big.bin", "application/octet-stream", &bytes),
            Err(ArtifactError::TooLarge { .. })
        ));
        assert!(store.get(&run, "big.bin").expect("get").is_none());
    }
}
