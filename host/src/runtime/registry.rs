//! The loaded plugins of one worker, by job type, kept in step with the plugin directories.
//!
//! Every `*.wasm` file directly in a plugin directory is a plugin (names starting with a dot are
//! skipped, so `.name.wasm.tmp` style temporary files never load), with an optional `<name>.toml`
//! manifest beside it. `scan` compares each file's size and modification time, and its manifest's,
//! with what it saw before:
//!
//! - A new or changed file loads once its size and modification time have not changed for the
//!   settle period, so a file that is still being copied is not loaded half-written. A file that
//!   does not parse while it is still changing waits. A file that does not load once stable is a
//!   load error until it changes again.
//! - A changed file that does not load leaves the last version that loaded from the same path
//!   in place: its job types stay claimable, and it is replaced once the file loads. So a broken
//!   copy, or a writer that pauses longer than the settle period, does not take a plugin offline
//!   (only deleting the file does).
//! - A deleted file unloads its plugin; its job types are no longer claimed.
//! - A job type belongs to one plugin. A plugin that claims a type an already loaded plugin owns
//!   is rejected with a load error, and loads by itself once the owner is gone.
//!
//! The recommended way to install or replace a plugin is to copy it to a temporary name starting
//! with a dot in the same directory and rename it to `<name>.wasm`, which replaces it atomically.
//!
//! Attempts hold an `Arc` to the plugin they started with, so a replaced or deleted plugin keeps
//! running its attempts in flight. `reload` drives `scan` from a file watcher plus a periodic
//! rescan.

mod reload;

use super::Runtime;
use super::plugin::{LoadError, LoadedPlugin};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// Tunables of a `PluginRegistry`; `Default` lists the defaults.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Directories scanned for plugins, in order; at startup, a plugin in an earlier directory
    /// wins a job-type conflict.
    pub plugin_dirs: Vec<PathBuf>,
    /// How long a new or changed file must keep its size and modification time before it is
    /// loaded. Default 500 ms.
    pub settle: Duration,
    /// Interval of the rescan that backs up the file watcher. Default 2 s.
    pub rescan_interval: Duration,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            plugin_dirs: vec![PathBuf::from("plugins")],
            settle: Duration::from_millis(500),
            rescan_interval: Duration::from_secs(2),
        }
    }
}

/// A plugin file that did not load, as the worker's heartbeat record shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadErrorRecord {
    pub file: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// Size and modification time of a plugin file and of its manifest (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    wasm: (u64, SystemTime),
    manifest: Option<(u64, SystemTime)>,
}

impl Fingerprint {
    fn newest_change(&self) -> SystemTime {
        match self.manifest {
            Some((_, manifest)) => self.wasm.1.max(manifest),
            None => self.wasm.1,
        }
    }
}

/// The registry's entry for one plugin file.
#[derive(Debug)]
struct FileEntry {
    /// The latest fingerprint seen.
    fingerprint: Fingerprint,
    /// Set while the latest fingerprint waits out the settle period.
    settling_since: Option<Instant>,
    /// The loaded version, possibly of an older fingerprint while a new one settles or after it
    /// failed to load, so a replaced plugin keeps handling its job types until a new version
    /// loads.
    plugin: Option<Arc<LoadedPlugin>>,
    /// Set while the plugin is rejected because another plugin owns one of its job types.
    conflict: Option<LoadErrorRecord>,
    /// Load error of the latest fingerprint, cleared when the file changes and loads. It can be
    /// set while `plugin` is an older version that still runs.
    error: Option<LoadErrorRecord>,
}

impl FileEntry {
    fn settling(fingerprint: Fingerprint) -> Self {
        FileEntry {
            fingerprint,
            settling_since: Some(Instant::now()),
            plugin: None,
            conflict: None,
            error: None,
        }
    }

    fn active_plugin(&self) -> Option<&Arc<LoadedPlugin>> {
        self.plugin.as_ref().filter(|_| self.conflict.is_none())
    }
}

#[derive(Debug, Default)]
struct Inner {
    files: BTreeMap<PathBuf, FileEntry>,
    by_type: BTreeMap<String, Arc<LoadedPlugin>>,
    /// Plugin directories that were missing at the last scan, so the warning is logged once.
    missing_dirs: BTreeSet<PathBuf>,
}

