//! Bindings and helpers for writing jobhost plugins in Rust.
//!
//! A plugin is a WebAssembly component for the `job-plugin` world of `wit/plugin.wit`. A plugin
//! crate (crate type `cdylib`) implements [`Guest`] on a type and exports it once with
//! [`export_plugin!`]; the host calls `describe` when it loads the component and `run` once per
//! job attempt.
//!
//! ```no_run
//! use jobhost_plugin_sdk::{Guest, Job, JobError, PluginInfo};
//!
//! struct Hello;
//!
//! impl Guest for Hello {
//!     fn describe() -> PluginInfo {
//!         PluginInfo {
//!             name: "hello".into(),
//!             version: "0.1.0".into(),
//!             job_types: vec!["HELLO".into()],
//!             description: "Greets the name in the payload".into(),
//!         }
//!     }
//!
//!     fn run(job: Job) -> Result<String, JobError> {
//!         #[derive(serde::Deserialize)]
//!         struct Payload { name: String }
//!         let payload: Payload = jobhost_plugin_sdk::parse_payload(&job.payload)?;
//!         jobhost_plugin_sdk::to_result(&format!("hello, {}", payload.name))
//!     }
//! }
//!
//! jobhost_plugin_sdk::export_plugin!(Hello);
//! ```
//!
//! # Layout
//! - [`bindings`]: the code `wit_bindgen::generate!` produces for the world; its import
//!   functions are callable only inside a component (on other targets they panic).
//! - `error`: constructors for [`JobError`] of each [`ErrorKind`].
//! - `payload`: payload parsing whose errors name the offending field.
//! - `host`: typed wrappers around the imports: events and progress, JSON state, artifacts,
//!   config, the model and the log.
//!
//! Everything outside `host` is plain Rust, so a plugin's own logic can be unit-tested with
//! `cargo test` on the host target.

/// Bindings generated from `wit/plugin.wit`.
#[allow(missing_debug_implementations, clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "job-plugin",
        default_bindings_module: "jobhost_plugin_sdk::bindings",
        pub_export_macro: true,
        export_macro_name: "export_plugin",
        additional_derives: [PartialEq],
    });
}

mod error;
mod host;
mod payload;

pub use bindings::jobhost::plugin::llm;
pub use bindings::jobhost::plugin::log::Level;
pub use bindings::jobhost::plugin::types::ErrorKind;
pub use bindings::{Guest, Job, JobError, PluginInfo, export_plugin};
pub use host::{
    chat, config_get, emit_event, is_cancelled, log, progress, put_artifact, state_delete,
    state_get, state_get_json, state_set, state_set_json,
};
pub use payload::{invalid_field, parse_payload, to_result};
