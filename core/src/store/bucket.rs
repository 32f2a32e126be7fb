//! The bucket: segment files uploaded to an S3-compatible object store (`[bucket]`), which
//! makes them safe in `bucket` and `hybrid` mode.
//!
//! An upload is verified twice before Global records it: the server checks the body
//! against the CRC-64/NVME of the whole file that we computed and sent
//! (`x-amz-checksum-crc64nvme`; a body changed on the way is refused), and a HEAD in
//! checksum mode must then return that same checksum, the file's length and its blake3 (as
//! object metadata) before `add_copy {Bucket(key)}` is written. An object is never
//! overwritten (`If-None-Match: *`): one already there is accepted only if it verifies as
//! the same bytes. Every download is checked against Global's blake3 before it gets its
//! segment's name.
//!
//! Who uploads: in bucket and hybrid mode every core uploads the segments it holds a
//! copy of that have no bucket copy yet; a second holder uploading the same segment finds
//! the object there (412) and only verifies it.
//! Must never: record a copy it did not verify, or trust a downloaded byte before its hash.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use base64::Engine as _;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use weir_global::{Cmd, Command, Location, Outcome, SegmentInfo, State, StorageMode};

use super::DataDir;
use crate::cluster::GlobalLog;
use crate::cluster::commands::attempt;
use crate::config::BucketConfig;

/// Why an upload, a check or a download failed.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("cannot read {path}: {source}")]
    Local { path: PathBuf, source: std::io::Error },
    #[error("the bucket refused or did not answer {what} of {key}: {reason}")]
    Request { what: &'static str, key: String, reason: String },
    #[error("object {key} is not segment {segment_id}'s bytes: {why}")]
    Mismatch { key: String, segment_id: String, why: String },
}

/// A client of the bucket of `[bucket]`.
#[derive(Clone)]
pub struct Bucket {
    client: Client,
    bucket: String,
    prefix: String,
}

/// Base64 of the big-endian CRC-64/NVME, as `x-amz-checksum-crc64nvme` carries it.
fn crc64nvme_b64(crc: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// The CRC-64/NVME and length of a file, read once.
fn file_crc(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);
    let mut buffer = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok((digest.finalize(), len));
        }
        digest.update(&buffer[..n]);
        len += n as u64;
    }
}

impl Bucket {
    pub fn new(config: &BucketConfig) -> Bucket {
        let http_client = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https();
        let credentials = aws_sdk_s3::config::Credentials::new(config.access_key_id.clone(), config.secret_access_key.clone(), None, None, "weir-config");
        let s3 = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&config.endpoint)
            .force_path_style(config.path_style)
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_millis(config.request_timeout_ms))
                    .build(),
            )
            .http_client(http_client)
            .build();
        Bucket { client: Client::from_conf(s3), bucket: config.bucket.clone(), prefix: config.prefix.clone() }
    }

    /// Where a segment's object is: `<prefix>segments/p<partition>/<id>.parquet`.
    pub fn key(&self, segment: &SegmentInfo) -> String {
        format!("{}segments/p{}/{}", self.prefix, segment.partition, super::data_dir::file_name(&segment.segment_id))
    }

    /// Uploads the file of `segment` at `path` (never over an existing object) and verifies
    /// what the bucket holds; returns the key to record.
    pub async fn upload(&self, path: &Path, segment: &SegmentInfo) -> Result<String, BucketError> {
        let key = self.key(segment);
        let local = |source| BucketError::Local { path: path.to_owned(), source };
        let owned = path.to_owned();
        let (crc, len) = tokio::task::spawn_blocking(move || file_crc(&owned)).await.expect("crc task").map_err(local)?;
        if len != segment.bytes {
            return Err(BucketError::Mismatch { key, segment_id: segment.segment_id.clone(), why: format!("the local file has {len} bytes, Global says {}", segment.bytes) });
        }
        let body = ByteStream::from_path(path).await.map_err(|e| local(std::io::Error::other(e)))?;
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .if_none_match("*")
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .checksum_crc64_nvme(crc64nvme_b64(crc))
            .metadata("blake3", &segment.blake3)
            .content_length(len as i64)
            .body(body)
            .send()
            .await;
        if let Err(error) = put {
            // Already there (an earlier attempt, another holder): fine if it is these bytes.
            let status = error.raw_response().map(|r| r.status().as_u16());
            if status != Some(412) {
                return Err(BucketError::Request { what: "PUT", key, reason: describe(&error) });
            }
        }
        self.verify(&key, segment, crc, len).await?;
        Ok(key)
    }

    /// HEAD in checksum mode: the object's CRC-64/NVME, length and blake3 metadata must be
    /// this file's.
    async fn verify(&self, key: &str, segment: &SegmentInfo, crc: u64, len: u64) -> Result<(), BucketError> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|error| BucketError::Request { what: "HEAD", key: key.to_owned(), reason: describe(&error) })?;
        let mismatch = |why: String| BucketError::Mismatch { key: key.to_owned(), segment_id: segment.segment_id.clone(), why };
        let expected = crc64nvme_b64(crc);
        if head.checksum_crc64_nvme() != Some(expected.as_str()) {
            return Err(mismatch(format!("CRC-64/NVME {:?}, the file's is {expected}", head.checksum_crc64_nvme())));
        }
        if head.content_length() != Some(len as i64) {
            return Err(mismatch(format!("{:?} bytes, the file has {len}", head.content_length())));
        }
        let blake3 = head.metadata().and_then(|m| m.get("blake3"));
        if blake3 != Some(&segment.blake3) {
            return Err(mismatch(format!("blake3 metadata {blake3:?}, Global's is {}", segment.blake3)));
        }
        Ok(())
    }

    /// Downloads the object `key` of `segment` into `dir/<id>.parquet`, hashing it on the
    /// way; only bytes whose blake3 is Global's get the segment's name.
    pub async fn download(&self, key: &str, segment: &SegmentInfo, dir: &Path) -> Result<PathBuf, BucketError> {
        let final_path = dir.join(super::data_dir::file_name(&segment.segment_id));
        let tmp = dir.join(format!(".{}.bucket.tmp", segment.segment_id));
        let local = |source| BucketError::Local { path: tmp.clone(), source };
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|error| BucketError::Request { what: "GET", key: key.to_owned(), reason: describe(&error) })?;
        let mut body = object.body;
        let mut file = tokio::fs::File::create(&tmp).await.map_err(local)?;
        let mut hasher = blake3::Hasher::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BucketError::Request { what: "GET", key: key.to_owned(), reason: e.to_string() })?;
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(local)?;
        }
        file.sync_all().await.map_err(local)?;
        drop(file);
        let got = hasher.finalize().to_hex().to_string();
        if got != segment.blake3 {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(BucketError::Mismatch { key: key.to_owned(), segment_id: segment.segment_id.clone(), why: format!("blake3 {got}, Global's is {}", segment.blake3) });
        }
        tokio::fs::rename(&tmp, &final_path).await.map_err(local)?;
        Ok(final_path)
    }
}

