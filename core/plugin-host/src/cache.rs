//! The on-disk cache of compiled components: a file per blake3 of (cache
//! format, engine configuration, plugin bytes), holding wasmtime's compiled
//! artifact followed by its own blake3, verified before use. It must never
//! load an artifact whose checksum does not match, and a cache failure is
//! never fatal: it falls back to compiling in memory.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Instant;
use wasmtime::Engine;
use wasmtime::component::Component;

const FORMAT: &[u8] = b"weir-plugin-cache-v1";

/// Feeds `Hash` output into blake3.
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        let hash = self.0.finalize();
        u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap_or_default())
    }
}

/// The cache key of a plugin on an engine.
pub(crate) fn key(engine: &Engine, plugin_hash: &blake3::Hash) -> blake3::Hash {
    let mut h = Blake3Hasher(blake3::Hasher::new());
    h.0.update(FORMAT);
    engine.precompile_compatibility_hash().hash(&mut h);
    h.0.update(plugin_hash.as_bytes());
    h.0.finalize()
}

/// Compiles `bytes`, or loads the compiled artifact from `dir`.
pub(crate) fn compile(
    engine: &Engine,
    dir: Option<&Path>,
    plugin: &str,
    bytes: &[u8],
    plugin_hash: &blake3::Hash,
) -> Result<Component, String> {
    let Some(dir) = dir else {
        return Component::from_binary(engine, bytes).map_err(|e| format!("{e:#}"));
    };
    let path = dir.join(format!("{}.cwasm", key(engine, plugin_hash).to_hex()));
    if let Some(component) = load(engine, &path, plugin) {
        return Ok(component);
    }
    let started = Instant::now();
    let compiled = engine
        .precompile_component(bytes)
        .map_err(|e| format!("{e:#}"))?;
    tracing::info!(
        plugin,
        ms = started.elapsed().as_millis() as u64,
        bytes = bytes.len(),
        "compiled plugin"
    );
    if let Err(e) = store(dir, &path, &compiled) {
        tracing::warn!(plugin, path = %path.display(), error = %e, "cannot write the plugin cache; compiling at each start");
    }
    deserialize(engine, &compiled).map_err(|e| format!("{e:#}"))
}

fn load(engine: &Engine, path: &PathBuf, plugin: &str) -> Option<Component> {
    let data = std::fs::read(path).ok()?;
    let (artifact, sum) = data.split_at_checked(data.len().checked_sub(32)?)?;
    if blake3::hash(artifact).as_bytes() != sum {
        tracing::warn!(plugin, path = %path.display(), "corrupt plugin cache entry; recompiling");
        return None;
    }
    match deserialize(engine, artifact) {
        Ok(c) => {
            tracing::debug!(plugin, path = %path.display(), "loaded compiled plugin from cache");
            Some(c)
        }
        Err(e) => {
            tracing::warn!(plugin, path = %path.display(), error = %e, "unusable plugin cache entry; recompiling");
            None
        }
    }
}

fn store(dir: &Path, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut data = Vec::with_capacity(artifact.len() + 32);
    data.extend_from_slice(artifact);
    data.extend_from_slice(blake3::hash(artifact).as_bytes());
    std::fs::write(&tmp, &data)?;
    std::fs::rename(&tmp, path)
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `artifact` is either what `Engine::precompile_component` just
    // produced in this process, or a cache file whose trailing blake3 matched,
    // written by `store` from such output in a directory this node owns.
    // wasmtime itself checks the artifact's engine and version compatibility.
    unsafe { Component::deserialize(engine, artifact) }
}
