//! The optional `<name>.toml` manifest beside a plugin's `<name>.wasm`:
//!
//! ```toml
//! timeout_secs = 1800        # wall-clock deadline per attempt
//! memory_mib = 256           # cap across all linear memories of one instance
//! allow_llm = true           # whether the llm chat import works for this plugin
//! [config]                   # values returned by the config import
//! some_key = "value"
//! [job_types.RUN_DEBATE]
//! timeout_secs = 3600        # deadline for this job type only
//! ```
//!
//! Unknown keys are rejected, so a misspelt limit fails the load instead of being ignored.
//!
//! A manifest is at most [`MAX_MANIFEST_BYTES`] long, with at most [`MAX_CONFIG_ENTRIES`]
//! `[config]` entries of at most [`MAX_CONFIG_VALUE_BYTES`] each, so that a stray large file
//! beside a plugin fails its load instead of filling the worker's memory.

use super::limits::{DEFAULT_MEMORY_MIB, MAX_MEMORY_MIB};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// Maximum deadline a manifest may set: one week, in seconds.
pub const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

/// Maximum size of a manifest file in bytes (64 KiB). A larger file is rejected before it is
/// read.
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024;

/// Maximum number of `[config]` entries in one manifest.
pub const MAX_CONFIG_ENTRIES: usize = 256;

/// Maximum length of one `[config]` value in bytes, after conversion to text (16 KiB).
pub const MAX_CONFIG_VALUE_BYTES: usize = 16 * 1024;

/// A parsed and checked manifest. `Default` is what a plugin without a manifest gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Deadline of every attempt, unless its job type sets its own; `None` uses the worker's
    /// default.
    pub timeout: Option<Duration>,
    /// Per-job-type deadlines.
    pub job_type_timeouts: BTreeMap<String, Duration>,
    /// Memory cap in bytes; `None` uses the worker's default.
    pub memory_limit_bytes: Option<usize>,
    pub allow_llm: bool,
    /// Values of the `config` import, all as strings.
    pub config: BTreeMap<String, String>,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            timeout: None,
            job_type_timeouts: BTreeMap::new(),
            memory_limit_bytes: None,
            allow_llm: true,
            config: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    timeout_secs: Option<u64>,
    memory_mib: Option<u64>,
    allow_llm: Option<bool>,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    #[serde(default)]
    job_types: BTreeMap<String, RawJobType>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJobType {
    timeout_secs: Option<u64>,
}

