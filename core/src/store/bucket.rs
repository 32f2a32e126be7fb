//! The bucket: segment files uploaded to an S3-compatible object store (`[bucket]`), which
//! makes them safe in `bucket` and `hybrid` mode.
//!
//! An upload is of a file whose blake3 is Global's (hashed as it is read for its CRC), and
//! verified twice before Global records it: the server checks the body
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
//! The Global snapshot goes there too (every `snapshot_interval_ms`, newest kept), so a
//! core with an empty disk starts Global from it ([`bootstrap_snapshot`]).
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
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use weir_global::{Cmd, Command, Location, Outcome, SegmentInfo, Snapshot, State, StorageMode};

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
    multipart_threshold_bytes: u64,
    part_bytes: u64,
    parts_in_flight: usize,
}

/// Base64 of the big-endian CRC-64/NVME, as `x-amz-checksum-crc64nvme` carries it.
fn crc64nvme_b64(crc: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// The CRC-64/NVME, length and blake3 of a file, read once.
fn file_sums(path: &Path) -> std::io::Result<(u64, u64, String)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok((digest.finalize(), len, hasher.finalize().to_hex().to_string()));
        }
        digest.update(&buffer[..n]);
        hasher.update(&buffer[..n]);
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
        Bucket {
            client: Client::from_conf(s3),
            bucket: config.bucket.clone(),
            prefix: config.prefix.clone(),
            multipart_threshold_bytes: config.multipart_threshold_bytes,
            // S3 refuses parts below 5 MiB but the last.
            part_bytes: config.part_bytes.max(5 << 20),
            parts_in_flight: config.parts_in_flight.max(1),
        }
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
        let (crc, len, blake3) = tokio::task::spawn_blocking(move || file_sums(&owned)).await.expect("checksum task").map_err(local)?;
        // The checksums the server checks are of these bytes: they must be Global's, or a
        // damaged local file would go up as a verified copy.
        if len != segment.bytes || blake3 != segment.blake3 {
            let why = format!("the local file has {len} bytes and blake3 {blake3}, Global says {} bytes and {}", segment.bytes, segment.blake3);
            return Err(BucketError::Mismatch { key, segment_id: segment.segment_id.clone(), why });
        }
        let put = if len > self.multipart_threshold_bytes {
            self.put_in_parts(path, &key, segment, crc, len).await
        } else {
            self.put_whole(path, &key, segment, crc, len).await
        };
        match put {
            Ok(()) => {}
            // Already there (an earlier attempt, another holder): fine if it is these bytes.
            Err(Put::Exists) => {}
            Err(Put::Failed(error)) => return Err(error),
        }
        self.verify(&key, segment, crc, len).await?;
        Ok(key)
    }

    async fn put_whole(&self, path: &Path, key: &str, segment: &SegmentInfo, crc: u64, len: u64) -> Result<(), Put> {
        let body = ByteStream::from_path(path).await.map_err(|e| Put::Failed(BucketError::Local { path: path.to_owned(), source: std::io::Error::other(e) }))?;
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .checksum_crc64_nvme(crc64nvme_b64(crc))
            .metadata("blake3", &segment.blake3)
            .content_length(len as i64)
            .body(body)
            .send()
            .await;
        put.map(|_| ()).map_err(|error| Put::from_sdk("PUT", key, &error))
    }

    /// A multipart upload: each part with its own CRC-64/NVME (the server checks it), the
    /// completion with the whole file's (full-object type: the server combines the parts'
    /// and refuses a mismatch) and `If-None-Match: *`. Aborted on any failure.
    async fn put_in_parts(&self, path: &Path, key: &str, segment: &SegmentInfo, crc: u64, len: u64) -> Result<(), Put> {
        use aws_sdk_s3::types::{ChecksumType, CompletedMultipartUpload, CompletedPart};
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .checksum_type(ChecksumType::FullObject)
            .metadata("blake3", &segment.blake3)
            .send()
            .await
            .map_err(|error| Put::from_sdk("CreateMultipartUpload", key, &error))?;
        let Some(upload_id) = created.upload_id().map(str::to_owned) else {
            return Err(Put::Failed(BucketError::Request { what: "CreateMultipartUpload", key: key.to_owned(), reason: "no upload id in the answer".into() }));
        };
        let parts = async {
            // Parts go up `parts_in_flight` at a time, each read at its own offset: one
            // stream per part keeps a fast link busy where a sequence of parts waits on
            // every round trip.
            let count = len.div_ceil(self.part_bytes);
            let parts: Vec<CompletedPart> = futures::stream::iter(0..count)
                .map(|index| self.put_part(path, key, &upload_id, index, len))
                .buffered(self.parts_in_flight)
                .try_collect()
                .await?;
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .checksum_type(ChecksumType::FullObject)
                .checksum_crc64_nvme(crc64nvme_b64(crc))
                .mpu_object_size(len as i64)
                .if_none_match("*")
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map_err(|error| Put::from_sdk("CompleteMultipartUpload", key, &error))?;
            Ok(())
        }
        .await;
        if parts.is_err() {
            // Parts of an upload never completed cost storage until aborted.
            let _ = self.client.abort_multipart_upload().bucket(&self.bucket).key(key).upload_id(&upload_id).send().await;
        }
        parts
    }

    /// Part `index` (0-based) of a multipart upload: its bytes read at their offset, sent
    /// with their own CRC-64/NVME.
    async fn put_part(&self, path: &Path, key: &str, upload_id: &str, index: u64, len: u64) -> Result<aws_sdk_s3::types::CompletedPart, Put> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let local = |source| Put::Failed(BucketError::Local { path: path.to_owned(), source });
        let offset = index * self.part_bytes;
        let size = self.part_bytes.min(len - offset) as usize;
        let mut file = tokio::fs::File::open(path).await.map_err(local)?;
        file.seek(std::io::SeekFrom::Start(offset)).await.map_err(local)?;
        let mut buffer = vec![0u8; size];
        file.read_exact(&mut buffer).await.map_err(local)?;
        let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);
        digest.update(&buffer);
        let part_crc = crc64nvme_b64(digest.finalize());
        let number = index as i32 + 1;
        let part = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .checksum_crc64_nvme(&part_crc)
            .content_length(size as i64)
            .body(ByteStream::from(buffer))
            .send()
            .await
            .map_err(|error| Put::from_sdk("UploadPart", key, &error))?;
        let e_tag = part.e_tag().unwrap_or_default().to_owned();
        Ok(aws_sdk_s3::types::CompletedPart::builder().part_number(number).e_tag(e_tag).checksum_crc64_nvme(part_crc).build())
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
        tokio::fs::create_dir_all(dir).await.map_err(local)?;
        let mut file = tokio::fs::File::create(&tmp).await.map_err(local)?;
        let mut hasher = blake3::Hasher::new();
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    // The SDK checks a response checksum the object carries as it streams.
                    drop(file);
                    let _ = tokio::fs::remove_file(&tmp).await;
                    let reason = aws_sdk_s3::error::DisplayErrorContext(&error).to_string();
                    return Err(BucketError::Request { what: "GET", key: key.to_owned(), reason });
                }
            };
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

