//! Repository hygiene that review would otherwise have to catch: every Rust module says
//! what it owns in a `//!` doc, no stubs or debugging leftovers, no ignored tests, no
//! compiled Wasm committed next to the sources.

use std::path::{Path, PathBuf};

use weir_tests::gate;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !matches!(name.as_ref(), "target" | "node_modules" | ".git" | ".weir") {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<PathBuf> {
    let root = weir_tests::workspace_root();
    let mut files = Vec::new();
    for dir in ["common", "core", "edge", "tests", "plugins"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 30, "tidy found only {} Rust files; is the root right?", files.len());
    files
}

#[test]
fn no_stubs_debug_leftovers_or_ignored_tests() {
    let _gate = gate::shared();
    // Built from pieces so that this file does not flag itself.
    let banned = [["todo", "!("].concat(), ["unimplemented", "!("].concat(), ["dbg", "!("].concat(), ["#[", "ignore"].concat()];
    let mut problems = Vec::new();
    for file in sources() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for needle in &banned {
                if line.contains(needle.as_str()) {
                    problems.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "remove these:\n{}", problems.join("\n"));
}

#[test]
fn every_library_module_has_a_doc_comment() {
    let _gate = gate::shared();
    let mut missing = Vec::new();
    for file in sources() {
        let path = file.to_string_lossy();
        // Library and binary sources; integration tests and benches document themselves
        // by their names.
        if !path.contains("/src/") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            missing.push(path.into_owned());
        }
    }
    assert!(missing.is_empty(), "add a `//!` doc saying what the module owns:\n{}", missing.join("\n"));
}

#[test]
fn no_compiled_wasm_is_tracked() {
    let _gate = gate::shared();
    let root = weir_tests::workspace_root();
    let output = std::process::Command::new("git").args(["ls-files", "*.wasm", "*.cwasm"]).current_dir(&root).output();
    // Outside a git checkout (a source tarball) there is nothing to check.
    if let Ok(output) = output
        && output.status.success()
    {
        let tracked = String::from_utf8_lossy(&output.stdout);
        assert!(tracked.trim().is_empty(), "compiled Wasm is committed; build it from source instead:\n{tracked}");
    }
    // Nor an npm tree: plugins/build.sh installs the JavaScript toolchain under $WEIR_CACHE_DIR.
    let output = std::process::Command::new("git").args(["ls-files", ":(glob)**/node_modules/**"]).current_dir(&root).output();
    if let Ok(output) = output
        && output.status.success()
    {
        let tracked = String::from_utf8_lossy(&output.stdout);
        assert!(tracked.trim().is_empty(), "node_modules is committed; plugins/build.sh installs it from package-lock.json:\n{tracked}");
    }
}

/// The edge stays light (DESIGN: it must not link wasmtime, rdkafka or the AWS SDK): its
/// normal dependency tree, as cargo resolves it from the lock file, holds none of them.
#[test]
fn the_edge_links_neither_wasmtime_nor_rdkafka_nor_the_aws_sdk() {
    let _gate = gate::shared();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .current_dir(weir_tests::workspace_root())
        .args(["tree", "--locked", "--offline", "-p", "weir-edge", "-e", "normal", "--prefix", "none"])
        .output()
        .expect("run cargo tree");
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(tree.lines().any(|l| l.starts_with("quinn ")), "the tree is the edge's: {tree}");
    let forbidden: Vec<&str> =
        tree.lines().filter(|l| l.starts_with("wasmtime") || l.starts_with("rdkafka") || l.starts_with("aws-")).collect();
    assert!(forbidden.is_empty(), "the edge links {forbidden:?}");
}

/// Every test of this binary takes its place on the machine (`weir_tests::gate`) first:
/// one that forgot would run beside a test that must run alone and could break its
/// timing or memory bound.
#[test]
fn every_integration_test_takes_its_gate() {
    let _gate = gate::shared();
    let dir = weir_tests::workspace_root().join("tests/it");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        // Built from pieces so that this file's own text does not count.
        let tests = text.matches(["#[", "test]"].concat().as_str()).count() + text.matches(["#[", "tokio::test"].concat().as_str()).count();
        let gates = text.matches(["let _gate = ", "gate::"].concat().as_str()).count();
        if tests != gates {
            missing.push(format!("{}: {tests} tests, {gates} gates", entry.file_name().to_string_lossy()));
        }
    }
    assert!(missing.is_empty(), "start every test by binding `gate::shared()` (or `gate::alone()`) to `_gate`:\n{}", missing.join("\n"));
}
