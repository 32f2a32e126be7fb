//! The `[parsers]` section of the core's configuration: which plugins exist,
//! their settings and sandbox limits, and which parser each repository or
//! ingest token uses. Owns defaults and their validation; it must never load
//! or run a plugin.

use crate::error::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `[parsers]`: plugins and how events are routed to them.
///
/// ```toml
/// [parsers]
/// default = "json"
/// plugin_dir = "/usr/lib/weir/plugins"   # every *.wasm here is a plugin, named as it names itself
/// batch_deadline_ms = 500
/// memory_limit_bytes = 67108864
/// isolation_max_reruns = 64               # re-run calls per failed batch to isolate bad events
///
/// [parsers.plugins.nginx]
/// path = "access.wasm"                    # relative to plugin_dir
///
/// [parsers.plugins.app]
/// path = "pattern.wasm"
/// settings = { pattern = '^(?P<level>[A-Z]+) (?P<msg>.*)$' }
///
/// [parsers.by_repository]
/// web = "nginx"
///
/// [parsers.by_token]
/// "tok-app-1" = "app"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParsersConfig {
    /// Parser for events whose repository and token name none; `None` keeps
    /// them unparsed.
    pub default: Option<String>,
    /// Directory of plugins: relative plugin paths resolve against it, and
    /// each `*.wasm` in it is loaded with no settings under the name it
    /// declares (`describe`), not its file name, unless `plugins` already
    /// has an entry of that name. Two files declaring one name fail the start.
    pub plugin_dir: Option<PathBuf>,
    /// Named plugin instances (one `.wasm` may appear under several names with
    /// different settings).
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Repository name -> parser name.
    pub by_repository: BTreeMap<String, String>,
    /// Ingest token -> parser name; wins over `by_repository`.
    pub by_token: BTreeMap<String, String>,
    /// How long one `parse` call may run before the instance is stopped.
    pub batch_deadline_ms: u64,
    /// Linear memory cap per plugin instance, all memories together.
    pub memory_limit_bytes: u64,
    /// Size cap of one parsed event (field names, values, raw text).
    pub max_event_output_bytes: u64,
    /// Where compiled components are cached; `None` compiles in memory at each
    /// start. A relative path resolves against the working directory: the
    /// core's configuration has no data directory, so on a node point this at
    /// its data disk. The directory must belong to the user running the core
    /// and be writable by no one else, or the core refuses to start (cached
    /// plugins are native code it runs). It holds `cache.key`, the node's
    /// secret (mode 0600) that authenticates every entry: an entry written
    /// with another key (another node's, a restored backup's) is recompiled.
    pub cache_dir: Option<PathBuf>,
    /// How often a plugin file is checked for changes (0: before every batch).
    pub reload_check_ms: u64,
    /// Idle instances kept per plugin for concurrent callers.
    pub max_idle_instances: usize,
    /// Failure isolation: when a `parse` call fails as a whole (trap,
    /// deadline, memory cap, malformed output), at most this many calls
    /// re-run parts of the batch, on fresh instances, to find the events
    /// that fail alone; events still unresolved then are marked "isolation
    /// budget exhausted". One bad event among n costs 2·⌈log2 n⌉ re-runs
    /// (24 in a batch of 4096), each with the full `batch_deadline_ms`, so a
    /// hanging event holds the batch for about (1 + log2 n) deadlines. 0
    /// turns isolation off: every event of a failed call is marked.
    pub isolation_max_reruns: u32,
}

impl Default for ParsersConfig {
    fn default() -> Self {
        ParsersConfig {
            default: None,
            plugin_dir: None,
            plugins: BTreeMap::new(),
            by_repository: BTreeMap::new(),
            by_token: BTreeMap::new(),
            batch_deadline_ms: 500,
            memory_limit_bytes: 64 << 20,
            max_event_output_bytes: 1 << 20,
            cache_dir: Some(PathBuf::from(".weir/plugin-cache")),
            reload_check_ms: 1000,
            max_idle_instances: 4,
            isolation_max_reruns: 64,
        }
    }
}

/// `[parsers.plugins.NAME]`: one configured plugin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginConfig {
    /// The component file (`.wasm`), absolute or relative to `plugin_dir`.
    pub path: PathBuf,
    /// Settings passed to the plugin's `configure`.
    pub settings: BTreeMap<String, SettingValue>,
    /// Overrides `[parsers] batch_deadline_ms` for this plugin.
    pub batch_deadline_ms: Option<u64>,
    /// Overrides `[parsers] memory_limit_bytes` for this plugin.
    pub memory_limit_bytes: Option<u64>,
    /// Grants the wall and monotonic clocks (frozen at the Unix epoch otherwise).
    pub allow_clock: bool,
}

/// A setting value: TOML strings, numbers and booleans are all passed to the
/// plugin as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SettingValue {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl SettingValue {
    /// The text given to the plugin.
    pub fn as_text(&self) -> String {
        match self {
            SettingValue::Text(s) => s.clone(),
            SettingValue::Int(i) => i.to_string(),
            SettingValue::Float(f) => f.to_string(),
            SettingValue::Bool(b) => b.to_string(),
        }
    }
}

impl From<&str> for SettingValue {
    fn from(s: &str) -> Self {
        SettingValue::Text(s.to_string())
    }
}

/// A plugin entry with everything resolved, ready to load.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedPlugin {
    pub name: String,
    pub path: PathBuf,
    pub settings: Vec<(String, String)>,
    pub limits: Limits,
    /// Found in `plugin_dir` rather than named in `plugins`: `name` is the
    /// file stem until the plugin is loaded, then the name it declares.
    pub discovered: bool,
}