/// The plugins a worker runs, by job type.
#[derive(Debug)]
pub struct PluginRegistry {
    runtime: Arc<Runtime>,
    settings: RegistrySettings,
    inner: Mutex<Inner>,
    /// One scan at a time.
    scanning: tokio::sync::Mutex<()>,
    /// Bumped whenever the set of claimable job types or their plugins changes.
    changes: watch::Sender<u64>,
}

impl PluginRegistry {
    pub fn new(runtime: Arc<Runtime>, settings: RegistrySettings) -> Arc<Self> {
        Arc::new(PluginRegistry {
            runtime,
            settings,
            inner: Mutex::new(Inner::default()),
            scanning: tokio::sync::Mutex::new(()),
            changes: watch::channel(0).0,
        })
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn settings(&self) -> &RegistrySettings {
        &self.settings
    }

    /// Job types that a loaded plugin handles, sorted.
    pub fn job_types(&self) -> Vec<String> {
        self.lock().by_type.keys().cloned().collect()
    }

    /// Returns the plugin that handles `job_type`, if one is loaded.
    pub fn plugin_for(&self, job_type: &str) -> Option<Arc<LoadedPlugin>> {
        self.lock().by_type.get(job_type).cloned()
    }

    /// Lists the loaded plugins that own their job types, in file order.
    pub fn plugins(&self) -> Vec<Arc<LoadedPlugin>> {
        self.lock()
            .files
            .values()
            .filter_map(FileEntry::active_plugin)
            .cloned()
            .collect()
    }

    /// Plugin files that did not load, including plugins rejected for a job-type conflict.
    pub fn load_errors(&self) -> Vec<LoadErrorRecord> {
        self.lock()
            .files
            .values()
            .filter_map(|entry| entry.error.as_ref().or(entry.conflict.as_ref()))
            .cloned()
            .collect()
    }

    /// Returns a receiver that gets a new value whenever the claimable job types change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether a file waits for its settle period, so the next scan should come soon.
    pub fn has_settling(&self) -> bool {
        self.lock()
            .files
            .values()
            .any(|entry| entry.settling_since.is_some())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Compares the plugin directories with what is loaded, loads new and changed files that are
    /// stable, unloads deleted ones, and settles job-type ownership.
    pub async fn scan(&self) {
        let _scanning = self.scanning.lock().await;
        let Some((listing, unreadable)) = self.list_files().await else {
            return;
        };

        let to_load = self.plan_scan(&listing, &unreadable);
        for (path, fingerprint) in to_load {
            let outcome = self.load_file(&path, fingerprint).await;
            let mut inner = self.lock();
            let entry = inner
                .files
                .entry(path.clone())
                .or_insert_with(|| FileEntry::settling(outcome.fingerprint().clone()));
            outcome.apply(&path, entry);
        }

        self.settle_ownership();
    }

    /// Drops the entries of deleted files (except those in `unreadable` directories), records new
    /// fingerprints, and returns the files that are ready to load.
    fn plan_scan(
        &self,
        listing: &[(PathBuf, Fingerprint)],
        unreadable: &[PathBuf],
    ) -> Vec<(PathBuf, Fingerprint)> {
        let mut inner = self.lock();
        let listed: BTreeSet<&PathBuf> = listing.iter().map(|(path, _)| path).collect();
        let in_unreadable_dir = |path: &PathBuf| {
            path.parent()
                .is_some_and(|dir| unreadable.iter().any(|u| u == dir))
        };
        let removed: Vec<PathBuf> = inner
            .files
            .keys()
            .filter(|path| !listed.contains(path) && !in_unreadable_dir(path))
            .cloned()
            .collect();
        for path in removed {
            let entry = inner.files.remove(&path);
            if let Some(plugin) = entry.as_ref().and_then(|entry| entry.plugin.as_ref()) {
                tracing::info!(file = %path.display(), plugin = %plugin.name, version = %plugin.version, "plugin file removed; plugin unloaded");
            }
        }

        let mut to_load = Vec::new();
        for (path, fingerprint) in listing {
            // A file that has not changed for the settle period already (one that was there
            // before the worker started, or was copied with its old modification time) loads at
            // once.
            let stable_on_disk = is_older_than(fingerprint.newest_change(), self.settings.settle);
            let ready = match inner.files.get_mut(path) {
                None => {
                    if !stable_on_disk {
                        inner
                            .files
                            .insert(path.clone(), FileEntry::settling(fingerprint.clone()));
                    }
                    stable_on_disk
                }
                Some(entry) if entry.fingerprint != *fingerprint => {
                    entry.fingerprint = fingerprint.clone();
                    entry.settling_since = Some(Instant::now());
                    stable_on_disk
                }
                Some(entry) => entry
                    .settling_since
                    .is_some_and(|since| since.elapsed() >= self.settings.settle),
            };
            if ready {
                to_load.push((path.clone(), fingerprint.clone()));
            }
        }
        to_load
    }

    /// Lists plugin files with their fingerprints, in directory order and then name order, plus
    /// the directories that exist but could not be read. Returns `None` when the listing itself
    /// failed, so the scan changes nothing.
    async fn list_files(&self) -> Option<(Vec<(PathBuf, Fingerprint)>, Vec<PathBuf>)> {
        let dirs = self.settings.plugin_dirs.clone();
        let listed = tokio::task::spawn_blocking(move || {
            dirs.iter()
                .map(|dir| (dir.clone(), list_dir(dir)))
                .collect::<Vec<_>>()
        })
        .await;
        let listed = match listed {
            Ok(listed) => listed,
            Err(error) => {
                tracing::error!(%error, "listing the plugin directories failed; skipping this scan");
                return None;
            }
        };

        let mut inner = self.lock();
        let mut files = Vec::new();
        let mut unreadable = Vec::new();
        for (dir, result) in listed {
            match result {
                Ok(mut entries) => {
                    if inner.missing_dirs.remove(&dir) {
                        tracing::info!(dir = %dir.display(), "plugin directory is readable again");
                    }
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                    files.extend(entries);
                }
                Err(error) => {
                    // A directory that is gone unloads its plugins like deleted files. One that
                    // exists but cannot be read keeps them until it can be read again.
                    let dir_missing = error.kind() == std::io::ErrorKind::NotFound;
                    if !dir_missing {
                        unreadable.push(dir.clone());
                    }
                    if inner.missing_dirs.insert(dir.clone()) {
                        let effect = if dir_missing {
                            "its plugins are unloaded until it exists again"
                        } else {
                            "keeping the plugins already loaded from it"
                        };
                        tracing::warn!(dir = %dir.display(), %error, "cannot read plugin directory; {effect}");
                    }
                }
            }
        }
        Some((shadow_by_name(files), unreadable))
    }

    /// Reads and loads one stable file.
    async fn load_file(&self, path: &Path, fingerprint: Fingerprint) -> LoadOutcome {
        let read_path = path.to_path_buf();
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(&read_path))
            .await
            .unwrap_or_else(|error| Err(std::io::Error::other(error)));
        let result = match bytes {
            Ok(bytes) => self.runtime.load_plugin(path, bytes).await,
            Err(error) => Err(LoadError::Read(error)),
        };

        // A file that changed while it was read or compiled is still being written: wait for it
        // to settle rather than report what was read.
        let current = fingerprint_of(path);
        if current.as_ref() != Some(&fingerprint) {
            tracing::debug!(file = %path.display(), "plugin file changed while loading; waiting for it to settle");
            return LoadOutcome::Changed(current.unwrap_or(fingerprint));
        }

        match result {
            Ok(plugin) => LoadOutcome::Loaded(fingerprint, Arc::new(plugin)),
            Err(error) => LoadOutcome::Failed(fingerprint, error),
        }
    }

    /// Gives each job type to one plugin. Plugins that owned their types before keep them, then
    /// the others claim theirs in file order, and a plugin with a type already taken is rejected.
    /// Publishes a change when the claimable types or their plugins changed.
    fn settle_ownership(&self) {
        let mut inner = self.lock();
        let previous: BTreeMap<String, Arc<LoadedPlugin>> = std::mem::take(&mut inner.by_type);
        let incumbent = |path: &PathBuf, plugin: &Arc<LoadedPlugin>| {
            plugin.job_types.iter().any(|job_type| {
                previous
                    .get(job_type)
                    .is_some_and(|owner| owner.file == *path)
            })
        };

        let mut order: Vec<(bool, PathBuf)> = inner
            .files
            .iter()
            .filter_map(|(path, entry)| {
                let plugin = entry.plugin.as_ref()?;
                Some((!incumbent(path, plugin), path.clone()))
            })
            .collect();
        order.sort();

        let mut by_type: BTreeMap<String, Arc<LoadedPlugin>> = BTreeMap::new();
        for (_, path) in order {
            let Some(FileEntry {
                plugin: Some(plugin),
                conflict,
                ..
            }) = inner.files.get_mut(&path)
            else {
                continue;
            };
            let claimed_type = plugin
                .job_types
                .iter()
                .find_map(|job_type| by_type.get(job_type).map(|owner| (job_type, owner)));
            match claimed_type {
                Some((job_type, owner)) => {
                    let message = format!(
                        "job type {job_type} is already handled by plugin {} loaded from {}; remove one of the two plugins or change its job types",
                        owner.name,
                        owner.file.display()
                    );
                    if conflict
                        .as_ref()
                        .is_none_or(|record| record.message != message)
                    {
                        tracing::error!(file = %path.display(), plugin = %plugin.name, error = %message, "plugin rejected; the worker runs without it");
                        *conflict = Some(LoadErrorRecord {
                            file: path.display().to_string(),
                            message,
                            at: Utc::now(),
                        });
                    }
                }
                None => {
                    *conflict = None;
                    for job_type in &plugin.job_types {
                        by_type.insert(job_type.clone(), Arc::clone(plugin));
                    }
                }
            }
        }

        let changed = previous.len() != by_type.len()
            || previous
                .iter()
                .zip(&by_type)
                .any(|((a_type, a), (b_type, b))| a_type != b_type || !Arc::ptr_eq(a, b));
        if changed {
            log_changes(&previous, &by_type);
        }
        inner.by_type = by_type;
        drop(inner);
        if changed {
            self.changes.send_modify(|generation| *generation += 1);
        }
    }
}

/// The result of loading one file.
enum LoadOutcome {
    Loaded(Fingerprint, Arc<LoadedPlugin>),
    Failed(Fingerprint, LoadError),
    /// The file changed while it was loaded; it settles again.
    Changed(Fingerprint),
}

impl LoadOutcome {
    fn fingerprint(&self) -> &Fingerprint {
        match self {
            LoadOutcome::Loaded(fingerprint, _)
            | LoadOutcome::Failed(fingerprint, _)
            | LoadOutcome::Changed(fingerprint) => fingerprint,
        }
    }

