//! Failure isolation against the real `chaos` plugin: a call that fails as a
//! whole is re-run in halves on fresh instances, so that only the events that
//! fail alone carry `@error` / `@error_msg` (their own cause) and every other
//! event is parsed, in order, within a bounded number of calls
//! (`ParseStats::calls`, counted by the host).

use crate::common::{INGEST_NS, registry, test_config, wasm};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_plugin_host::{Event, ParseStats, ParserRegistry, PluginConfig, RawEvent, Value};

fn chaos() -> ParserRegistry {
    registry("chaos", PluginConfig::new(wasm("chaos"), &[]))
}

/// A chaos registry with a re-run budget of `max_reruns`.
fn chaos_with_budget(max_reruns: u32) -> ParserRegistry {
    let mut config = test_config();
    config.isolation_max_reruns = max_reruns;
    config
        .plugins
        .insert("chaos".into(), PluginConfig::new(wasm("chaos"), &[]));
    ParserRegistry::new(&config).expect("load chaos")
}

/// `n` good lines (`ok-I`) with the trigger words of `bad` at their indexes.
fn lines(n: usize, bad: &[(usize, &str)]) -> Vec<String> {
    (0..n)
        .map(|i| match bad.iter().find(|(at, _)| *at == i) {
            Some((_, word)) => word.to_string(),
            None => format!("ok-{i}"),
        })
        .collect()
}

fn parse(reg: &ParserRegistry, lines: &[String]) -> (Vec<Event>, ParseStats) {
    let raws = lines
        .iter()
        .map(|l| RawEvent::new(l.as_str(), "test", INGEST_NS))
        .collect();
    reg.parse_with_stats("chaos", raws)
        .expect("chaos is loaded")
}

/// Checks one event per line, in order, raw text kept; every event not in
/// `failing` parsed (its `text` field is its line); returns the failing
/// events' `(index, @error, @error_msg)`.
fn check_events(events: &[Event], lines: &[String]) -> Vec<(usize, String, String)> {
    assert_eq!(events.len(), lines.len(), "one event per line");
    let mut failed = Vec::new();
    for (i, (event, line)) in events.iter().zip(lines).enumerate() {
        assert_eq!(&event.raw, line, "event {i}: order or raw text lost");
        match (event.error(), event.error_msg()) {
            (Some(kind), Some(msg)) => failed.push((i, kind.to_string(), msg.to_string())),
            _ => assert_eq!(
                event.get("text"),
                Some(&Value::Text(line.clone())),
                "event {i} not parsed: {:?}",
                event.to_json()
            ),
        }
    }
    failed
}

fn ceil_log2(n: usize) -> u32 {
    n.next_power_of_two().trailing_zeros()
}

const PANIC: &str = "chaos plugin asked to panic";

#[test]
fn one_bad_event_first_middle_or_last_fails_alone_and_the_rest_is_parsed() {
    let reg = chaos();
    for n in [1, 2, 3, 256, 4096] {
        let mut positions = vec![0, n / 2, n - 1];
        positions.dedup();
        for at in positions {
            let lines = lines(n, &[(at, "panic")]);
            let (events, stats) = parse(&reg, &lines);
            let failed = check_events(&events, &lines);
            assert_eq!(failed.len(), 1, "n={n} at={at}: {failed:?}");
            let (index, kind, msg) = &failed[0];
            assert_eq!((*index, kind.as_str()), (at, "trap"), "n={n} at={at}");
            assert!(
                msg.starts_with("parser `chaos`: trapped") && msg.contains(PANIC),
                "n={n} at={at}: {msg}"
            );
            let bound = 1 + 2 * ceil_log2(n);
            assert!(
                stats.calls <= bound,
                "n={n} at={at}: {stats:?}, bound {bound}"
            );
            assert_eq!(stats.calls, stats.reruns + 1);
            assert_eq!(
                (stats.isolated_failures, stats.unresolved),
                (1, 0),
                "n={n} at={at}"
            );
        }
    }
}

#[test]
fn two_bad_events_each_carry_their_own_cause() {
    let reg = chaos();
    let n = 256;
    // Both halves fail (a panic, an abort); then a malformed output (read up
    // to the bad event, re-run alone from there) beside a panic.
    for (second, kind, fragment) in [
        ("trap", "trap", "trapped: "),
        (
            "bad-utf8",
            "contract_violation",
            "malformed output for event 1 of 1",
        ),
    ] {
        let lines = lines(n, &[(10, "panic"), (200, second)]);
        let (events, stats) = parse(&reg, &lines);
        let failed = check_events(&events, &lines);
        assert_eq!(
            failed
                .iter()
                .map(|(i, k, _)| (*i, k.as_str()))
                .collect::<Vec<_>>(),
            [(10, "trap"), (200, kind)],
            "{second}"
        );
        assert!(failed[0].2.contains(PANIC), "{}", failed[0].2);
        assert!(
            failed[1].2.contains(fragment) && !failed[1].2.contains(PANIC),
            "{second}: {}",
            failed[1].2
        );
        // 2·⌈log2 n⌉ per bad event, plus the two probes when both halves fail.
        let bound = 1 + 2 * (2 * ceil_log2(n) + 1);
        assert!(stats.calls <= bound, "{second}: {stats:?}, bound {bound}");
        assert_eq!(
            (stats.isolated_failures, stats.unresolved),
            (2, 0),
            "{second}"
        );
    }
}

