//! The exclusive lock every read-modify-write of the queue holds, across threads and processes.

use crate::queue::QueueError;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// An advisory `flock` on `queue/.lock`, plus a mutex because `flock` does not exclude other
/// threads that share the same open file.
///
/// The lock is released when the process dies, so a crashed worker never leaves the queue locked.
/// `flock` works between processes on one host; the data directory must not be shared over a
/// network file system.
#[derive(Debug)]
pub(super) struct QueueLock {
    path: PathBuf,
    file: Mutex<File>,
}

/// Holds the queue lock until dropped.
#[derive(Debug)]
pub(super) struct LockGuard<'a> {
    file: MutexGuard<'a, File>,
}

impl QueueLock {
    pub fn open(path: &Path) -> Result<Self, QueueError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|error| QueueError::io(path, error))?;
        Ok(QueueLock {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Blocks until this thread holds the lock. Call from a blocking context only.
    pub fn acquire(&self) -> Result<LockGuard<'_>, QueueError> {
        // A panic while holding the mutex leaves the file itself usable, so poisoning is ignored.
        let file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        file.lock()
            .map_err(|error| QueueError::io(&self.path, error))?;
        Ok(LockGuard { file })
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.file.unlock() {
            tracing::error!(%error, "failed to unlock the queue lock file");
        }
    }
}
