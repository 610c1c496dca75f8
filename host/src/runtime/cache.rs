//! The compiled-artifact cache: `<data>/cache/plugins/<sha256 of wasm>-<engine key>.cwasm`, so a
//! restarted worker loads a plugin it has seen before in milliseconds instead of compiling it
//! again.
//!
//! The engine key combines the wasmtime major version with the engine's precompile compatibility
//! hash (compiler target, flags and tunables), so an artifact from another version or
//! configuration is never looked up. Each file starts with the SHA-256 of the component it was
//! compiled from and the SHA-256 of the artifact that follows. A file that fails either check
//! (torn, corrupted, or copied from another component) or that wasmtime rejects is compiled
//! again and rewritten, never a failed load.
//!
//! The cache directory must be as trusted as the worker binary: loading an artifact maps its
//! machine code for execution.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The wasmtime release line the host is built against; must follow the `wasmtime` dependency
/// in `host/Cargo.toml`. A mismatch only costs cache misses, because the compatibility hash also
/// covers the version.
const WASMTIME_LINE: &str = "wasmtime48";

const DIGEST_LEN: usize = 32;
/// The two digests in front of the artifact.
const HEADER_LEN: usize = 2 * DIGEST_LEN;

/// Source of a loaded component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Deserialized from the cache.
    Hit,
    /// Compiled, and written to the cache.
    Compiled,
}

/// Compiled plugin artifacts under one data directory.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

impl ArtifactCache {
    /// Uses `<data_dir>/cache/plugins`, created on the first write.
    pub fn new(data_dir: &Path, engine: &Engine) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ArtifactCache {
            dir: data_dir.join("cache").join("plugins"),
            engine_key: format!("{WASMTIME_LINE}-{:016x}", hasher.finish()),
        }
    }

    /// Path of the artifact for a component whose bytes hash to `wasm_sha256` (hex).
    pub fn path_for(&self, wasm_sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{wasm_sha256}-{}.cwasm", self.engine_key))
    }

    /// Returns the compiled component for `wasm`, from the cache when a valid artifact exists,
    /// otherwise by compiling it and writing the artifact. Blocks for the compile; call it from
    /// a blocking thread. Fails only when `wasm` itself does not compile.
    pub fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        wasm_sha256: &str,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.path_for(wasm_sha256);
        let wasm_digest = Sha256::digest(wasm);
        match self.read_cached(engine, &path, &wasm_digest) {
            Ok(Some(component)) => return Ok((component, CacheOutcome::Hit)),
            Ok(None) => {}
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "cached plugin artifact is unusable; compiling the plugin again");
            }
        }

        let component = Component::new(engine, wasm)?;
        if let Err(error) = self.write(&path, &wasm_digest, &component) {
            tracing::warn!(path = %path.display(), %error, "could not write the compiled plugin to the cache; the next start compiles it again");
        }
        Ok((component, CacheOutcome::Compiled))
    }

    /// Reads and checks a cached artifact: `Ok(None)` when there is none, `Err` with the reason
    /// when it exists but cannot be used.
    fn read_cached(
        &self,
        engine: &Engine,
        path: &Path,
        wasm_digest: &[u8],
    ) -> Result<Option<Component>, String> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(format!("read failed: {error}")),
        };
        if bytes.len() < HEADER_LEN {
            return Err(format!(
                "file is {} bytes, shorter than its header",
                bytes.len()
            ));
        }
        let (header, artifact) = bytes.split_at(HEADER_LEN);
        let (source_digest, artifact_digest) = header.split_at(DIGEST_LEN);
        if source_digest != wasm_digest {
            return Err("it was compiled from another component".to_string());
        }
        if Sha256::digest(artifact).as_slice() != artifact_digest {
            return Err("its digest does not match its content".to_string());
        }
        deserialize(engine, artifact)
            .map(Some)
            .map_err(|error| format!("wasmtime rejected it: {error}"))
    }

    fn write(&self, path: &Path, wasm_digest: &[u8], component: &Component) -> Result<(), String> {
        let artifact = component
            .serialize()
            .map_err(|error| format!("serialize failed: {error}"))?;
        let mut bytes = Vec::with_capacity(HEADER_LEN + artifact.len());
        bytes.extend_from_slice(wasm_digest);
        bytes.extend_from_slice(&Sha256::digest(&artifact));
        bytes.extend_from_slice(&artifact);
        std::fs::create_dir_all(&self.dir).map_err(|error| error.to_string())?;
        crate::durable::write_atomic(path, &bytes).map_err(|error| error.to_string())
    }
}

