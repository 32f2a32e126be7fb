//! Bucket upload benchmark (issue 15, part 3; not a test, not part of CI): Weir's upload of
//! a segment file (one read for blake3 and CRC-64/NVME, a conditional PUT the server
//! checks, a HEAD in checksum mode compared with the file; multipart above the threshold)
//! against a raw `PutObject` of the same bytes with aws-sdk-s3's defaults, to the same
//! server, in the same run, rounds alternating. Prints MB/s of each and the ratio
//! (target ≥ 0.8).
//!
//!   cargo bench -p weir-tests --bench bucket
//!
//! Environment: WEIR_TEST_S3 (a server; else the harness starts versitygw under
//! target/test-s3), WEIR_BENCH_ROUNDS (default 3), WEIR_BENCH_SMALL (files of 4 MiB,
//! default 16), WEIR_BENCH_LARGE (files of 96 MiB, default 2; multipart for Weir),
//! WEIR_BENCH_PARTS (parts of one upload in flight, default 4), WEIR_BENCH_THRESHOLD_MIB
//! (multipart above this, default 64).

use std::path::{Path, PathBuf};
use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use weir_core::config::BucketConfig;
use weir_core::store::bucket::Bucket;
use weir_global::SegmentInfo;
use weir_tests::s3;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `count` files of `len` pseudo-random bytes, and segments that say they are those files.
fn files(dir: &Path, tag: &str, count: usize, len: usize) -> Vec<(PathBuf, SegmentInfo)> {
    (0..count).map(|i| s3::segment_file(dir, &format!("{tag}-{i}"), len, (i as u64 + 1) * 0x9E37_79B9_7F4A_7C15)).collect()
}

fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / seconds / 1e6
}

#[tokio::main]
async fn main() {
    let endpoint = s3::shared_endpoint();
    let rounds = env("WEIR_BENCH_ROUNDS", 3);
    let dir = tempfile::tempdir().unwrap();
    let sets = [("small", env("WEIR_BENCH_SMALL", 16), 4usize << 20), ("large", env("WEIR_BENCH_LARGE", 2), 96usize << 20)];
    let client = s3::client(&endpoint);
    println!("bucket upload benchmark: {endpoint}, {rounds} rounds, best of each");
    println!("{:<8} {:>6} {:>10} {:>14} {:>14} {:>7}", "files", "count", "MiB each", "raw PUT MB/s", "Weir MB/s", "ratio");
    for (tag, count, len) in sets {
        let segments = files(dir.path(), tag, count, len);
        let total = (count * len) as u64;
        let (mut raw_best, mut weir_best) = (0f64, 0f64);
        for round in 0..rounds {
            let bucket = s3::unique_bucket(&format!("bench-{tag}-{round}")).await;
            // Raw: PutObject with the SDK's defaults (its own CRC32 of the body).
            let started = Instant::now();
            for (path, info) in &segments {
                let body = ByteStream::from_path(path).await.unwrap();
                client.put_object().bucket(&bucket).key(format!("raw/{}", info.segment_id)).body(body).send().await.expect("raw put");
            }
            raw_best = raw_best.max(mb_per_s(total, started.elapsed().as_secs_f64()));
            // Weir: hashed, checked by the server, verified by HEAD.
            let credentials = s3::Credentials::from_env();
            let config = BucketConfig {
                endpoint: endpoint.clone(),
                bucket: bucket.clone(),
                region: credentials.region,
                prefix: "weir/".into(),
                access_key_id: credentials.access_key,
                secret_access_key: credentials.secret_key,
                path_style: true,
                upload_interval_ms: 1000,
                concurrency: 1,
                request_timeout_ms: 120_000,
                multipart_threshold_bytes: (env("WEIR_BENCH_THRESHOLD_MIB", 64) as u64) << 20,
                part_bytes: 16 << 20,
                parts_in_flight: env("WEIR_BENCH_PARTS", 4),
                snapshot_interval_ms: 60_000,
                snapshots_kept: 3,
            };
            let uploader = Bucket::new(&config);
            let started = Instant::now();
            for (path, info) in &segments {
                uploader.upload(path, info).await.expect("weir upload");
            }
            weir_best = weir_best.max(mb_per_s(total, started.elapsed().as_secs_f64()));
        }
        println!("{tag:<8} {count:>6} {:>10} {raw_best:>14.1} {weir_best:>14.1} {:>7.2}", len >> 20, weir_best / raw_best);
    }
}
