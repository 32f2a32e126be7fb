//! Unit tests of the segment format: round trips, pruning, metadata, hashes, damaged files.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use crate::*;

fn meta(id: &str) -> SegmentMeta {
    SegmentMeta { segment_id: id.into(), partition: 3, offset_start: 100 }
}

/// A row of `repository` from record `offset`, with fields, tags, parser and error
/// varying by `n` so every column kind and null shows up.
fn row(repository: &str, offset: i64, n: u32) -> SegmentRow {
    let mut tags = BTreeMap::new();
    if !n.is_multiple_of(3) {
        tags.insert("host".to_owned(), format!("web-{n}"));
        tags.insert("sourcetype".to_owned(), "accesslog".to_owned());
    }
    let fields = match n % 4 {
        0 => serde_json::Map::new(),
        1 => json!({"status": 200 + n, "path": "/ünïcode/✓", "ok": true, "ratio": 0.5, "none": null})
            .as_object()
            .unwrap()
            .clone(),
        2 => json!({"nested": {"a": [1, "two"]}, "empty": ""}).as_object().unwrap().clone(),
        _ => json!({"msg": "日本語 \"quoted\"\n"}).as_object().unwrap().clone(),
    };
    SegmentRow {
        repository: repository.to_owned(),
        timestamp_ms: 1_700_000_000_000 + i64::from(n) * 1000,
        ingest_timestamp_ms: 1_700_000_100_000 + i64::from(n),
        raw: if n.is_multiple_of(5) { String::new() } else { format!("event {n} in {repository} — ✓ {}", "x".repeat(n as usize % 7)) },
        id: SegmentRow::event_id(3, offset, n),
        offset,
        tags,
        fields: fields.into(),
        parser: n.is_multiple_of(2).then(|| "kv".to_owned()),
        error: (n % 6 == 5).then(|| format!("kv: no '=' in event {n}")),
    }
}

/// Rows of three repositories, interleaved as records come from a partition.
fn mixed_rows() -> Vec<SegmentRow> {
    (0..60u32).map(|n| row(["beta", "alpha", "gämma"][n as usize % 3], 100 + i64::from(n / 2), n)).collect()
}

fn write(dir: &Path, id: &str, rows: &[SegmentRow], options: SegmentOptions) -> WrittenSegment {
    let mut writer = SegmentWriter::create_with(dir, meta(id), options).unwrap();
    for r in rows {
        writer.push(r.clone()).unwrap();
    }
    writer.finish(200).unwrap()
}

fn of_repo(rows: &[SegmentRow], repository: &str) -> Vec<SegmentRow> {
    rows.iter().filter(|r| r.repository == repository).cloned().collect()
}

#[test]
fn rows_round_trip_with_every_column_kind_nulls_unicode_and_empty_values() {
    let dir = tempfile::tempdir().unwrap();
    let rows = mixed_rows();
    let written = write(dir.path(), "seg-1", &rows, SegmentOptions::default());
    let reader = SegmentReader::open(&written.path).unwrap();
    for repository in ["alpha", "beta", "gämma"] {
        let read: Vec<SegmentRow> = reader.rows(repository).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(read, of_repo(&rows, repository), "{repository}");
    }
    // All rows: sorted by repository, each repository's rows in push order.
    let all: Vec<SegmentRow> = reader.all_rows().unwrap().collect::<Result<_, _>>().unwrap();
    let mut expected = rows.clone();
    expected.sort_by(|a, b| a.repository.cmp(&b.repository));
    assert_eq!(all, expected);
    assert!(reader.rows("nobody").unwrap().next().is_none());
}

