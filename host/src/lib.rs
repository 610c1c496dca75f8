//! jobhost: a durable job queue whose job handlers are sandboxed WebAssembly component plugins.
//!
//! An HTTP API enqueues jobs and returns at once. Separate worker processes claim them from the
//! queue and run each attempt inside a fresh instance of the plugin that handles its job type.
//!
//! # Layout
//! - `job`: the job record, its states, and id validation.
//! - `queue`: the `Queue` trait, the file backend, and the conformance suite for backends.
//! - `events`: per-run append-only event logs and run summaries.
//! - `state`, `artifacts`: job-scoped plugin state and per-run artifacts on disk.
//! - `durable`: crash-safe file writes shared by the file-backed stores.
//! - `runtime`: the wasmtime engine, plugin loading and hot reload, sandbox limits, host imports.
//! - `worker`: the claim loop, attempt execution, lease heartbeats, shutdown, the worker record.
//! - `llm`: the language-model client behind the plugins' chat import (OpenAI-compatible or
//!   offline).
//! - `api`, `debate`: the HTTP API and the debate model it validates and stores.
//! - `config`, `cli`, `telemetry`: the command line, its settings, and logging set-up.
//!
//! A PostgreSQL queue backend is not written yet.

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