    /// Records the outcome in the entry of the file at `path`, and logs a load error.
    fn apply(self, path: &Path, entry: &mut FileEntry) {
        match self {
            LoadOutcome::Loaded(fingerprint, plugin) => {
                entry.fingerprint = fingerprint;
                entry.settling_since = None;
                entry.plugin = Some(plugin);
                entry.error = None;
            }
            LoadOutcome::Failed(fingerprint, error) => {
                entry.fingerprint = fingerprint;
                entry.settling_since = None;
                entry.error = Some(failed_load(path, &error, entry));
            }
            LoadOutcome::Changed(fingerprint) => {
                entry.fingerprint = fingerprint;
                entry.settling_since = Some(Instant::now());
            }
        }
    }
}

/// Builds the load error record of the file at `path` and logs it. A version of the file that
/// loaded before and owns its job types stays in `entry` and keeps running new attempts. A
/// version rejected for a job-type conflict is dropped, so that it cannot take its job types
/// later on behalf of a file that no longer contains it.
fn failed_load(path: &Path, error: &LoadError, entry: &mut FileEntry) -> LoadErrorRecord {
    let file = path.display().to_string();
    if entry.conflict.is_some() {
        entry.plugin = None;
        entry.conflict = None;
    }

    let message = match &entry.plugin {
        Some(previous) => {
            tracing::error!(file, %error, plugin = %previous.name, previous_version = %previous.version, previous_sha256 = %previous.sha256, "plugin failed to load; the previously loaded version keeps handling its job types");
            format!(
                "{error} (version {} of plugin {}, loaded from this file before, keeps handling its job types until the file loads)",
                previous.version, previous.name
            )
        }
        None => {
            tracing::error!(file, %error, "plugin failed to load; the worker runs without it");
            error.to_string()
        }
    };
    LoadErrorRecord {
        file,
        message,
        at: Utc::now(),
    }
}

fn log_changes(
    previous: &BTreeMap<String, Arc<LoadedPlugin>>,
    current: &BTreeMap<String, Arc<LoadedPlugin>>,
) {
    let mut reported = BTreeSet::new();
    for plugin in current.values() {
        let was = plugin
            .job_types
            .iter()
            .find_map(|job_type| previous.get(job_type));
        if was.is_some_and(|old| Arc::ptr_eq(old, plugin)) || !reported.insert(Arc::as_ptr(plugin))
        {
            continue;
        }
        match was {
            Some(old) => tracing::info!(
                plugin = %plugin.name,
                version = %plugin.version,
                previous_version = %old.version,
                file = %plugin.file.display(),
                job_types = ?plugin.job_types,
                sha256 = %plugin.sha256,
                "plugin replaced; new attempts use the new version"
            ),
            None => tracing::info!(
                plugin = %plugin.name,
                version = %plugin.version,
                file = %plugin.file.display(),
                job_types = ?plugin.job_types,
                sha256 = %plugin.sha256,
                cache = ?plugin.cache,
                "plugin loaded"
            ),
        }
    }
    for (job_type, old) in previous {
        if !current.contains_key(job_type) {
            tracing::info!(plugin = %old.name, job_type, "job type no longer handled; it is not claimed until a plugin for it loads");
        }
    }
}

/// Drops each file that a file of the same name in a later plugin directory replaces, so that a
/// user directory listed after the bundled one overrides a bundled plugin instead of conflicting
/// with it over its job types. `files` is in directory order.
fn shadow_by_name(files: Vec<(PathBuf, Fingerprint)>) -> Vec<(PathBuf, Fingerprint)> {
    let mut seen = BTreeSet::new();
    let mut visible: Vec<_> = files
        .into_iter()
        .rev()
        .filter(|(path, _)| seen.insert(path.file_name().map(|name| name.to_os_string())))
        .collect();
    visible.reverse();
    visible
}

/// Returns the plugin files of `dir` with their fingerprints.
fn list_dir(dir: &Path) -> std::io::Result<Vec<(PathBuf, Fingerprint)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        if name.starts_with('.') || !name.ends_with(".wasm") {
            continue;
        }
        if let Some(fingerprint) = fingerprint_of(&path) {
            files.push((path, fingerprint));
        }
    }
    Ok(files)
}

