//! Bucket mode against real Kafka, a real S3 server (versitygw) and real core processes: a
//! segment is safe once its upload is verified, Kafka is truncated below verified uploads
//! only (checked independently: Kafka's log start read directly, every object read back
//! with our own client and hashed), and a core that lost its disk loses nothing: a core
//! with an empty disk starts Global from the bucket's snapshot and reads every event from
//! the bucket, each once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;
use weir_core::config::CoreConfig;
use weir_global::{Location, State};
use weir_tests::kafka;
use weir_tests::nodes::{CoreSpec, Node, READ_TOKEN, REPOSITORY, TOKEN, core_process};
use weir_tests::stored::global_state;
use weir_tests::{certs, eventually, gate, http, init_tracing, s3, unique};

const WAIT: Duration = Duration::from_secs(90);

/// The `[bucket]` table of a core that uploads to `bucket` on the server at `endpoint`.
fn bucket_toml(endpoint: &str, bucket: &str) -> String {
    let credentials = s3::Credentials::from_env();
    format!(
        r#"
[bucket]
endpoint = "{endpoint}"
bucket = "{bucket}"
region = "{region}"
prefix = "weir/"
access_key_id = "{access}"
secret_access_key = "{secret}"
upload_interval_ms = 300
snapshot_interval_ms = 1000
"#,
        region = credentials.region,
        access = credentials.access_key,
        secret = credentials.secret_key,
    )
}

