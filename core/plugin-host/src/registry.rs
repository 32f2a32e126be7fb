//! The registry the core's digest calls: every configured plugin, loaded and
//! checked at start, and the routing of a batch to its parser (ingest token,
//! then repository, then the default). Synchronous, `Send + Sync`; callers on
//! an async runtime use `spawn_blocking`. It must never fail a batch: events
//! without a parser come back unparsed, failures come back as error events.

use crate::config::ParsersConfig;
use crate::error::Error;
use crate::event::Event;
use crate::event::RawEvent;
use crate::plugin::{ParseStats, Plugin, PluginInfo, Runtime};
use crate::sandbox::{self, EpochTicker};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Every configured parser plugin, ready to parse batches.
pub struct ParserRegistry {
    plugins: BTreeMap<String, Plugin>,
    default: Option<String>,
    by_repository: BTreeMap<String, String>,
    by_token: BTreeMap<String, String>,
    runtime: Runtime,
    _ticker: EpochTicker,
}

impl ParserRegistry {
    /// Loads and configures every plugin of `config`; fails on the first
    /// missing file, invalid component, unknown setting or rejected settings.
    pub fn new(config: &ParsersConfig) -> Result<Self, Error> {
        let resolved = config.resolve()?;
        let engine = sandbox::engine().map_err(Error::Config)?;
        let ticker = EpochTicker::start(&engine);
        let runtime = Runtime::new(
            engine,
            config.cache_dir.clone(),
            config.max_idle_instances,
            Duration::from_millis(config.reload_check_ms),
        )?;
        let mut plugins = BTreeMap::new();
        // The files of plugin_dir by the name they declare, to refuse a name declared twice.
        let mut declared_by: BTreeMap<String, PathBuf> = BTreeMap::new();
        // `resolve` lists the configured plugins first.
        for p in resolved {
            if !p.discovered {
                plugins.insert(p.name.clone(), Plugin::load(&runtime, p)?);
                continue;
            }
            let (stem, path) = (p.name.clone(), p.path.clone());
            let mut plugin = match Plugin::load(&runtime, p) {
                Ok(plugin) => plugin,
                // A file dropped into plugin_dir must not stop the node.
                Err(e) => {
                    tracing::warn!(plugin = %stem, path = %path.display(), error = %e, "skipping plugin found in plugin_dir");
                    continue;
                }
            };
            let name = plugin.info().plugin_name;
            if name.trim().is_empty() {
                tracing::warn!(path = %path.display(), "skipping plugin found in plugin_dir: it declares an empty name");
                continue;
            }
            if let Some(first) = declared_by.insert(name.clone(), path.clone()) {
                return Err(Error::DuplicateParser {
                    name,
                    first,
                    second: path,
                });
            }
            if plugins.contains_key(&name) {
                tracing::info!(plugin = %name, path = %path.display(), "plugin found in plugin_dir has the name of a [parsers.plugins] entry; the entry is used");
                continue;
            }
            if name != stem {
                tracing::info!(plugin = %name, path = %path.display(), "plugin found in plugin_dir goes by the name it declares");
            }
            plugin.rename(&name);
            plugins.insert(name, plugin);
        }
        for (name, referenced_by) in config.routes() {
            if !plugins.contains_key(name) {
                return Err(Error::UnknownParser {
                    name: name.to_string(),
                    referenced_by,
                    known: plugins.keys().map(String::as_str).collect::<Vec<_>>().join(", "),
                });
            }
        }
        Ok(ParserRegistry {
            plugins,
            default: config.default.clone(),
            by_repository: config.by_repository.clone(),
            by_token: config.by_token.clone(),
            runtime,
            _ticker: ticker,
        })
    }

    /// The parser for a repository and optional ingest token: the token's,
    /// else the repository's, else the default.
    pub fn parser_for(&self, repository: &str, token: Option<&str>) -> Option<&str> {
        token
            .and_then(|t| self.by_token.get(t))
            .or_else(|| self.by_repository.get(repository))
            .or(self.default.as_ref())
            .map(String::as_str)
    }

    /// Parses a batch with the parser chosen for `repository` / `token`.
    /// Returns every event: parsed, unparsed (no parser chosen) or with
    /// `@error` fields. One input may yield zero or several events if the
    /// plugin splits or drops lines; failures always yield exactly one.
    pub fn parse(&self, repository: &str, token: Option<&str>, batch: Vec<RawEvent>) -> Vec<Event> {
        match self.parser_for(repository, token) {
            Some(name) => self.parse_with(name, batch).unwrap_or_default(),
            None => batch.into_iter().map(|e| Event::unparsed(e.raw)).collect(),
        }
    }

    /// Parses a batch with a named parser; `None` if no such parser exists.
    pub fn parse_with(&self, parser: &str, batch: Vec<RawEvent>) -> Option<Vec<Event>> {
        self.parse_with_stats(parser, batch)
            .map(|(events, _)| events)
    }

    /// [`ParserRegistry::parse_with`], and what it took: calls into the
    /// plugin, re-runs to isolate failures, events failed alone or left
    /// unresolved.
    pub fn parse_with_stats(
        &self,
        parser: &str,
        batch: Vec<RawEvent>,
    ) -> Option<(Vec<Event>, ParseStats)> {
        self.plugins
            .get(parser)
            .map(|p| p.parse(&self.runtime, batch))
    }

    /// The parser names: `[parsers.plugins]` keys and, for the files of
    /// `plugin_dir`, the names the plugins declare.
    pub fn parsers(&self) -> impl Iterator<Item = &str> {
        self.plugins.keys().map(String::as_str)
    }

    /// What a parser's plugin says about itself (current version).
    pub fn info(&self, parser: &str) -> Option<PluginInfo> {
        self.plugins.get(parser).map(Plugin::info)
    }
}
