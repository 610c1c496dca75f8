//! Builds the guest plugin workspace `plugins/Cargo.toml` for `wasm32-wasip2` and installs the
//! components where the worker and the tests find them:
//!
//! - the bundled plugins as `<repo>/plugins/<name>.wasm`;
//! - the test plugin as `<target dir>/test-plugins/testkit.wasm`, whose absolute path the crate
//!   reads as `env!("JOBHOST_TESTKIT_WASM")`; `env!("JOBHOST_BUNDLED_PLUGINS_DIR")` is
//!   `<repo>/plugins`.
//!
//! The nested cargo builds into `<target dir>/wasm-plugins`, so it shares neither the lock nor
//! the artifacts of the outer build. Cargo reruns this script only when a watched input changes
//! (the WIT files, the plugin crates' sources and manifests, the plugin lock file), so a no-op
//! build of the host does not start the nested cargo.
//!
//! NOTE: the installed `.wasm` files are outputs and not watched. After deleting one by hand,
//! touch `plugins/Cargo.toml` (or any watched input) to make cargo install it again.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Plugins installed into `<repo>/plugins` for the worker to load.
const BUNDLED_PLUGINS: [&str; 3] = ["debate", "workflow", "ingest_docs"];

/// The plugin that only tests load.
const TEST_PLUGIN: &str = "testkit";

const WASM_TARGET: &str = "wasm32-wasip2";

/// Variables through which the outer build would leak into the nested one: flags and wrappers
/// meant for the host target, the outer target and target dir, the outer jobserver, and values
/// cargo sets for this package's build script.
const LEAKING_VARS: [&str; 13] = [
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_MANIFEST_PATH",
];

/// Prefixes of per-build variables that cargo sets for this script and that mean nothing to a
/// build for another target.
const LEAKING_PREFIXES: [&str; 2] = ["CARGO_CFG_", "CARGO_FEATURE_"];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(required_var("CARGO_MANIFEST_DIR")?);
    let repo_dir = manifest_dir
        .parent()
        .ok_or_else(|| {
            format!(
                "host crate {} has no parent directory",
                manifest_dir.display()
            )
        })?
        .to_path_buf();
    let plugins_dir = repo_dir.join("plugins");
    let plugins_manifest = plugins_dir.join("Cargo.toml");
    let target_dir = host_target_dir()?;

    watch_inputs(&repo_dir, &plugins_dir)?;

    // Build every plugin crate in one nested cargo run.
    let wasm_target_dir = target_dir.join("wasm-plugins");
    build_plugins(&plugins_manifest, &wasm_target_dir)?;
    let built_dir = wasm_target_dir.join(WASM_TARGET).join("release");

    // Install the bundled plugins beside their manifests, the test plugin under the target dir.
    for name in BUNDLED_PLUGINS {
        install(&built_dir, name, &plugins_dir)?;
    }
    let test_plugins_dir = target_dir.join("test-plugins");
    fs::create_dir_all(&test_plugins_dir)
        .map_err(|e| format!("failed to create {}: {e}", test_plugins_dir.display()))?;
    let testkit = install(&built_dir, TEST_PLUGIN, &test_plugins_dir)?;

    println!("cargo:rustc-env=JOBHOST_TESTKIT_WASM={}", testkit.display());
    println!(
        "cargo:rustc-env=JOBHOST_BUNDLED_PLUGINS_DIR={}",
        plugins_dir.display()
    );
    Ok(())
}

fn required_var(name: &str) -> Result<OsString, String> {
    env::var_os(name).ok_or_else(|| format!("cargo did not set {name} for the build script"))
}

