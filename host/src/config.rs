//! Command line and configuration. Every setting is both a flag and an environment variable
//! (the flag wins), with the default and unit in `jobhost <command> --help`.
//!
//! A value that does not parse stops start-up with exit code 2 and a message that names the
//! variable, the value and what is allowed. An empty environment variable counts as unset for the
//! optional settings (`API_TOKEN`, `LLM_BASE_URL`, `LLM_API_KEY`, `LLM_MODEL`, `WORKER_ID`), so a
//! compose file can pass `${LLM_BASE_URL:-}` through.

use crate::telemetry::LogFormat;
use clap::{Args, Parser, Subcommand};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// jobhost: a durable job queue whose job handlers are sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "jobhost", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API. Jobs are only enqueued here; `jobhost worker` runs them.
    Serve(ServeArgs),
    /// Claim jobs from the queue and run each attempt in its plugin.
    Worker(WorkerArgs),
    /// Serve the HTTP API and run a worker in one process.
    Up(UpArgs),
    /// Inspect and change the queue from the command line, printing JSON.
    Queue(QueueArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub worker: WorkerOptions,
    #[command(flatten)]
    pub llm: LlmArgs,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub worker: WorkerOptions,
    #[command(flatten)]
    pub llm: LlmArgs,
}

#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: crate::cli::queue::QueueCommand,
}

/// Settings every command reads.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Directory of the queue, events, artifacts, job state, debates and worker records; created
    /// when missing. Share it between the API and worker processes.
    #[arg(
        long,
        global = true,
        env = "DATA_DIR",
        value_name = "DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,

    /// Log line format on stderr.
    #[arg(
        long,
        global = true,
        env = "LOG_FORMAT",
        value_name = "LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Log filter directives, such as `info` or `info,jobhost=debug`.
    #[arg(
        long,
        global = true,
        env = "RUST_LOG",
        value_name = "RUST_LOG",
        default_value = "info",
        value_parser = parse_log_filter
    )]
    pub log_filter: String,
}

/// HTTP API settings.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Address and port the API listens on, as IP:PORT (port 0 picks a free port).
    #[arg(
        long,
        env = "LISTEN_ADDR",
        value_name = "LISTEN_ADDR",
        default_value = "127.0.0.1:3000",
        value_parser = parse_listen_addr
    )]
    pub listen_addr: SocketAddr,

    /// Bearer token required on every POST route. Unset or empty leaves the API open.
    #[arg(
        long,
        env = "API_TOKEN",
        value_name = "API_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<Secret>,

    /// Largest accepted request body, in bytes (1024 to 67108864).
    #[arg(
        long,
        env = "MAX_BODY_BYTES",
        value_name = "MAX_BODY_BYTES",
        default_value = "1048576",
        value_parser = whole_number::<usize>(1024, 64 * 1024 * 1024)
    )]
    pub max_body_bytes: usize,
}

/// Worker settings.
#[derive(Debug, Clone, Args)]
pub struct WorkerOptions {
    /// Directories to load plugins (`<name>.wasm` plus optional `<name>.toml`) from, separated by
    /// ':'. A file in a later directory replaces one of the same name in an earlier one, and a job
    /// type may be handled by one plugin only across all of them.
    #[arg(
        long,
        env = "PLUGINS_DIR",
        value_name = "PLUGINS_DIR",
        default_value = "./plugins",
        value_parser = parse_plugin_dirs
    )]
    pub plugins_dir: PluginDirs,

    /// Worker id in leases, events and the worker record: 1 to 128 characters of letters,
    /// digits, '_', '.', ':' and '-' [default: <host name>-<process id>].
    #[arg(long, env = "WORKER_ID", value_name = "WORKER_ID", value_parser = parse_worker_id)]
    pub worker_id: Option<String>,

    /// Jobs run at the same time by this worker (1 to 1024).
    #[arg(
        long,
        env = "WORKER_CONCURRENCY",
        value_name = "WORKER_CONCURRENCY",
        default_value = "16",
        value_parser = whole_number::<usize>(1, 1024)
    )]
    pub concurrency: usize,

    /// Maximum wait between checks for due jobs, in milliseconds (10 to 60000). A new job usually
    /// wakes the worker sooner.
    #[arg(
        long,
        env = "WORKER_POLL_MS",
        value_name = "WORKER_POLL_MS",
        default_value = "1000",
        value_parser = whole_number::<u64>(10, 60_000)
    )]
    pub poll_ms: u64,

    /// Lease a claim grants, in seconds (1 to 3600). A job whose worker stops heartbeating is
    /// claimable again after it.
    #[arg(
        long,
        env = "WORKER_LEASE_SECS",
        value_name = "WORKER_LEASE_SECS",
        default_value = "30",
        value_parser = whole_number::<u64>(1, 3600)
    )]
    pub lease_secs: u64,

    /// Time running jobs get to finish after SIGTERM or SIGINT before they are handed back to
    /// the queue, in seconds (0 to 3600).
    #[arg(
        long,
        env = "WORKER_SHUTDOWN_GRACE_SECS",
        value_name = "WORKER_SHUTDOWN_GRACE_SECS",
        default_value = "30",
        value_parser = whole_number::<u64>(0, 3600)
    )]
    pub shutdown_grace_secs: u64,
}