#[test]
fn reading_one_repository_reads_only_its_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let rows = mixed_rows();
    // A small buffer forces several row groups per repository, interleaved in the file.
    let written = write(dir.path(), "seg-prune", &rows, SegmentOptions { max_buffered_bytes: 3000, ..Default::default() });
    let reader = SegmentReader::open(&written.path).unwrap();
    let beta: Vec<usize> = (0..reader.n_row_groups()).filter(|&i| reader.meta().row_groups[i].repository == "beta").collect();
    assert!(beta.len() >= 2, "expected several beta row groups: {:?}", reader.meta().row_groups);
    assert!(reader.n_row_groups() > beta.len() + 2);

    let mut rows_b = reader.rows("beta").unwrap();
    let read: Vec<SegmentRow> = rows_b.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(read, of_repo(&rows, "beta"));
    assert_eq!(rows_b.row_groups_read(), beta.as_slice());

    // Row groups cut by row count as well: still one repository each, all rows back.
    let small = write(dir.path(), "seg-small", &rows, SegmentOptions { max_rows_per_row_group: 7, ..Default::default() });
    let reader = SegmentReader::open(&small.path).unwrap();
    assert_eq!(reader.n_row_groups(), 9, "20 rows of each of 3 repositories, 7 per row group");
    let all: Vec<SegmentRow> = reader.all_rows().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(all.len(), rows.len());
    let mut gamma = reader.rows("gämma").unwrap();
    assert_eq!(gamma.by_ref().collect::<Result<Vec<_>, _>>().unwrap(), of_repo(&rows, "gämma"));
    assert_eq!(gamma.row_groups_read(), [6, 7, 8]);

    // Default buffer: exactly one row group per repository, in repository order.
    let one = write(dir.path(), "seg-one", &rows, SegmentOptions::default());
    let repos: Vec<&str> = one.row_groups.iter().map(|g| g.repository.as_str()).collect();
    assert_eq!(repos, ["alpha", "beta", "gämma"]);

    // Row groups that cross the writer's internal chunks of rows keep every row, in order.
    let many: Vec<SegmentRow> = (0..10_000u32).map(|n| row("alpha", 100 + i64::from(n % 50), n)).collect();
    let big = write(dir.path(), "seg-many", &many, SegmentOptions { max_rows_per_row_group: 3_000, ..Default::default() });
    let counts: Vec<u64> = big.row_groups.iter().map(|g| g.rows).collect();
    assert_eq!(counts, [3_000, 3_000, 3_000, 1_000]);
    let reader = SegmentReader::open(&big.path).unwrap();
    let back: Vec<SegmentRow> = reader.all_rows().unwrap().collect::<Result<_, _>>().unwrap();
    assert!(back == many, "10 000 rows come back as written");
}

#[test]
fn metadata_round_trips_and_the_hash_is_that_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let rows = mixed_rows();
    let written = write(dir.path(), "seg-meta", &rows, SegmentOptions::default());
    assert_eq!(written.path, dir.path().join("seg-meta.parquet"));
    let bytes = std::fs::read(&written.path).unwrap();
    assert_eq!(written.blake3_hex, blake3::hash(&bytes).to_hex().as_str());
    assert_eq!(written.bytes, bytes.len() as u64);
    assert_eq!(written.n_events, 60);
    assert_eq!(written.min_timestamp_ms, Some(1_700_000_000_000));
    assert_eq!(written.max_timestamp_ms, Some(1_700_000_059_000));
    assert_eq!(written.repositories, ["alpha", "beta", "gämma"]);

    let reader = SegmentReader::open(&written.path).unwrap();
    assert_eq!(
        reader.meta(),
        &SegmentInfo {
            format_version: 1,
            segment_id: "seg-meta".into(),
            partition: 3,
            offset_start: 100,
            offset_end: 200,
            n_events: 60,
            min_timestamp_ms: Some(1_700_000_000_000),
            max_timestamp_ms: Some(1_700_000_059_000),
            repositories: written.repositories.clone(),
            row_groups: written.row_groups.clone(),
        }
    );
    assert!(reader.verify(&written.blake3_hex).unwrap());
    assert!(!reader.verify(&blake3::hash(b"other").to_hex()).unwrap());
}

#[test]
fn an_empty_segment_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let written = write(dir.path(), "seg-empty", &[], SegmentOptions::default());
    assert_eq!((written.n_events, written.min_timestamp_ms), (0, None));
    let reader = SegmentReader::open(&written.path).unwrap();
    assert_eq!(reader.meta().n_events, 0);
    assert_eq!(reader.n_row_groups(), 0);
    assert!(reader.all_rows().unwrap().next().is_none());
}

