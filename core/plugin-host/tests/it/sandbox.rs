//! The sandbox against a hostile plugin (`chaos`, built from
//! plugins/chaos): infinite loop, memory bomb, runaway recursion, huge
//! output, abort, panic, and sleeping or waiting inside WASI. Each time the host stays up, the
//! hostile event is kept with its raw text and error fields naming the plugin and the
//! cause, its neighbours are parsed (failure isolation, `tests/it/isolation.rs`), and the
//! next batch parses on a fresh instance. Also: malformed
//! packed output (bad tags, lengths past the end, invalid UTF-8, wrong number
//! of outcomes), no ambient capabilities, instance reuse, and refusal of
//! broken components.

use crate::common::{batch, registry, test_config, wasm};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use weir_plugin_host::{Error, Event, ParseStats, ParserRegistry, PluginConfig, Value};

/// How long a hostile batch may take before the test gives up on it: a
/// sandbox regression must fail the test, not hang the test run.
const HUNG: Duration = Duration::from_secs(20);

fn chaos() -> ParserRegistry {
    registry("chaos", PluginConfig::new(wasm("chaos"), &[]))
}

fn calls(event: &Event) -> i64 {
    match event.get("calls") {
        Some(Value::Int(n)) => *n,
        other => panic!(
            "expected a `calls` field, got {other:?} in {:?}",
            event.to_json()
        ),
    }
}

/// Sends `trigger` between two good lines, checks that it alone failed with
/// `kind` and a message containing `fragment` while its neighbours were parsed
/// on fresh instances (the failed batch re-run in parts: `[before]`, then
/// `[trigger, after]`, then each alone), then that a new batch runs on a
/// fresh instance.
fn hostile_batch_is_contained(trigger: &str, kind: &str, fragment: &str) -> Duration {
    let reg = Arc::new(chaos());
    let warmup = reg.parse("test", None, batch(&["warm-up"]));
    assert_eq!(calls(&warmup[0]), 1);
    let (events, stats, took) = parse_or_give_up(&reg, &["before", trigger, "after"]);
    assert_eq!(events.len(), 3, "every event of the failed batch is kept");
    assert_eq!(
        events.iter().map(|e| e.raw.as_str()).collect::<Vec<_>>(),
        ["before", trigger, "after"]
    );
    for event in [&events[0], &events[2]] {
        assert_eq!(event.error(), None, "{trigger}: {:?}", event.to_json());
        assert_eq!(
            calls(event),
            1,
            "{trigger}: re-run alone on a fresh instance"
        );
    }
    let event = &events[1];
    assert_eq!(
        event.error(),
        Some(kind),
        "{trigger}: {:?}",
        event.to_json()
    );
    let msg = event.error_msg().expect("an @error_msg");
    assert!(
        msg.starts_with("parser `chaos`: ") && msg.contains(fragment),
        "{trigger}: {msg}"
    );
    assert_eq!(event.get("@parser"), Some(&Value::Text("chaos".into())));
    assert_eq!(
        (
            stats.calls,
            stats.reruns,
            stats.isolated_failures,
            stats.unresolved
        ),
        (5, 4, 1, 0),
        "{trigger}"
    );
    let next = reg.parse("test", None, batch(&["fine", "still fine"]));
    assert_eq!(
        next.iter().map(|e| e.error()).collect::<Vec<_>>(),
        [None, None],
        "{:?}",
        next[0].to_json()
    );
    assert_eq!(
        calls(&next[0]),
        1,
        "the failed instance must have been replaced by a fresh one"
    );
    assert_eq!(calls(&next[1]), 2);
    took
}

/// Parses on a thread of its own and waits at most [`HUNG`] for it (a hung
/// thread is left behind; the test process ends without it).
fn parse_or_give_up(
    reg: &Arc<ParserRegistry>,
    lines: &[&str],
) -> (Vec<Event>, ParseStats, Duration) {
    let (tx, rx) = mpsc::channel();
    let (reg, raws) = (reg.clone(), batch(lines));
    std::thread::spawn(move || {
        let started = Instant::now();
        let (events, stats) = reg
            .parse_with_stats("chaos", raws)
            .expect("chaos is loaded");
        let _ = tx.send((events, stats, started.elapsed()));
    });
    rx.recv_timeout(HUNG).unwrap_or_else(|_| {
        panic!("parse of {lines:?} still running after {HUNG:?}: the plugin hung the host")
    })
}

#[test]
fn infinite_loop_is_stopped_at_the_batch_deadline() {
    let took = hostile_batch_is_contained(
        "loop",
        "deadline_exceeded",
        "ran past its batch deadline of 300 ms",
    );
    // Three calls hold `loop`: the batch, `[loop, after]` and `[loop]`.
    assert!(
        took >= Duration::from_millis(3 * 250) && took < Duration::from_secs(4),
        "stopped after {took:?}"
    );
}