/// Checks the bucket's objects against Global with our own client: each bucket copy's
/// object exists and its bytes hash to the segment's blake3. `verified` remembers objects
/// already read (they are never overwritten).
async fn check_objects(client: &aws_sdk_s3::Client, bucket: &str, state: &State, verified: &mut BTreeSet<String>) {
    for segment in state.partitions().flat_map(|p| state.segments(p)) {
        for key in segment.copies.iter().filter_map(|l| match l {
            Location::Bucket(key) => Some(key),
            Location::Node { .. } => None,
        }) {
            if verified.contains(key) {
                continue;
            }
            let object = client.get_object().bucket(bucket).key(key).send().await;
            let object = object.unwrap_or_else(|e| panic!("Global records {key} in the bucket: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
            let bytes = object.body.collect().await.expect("object body").into_bytes();
            assert_eq!(blake3::hash(&bytes).to_hex().to_string(), segment.info.blake3, "object {key} holds segment {}'s bytes", segment.info.segment_id);
            assert_eq!(bytes.len() as u64, segment.info.bytes, "{key}");
            verified.insert(key.clone());
        }
    }
}

/// Kafka's log start (read directly, first), then Global: a truncation is recorded before
/// Kafka is asked, so Global can only be ahead, and every segment below a truncation has
/// a bucket copy. Returns the state and each partition's `(log start, truncation)`.
async fn check_truncation(config: &CoreConfig, metadata: &kafka::Metadata, topic: &str) -> (State, Vec<(i64, u64)>) {
    let lows: Vec<i64> = tokio::task::block_in_place(|| (0..2).map(|p| metadata.low_watermark(topic, p, kafka::METADATA_TIMEOUT).expect("low watermark")).collect());
    let state = global_state(config).await.expect("Global");
    let mut seen = Vec::new();
    for p in 0..2u32 {
        let (low, truncated) = (lows[p as usize], state.partition(p).truncated);
        assert!(low as u64 <= truncated, "partition {p}: Kafka's log starts at {low}, Global recorded a truncation to {truncated} only");
        for segment in state.segments(p).into_iter().filter(|s| s.info.offset_end <= truncated) {
            let in_bucket = segment.copies.iter().any(|l| matches!(l, Location::Bucket(_)));
            assert!(in_bucket, "partition {p}: truncated to {truncated}, but {} has no bucket copy: {:?}", segment.info.segment_id, segment.copies);
        }
        seen.push((low, truncated));
    }
    (state, seen)
}

/// Flips the middle byte of `file` in place.
pub fn flip_middle_byte(file: &std::path::Path) {
    let mut bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(file, bytes).unwrap();
}

/// Every event of the test repository through `node`'s query API, by `@rawstring`.
async fn queried(node: &Node) -> Result<BTreeMap<String, usize>, String> {
    let response = http()
        .post(node.url(&format!("/api/v1/repositories/{REPOSITORY}/query")))
        .header("authorization", format!("Bearer {READ_TOKEN}"))
        .header("accept", "application/x-ndjson")
        .body(json!({"queryString": "", "start": 0, "end": "now"}).to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    let mut raws = BTreeMap::new();
    for line in body.lines() {
        let event: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
        *raws.entry(event["@rawstring"].as_str().unwrap_or_default().to_owned()).or_insert(0) += 1;
    }
    Ok(raws)
}

#[tokio::test(flavor = "multi_thread")]
async fn bucket_mode_truncates_kafka_below_verified_uploads_and_a_core_with_an_empty_disk_reads_every_event() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let endpoint = s3::shared_endpoint();
    let bucket = s3::unique_bucket("weir-bucket-mode").await;
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let topic = unique("weir-test-bucket");
    let mut one = CoreSpec::new("core-1", &bootstrap, &topic, &certs);
    one.storage_mode = "bucket";
    one.truncation = true;
    one.extra_toml = bucket_toml(&endpoint, &bucket);
    one.scrub_interval_ms = Some(1000);
    let config = one.config(dir.path());
    let mut core_1 = core_process(&one, dir.path()).await;
    let client = http();
    let s3_client = s3::client(&endpoint);
    let metadata = kafka::Metadata::new(&bootstrap);
    let run = unique("bucket");
    let mut acknowledged = Vec::new();
    let mut verified = BTreeSet::new();
    // Steady ingest, checking Kafka, Global and the bucket against each other as it goes.
    for i in 0..40 {
        let lines: Vec<String> = (0..10).map(|j| format!("{run}-{i}-{j}")).collect();
        let events: Vec<_> = lines.iter().map(|l| json!({"rawstring": l})).collect();
        let body = json!([{"tags": {"source": format!("{run}-{}", i % 7)}, "events": events}]).to_string();
        let sent = client.post(core_1.url("/api/v1/ingest/humio-structured")).header("authorization", format!("Bearer {TOKEN}")).body(body).send().await;
        if sent.is_ok_and(|r| r.status().is_success()) {
            acknowledged.extend(lines);
        }
        if i % 10 == 9 {
            let (state, _) = check_truncation(&config, &metadata, &topic).await;
            check_objects(&s3_client, &bucket, &state, &mut verified).await;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(acknowledged.len(), 400);
    // Kafka really is truncated, in both partitions, and only below verified uploads.
    eventually("both partitions truncated", WAIT, || {
        let (config, metadata, topic) = (config.clone(), &metadata, topic.clone());
        async move {
            let (_, seen) = check_truncation(&config, metadata, &topic).await;
            seen.iter().all(|(low, _)| *low > 0).then_some(())
        }
    })
    .await;
    // Everything digested and uploaded: every acknowledged event in a segment, each once,
    // and every segment with a bucket copy.
    let stored = weir_tests::stored::stored(&config, std::slice::from_ref(&one.data_dir)).await;
    let raws = stored.raws();
    for raw in &acknowledged {
        assert_eq!(raws.get(raw), Some(&1), "{raw} stored once");
    }
    let state = eventually("every segment uploaded", WAIT, || {
        let config = config.clone();
        async move {
            let state = global_state(&config).await.ok()?;
            let all = state.partitions().flat_map(|p| state.segments(p)).all(|s| s.copies.iter().any(|l| matches!(l, Location::Bucket(_))));
            all.then_some(state)
        }
    })
    .await;
    check_objects(&s3_client, &bucket, &state, &mut verified).await;
    assert!(verified.len() >= 2, "objects read back: {verified:?}");
    let (_, seen) = check_truncation(&config, &metadata, &topic).await;

    // The cluster at a glance says so.
    let status: serde_json::Value = client
        .get(core_1.url("/api/v1/cluster"))
        .header("authorization", format!("Bearer {READ_TOKEN}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["storage_rule"]["mode"], "bucket", "{status}");
    assert_eq!(status["segments"]["under_replicated"], 0, "{status}");
    assert!(status["segments"]["in_bucket"].as_u64() >= Some(verified.len() as u64), "{status}");
    let metrics = weir_tests::scrape(&format!("http://{}", core_1.http)).await;
    assert!(weir_tests::metric_sum(&metrics, "weir_bucket_uploads_total") >= 2.0, "{metrics}");

    // Flipped bytes in a file on core-1's disk: the scrub finds them, sets the file aside
    // and removes its copy; a query still reads every event once, that segment from the
    // bucket.
    let victim = state.partitions().flat_map(|p| state.segments(p)).find(|s| s.info.n_events > 0).expect("a segment").info.clone();
    let file = one.data_dir.join("segments").join(weir_segment::segment_file_name(&victim.segment_id));
    flip_middle_byte(&file);
    eventually("the damaged file set aside and its copy removed", WAIT, || {
        let (config, id, aside) = (config.clone(), victim.segment_id.clone(), file.with_extension("parquet.damaged"));
        async move {
            let state = global_state(&config).await.ok()?;
            let copies = &state.segment(&id)?.copies;
            (aside.is_file() && !copies.iter().any(|l| l.node_id() == Some("core-1"))).then_some(())
        }
    })
    .await;
    let raws = queried(&core_1).await.expect("query core-1");
    for raw in &acknowledged {
        assert_eq!(raws.get(raw), Some(&1), "{raw} read once with a damaged local file");
    }
    let metrics = weir_tests::scrape(&format!("http://{}", core_1.http)).await;
    assert!(weir_tests::metric_sum(&metrics, "weir_segment_files_damaged_total") >= 1.0, "{metrics}");
    assert!(weir_tests::metric_sum(&metrics, "weir_segments_fetched_from_bucket_total") >= 1.0, "{metrics}");

    // Global's snapshot is in the bucket too, the newest 3 kept (a 4th lives between a put
    // and the deletion after it).
    eventually("Global snapshots in the bucket, old ones deleted", WAIT, || {
        let (s3_client, bucket) = (&s3_client, &bucket);
        async move {
            let listed = s3_client.list_objects_v2().bucket(bucket).prefix("weir/global/").send().await.ok()?;
            let keys: Vec<String> = listed.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect();
            (!keys.is_empty() && keys.len() <= 3).then_some(())
        }
    })
    .await;

    // The disk is lost: kill the core and wipe its data directory. A core with an empty
    // disk (and the same config otherwise) reads every event from the bucket.
    tokio::task::block_in_place(|| core_1.kill9());
    std::fs::remove_dir_all(&one.data_dir).expect("wipe core-1's disk");
    let mut two = CoreSpec::new("core-2", &bootstrap, &topic, &certs);
    two.global_topic = one.global_topic.clone();
    two.storage_mode = "bucket";
    two.truncation = true;
    two.extra_toml = one.extra_toml.clone();
    let core_2 = core_process(&two, dir.path()).await;
    let raws = eventually("core-2 answers a query over every segment", WAIT, || {
        let core_2 = &core_2;
        async move { queried(core_2).await.inspect_err(|e| tracing::info!(%e, "not yet")).ok() }
    })
    .await;
    for raw in &acknowledged {
        assert_eq!(raws.get(raw), Some(&1), "{raw} read once from the bucket by a core with an empty disk");
    }
    let metrics = weir_tests::scrape(&format!("http://{}", core_2.http)).await;
    assert!(weir_tests::metric_sum(&metrics, "weir_segments_fetched_from_bucket_total") >= verified.len() as f64, "{metrics}");
    assert!(weir_tests::metric_sum(&metrics, "weir_global_bootstrap_offset") > 0.0, "core-2 started Global from the bucket's snapshot: {metrics}");
    // Kafka no longer has what was truncated: those events came from the bucket alone.
    assert!(seen.iter().all(|(low, _)| *low > 0), "{seen:?}");
    drop(core_2);
}

/// A `[bucket]` of the server at `endpoint`, with parts of 5 MiB above 8 MiB.
fn bucket_config(endpoint: &str, bucket: &str) -> weir_core::config::BucketConfig {
    let credentials = s3::Credentials::from_env();
    weir_core::config::BucketConfig {
        endpoint: endpoint.to_owned(),
        bucket: bucket.to_owned(),
        region: credentials.region,
        prefix: "weir/".into(),
        access_key_id: credentials.access_key,
        secret_access_key: credentials.secret_key,
        path_style: true,
        upload_interval_ms: 300,
        concurrency: 2,
        request_timeout_ms: 30_000,
        multipart_threshold_bytes: 8 << 20,
        part_bytes: 5 << 20,
        parts_in_flight: 2,
        snapshot_interval_ms: 1000,
        snapshots_kept: 3,
    }
}

/// Whether `key` exists, and if so its bytes' blake3.
async fn object_blake3(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<String> {
    let object = client.get_object().bucket(bucket).key(key).send().await.ok()?;
    let bytes = object.body.collect().await.expect("object body").into_bytes();
    Some(blake3::hash(&bytes).to_hex().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_is_recorded_only_when_the_bucket_verifiably_holds_the_segments_bytes() {
    let _gate = gate::shared();
    init_tracing();
    let endpoint = s3::shared_endpoint();
    let bucket = s3::unique_bucket("weir-upload").await;
    let proxy = s3::S3Proxy::start(&endpoint).await;
    let config = bucket_config(&proxy.endpoint(), &bucket);
    let uploader = weir_core::store::bucket::Bucket::new(&config);
    let client = s3::client(&endpoint);
    let dir = tempfile::tempdir().unwrap();

    // A large segment goes up in parts (5 + 5 + 2 MiB), its whole CRC checked at completion.
    let (path, big) = weir_tests::s3::segment_file(dir.path(), &unique("big"), 12 << 20, 1);
    let key = uploader.upload(&path, &big).await.expect("multipart upload");
    assert_eq!(object_blake3(&client, &bucket, &key).await.as_deref(), Some(big.blake3.as_str()));
    let parts = proxy.seen().iter().filter(|s| s.method == "PUT" && s.uri.contains("partNumber=")).count();
    assert_eq!(parts, 3, "{:?}", proxy.seen());
    // Again (a second holder, a retry): the object is there (412), verified, not replaced.
    assert_eq!(uploader.upload(&path, &big).await.expect("second upload"), key);

    // A local file that is not Global's bytes never goes up.
    let (path, small) = weir_tests::s3::segment_file(dir.path(), &unique("small"), 100_000, 2);
    let mut damaged = std::fs::read(&path).unwrap();
    damaged[500] ^= 1;
    let damaged_path = dir.path().join("damaged.parquet");
    std::fs::write(&damaged_path, &damaged).unwrap();
    let before = proxy.seen().len();
    let error = uploader.upload(&damaged_path, &small).await.expect_err("a damaged file uploaded");
    assert!(error.to_string().contains("blake3"), "{error}");
    assert_eq!(proxy.seen().len(), before, "nothing was sent");

    // A body changed on the way is refused by the server (CRC-64/NVME).
    let rule = proxy.inject(s3::On::put(), s3::Fault::CorruptRequestBody, 1);
    let error = uploader.upload(&path, &small).await.expect_err("a corrupted body accepted");
    assert_eq!(rule.hits(), 1);
    assert!(object_blake3(&client, &bucket, &uploader.key(&small)).await.is_none(), "{error}");

    // A PUT answered 200 that never reached the server: the HEAD finds nothing.
    let rule = proxy.inject(s3::On::put(), s3::Fault::AcceptWithoutForwarding, 1);
    let error = uploader.upload(&path, &small).await.expect_err("an upload that never arrived verified");
    assert_eq!(rule.hits(), 1);
    assert!(error.to_string().contains("HEAD"), "{error}");

    // A part corrupted on the way: the upload fails and is aborted, no object appears.
    let (big_path, other) = weir_tests::s3::segment_file(dir.path(), &unique("big-bad"), 11 << 20, 3);
    let rule = proxy.inject(s3::On::put().with_query_param("partNumber"), s3::Fault::CorruptRequestBody, 1);
    uploader.upload(&big_path, &other).await.expect_err("a corrupted part accepted");
    assert_eq!(rule.hits(), 1);
    assert!(object_blake3(&client, &bucket, &uploader.key(&other)).await.is_none());
    let aborted = proxy.seen().iter().any(|s| s.method == "DELETE" && s.uri.contains("uploadId="));
    assert!(aborted, "the failed multipart upload was aborted: {:?}", proxy.seen());

    // A 503 and a lost answer are retried; the upload then verifies.
    let unavailable = proxy.inject(s3::On::put(), s3::Fault::Status(503), 1);
    let lost = proxy.inject(s3::On::head(), s3::Fault::DropResponse, 1);
    let key = uploader.upload(&path, &small).await.expect("upload after a 503 and a lost answer");
    assert_eq!((unavailable.hits(), lost.hits()), (1, 1));
    assert_eq!(object_blake3(&client, &bucket, &key).await.as_deref(), Some(small.blake3.as_str()));

    // A download whose bytes changed on the way never gets the segment's name.
    let cache = tempfile::tempdir().unwrap();
    let rule = proxy.inject(s3::On::get(), s3::Fault::CorruptResponseBody, 1);
    let error = uploader.download(&key, &small, cache.path()).await.expect_err("corrupted download accepted");
    assert_eq!(rule.hits(), 1);
    // Caught by the response's CRC-64/NVME as it streams (the SDK checks it), else by blake3.
    let error = error.to_string();
    assert!(error.to_lowercase().contains("checksum") || error.contains("blake3"), "{error}");
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0, "nothing left behind");
    let got = uploader.download(&key, &small, cache.path()).await.expect("download");
    assert_eq!(weir_segment::blake3_of_file(&got).unwrap(), small.blake3);
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_between_a_core_and_the_bucket_never_let_truncation_pass_an_unverified_upload() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let endpoint = s3::shared_endpoint();
    let bucket = s3::unique_bucket("weir-bucket-faults").await;
    let proxy = s3::S3Proxy::start(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let topic = unique("weir-test-bucket-faults");
    let mut spec = CoreSpec::new("core-1", &bootstrap, &topic, &certs);
    spec.storage_mode = "bucket";
    spec.truncation = true;
    spec.extra_toml = bucket_toml(&proxy.endpoint(), &bucket);
    let config = spec.config(dir.path());
    // Every kind of fault, on uploads and on their checks; each is used up by the core's
    // attempts (an upload is retried until it verifies).
    let segments = s3::On::put().path_prefix(&format!("/{bucket}/weir/segments/"));
    let planned = [
        (segments.clone(), s3::Fault::CorruptRequestBody, 3),
        (segments.clone(), s3::Fault::AcceptWithoutForwarding, 3),
        (segments.clone(), s3::Fault::Status(500), 3),
        (segments.clone(), s3::Fault::Drop, 2),
        (segments.clone(), s3::Fault::DropResponse, 2),
        (segments, s3::Fault::Delay(Duration::from_secs(2)), 2),
        (s3::On::head(), s3::Fault::Status(503), 3),
    ];
    let rules: Vec<(s3::Rule, u32)> = planned.into_iter().map(|(on, fault, times)| (proxy.inject(on, fault, times), times)).collect();
    let core = core_process(&spec, dir.path()).await;
    let client = http();
    let s3_client = s3::client(&endpoint);
    let metadata = kafka::Metadata::new(&bootstrap);
    let run = unique("faults");
    let mut acknowledged = Vec::new();
    let mut verified = BTreeSet::new();
    for i in 0..30 {
        let lines: Vec<String> = (0..10).map(|j| format!("{run}-{i}-{j}")).collect();
        let events: Vec<_> = lines.iter().map(|l| json!({"rawstring": l})).collect();
        let body = json!([{"tags": {"source": format!("{run}-{}", i % 5)}, "events": events}]).to_string();
        let sent = client.post(core.url("/api/v1/ingest/humio-structured")).header("authorization", format!("Bearer {TOKEN}")).body(body).send().await;
        if sent.is_ok_and(|r| r.status().is_success()) {
            acknowledged.extend(lines);
        }
        if i % 5 == 4 {
            let (state, _) = check_truncation(&config, &metadata, &topic).await;
            check_objects(&s3_client, &bucket, &state, &mut verified).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(acknowledged.len(), 300);
    eventually("every fault used up", WAIT, || {
        let rules = &rules;
        async move { rules.iter().all(|(rule, times)| rule.hits() == *times).then_some(()) }
    })
    .await;
    // The core got through: every event stored once, every segment uploaded and verified,
    // Kafka truncated in both partitions, and only below verified uploads.
    let stored = weir_tests::stored::stored(&config, std::slice::from_ref(&spec.data_dir)).await;
    let raws = stored.raws();
    for raw in &acknowledged {
        assert_eq!(raws.get(raw), Some(&1), "{raw} stored once");
    }
    let state = eventually("every segment uploaded and both partitions truncated", WAIT, || {
        let (config, metadata, topic) = (config.clone(), &metadata, topic.clone());
        async move {
            let (state, seen) = check_truncation(&config, metadata, &topic).await;
            let uploaded = state.partitions().flat_map(|p| state.segments(p)).all(|s| s.copies.iter().any(|l| matches!(l, Location::Bucket(_))));
            (uploaded && seen.iter().all(|(low, _)| *low > 0)).then_some(state)
        }
    })
    .await;
    check_objects(&s3_client, &bucket, &state, &mut verified).await;
    let metrics = weir_tests::scrape(&format!("http://{}", core.http)).await;
    assert!(weir_tests::metric_sum(&metrics, "weir_bucket_upload_failures_total") >= 3.0, "failed attempts are counted: {metrics}");
    drop(core);
}
