//! LogScale's own Python client, humiolib (pinned, from PyPI, in a venv that
//! `humiolib-setup.sh` creates under `$WEIR_CACHE_DIR`), reads events back from the read
//! API: `streaming_query` and a query job (`create_queryjob` + `poll`). Fails, never
//! skips, when the venv cannot be set up.

use std::path::Path;
use std::process::Command;

use crate::common::{DirSource, READ_ALL, rows, serve};
use serde_json::Value;
use weir_query::QueryConfig;

fn humiolib_python() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/humiolib-setup.sh");
    let output = Command::new("bash").arg(&script).output().unwrap_or_else(|e| panic!("cannot run bash {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "setting up the humiolib venv failed ({}); install python3 with the venv module and PyPI access, then run `bash core/query/tests/humiolib-setup.sh`\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().lines().last().expect("the setup script prints the venv's python").trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn humiolib_reads_events_back() {
    let python = humiolib_python();
    let dir = tempfile::tempdir().unwrap();
    let source = DirSource::new(dir.path());
    source.add("p0-0", 0, 0, rows("web", 0, 0, 0, 30));
    source.add("p1-0", 1, 0, rows("web", 1, 0, 30, 20));
    let addr = serve(source, QueryConfig::default()).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/humiolib_query.py");
    // The client blocks; the server runs on this test's runtime meanwhile.
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&python).arg(&script).args([format!("http://{addr}"), "web".to_owned(), READ_ALL.to_owned()]).output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(output.status.success(), "humiolib script failed:\nstdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();

    let streamed = result["streamed"].as_array().unwrap();
    assert_eq!(streamed.len(), 50);
    let mut raws: Vec<&str> = streamed.iter().map(|e| e["@rawstring"].as_str().unwrap()).collect();
    raws.sort();
    raws.dedup();
    assert_eq!(raws.len(), 50, "each event once");
    assert!(streamed.iter().all(|e| e["#repo"] == "web" && e["@timestamp"].is_i64() && e["@id"].is_string()));

    // status=500: multiples of 3 below 50 whose parse did not fail (n % 5 == 4 fails: 9, 24, 39).
    let expected: Vec<u64> = (0..50).filter(|n| n % 3 == 0 && n % 5 != 4).collect();
    let number = |e: &Value| e["n"].as_str().unwrap().parse::<u64>().unwrap();
    let mut filtered: Vec<u64> = result["filtered"].as_array().unwrap().iter().map(number).collect();
    filtered.sort();
    assert_eq!(filtered, expected);

    assert_eq!(result["count"]["events"], serde_json::json!([{"_count": "50"}]));
    assert_eq!(result["count"]["isAggregate"], true);
    let job_events: Vec<u64> = result["job"]["events"].as_array().unwrap().iter().map(number).collect();
    assert_eq!(job_events, expected, "sort(n, order=asc) through a query job");
    assert_eq!(result["job"]["metadata"]["extraData"]["hasMoreEvents"], "false");

    assert_eq!(result["refused"]["status"], 400);
    assert!(result["refused"]["message"].as_str().unwrap().contains("join() is not supported"));

    // A time chart through a query job: 7 days of 1 h buckets (169, the start and end
    // rounded down), each host in each, the events of the last hour in one bucket.
    let chart = &result["chart"];
    let rows = chart["events"].as_array().unwrap();
    assert_eq!(rows.len(), 169 * 2, "every bucket of both hosts");
    assert_eq!(chart["metadata"]["extraData"]["timechart"], "true");
    assert_eq!(chart["metadata"]["extraData"]["bucket_span_millis"], "3600000");
    assert_eq!(chart["metadata"]["extraData"]["series"], "#host");
    assert_eq!(chart["metadata"]["fieldOrder"][0], "_bucket");
    let total: u64 = rows.iter().map(|r| r["_count"].as_str().unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(total, 50);
    assert!(rows.iter().all(|r| r["_bucket"].as_str().unwrap().parse::<i64>().unwrap() % 3_600_000 == 0));
}
