//! `weir-core plugin new NAME --lang rust|python|js`: writes a parser plugin project that
//! builds on its own, outside Weir's repository, with a test input and the events
//! `plugin test --expect` must see. Owns the project layout; the templates live in
//! `templates/`.
//!
//! The Rust SDK and the contract are vendored into each project from copies compiled into
//! this binary (`include_str!` of `plugins/sdk`, `plugins/parsers` and `wit/`): an
//! installed `weir-core` has no checkout to point a path dependency at, and a git
//! dependency needs the network; a vendored copy builds offline and matches the contract
//! of the core that made it. Their manifests are rewritten from the plugins workspace's
//! (`plugins/Cargo.toml`), and `plugins/Cargo.lock` pins the crates they pull in. A
//! JavaScript project likewise gets `plugins/js`'s writer, typings and npm pins (its
//! `package.json` and `package-lock.json`, renamed), so it builds with the componentize-js
//! that `plugins/build.sh` uses. It must
//! never overwrite a file: an existing project directory that is not empty is refused.

use crate::error::Error;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The language of a new plugin project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl FromStr for Lang {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rust" => Ok(Lang::Rust),
            "python" => Ok(Lang::Python),
            "js" | "javascript" => Ok(Lang::Js),
            other => Err(format!("unknown language `{other}`; plugins are written in: rust, python, js")),
        }
    }
}

const WIT: &str = include_str!("../../../wit/parser.wit");
const WORKSPACE_MANIFEST: &str = include_str!("../../../plugins/Cargo.toml");
const WORKSPACE_LOCK: &str = include_str!("../../../plugins/Cargo.lock");
const PLUGINS_BUILD_SH: &str = include_str!("../../../plugins/build.sh");
const SDK_MANIFEST: &str = include_str!("../../../plugins/sdk/Cargo.toml");
const SDK_SOURCES: &[(&str, &str)] = &[
    ("lib.rs", include_str!("../../../plugins/sdk/src/lib.rs")),
    ("output.rs", include_str!("../../../plugins/sdk/src/output.rs")),
    ("arena.rs", include_str!("../../../plugins/sdk/src/arena.rs")),
];
const PARSERS_MANIFEST: &str = include_str!("../../../plugins/parsers/Cargo.toml");
const PARSERS_SOURCES: &[(&str, &str)] = &[
    ("lib.rs", include_str!("../../../plugins/parsers/src/lib.rs")),
    ("model.rs", include_str!("../../../plugins/parsers/src/model.rs")),
    ("time.rs", include_str!("../../../plugins/parsers/src/time.rs")),
    ("json.rs", include_str!("../../../plugins/parsers/src/json.rs")),
    ("kv.rs", include_str!("../../../plugins/parsers/src/kv.rs")),
    ("syslog.rs", include_str!("../../../plugins/parsers/src/syslog.rs")),
    ("access.rs", include_str!("../../../plugins/parsers/src/access.rs")),
    ("pattern.rs", include_str!("../../../plugins/parsers/src/pattern.rs")),
];
const PYTHON_OUTPUT: &str = include_str!("../../../plugins/python/weir_output.py");
const JS_PACKAGE: &str = include_str!("../../../plugins/js/package.json");
const JS_LOCK: &str = include_str!("../../../plugins/js/package-lock.json");
const JS_FILES: &[(&str, &str)] = &[
    ("weir-output.js", include_str!("../../../plugins/js/weir-output.js")),
    ("weir-output.d.ts", include_str!("../../../plugins/js/weir-output.d.ts")),
    ("types/parser.d.ts", include_str!("../../../plugins/js/types/parser.d.ts")),
    ("types/interfaces/weir-parser-types.d.ts", include_str!("../../../plugins/js/types/interfaces/weir-parser-types.d.ts")),
];
/// The name `plugins/js/package.json` and its lockfile give the toolchain's package.
const JS_PACKAGE_NAME: &str = "weir-js-plugins";

const RUST_MANIFEST: &str = include_str!("../templates/rust/Cargo.toml.in");
const RUST_LIB: &str = include_str!("../templates/rust/lib.rs.in");
const RUST_README: &str = include_str!("../templates/rust/README.md");
const PYTHON_APP: &str = include_str!("../templates/python/app.py.in");
const PYTHON_README: &str = include_str!("../templates/python/README.md");
const JS_APP: &str = include_str!("../templates/js/app.js.in");
const JS_README: &str = include_str!("../templates/js/README.md");
const TEST_INPUT: &str = include_str!("../templates/test/input.txt");
const TEST_EXPECTED: &str = include_str!("../templates/test/expected.jsonl");
const GITIGNORE: &str = include_str!("../templates/gitignore");

