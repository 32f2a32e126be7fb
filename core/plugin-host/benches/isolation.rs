//! What failure isolation costs: the `chaos` plugin on good batches versus the
//! same batches with one bad event (`panic`, in the middle), batch sizes 256
//! and 4096, same run. A bad batch costs its first call, the re-runs that pin
//! the failure on the bad event (2·⌈log2 n⌉, on fresh instances) and their
//! instantiations; the ratio says how many good batches' time one bad event
//! costs. The good rows are the baseline, and also show that the good path
//! makes one call per batch.
//!
//! Each path is timed [`ROUNDS`] times, interleaved within a round, and the
//! fastest round of each is reported (a shared 2-core machine).
//!
//! Run: `bash plugins/build.sh && cargo bench -p weir-plugin-host --bench isolation`

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};
use weir_plugin_host::{ParseStats, ParserRegistry, ParsersConfig, PluginConfig, RawEvent};

const INGEST_NS: i64 = 1_718_452_800_000_000_000;
/// Events per timed pass of one path.
const EVENTS: usize = 32_768;
const ROUNDS: usize = 5;
const BATCHES: [usize; 2] = [256, 4096];

fn batch(n: usize, bad_at: Option<usize>) -> Vec<RawEvent> {
    (0..n)
        .map(|i| {
            let line = if Some(i) == bad_at {
                "panic".to_string()
            } else {
                format!("level=info service=api-{} msg=\"request {i} done\"", i % 7)
            };
            RawEvent::new(line, "bench", INGEST_NS)
        })
        .collect()
}

/// Parses `EVENTS / n` batches of `n`; returns the time and the stats of the last.
fn pass(registry: &ParserRegistry, n: usize, bad_at: Option<usize>) -> (Duration, ParseStats) {
    let batches: Vec<Vec<RawEvent>> = (0..EVENTS / n).map(|_| batch(n, bad_at)).collect();
    let started = Instant::now();
    let mut stats = ParseStats::default();
    for b in batches {
        let (events, s) = registry.parse_with_stats("chaos", b).expect("chaos plugin");
        let failed = events.iter().filter(|e| e.error().is_some()).count();
        assert_eq!(
            (events.len(), failed),
            (n, usize::from(bad_at.is_some())),
            "{:?}",
            events
                .iter()
                .find(|e| e.error().is_some())
                .map(|e| e.to_json())
        );
        stats = s;
        black_box(events);
    }
    (started.elapsed(), stats)
}

fn main() {
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/target/wasm/chaos.wasm");
    assert!(
        wasm.is_file(),
        "{} is missing: run `bash plugins/build.sh` first",
        wasm.display()
    );
    let config = ParsersConfig {
        plugins: [("chaos".to_string(), PluginConfig::new(&wasm, &[]))].into(),
        cache_dir: Some(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/target/host-test-cache"),
        ),
        batch_deadline_ms: 10_000,
        ..ParsersConfig::default()
    };
    let registry = ParserRegistry::new(&config).expect("load chaos.wasm");
    // Warm up: instances, caches, the panic path.
    for n in BATCHES {
        pass(&registry, n, None);
        pass(&registry, n, Some(n / 2));
    }

    let mut good = [(Duration::MAX, ParseStats::default()); BATCHES.len()];
    let mut bad = good;
    for _ in 0..ROUNDS {
        for (i, n) in BATCHES.into_iter().enumerate() {
            let (t, s) = pass(&registry, n, None);
            if t < good[i].0 {
                good[i] = (t, s);
            }
            let (t, s) = pass(&registry, n, Some(n / 2));
            if t < bad[i].0 {
                bad[i] = (t, s);
            }
        }
    }

    println!("chaos plugin, {EVENTS} events per pass, best of {ROUNDS} rounds");
    println!(
        "{:<8} {:<20} {:>12} {:>12} {:>6} {:>10}",
        "batch", "path", "events/s", "ms/batch", "calls", "bad/good"
    );
    for (i, n) in BATCHES.into_iter().enumerate() {
        let per_batch = |t: Duration| t.as_secs_f64() * 1000.0 / (EVENTS / n) as f64;
        let rate = |t: Duration| EVENTS as f64 / t.as_secs_f64();
        let (gt, gs) = good[i];
        let (bt, bs) = bad[i];
        println!(
            "{n:<8} {:<20} {:>12.0} {:>12.3} {:>6} {:>10}",
            "good",
            rate(gt),
            per_batch(gt),
            gs.calls,
            "1.00"
        );
        println!(
            "{n:<8} {:<20} {:>12.0} {:>12.3} {:>6} {:>10.2}",
            "one bad (middle)",
            rate(bt),
            per_batch(bt),
            bs.calls,
            bt.as_secs_f64() / gt.as_secs_f64()
        );
    }
}