impl Manifest {
    /// Reads the manifest at `path`; a missing file gives the defaults.
    ///
    /// # Errors
    /// Fails, naming `path`, when the file cannot be read, is larger than
    /// [`MAX_MANIFEST_BYTES`], or does not pass [`Manifest::parse`].
    pub fn load(path: &Path) -> Result<Self, String> {
        match read_capped(path) {
            Ok(text) => Self::parse(&text).map_err(|error| format!("{}: {error}", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(error) if error.kind() == std::io::ErrorKind::FileTooLarge => {
                Err(format!("{}: {error}", path.display()))
            }
            Err(error) => Err(format!("cannot read {}: {error}", path.display())),
        }
    }

    /// Parses and checks manifest text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawManifest =
            toml::from_str(text).map_err(|error| format!("invalid manifest: {error}"))?;

        let timeout = raw
            .timeout_secs
            .map(|secs| checked_timeout("timeout_secs", secs))
            .transpose()?;
        let mut job_type_timeouts = BTreeMap::new();
        for (job_type, settings) in raw.job_types {
            crate::job::validate_job_type(&job_type)
                .map_err(|error| format!("[job_types.{job_type}]: {error}"))?;
            if let Some(secs) = settings.timeout_secs {
                let key = format!("job_types.{job_type}.timeout_secs");
                job_type_timeouts.insert(job_type, checked_timeout(&key, secs)?);
            }
        }

        let memory_limit_bytes = match raw.memory_mib {
            None => None,
            Some(mib) if (1..=MAX_MEMORY_MIB).contains(&mib) => Some(mib_to_bytes(mib)),
            Some(mib) => {
                return Err(format!(
                    "memory_mib = {mib} is out of range: use 1 to {MAX_MEMORY_MIB} (default {DEFAULT_MEMORY_MIB})"
                ));
            }
        };

        if raw.config.len() > MAX_CONFIG_ENTRIES {
            return Err(format!(
                "[config] has {} entries, more than the limit of {MAX_CONFIG_ENTRIES}: keep fewer settings in the manifest",
                raw.config.len()
            ));
        }
        let mut config = BTreeMap::new();
        for (key, value) in raw.config {
            let text = match value {
                toml::Value::String(text) => text,
                toml::Value::Integer(number) => number.to_string(),
                toml::Value::Float(number) => number.to_string(),
                toml::Value::Boolean(flag) => flag.to_string(),
                toml::Value::Datetime(datetime) => datetime.to_string(),
                toml::Value::Array(_) | toml::Value::Table(_) => {
                    return Err(format!(
                        "config key {key:?} has an array or table value: config values must be strings, numbers or booleans"
                    ));
                }
            };
            if text.len() > MAX_CONFIG_VALUE_BYTES {
                return Err(format!(
                    "config key {key:?} has a value of {} bytes, more than the limit of {MAX_CONFIG_VALUE_BYTES} bytes: shorten it",
                    text.len()
                ));
            }
            config.insert(key, text);
        }

        Ok(Manifest {
            timeout,
            job_type_timeouts,
            memory_limit_bytes,
            allow_llm: raw.allow_llm.unwrap_or(true),
            config,
        })
    }

    /// Deadline of an attempt of `job_type`: the job type's own, else the manifest's, else
    /// `default`.
    pub fn timeout_for(&self, job_type: &str, default: Duration) -> Duration {
        self.job_type_timeouts
            .get(job_type)
            .copied()
            .or(self.timeout)
            .unwrap_or(default)
    }
}

/// Reads the text of the file at `path`, rejecting a file larger than [`MAX_MANIFEST_BYTES`]
/// before reading it whole. The read stops one byte past the limit, so a file that grows after
/// its size was checked is rejected too.
fn read_capped(path: &Path) -> std::io::Result<String> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size > MAX_MANIFEST_BYTES {
        return Err(too_large(&format!("{size} bytes")));
    }

    let mut text = String::new();
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_string(&mut text)?;
    let read = u64::try_from(text.len()).unwrap_or(u64::MAX);
    if read > MAX_MANIFEST_BYTES {
        return Err(too_large(&format!("at least {read} bytes")));
    }
    Ok(text)
}

fn too_large(size: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::FileTooLarge,
        format!(
            "the manifest is {size}, more than the limit of {MAX_MANIFEST_BYTES} bytes: move large values out of it"
        ),
    )
}

