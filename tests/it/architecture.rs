//! `ARCHITECTURE.md` kept true by the build: every path it names exists, its code map names
//! every room of `core/src`, and the rooms' boundaries hold in the code (only
//! `core/src/kafka` uses rdkafka, only `core/plugin-host` uses wasmtime).

use std::path::{Path, PathBuf};

use weir_tests::gate;

fn architecture() -> String {
    std::fs::read_to_string(weir_tests::workspace_root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md at the workspace root")
}

/// The backquoted spans of `text` that name a file or directory of the repository.
fn named_paths(text: &str) -> Vec<String> {
    const ROOTS: [&str; 8] = ["common/", "core/", "edge/", "plugins/", "wit/", "tests/", "deploy/", ".ci/"];
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| ROOTS.iter().any(|root| span.starts_with(root)))
        // Globs, placeholders and prose are not paths.
        .filter(|span| !span.contains(|c: char| c.is_whitespace() || "*{}<>|".contains(c)))
        .map(|span| span.trim_end_matches('/').to_owned())
        .collect()
}

#[test]
fn every_path_architecture_md_names_exists() {
    let _gate = gate::shared();
    let root = weir_tests::workspace_root();
    let text = architecture();
    let paths = named_paths(&text);
    assert!(paths.len() > 20, "found only {} paths in ARCHITECTURE.md: {paths:?}", paths.len());
    let missing: Vec<&String> = paths.iter().filter(|p| !root.join(p).exists()).collect();
    assert!(missing.is_empty(), "ARCHITECTURE.md names paths that do not exist; fix the text or the tree: {missing:?}");
}

#[test]
fn the_code_map_names_every_room_of_the_core() {
    let _gate = gate::shared();
    let root = weir_tests::workspace_root();
    let text = architecture();
    let mut unnamed = Vec::new();
    for entry in std::fs::read_dir(root.join("core/src")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let named = if entry.path().is_dir() {
            text.contains(&format!("`core/src/{name}`"))
        } else {
            let stem = name.trim_end_matches(".rs");
            // The wiring files are named as such; the others by module name.
            matches!(stem, "lib" | "main" | "config") || text.contains(&format!("`{stem}`"))
        };
        if !named {
            unnamed.push(name);
        }
    }
    assert!(unnamed.is_empty(), "core/src has rooms the code map in ARCHITECTURE.md does not name: {unnamed:?}");
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !matches!(entry.file_name().to_str(), Some("target" | "tests" | "benches")) {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Files of the production crates (not tests or benches) that use `crate_name` in code,
/// outside `allowed`.
fn users_outside(crate_name: &str, allowed: &str) -> Vec<String> {
    let root = weir_tests::workspace_root();
    let mut files = Vec::new();
    for dir in ["common", "core", "edge"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 30, "found only {} Rust files", files.len());
    let used = [format!("{crate_name}::"), format!("use {crate_name}")];
    files
        .iter()
        .filter(|file| !file.starts_with(root.join(allowed)))
        .filter(|file| {
            let text = std::fs::read_to_string(file).unwrap();
            text.lines().filter(|l| !l.trim_start().starts_with("//")).any(|l| used.iter().any(|u| l.contains(u.as_str())))
        })
        .map(|file| file.strip_prefix(&root).unwrap_or(file).display().to_string())
        .collect()
}

#[test]
fn only_the_kafka_room_uses_rdkafka_and_only_the_plugin_host_uses_wasmtime() {
    let _gate = gate::shared();
    let rdkafka = users_outside("rdkafka", "core/src/kafka");
    assert!(rdkafka.is_empty(), "only core/src/kafka may use rdkafka (ARCHITECTURE.md); move the Kafka part there: {rdkafka:?}");
    let wasmtime = users_outside("wasmtime", "core/plugin-host");
    assert!(wasmtime.is_empty(), "only core/plugin-host may use wasmtime: {wasmtime:?}");
}
