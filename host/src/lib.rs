//! jobhost: a durable job queue whose job handlers are sandboxed WebAssembly component plugins.
//!
//! An HTTP API enqueues jobs and returns at once; separate worker processes claim them from the
//! queue and run each attempt inside a fresh instance of the plugin that handles its job type.
//!
//! # Layout
//! - `job`: the job record, its states, and id validation.
//! - `queue`: the `Queue` trait, the file backend, and the conformance suite for backends.
//! - `events`: per-run append-only event logs and run summaries.
//! - `durable`: crash-safe file writes shared by the file-backed stores.

pub mod api;
pub mod artifacts;
pub mod cli;
pub mod config;
pub mod debate;
pub mod durable;
pub mod events;
pub mod job;
pub mod llm;
pub mod queue;
pub mod runtime;
pub mod state;
pub mod telemetry;
pub mod worker;
