//! Safe storage against real Kafka and real core processes: what a core finds on its disk
//! at start is what Global says it holds. A copy whose file went missing or bad is
//! removed (the bad file set aside, never served), a registered file that lost its
//! copy (a crash between `register_segment` and `add_copy`) gets it back under the
//! node's disk id, and files and staging directories nobody owns are removed. A core
//! whose ingest topic was deleted and created again under its name stops with the reason.
//! Two cores replicate every segment to each other, and Kafka's log start moves forward
//! under steady ingest, never past what Global recorded, and Global's truncations never
//! past segments with two copies (checked independently, while it happens).

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use weir_core::cluster::GlobalLog;
use weir_core::cluster::commands::remove_copy;
use weir_core::config::CoreConfig;
use weir_global::{Location, Outcome, Segment, State};
use weir_tests::kafka;
use weir_tests::nodes::{CoreSpec, TOKEN, core_process};
use weir_tests::stored::global_state;
use weir_tests::{certs, eventually, gate, http, init_tracing, unique};

const WAIT: Duration = Duration::from_secs(60);

/// Submits `command` to the Global topic of `config` from a client of its own (a tool
/// writing the record a crashed core would have written, or would not have).
async fn submit(config: &CoreConfig, dir: &Path, command: weir_global::Command) -> Outcome {
    let mut own = config.clone();
    own.node_id = unique("tamper");
    own.data_dir = dir.join(unique("tamper-data"));
    let global = GlobalLog::open(&own).expect("open Global");
    let shutdown = CancellationToken::new();
    let applier = tokio::spawn(global.clone().run(own.kafka.clone(), own.global.clone(), shutdown.clone()));
    eventually("the tool's Global caught up", WAIT, || {
        let ready = global.not_ready().is_none();
        async move { ready.then_some(()) }
    })
    .await;
    let deadline = std::time::Instant::now() + kafka::METADATA_TIMEOUT;
    let outcome = kafka::retry_transient_async("submit a Global command", deadline, |_| global.submit(&command)).await.expect("submitted").1;
    shutdown.cancel();
    let _ = applier.await;
    outcome
}