/// Language-model settings for plugins that call the `llm` import.
#[derive(Debug, Clone, Args)]
pub struct LlmArgs {
    /// Base URL of an OpenAI-compatible API, such as http://127.0.0.1:8080/v1; unset or empty
    /// uses the built-in offline model, which needs no network.
    #[arg(
        long,
        env = "LLM_BASE_URL",
        value_name = "LLM_BASE_URL",
        value_parser = parse_llm_base_url
    )]
    pub llm_base_url: Option<String>,

    /// API key sent as a bearer token to LLM_BASE_URL.
    #[arg(
        long,
        env = "LLM_API_KEY",
        value_name = "LLM_API_KEY",
        hide_env_values = true
    )]
    pub llm_api_key: Option<Secret>,

    /// Model used when a job names none. With LLM_BASE_URL set, jobs that name no model fail
    /// without it. The offline model ignores it.
    #[arg(long, env = "LLM_MODEL", value_name = "LLM_MODEL")]
    pub llm_model: Option<String>,

    /// Timeout of one model request, in seconds (1 to 3600).
    #[arg(
        long,
        env = "LLM_TIMEOUT_SECS",
        value_name = "LLM_TIMEOUT_SECS",
        default_value = "120",
        value_parser = whole_number::<u64>(1, 3600)
    )]
    pub llm_timeout_secs: u64,
}

impl WorkerOptions {
    /// Returns the configured worker id, or `<host name>-<process id>` when none is set.
    pub fn worker_id(&self) -> String {
        match &self.worker_id {
            Some(id) if !id.is_empty() => id.clone(),
            _ => default_worker_id(),
        }
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

impl LlmArgs {
    /// Returns the base URL, or `None` when unset or empty (offline model).
    pub fn base_url(&self) -> Option<String> {
        self.llm_base_url.clone().filter(|url| !url.is_empty())
    }

    pub fn api_key(&self) -> Option<String> {
        self.llm_api_key
            .as_ref()
            .map(|key| key.expose().to_string())
            .filter(|key| !key.is_empty())
    }

    pub fn model(&self) -> Option<String> {
        self.llm_model
            .as_ref()
            .map(|model| model.trim().to_string())
            .filter(|model| !model.is_empty())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.llm_timeout_secs)
    }
}

impl ApiArgs {
    /// Returns the API token, or `None` when unset or empty.
    pub fn api_token(&self) -> Option<String> {
        self.api_token
            .as_ref()
            .map(|token| token.expose().to_string())
            .filter(|token| !token.is_empty())
    }
}

/// A secret setting. `Debug` and `Display` print `[redacted]`, so a logged settings struct does
/// not reveal it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Returns the secret value, for the one place that sends or compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Secret(value.to_string()))
    }
}

/// The plugin directories of `PLUGINS_DIR`, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDirs(pub Vec<PathBuf>);

/// Returns a parser for a whole number in `min..=max` whose error states the allowed range.
fn whole_number<T>(min: T, max: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync
where
    T: FromStr + PartialOrd + fmt::Display + Copy + Send + Sync + 'static,
{
    move |text: &str| match text.trim().parse::<T>() {
        Ok(value) if value >= min && value <= max => Ok(value),
        _ => Err(format!("expected a whole number from {min} to {max}")),
    }
}

fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        "expected IP:PORT, such as 127.0.0.1:3000 or 0.0.0.0:3000 (host names are not resolved)"
            .to_string()
    })
}

fn parse_log_filter(text: &str) -> Result<String, String> {
    crate::telemetry::parse_filter(text)?;
    Ok(text.to_string())
}

fn parse_plugin_dirs(text: &str) -> Result<PluginDirs, String> {
    let dirs: Vec<PathBuf> = text
        .split(':')
        .filter(|part| !part.trim().is_empty())
        .map(PathBuf::from)
        .collect();
    if dirs.is_empty() {
        return Err("expected one or more directories separated by ':'".to_string());
    }
    Ok(PluginDirs(dirs))
}

fn parse_worker_id(text: &str) -> Result<String, String> {
    let text = text.trim();
    let valid = text.len() <= 128
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    if !valid {
        return Err(
            "expected 1 to 128 characters of letters, digits, '_', '.', ':' and '-'".to_string(),
        );
    }
    Ok(text.to_string())
}

fn parse_llm_base_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(String::new());
    }
    let url = reqwest::Url::parse(text)
        .map_err(|error| format!("{error}: expected an http:// or https:// URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("expected an http:// or https:// URL with a host".to_string());
    }
    Ok(text.trim_end_matches('/').to_string())
}

