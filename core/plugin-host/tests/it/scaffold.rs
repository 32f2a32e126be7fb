//! `weir-core plugin new`: a project made in a temporary directory, outside the
//! repository, builds with the command its README gives and passes `plugin test --expect`
//! on its own test files, in Rust, Python and JavaScript; the events name the parser as the
//! plugin names itself, not as its file is named.

use std::path::{Path, PathBuf};
use std::process::Command;
use weir_plugin_host::scaffold::{Lang, NewPlugin, componentize_js_version, componentize_py_version, new_plugin};
use weir_plugin_host::{Error, plugin_test_expect};

/// Runs `command`; on failure panics with the command, its directory and its output.
fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} in {:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        command.get_current_dir(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `plugin test --expect test/expected.jsonl < test/input.txt`, as the README says.
fn plugin_test_on_its_files(project: &NewPlugin, wasm: &Path) -> Result<weir_plugin_host::TestSummary, Error> {
    let input = std::fs::read(project.dir.join("test/input.txt")).unwrap();
    plugin_test_expect(wasm, None, input.as_slice(), &project.dir.join("test/expected.jsonl"), std::io::sink(), std::io::sink())
}

fn cache_dir() -> PathBuf {
    std::env::var_os("WEIR_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/weir"))
}

#[test]
fn a_new_rust_plugin_builds_outside_the_repository_and_passes_its_test() {
    let dir = tempfile::tempdir().unwrap();
    let project = new_plugin("my-level", Lang::Rust, dir.path()).unwrap();
    let readme = std::fs::read_to_string(project.dir.join("README.md")).unwrap();
    assert!(readme.contains(&project.build), "the README gives the build command:\n{readme}");
    assert!(readme.contains(&project.wasm.display().to_string()), "and the file it writes:\n{readme}");
    // The README's command, offline: plugins/build.sh has fetched every crate the project's
    // Cargo.lock pins. Its own target directory, kept across runs, for speed.
    let plugins_target =
        std::env::var_os("WEIR_PLUGINS_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/target"));
    let target = plugins_target.join("scaffold-rust");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut args: Vec<&str> = project.build.split(' ').skip(1).collect();
    args.push("--offline");
    run(Command::new(cargo).args(&args).arg("--target-dir").arg(&target).current_dir(&project.dir));
    let wasm = target.join(project.wasm.strip_prefix("target").unwrap());
    assert_eq!(wasm.file_name().unwrap(), "my_level.wasm", "the file is named by the crate's lib name");

    let summary = plugin_test_on_its_files(&project, &wasm).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((summary.plugin.as_str(), summary.lines, summary.events, summary.failed), ("my-level", 3, 3, 1));

    // A difference is an error naming the event.
    let expected = project.dir.join("test/expected.jsonl");
    let text = std::fs::read_to_string(&expected).unwrap();
    std::fs::write(&expected, text.replace("disk 91% full\"", "disk 92% full\"")).unwrap();
    match plugin_test_on_its_files(&project, &wasm) {
        Err(Error::Unexpected { event: 2, .. }) => {}
        other => panic!("expected a difference at event 2, got {other:?}"),
    }
    std::fs::write(&expected, text.lines().take(2).collect::<Vec<_>>().join("\n")).unwrap();
    match plugin_test_on_its_files(&project, &wasm) {
        Err(Error::Unexpected { event: 3, expected, .. }) => assert_eq!(expected, "no more events"),
        other => panic!("expected an extra event 3, got {other:?}"),
    }
}

#[test]
fn a_new_python_plugin_builds_outside_the_repository_and_passes_its_test() {
    let componentize_py = cache_dir().join(format!("componentize-py-{}/bin/componentize-py", componentize_py_version()));
    assert!(componentize_py.is_file(), "{} is missing: run `bash plugins/build.sh` first", componentize_py.display());
    let dir = tempfile::tempdir().unwrap();
    let project = new_plugin("level-py", Lang::Python, dir.path()).unwrap();
    let readme = std::fs::read_to_string(project.dir.join("README.md")).unwrap();
    assert!(readme.contains(&project.build), "the README gives the build command:\n{readme}");
    assert!(readme.contains(&format!("componentize-py=={}", componentize_py_version())), "{readme}");
    // The README's command with the componentize-py plugins/build.sh installed.
    let args: Vec<&str> = project.build.split(' ').skip(1).collect();
    run(Command::new(&componentize_py).args(&args).current_dir(&project.dir));

    let summary = plugin_test_on_its_files(&project, &project.dir.join(&project.wasm)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((summary.plugin.as_str(), summary.lines, summary.events, summary.failed), ("level-py", 3, 3, 1));
}

#[test]
fn a_new_js_plugin_builds_outside_the_repository_and_passes_its_test() {
    // plugins/build.sh installs the toolchain the lockfile pins into js-<its sha256, 16 hex>.
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/js/package-lock.json");
    let sha = Command::new("sha256sum").arg(&lock).output().expect("sha256sum");
    let key = String::from_utf8_lossy(&sha.stdout)[..16].to_string();
    let node_modules = cache_dir().join(format!("js-{key}/node_modules"));
    assert!(node_modules.join(".bin/componentize-js").is_file(), "{} is missing: run `bash plugins/build.sh` first", node_modules.display());

    let dir = tempfile::tempdir().unwrap();
    let project = new_plugin("level-js", Lang::Js, dir.path()).unwrap();
    let readme = std::fs::read_to_string(project.dir.join("README.md")).unwrap();
    assert!(readme.contains(&project.build), "the README gives the build command:\n{readme}");
    assert!(readme.contains(&format!("componentize-js {}", componentize_js_version())), "{readme}");
    // The project pins exactly the tree plugins/build.sh installed: `npm ci` would make the
    // same node_modules, so the test borrows that one (offline) and runs the README's
    // command from `npm run build` on.
    let project_lock = std::fs::read_to_string(project.dir.join("package-lock.json")).unwrap();
    let lock = std::fs::read_to_string(&lock).unwrap();
    assert_eq!(project_lock.replace("\"name\": \"level-js\"", "\"name\": \"weir-js-plugins\""), lock);
    std::os::unix::fs::symlink(&node_modules, project.dir.join("node_modules")).unwrap();
    let (npm_ci, build) = project.build.split_once(" && ").expect("npm ci && npm run build");
    assert_eq!(npm_ci, "npm ci");
    let args: Vec<&str> = build.split(' ').skip(1).collect();
    run(Command::new("npm").args(&args).current_dir(&project.dir));

    let wasm = project.dir.join(&project.wasm);
    let summary = plugin_test_on_its_files(&project, &wasm).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((summary.plugin.as_str(), summary.lines, summary.events, summary.failed), ("level-js", 3, 3, 1));

    // Its setting goes through the JavaScript `configure`.
    let settings = project.dir.join("settings.toml");
    std::fs::write(&settings, "[settings]\nfield = \"severity\"\n").unwrap();
    let mut out = Vec::new();
    weir_plugin_host::plugin_test(&wasm, Some(&settings), "WARN disk full\n".as_bytes(), &mut out, std::io::sink()).unwrap_or_else(|e| panic!("{e}"));
    let event: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(event["fields"]["severity"], "WARN", "{event}");
}