/// Sandbox limits of one plugin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub batch_deadline_ms: u64,
    pub memory_limit_bytes: u64,
    pub max_event_output_bytes: u64,
    pub allow_clock: bool,
    pub isolation_max_reruns: u32,
}

impl PluginConfig {
    /// A plugin at `path` with string settings (tests, `plugin_test`).
    pub fn new(path: impl Into<PathBuf>, settings: &[(&str, &str)]) -> Self {
        PluginConfig {
            path: path.into(),
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), SettingValue::from(*v)))
                .collect(),
            ..PluginConfig::default()
        }
    }
}

impl ParsersConfig {
    /// Checks the routing and limits, and lists every plugin to load.
    pub(crate) fn resolve(&self) -> Result<Vec<ResolvedPlugin>, Error> {
        if self.batch_deadline_ms == 0 {
            return Err(Error::Config("batch_deadline_ms must be at least 1".into()));
        }
        if self.memory_limit_bytes < (1 << 20) {
            return Err(Error::Config(format!(
                "memory_limit_bytes = {} is below 1 MiB; plugins need at least a few MiB",
                self.memory_limit_bytes
            )));
        }
        // Configured entries first, then the files of plugin_dir in name order.
        let mut entries: Vec<(String, (PluginConfig, bool))> = self
            .plugins
            .iter()
            .map(|(k, v)| (k.clone(), (v.clone(), false)))
            .collect();
        if let Some(dir) = &self.plugin_dir {
            let listing = std::fs::read_dir(dir).map_err(|e| {
                Error::Config(format!("cannot list plugin_dir {}: {e}", dir.display()))
            })?;
            let mut found: Vec<(String, std::path::PathBuf)> = listing
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|e| e == "wasm"))
                .filter_map(|path| Some((path.file_stem()?.to_string_lossy().into_owned(), path)))
                .collect();
            found.sort();
            entries.extend(
                found
                    .into_iter()
                    .map(|(stem, path)| (stem, (PluginConfig::new(path, &[]), true))),
            );
        }
        let mut out = Vec::with_capacity(entries.len());
        for (name, (p, discovered)) in entries {
            if p.path.as_os_str().is_empty() {
                return Err(Error::Config(format!(
                    "[parsers.plugins.{name}] has no `path`"
                )));
            }
            out.push(ResolvedPlugin {
                path: resolve_path(self.plugin_dir.as_deref(), &p.path),
                settings: p
                    .settings
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_text()))
                    .collect(),
                limits: Limits {
                    batch_deadline_ms: p.batch_deadline_ms.unwrap_or(self.batch_deadline_ms).max(1),
                    memory_limit_bytes: p.memory_limit_bytes.unwrap_or(self.memory_limit_bytes),
                    max_event_output_bytes: self.max_event_output_bytes,
                    allow_clock: p.allow_clock,
                    isolation_max_reruns: self.isolation_max_reruns,
                },
                discovered,
                name,
            });
        }
        // Routes are checked once the plugins are loaded (`ParserRegistry::new`): the
        // files of plugin_dir are named by what they declare.
        Ok(out)
    }
}

impl ParsersConfig {
    /// Every parser name the routing refers to, with where it is named.
    pub(crate) fn routes(&self) -> impl Iterator<Item = (&str, String)> {
        self.default
            .iter()
            .map(|n| (n.as_str(), "[parsers] default".to_string()))
            .chain(
                self.by_repository
                    .iter()
                    .map(|(r, n)| (n.as_str(), format!("[parsers.by_repository] {r}"))),
            )
            .chain(
                self.by_token
                    .values()
                    .map(|n| (n.as_str(), "[parsers.by_token]".to_string())),
            )
    }
}

fn resolve_path(dir: Option<&Path>, path: &Path) -> PathBuf {
    match dir {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_gives_the_defaults() {
        let config: ParsersConfig = toml::from_str("").expect("empty section");
        assert_eq!(config, ParsersConfig::default());
        assert_eq!(
            (config.batch_deadline_ms, config.memory_limit_bytes),
            (500, 64 << 20)
        );
        assert_eq!(config.isolation_max_reruns, 64);
    }

    #[test]
    fn relative_paths_resolve_against_plugin_dir_and_settings_become_text() {
        let config: ParsersConfig = toml::from_str(
            "plugin_dir = '/opt/weir/plugins'\n[plugins.a]\npath = 'a.wasm'\nsettings = { n = 3, on = true, s = 'x' }\n[plugins.b]\npath = '/abs/b.wasm'\nmemory_limit_bytes = 2097152",
        )
        .expect("parse");
        let mut config = config;
        config.plugin_dir = None;
        let resolved = config.resolve().expect("resolve");
        assert_eq!(resolved[0].path, PathBuf::from("a.wasm"));
        config.plugin_dir = Some(PathBuf::from("/opt/weir/plugins"));
        assert_eq!(
            resolve_path(config.plugin_dir.as_deref(), Path::new("a.wasm")),
            PathBuf::from("/opt/weir/plugins/a.wasm")
        );
        assert_eq!(
            resolve_path(config.plugin_dir.as_deref(), Path::new("/abs/b.wasm")),
            PathBuf::from("/abs/b.wasm")
        );
        let mut settings = resolved[0].settings.clone();
        settings.sort();
        assert_eq!(
            settings,
            [
                ("n".into(), "3".into()),
                ("on".into(), "true".into()),
                ("s".into(), "x".into())
            ]
        );
        assert_eq!(resolved[1].limits.memory_limit_bytes, 2 << 20);
        assert_eq!(resolved[0].limits.memory_limit_bytes, 64 << 20);
    }
}