/// Reads a plugin file's fingerprint; `None` when it is gone or not a regular file.
fn fingerprint_of(path: &Path) -> Option<Fingerprint> {
    let stamp = |path: &Path| -> Option<(u64, SystemTime)> {
        let metadata = std::fs::metadata(path).ok()?;
        metadata.is_file().then(|| {
            (
                metadata.len(),
                metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            )
        })
    };
    Some(Fingerprint {
        wasm: stamp(path)?,
        manifest: stamp(&path.with_extension("toml")),
    })
}

/// Returns whether `time` lies at least `age` in the past; a time in the future does not.
fn is_older_than(time: SystemTime, age: Duration) -> bool {
    SystemTime::now()
        .duration_since(time)
        .is_ok_and(|elapsed| elapsed >= age)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> (PathBuf, Fingerprint) {
        let fingerprint = Fingerprint {
            wasm: (1, SystemTime::UNIX_EPOCH),
            manifest: None,
        };
        (PathBuf::from(path), fingerprint)
    }

    #[test]
    fn later_directory_overrides_same_name() {
        let files = vec![
            file("/bundled/debate.wasm"),
            file("/bundled/workflow.wasm"),
            file("/user/debate.wasm"),
            file("/user/mine.wasm"),
        ];
        let kept: Vec<PathBuf> = shadow_by_name(files)
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        assert_eq!(
            kept,
            vec![
                PathBuf::from("/bundled/workflow.wasm"),
                PathBuf::from("/user/debate.wasm"),
                PathBuf::from("/user/mine.wasm"),
            ]
        );
    }
}
