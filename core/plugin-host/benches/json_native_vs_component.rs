//! The JSON parser compiled natively versus the same parser as a component
//! through the host (`json.wasm`), batch sizes 1, 16 and 256, same input, one
//! run. Prints throughput, the component/native ratio and the per-call
//! overhead (a batch of one `{}` through the host minus the native parse of
//! `{}`) as a share of the time of a batch.
//!
//! Each path is timed [`ROUNDS`] times, the paths interleaved within a round,
//! and the fastest round of each path is reported: on a shared 2-core machine
//! a single pass swung by 2x either way, for native and component alike.
//!
//! Run: `bash plugins/build.sh && cargo bench -p weir-plugin-host --bench json_native_vs_component`

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};
use weir_parsers::json::JsonParser;
use weir_parsers::model::Input;
use weir_plugin_host::{ParserRegistry, ParsersConfig, PluginConfig, RawEvent};

const LINES: usize = 32_768;
const INGEST_NS: i64 = 1_718_452_800_000_000_000;
/// Timed passes per path; the fastest counts.
const ROUNDS: usize = 5;
const BATCHES: [usize; 3] = [1, 16, 256];

fn lines() -> Vec<String> {
    (0..LINES)
        .map(|i| {
            format!(
                r#"{{"@timestamp":"2024-05-01T10:{:02}:{:02}.{:03}Z","level":"{}","service":"api-{}","message":"request {} done","http":{{"method":"GET","path":"/v1/items/{}","status":{},"latency_ms":{}.5,"bytes":{}}},"user":{{"id":{},"roles":["admin","dev"]}},"trace_id":"{:016x}"}}"#,
                i / 60 % 60,
                i % 60,
                i % 1000,
                ["info", "warn", "error"][i % 3],
                i % 7,
                i,
                i * 31 % 10_000,
                [200, 404, 500][i % 3],
                i % 250,
                i * 17 % 100_000,
                i % 5000,
                (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            )
        })
        .collect()
}

fn native(parser: &JsonParser, lines: &[String]) -> (Duration, usize) {
    let started = Instant::now();
    let mut fields = 0;
    for line in lines {
        let parsed = parser
            .parse(&Input::line(line, INGEST_NS))
            .expect("valid JSON");
        fields += parsed.fields.len();
        black_box(parsed);
    }
    (started.elapsed(), fields)
}

fn component(registry: &ParserRegistry, lines: &[String], batch: usize) -> (Duration, usize) {
    let batches: Vec<Vec<RawEvent>> = lines
        .chunks(batch)
        .map(|c| {
            c.iter()
                .map(|l| RawEvent::new(l.as_str(), "bench", INGEST_NS))
                .collect()
        })
        .collect();
    let started = Instant::now();
    let mut fields = 0;
    for b in batches {
        let events = registry.parse_with("json", b).expect("json plugin");
        assert!(
            events.iter().all(|e| e.error().is_none()),
            "{:?}",
            events[0].to_json()
        );
        fields += events.iter().map(|e| e.fields.len()).sum::<usize>();
        black_box(events);
    }
    (started.elapsed(), fields)
}

fn main() {
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/target/wasm/json.wasm");
    assert!(
        wasm.is_file(),
        "{} is missing: run `bash plugins/build.sh` first",
        wasm.display()
    );
    let config = ParsersConfig {
        plugins: [("json".to_string(), PluginConfig::new(&wasm, &[]))].into(),
        cache_dir: Some(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/target/host-test-cache"),
        ),
        batch_deadline_ms: 10_000,
        ..ParsersConfig::default()
    };
    let registry = ParserRegistry::new(&config).expect("load json.wasm");
    let parser = JsonParser::default();
    let input = lines();
    let bytes: usize = input.iter().map(String::len).sum();

    // Warm up both paths (instance creation, caches), then the timed rounds.
    native(&parser, &input[..2048]);
    component(&registry, &input[..2048], 256);

    // Per-call overhead: one tiny event through the host vs natively.
    let calls = 20_000;
    let empty: Vec<String> = vec!["{}".to_string(); calls];

    let mut native_time = Duration::MAX;
    let mut native_fields = 0;
    let mut overhead = Duration::MAX;
    let mut component_time = [Duration::MAX; BATCHES.len()];
    for _ in 0..ROUNDS {
        let (t, fields) = native(&parser, &input);
        native_time = native_time.min(t);
        native_fields = fields;
        let (tiny_host, _) = component(&registry, &empty, 1);
        let (tiny_native, _) = native(&parser, &empty);
        overhead = overhead.min(tiny_host.saturating_sub(tiny_native) / calls as u32);
        for (best, batch) in component_time.iter_mut().zip(BATCHES) {
            let (t, fields) = component(&registry, &input, batch);
            assert_eq!(fields, native_fields, "component and native disagree");
            *best = (*best).min(t);
        }
    }

    let rate = |d: Duration| LINES as f64 / d.as_secs_f64();
    let mb = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    println!(
        "input: {LINES} JSON lines, {bytes} bytes ({} bytes/line), {} fields/line; best of {ROUNDS} rounds",
        bytes / LINES,
        native_fields / LINES
    );
    println!(
        "{:<22} {:>12} {:>9} {:>9} {:>16}",
        "path", "events/s", "MB/s", "vs native", "call overhead"
    );
    println!(
        "{:<22} {:>12.0} {:>9.1} {:>9} {:>16}",
        "native",
        rate(native_time),
        mb(native_time),
        "100.0%",
        "-"
    );
    for (t, batch) in component_time.into_iter().zip(BATCHES) {
        let per_batch = t / (LINES / batch) as u32;
        println!(
            "{:<22} {:>12.0} {:>9.1} {:>8.1}% {:>15.2}%",
            format!("component batch={batch}"),
            rate(t),
            mb(t),
            100.0 * native_time.as_secs_f64() / t.as_secs_f64(),
            100.0 * overhead.as_secs_f64() / per_batch.as_secs_f64()
        );
    }
    println!(
        "per-call overhead: {:.2} us (one `{{}}` event through the host minus native)",
        overhead.as_secs_f64() * 1e6
    );
}
