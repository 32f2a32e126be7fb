//! Shared test helpers: where the built plugins are, a registry for one
//! plugin, and the table-driven `check` of parsed events.
#![allow(dead_code)]

use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use weir_plugin_host::{Event, ParserRegistry, ParsersConfig, PluginConfig, RawEvent};

/// 2024-06-15T12:00:00Z: the ingest time of every test event.
pub const INGEST_NS: i64 = 1_718_452_800_000_000_000;

/// `plugins/target/wasm`.
pub fn wasm_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/target/wasm")
}

/// The built plugin `name`; panics with what to run when it is missing.
pub fn wasm(name: &str) -> PathBuf {
    let path = wasm_dir().join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "plugin {} is not built: run `bash plugins/build.sh` from the repository root first",
        path.display()
    );
    path
}

/// Compiled components shared by all tests (compiling kv-py takes seconds).
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/target/host-test-cache")
}

/// A config with fast test limits and no plugins.
pub fn test_config() -> ParsersConfig {
    ParsersConfig {
        batch_deadline_ms: 300,
        cache_dir: Some(cache_dir()),
        reload_check_ms: 0,
        ..ParsersConfig::default()
    }
}

/// A registry holding one plugin under `name`, the default parser.
pub fn registry(name: &str, plugin: PluginConfig) -> ParserRegistry {
    let mut config = test_config();
    config.plugins.insert(name.to_string(), plugin);
    config.default = Some(name.to_string());
    ParserRegistry::new(&config).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// Raw events for lines.
pub fn batch(lines: &[&str]) -> Vec<RawEvent> {
    lines
        .iter()
        .map(|l| RawEvent::new(*l, "test", INGEST_NS))
        .collect()
}

/// One row of a parser table.
pub struct Case {
    pub line: &'static str,
    /// Expected fields (a subset), as JSON values; ignored when `error` is set.
    pub fields: Json,
    /// Expected timestamp, RFC 3339 as `Event::to_json` writes it.
    pub timestamp: Option<&'static str>,
    /// Expected parse failure: a fragment of `@error_msg`.
    pub error: Option<&'static str>,
}

pub fn ok(line: &'static str, timestamp: Option<&'static str>, fields: Json) -> Case {
    Case {
        line,
        fields,
        timestamp,
        error: None,
    }
}

pub fn fails(line: &'static str, error: &'static str) -> Case {
    Case {
        line,
        fields: Json::Null,
        timestamp: None,
        error: Some(error),
    }
}

/// Parses every line of `cases` in one batch with the default parser and
/// checks each event; reports every mismatch at once.
pub fn check(registry: &ParserRegistry, cases: &[Case]) -> Vec<Event> {
    let lines: Vec<&str> = cases.iter().map(|c| c.line).collect();
    let events = registry.parse("test", None, batch(&lines));
    assert_eq!(events.len(), cases.len(), "one event per line expected");
    let mut problems = Vec::new();
    for (case, event) in cases.iter().zip(&events) {
        let json = event.to_json();
        if event.raw != case.line {
            problems.push(format!("{}: raw text not kept: {:?}", case.line, event.raw));
        }
        match case.error {
            Some(fragment) => {
                let msg = event.error_msg().unwrap_or("");
                if event.error() != Some("parse_failed") || !msg.contains(fragment) {
                    problems.push(format!(
                        "{}: expected a parse failure mentioning {fragment:?}, got {json}",
                        case.line
                    ));
                }
            }
            None => {
                if let Some(err) = event.error_msg() {
                    problems.push(format!("{}: unexpected failure: {err}", case.line));
                    continue;
                }
                for (name, want) in case
                    .fields
                    .as_object()
                    .expect("fields must be a JSON object")
                {
                    let got = &json["fields"][name];
                    if got != want {
                        problems.push(format!(
                            "{}: field {name}: expected {want}, got {got}",
                            case.line
                        ));
                    }
                }
                let ts = json["timestamp"].as_str();
                if ts != case.timestamp {
                    problems.push(format!(
                        "{}: timestamp: expected {:?}, got {ts:?}",
                        case.line, case.timestamp
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );
    events
}