/// Deserializes an artifact this cache wrote.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` requires bytes produced by `Component::serialize` of a
    // compatible engine, because it maps their machine code as executable. The bytes come from
    // this cache's own directory and passed the SHA-256 checks of their header (which rule out
    // torn, corrupted and misplaced files), and wasmtime itself rejects artifacts of another
    // version or configuration. The module documentation states that the directory must be
    // trusted.
    unsafe { Component::deserialize(engine, artifact) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testkit() -> Vec<u8> {
        std::fs::read(env!("JOBHOST_TESTKIT_WASM")).expect("read testkit.wasm")
    }

    fn engine() -> Engine {
        crate::runtime::engine::build_engine(2).expect("engine").0
    }

    #[test]
    fn second_load_is_a_hit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = engine();
        let cache = ArtifactCache::new(dir.path(), &engine);
        let wasm = testkit();
        let sha = hex::encode(Sha256::digest(&wasm));

        let (_, first) = cache.load(&engine, &wasm, &sha).expect("compile");
        assert_eq!(first, CacheOutcome::Compiled);
        assert!(cache.path_for(&sha).exists());
        let (_, second) = cache.load(&engine, &wasm, &sha).expect("load cached");
        assert_eq!(second, CacheOutcome::Hit);
    }

    #[test]
    fn unusable_artifacts_are_recompiled_and_rewritten() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = engine();
        let cache = ArtifactCache::new(dir.path(), &engine);
        let wasm = testkit();
        let sha = hex::encode(Sha256::digest(&wasm));
        let path = cache.path_for(&sha);
        cache.load(&engine, &wasm, &sha).expect("compile");
        let good = std::fs::read(&path).expect("read artifact");

        // Corrupted: one byte of machine code flipped.
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        // Misplaced: the artifact of another component under this name.
        let other_wasm =
            std::fs::read(Path::new(env!("JOBHOST_BUNDLED_PLUGINS_DIR")).join("ingest_docs.wasm"))
                .expect("read ingest_docs.wasm");
        let other_sha = hex::encode(Sha256::digest(&other_wasm));
        cache
            .load(&engine, &other_wasm, &other_sha)
            .expect("compile other");
        let foreign = std::fs::read(cache.path_for(&other_sha)).expect("read other");
        // Stale: compiled by an engine with another configuration.
        let mut stale_config = wasmtime::Config::new();
        stale_config.epoch_interruption(false);
        let stale_engine = Engine::new(&stale_config).expect("other engine");
        let stale_component = Component::new(&stale_engine, &wasm).expect("compile stale");
        let stale_path = dir.path().join("stale.cwasm");
        cache
            .write(&stale_path, &Sha256::digest(&wasm), &stale_component)
            .expect("write stale");
        let stale = std::fs::read(&stale_path).expect("read stale");

        for (label, bytes) in [
            // The file ends early.
            ("torn", good[..good.len() / 2].to_vec()),
            ("corrupted", flipped),
            ("misplaced", foreign),
            ("stale", stale),
            ("empty", Vec::new()),
        ] {
            std::fs::write(&path, &bytes).expect("plant a bad artifact");
            let (_, outcome) = cache
                .load(&engine, &wasm, &sha)
                .unwrap_or_else(|error| panic!("{label} artifact failed the load: {error}"));
            assert_eq!(outcome, CacheOutcome::Compiled, "{label}");
            assert_eq!(
                std::fs::read(&path).expect("read rewritten").len(),
                good.len(),
                "{label} artifact was not rewritten"
            );
        }
    }
}