/// An SDK error as a line: the service's code and message, else the transport's.
fn describe<E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static>(error: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> String {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    match (error.code(), error.message()) {
        (Some(code), message) => format!("{code}: {}", message.unwrap_or("")),
        _ => format!("{}", aws_sdk_s3::error::DisplayErrorContext(error)),
    }
}

/// The segments this node should upload now: registered or staged, held here (on its
/// current disk), without a bucket copy; in bucket and hybrid mode only.
pub fn to_upload<'a>(state: &'a State, node_id: &str) -> Vec<&'a weir_global::Segment> {
    let Some(rule) = state.storage_rule() else { return Vec::new() };
    if rule.mode == StorageMode::Local {
        return Vec::new();
    }
    let disk = state.nodes().get(node_id).map(|n| n.disk_id.as_str());
    let mine = |segment: &weir_global::Segment| {
        segment.copies.iter().any(|l| matches!(l, Location::Node { node, disk: d } if node == node_id && Some(d.as_str()) == disk))
    };
    let unuploaded = |segment: &&weir_global::Segment| !segment.copies.iter().any(|l| matches!(l, Location::Bucket(_)));
    state.partitions().flat_map(|p| state.segments(p)).chain(state.staged()).filter(unuploaded).filter(|s| mine(s)).collect()
}

/// Uploads what this node holds and the bucket lacks, until `shutdown`.
pub async fn run(bucket: Arc<Bucket>, global: Arc<GlobalLog>, data_dir: DataDir, node_id: String, config: BucketConfig, shutdown: CancellationToken) {
    let interval = Duration::from_millis(config.upload_interval_ms.max(50));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        if global.not_ready().is_some() {
            continue;
        }
        let todo: Vec<SegmentInfo> = global.read(|state| to_upload(state, &node_id).into_iter().map(|s| s.info.clone()).collect());
        metrics::gauge!("weir_bucket_pending_segments").set(todo.len() as f64);
        let uploads = futures::stream::iter(todo)
            .map(|segment| {
                let (bucket, global, data_dir, node_id) = (bucket.clone(), global.clone(), data_dir.clone(), node_id.clone());
                async move {
                    let path = data_dir.segment_path(&segment.segment_id);
                    let key = match bucket.upload(&path, &segment).await {
                        Ok(key) => key,
                        Err(error) => {
                            metrics::counter!("weir_bucket_upload_failures_total").increment(1);
                            tracing::warn!(segment = %segment.segment_id, %error, "upload not verified; retried next round");
                            return;
                        }
                    };
                    let command = Command::new(
                        format!("bucket-copy:{}:{}", segment.segment_id, attempt()),
                        node_id,
                        Cmd::AddCopy { segment_id: segment.segment_id.clone(), location: Location::Bucket(key.clone()), verified_blake3: segment.blake3.clone() },
                    );
                    match global.submit(&command).await {
                        Ok((_, Outcome::Applied)) => {
                            metrics::counter!("weir_bucket_uploads_total").increment(1);
                            metrics::counter!("weir_bucket_upload_bytes_total").increment(segment.bytes);
                            tracing::debug!(segment = %segment.segment_id, %key, "segment uploaded and verified");
                        }
                        Ok((_, Outcome::Rejected { reason })) => tracing::debug!(segment = %segment.segment_id, %reason, "bucket copy not recorded"),
                        Err(error) => tracing::warn!(segment = %segment.segment_id, %error, "bucket copy not confirmed; retried next round"),
                    }
                }
            })
            .buffer_unordered(config.concurrency.max(1));
        uploads.collect::<Vec<()>>().await;
    }
}
