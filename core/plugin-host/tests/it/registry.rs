//! The registry as the core uses it: the `[parsers]` TOML section, routing by
//! token / repository / default, plugin_dir discovery, the compiled-component
//! cache, concurrent callers, and `plugin_test`'s output.

use crate::common::{self, batch, test_config, wasm, wasm_dir};
use std::sync::Arc;
use weir_plugin_host::{Error, ParserRegistry, ParsersConfig, PluginConfig, plugin_test};

fn example_toml() -> String {
    format!(
        r#"
default = "json"
plugin_dir = "{dir}"
batch_deadline_ms = 400
memory_limit_bytes = 268435456
reload_check_ms = 0
cache_dir = "{cache}"

[plugins.nginx]
path = "access.wasm"

[plugins.app]
path = "pattern.wasm"
settings = {{ pattern = '^(?P<level>[A-Z]+) (?P<msg>.*)$', size_limit = 100000 }}
batch_deadline_ms = 200

[by_repository]
web = "nginx"
"app-logs" = "kv"

[by_token]
"tok-app-1" = "app"
"#,
        dir = wasm_dir().display(),
        cache = common::cache_dir().display()
    )
}

#[test]
fn toml_section_routes_by_token_then_repository_then_default() {
    let config: ParsersConfig =
        toml::from_str(&example_toml()).expect("the documented example must parse");
    assert_eq!(config.plugins["app"].batch_deadline_ms, Some(200));
    let reg = ParserRegistry::new(&config).expect("load");
    // plugin_dir: every built plugin is there under its file stem, plus the named ones.
    let names: Vec<&str> = reg.parsers().collect();
    for name in [
        "access", "app", "chaos", "json", "kv", "kv-py", "nginx", "syslog",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    // Discovered without settings, `pattern` cannot configure: skipped, not fatal.
    assert!(!names.contains(&"pattern"), "{names:?}");
    assert_eq!(reg.parser_for("web", Some("tok-app-1")), Some("app"));
    assert_eq!(reg.parser_for("web", Some("other-token")), Some("nginx"));
    assert_eq!(reg.parser_for("anything", None), Some("json"));

    let access = r#"1.2.3.4 - - [15/Jun/2024:11:58:01 +0000] "GET / HTTP/1.1" 200 5 "-" "x""#;
    let ev = reg.parse("web", None, batch(&[access]));
    assert_eq!(ev[0].to_json()["fields"]["http.status"], 200);
    let ev = reg.parse("web", Some("tok-app-1"), batch(&["WARN disk full"]));
    assert_eq!(ev[0].to_json()["fields"]["level"], "WARN");
    let ev = reg.parse("app-logs", None, batch(&["x=1"]));
    assert_eq!(ev[0].to_json()["fields"]["x"], 1);
    let ev = reg.parse("elsewhere", None, batch(&[r#"{"k":"v"}"#]));
    assert_eq!(ev[0].to_json()["fields"]["k"], "v");
}

#[test]
fn without_a_default_unrouted_events_come_back_unparsed() {
    let mut config = test_config();
    config
        .plugins
        .insert("json".into(), PluginConfig::new(wasm("json"), &[]));
    config.by_repository.insert("api".into(), "json".into());
    let reg = ParserRegistry::new(&config).expect("load");
    let ev = reg.parse("other", None, batch(&[r#"{"k":"v"}"#]));
    assert_eq!(
        (ev[0].raw.as_str(), ev[0].fields.len(), ev[0].error()),
        (r#"{"k":"v"}"#, 0, None)
    );
    assert_eq!(
        reg.parse("api", None, batch(&[r#"{"k":"v"}"#]))[0]
            .fields
            .len(),
        1
    );
}

#[test]
fn bad_configuration_is_refused_with_the_reason() {
    let err = toml::from_str::<ParsersConfig>("batch_deadline = 5").expect_err("unknown key");
    assert!(
        err.to_string().contains("unknown field `batch_deadline`"),
        "{err}"
    );
    let err = toml::from_str::<ParsersConfig>("[plugins.x]\npath = 'a.wasm'\nsetting = {}")
        .expect_err("unknown key");
    assert!(err.to_string().contains("unknown field `setting`"), "{err}");

    let mut config = test_config();
    config.by_token.insert("t".into(), "nope".into());
    let err = ParserRegistry::new(&config).err().expect("unknown parser");
    assert!(
        matches!(&err, Error::UnknownParser { name, .. } if name == "nope"),
        "{err}"
    );
    assert!(err.to_string().contains("[parsers.by_token]"), "{err}");

    let config = ParsersConfig {
        memory_limit_bytes: 1000,
        ..test_config()
    };
    assert!(
        ParserRegistry::new(&config)
            .err()
            .expect("tiny cap")
            .to_string()
            .contains("memory_limit_bytes")
    );
}

#[test]
fn compiled_components_are_cached_on_disk_and_verified() {
    let cache = tempfile::tempdir().expect("tempdir");
    let mut config = test_config();
    config.cache_dir = Some(cache.path().to_path_buf());
    config
        .plugins
        .insert("json".into(), PluginConfig::new(wasm("json"), &[]));
    config.plugins.insert(
        "json2".into(),
        PluginConfig::new(wasm("json"), &[("separator", "_")]),
    );
    config
        .plugins
        .insert("kv".into(), PluginConfig::new(wasm("kv"), &[]));
    drop(ParserRegistry::new(&config).expect("load"));
    let entries = || {
        let mut v: Vec<_> = std::fs::read_dir(cache.path())
            .expect("read cache dir")
            .map(|e| e.expect("entry").path())
            // Not the node's key (`cache.key`, see tests/cache.rs).
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .collect();
        v.sort();
        v
    };
    let files = entries();
    assert_eq!(
        files.len(),
        2,
        "one entry per distinct plugin file: {files:?}"
    );
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .expect("meta")
            .modified()
            .expect("mtime")
    };
    let before: Vec<_> = files.iter().map(|p| stamp(p)).collect();
    // A second start reuses the entries as they are.
    let reg = ParserRegistry::new(&config).expect("load from cache");
    let ev = reg
        .parse_with("json", batch(&[r#"{"a":{"b":1}}"#]))
        .expect("json exists");
    assert_eq!(ev[0].to_json()["fields"]["a.b"], 1);
    assert_eq!(files.iter().map(|p| stamp(p)).collect::<Vec<_>>(), before);
    // A corrupt entry is detected and rewritten, not loaded.
    for f in &files {
        let mut data = std::fs::read(f).expect("read");
        let mid = data.len() / 2;
        data[mid] ^= 0xff;
        std::fs::write(f, data).expect("write");
    }
    let reg = ParserRegistry::new(&config).expect("corrupt cache entries are recompiled");
    assert_eq!(
        reg.parse_with("json", batch(&["k=v"]))
            .expect("json exists")[0]
            .error(),
        Some("parse_failed")
    );
    assert_eq!(entries(), files);
    assert!(
        files.iter().zip(&before).all(|(p, b)| stamp(p) != *b),
        "corrupt entries must be rewritten"
    );
}

#[test]
fn registry_is_shared_by_concurrent_callers() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ParserRegistry>();
    let mut config = test_config();
    config
        .plugins
        .insert("kv".into(), PluginConfig::new(wasm("kv"), &[]));
    config.default = Some("kv".into());
    let reg = Arc::new(ParserRegistry::new(&config).expect("load"));
    let threads: Vec<_> =
        (0..4)
            .map(|t| {
                let reg = reg.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let line = format!("thread={t} i={i}");
                        let ev = reg.parse("r", None, batch(&[line.as_str(); 4]));
                        assert_eq!(ev.len(), 4);
                        assert!(ev.iter().all(|e| e.to_json()["fields"]["thread"] == t
                            && e.to_json()["fields"]["i"] == i));
                    }
                })
            })
            .collect();
    for t in threads {
        t.join().expect("no caller may panic");
    }
}

#[test]
fn plugin_test_writes_json_lines_and_a_summary() {
    let input = "{\"ts\":\"2024-05-01T10:00:00Z\",\"http\":{\"status\":200}}\n\n   \nnot json\r\n{\"ok\":true}";
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let summary =
        plugin_test(&wasm("json"), None, input.as_bytes(), &mut out, &mut err).expect("runs");
    let out = String::from_utf8(out).expect("utf8");
    let expected = [
        r#"{"fields":{"http.status":200,"ts":"2024-05-01T10:00:00Z"},"raw":"{\"ts\":\"2024-05-01T10:00:00Z\",\"http\":{\"status\":200}}","timestamp":"2024-05-01T10:00:00.000000000Z","timestamp_ns":1714557600000000000}"#,
        r#"{"fields":{"@error":"parse_failed","@error_msg":"parser `json`: invalid JSON: expected ident at line 1 column 2","@parser":"json"},"raw":"not json","timestamp":null,"timestamp_ns":null}"#,
        r#"{"fields":{"ok":true},"raw":"{\"ok\":true}","timestamp":null,"timestamp_ns":null}"#,
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);
    assert_eq!(
        (
            summary.plugin.as_str(),
            summary.lines,
            summary.events,
            summary.failed
        ),
        ("json", 3, 3, 1)
    );
    let err = String::from_utf8(err).expect("utf8");
    assert!(
        err.starts_with("plugin json 0.1.0 (blake3 ")
            && err.contains(": 3 lines -> 3 events, 1 failed, "),
        "{err}"
    );
}

#[test]
fn plugin_test_reads_settings_from_a_toml_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = dir.path().join("app.toml");
    std::fs::write(&settings, "batch_deadline_ms = 250\n[settings]\npattern = '^(?P<level>[A-Z]+) (?P<ms>\\d+)ms$'\ntyped_groups = 'ms'\n")
        .expect("write");
    let mut out = Vec::new();
    let summary = plugin_test(
        &wasm("pattern"),
        Some(&settings),
        "INFO 12ms\nnope\n".as_bytes(),
        &mut out,
        Vec::new(),
    )
    .expect("runs");
    let out = String::from_utf8(out).expect("utf8");
    let first: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("a line")).expect("json");
    assert_eq!(first["fields"]["ms"], 12);
    assert_eq!((summary.events, summary.failed), (2, 1));

    std::fs::write(&settings, "[settings]\ncolour = 'red'\n").expect("write");
    let err = plugin_test(
        &wasm("pattern"),
        Some(&settings),
        "x".as_bytes(),
        Vec::new(),
        Vec::new(),
    )
    .expect_err("bad setting");
    assert!(err.to_string().contains("no setting `colour`"), "{err}");
    std::fs::write(&settings, "setings = 1\n").expect("write");
    let err = plugin_test(
        &wasm("pattern"),
        Some(&settings),
        "x".as_bytes(),
        Vec::new(),
        Vec::new(),
    )
    .expect_err("bad file");
    assert!(matches!(err, Error::SettingsFile { .. }), "{err}");
}

/// A plugin_dir holding built plugins copied under other file names: `(file, plugin)`.
fn plugin_dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, plugin) in files {
        std::fs::copy(wasm(plugin), dir.path().join(file)).expect("copy plugin");
    }
    dir
}

#[test]
fn plugins_in_plugin_dir_go_by_the_name_they_declare_not_their_file_name() {
    let dir = plugin_dir_with(&[("kv-v2.wasm", "kv"), ("my_json.wasm", "json")]);
    let mut config = test_config();
    config.plugin_dir = Some(dir.path().to_path_buf());
    config.by_repository.insert("app".into(), "kv".into());
    config.default = Some("json".into());
    let reg = ParserRegistry::new(&config).expect("load");
    assert_eq!(reg.parsers().collect::<Vec<_>>(), ["json", "kv"]);
    let info = reg.info("kv").expect("kv");
    assert_eq!((info.name.as_str(), info.path.as_path()), ("kv", dir.path().join("kv-v2.wasm").as_path()));
    // Routed by the declared name, and failures name the parser by it.
    let events = reg.parse("app", None, batch(&["x=1", "no pairs here"]));
    assert_eq!(events[0].to_json()["fields"]["x"], 1);
    assert_eq!(events[1].to_json()["fields"]["@parser"], "kv");
    assert!(events[1].error_msg().expect("failed").starts_with("parser `kv`"), "{:?}", events[1].error_msg());
    assert_eq!(reg.parse("other", None, batch(&[r#"{"k":"v"}"#]))[0].to_json()["fields"]["k"], "v");

    // A file stem is no parser name: the error lists the names there are.
    config.by_repository.insert("web".into(), "kv-v2".into());
    let err = ParserRegistry::new(&config).err().expect("kv-v2 is a file, not a parser");
    assert!(
        matches!(&err, Error::UnknownParser { name, known, .. } if name == "kv-v2" && known == "json, kv"),
        "{err}"
    );
    assert!(err.to_string().contains("the name it declares, not its file name"), "{err}");
}

#[test]
fn two_files_in_plugin_dir_declaring_one_name_fail_the_start_naming_both() {
    let dir = plugin_dir_with(&[("kv.wasm", "kv"), ("json.wasm", "json"), ("zz-kv-copy.wasm", "kv")]);
    let config = ParsersConfig {
        plugin_dir: Some(dir.path().to_path_buf()),
        ..test_config()
    };
    let err = ParserRegistry::new(&config).err().expect("two plugins named kv");
    match &err {
        Error::DuplicateParser { name, first, second } => {
            assert_eq!(name, "kv");
            assert_eq!((first.as_path(), second.as_path()), (dir.path().join("kv.wasm").as_path(), dir.path().join("zz-kv-copy.wasm").as_path()));
        }
        other => panic!("expected DuplicateParser, got {other}"),
    }
    let text = err.to_string();
    assert!(text.contains("declare the name `kv`") && text.contains("/kv.wasm") && text.contains("/zz-kv-copy.wasm"), "{text}");
}

#[test]
fn a_configured_entry_keeps_its_name_over_a_plugin_dir_file_declaring_it() {
    // `kv` in the config, with a setting; plugin_dir has a file that declares `kv` too.
    let dir = plugin_dir_with(&[("kv.wasm", "kv"), ("json.wasm", "json")]);
    let mut config = test_config();
    config.plugin_dir = Some(dir.path().to_path_buf());
    config.plugins.insert("kv".into(), PluginConfig::new(wasm("kv"), &[("typed", "false")]));
    // A configured entry may call a plugin anything; its file also loads under its own name.
    config.plugins.insert("structured".into(), PluginConfig::new("json.wasm", &[]));
    let reg = ParserRegistry::new(&config).expect("load");
    assert_eq!(reg.parsers().collect::<Vec<_>>(), ["json", "kv", "structured"]);
    assert_eq!(reg.info("kv").expect("kv").path, wasm("kv"));
    assert_eq!(reg.parse_with("kv", batch(&["x=1"])).expect("kv")[0].to_json()["fields"]["x"], "1");
    assert_eq!(reg.info("structured").expect("structured").path, dir.path().join("json.wasm"));
}
