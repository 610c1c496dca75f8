//! Rust bindings for the `job-plugin` world in `wit/plugin.wit`, generated at compile time.
//!
//! Imports that touch files or the network are async, so a slow disk or model server does not
//! block a worker thread. The rest are plain functions.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "job-plugin",
    imports: {
        "jobhost:plugin/events": async,
        // `state.get` has no error result in the contract, so a state file that cannot be read
        // traps the guest instead of looking like an empty state.
        "jobhost:plugin/state.get": async | trappable,
        "jobhost:plugin/state": async,
        "jobhost:plugin/artifacts": async,
        "jobhost:plugin/llm": async,
    },
    exports: { default: async },
});