#[test]
fn a_plugin_failing_every_event_is_caught_after_four_reruns() {
    let reg = chaos();
    for n in [1, 2, 3, 256, 4096] {
        let lines = vec!["panic".to_string(); n];
        let (events, stats) = parse(&reg, &lines);
        let failed = check_events(&events, &lines);
        assert_eq!(failed.len(), n, "n={n}: every event fails");
        assert!(failed.iter().all(|(_, kind, _)| kind == "trap"));
        assert!(stats.calls <= 5, "n={n}: {stats:?}");
        // Alone in a call: the first event, and the first of each half.
        assert_eq!(stats.isolated_failures, n.min(2) as u32, "n={n}: {stats:?}");
        if n > 2 {
            let msg = &failed[n - 1].2;
            assert!(
                msg.contains("not isolated: the plugin failed both halves") && msg.contains(PANIC),
                "n={n}: {msg}"
            );
        }
    }
}

#[test]
fn a_plugin_hanging_on_every_event_costs_five_deadlines_not_a_search() {
    let reg = chaos();
    let lines = vec!["loop".to_string(); 64];
    let started = Instant::now();
    let (events, stats) = parse(&reg, &lines);
    let took = started.elapsed();
    let failed = check_events(&events, &lines);
    assert_eq!(failed.len(), 64);
    assert!(
        failed
            .iter()
            .all(|(_, kind, _)| kind == "deadline_exceeded")
    );
    assert_eq!(stats.calls, 5, "{stats:?}");
    // Five calls of at most 300 ms each, with room for a loaded machine.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn an_event_failing_only_in_company_is_parsed_alone() {
    // `after-mark` panics in an instance that parsed a `mark`: the batch
    // fails, but neither event fails on its own, so both are parsed.
    for (mark, after, reruns) in [(5, 100, 4), (5, 200, 2)] {
        let reg = chaos();
        let lines = lines(256, &[(mark, "mark"), (after, "after-mark")]);
        let (events, stats) = parse(&reg, &lines);
        assert_eq!(check_events(&events, &lines), [], "{mark}, {after}");
        assert_eq!(
            (stats.calls, stats.reruns, stats.isolated_failures),
            (1 + reruns, reruns, 0),
            "{mark}, {after}"
        );
    }
}

#[test]
fn bad_events_opening_both_halves_look_like_a_plugin_failing_everything() {
    // The documented price of the early stop: both halves fail and so does
    // the first event of each alone, so the rest is marked, not searched.
    let reg = chaos();
    let lines = lines(8, &[(0, "panic"), (4, "panic")]);
    let (events, stats) = parse(&reg, &lines);
    let failed = check_events(&events, &lines);
    assert_eq!(failed.len(), 8);
    for (i, _, msg) in &failed {
        assert_eq!(
            msg.contains("not isolated"),
            *i != 0 && *i != 4,
            "{i}: {msg}"
        );
    }
    assert_eq!(
        (stats.calls, stats.isolated_failures, stats.unresolved),
        (5, 2, 6)
    );
}

#[test]
fn when_the_budget_runs_out_the_unresolved_events_say_so() {
    let reg = chaos_with_budget(4);
    let lines = lines(256, &[(10, "panic"), (200, "trap")]);
    let (events, stats) = parse(&reg, &lines);
    let failed = check_events(&events, &lines);
    assert_eq!(stats.calls, 5, "{stats:?}");
    // Halves failed, their first events parsed alone: the rest of each half
    // is unresolved.
    assert_eq!(failed.len(), 254, "{stats:?}");
    let (_, kind, msg) = &failed[0];
    assert_eq!(kind, "trap");
    assert!(
        msg.starts_with(
            "parser `chaos`: isolation budget exhausted: 4 re-runs spent on this batch"
        ) && msg.contains(PANIC),
        "{msg}"
    );
    assert_eq!((stats.isolated_failures, stats.unresolved), (0, 254));
}

