//! The S3 features Weir's bucket upload relies on (issue 15), proved with the real
//! `aws-sdk-s3` against the test S3 server (versitygw, `deploy/s3.sh`): full-object
//! CRC-64/NVME checksums on PutObject and multipart uploads, stored and returned by
//! HeadObject in checksum mode; `If-None-Match: *` refusing a second write; user metadata.
//! Then, through the fault-injecting proxy (`weir_tests::s3::proxy`), what a client sees of
//! each fault: 5xx answers and dropped connections retried by the SDK or surfaced once the
//! attempts run out, a lost answer to a conditional PUT coming back as 412, a body flipped
//! on its way to the server refused by the server whichever way the body is signed, a
//! response body flipped on its way back refused by the SDK's checksum validation, and a
//! PUT answered 200 that never reached the server found out by a HEAD.

use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::ResponseChecksumValidation;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart,
};
use base64::Engine as _;
use weir_tests::gate;
use weir_tests::s3::{self, Fault, On, S3Proxy};

/// Base64 of the big-endian CRC-64/NVME of `data`: the value of `x-amz-checksum-crc64nvme`.
fn crc64nvme(data: &[u8]) -> String {
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, data);
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// `len` bytes that differ from object to object and are not all alike.
fn object_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A client whose retries are quick (3 attempts, 20 ms first backoff), so fault tests
/// don't wait on the SDK's default backoff of up to seconds.
fn quick_client(endpoint: &str, max_attempts: u32) -> Client {
    let config = s3::client_config(endpoint)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(max_attempts)
                .with_initial_backoff(Duration::from_millis(20))
                .with_max_backoff(Duration::from_millis(200)),
        )
        .build();
    Client::from_conf(config)
}

/// HEAD with checksum mode: `Some((crc64nvme, checksum type))` if the object exists,
/// `None` on 404; panics on any other error.
async fn head(
    client: &Client,
    bucket: &str,
    key: &str,
) -> Option<(Option<String>, Option<ChecksumType>)> {
    match client
        .head_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
    {
        Ok(out) => Some((
            out.checksum_crc64_nvme().map(str::to_owned),
            out.checksum_type().cloned(),
        )),
        Err(error) if error.as_service_error().is_some_and(|e| e.is_not_found()) => None,
        Err(error) => panic!("head {bucket}/{key}: {}", DisplayErrorContext(&error)),
    }
}

