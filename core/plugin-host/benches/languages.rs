//! One parser written in three languages, through the host: the access-log parser in Rust
//! (`access.wasm`) and JavaScript (`access-js.wasm`), and the key=value parser in Rust
//! (`kv.wasm`) and Python (`kv-py.wasm`). For each component: its size, the first load
//! (compile + instantiate + describe + configure, compile cache off), a load from a warm
//! compile cache, a fresh instance's first call, throughput in batches of 256, and the
//! time of one call of 4096 events (against the default 500 ms batch deadline: a call past
//! it is re-run in parts, which the output says).
//!
//! Each throughput is the fastest of [`ROUNDS`] passes, the plugins interleaved within a
//! round (a shared 2-core machine swings a single pass by 2x).
//!
//! Run: `bash plugins/build.sh && cargo bench -p weir-plugin-host --bench languages`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weir_plugin_host::{ParserRegistry, ParsersConfig, PluginConfig, RawEvent};

const LINES: usize = 16_384;
const BATCH: usize = 256;
const ROUNDS: usize = 3;
const INGEST_NS: i64 = 1_718_452_800_000_000_000;

fn access_lines() -> Vec<String> {
    (0..LINES)
        .map(|i| {
            format!(
                r#"10.{}.{}.{} - {} [15/Jun/2024:11:{:02}:{:02} +0000] "{} /api/v1/items/{}?page={} HTTP/1.1" {} {} "https://example.com/p/{}" "Mozilla/5.0 (X11; Linux x86_64) Firefox/{}.0""#,
                i % 256,
                i / 256 % 256,
                i % 7,
                ["-", "frank", "bob"][i % 3],
                i / 60 % 60,
                i % 60,
                ["GET", "POST", "PUT"][i % 3],
                i,
                i % 9,
                [200, 404, 500, 304][i % 4],
                i * 37 % 100_000,
                i % 50,
                100 + i % 30
            )
        })
        .collect()
}

fn kv_lines() -> Vec<String> {
    (0..LINES)
        .map(|i| {
            format!(
                r#"time=2024-05-01T10:{:02}:{:02}Z level={} msg="request {} done" user_id={} duration={}.25 path=/v1/items/{} ok=true"#,
                i / 60 % 60,
                i % 60,
                ["info", "warn", "error"][i % 3],
                i,
                i % 5000,
                i % 100,
                i
            )
        })
        .collect()
}

fn wasm(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../plugins/target/wasm/{name}.wasm"));
    assert!(path.is_file(), "{} is missing: run `bash plugins/build.sh` first", path.display());
    path
}

fn load(name: &str, cache_dir: Option<PathBuf>) -> (ParserRegistry, Duration) {
    let config = ParsersConfig {
        plugins: [(name.to_string(), PluginConfig::new(wasm(name), &[]))].into(),
        cache_dir,
        reload_check_ms: u64::MAX / 4,
        ..ParsersConfig::default()
    };
    let started = Instant::now();
    let registry = ParserRegistry::new(&config).unwrap_or_else(|e| panic!("{name}: {e}"));
    (registry, started.elapsed())
}

fn batches(lines: &[String]) -> Vec<Vec<RawEvent>> {
    lines.chunks(BATCH).map(|chunk| chunk.iter().map(|l| RawEvent::new(l.as_str(), "bench", INGEST_NS)).collect()).collect()
}

/// Parses every line once; returns the time and the fields made.
fn pass(registry: &ParserRegistry, name: &str, lines: &[String]) -> (Duration, usize) {
    let batches = batches(lines);
    let started = Instant::now();
    let mut fields = 0;
    for batch in batches {
        let events = registry.parse_with(name, batch).expect("loaded");
        assert!(events.iter().all(|e| e.error().is_none()), "{name}: {:?}", events.iter().find_map(|e| e.error_msg()));
        fields += events.iter().map(|e| e.fields.len()).sum::<usize>();
    }
    (started.elapsed(), fields)
}

fn main() {
    let cache = std::env::temp_dir().join(format!("weir-bench-languages-{}", std::process::id()));
    std::fs::create_dir_all(&cache).expect("cache dir");
    let access = access_lines();
    let kv = kv_lines();
    let plugins: [(&str, &[String]); 4] = [("access", &access), ("access-js", &access), ("kv", &kv), ("kv-py", &kv)];

    println!("{LINES} lines per pass, batches of {BATCH}, fastest of {ROUNDS} passes");
    println!("{:<10} {:>9} {:>11} {:>11} {:>13}", "plugin", "size MB", "load ms", "cached ms", "first call ms");
    let mut registries = Vec::new();
    for (name, lines) in plugins {
        let size = std::fs::metadata(wasm(name)).expect("size").len() as f64 / 1e6;
        let (_, cold) = load(name, None);
        // Fills the cache, then loads from it.
        drop(load(name, Some(cache.clone())));
        let (registry, cached) = load(name, Some(cache.clone()));
        // The load's instance is not pooled: the first call starts one.
        let one = batches(&lines[..1]).remove(0);
        let started = Instant::now();
        registry.parse_with(name, one).expect("loaded");
        let first = started.elapsed();
        println!("{name:<10} {size:>9.1} {:>11.0} {:>11.1} {:>13.1}", cold.as_secs_f64() * 1e3, cached.as_secs_f64() * 1e3, first.as_secs_f64() * 1e3);
        registries.push((name, lines, registry));
    }

    let mut best = vec![Duration::MAX; registries.len()];
    let mut fields = vec![0; registries.len()];
    for _ in 0..ROUNDS {
        for (i, (name, lines, registry)) in registries.iter().enumerate() {
            let (elapsed, n) = pass(registry, name, lines);
            best[i] = best[i].min(elapsed);
            fields[i] = n;
        }
    }
    // One call of 4096 events, what a large Kafka record gives the digest: against the
    // default batch deadline of 500 ms.
    let mut big = vec![Duration::MAX; registries.len()];
    let mut big_calls = vec![0; registries.len()];
    for _ in 0..ROUNDS {
        for (i, (name, lines, registry)) in registries.iter().enumerate() {
            let batch = lines[..4096].iter().map(|l| RawEvent::new(l.as_str(), "bench", INGEST_NS)).collect();
            let started = Instant::now();
            let (events, stats) = registry.parse_with_stats(name, batch).expect("loaded");
            big[i] = big[i].min(started.elapsed());
            // More than one call: the first ran past the deadline and was re-run in parts.
            big_calls[i] = big_calls[i].max(stats.calls);
            assert!(events.iter().all(|e| e.error().is_none()), "{name}: {stats:?}");
        }
    }
    println!("\n{:<10} {:>12} {:>14} {:>16} {:>14}", "plugin", "events/s", "fields/event", "vs Rust twin", "4096 in 1 call");
    for (i, (name, _, _)) in registries.iter().enumerate() {
        let rate = LINES as f64 / best[i].as_secs_f64();
        let twin = LINES as f64 / best[i & !1].as_secs_f64();
        println!(
            "{name:<10} {rate:>12.0} {:>14.1} {:>15.1}% {:>11.0} ms{}",
            fields[i] as f64 / LINES as f64,
            100.0 * rate / twin,
            big[i].as_secs_f64() * 1e3,
            if big_calls[i] > 1 { format!(" ({} calls: past the deadline)", big_calls[i]) } else { String::new() }
        );
    }
    let _ = std::fs::remove_dir_all(&cache);
}