fn copies_of<'a>(state: &'a State, id: &str) -> Vec<&'a Location> {
    state.segment(id).map(|s| s.copies.iter().collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_core_makes_its_copies_in_global_match_its_disk() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-storage"), &certs);
    let config = spec.config(dir.path());
    let mut core = core_process(&spec, dir.path()).await;
    let client = http();
    let run = unique("reconcile");
    // Requests a flush interval apart, until three segments carry core-1's copy.
    let mut segments: Vec<Segment> = Vec::new();
    for i in 0..40 {
        let events: Vec<_> = (0..5).map(|j| json!({"rawstring": format!("{run}-{i}-{j}")})).collect();
        let body = json!([{"tags": {"source": format!("{run}-{i}")}, "events": events}]).to_string();
        let sent = client.post(core.url("/api/v1/ingest/humio-structured")).header("authorization", format!("Bearer {TOKEN}")).body(body).send().await;
        assert!(sent.is_ok_and(|r| r.status().is_success()), "ingest {i}");
        tokio::time::sleep(Duration::from_millis(spec.digest_flush_ms + 200)).await;
        let state = global_state(&config).await.expect("Global");
        segments = state.partitions().flat_map(|p| state.segments(p)).filter(|s| s.info.n_events > 0 && !s.copies.is_empty()).cloned().collect();
        if segments.len() >= 3 {
            break;
        }
    }
    assert!(segments.len() >= 3, "three segments with a copy: {segments:?}");
    let status = tokio::task::block_in_place(|| core.terminate(Duration::from_secs(30)));
    assert!(status.success(), "{status}");

    let disk = std::fs::read_to_string(spec.data_dir.join("disk-id")).expect("the data directory has an id");
    let mine = Location::node("core-1", disk.trim());
    let path = |id: &str| spec.data_dir.join("segments").join(weir_segment::segment_file_name(id));
    let (missing, damaged, uncopied) = (&segments[0].info.segment_id, &segments[1].info.segment_id, &segments[2].info.segment_id);
    for id in [missing, damaged, uncopied] {
        assert_eq!(global_state(&config).await.unwrap().segment(id).unwrap().copies.iter().collect::<Vec<_>>(), [&mine], "{id} before");
    }
    // A lost file, a file with one flipped byte, and a registration whose add_copy never
    // made it (written here as the record removing it: the same state).
    std::fs::remove_file(path(missing)).unwrap();
    let mut bytes = std::fs::read(path(damaged)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(path(damaged), bytes).unwrap();
    let outcome = submit(&config, dir.path(), remove_copy(uncopied, mine.clone(), "core-1", "test: a crash before add_copy")).await;
    assert_eq!(outcome, Outcome::Applied);
    assert!(copies_of(&global_state(&config).await.unwrap(), uncopied).is_empty());
    // A finished file Global never heard of (old enough to judge), and a crashed reparse's
    // staging directory (its lock file held by nobody).
    let orphan = path("p0-o999999-e1-orphan00");
    std::fs::copy(path(uncopied), &orphan).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&orphan)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let abandoned = spec.data_dir.join("staging").join("reparse-999999");
    std::fs::create_dir_all(&abandoned).unwrap();
    std::fs::write(abandoned.join("lock"), b"").unwrap();
    std::fs::write(abandoned.join(weir_segment::segment_file_name("p0-o0-rdeadbeef")), b"half a file").unwrap();

    let core = core_process(&spec, dir.path()).await;
    let state = eventually("core-1 reconciled its copies with its disk", WAIT, || {
        let config = config.clone();
        let (missing, damaged, uncopied, mine) = (missing.clone(), damaged.clone(), uncopied.clone(), mine.clone());
        async move {
            let state = global_state(&config).await.ok()?;
            let done = copies_of(&state, &missing).is_empty() && copies_of(&state, &damaged).is_empty() && copies_of(&state, &uncopied) == [&mine];
            done.then_some(state)
        }
    })
    .await;
    for segment in &segments[3..] {
        assert_eq!(copies_of(&state, &segment.info.segment_id), [&mine], "an intact segment keeps its copy");
    }
    assert!(!path(damaged).exists(), "a damaged file is never served");
    assert!(path(damaged).with_extension("parquet.damaged").is_file(), "... but kept for the operator");
    assert!(path(uncopied).is_file());
    assert!(!orphan.exists(), "a file Global does not know is removed");
    assert!(!abandoned.exists(), "an abandoned staging directory is removed");
    let log = core.log_tail();
    assert!(log.contains("does not match Global's blake3"), "{log}");
    drop(core);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_core_whose_ingest_topic_was_recreated_stops_with_the_reason() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-recreated"), &certs);
    let config = spec.config(dir.path());
    let mut core = core_process(&spec, dir.path()).await;
    let bound = eventually("Global bound to the topics", WAIT, || {
        let config = config.clone();
        async move {
            global_state(&config)
                .await
                .ok()
                .and_then(|s| s.topics().cloned())
        }
    })
    .await;
    assert_eq!(bound.ingest_topic, spec.topic);
    let status = tokio::task::block_in_place(|| core.terminate(Duration::from_secs(30)));
    assert!(status.success(), "{status}");

    kafka::delete_topic(&bootstrap, &spec.topic).await;
    kafka::create_topic(&bootstrap, &spec.topic, 2, 1, &[]).await;
    // Run as an operator would; it must stop by itself, with the reason.
    let toml = dir.path().join("core-1.toml");
    std::fs::write(&toml, spec.toml()).unwrap();
    let ran = tokio::time::timeout(
        WAIT,
        weir_tests::cli::weir_core(&["run", "--config"], &toml),
    )
    .await;
    let (ok, stdout, stderr) = ran.expect("the core stops by itself");
    assert!(
        !ok,
        "a core of a recreated topic must not run:\n{stdout}{stderr}"
    );
    let expected = format!(
        "the id of ingest topic {} was {:?}",
        spec.topic, bound.ingest_topic_id
    );
    assert!(
        stderr.contains(&expected) && stderr.contains("deleted and created again"),
        "{stderr}"
    );
    let after = global_state(&config).await.expect("Global");
    assert_eq!(
        after.topics(),
        Some(&bound),
        "the binding is never replaced"
    );
}