#[test]
fn with_isolation_off_a_failed_call_fails_every_event() {
    let reg = chaos_with_budget(0);
    let lines = lines(16, &[(3, "panic")]);
    let (events, stats) = parse(&reg, &lines);
    let failed = check_events(&events, &lines);
    assert_eq!(failed.len(), 16);
    assert!(failed.iter().all(|(_, _, msg)| msg.contains(PANIC)));
    assert_eq!((stats.calls, stats.unresolved), (1, 16));
}

#[test]
fn a_good_batch_costs_one_call() {
    let reg = chaos();
    let lines = lines(4096, &[]);
    let (events, stats) = parse(&reg, &lines);
    assert_eq!(check_events(&events, &lines), []);
    assert_eq!(
        stats,
        ParseStats {
            calls: 1,
            ..ParseStats::default()
        }
    );
}

/// Sums counters by name, and by name and `parser` label (`NAME{parser=P}`), for this
/// thread only (`metrics::with_local_recorder`).
#[derive(Default)]
struct Counters(Mutex<BTreeMap<String, Arc<AtomicU64>>>);

/// The sums a counter adds to: its name's and its name-and-parser's.
struct Sum(Vec<Arc<AtomicU64>>);

impl metrics::CounterFn for Sum {
    fn increment(&self, value: u64) {
        for sum in &self.0 {
            sum.fetch_add(value, Ordering::Relaxed);
        }
    }
    fn absolute(&self, value: u64) {
        for sum in &self.0 {
            sum.store(value, Ordering::Relaxed);
        }
    }
}

impl metrics::Recorder for Counters {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let mut map = self.0.lock().expect("counters");
        let mut sums = vec![map.entry(key.name().to_string()).or_default().clone()];
        if let Some(parser) = key.labels().find(|l| l.key() == "parser") {
            let labelled = format!("{}{{parser={}}}", key.name(), parser.value());
            sums.push(map.entry(labelled).or_default().clone());
        }
        metrics::Counter::from_arc(Arc::new(Sum(sums)))
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

impl Counters {
    fn get(&self, name: &str) -> u64 {
        self.0
            .lock()
            .expect("counters")
            .get(name)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

#[test]
fn reruns_and_isolated_failures_are_counted_in_metrics() {
    let reg = chaos();
    let counters = Counters::default();
    let lines = lines(256, &[(10, "panic"), (200, "trap")]);
    let (_, stats) = metrics::with_local_recorder(&counters, || parse(&reg, &lines));
    assert!(stats.reruns > 0);
    assert_eq!(
        counters.get("weir_plugin_isolation_reruns_total"),
        u64::from(stats.reruns)
    );
    assert_eq!(counters.get("weir_plugin_isolated_failures_total"), 2);
    assert_eq!(counters.get("weir_plugin_isolation_unresolved_total"), 0);
}

#[test]
fn metrics_name_a_plugin_found_in_plugin_dir_by_the_name_it_declares() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(wasm("chaos"), dir.path().join("hostile-v3.wasm")).expect("copy");
    let reg = ParserRegistry::new(&weir_plugin_host::ParsersConfig {
        plugin_dir: Some(dir.path().to_path_buf()),
        ..test_config()
    })
    .expect("load");
    let counters = Counters::default();
    let lines = lines(16, &[(3, "panic")]);
    let (events, _) = metrics::with_local_recorder(&counters, || parse(&reg, &lines));
    assert_eq!(events[3].to_json()["fields"]["@parser"], "chaos");
    assert_eq!(counters.get("weir_plugin_isolated_failures_total{parser=chaos}"), 1);
    assert_eq!(counters.get("weir_plugin_isolated_failures_total{parser=hostile-v3}"), 0);
}

#[test]
fn plugin_test_on_the_reported_input_fails_only_the_panicking_line() {
    // The report of issue 18: `printf 'a=1\nb=2\npanic\nc=3\n' | weir-core
    // plugin test chaos.wasm` gave 4 events, 4 failed.
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let summary = weir_plugin_host::plugin_test(
        &wasm("chaos"),
        None,
        "a=1\nb=2\npanic\nc=3\n".as_bytes(),
        &mut out,
        &mut err,
    )
    .expect("runs");
    let out = String::from_utf8(out).expect("utf8");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let raws: Vec<&str> = events
        .iter()
        .map(|e| e["raw"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(raws, ["a=1", "b=2", "panic", "c=3"]);
    for (i, e) in events.iter().enumerate() {
        let failed = e["fields"].get("@error").is_some();
        assert_eq!(failed, i == 2, "{e}");
    }
    let msg = events[2]["fields"]["@error_msg"].as_str().unwrap_or("");
    assert!(msg.contains(PANIC), "{msg}");
    assert_eq!((summary.events, summary.failed), (4, 1), "{out}");
    let err = String::from_utf8(err).expect("utf8");
    assert!(err.contains(": 4 lines -> 4 events, 1 failed, "), "{err}");
}
