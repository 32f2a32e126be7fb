//! Configuration loading shared by edge and core: a TOML file plus `WEIR_` environment
//! overrides (`WEIR_<SECTION>__<KEY>`, e.g. `WEIR_KAFKA__BOOTSTRAP_SERVERS`), versioned.
//! Unknown keys are rejected (every config struct is `deny_unknown_fields`), and the error
//! names the key and the file.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::de::DeserializeOwned;

/// The config format version this build reads.
pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("config file {0} does not exist")]
    Missing(String),
    #[error("config key `{key}`: {reason}")]
    Value { key: &'static str, reason: String },
    #[error("config version {found} is not supported by this build, which reads version {CONFIG_VERSION}: set `version = {CONFIG_VERSION}` and check the example configs in deploy/")]
    Version { found: u32 },
}

/// Reads `path`, then applies environment overrides. `top_level` lists the top-level
/// scalar keys that may also be set by environment (`WEIR_NODE_ID`); every other override
/// needs a section (`__`), so unrelated `WEIR_*` variables are not mistaken for config.
pub fn load<T: DeserializeOwned>(path: &Path, top_level: &'static [&'static str]) -> Result<T, ConfigError> {
    if !path.exists() {
        return Err(ConfigError::Missing(path.display().to_string()));
    }
    let figment = Figment::new().merge(Toml::file_exact(path)).merge(env(top_level));
    let version: u32 = figment.extract_inner("version").map_err(|e| ConfigError::Invalid(Box::new(e)))?;
    if version != CONFIG_VERSION {
        return Err(ConfigError::Version { found: version });
    }
    figment.extract().map_err(|e| ConfigError::Invalid(Box::new(e)))
}

fn env(top_level: &'static [&'static str]) -> Env {
    Env::prefixed("WEIR_")
        .filter(move |key| key.as_str().contains("__") || top_level.iter().any(|k| key.as_str().eq_ignore_ascii_case(k)))
        .split("__")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[allow(dead_code)]
        version: u32,
        kafka: Kafka,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Kafka {
        bootstrap_servers: String,
    }

    fn write(text: &str) -> (tempfile_dir::Dir, std::path::PathBuf) {
        let dir = tempfile_dir::Dir::new();
        let path = dir.0.join("c.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    /// A throwaway directory without pulling a dependency into this light crate.
    mod tempfile_dir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let dir = std::env::temp_dir().join(format!("weir-config-test-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                Dir(dir)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let (_d, path) = write("version = 1\n[kafka]\nbootstrap_servers = \"x\"\nbootstrap = \"y\"\n");
        let err = load::<Sample>(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("unknown field") && err.contains("bootstrap"), "{err}");
    }

    #[test]
    fn wrong_version_is_refused() {
        let (_d, path) = write("version = 2\n[kafka]\nbootstrap_servers = \"x\"\n");
        let err = load::<Sample>(&path, &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Version { found: 2 }), "{err}");
    }

    #[test]
    fn missing_file_is_named() {
        let err = load::<Sample>(Path::new("/nonexistent/weir.toml"), &[]).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/weir.toml"), "{err}");
    }

    #[test]
    fn environment_overrides_file() {
        let (_d, path) = write("version = 1\n[kafka]\nbootstrap_servers = \"file\"\n");
        figment::Jail::expect_with(|jail| {
            jail.set_env("WEIR_KAFKA__BOOTSTRAP_SERVERS", "env:9092");
            jail.set_env("WEIR_CACHE_DIR", "/unrelated");
            let config = load::<Sample>(&path, &[]).map_err(|e| e.to_string())?;
            assert_eq!(config.kafka.bootstrap_servers, "env:9092");
            Ok(())
        });
    }
}
