//! Process-wide logging: `tracing` events to stderr, as text or as one JSON object per line,
//! filtered by an `EnvFilter` directive string such as `info,jobhost=debug`.

use tracing_subscriber::EnvFilter;

/// Shape of each log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the event's fields and its spans.
    Json,
}

/// Checks a filter directive string without installing it. The error states what is wrong.
pub fn parse_filter(directives: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(directives)
        .map_err(|error| format!("{error}: use directives such as `info` or `info,jobhost=debug`"))
}

/// Installs the global subscriber. Fails when `directives` is not a valid filter or a subscriber
/// is already installed.
pub fn init(format: LogFormat, directives: &str) -> Result<(), String> {
    let filter = parse_filter(directives)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|error| format!("logging could not be set up: {error}"))
}
