//! The crate's error type: every way loading or configuring a plugin can fail,
//! with text that says what failed and what to do. Parse failures are not
//! errors: they become `@error` fields on the events (see `event`).

use std::path::PathBuf;

/// Why a plugin or the parser configuration could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot read plugin `{plugin}` at {path}: {source}; check `path` in [parsers.plugins.{plugin}] and run plugins/build.sh for built-in plugins"
    )]
    ReadPlugin {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "plugin `{plugin}` ({path}) is not a valid Weir parser component: {reason}; build it for wasm32-wasip2 against wit/parser.wit (see plugins/README.md)"
    )]
    InvalidPlugin {
        plugin: String,
        path: PathBuf,
        reason: String,
    },

    #[error(
        "plugin `{plugin}` could not start: {reason}; check its memory_limit_bytes and batch_deadline_ms, or the plugin itself"
    )]
    Instantiate { plugin: String, reason: String },

    #[error(
        "plugin `{plugin}` rejected its settings: {reason}; fix [parsers.plugins.{plugin}.settings]"
    )]
    Configure { plugin: String, reason: String },

    #[error("plugin `{plugin}` has no setting `{setting}`; it takes: {known}")]
    UnknownSetting {
        plugin: String,
        setting: String,
        known: String,
    },

    #[error(
        "parser `{name}` named by {referenced_by} is not configured; add [parsers.plugins.{name}] or fix the name (parsers: {known}; a plugin found in plugin_dir goes by the name it declares, not its file name)"
    )]
    UnknownParser {
        name: String,
        referenced_by: String,
        /// The parsers that are configured, comma-separated.
        known: String,
    },

    #[error(
        "two plugins in plugin_dir declare the name `{name}`: {} and {}; keep one of them in plugin_dir (a file elsewhere can be loaded under a name of your choice with [parsers.plugins.NAME] path = ...)",
        .first.display(),
        .second.display()
    )]
    DuplicateParser {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },

    #[error(
        "refusing the plugin cache directory {path}: {reason}; cached plugins are native code the core runs, so the directory must belong to the user running the core and be writable by no one else: `chown` it to that user and `chmod 700` it, or set [parsers] cache_dir to a directory that is"
    )]
    CacheDir { path: PathBuf, reason: String },

    #[error(
        "refusing the plugin cache key {path}: {reason}; it must be a {len}-byte file owned by the user running the core, mode 0600: fix its owner and mode, or delete it (a new key is made at start, and every cached plugin is compiled again once)",
        len = 32
    )]
    CacheKey { path: PathBuf, reason: String },

    #[error("invalid [parsers] configuration: {0}")]
    Config(String),

    #[error(
        "cannot read the settings file {path}: {reason}; it is TOML like a [parsers.plugins.NAME] entry, e.g. `settings = {{ pattern = '...' }}`"
    )]
    SettingsFile { path: PathBuf, reason: String },

    #[error("cannot make the plugin project: {0}")]
    Scaffold(String),

    #[error("cannot read the expected events {path}: {reason}; it holds one JSON object per event, as `plugin test` prints them")]
    ExpectedFile { path: PathBuf, reason: String },

    #[error(
        "the events differ from {path} at event {event}: expected {expected}, got {got}; fix the plugin, or the file if the new output is right"
    )]
    Unexpected {
        path: PathBuf,
        /// 1-based.
        event: usize,
        expected: String,
        got: String,
    },

    #[error("cannot write the plugin test output: {0}")]
    Output(#[from] std::io::Error),
}
