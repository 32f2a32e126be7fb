//! `weir-core plugin test PLUGIN.wasm [--config FILE] [--expect FILE]`: runs
//! one plugin on lines from stdin as a user would, writing each event as a JSON
//! line (errors included) and a summary on stderr, and compares the events with
//! the expected ones if asked. Owns that output format; the clap wiring lives in
//! the core binary. It must never stop on a bad line.

use crate::event::RawEvent;
use crate::config::{ParsersConfig, PluginConfig};
use crate::error::Error;
use crate::registry::ParserRegistry;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Lines sent to the plugin per call.
const BATCH: usize = 256;

/// What `plugin_test` did.
#[derive(Debug, Clone, PartialEq)]
pub struct TestSummary {
    /// The plugin's own name and version (`describe`).
    pub plugin: String,
    pub version: String,
    /// Non-blank input lines read.
    pub lines: usize,
    /// Events written (parsed or failed).
    pub events: usize,
    /// Events written with an `@error` field.
    pub failed: usize,
    /// Time spent in the plugin, all batches together.
    pub elapsed: Duration,
}

/// Runs `plugin` on every non-blank line of `input`, writes one JSON object per
/// event to `out` (see [`crate::Event::to_json`]) and a one-line summary to
/// `err`. `settings_file` is TOML shaped like a `[parsers.plugins.NAME]`
/// entry without `path`, e.g. `settings = { pattern = '^(?P<a>\w+)' }` plus
/// optional `batch_deadline_ms`, `memory_limit_bytes`, `allow_clock`.
/// Compiled components are cached in `${WEIR_CACHE_DIR:-$HOME/.cache/weir}/components`.
pub fn plugin_test(
    plugin: &Path,
    settings_file: Option<&Path>,
    input: impl BufRead,
    mut out: impl Write,
    mut err: impl Write,
) -> Result<TestSummary, Error> {
    let mut entry = match settings_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::SettingsFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            toml::from_str::<PluginConfig>(&text).map_err(|e| Error::SettingsFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?
        }
        None => PluginConfig::default(),
    };
    entry.path = plugin.to_path_buf();
    let load = |name: &str| {
        let config = ParsersConfig {
            plugins: [(name.to_string(), entry.clone())].into(),
            cache_dir: user_cache_dir(),
            reload_check_ms: u64::MAX / 4,
            ..ParsersConfig::default()
        };
        let registry = ParserRegistry::new(&config)?;
        let info = registry
            .info(name)
            .ok_or_else(|| Error::Config(format!("plugin `{name}` did not load")))?;
        Ok::<_, Error>((registry, info))
    };
    let stem = plugin
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let (mut registry, mut info) = load(stem)?;
    // Events name the parser (`@parser`, `@error_msg`) as the plugin names itself, not as
    // its file is named (`my_parser.wasm` from crate `my-parser`): loaded again under that
    // name, from the compile cache.
    let name = info.plugin_name.clone();
    if name != stem {
        (registry, info) = load(&name)?;
    }
    let mut summary = TestSummary {
        plugin: info.plugin_name.clone(),
        version: info.version.clone(),
        lines: 0,
        events: 0,
        failed: 0,
        elapsed: Duration::ZERO,
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut batch_time = 0;
    let mut lines = input.lines();
    loop {
        let line = lines.next().transpose()?;
        if let Some(line) = &line {
            let line = line.trim_end_matches('\r');
            if !line.trim().is_empty() {
                summary.lines += 1;
                // One ingest time per batch: events sharing it go to the
                // plugin in one call (the contract's `batch-context`).
                if batch.is_empty() {
                    batch_time = now_ns();
                }
                batch.push(RawEvent::new(line, "plugin-test", batch_time));
            }
        }
        if batch.len() == BATCH || (line.is_none() && !batch.is_empty()) {
            let started = Instant::now();
            let events = registry
                .parse_with(&name, std::mem::take(&mut batch))
                .unwrap_or_default();
            summary.elapsed += started.elapsed();
            for event in &events {
                serde_json::to_writer(&mut out, &event.to_json()).map_err(std::io::Error::other)?;
                out.write_all(b"\n")?;
                summary.events += 1;
                summary.failed += usize::from(event.error().is_some());
            }
        }
        if line.is_none() {
            break;
        }
    }
    out.flush()?;
    writeln!(
        err,
        "plugin {} {} (blake3 {}): {} lines -> {} events, {} failed, {:.1} ms in the plugin",
        summary.plugin,
        summary.version,
        &info.hash[..16],
        summary.lines,
        summary.events,
        summary.failed,
        summary.elapsed.as_secs_f64() * 1000.0
    )?;
    Ok(summary)
}

/// [`plugin_test`], then compares the events it wrote with the JSON lines of
/// `expected` (as JSON values, so key order and spacing do not matter); the first
/// difference is the error.
pub fn plugin_test_expect(
    plugin: &Path,
    settings_file: Option<&Path>,
    input: impl BufRead,
    expected: &Path,
    mut out: impl Write,
    err: impl Write,
) -> Result<TestSummary, Error> {
    let mut written = Vec::new();
    let summary = plugin_test(plugin, settings_file, input, &mut written, err)?;
    out.write_all(&written)?;
    out.flush()?;
    let want = std::fs::read_to_string(expected).map_err(|e| Error::ExpectedFile {
        path: expected.to_path_buf(),
        reason: e.to_string(),
    })?;
    let values = |text: &str| -> Vec<(String, Option<serde_json::Value>)> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| (l.to_string(), serde_json::from_str(l).ok()))
            .collect()
    };
    let (want, got) = (values(&want), values(&String::from_utf8_lossy(&written)));
    for i in 0..want.len().max(got.len()) {
        let (w, g) = (want.get(i), got.get(i));
        let same = matches!((w, g), (Some((_, Some(a))), Some((_, Some(b)))) if a == b);
        if !same {
            let text = |e: Option<&(String, Option<serde_json::Value>)>| {
                e.map_or_else(|| "no more events".to_string(), |(line, _)| line.clone())
            };
            return Err(Error::Unexpected {
                path: expected.to_path_buf(),
                event: i + 1,
                expected: text(w),
                got: text(g),
            });
        }
    }
    Ok(summary)
}

fn user_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("WEIR_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/weir")))?;
    Some(base.join("components"))
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