/// Where the Global snapshots are: `<prefix>global/snapshot-<applied offset, 20 digits>.bin`,
/// so the newest sorts last.
const SNAPSHOTS: &str = "global/snapshot-";

impl Bucket {
    fn snapshot_key(&self, applied_offset: u64) -> String {
        format!("{}{SNAPSHOTS}{applied_offset:020}.bin", self.prefix)
    }

    /// Puts a Global snapshot (its encoded bytes: blake3-checked when read) under its
    /// offset; never over an existing object (the same offset is the same bytes).
    pub async fn put_snapshot(&self, applied_offset: u64, bytes: Vec<u8>) -> Result<String, BucketError> {
        let key = self.snapshot_key(applied_offset);
        let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);
        digest.update(&bytes);
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .if_none_match("*")
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .checksum_crc64_nvme(crc64nvme_b64(digest.finalize()))
            .body(ByteStream::from(bytes))
            .send()
            .await;
        match put.map_err(|error| Put::from_sdk("PUT", &key, &error)) {
            Ok(_) | Err(Put::Exists) => Ok(key),
            Err(Put::Failed(error)) => Err(error),
        }
    }

    /// The keys of the Global snapshots in the bucket, oldest first.
    async fn snapshot_keys(&self) -> Result<Vec<String>, BucketError> {
        let prefix = format!("{}{SNAPSHOTS}", self.prefix);
        let mut keys = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(&prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| BucketError::Request { what: "LIST", key: prefix.clone(), reason: describe(&error) })?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
        }
        keys.sort();
        Ok(keys)
    }

    /// The newest Global snapshot in the bucket, checked (magic, length, blake3), if any.
    pub async fn latest_snapshot(&self) -> Result<Option<(String, Snapshot)>, BucketError> {
        let Some(key) = self.snapshot_keys().await?.pop() else { return Ok(None) };
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|error| BucketError::Request { what: "GET", key: key.clone(), reason: describe(&error) })?;
        let bytes = object
            .body
            .collect()
            .await
            .map_err(|e| BucketError::Request { what: "GET", key: key.clone(), reason: aws_sdk_s3::error::DisplayErrorContext(&e).to_string() })?
            .into_bytes();
        let snapshot = Snapshot::decode(&bytes, Path::new(&key))
            .map_err(|error| BucketError::Mismatch { key: key.clone(), segment_id: "(global snapshot)".into(), why: error.to_string() })?;
        Ok(Some((key, snapshot)))
    }

    /// Deletes all but the newest `keep` Global snapshots.
    async fn prune_snapshots(&self, keep: usize) -> Result<(), BucketError> {
        let keys = self.snapshot_keys().await?;
        for key in keys.iter().take(keys.len().saturating_sub(keep.max(1))) {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|error| BucketError::Request { what: "DELETE", key: key.clone(), reason: describe(&error) })?;
        }
        Ok(())
    }
}

