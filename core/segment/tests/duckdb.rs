//! A segment is readable with no Weir code: DuckDB (pinned, from PyPI, in a venv under
//! `$WEIR_CACHE_DIR`) reads a segment this crate wrote, and what it prints must match
//! what was written. Fails, never skips, when DuckDB cannot be set up.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use weir_segment::{SegmentMeta, SegmentRow, SegmentWriter};

/// The python of the DuckDB venv, created by `duckdb-setup.sh` if missing.
fn duckdb_python() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/duckdb-setup.sh");
    let output = Command::new("bash").arg(&script).output().unwrap_or_else(|e| {
        panic!("cannot run bash {}: {e}; install bash and python3 (3.9+, with venv)", script.display())
    });
    assert!(
        output.status.success(),
        "setting up the DuckDB venv failed ({}); install python3 with the venv module and \
         PyPI access, then run `bash core/segment/tests/duckdb-setup.sh`\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("the setup script prints a path");
    stdout.lines().last().expect("the setup script prints the venv's python").trim().to_owned()
}

fn rows() -> Vec<SegmentRow> {
    let mut rows = Vec::new();
    for offset in 500..520i64 {
        for index in 0..2u32 {
            let n = (offset - 500) as u32 * 2 + index;
            let repository = if n.is_multiple_of(3) { "web" } else if n % 3 == 1 { "db" } else { "häfen" };
            let mut tags = BTreeMap::new();
            if n.is_multiple_of(2) {
                tags.insert("host".to_owned(), format!("h{n}"));
            }
            let fields = if n.is_multiple_of(4) {
                json!({"status": 200 + n, "path": format!("/p/{n}")})
            } else {
                json!({})
            };
            rows.push(SegmentRow {
                repository: repository.to_owned(),
                timestamp_ms: 1_750_000_000_000 + i64::from(n),
                ingest_timestamp_ms: 1_750_000_001_000,
                raw: format!("line {n} ✓ {repository}"),
                id: SegmentRow::event_id(7, offset, index),
                offset,
                tags,
                fields: fields.as_object().unwrap().clone().into(),
                parser: (!n.is_multiple_of(5)).then(|| "accesslog".to_owned()),
                error: (n % 7 == 3).then(|| format!("no match for line {n}")),
            });
        }
    }
    rows
}

#[test]
fn duckdb_reads_a_segment_with_no_weir_code() {
    let python = duckdb_python();
    let dir = tempfile::tempdir().unwrap();
    let rows = rows();
    let mut writer = SegmentWriter::create(dir.path(), SegmentMeta { segment_id: "p7-500".into(), partition: 7, offset_start: 500 }).unwrap();
    for row in &rows {
        writer.push(row.clone()).unwrap();
    }
    let written = writer.finish(520).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/duckdb_read_segment.py");
    let output = Command::new(&python).arg(&script).arg(&written.path).output().unwrap();
    assert!(
        output.status.success(),
        "{python} {} {} failed: {}\nstderr:\n{}",
        script.display(),
        written.path.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("DuckDB script printed no JSON ({e}): {}", String::from_utf8_lossy(&output.stdout)));
    println!("duckdb printed: {seen:#}");

    let mut count_per_repo = BTreeMap::<String, u64>::new();
    for row in &rows {
        *count_per_repo.entry(row.repository.clone()).or_default() += 1;
    }
    assert_eq!(seen["count_per_repo"], json!(count_per_repo));

    // Offset order, then index in record: the order the rows were pushed in.
    let rawstrings: Vec<&str> = rows.iter().map(|r| r.raw.as_str()).collect();
    assert_eq!(seen["rawstrings"], json!(rawstrings));

    let status: BTreeMap<&str, String> =
        rows.iter().filter_map(|r| Some((r.id.as_str(), r.fields.get("status")?.to_string()))).collect();
    assert!(!status.is_empty());
    assert_eq!(seen["status_by_id"], json!(status));

    let hosts: BTreeMap<&str, &str> = rows.iter().filter_map(|r| Some((r.id.as_str(), r.tags.get("host")?.as_str()))).collect();
    assert_eq!(seen["host_tag_by_id"], json!(hosts), "tags as a MAP: tags['host'] is the value");

    let errors: BTreeMap<&str, &str> = rows.iter().filter_map(|r| Some((r.id.as_str(), r.error.as_deref()?))).collect();
    assert!(!errors.is_empty());
    assert_eq!(seen["errors_by_id"], json!(errors));
    assert_eq!(seen["null_parsers"], json!(rows.iter().filter(|r| r.parser.is_none()).count()));

    let timestamps: BTreeMap<&str, i64> = rows.iter().map(|r| (r.id.as_str(), r.timestamp_ms)).collect();
    assert_eq!(seen["timestamp_ms_by_id"], json!(timestamps));

    let types = &seen["column_types"];
    assert_eq!(types["@timestamp"], "TIMESTAMP WITH TIME ZONE");
    assert_eq!(types["@offset"], "BIGINT");
    assert_eq!(types["@error"], "BOOLEAN");
    assert_eq!(types["tags"], "MAP(VARCHAR, VARCHAR)");

    let kv = &seen["kv_metadata"];
    assert_eq!(kv["weir.format_version"], "1");
    assert_eq!(kv["weir.segment_id"], "p7-500");
    assert_eq!(kv["weir.partition"], "7");
    assert_eq!(kv["weir.offset_start"], "500");
    assert_eq!(kv["weir.offset_end"], "520");
    assert_eq!(kv["weir.n_events"], rows.len().to_string());
    assert_eq!(kv["weir.min_timestamp_ms"], written.min_timestamp_ms.unwrap().to_string());
    assert_eq!(kv["weir.max_timestamp_ms"], written.max_timestamp_ms.unwrap().to_string());
    assert_eq!(kv["weir.repositories"], serde_json::to_string(&written.repositories).unwrap());

    // One row group per repository, sorted: what DuckDB's own pruning sees.
    assert_eq!(seen["row_group_repos"], json!(["db", "häfen", "web"]));
}
