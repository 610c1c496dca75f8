//! Paths of each kind of file the file backend keeps under `<data>/queue/`.

use sha2::{Digest, Sha256};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Paths of the queue's files. Every id and job type passed in here has been validated, so no
/// path built from them leaves the queue directory.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// `<data>/queue`.
    pub root: PathBuf,
    /// `jobs/<jobId>.json`: the job records, the only source of truth.
    pub jobs: PathBuf,
    /// `index/pending/<jobType>/<marker>`: one empty file per pending job.
    pub pending: PathBuf,
    /// `index/running/<jobId>`: one empty file per running job.
    pub running: PathBuf,
    /// `index/boot-id`: the kernel boot id under which the index was last checked.
    pub boot_id: PathBuf,
    /// `keys/<sha256 of job type, newline, key>`: the id of the job that owns an idempotency key.
    pub keys: PathBuf,
    /// `quarantine/`: job files that could not be read, moved aside for an operator.
    pub quarantine: PathBuf,
    /// `.lock`: the cross-process lock file.
    pub lock: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Self {
        let root = data_dir.join("queue");
        let index = root.join("index");
        Layout {
            jobs: root.join("jobs"),
            pending: index.join("pending"),
            running: index.join("running"),
            boot_id: index.join("boot-id"),
            keys: root.join("keys"),
            quarantine: root.join("quarantine"),
            lock: root.join(".lock"),
            root,
        }
    }

    /// Creates every directory of the layout that does not exist yet.
    pub fn create_dirs(&self) -> io::Result<()> {
        for dir in [
            &self.jobs,
            &self.pending,
            &self.running,
            &self.keys,
            &self.quarantine,
        ] {
            fs::create_dir_all(dir)?;
        }
        Ok(())
    }

    pub fn job_file(&self, job_id: &str) -> PathBuf {
        self.jobs.join(format!("{job_id}.json"))
    }

    pub fn pending_dir(&self, job_type: &str) -> PathBuf {
        self.pending.join(job_type)
    }

    pub fn running_marker(&self, job_id: &str) -> PathBuf {
        self.running.join(job_id)
    }

    /// Returns the path of a scoped key's record (`enqueue::scoped_key`). The name is a hash, so any
    /// key text is a safe name.
    pub fn key_record(&self, key: &str) -> PathBuf {
        self.keys.join(hex::encode(Sha256::digest(key.as_bytes())))
    }

    /// `path` relative to the data directory, as messages show it (`queue/jobs/<id>.json`).
    pub fn display(&self, path: &Path) -> String {
        let data_dir = self.root.parent().unwrap_or(&self.root);
        path.strip_prefix(data_dir)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

/// Returns the job id of a directory entry in `jobs/`, or `None` for anything else: temporary
/// files of an interrupted write (names starting with '.'), and names that are not a valid id.
pub(super) fn job_id_of_file_name(name: &str) -> Option<&str> {
    if name.starts_with('.') {
        return None;
    }
    let id = name.strip_suffix(".json")?;
    crate::job::validate_id("job id", id).ok()?;
    Some(id)
}

/// Lists the names in `dir`, skipping names that are not UTF-8. A missing directory is empty.
pub(super) fn list_names(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut names = Vec::new();
    for entry in entries {
        if let Ok(name) = entry?.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}