/// `<host name>-<process id>`, with characters a worker id does not allow replaced by '-'.
pub fn default_worker_id() -> String {
    let host = hostname::get()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "worker".to_string());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    format!("{host}-{}", std::process::id())
}

/// Lists every environment variable a subcommand reads, from its clap definition.
pub fn environment_variables(subcommand: &str) -> Vec<String> {
    use clap::CommandFactory;

    let command = Cli::command();
    let Some(subcommand) = command.find_subcommand(subcommand) else {
        return Vec::new();
    };
    subcommand
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("jobhost").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn worker_defaults() {
        let Command::Worker(args) = parse(&["worker"]).expect("parses").command else {
            panic!("expected the worker command");
        };
        assert_eq!(args.worker.concurrency, 16);
        assert_eq!(args.worker.poll_ms, 1000);
        assert_eq!(args.worker.lease_secs, 30);
        assert_eq!(args.worker.shutdown_grace_secs, 30);
        assert_eq!(
            args.worker.plugins_dir,
            PluginDirs(vec![PathBuf::from("./plugins")])
        );
        assert_eq!(args.llm.llm_timeout_secs, 120);
        assert_eq!(args.common.data_dir, PathBuf::from("./data"));
        assert!(!args.worker.worker_id().is_empty());
    }

    #[test]
    fn queue_data_dir_before_or_after_subcommand() {
        for args in [
            &["queue", "--data-dir", "/tmp/q", "counts"][..],
            &["queue", "counts", "--data-dir", "/tmp/q"][..],
        ] {
            let Command::Queue(queue) = parse(args).expect("parses").command else {
                panic!("expected the queue command");
            };
            assert_eq!(queue.common.data_dir, PathBuf::from("/tmp/q"), "{args:?}");
        }
    }

    #[test]
    fn plugin_dirs_split_on_colon() {
        let Command::Worker(args) = parse(&["worker", "--plugins-dir", "/a::/b"])
            .expect("parses")
            .command
        else {
            panic!("expected the worker command");
        };
        assert_eq!(
            args.worker.plugins_dir.0,
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
    }

    #[test]
    fn invalid_values_name_setting_value_and_range() {
        let cases: [(&[&str], &str, &str); 5] = [
            (
                &["worker", "--concurrency", "abc"],
                "WORKER_CONCURRENCY",
                "1 to 1024",
            ),
            (
                &["serve", "--log-format", "xml"],
                "LOG_FORMAT",
                "text, json",
            ),
            (
                &["serve", "--listen-addr", "nope"],
                "LISTEN_ADDR",
                "IP:PORT",
            ),
            (
                &["worker", "--llm-base-url", "ftp://example.invalid"],
                "LLM_BASE_URL",
                "http",
            ),
            (
                &["serve", "--max-body-bytes", "10"],
                "MAX_BODY_BYTES",
                "1024 to",
            ),
        ];
        for (args, setting, allowed) in cases {
            let error = parse(args).expect_err("value is invalid");
            let message = error.to_string();
            assert_eq!(error.exit_code(), 2, "{message}");
            assert!(message.contains(setting), "{message}");
            assert!(message.contains(allowed), "{message}");
            assert!(message.contains(args[2]), "{message}");
        }
    }

    #[test]
    fn empty_optional_settings_mean_unset() {
        let Command::Up(args) = parse(&[
            "up",
            "--api-token",
            "",
            "--llm-base-url",
            "",
            "--llm-model",
            " ",
        ])
        .expect("parses")
        .command
        else {
            panic!("expected the up command");
        };
        assert_eq!(args.api.api_token(), None);
        assert_eq!(args.llm.base_url(), None);
        assert_eq!(args.llm.model(), None);
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let Command::Up(args) =
            parse(&["up", "--api-token", "token-123", "--llm-api-key", "key-456"])
                .expect("parses")
                .command
        else {
            panic!("expected the up command");
        };
        let printed = format!("{args:?}");
        assert!(!printed.contains("token-123"), "{printed}");
        assert!(!printed.contains("key-456"), "{printed}");
        assert_eq!(args.api.api_token().as_deref(), Some("token-123"));
    }

    #[test]
    fn environment_variables_cover_worker_settings() {
        let names = environment_variables("worker");
        for name in [
            "DATA_DIR",
            "PLUGINS_DIR",
            "WORKER_ID",
            "WORKER_CONCURRENCY",
            "WORKER_POLL_MS",
            "WORKER_LEASE_SECS",
            "WORKER_SHUTDOWN_GRACE_SECS",
            "LLM_BASE_URL",
            "LLM_API_KEY",
            "LLM_MODEL",
            "LLM_TIMEOUT_SECS",
            "LOG_FORMAT",
            "RUST_LOG",
        ] {
            assert!(
                names.iter().any(|n| n == name),
                "worker does not read {name}"
            );
        }
        assert!(!names.iter().any(|n| n == "LISTEN_ADDR"));
    }
}