/// The HTTP status and S3 error code of a failed call.
fn status_and_code<E: ProvideErrorMetadata>(
    error: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> (Option<u16>, Option<String>) {
    let status = error.raw_response().map(|r| r.status().as_u16());
    let code = error
        .as_service_error()
        .and_then(|e| e.code())
        .map(str::to_owned);
    (status, code)
}

#[tokio::test(flavor = "multi_thread")]
async fn put_with_crc64nvme_is_stored_and_head_in_checksum_mode_returns_it() {
    let _gate = gate::shared();
    let client = s3::client(&s3::shared_endpoint());
    let bucket = s3::unique_bucket("put-crc").await;
    let body = object_bytes(300_000, 1);
    let expected = crc64nvme(&body);

    let put = client
        .put_object()
        .bucket(&bucket)
        .key("segments/a.parquet")
        .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put: {}", DisplayErrorContext(&e)));
    assert_eq!(
        put.checksum_crc64_nvme(),
        Some(expected.as_str()),
        "the server's CRC-64/NVME of the put"
    );
    assert_eq!(put.checksum_type(), Some(&ChecksumType::FullObject));

    let (crc, checksum_type) = head(&client, &bucket, "segments/a.parquet")
        .await
        .expect("the object exists");
    assert_eq!(
        crc.as_deref(),
        Some(expected.as_str()),
        "HEAD in checksum mode returns the stored CRC-64/NVME"
    );
    assert_eq!(checksum_type, Some(ChecksumType::FullObject));

    // Without checksum mode, no checksum: the mode is what asks for it.
    let plain = client
        .head_object()
        .bucket(&bucket)
        .key("segments/a.parquet")
        .send()
        .await
        .unwrap();
    assert_eq!(
        plain.checksum_crc64_nvme(),
        None,
        "a HEAD without checksum mode got a checksum"
    );
    assert_eq!(plain.content_length(), Some(body.len() as i64));

    let get = client
        .get_object()
        .bucket(&bucket)
        .key("segments/a.parquet")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(get.checksum_crc64_nvme(), Some(expected.as_str()));
    let read = get
        .body
        .collect()
        .await
        .expect("read the object")
        .into_bytes();
    assert!(read == body, "GET returned other bytes than were put");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_put_whose_crc64nvme_does_not_match_its_body_is_refused() {
    let _gate = gate::shared();
    let client = s3::client(&s3::shared_endpoint());
    let bucket = s3::unique_bucket("put-bad-crc").await;
    let body = object_bytes(10_000, 2);
    let wrong = crc64nvme(b"another body");

    let error = client
        .put_object()
        .bucket(&bucket)
        .key("k")
        .checksum_crc64_nvme(&wrong)
        .body(ByteStream::from(body))
        .send()
        .await
        .expect_err("the server stored a body whose checksum does not match");
    let (status, code) = status_and_code(&error);
    assert_eq!(status, Some(400), "{}", DisplayErrorContext(&error));
    assert_eq!(
        code.as_deref(),
        Some("BadDigest"),
        "{}",
        DisplayErrorContext(&error)
    );
    assert_eq!(
        head(&client, &bucket, "k").await,
        None,
        "a refused put left an object"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn if_none_match_star_refuses_a_second_write_with_412() {
    let _gate = gate::shared();
    let client = s3::client(&s3::shared_endpoint());
    let bucket = s3::unique_bucket("if-none-match").await;
    let first = object_bytes(1000, 3);
    let second = object_bytes(1000, 4);

    client
        .put_object()
        .bucket(&bucket)
        .key("k")
        .if_none_match("*")
        .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
        .body(ByteStream::from(first.clone()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("first put: {}", DisplayErrorContext(&e)));
    let error = client
        .put_object()
        .bucket(&bucket)
        .key("k")
        .if_none_match("*")
        .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
        .body(ByteStream::from(second))
        .send()
        .await
        .expect_err("a second conditional put replaced the object");
    let (status, code) = status_and_code(&error);
    assert_eq!(status, Some(412), "{}", DisplayErrorContext(&error));
    assert_eq!(code.as_deref(), Some("PreconditionFailed"));
    let (crc, _) = head(&client, &bucket, "k")
        .await
        .expect("the first object stays");
    assert_eq!(
        crc,
        Some(crc64nvme(&first)),
        "the object is the first write's"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn user_metadata_round_trips() {
    let _gate = gate::shared();
    let client = s3::client(&s3::shared_endpoint());
    let bucket = s3::unique_bucket("metadata").await;

    client
        .put_object()
        .bucket(&bucket)
        .key("segments/b.parquet")
        .metadata("weir-segment-id", "7f3a-0001")
        .metadata(
            "weir-blake3",
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
        )
        .metadata("weir-format-version", "1")
        .content_type("application/vnd.apache.parquet")
        .body(ByteStream::from_static(b"PAR1 not really"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put: {}", DisplayErrorContext(&e)));
    let out = client
        .head_object()
        .bucket(&bucket)
        .key("segments/b.parquet")
        .send()
        .await
        .unwrap();
    let metadata = out.metadata().expect("user metadata");
    assert_eq!(
        metadata.get("weir-segment-id").map(String::as_str),
        Some("7f3a-0001")
    );
    assert_eq!(
        metadata.get("weir-blake3").map(String::as_str),
        Some("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262")
    );
    assert_eq!(
        metadata.get("weir-format-version").map(String::as_str),
        Some("1")
    );
    assert_eq!(metadata.len(), 3, "{metadata:?}");
    assert_eq!(out.content_type(), Some("application/vnd.apache.parquet"));
}

/// Parts of 5 MiB (S3's smallest but the last) and a short last one.
const PART: usize = 5 << 20;

/// Uploads `body` in parts of [`PART`] bytes with full-object CRC-64/NVME, completes it
/// with `full_object_crc` (the whole object's, or a wrong one), returns the result.
async fn multipart_upload(
    client: &Client,
    bucket: &str,
    key: &str,
    body: &[u8],
    full_object_crc: &str,
) -> Result<
    aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput,
    SdkError<
        aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadError,
        aws_sdk_s3::config::http::HttpResponse,
    >,
> {
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
        .checksum_type(ChecksumType::FullObject)
        .metadata("weir-segment-id", "mp-1")
        .send()
        .await
        .unwrap_or_else(|e| panic!("create multipart upload: {}", DisplayErrorContext(&e)));
    let upload_id = created.upload_id().expect("an upload id").to_owned();
    let mut parts = Vec::new();
    for (i, chunk) in body.chunks(PART).enumerate() {
        let number = i as i32 + 1;
        let part = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("upload part {number}: {}", DisplayErrorContext(&e)));
        assert_eq!(
            part.checksum_crc64_nvme(),
            Some(crc64nvme(chunk).as_str()),
            "the server's CRC-64/NVME of part {number}"
        );
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(part.e_tag().expect("a part ETag"))
                .checksum_crc64_nvme(part.checksum_crc64_nvme().unwrap())
                .build(),
        );
    }
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&upload_id)
        .checksum_type(ChecksumType::FullObject)
        .checksum_crc64_nvme(full_object_crc)
        .mpu_object_size(body.len() as i64)
        .if_none_match("*")
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multipart_upload_with_a_full_object_crc64nvme_stores_the_whole_objects_checksum() {
    let _gate = gate::shared();
    let client = s3::client(&s3::shared_endpoint());
    let bucket = s3::unique_bucket("multipart").await;
    let body = object_bytes(2 * PART + 12_345, 5);
    let expected = crc64nvme(&body);

    let done = multipart_upload(&client, &bucket, "segments/big.parquet", &body, &expected)
        .await
        .unwrap_or_else(|e| panic!("complete: {}", DisplayErrorContext(&e)));
    assert_eq!(
        done.checksum_crc64_nvme(),
        Some(expected.as_str()),
        "the completed object's checksum"
    );
    assert_eq!(done.checksum_type(), Some(&ChecksumType::FullObject));

    let (crc, checksum_type) = head(&client, &bucket, "segments/big.parquet")
        .await
        .expect("the object exists");
    assert_eq!(
        crc.as_deref(),
        Some(expected.as_str()),
        "HEAD returns the whole object's CRC-64/NVME, not a checksum of checksums"
    );
    assert_eq!(checksum_type, Some(ChecksumType::FullObject));
    let out = client
        .head_object()
        .bucket(&bucket)
        .key("segments/big.parquet")
        .send()
        .await
        .unwrap();
    assert_eq!(out.content_length(), Some(body.len() as i64));
    assert_eq!(
        out.metadata()
            .and_then(|m| m.get("weir-segment-id"))
            .map(String::as_str),
        Some("mp-1"),
        "metadata given at create is the object's"
    );

    // A second upload of the key completes with `If-None-Match: *` too: refused.
    let other = object_bytes(1000, 12);
    let error = multipart_upload(
        &client,
        &bucket,
        "segments/big.parquet",
        &other,
        &crc64nvme(&other),
    )
    .await
    .expect_err("a conditional complete replaced the object");
    let (status, code) = status_and_code(&error);
    assert_eq!(status, Some(412), "{}", DisplayErrorContext(&error));
    assert_eq!(code.as_deref(), Some("PreconditionFailed"));
    let (crc, _) = head(&client, &bucket, "segments/big.parquet")
        .await
        .unwrap();
    assert_eq!(
        crc.as_deref(),
        Some(expected.as_str()),
        "the first upload's object stays"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multipart_upload_completed_with_a_wrong_full_object_crc64nvme_is_refused() {
    let _gate = gate::shared();
    let client = s3::client(&s3::shared_endpoint());
    let bucket = s3::unique_bucket("multipart-bad").await;
    let body = object_bytes(PART + 1000, 6);
    let wrong = crc64nvme(&body[1..]);

    let error = multipart_upload(&client, &bucket, "k", &body, &wrong)
        .await
        .expect_err("the server completed an upload whose full-object checksum is wrong");
    let (status, code) = status_and_code(&error);
    assert_eq!(status, Some(400), "{}", DisplayErrorContext(&error));
    assert_eq!(
        code.as_deref(),
        Some("BadDigest"),
        "{}",
        DisplayErrorContext(&error)
    );
    assert_eq!(
        head(&client, &bucket, "k").await,
        None,
        "a refused complete left an object"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn five_hundreds_are_retried_by_the_sdk_and_surface_once_the_attempts_run_out() {
    let _gate = gate::shared();
    let bucket = s3::unique_bucket("retry-5xx").await;
    let proxy = S3Proxy::start(&s3::shared_endpoint()).await;
    let client = quick_client(&proxy.endpoint(), 3);
    let body = object_bytes(5000, 7);

    for status in [500, 503] {
        // Two failures, then the third attempt reaches the server.
        let key = format!("retried-{status}");
        let rule = proxy.inject(
            On::put().path_prefix(&format!("/{bucket}/{key}")),
            Fault::Status(status),
            2,
        );
        let put = client
            .put_object()
            .bucket(&bucket)
            .key(&key)
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("a put after two {status}s: {}", DisplayErrorContext(&e)));
        assert_eq!(rule.hits(), 2);
        assert_eq!(put.checksum_crc64_nvme(), Some(crc64nvme(&body).as_str()));
        assert!(head(&client, &bucket, &key).await.is_some());

        // As many failures as attempts: the last one is the caller's error.
        let key = format!("failed-{status}");
        let rule = proxy.inject(
            On::put().path_prefix(&format!("/{bucket}/{key}")),
            Fault::Status(status),
            3,
        );
        let error = client
            .put_object()
            .bucket(&bucket)
            .key(&key)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .expect_err("a put that got only 5xx answers succeeded");
        assert_eq!(rule.hits(), 3, "the SDK made 3 attempts");
        let (got, code) = status_and_code(&error);
        assert_eq!(got, Some(status), "{}", DisplayErrorContext(&error));
        let expected_code = if status == 500 {
            "InternalError"
        } else {
            "ServiceUnavailable"
        };
        assert_eq!(code.as_deref(), Some(expected_code));
        assert_eq!(head(&client, &bucket, &key).await, None);
    }
    let puts = proxy.seen().iter().filter(|s| s.method == "PUT").count();
    assert_eq!(
        puts,
        2 * (3 + 3),
        "every attempt went through the proxy once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_connection_is_retried_and_surfaces_as_a_dispatch_error_when_attempts_run_out() {
    let _gate = gate::shared();
    let bucket = s3::unique_bucket("drop").await;
    let proxy = S3Proxy::start(&s3::shared_endpoint()).await;
    let client = quick_client(&proxy.endpoint(), 3);

    let rule = proxy.inject(On::put(), Fault::Drop, 1);
    client
        .put_object()
        .bucket(&bucket)
        .key("k")
        .body(ByteStream::from_static(b"after a dropped connection"))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "a put after one dropped connection: {}",
                DisplayErrorContext(&e)
            )
        });
    assert_eq!(rule.hits(), 1);

    let rule = proxy.inject(On::put(), Fault::Drop, 3);
    let error = client
        .put_object()
        .bucket(&bucket)
        .key("never")
        .body(ByteStream::from_static(b"never stored"))
        .send()
        .await
        .expect_err("a put whose every connection dropped succeeded");
    assert_eq!(rule.hits(), 3);
    assert!(
        matches!(error, SdkError::DispatchFailure(_)),
        "a dropped connection is a dispatch failure (no response): {}",
        DisplayErrorContext(&error)
    );
    assert_eq!(head(&client, &bucket, "never").await, None);
}

/// The answer to a conditional PUT is lost after the server stored the object: the SDK's
/// retry is refused with 412, which is the first attempt's own success. An uploader that
/// gets 412 must HEAD and compare the checksum before it calls the upload failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_to_a_conditional_put_comes_back_as_412_on_the_retry() {
    let _gate = gate::shared();
    let bucket = s3::unique_bucket("lost-answer").await;
    let proxy = S3Proxy::start(&s3::shared_endpoint()).await;
    let client = quick_client(&proxy.endpoint(), 3);
    let body = object_bytes(20_000, 8);

    let rule = proxy.inject(On::put(), Fault::DropResponse, 1);
    let error = client
        .put_object()
        .bucket(&bucket)
        .key("k")
        .if_none_match("*")
        .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .expect_err("the retry of a stored conditional put succeeded");
    assert_eq!(rule.hits(), 1);
    let (status, code) = status_and_code(&error);
    assert_eq!(status, Some(412), "{}", DisplayErrorContext(&error));
    assert_eq!(code.as_deref(), Some("PreconditionFailed"));
    let (crc, _) = head(&client, &bucket, "k")
        .await
        .expect("the first attempt stored it");
    assert_eq!(
        crc,
        Some(crc64nvme(&body)),
        "the stored object is ours: the 412 was our own write"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delay_past_the_attempt_timeout_is_retried() {
    let _gate = gate::shared();
    let bucket = s3::unique_bucket("delay").await;
    let proxy = S3Proxy::start(&s3::shared_endpoint()).await;
    let config = s3::client_config(&proxy.endpoint())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(20)),
        )
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_millis(500))
                .build(),
        )
        .build();
    let client = Client::from_conf(config);

    let rule = proxy.inject(On::get(), Fault::Delay(Duration::from_secs(2)), 1);
    client
        .put_object()
        .bucket(&bucket)
        .key("k")
        .body(ByteStream::from_static(b"slow to read"))
        .send()
        .await
        .unwrap();
    let started = Instant::now();
    let got = client
        .get_object()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "a get after a timed-out attempt: {}",
                DisplayErrorContext(&e)
            )
        });
    let read = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(&read[..], b"slow to read");
    assert_eq!(rule.hits(), 1);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(2),
        "the first attempt timed out after 500 ms and the second answered at once: took {took:?}"
    );
}

/// A byte flipped between client and server, for each way the SDK signs a PUT body: the
/// server refuses it every time, and nothing is stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_put_body_flipped_on_the_way_is_refused_by_the_server_however_it_is_signed() {
    let _gate = gate::shared();
    let bucket = s3::unique_bucket("corrupt-put").await;
    let proxy = S3Proxy::start(&s3::shared_endpoint()).await;
    // One attempt: a 400 is not retried anyway, and the rule applies once.
    let client = quick_client(&proxy.endpoint(), 1);
    let body = object_bytes(256 * 1024, 9);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("object");
    std::fs::write(&file, &body).unwrap();

    // (key, what x-amz-content-sha256 says, the codes the server may refuse with)
    let cases: [(&str, &str, &[&str]); 3] = [
        // In-memory body: the SDK signs its SHA-256 and sends the CRC-64/NVME as a header.
        ("signed", "a hex SHA-256", &["XAmzContentSHA256Mismatch"]),
        // Payload signing off: only the CRC-64/NVME header covers the body.
        ("unsigned", "UNSIGNED-PAYLOAD", &["BadDigest"]),
        // A streamed body: aws-chunked with the CRC-64/NVME in a trailer. Over plain HTTP
        // the SDK signs every chunk too (over HTTPS it sends STREAMING-UNSIGNED-PAYLOAD-TRAILER).
        (
            "streamed",
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
            &["SignatureDoesNotMatch"],
        ),
    ];
    let mut refusals = Vec::new();
    for (key, signing, codes) in cases {
        let rule = proxy.inject(
            On::put().path_prefix(&format!("/{bucket}/{key}")),
            Fault::CorruptRequestBody,
            1,
        );
        let put = client
            .put_object()
            .bucket(&bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme);
        let result = match key {
            "signed" => put.body(ByteStream::from(body.clone())).send().await,
            "unsigned" => {
                put.body(ByteStream::from(body.clone()))
                    .customize()
                    .disable_payload_signing()
                    .send()
                    .await
            }
            _ => {
                put.body(ByteStream::from_path(&file).await.unwrap())
                    .send()
                    .await
            }
        };
        let error = result.expect_err(&format!(
            "the server stored a {key} body with a flipped byte"
        ));
        assert_eq!(rule.hits(), 1);
        let seen = proxy.seen();
        let request = seen.iter().rev().find(|s| s.method == "PUT").unwrap();
        let sha = request.content_sha256.clone().unwrap_or_default();
        let signed_as_expected = match key {
            "signed" => sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
            _ => sha == signing,
        };
        assert!(
            signed_as_expected,
            "{key}: expected {signing}, the SDK sent x-amz-content-sha256: {sha}"
        );
        let (status, code) = status_and_code(&error);
        // 400 for a payload hash or checksum mismatch, 403 for a chunk signature mismatch.
        assert!(
            matches!(status, Some(400 | 403)),
            "{key}: {status:?}: {}",
            DisplayErrorContext(&error)
        );
        let code = code.unwrap_or_default();
        assert!(
            codes.contains(&code.as_str()),
            "{key}: refused with {code}, expected one of {codes:?}"
        );
        assert_eq!(
            head(&client, &bucket, key).await,
            None,
            "{key}: a refused put left an object"
        );
        refusals.push(format!("{key}: {} {code}", status.unwrap_or_default()));
    }
    eprintln!("refusals of a flipped byte: {}", refusals.join(", "));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_get_body_flipped_on_the_way_fails_the_sdks_checksum_validation() {
    let _gate = gate::shared();
    let bucket = s3::unique_bucket("corrupt-get").await;
    let proxy = S3Proxy::start(&s3::shared_endpoint()).await;
    let client = quick_client(&proxy.endpoint(), 1);
    let body = object_bytes(100_000, 10);
    client
        .put_object()
        .bucket(&bucket)
        .key("k")
        .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();

    // Checksum mode on: the SDK checks the body against x-amz-checksum-crc64nvme as it reads.
    let rule = proxy.inject(On::get(), Fault::CorruptResponseBody, 1);
    let got = client
        .get_object()
        .bucket(&bucket)
        .key("k")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    let error = got
        .body
        .collect()
        .await
        .expect_err("the SDK handed out a corrupted body in checksum mode");
    assert_eq!(rule.hits(), 1);
    let text = DisplayErrorContext(&error).to_string();
    assert!(
        text.to_lowercase().contains("checksum"),
        "not a checksum error: {text}"
    );

    // Validation only when required (not the SDK's default, which asks for checksum mode
    // on every GetObject): nothing checks, the corruption gets through.
    let unchecked = Client::from_conf(
        s3::client_config(&proxy.endpoint())
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build(),
    );
    let rule = proxy.inject(On::get(), Fault::CorruptResponseBody, 1);
    let got = unchecked
        .get_object()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .unwrap();
    let read = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(rule.hits(), 1);
    assert_eq!(read.len(), body.len());
    assert!(read != body, "the proxy did not corrupt the body");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_put_answered_200_that_never_reached_the_server_is_found_by_a_head() {
    let _gate = gate::shared();
    let bucket = s3::unique_bucket("phantom-put").await;
    let proxy = S3Proxy::start(&s3::shared_endpoint()).await;
    let client = quick_client(&proxy.endpoint(), 3);
    let body = object_bytes(4096, 11);

    let rule = proxy.inject(On::put(), Fault::AcceptWithoutForwarding, 1);
    let put = client
        .put_object()
        .bucket(&bucket)
        .key("k")
        .if_none_match("*")
        .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .expect("the SDK takes a bare 200 as success");
    assert_eq!(rule.hits(), 1);
    // The first sign: a real server echoes the checksum it verified; this answer has none.
    assert_eq!(put.checksum_crc64_nvme(), None);
    // The proof: HEAD finds nothing.
    assert_eq!(
        head(&client, &bucket, "k").await,
        None,
        "a PUT the server never saw is there"
    );
    // And a real PUT of the same object still goes through.
    client
        .put_object()
        .bucket(&bucket)
        .key("k")
        .if_none_match("*")
        .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let (crc, _) = head(&client, &bucket, "k").await.expect("stored now");
    assert_eq!(crc, Some(crc64nvme(&body)));
}