/// Converts MiB to bytes.
pub fn mib_to_bytes(mib: u64) -> usize {
    usize::try_from(mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
}

fn checked_timeout(key: &str, secs: u64) -> Result<Duration, String> {
    if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
        return Err(format!(
            "{key} = {secs} is out of range: use 1 to {MAX_TIMEOUT_SECS} seconds"
        ));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_manifest_parses() {
        let manifest = Manifest::parse(
            r#"
            timeout_secs = 1800
            memory_mib = 64
            allow_llm = false
            [config]
            version = "2.0.0"
            succeed_on_attempt = 3
            [job_types.RUN_DEBATE]
            timeout_secs = 3600
            "#,
        )
        .expect("parse");
        assert_eq!(manifest.memory_limit_bytes, Some(64 << 20));
        assert!(!manifest.allow_llm);
        assert_eq!(manifest.config["version"], "2.0.0");
        assert_eq!(manifest.config["succeed_on_attempt"], "3");
        let default = Duration::from_secs(900);
        assert_eq!(
            manifest.timeout_for("RUN_DEBATE", default),
            Duration::from_secs(3600)
        );
        assert_eq!(
            manifest.timeout_for("OTHER", default),
            Duration::from_secs(1800)
        );
        assert_eq!(Manifest::default().timeout_for("OTHER", default), default);
    }

    #[test]
    fn empty_manifest_is_the_default() {
        assert_eq!(Manifest::parse("").expect("parse"), Manifest::default());
    }

    #[test]
    fn invalid_manifests_are_rejected_with_the_key() {
        let cases = [
            ("timeout_sec = 10", "timeout_sec"),
            ("timeout_secs = 0", "timeout_secs = 0"),
            ("memory_mib = 5000", "memory_mib = 5000"),
            ("[config]\nlist = [1]", "\"list\""),
            ("[job_types.RUN_DEBATE]\ntimeout = 5", "timeout"),
            ("[job_types.\"bad/type\"]\ntimeout_secs = 5", "bad/type"),
            ("allow_llm = \"yes\"", "allow_llm"),
        ];
        for (text, expected) in cases {
            let error = Manifest::parse(text).expect_err(text);
            assert!(error.contains(expected), "{text:?} gave {error:?}");
        }
    }

    /// Returns manifest text of exactly `len` bytes: one setting, padded with a comment.
    fn manifest_of_len(len: usize) -> String {
        let mut text = "allow_llm = false\n#".to_string();
        text.push_str(&"x".repeat(len - text.len() - 1));
        text.push('\n');
        assert_eq!(text.len(), len);
        text
    }

    fn config_with_entries(count: usize) -> String {
        let mut text = "[config]\n".to_string();
        for index in 0..count {
            text.push_str(&format!("key_{index} = {index}\n"));
        }
        text
    }

    #[test]
    fn manifest_at_size_limit_loads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("plugin.toml");
        let limit = usize::try_from(MAX_MANIFEST_BYTES).expect("limit fits usize");
        std::fs::write(&path, manifest_of_len(limit)).expect("write manifest");

        let manifest = Manifest::load(&path).expect("a manifest at the limit loads");
        assert!(!manifest.allow_llm);
    }

    #[test]
    fn manifest_over_size_limit_is_rejected() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("plugin.toml");
        let limit = usize::try_from(MAX_MANIFEST_BYTES).expect("limit fits usize");
        std::fs::write(&path, manifest_of_len(limit + 1)).expect("write manifest");

        let error = Manifest::load(&path).expect_err("a manifest over the limit");
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains(&format!("{} bytes", limit + 1)), "{error}");
        assert!(
            error.contains(&format!("limit of {limit} bytes")),
            "{error}"
        );
    }

    #[test]
    fn huge_sparse_manifest_is_rejected() {
        // A sparse file: its size is large, but creating it writes no data.
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("plugin.toml");
        let file = std::fs::File::create(&path).expect("create manifest");
        file.set_len(64 << 20).expect("extend manifest");

        let error = Manifest::load(&path).expect_err("a 64 MiB manifest");
        assert!(error.contains(&format!("{} bytes", 64 << 20)), "{error}");
        assert!(
            error.contains(&format!("limit of {MAX_MANIFEST_BYTES} bytes")),
            "{error}"
        );
    }

    #[test]
    fn config_at_entry_limit_parses() {
        let manifest = Manifest::parse(&config_with_entries(MAX_CONFIG_ENTRIES)).expect("parse");
        assert_eq!(manifest.config.len(), MAX_CONFIG_ENTRIES);
    }

    #[test]
    fn config_over_entry_limit_is_rejected() {
        let text = config_with_entries(MAX_CONFIG_ENTRIES + 1);
        let error = Manifest::parse(&text).expect_err("too many config entries");
        assert!(
            error.contains(&format!("{} entries", MAX_CONFIG_ENTRIES + 1)),
            "{error}"
        );
        assert!(
            error.contains(&format!("limit of {MAX_CONFIG_ENTRIES}")),
            "{error}"
        );
    }

    #[test]
    fn config_value_at_length_limit_parses() {
        let value = "v".repeat(MAX_CONFIG_VALUE_BYTES);
        let manifest = Manifest::parse(&format!("[config]\nlong = \"{value}\"\n")).expect("parse");
        assert_eq!(manifest.config["long"].len(), MAX_CONFIG_VALUE_BYTES);
    }

    #[test]
    fn config_value_over_length_limit_is_rejected() {
        let value = "v".repeat(MAX_CONFIG_VALUE_BYTES + 1);
        let error = Manifest::parse(&format!("[config]\nlong = \"{value}\"\n"))
            .expect_err("a config value over the limit");
        assert!(error.contains("\"long\""), "{error}");
        assert!(
            error.contains(&format!("{} bytes", MAX_CONFIG_VALUE_BYTES + 1)),
            "{error}"
        );
        assert!(
            error.contains(&format!("limit of {MAX_CONFIG_VALUE_BYTES} bytes")),
            "{error}"
        );
    }
}
