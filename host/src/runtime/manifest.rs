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

use super::limits::{DEFAULT_MEMORY_MIB, MAX_MEMORY_MIB};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Maximum deadline a manifest may set: one week, in seconds.
pub const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

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
    pub fn load(path: &Path) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|error| format!("{}: {error}", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
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
}