/// At start, before Global is opened: a node without a local snapshot writes the newest
/// one of the bucket there, so it replays the Global topic from that offset, not from 0.
/// Anything wrong with the bucket's snapshot is logged and the node replays from 0, which
/// the Global topic (never expired) always allows; the topic check at start still compares
/// the snapshot's cluster and topic ids with Kafka's. Returns the offset it starts from.
pub async fn bootstrap_snapshot(config: &BucketConfig, snapshot_path: &Path) -> Option<u64> {
    if snapshot_path.exists() {
        return None;
    }
    let bucket = Bucket::new(config);
    let (key, snapshot) = match bucket.latest_snapshot().await {
        Ok(Some(found)) => found,
        Ok(None) => {
            tracing::info!(bucket = %config.bucket, "no Global snapshot in the bucket yet: Global is read from the topic's start");
            return None;
        }
        Err(error) => {
            tracing::warn!(%error, "cannot use the bucket's Global snapshot: Global is read from the topic's start");
            return None;
        }
    };
    if let Some(dir) = snapshot_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(error) = snapshot.write(snapshot_path) {
        tracing::warn!(%error, "cannot write the bucket's Global snapshot locally: Global is read from the topic's start");
        return None;
    }
    let offset = snapshot.applied_offset?;
    metrics::gauge!("weir_global_bootstrap_offset").set(offset as f64);
    tracing::info!(%key, applied_offset = offset, "Global starts from the bucket's snapshot");
    Some(offset)
}

/// Puts this node's Global snapshot in the bucket every `snapshot_interval_ms` when Global
/// moved on, and keeps the newest `snapshots_kept`, until `shutdown`.
pub async fn snapshots(bucket: Arc<Bucket>, global: Arc<GlobalLog>, config: BucketConfig, shutdown: CancellationToken) {
    let interval = Duration::from_millis(config.snapshot_interval_ms.max(100));
    let mut uploaded: Option<u64> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        if global.not_ready().is_some() {
            continue;
        }
        let snapshot = global.read(Snapshot::of);
        let Some(offset) = snapshot.applied_offset else { continue };
        if uploaded.is_some_and(|u| u >= offset) {
            continue;
        }
        let bytes = tokio::task::spawn_blocking(move || snapshot.encode()).await.expect("encode task");
        match bucket.put_snapshot(offset, bytes).await {
            Ok(key) => {
                uploaded = Some(offset);
                metrics::gauge!("weir_global_bucket_snapshot_offset").set(offset as f64);
                tracing::debug!(%key, "Global snapshot put in the bucket");
                if let Err(error) = bucket.prune_snapshots(config.snapshots_kept).await {
                    tracing::warn!(%error, "cannot delete old Global snapshots from the bucket");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot put the Global snapshot in the bucket; retried next round"),
        }
    }
}

/// How a write of an object ended when it did not succeed.
enum Put {
    /// `If-None-Match: *` refused it: an object is there already (412).
    Exists,
    Failed(BucketError),
}

impl Put {
    fn from_sdk<E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static>(
        what: &'static str,
        key: &str,
        error: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> Put {
        match error.raw_response().map(|r| r.status().as_u16()) {
            Some(412) => Put::Exists,
            _ => Put::Failed(BucketError::Request { what, key: key.to_owned(), reason: describe(error) }),
        }
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
