//! Hot reload: the plugin file is replaced while another thread keeps sending
//! batches; later batches use the new version, no event is lost or failed,
//! and a broken replacement keeps the previous version running.

use crate::common::{batch, test_config, wasm};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_plugin_host::{Event, ParserRegistry, PluginConfig};

const LINE: &str = "a=1";
const PER_BATCH: usize = 8;

/// Which plugin produced the event: `chaos` adds `calls`, `kv` parses `a`.
fn version(e: &Event) -> &'static str {
    assert_eq!(
        e.error(),
        None,
        "no event may fail during a reload: {:?}",
        e.to_json()
    );
    match (e.get("calls"), e.get("a")) {
        (Some(_), None) => "chaos",
        (None, Some(_)) => "kv",
        _ => panic!("unknown output {:?}", e.to_json()),
    }
}

fn replace_atomically(target: &std::path::Path, source: &std::path::Path) {
    let tmp = target.with_extension("tmp");
    std::fs::copy(source, &tmp).expect("copy");
    std::fs::rename(&tmp, target).expect("rename");
}

fn wait_for(batches: &Mutex<Vec<&'static str>>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while batches.lock().expect("lock").len() < n {
        assert!(Instant::now() < deadline, "batches stopped flowing");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn replaced_plugin_file_is_picked_up_between_batches_without_losing_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("live.wasm");
    std::fs::copy(wasm("chaos"), &live).expect("copy");
    let mut config = test_config();
    config
        .plugins
        .insert("live".into(), PluginConfig::new(&live, &[]));
    config.default = Some("live".into());
    let registry = Arc::new(ParserRegistry::new(&config).expect("load"));
    let first_hash = registry.info("live").expect("info").hash;

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<&'static str>::new()));
    let sender = {
        let (registry, stop, seen) = (registry.clone(), stop.clone(), seen.clone());
        std::thread::spawn(move || {
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                let events = registry.parse("test", None, batch(&[LINE; PER_BATCH]));
                assert_eq!(events.len(), PER_BATCH, "events lost in a batch");
                let v = version(&events[0]);
                assert!(
                    events.iter().all(|e| version(e) == v),
                    "a batch mixed two versions"
                );
                seen.lock().expect("lock").push(v);
                sent += 1;
            }
            sent
        })
    };

    wait_for(&seen, 5);
    replace_atomically(&live, &wasm("kv"));
    let after = registry.parse("test", None, batch(&[LINE]));
    assert_eq!(
        version(&after[0]),
        "kv",
        "the first batch after the swap must use the new file"
    );
    let n = seen.lock().expect("lock").len();
    wait_for(&seen, n + 5);
    assert_ne!(registry.info("live").expect("info").hash, first_hash);

    // A broken replacement (truncated file) keeps the running version.
    std::fs::write(&live, &std::fs::read(wasm("chaos")).expect("read")[..1000]).expect("write");
    let n = seen.lock().expect("lock").len();
    wait_for(&seen, n + 5);
    assert_eq!(
        version(&registry.parse("test", None, batch(&[LINE]))[0]),
        "kv"
    );

    // Written in place, not renamed: picked up too.
    std::fs::write(&live, std::fs::read(wasm("chaos")).expect("read")).expect("write");
    assert_eq!(
        version(&registry.parse("test", None, batch(&[LINE]))[0]),
        "chaos"
    );
    let n = seen.lock().expect("lock").len();
    wait_for(&seen, n + 5);

    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().expect("the sender thread must not panic");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), sent, "every batch came back");
    // Versions only move forward: chaos..., kv..., chaos...
    let mut runs: Vec<&str> = seen.clone();
    runs.dedup();
    assert_eq!(
        runs,
        ["chaos", "kv", "chaos"],
        "sequence of versions seen by the sender"
    );
}