#[test]
fn sleeping_or_waiting_in_wasi_cannot_hang_the_host() {
    // `sleep`: std::thread::sleep(1 h); `poll`: libc poll() with a 1 h timeout.
    // Both wait on a clock pollable; without the sandbox's own `poll` and
    // `block` they wait inside wasmtime-wasi, where the epoch deadline never
    // fires, and the parse call hangs for the hour.
    for (trigger, waited_in) in [
        ("sleep", "waited in `wasi:io/poll.pollable.block`"),
        ("poll", "waited in `wasi:io/poll.poll`"),
    ] {
        let took = hostile_batch_is_contained(trigger, "trap", waited_in);
        assert!(
            took < Duration::from_millis(300) + Duration::from_secs(1),
            "{trigger}: the batch deadline is 300 ms, three calls held the trigger, the parse took {took:?}"
        );
    }
}

#[test]
fn memory_bomb_hits_the_memory_cap() {
    hostile_batch_is_contained("grow", "memory_limit", "exceeded its memory cap");
}

#[test]
fn runaway_recursion_overflows_the_wasm_stack_without_harm() {
    hostile_batch_is_contained("deep", "stack_overflow", "overflowed its stack");
}

#[test]
fn runaway_recursion_through_the_shadow_stack_is_a_trap() {
    // Rust keeps big frames on a stack inside linear memory; running off its
    // end is an out-of-bounds access, caught like any trap.
    hostile_batch_is_contained("recurse", "trap", "out of bounds memory access");
}

#[test]
fn abort_is_a_trap() {
    hostile_batch_is_contained("trap", "trap", "trapped");
}

#[test]
fn panic_message_reaches_the_error_field() {
    hostile_batch_is_contained("panic", "trap", "chaos plugin asked to panic");
}

#[test]
fn malformed_output_fails_its_event_only() {
    for (trigger, fragment) in [
        ("bad-tag", "bad outcome tag 0x7f at index byte"),
        ("past-end", "runs past the end of `text`"),
        ("bad-utf8", "is not valid UTF-8"),
        ("split-char", "splits a UTF-8 character"),
        ("bad-bool", "is neither 0 nor 1"),
        // Counts of 2^32-1 events and items (the host must not reserve for
        // them), and nothing after them.
        (
            "huge-count",
            "item tag at index byte 9 runs past the end of `index`",
        ),
    ] {
        let reg = chaos();
        let (events, stats) = reg
            .parse_with_stats("chaos", batch(&["before", trigger, "after"]))
            .expect("chaos");
        assert_eq!(events.len(), 3, "{trigger}: every event is kept");
        assert_eq!(
            events[0].error(),
            None,
            "{trigger}: {:?}",
            events[0].to_json()
        );
        assert_eq!(
            calls(&events[0]),
            1,
            "{trigger}: the outcome before the bad one is used"
        );
        // The outcomes after the bad one cannot be read: the bad event is
        // re-run alone, then the events after it.
        assert_eq!((stats.calls, stats.isolated_failures), (3, 1), "{trigger}");
        assert_eq!(events[2].raw, "after");
        assert_eq!(
            events[2].error(),
            None,
            "{trigger}: {:?}",
            events[2].to_json()
        );
        assert_eq!(
            calls(&events[2]),
            1,
            "{trigger}: re-run on a fresh instance"
        );
        let event = &events[1];
        assert_eq!(event.raw, trigger);
        assert_eq!(
            event.error(),
            Some("contract_violation"),
            "{trigger}: {:?}",
            event.to_json()
        );
        let msg = event.error_msg().expect("an @error_msg");
        assert!(
            msg.starts_with("parser `chaos`: malformed output for event 1 of 1: ")
                && msg.contains(fragment),
            "{trigger}: {msg}"
        );
        assert_eq!(event.get("@parser"), Some(&Value::Text("chaos".into())));
        let next = reg.parse("test", None, batch(&["fine"]));
        assert_eq!(
            calls(&next[0]),
            1,
            "{trigger}: the instance must have been replaced"
        );
    }
}

#[test]
fn wrong_number_of_outcomes_or_unused_text_fails_the_event_alone() {
    // The whole call fails; halving pins it on the event, alone in its call.
    for (trigger, fragment) in [
        (
            "extra-outcome",
            "returned more than 1 outcomes for 1 events",
        ),
        ("no-outcome", "returned 0 outcomes for 1 events"),
        ("text-left", "left 5 bytes of `text` unused"),
    ] {
        hostile_batch_is_contained(trigger, "contract_violation", fragment);
    }
}

