//! Loading one plugin file: manifest, compile (through the artifact cache), link against the
//! `job-plugin` world, and `describe`.

use super::Runtime;
use super::bindings::JobPluginPre;
use super::cache::CacheOutcome;
use super::imports::HostState;
use super::manifest::Manifest;
use super::output::OutputLabels;
use super::sandbox::{CallEnd, StoreData, new_store, race};
use crate::job::validate_job_type;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A plugin ready to run: its description, manifest, and pre-linked component. Attempts hold an
/// `Arc` to it, so a replaced plugin stays alive until its last attempt ends.
pub struct LoadedPlugin {
    pub name: String,
    pub version: String,
    pub description: String,
    pub job_types: Vec<String>,
    /// The `.wasm` file it was loaded from.
    pub file: PathBuf,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
    pub loaded_at: DateTime<Utc>,
    pub manifest: Manifest,
    /// Whether the compiled code came from the artifact cache.
    pub cache: CacheOutcome,
    pub(super) config: Arc<BTreeMap<String, String>>,
    pub(super) pre: JobPluginPre<StoreData>,
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("job_types", &self.job_types)
            .field("file", &self.file)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// A reason a plugin file did not load. The registry reports it with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the plugin file: {0}")]
    Read(std::io::Error),

    #[error("invalid manifest: {0}")]
    Manifest(String),

    /// The bytes are not a valid WebAssembly component. While the file is still being written
    /// this is expected and the registry waits instead of reporting it.
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),

    #[error(
        "the component does not fit the job-plugin world of wit/plugin.wit (build it against that world): {0}"
    )]
    World(String),

    #[error("describe failed: {0}")]
    Describe(String),

    #[error("describe returned an invalid plugin description: {0}")]
    Info(String),
}

impl Runtime {
    /// Loads the plugin in `bytes`, read from `file`, with the manifest beside it.
    pub async fn load_plugin(
        &self,
        file: &Path,
        bytes: Vec<u8>,
    ) -> Result<LoadedPlugin, LoadError> {
        let manifest = Manifest::load(&file.with_extension("toml")).map_err(LoadError::Manifest)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));

        let (engine, cache) = (self.engine.clone(), self.cache.clone());
        let digest = sha256.clone();
        let (component, cache_outcome) =
            tokio::task::spawn_blocking(move || cache.load(&engine, &bytes, &digest))
                .await
                .map_err(|error| LoadError::Compile(format!("compile did not finish: {error}")))?
                .map_err(|error| LoadError::Compile(format!("{error:#}")))?;

        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(JobPluginPre::new)
            .map_err(|error| LoadError::World(format!("{error:#}")))?;

        let stem = file
            .file_stem()
            .map_or_else(String::new, |stem| stem.to_string_lossy().into_owned());
        let config = Arc::new(manifest.config.clone());
        let info = self.describe(&pre, &stem, &manifest, &config).await?;
        validate_info(&info)?;
        for job_type in manifest.job_type_timeouts.keys() {
            if !info.job_types.contains(job_type) {
                tracing::warn!(file = %file.display(), job_type, "the manifest sets a deadline for a job type the plugin does not declare; it has no effect");
            }
        }

        Ok(LoadedPlugin {
            name: info.name,
            version: info.version,
            description: info.description,
            job_types: info.job_types,
            file: file.to_path_buf(),
            sha256,
            loaded_at: Utc::now(),
            manifest,
            cache: cache_outcome,
            config,
            pre,
        })
    }

    /// Calls `describe` in a fresh store with the plugin's memory cap and the describe deadline.
    async fn describe(
        &self,
        pre: &JobPluginPre<StoreData>,
        stem: &str,
        manifest: &Manifest,
        config: &Arc<BTreeMap<String, String>>,
    ) -> Result<super::bindings::PluginInfo, LoadError> {
        let never = CancellationToken::new();
        let host = HostState::new(
            stem,
            Arc::clone(config),
            manifest.allow_llm,
            Arc::clone(&self.services),
            None,
            never.clone(),
        );
        let labels = OutputLabels {
            plugin: stem.to_string(),
            ..OutputLabels::default()
        };
        let memory_limit = self.memory_limit(manifest);
        let mut store = new_store(&self.engine, host, memory_limit, labels);
        let deadline = self.settings.describe_timeout;

        let end = {
            let store = &mut store;
            let call = async move {
                let instance = pre.instantiate_async(&mut *store).await?;
                instance.call_describe(&mut *store).await
            };
            race(call, deadline, &never).await
        };
        store.data().stdout.finish();
        store.data().stderr.finish();

        match end {
            CallEnd::Returned(info) => Ok(info),
            CallEnd::Failed(error) => {
                let data = store.data();
                let failure =
                    super::failure::classify_trap(&error, &data.limiter, &data.stderr.tail(), stem);
                Err(LoadError::Describe(format!(
                    "{} ({})",
                    failure.message, failure.code
                )))
            }
            CallEnd::DeadlineExceeded => Err(LoadError::Describe(format!(
                "it did not return within {}",
                super::failure::format_duration(deadline)
            ))),
            CallEnd::Interrupted => Err(LoadError::Describe("it was interrupted".to_string())),
        }
    }

    pub(super) fn memory_limit(&self, manifest: &Manifest) -> usize {
        manifest
            .memory_limit_bytes
            .unwrap_or(self.settings.default_memory_limit_bytes)
    }
}

/// Checks what `describe` returned: a name of 1 to 64 characters of `[A-Za-z0-9_.-]`, a version
/// of 1 to 64 printable characters, and at least one valid job type, none twice.
fn validate_info(info: &super::bindings::PluginInfo) -> Result<(), LoadError> {
    let name_ok = !info.name.is_empty()
        && info.name.len() <= 64
        && info
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !name_ok {
        return Err(LoadError::Info(format!(
            "name {:?} must be 1 to 64 characters of letters, digits, '_', '.' and '-'",
            info.name
        )));
    }
    let version_ok = !info.version.is_empty()
        && info.version.len() <= 64
        && info.version.chars().all(|c| c.is_ascii_graphic());
    if !version_ok {
        return Err(LoadError::Info(format!(
            "version {:?} must be 1 to 64 printable characters without spaces",
            info.version
        )));
    }
    if info.job_types.is_empty() {
        return Err(LoadError::Info(
            "it declares no job types; a plugin must handle at least one".to_string(),
        ));
    }
    for (index, job_type) in info.job_types.iter().enumerate() {
        validate_job_type(job_type).map_err(LoadError::Info)?;
        if info.job_types[..index].contains(job_type) {
            return Err(LoadError::Info(format!(
                "job type {job_type:?} is declared twice"
            )));
        }
    }
    Ok(())
}