/// Every partition's Kafka log start (read directly), Global's truncation, and whether the
/// segments below that truncation all have copies on two distinct nodes' current disks.
fn check_truncation(state: &State, metadata: &kafka::Metadata, topic: &str) -> Vec<(u32, i64, u64)> {
    let mut seen = Vec::new();
    for p in 0..2u32 {
        let low = metadata.low_watermark(topic, p as i32, kafka::METADATA_TIMEOUT).expect("low watermark");
        let truncated = state.partition(p).truncated;
        assert!(low as u64 <= truncated, "partition {p}: Kafka's log starts at {low}, Global recorded a truncation to {truncated} only");
        for segment in state.segments(p).into_iter().filter(|s| s.info.offset_end <= truncated) {
            let holders: std::collections::BTreeSet<_> = state.counted_node_copies(segment, |_| true).collect();
            assert!(holders.len() >= 2, "partition {p}: truncated to {truncated}, but {} has copies on {holders:?}", segment.info.segment_id);
        }
        seen.push((p, low, truncated));
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn two_cores_replicate_every_segment_and_kafka_is_truncated_only_below_what_is_safe() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let topic = unique("weir-test-truncate");
    let mut one = CoreSpec::new("core-1", &bootstrap, &topic, &certs);
    let mut two = CoreSpec::new("core-2", &bootstrap, &topic, &certs);
    two.global_topic = one.global_topic.clone();
    for spec in [&mut one, &mut two] {
        spec.storage_copies = 2;
        spec.truncation = true;
    }
    let config = one.config(dir.path());
    let core_1 = core_process(&one, dir.path()).await;
    let core_2 = core_process(&two, dir.path()).await;
    let client = http();
    let run = unique("truncate");
    let metadata = kafka::Metadata::new(&bootstrap);
    let mut acknowledged = Vec::new();
    let mut checks = 0;
    // Steady ingest to both cores, checking Kafka and Global against each other as it goes.
    for i in 0..60 {
        let lines: Vec<String> = (0..10).map(|j| format!("{run}-{i}-{j}")).collect();
        let events: Vec<_> = lines.iter().map(|l| json!({"rawstring": l})).collect();
        let core = if i % 2 == 0 { &core_1 } else { &core_2 };
        let body = json!([{"tags": {"source": format!("{run}-{}", i % 7)}, "events": events}]).to_string();
        let sent = client.post(core.url("/api/v1/ingest/humio-structured")).header("authorization", format!("Bearer {TOKEN}")).body(body).send().await;
        if sent.is_ok_and(|r| r.status().is_success()) {
            acknowledged.extend(lines);
        }
        if i % 10 == 9 {
            let state = global_state(&config).await.expect("Global");
            let metadata = &metadata;
            tokio::task::block_in_place(|| check_truncation(&state, metadata, &topic));
            checks += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(acknowledged.len(), 600);
    eventually("both partitions truncated past their first segments", WAIT, || {
        let (config, metadata, topic) = (config.clone(), &metadata, topic.clone());
        async move {
            let state = global_state(&config).await.ok()?;
            let seen = tokio::task::block_in_place(|| check_truncation(&state, metadata, &topic));
            seen.iter().all(|(_, low, _)| *low > 0).then_some(())
        }
    })
    .await;
    assert!(checks >= 6);
    // Once everything is digested: each event once, and every segment reaches two copies,
    // its file on both disks.
    let stored = weir_tests::stored::stored(&config, &[one.data_dir.clone(), two.data_dir.clone()]).await;
    let raws = stored.raws();
    for raw in &acknowledged {
        assert_eq!(raws.get(raw), Some(&1), "{raw} stored once");
    }
    let state = eventually("every segment on both cores", WAIT, || {
        let config = config.clone();
        async move {
            let state = global_state(&config).await.ok()?;
            let all = state.partitions().flat_map(|p| state.segments(p)).all(|s| state.counted_node_copies(s, |_| true).count() == 2);
            all.then_some(state)
        }
    })
    .await;
    for segment in state.partitions().flat_map(|p| state.segments(p)) {
        for spec in [&one, &two] {
            let file = spec.data_dir.join("segments").join(weir_segment::segment_file_name(&segment.info.segment_id));
            assert_eq!(weir_segment::blake3_of_file(&file).expect("replica on disk"), segment.info.blake3, "{}", file.display());
        }
    }
    tokio::task::block_in_place(|| check_truncation(&state, &metadata, &topic));
    let metrics = weir_tests::scrape(&format!("http://{}", core_2.http)).await;
    assert!(weir_tests::metric_sum(&metrics, "weir_replication_segments_total") > 0.0, "core-2 fetched replicas");
    drop((core_1, core_2));
}
