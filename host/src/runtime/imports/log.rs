//! `log`: plugin log records into the worker's log, tagged with the attempt's ids.

use super::{HostState, truncate};
use crate::runtime::bindings::jobhost::plugin::log::{Host, Level};

/// Log records one attempt may write; later ones are dropped and counted.
pub const MAX_LOG_RECORDS: u64 = 10_000;
/// Longest logged message and fields text, in bytes.
const MAX_TEXT_BYTES: usize = 8 * 1024;

macro_rules! plugin_record {
    ($macro:ident, $state:expr, $fields:expr, $message:expr) => {
        tracing::$macro!(
            plugin = %$state.plugin,
            job_id = %$state.job_id(),
            run_id = %$state.run_id(),
            attempt = $state.attempt(),
            fields = %$fields,
            "{}",
            $message
        )
    };
}

impl Host for HostState {
    fn write(&mut self, level: Level, mut message: String, fields: String) {
        self.log_records += 1;
        if self.log_records > MAX_LOG_RECORDS {
            if self.log_records == MAX_LOG_RECORDS + 1 {
                tracing::warn!(
                    plugin = %self.plugin,
                    job_id = %self.job_id(),
                    run_id = %self.run_id(),
                    limit = MAX_LOG_RECORDS,
                    "plugin wrote more log records than allowed per attempt; dropping the rest"
                );
            }
            return;
        }

        truncate(&mut message, MAX_TEXT_BYTES);
        let fields = format_fields(fields);
        match level {
            Level::Trace => plugin_record!(trace, self, fields, message),
            Level::Debug => plugin_record!(debug, self, fields, message),
            Level::Info => plugin_record!(info, self, fields, message),
            Level::Warn => plugin_record!(warn, self, fields, message),
            Level::Error => plugin_record!(error, self, fields, message),
        }
    }
}

/// Returns the fields as compact JSON when they are a JSON object, else the text as given.
fn format_fields(mut fields: String) -> String {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&fields) {
        fields = serde_json::Value::Object(map).to_string();
    }
    truncate(&mut fields, MAX_TEXT_BYTES);
    fields
}