/// The componentize-py version `plugins/build.sh` pins, which a Python project's README
/// names.
pub fn componentize_py_version() -> &'static str {
    PLUGINS_BUILD_SH.lines().find_map(|l| l.strip_prefix("COMPONENTIZE_PY_VERSION=")).map_or("0", str::trim)
}

/// The componentize-js version `plugins/js/package.json` pins, which a JavaScript
/// project's README names.
pub fn componentize_js_version() -> &'static str {
    JS_PACKAGE
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"@bytecodealliance/componentize-js\": \""))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("0")
}

/// A JavaScript project's `package.json`: `plugins/js`'s, renamed, with the build script.
fn js_package(name: &str) -> Result<String, Error> {
    let build = format!("componentize-js app.js -w wit -n parser -d http fetch-event -o {name}.wasm");
    let package = JS_PACKAGE
        .replacen(&format!("\"name\": \"{JS_PACKAGE_NAME}\""), &format!("\"name\": \"{name}\""), 1)
        .lines()
        .map(|line| match line.trim_start().starts_with("\"description\":") {
            true => format!("  \"description\": \"the {name} Weir parser plugin\","),
            false => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replacen("  \"devDependencies\"", &format!("  \"scripts\": {{\n    \"build\": \"{build}\"\n  }},\n  \"devDependencies\""), 1);
    if !package.contains(&format!("\"name\": \"{name}\"")) || !package.contains("\"scripts\"") {
        return Err(Error::Scaffold("plugins/js/package.json has an unexpected shape (a bug in this weir-core)".into()));
    }
    Ok(package + "\n")
}

/// What a new project is: where it is, and the command lines its README gives.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPlugin {
    /// The project directory (`DIR/NAME`).
    pub dir: PathBuf,
    /// Builds the plugin, run in `dir`.
    pub build: String,
    /// The component the build writes, relative to `dir`.
    pub wasm: PathBuf,
}

/// Writes a `lang` plugin project named `name` into `parent/name`, which must not exist
/// or be empty. `name` is lowercase ASCII letters, digits and `-`, starting with a letter:
/// the plugin's declared name, its crate name and its file name.
pub fn new_plugin(name: &str, lang: Lang, parent: &Path) -> Result<NewPlugin, Error> {
    check_name(name)?;
    let dir = parent.join(name);
    if std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(Error::Scaffold(format!("{} exists and is not empty; choose another name or --dir", dir.display())));
    }
    let lib_name = name.replace('-', "_");
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{lib_name}}", &lib_name)
            .replace("{{componentize_py}}", componentize_py_version())
            .replace("{{componentize_js}}", componentize_js_version())
    };
    let mut files: Vec<(PathBuf, String)> = vec![
        ("wit/parser.wit".into(), WIT.to_string()),
        ("test/input.txt".into(), TEST_INPUT.to_string()),
        ("test/expected.jsonl".into(), fill(TEST_EXPECTED)),
        (".gitignore".into(), GITIGNORE.to_string()),
    ];
    let project = match lang {
        Lang::Rust => {
            files.push(("Cargo.toml".into(), fill(RUST_MANIFEST)));
            files.push(("Cargo.lock".into(), WORKSPACE_LOCK.to_string()));
            files.push(("src/lib.rs".into(), fill(RUST_LIB)));
            files.push(("README.md".into(), fill(RUST_README)));
            files.push(("weir-sdk/sdk/Cargo.toml".into(), standalone_manifest(SDK_MANIFEST)?));
            files.push(("weir-sdk/parsers/Cargo.toml".into(), standalone_manifest(PARSERS_MANIFEST)?));
            for (file, text) in SDK_SOURCES {
                files.push((Path::new("weir-sdk/sdk/src").join(file), text.to_string()));
            }
            for (file, text) in PARSERS_SOURCES {
                files.push((Path::new("weir-sdk/parsers/src").join(file), text.to_string()));
            }
            NewPlugin {
                dir: dir.clone(),
                build: "cargo build --release --target wasm32-wasip2".into(),
                wasm: Path::new("target/wasm32-wasip2/release").join(format!("{lib_name}.wasm")),
            }
        }
        Lang::Python => {
            files.push(("app.py".into(), fill(PYTHON_APP)));
            files.push(("weir_output.py".into(), PYTHON_OUTPUT.to_string()));
            files.push(("README.md".into(), fill(PYTHON_README)));
            NewPlugin {
                dir: dir.clone(),
                build: format!(".venv/bin/componentize-py -d wit -w parser componentize -p . app -o {name}.wasm"),
                wasm: PathBuf::from(format!("{name}.wasm")),
            }
        }
        Lang::Js => {
            files.push(("app.js".into(), fill(JS_APP)));
            files.push(("package.json".into(), js_package(name)?));
            // The toolchain's exact tree; only the root package's name differs.
            files.push(("package-lock.json".into(), JS_LOCK.replace(&format!("\"name\": \"{JS_PACKAGE_NAME}\""), &format!("\"name\": \"{name}\""))));
            for (file, text) in JS_FILES {
                files.push((file.into(), text.to_string()));
            }
            files.push(("README.md".into(), fill(JS_README)));
            NewPlugin {
                dir: dir.clone(),
                build: "npm ci && npm run build".into(),
                wasm: PathBuf::from(format!("{name}.wasm")),
            }
        }
    };
    for (path, text) in files {
        let path = dir.join(path);
        let written = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&path, text));
        written.map_err(|e| Error::Scaffold(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(project)
}

fn check_name(name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && name.len() <= 64;
    if valid {
        Ok(())
    } else {
        Err(Error::Scaffold(format!(
            "invalid plugin name `{name}`: use lowercase letters, digits and `-`, starting with a letter (it is the crate, file and parser name)"
        )))
    }
}

/// A plugins-workspace member's manifest made standalone: `KEY.workspace = true` becomes
/// the workspace's own `KEY = ...` line (a path dependency one directory up, as the
/// vendored crates sit side by side), and `[lints] workspace = true` goes.
fn standalone_manifest(member: &str) -> Result<String, Error> {
    let mut out = String::new();
    let mut lines = member.lines();
    while let Some(line) = lines.next() {
        if line == "[lints]" {
            lines.next();
            continue;
        }
        match line.strip_suffix(".workspace = true") {
            Some(key) => {
                let prefix = format!("{key} = ");
                let from_workspace = WORKSPACE_MANIFEST
                    .lines()
                    .find(|l| l.starts_with(&prefix))
                    .ok_or_else(|| Error::Scaffold(format!("plugins/Cargo.toml has no `{key}` for a vendored manifest (a bug in this weir-core)")))?;
                out.push_str(&from_workspace.replace("path = \"", "path = \"../"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    Ok(out.trim_end().to_string() + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendored_manifests_name_no_workspace() {
        for manifest in [SDK_MANIFEST, PARSERS_MANIFEST] {
            let standalone = standalone_manifest(manifest).unwrap();
            assert!(!standalone.contains("workspace"), "{standalone}");
            toml::from_str::<toml::Table>(&standalone).unwrap();
        }
        let sdk = standalone_manifest(SDK_MANIFEST).unwrap();
        assert!(sdk.contains("weir-parsers = { path = \"../parsers\", default-features = false }"), "{sdk}");
        assert!(sdk.contains("edition = \"2024\""), "{sdk}");
    }

    #[test]
    fn names_are_checked() {
        for good in ["level", "my-parser2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Level", "2x", "a_b", "a-", "../x", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_ne!(componentize_py_version(), "0");
        assert_eq!(componentize_js_version(), "0.23.0");
        assert_eq!("go".parse::<Lang>(), Err("unknown language `go`; plugins are written in: rust, python, js".to_string()));
        assert_eq!("js".parse::<Lang>(), Ok(Lang::Js));
    }

    #[test]
    fn a_js_project_pins_what_plugins_js_pins_under_its_own_name() {
        let package: serde_json::Value = serde_json::from_str(&js_package("my-level").unwrap()).unwrap();
        let pinned: serde_json::Value = serde_json::from_str(JS_PACKAGE).unwrap();
        assert_eq!(package["name"], "my-level");
        assert_eq!(package["devDependencies"], pinned["devDependencies"]);
        assert_eq!(package["overrides"], pinned["overrides"]);
        assert!(package["scripts"]["build"].as_str().unwrap().ends_with("-o my-level.wasm"), "{package}");
        for version in package["devDependencies"].as_object().unwrap().values() {
            assert!(version.as_str().unwrap().chars().all(|c| c.is_ascii_digit() || c == '.'), "exact pins only: {version}");
        }
        let lock: serde_json::Value = serde_json::from_str(JS_LOCK).unwrap();
        assert_eq!((&lock["name"], &lock["packages"][""]["name"]), (&pinned["name"], &pinned["name"]));
        assert_eq!(lock["packages"][""]["devDependencies"], pinned["devDependencies"]);
    }

    #[test]
    fn a_non_empty_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("p")).unwrap();
        std::fs::write(dir.path().join("p/keep"), "x").unwrap();
        assert!(matches!(new_plugin("p", Lang::Rust, dir.path()), Err(Error::Scaffold(_))));
        assert_eq!(std::fs::read_to_string(dir.path().join("p/keep")).unwrap(), "x");
    }
}