#[test]
fn a_truncated_file_is_an_error_naming_it_and_fails_verify() {
    let dir = tempfile::tempdir().unwrap();
    let written = write(dir.path(), "seg-trunc", &mixed_rows(), SegmentOptions::default());
    let bytes = std::fs::read(&written.path).unwrap();
    for keep in [0, 3, 100, bytes.len() / 2, bytes.len() - 9, bytes.len() - 1] {
        std::fs::write(&written.path, &bytes[..keep]).unwrap();
        let error = SegmentReader::open(&written.path).err().unwrap_or_else(|| panic!("opened a file cut to {keep} bytes"));
        assert!(matches!(error, SegmentError::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains("seg-trunc.parquet"), "{error}");
        assert!(!SegmentReader::verify_file(&written.path, &written.blake3_hex).unwrap());
    }
}

#[test]
fn a_flipped_byte_is_an_error_never_a_wrong_row_and_fails_verify() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = mixed_rows();
    // Raw text that compresses poorly, so row group data is most of the file.
    for (n, r) in rows.iter_mut().enumerate() {
        for k in 0..4u8 {
            r.raw.push_str(&blake3::hash(&[n as u8, k]).to_hex());
        }
    }
    let written = write(dir.path(), "seg-flip", &rows, SegmentOptions::default());
    let original = std::fs::read(&written.path).unwrap();
    let mut expected = rows.clone();
    expected.sort_by(|a, b| a.repository.cmp(&b.repository));
    let in_row_group = |at: u64| written.row_groups.iter().any(|g| (g.start..g.end).contains(&at));
    assert!(in_row_group(original.len() as u64 / 2), "the middle of the file is row group data: {} bytes, {:?}", original.len(), written.row_groups);
    // Bytes all over the file, one at a time (every byte would take a minute): in row group
    // data a flip is always an error (the row group's blake3); in the footer it is an
    // error or changes no row. The file's tail (footer length, magic) byte by byte.
    let len = original.len();
    let positions = (0..len).step_by(13).chain([len / 2]).chain(len - 64..len);
    for at in positions {
        let mut bytes = original.clone();
        bytes[at] ^= 0x20;
        std::fs::write(&written.path, &bytes).unwrap();
        assert!(!SegmentReader::verify_file(&written.path, &written.blake3_hex).unwrap());
        let outcome: Result<Vec<SegmentRow>, SegmentError> =
            SegmentReader::open(&written.path).and_then(|r| r.all_rows()?.collect());
        match outcome {
            Err(error) => {
                assert!(matches!(error, SegmentError::Corrupt { .. }), "byte {at}: {error}");
                assert!(error.to_string().contains("seg-flip.parquet"), "{error}");
            }
            Ok(read) => {
                assert!(!in_row_group(at as u64), "byte {at} of row group data flipped, rows read all the same");
                assert_eq!(read, expected, "byte {at} flipped: wrong rows");
            }
        }
    }
}

#[test]
fn no_segment_under_its_name_until_finish_and_an_abandoned_one_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let segments = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| is_segment_file_name(n))
            .collect()
    };
    let mut writer = SegmentWriter::create_with(dir.path(), meta("seg-crash"), SegmentOptions { max_buffered_bytes: 2000, ..Default::default() }).unwrap();
    for r in mixed_rows() {
        writer.push(r).unwrap();
    }
    // Row groups are on disk by now, under the temporary name only.
    let tmp = writer.temporary_path().to_owned();
    assert!(std::fs::metadata(&tmp).unwrap().len() > 4);
    assert!(!dir.path().join("seg-crash.parquet").exists());
    assert_eq!(segments(dir.path()), Vec::<String>::new());
    assert!(!is_segment_file_name(tmp.file_name().unwrap().to_str().unwrap()));
    drop(writer);
    assert!(!tmp.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let written = write(dir.path(), "seg-crash", &mixed_rows(), SegmentOptions::default());
    assert_eq!(segments(dir.path()), ["seg-crash.parquet"]);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the temporary file is gone");
    // A segment id is written once.
    let again = SegmentWriter::create(dir.path(), meta("seg-crash")).err().unwrap();
    assert!(matches!(again, SegmentError::Exists { .. }), "{again}");
    assert!(SegmentReader::open(&written.path).is_ok());

    // The name taken between create and finish: refused, the temporary file removed, the
    // other file untouched.
    let mut writer = SegmentWriter::create(dir.path(), meta("seg-race")).unwrap();
    writer.push(row("a", 120, 1)).unwrap();
    std::fs::write(dir.path().join("seg-race.parquet"), b"theirs").unwrap();
    let error = writer.finish(121).unwrap_err();
    assert!(matches!(error, SegmentError::Exists { .. }), "{error}");
    assert!(!dir.path().join(".seg-race.parquet.tmp").exists());
    assert_eq!(std::fs::read(dir.path().join("seg-race.parquet")).unwrap(), b"theirs");
}

#[test]
fn offsets_outside_the_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = SegmentWriter::create(dir.path(), meta("seg-range")).unwrap();
    let error = writer.push(row("a", 99, 1)).unwrap_err();
    assert!(error.to_string().contains("below offset_start 100"), "{error}");
    writer.push(row("a", 150, 1)).unwrap();
    let error = writer.finish(150).unwrap_err();
    assert!(matches!(error, SegmentError::Invalid { .. }), "{error}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a failed finish leaves nothing");

    let error = SegmentWriter::create(dir.path(), meta("../escape")).err().unwrap();
    assert!(matches!(error, SegmentError::Invalid { .. }), "{error}");
}

#[test]
fn a_parquet_file_weir_did_not_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreign.parquet");
    std::fs::write(&path, b"PAR1 not really parquet PAR1").unwrap();
    let error = SegmentReader::open(&path).err().unwrap();
    assert!(error.to_string().contains("foreign.parquet"), "{error}");
}

#[test]
fn event_ids_read_partition_offset_and_index() {
    for (partition, offset, index) in [(0, 0, 0), (7, 1_234_567_890_123, 42), (i32::MAX, i64::MAX, u32::MAX), (-1, -5, 3)] {
        assert_eq!(SegmentRow::event_id(partition, offset, index), format!("{partition}-{offset}-{index}"));
    }
}