#[test]
fn huge_output_is_refused_per_event_and_the_instance_is_kept() {
    let reg = chaos();
    let events = reg.parse("test", None, batch(&["a", "huge", "b"]));
    assert_eq!(
        events[1].error(),
        Some("output_too_large"),
        "{:?}",
        events[1].error_msg()
    );
    assert!(
        events[1]
            .error_msg()
            .unwrap_or("")
            .contains("max_event_output_bytes")
    );
    assert_eq!(events[1].raw, "huge");
    // The plugin did nothing wrong by the contract: its instance is reused.
    assert_eq!((calls(&events[0]), calls(&events[2])), (1, 3));
    assert_eq!(calls(&reg.parse("test", None, batch(&["c"]))[0]), 4);
}

#[test]
fn instances_are_reused_across_batches() {
    let reg = chaos();
    let seen: Vec<i64> = (0..5)
        .flat_map(|_| reg.parse("test", None, batch(&["x", "y"])))
        .map(|e| calls(&e))
        .collect();
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
}

#[test]
fn plugin_gets_no_environment_files_sockets_or_clock() {
    // SAFETY of the assertion: the test process has environment variables
    // and /etc/passwd exists, so zeros and errors come from the sandbox.
    assert!(std::env::vars().count() > 0);
    // A real listener the plugin is told to reach: were sockets granted, it would
    // connect (the control below shows this process can).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(std::net::TcpStream::connect(("127.0.0.1", port)).expect("the host itself can connect"));
    assert!(listener.accept().is_ok(), "the control connection arrived");
    let probe = format!("probe:{port}");
    let events = chaos().parse("test", None, batch(&[probe.as_str()]));
    let e = &events[0];
    assert_eq!(e.error(), None, "{:?}", e.to_json());
    assert_eq!(e.get("env_vars"), Some(&Value::Int(0)));
    assert_eq!(e.get("args"), Some(&Value::Int(0)));
    assert_ne!(
        e.get("file"),
        Some(&Value::Text("read".into())),
        "a file was readable"
    );
    assert_ne!(
        e.get("socket"),
        Some(&Value::Text("connected".into())),
        "a socket connected"
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the plugin reached the test's listener"
    );
    assert_eq!(
        e.get("clock_secs"),
        Some(&Value::Int(0)),
        "the wall clock must be frozen"
    );

    let mut granted = PluginConfig::new(wasm("chaos"), &[]);
    granted.allow_clock = true;
    let events = registry("chaos", granted).parse("test", None, batch(&["probe"]));
    assert!(
        matches!(events[0].get("clock_secs"), Some(Value::Int(s)) if *s > 1_700_000_000),
        "clock grant ignored"
    );
}

#[test]
fn configure_failure_and_broken_components_are_refused_at_start() {
    let mut config = test_config();
    config.plugins.insert(
        "c".into(),
        PluginConfig::new(wasm("chaos"), &[("fail_configure", "true")]),
    );
    match ParserRegistry::new(&config) {
        Err(Error::Configure { plugin, reason }) => assert!(
            plugin == "c" && reason.contains("fail_configure"),
            "{reason}"
        ),
        other => panic!("expected a configure error, got {:?}", other.err()),
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let core_module = dir.path().join("core-module.wasm");
    std::fs::write(&core_module, "(module (func (export \"parse\")))").expect("write");
    let mut config = test_config();
    config
        .plugins
        .insert("m".into(), PluginConfig::new(&core_module, &[]));
    let err = ParserRegistry::new(&config)
        .err()
        .expect("a core module is not a component");
    assert!(
        matches!(err, Error::InvalidPlugin { .. }) && err.to_string().contains("plugins/README.md"),
        "{err}"
    );

    let wrong_world = dir.path().join("empty-component.wasm");
    std::fs::write(&wrong_world, "(component)").expect("write");
    config
        .plugins
        .insert("m".into(), PluginConfig::new(&wrong_world, &[]));
    let err = ParserRegistry::new(&config)
        .err()
        .expect("a component without the exports is refused");
    assert!(matches!(err, Error::InvalidPlugin { .. }), "{err}");

    config.plugins.insert(
        "m".into(),
        PluginConfig::new(dir.path().join("missing.wasm"), &[]),
    );
    assert!(matches!(
        ParserRegistry::new(&config),
        Err(Error::ReadPlugin { .. })
    ));
}

#[test]
fn a_component_that_traps_at_start_is_refused() {
    // A component whose core module start function traps: instantiation fails.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("start-trap.wasm");
    std::fs::write(&path, "(component (core module $m (func $s unreachable) (start $s)) (core instance (instantiate $m)))")
        .expect("write");
    let mut config = test_config();
    config
        .plugins
        .insert("t".into(), PluginConfig::new(&path, &[]));
    let err = ParserRegistry::new(&config).err().expect("must be refused");
    assert!(err.to_string().contains("plugin `t`"), "{err}");
}
