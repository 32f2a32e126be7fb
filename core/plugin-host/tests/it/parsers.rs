//! Table-driven tests of every built-in parser plugin on real-world sample
//! lines, malformed ones included, through the real host and the built
//! components; the Python `kv-py` plugin against its Rust twin `kv`, and the JavaScript
//! `access-js` plugin against its twin `access`.

use crate::common::{self, Case, check, fails, ok, registry, wasm};
use serde_json::json;
use weir_plugin_host::{Error, ParserRegistry, ParsersConfig, PluginConfig};

fn json_cases() -> Vec<Case> {
    vec![
        ok(
            r#"{"@timestamp":"2024-05-01T10:00:00.123Z","level":"info","message":"request done","http":{"method":"GET","status":200,"latency_ms":12.5},"user":{"id":42,"roles":["admin","dev"]},"trace":null}"#,
            Some("2024-05-01T10:00:00.123000000Z"),
            json!({"level": "info", "message": "request done", "http.method": "GET", "http.status": 200,
                   "http.latency_ms": 12.5, "user.id": 42, "user.roles": "[\"admin\",\"dev\"]", "trace": null}),
        ),
        ok(
            r#"{"log":"GET /healthz 200\n","stream":"stdout","time":"2024-05-01T10:00:00.000000001Z"}"#,
            Some("2024-05-01T10:00:00.000000001Z"),
            json!({"log": "GET /healthz 200\n", "stream": "stdout"}),
        ),
        ok(
            r#"{"ts":1714557600,"msg":"epoch seconds"}"#,
            Some("2024-05-01T10:00:00.000000000Z"),
            json!({"ts": 1714557600}),
        ),
        ok(
            r#"{"ts":1714557600123,"msg":"epoch millis"}"#,
            Some("2024-05-01T10:00:00.123000000Z"),
            json!({"msg": "epoch millis"}),
        ),
        ok(
            r#"  {"a":{"b":{"c":true}},"e":{}}  "#,
            None,
            json!({"a.b.c": true, "e": "{}"}),
        ),
        ok(
            r#"{"id":18446744073709551615,"neg":-7}"#,
            None,
            json!({"id": 18446744073709551615.0, "neg": -7}),
        ),
        ok(
            r#"{"msg":"caf\u00e9 \ud83d\ude00"}"#,
            None,
            json!({"msg": "café 😀"}),
        ),
        // Arrays keep their input text, minus whitespace between tokens.
        ok(
            r#"{"tags": [ "a b", {"z": 1, "y": [ ]}, 1.0E2, "\u00e9" ], "n": 1}"#,
            None,
            json!({"tags": r#"["a b",{"z":1,"y":[]},1.0E2,"\u00e9"]"#, "n": 1}),
        ),
        fails(r#"{"tags":[1,]}"#, "invalid JSON"),
        fails(r#"{"level":"info","#, "invalid JSON"),
        fails(
            r#"["not","an","object"]"#,
            "expected a JSON object, found an array",
        ),
        fails("plain text line", "invalid JSON"),
        fails("", "invalid JSON"),
    ]
}

#[test]
fn json_parser_on_real_lines() {
    check(
        &registry("json", PluginConfig::new(wasm("json"), &[])),
        &json_cases(),
    );
}

#[test]
fn json_parser_settings_apply_and_are_validated() {
    let reg = registry(
        "json",
        PluginConfig::new(
            wasm("json"),
            &[("separator", "_"), ("timestamp_fields", "when")],
        ),
    );
    check(
        &reg,
        &[ok(
            r#"{"when":"2024-01-01T00:00:00Z","ts":5,"a":{"b":1}}"#,
            Some("2024-01-01T00:00:00.000000000Z"),
            json!({"a_b": 1}),
        )],
    );
    let mut config = common::test_config();
    config.plugins.insert(
        "j".into(),
        PluginConfig::new(wasm("json"), &[("max_depth", "deep")]),
    );
    let err = ParserRegistry::new(&config)
        .err()
        .expect("a bad max_depth must be refused");
    assert!(
        matches!(&err, Error::Configure { plugin, reason } if plugin == "j" && reason.contains("max_depth")),
        "{err}"
    );
}

fn kv_cases() -> Vec<Case> {
    vec![
        ok(
            r#"time=2024-05-01T10:00:00Z level=info msg="user logged in" user_id=42 duration=0.25 ok=true"#,
            Some("2024-05-01T10:00:00.000000000Z"),
            json!({"level": "info", "msg": "user logged in", "user_id": 42, "duration": 0.25, "ok": "true"}),
        ),
        ok(
            r#"at=info method=GET path="/" host=myapp.herokuapp.com request_id=8601b555-6a54-4a32-9f4a-9b3a6f4a9f2c fwd="204.204.204.204" dyno=web.1 connect=1ms service=18ms status=200 bytes=13 protocol=https"#,
            None,
            json!({"at": "info", "path": "/", "fwd": "204.204.204.204", "dyno": "web.1", "connect": "1ms", "status": 200, "bytes": 13}),
        ),
        ok(
            "level=debug cache_hit  retries=0",
            None,
            json!({"cache_hit": true, "retries": 0, "level": "debug"}),
        ),
        ok(
            r#"msg="say \"hi\"\tnow" n=-3 big=1e5 ver=1.2.3 empty="#,
            None,
            json!({"msg": "say \"hi\"\tnow", "n": -3, "big": 100000.0, "ver": "1.2.3", "empty": ""}),
        ),
        ok(
            "ts=2024-05-01T12:00:00+02:00 caller=main.go:42",
            Some("2024-05-01T10:00:00.000000000Z"),
            json!({"caller": "main.go:42"}),
        ),
        fails(
            r#"level=warn msg="unterminated"#,
            "unterminated quote in the value of `msg`",
        ),
        fails("no pairs here", "no key=value pairs found"),
        fails("=value", "empty key"),
        fails("   ", "no key=value pairs found"),
    ]
}

#[test]
fn kv_parser_on_real_lines() {
    check(
        &registry("kv", PluginConfig::new(wasm("kv"), &[])),
        &kv_cases(),
    );
}

#[test]
fn python_kv_plugin_matches_the_rust_kv_plugin() {
    let rust = registry("kv", PluginConfig::new(wasm("kv"), &[]));
    // The default 64 MiB cap is enough for the embedded CPython.
    let python = registry("kv-py", PluginConfig::new(wasm("kv-py"), &[]));
    assert_eq!(python.info("kv-py").expect("loaded").plugin_name, "kv-py");
    // The Python plugin passes the same table...
    let py_events = check(&python, &kv_cases());
    // ...and its output is identical to the Rust plugin's, event by event.
    let lines: Vec<&str> = kv_cases().iter().map(|c| c.line).collect();
    let rust_events = rust.parse("test", None, common::batch(&lines));
    for (r, p) in rust_events.iter().zip(&py_events) {
        match (r.error_msg(), p.error_msg()) {
            (None, None) => assert_eq!(r.to_json(), p.to_json(), "line {:?}", r.raw),
            (Some(rm), Some(pm)) => assert_eq!(
                rm.replace("parser `kv`", ""),
                pm.replace("parser `kv-py`", ""),
                "line {:?}",
                r.raw
            ),
            (rm, pm) => panic!("line {:?}: rust says {rm:?}, python says {pm:?}", r.raw),
        }
    }
    // Settings are checked by the Python code too.
    let mut config = common::test_config();
    config.plugins.insert(
        "kv-py".into(),
        PluginConfig::new(wasm("kv-py"), &[("delimiter", "::")]),
    );
    let err = ParserRegistry::new(&config)
        .err()
        .expect("a two-character delimiter must be refused");
    assert!(err.to_string().contains("setting `delimiter`"), "{err}");
}

#[test]
fn syslog_parser_on_real_lines() {
    let cases = vec![
        ok(
            "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \u{feff}'su root' failed for lonvick on /dev/pts/8",
            Some("2003-10-11T22:14:15.003000000Z"),
            json!({"syslog.facility": 4, "syslog.severity": 2, "syslog.severity_name": "crit", "host": "mymachine.example.com",
                   "app": "su", "msgid": "ID47", "message": "'su root' failed for lonvick on /dev/pts/8", "pid": null}),
        ),
        ok(
            "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
            Some("2003-08-24T12:14:15.000003000Z"),
            json!({"syslog.facility": 20, "syslog.severity": 5, "pid": 8710, "app": "myproc", "message": "%% It's time to make the do-nuts."}),
        ),
        ok(
            r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"] An application event log entry..."#,
            Some("2003-10-11T22:14:15.003000000Z"),
            json!({"sd.exampleSDID@32473.iut": "3", "sd.exampleSDID@32473.eventID": "1011", "sd.examplePriority@32473.class": "high",
                   "message": "An application event log entry..."}),
        ),
        ok(
            "<14>1 - - - - - -",
            None,
            json!({"syslog.version": 1, "message": null, "host": null}),
        ),
        ok(
            "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
            Some("2023-10-11T22:14:15.000000000Z"),
            json!({"host": "mymachine", "app": "su", "message": "'su root' failed for lonvick on /dev/pts/8"}),
        ),
        ok(
            "Jun  3 06:25:01 web-01 CRON[12345]: (root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
            Some("2024-06-03T06:25:01.000000000Z"),
            json!({"host": "web-01", "app": "CRON", "pid": 12345, "message": "(root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)"}),
        ),
        ok(
            "<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!",
            Some("2024-02-05T17:32:18.000000000Z"),
            json!({"host": "10.0.0.99", "message": "Use the BFG!", "app": null}),
        ),
        ok(
            "<30>2024-06-15T11:59:58.123456+00:00 nas systemd[1]: Started Daily apt upgrade.",
            Some("2024-06-15T11:59:58.123456000Z"),
            json!({"host": "nas", "app": "systemd", "pid": 1, "syslog.facility": 3}),
        ),
        fails(
            "<999>1 2003-10-11T22:14:15.003Z host app - - -",
            "malformed PRI",
        ),
        fails("<34>1 yesterday host app - - -", "bad RFC 5424 TIMESTAMP"),
        fails(
            "<34>1 2003-10-11T22:14:15.003Z host app - ID47 [broken",
            "unterminated",
        ),
        fails("hello world", "expected an RFC 3164 timestamp"),
        fails("<34>Foo 11 22:14:15 host x: y", "bad month"),
    ];
    check(
        &registry("syslog", PluginConfig::new(wasm("syslog"), &[])),
        &cases,
    );
}

#[test]
fn events_with_different_context_are_parsed_in_order_each_with_its_own() {
    // RFC 3164 lines take their year from the ingest time: a batch mixing
    // ingest times (and repositories) goes to the plugin as several calls,
    // one per run of shared context, and comes back in input order.
    let reg = registry("syslog", PluginConfig::new(wasm("syslog"), &[]));
    let line = "<34>Oct 11 22:14:15 mymachine su: hello";
    let year_2020 = 1_590_000_000_000_000_000; // 2020-05-20
    let mut batch = common::batch(&[line, line, line, "junk", line]);
    batch[1].ingest_time_ns = year_2020;
    batch[2].repository = "other".into();
    batch[4].ingest_time_ns = year_2020;
    let events = reg.parse("test", None, batch);
    let years: Vec<String> = events
        .iter()
        .map(|e| e.to_json()["timestamp"].as_str().unwrap_or("none")[..4].to_string())
        .collect();
    assert_eq!(years, ["2023", "2019", "2023", "none", "2019"]);
    assert_eq!(events[3].error(), Some("parse_failed"));
}

fn access_cases() -> Vec<Case> {
    vec![
        ok(
            r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)""#,
            Some("2000-10-10T20:55:36.000000000Z"),
            json!({"client.ip": "127.0.0.1", "user.name": "frank", "user.ident": null, "http.method": "GET", "url.original": "/apache_pb.gif",
                   "http.version": "1.0", "http.status": 200, "http.bytes": 2326, "http.referer": "http://www.example.com/start.html",
                   "http.user_agent": "Mozilla/4.08 [en] (Win98; I ;Nav)"}),
        ),
        ok(
            r#"93.184.216.34 - - [15/Jun/2024:11:58:01 +0000] "POST /api/v1/login?next=%2F HTTP/1.1" 401 157 "-" "curl/8.5.0""#,
            Some("2024-06-15T11:58:01.000000000Z"),
            json!({"http.method": "POST", "url.original": "/api/v1/login?next=%2F", "http.status": 401, "http.referer": null, "http.user_agent": "curl/8.5.0"}),
        ),
        ok(
            r#"192.168.1.20 - bob [15/Jun/2024:11:58:01 +0200] "GET /index.html HTTP/2.0" 304 -"#,
            Some("2024-06-15T09:58:01.000000000Z"),
            json!({"user.name": "bob", "http.status": 304, "http.bytes": 0, "http.version": "2.0"}),
        ),
        ok(
            r#"45.9.20.1 - - [15/Jun/2024:11:58:01 +0000] "\x16\x03\x01\x00" 400 157 "-" "-""#,
            Some("2024-06-15T11:58:01.000000000Z"),
            json!({"http.request": r"\x16\x03\x01\x00", "http.status": 400, "http.method": null, "http.user_agent": null}),
        ),
        ok(
            r#"10.1.1.1 - - [15/Jun/2024:11:58:01 +0000] "GET /q?s=\"x\" HTTP/1.1" 200 5 "-" "Go-http-client/1.1""#,
            Some("2024-06-15T11:58:01.000000000Z"),
            json!({"url.original": "/q?s=\"x\""}),
        ),
        fails(
            r#"127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" abc 12"#,
            "bad status `abc`",
        ),
        fails(
            r#"127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /"#,
            "expected the quoted request line",
        ),
        fails(
            r#"127.0.0.1 - - [10/Oct/2000 13:55:36] "GET / HTTP/1.0" 200 1"#,
            "bad time",
        ),
        fails("not an access log", "expected `[` before the time"),
        fails(
            r#"127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200"#,
            "line ends before the size",
        ),
        fails(
            r#"127.0.0.1 - - [31/Feb/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 1"#,
            "bad time",
        ),
        ok(
            r#"10.0.0.7 - - [29/Feb/2024:23:59:60 -0000] "GET /caf%C3%A9/ünï HTTP/1.1" 200 9223372036854775807 "-" "Mozilla/5.0 ☃" trailing"#,
            Some("2024-03-01T00:00:00.000000000Z"),
            json!({"url.original": "/caf%C3%A9/ünï", "http.bytes": 9223372036854775807_i64, "http.user_agent": "Mozilla/5.0 ☃", "extra": "trailing"}),
        ),
    ]
}

#[test]
fn access_log_parser_on_real_lines() {
    check(
        &registry("access", PluginConfig::new(wasm("access"), &[])),
        &access_cases(),
    );
}

#[test]
fn javascript_access_plugin_matches_the_rust_access_plugin() {
    let rust = registry("access", PluginConfig::new(wasm("access"), &[]));
    // A componentize-js component embeds StarlingMonkey; its memory starts at 9.1 MiB and a
    // batch of 4096 lines needs under 16 MiB, a quarter of the default cap.
    let js = registry(
        "access-js",
        PluginConfig {
            memory_limit_bytes: Some(16 << 20),
            ..PluginConfig::new(wasm("access-js"), &[])
        },
    );
    let info = js.info("access-js").expect("loaded");
    assert_eq!((info.plugin_name.as_str(), info.version.as_str()), ("access-js", "0.1.0"));
    // The JavaScript plugin passes the same table...
    let js_events = check(&js, &access_cases());
    // ...and its output is identical to the Rust plugin's, event by event.
    let lines: Vec<&str> = access_cases().iter().map(|c| c.line).collect();
    let rust_events = rust.parse("test", None, common::batch(&lines));
    assert_eq!(rust_events.len(), js_events.len());
    for (r, j) in rust_events.iter().zip(&js_events) {
        match (r.error_msg(), j.error_msg()) {
            (None, None) => assert_eq!(r.to_json(), j.to_json(), "line {:?}", r.raw),
            (Some(rm), Some(jm)) => assert_eq!(
                rm.replace("parser `access`", ""),
                jm.replace("parser `access-js`", ""),
                "line {:?}",
                r.raw
            ),
            (rm, jm) => panic!("line {:?}: rust says {rm:?}, javascript says {jm:?}", r.raw),
        }
    }
    // Its own test files, as `weir-core plugin test --expect` runs them.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/js/access/test");
    let input = std::fs::read(dir.join("input.txt")).expect("input.txt");
    let summary = weir_plugin_host::plugin_test_expect(
        &wasm("access-js"),
        None,
        input.as_slice(),
        &dir.join("expected.jsonl"),
        std::io::sink(),
        std::io::sink(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((summary.lines, summary.events, summary.failed), (4, 4, 1));
}

#[test]
fn pattern_parser_on_real_lines() {
    let plugin = PluginConfig::new(
        wasm("pattern"),
        &[
            (
                "pattern",
                r"^(?P<ts>\S+) \[(?P<level>[A-Z]+)\] (?P<component>[\w.-]+): (?P<msg>.*?)(?: took=(?P<took>\d+)ms)?$",
            ),
            ("timestamp_group", "ts"),
            ("typed_groups", "took"),
        ],
    );
    let cases = vec![
        ok(
            "2024-05-01T10:00:00.5Z [WARN] db.pool: connection slow took=1200ms",
            Some("2024-05-01T10:00:00.500000000Z"),
            json!({"level": "WARN", "component": "db.pool", "msg": "connection slow", "took": 1200}),
        ),
        ok(
            "1714557600 [INFO] main: started",
            Some("2024-05-01T10:00:00.000000000Z"),
            json!({"msg": "started", "took": null, "ts": "1714557600"}),
        ),
        fails(
            "2024-05-01T10:00:00Z INFO main: no brackets",
            "does not match the pattern",
        ),
        fails("yesterday [INFO] main: when?", "is not a time"),
    ];
    check(&registry("pattern", plugin), &cases);
}

#[test]
fn pattern_parser_refuses_bad_settings_with_a_clear_error() {
    let load = |settings: &[(&str, &str)]| {
        let mut config = ParsersConfig {
            ..common::test_config()
        };
        config
            .plugins
            .insert("app".into(), PluginConfig::new(wasm("pattern"), settings));
        ParserRegistry::new(&config)
            .err()
            .expect("bad settings must be refused")
            .to_string()
    };
    let missing = load(&[]);
    assert!(
        missing.contains("`pattern` is required")
            && missing.contains("[parsers.plugins.app.settings]"),
        "{missing}"
    );
    assert!(load(&[("pattern", "(?P<x>")]).contains("setting `pattern`"));
    assert!(load(&[("pattern", r"\d+")]).contains("no named group"));
    assert!(
        load(&[("pattern", r"(?P<a>\d+)"), ("timestamp_group", "b")])
            .contains("`b` is not a named group")
    );
    // Unknown names are caught by the host against `describe`, before configure.
    let unknown = load(&[("pattern", r"(?P<a>\d+)"), ("colour", "red")]);
    assert!(
        unknown.contains("no setting `colour`") && unknown.contains("pattern, timestamp_group"),
        "{unknown}"
    );
}

