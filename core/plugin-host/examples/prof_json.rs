//! TEMPORARY profiling harness (to be removed): component path only.
use std::path::Path;
use std::time::Instant;
use weir_plugin_host::{ParserRegistry, ParsersConfig, PluginConfig, RawEvent};
const INGEST_NS: i64 = 1_718_452_800_000_000_000;
fn main() {
    let wasm = std::env::var("WASM").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../plugins/target/wasm/json.wasm").to_string());
    let config = ParsersConfig {
        plugins: [("json".to_string(), PluginConfig::new(Path::new(&wasm), &[]))].into(),
        cache_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/target/host-test-cache")),
        batch_deadline_ms: 10_000,
        ..ParsersConfig::default()
    };
    let registry = ParserRegistry::new(&config).expect("load");
    let lines: Vec<String> = (0..4096).map(|i| format!(
        r#"{{"@timestamp":"2024-05-01T10:{:02}:{:02}.{:03}Z","level":"{}","service":"api-{}","message":"request {} done","http":{{"method":"GET","path":"/v1/items/{}","status":{},"latency_ms":{}.5,"bytes":{}}},"user":{{"id":{},"roles":["admin","dev"]}},"trace_id":"{:016x}"}}"#,
        i / 60 % 60, i % 60, i % 1000, ["info", "warn", "error"][i % 3], i % 7, i, i * 31 % 10_000, [200, 404, 500][i % 3], i % 250, i * 17 % 100_000, i % 5000, (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))).collect();
    let batch: usize = std::env::var("BATCH").ok().and_then(|s| s.parse().ok()).unwrap_or(256);
    let iters: usize = std::env::var("ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let mut best = f64::MAX;
    for _ in 0..iters {
        let t = Instant::now();
        for c in lines.chunks(batch) {
            let b: Vec<RawEvent> = c.iter().map(|l| RawEvent::new(l.as_str(), "bench", INGEST_NS)).collect();
            let ev = registry.parse_with("json", b).unwrap();
            std::hint::black_box(ev);
        }
        best = best.min(t.elapsed().as_secs_f64() / lines.len() as f64);
    }
    println!("best {:.3} us/event", best * 1e6);
}