/// Finds the outer build's target directory.
///
/// `OUT_DIR` is `<target dir>[/<triple>]/<profile>/build/<package>-<hash>/out`, so the target
/// dir is the parent of the profile directory that contains `build`, less the triple directory
/// when the build names a `--target`. `CARGO_TARGET_DIR` is used when `OUT_DIR` has another
/// shape, for example under a separate `build-dir`.
fn host_target_dir() -> Result<PathBuf, String> {
    let out_dir = PathBuf::from(required_var("OUT_DIR")?);
    let profile_dir = out_dir
        .ancestors()
        .find(|dir| dir.join("build").is_dir() && out_dir.starts_with(dir.join("build")));
    if let Some(mut dir) = profile_dir.and_then(Path::parent) {
        let target = env::var("TARGET").unwrap_or_default();
        if !target.is_empty() && dir.file_name().is_some_and(|name| name == target.as_str()) {
            dir = dir.parent().unwrap_or(dir);
        }
        return Ok(dir.to_path_buf());
    }
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => Ok(PathBuf::from(dir)),
        _ => Err(format!(
            "cannot find the target directory from OUT_DIR {}; set CARGO_TARGET_DIR to an \
             absolute path",
            out_dir.display()
        )),
    }
}

/// Tells cargo which inputs rerun this script: the WIT contract, the plugin workspace manifest
/// and lock file, and the manifest and sources of every crate in `plugins/`.
fn watch_inputs(repo_dir: &Path, plugins_dir: &Path) -> Result<(), String> {
    println!("cargo:rerun-if-changed={}", repo_dir.join("wit").display());
    println!(
        "cargo:rerun-if-changed={}",
        plugins_dir.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        plugins_dir.join("Cargo.lock").display()
    );

    let entries = fs::read_dir(plugins_dir)
        .map_err(|e| format!("failed to read {}: {e}", plugins_dir.display()))?;
    for entry in entries {
        let crate_dir = entry
            .map_err(|e| format!("failed to read {}: {e}", plugins_dir.display()))?
            .path();
        let crate_manifest = crate_dir.join("Cargo.toml");
        if !crate_manifest.is_file() {
            continue;
        }
        println!("cargo:rerun-if-changed={}", crate_manifest.display());
        println!("cargo:rerun-if-changed={}", crate_dir.join("src").display());
    }
    Ok(())
}

/// Runs `cargo build --release --target wasm32-wasip2` on the plugin workspace with an
/// environment cleared of the outer build's settings.
fn build_plugins(plugins_manifest: &Path, wasm_target_dir: &Path) -> Result<(), String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(&cargo);
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(plugins_manifest)
        .arg("--target")
        .arg(WASM_TARGET)
        .arg("--release")
        .arg("--target-dir")
        .arg(wasm_target_dir);
    for name in LEAKING_VARS {
        command.env_remove(name);
    }
    for (name, _) in env::vars_os() {
        let leaks = name
            .to_str()
            .is_some_and(|name| LEAKING_PREFIXES.iter().any(|p| name.starts_with(p)));
        if leaks {
            command.env_remove(&name);
        }
    }

    let output = command.output().map_err(|e| {
        format!(
            "failed to start {} to build the plugins: {e}",
            Path::new(&cargo).display()
        )
    })?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "building the plugin workspace {} for {WASM_TARGET} failed ({}).\n\
         Build it by hand from the repository root to see the whole output:\n    \
         rustup target add {WASM_TARGET}\n    \
         cargo build --manifest-path plugins/Cargo.toml --target {WASM_TARGET} --release\n\
         Output of the nested cargo:\n{}",
        plugins_manifest.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// Copies `<built_dir>/<name>.wasm` to `<dest_dir>/<name>.wasm` and returns the destination.
///
/// The copy goes to a temporary file in `dest_dir` that is renamed over the destination, so a
/// worker that watches `dest_dir` never loads a half-written component. The temporary name does
/// not end in `.wasm` (a watcher ignores it) and contains the process id (two builds at once do
/// not write the same file). An unchanged component is not rewritten, so a running worker does
/// not reload it.
fn install(built_dir: &Path, name: &str, dest_dir: &Path) -> Result<PathBuf, String> {
    let source = built_dir.join(format!("{name}.wasm"));
    let dest = dest_dir.join(format!("{name}.wasm"));
    let bytes = fs::read(&source)
        .map_err(|e| format!("failed to read the built plugin {}: {e}", source.display()))?;
    if fs::read(&dest).is_ok_and(|current| current == bytes) {
        return Ok(dest);
    }

    let temp = dest_dir.join(format!(".{name}.wasm.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&temp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&temp, &dest)
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&temp);
        return Err(format!(
            "failed to install {} as {}: {e}",
            source.display(),
            dest.display()
        ));
    }
    Ok(dest)
}
