//! Every built plugin is exercised: fails if a `.wasm` in plugins/target/wasm
//! is used by no test, or if a plugin source in plugins/ (Rust crates, plugins/python/NAME,
//! plugins/js/NAME) was not built.

use std::path::Path;

use crate::common;

#[test]
fn every_built_plugin_is_used_by_a_test_and_every_plugin_source_is_built() {
    // The test binary's modules (tests/it/*.rs), this one aside.
    let tests_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it");
    let sources: String = std::fs::read_dir(&tests_dir)
        .expect("tests dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "rs")
                && p.file_name().is_some_and(|n| n != "fixtures.rs")
        })
        .map(|p| std::fs::read_to_string(p).expect("read test source"))
        .collect();

    let plugins_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
    let mut expected: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(&plugins_dir).expect("plugins dir") {
        let manifest = entry.expect("entry").path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        if text.contains("crate-type = [\"cdylib\"]") {
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("name = \"weir-plugin-"))
                .expect("package name");
            expected.push(name.trim_end_matches('"').to_string());
        }
    }
    for entry in std::fs::read_dir(plugins_dir.join("python")).expect("plugins/python") {
        let dir = entry.expect("entry").path();
        if dir.join("app.py").is_file() {
            expected.push(format!(
                "{}-py",
                dir.file_name().expect("name").to_string_lossy()
            ));
        }
    }
    for entry in std::fs::read_dir(plugins_dir.join("js")).expect("plugins/js") {
        let dir = entry.expect("entry").path();
        if dir.join("app.js").is_file() {
            expected.push(format!(
                "{}-js",
                dir.file_name().expect("name").to_string_lossy()
            ));
        }
    }
    assert!(
        expected.len() >= 8,
        "plugin sources not found: {expected:?}"
    );
    for name in &expected {
        common::wasm(name);
    }

    let mut unused = Vec::new();
    for entry in std::fs::read_dir(common::wasm_dir()).expect("wasm dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "wasm") {
            let stem = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .to_string();
            if !sources.contains(&format!("wasm(\"{stem}\")")) {
                unused.push(stem);
            }
        }
    }
    assert!(
        unused.is_empty(),
        "built plugins that no test runs: {unused:?}; add a test or remove the plugin"
    );
}
