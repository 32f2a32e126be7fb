//! The edge's file input (`[[files]]`) with real processes: an edge reading files in a
//! temporary directory, a core, and Kafka read back by an independent consumer. Each
//! rotation case checks its documented answer (README "Reading files on the edge"), and
//! kill -9 of the edge mid-file checks that a checkpoint never runs ahead of the spool.
//! Lines are counted once per batch part (`kafka::first_copy_counts`): a batch the
//! forwarder sent twice because its core answered late (same batch id, dropped by the
//! digest) is not a line read twice; a line read again is in a batch of its own.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weir_tests::kafka;
use weir_tests::nodes::{CoreSpec, EdgeSpec, Node, REPOSITORY, core_process};
use weir_tests::{certs, gate, init_tracing, unique};

/// A core, an edge with one `[[files]]` section named `app` over `<logs>/app.log*`, and
/// the directory the files are written in.
struct Stack {
    dir: tempfile::TempDir,
    logs: PathBuf,
    bootstrap: String,
    topic: String,
    edge_spec: EdgeSpec,
    section: String,
    edge: Option<Node>,
    _core: Node,
    run: String,
}

impl Stack {
    /// `keys`: further keys of the section (e.g. `scan_interval_ms = 200`).
    async fn start(keys: &str) -> Stack {
        init_tracing();
        let bootstrap = kafka::shared_bootstrap();
        let dir = tempfile::tempdir().unwrap();
        let certs = certs(dir.path());
        let topic = unique("weir-test-files");
        let core_spec = CoreSpec::new("core-1", &bootstrap, &topic, &certs);
        let core = core_process(&core_spec, dir.path()).await;
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let edge_spec = EdgeSpec::new(dir.path(), vec![core_spec.quic_addr()], &certs);
        let section = format!(
            "\n[[files]]\nname = \"app\"\ninclude = [\"{}/app.log*\"]\nrepository = \"{REPOSITORY}\"\ntags = {{ team = \"files\" }}\n{keys}\n",
            logs.display()
        );
        Stack { dir, logs, bootstrap, topic, edge_spec, section, edge: None, _core: core, run: unique("f") }
    }

    async fn start_edge(&mut self) {
        let config = self.edge_spec.toml() + &self.section;
        self.edge = Some(Node::spawn("weir-edge", &self.edge_spec.edge_id, &config, self.edge_spec.http_port, self.dir.path()).await);
    }

    fn path(&self, name: &str) -> PathBuf {
        self.logs.join(name)
    }

    /// `n` distinct lines tagged `tag`, each about 70 bytes.
    fn lines(&self, tag: &str, range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("{}-{tag}-{i:06}-some-padding-to-make-a-line", self.run)).collect()
    }

    /// The section's checkpoint offset for the file last seen at `path`.
    fn checkpoint(&self, path: &Path) -> Option<u64> {
        let file = self.edge_spec.spool_dir.join("file-checkpoints/app.json");
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
        json["files"].as_object()?.values().find(|e| e["path"].as_str() == path.to_str())?["offset"].as_u64()
    }

    fn edge_log(&self) -> String {
        self.edge.as_ref().map(Node::log_tail).unwrap_or_default()
    }

    /// Waits until every line of `expected` is in Kafka, lets stragglers (duplicates)
    /// arrive, and returns the records read.
    async fn read_back(&self, expected: &[String]) -> Vec<kafka::Record> {
        let (bootstrap, topic, expected) = (self.bootstrap.clone(), self.topic.clone(), expected.to_vec());
        let records = tokio::task::spawn_blocking(move || {
            kafka::expect_events(&bootstrap, &topic, &expected, Duration::from_secs(60));
            std::thread::sleep(Duration::from_millis(1500));
            kafka::consume_all(&bootstrap, &topic, Duration::from_secs(30))
        })
        .await;
        records.unwrap_or_else(|e| panic!("{e}\nedge log:\n{}", self.edge_log()))
    }
}

fn append(path: &Path, lines: &[String]) {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    let mut text = lines.join("\n");
    text.push('\n');
    file.write_all(text.as_bytes()).unwrap();
    file.sync_all().unwrap();
}

fn counts_of<'a>(counts: &BTreeMap<String, usize>, lines: impl IntoIterator<Item = &'a String>) -> Vec<usize> {
    lines.into_iter().map(|l| counts.get(l).copied().unwrap_or(0)).collect()
}

fn assert_each(counts: &BTreeMap<String, usize>, lines: &[String], expected: usize, what: &str) {
    let got = counts_of(counts, lines);
    let wrong: Vec<(&String, usize)> = lines.iter().zip(got).filter(|(_, n)| *n != expected).take(5).collect();
    assert!(wrong.is_empty(), "{what}: expected each {expected} time(s) in Kafka, these were not: {wrong:?}");
}

/// Polls until `check` holds, panicking with the edge's log after `timeout`.
async fn until(stack: &Stack, what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}\nedge log:\n{}", stack.edge_log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn appended_lines_and_a_file_rotated_twice_between_two_scans_are_each_read_once() {
    let _gate = gate::shared();
    // No wake-ups: only the periodic scan, 1.5 s apart, sees the renames.
    let mut stack = Stack::start("scan_interval_ms = 1500\nwatch = false").await;
    let app = stack.path("app.log");
    let first = stack.lines("first", 0..100);
    append(&app, &first);
    stack.start_edge().await;
    let records = stack.read_back(&first).await;
    let record = &records[0];
    assert_eq!(record.batch.tags.get("file.input").map(String::as_str), Some("app"));
    assert_eq!(record.batch.tags.get("team").map(String::as_str), Some("files"));
    assert_eq!(record.batch.attributes["file.path"], app.display().to_string());

    // Appended, then rotated twice within microseconds: the middle file never had the
    // name the edge last saw, and is found by the glob with its own fingerprint.
    let appended = stack.lines("appended", 0..50);
    append(&app, &appended);
    std::fs::rename(&app, stack.path("app.log.1")).unwrap();
    let middle = stack.lines("middle", 0..100);
    append(&app, &middle);
    std::fs::rename(stack.path("app.log.1"), stack.path("app.log.2")).unwrap();
    std::fs::rename(&app, stack.path("app.log.1")).unwrap();
    let newest = stack.lines("newest", 0..100);
    append(&app, &newest);
    let mut expected = [first, appended, middle, newest].concat();
    let counts = kafka::first_copy_counts(&stack.read_back(&expected).await);
    assert_each(&counts, &expected, 1, "no crash, so no duplicates");

    // The new file is followed as it grows.
    let later = stack.lines("later", 0..20);
    append(&app, &later);
    expected.extend(later);
    let counts = kafka::first_copy_counts(&stack.read_back(&expected).await);
    assert_each(&counts, &expected, 1, "after the appends");
    assert_eq!(counts.len(), expected.len(), "nothing else was read");
}

#[tokio::test(flavor = "multi_thread")]
async fn copytruncate_loses_nothing_and_repeats_nothing() {
    let _gate = gate::shared();
    let mut stack = Stack::start("scan_interval_ms = 200").await;
    let app = stack.path("app.log");
    let before = stack.lines("before", 0..100);
    append(&app, &before);
    stack.start_edge().await;
    stack.read_back(&before).await;

    // logrotate's copytruncate: copy, then truncate in place; the writer goes on.
    let tail = stack.lines("tail", 0..50);
    append(&app, &tail);
    std::fs::copy(&app, stack.path("app.log.1")).unwrap();
    std::fs::OpenOptions::new().write(true).open(&app).unwrap().set_len(0).unwrap();
    let after = stack.lines("after", 0..100);
    append(&app, &after);
    let expected = [before, tail, after].concat();
    let counts = kafka::first_copy_counts(&stack.read_back(&expected).await);
    assert_each(&counts, &expected, 1, "the copy is read from the original's checkpoint on");
    assert_eq!(counts.len(), expected.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_truncated_below_its_checkpoint_is_read_again_from_its_start() {
    let _gate = gate::shared();
    let mut stack = Stack::start("scan_interval_ms = 200").await;
    let app = stack.path("app.log");
    let lines = stack.lines("old", 0..100);
    append(&app, &lines);
    stack.start_edge().await;
    stack.read_back(&lines).await;
    let length = std::fs::metadata(&app).unwrap().len();
    until(&stack, "the checkpoint at the end", Duration::from_secs(10), || stack.checkpoint(&app) == Some(length)).await;

    // Cut at the start of line 50 (the first KiB stays, so does the fingerprint), then a
    // few new lines: the file is now shorter than the checkpoint.
    let cut: u64 = lines[..50].iter().map(|l| l.len() as u64 + 1).sum();
    std::fs::OpenOptions::new().write(true).open(&app).unwrap().set_len(cut).unwrap();
    let new = stack.lines("new", 0..10);
    append(&app, &new);
    let expected = [lines.clone(), new.clone()].concat();
    let records = stack.read_back(&expected).await;
    let counts = kafka::first_copy_counts(&records);
    // Documented answer: read again from offset 0, so what the cut kept comes twice.
    assert_each(&counts, &lines[..50], 2, "kept by the cut: read again");
    assert_each(&counts, &lines[50..], 1, "cut away");
    assert_each(&counts, &new, 1, "written after the cut");
    assert!(stack.edge_log().contains("truncated"), "{}", stack.edge_log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_deleted_while_being_read_is_read_to_its_end() {
    let _gate = gate::shared();
    // Small batches: each is one spool fsync and one checkpoint write, so reading 20 000
    // lines takes long enough to delete the file in the middle.
    let mut stack = Stack::start("scan_interval_ms = 200\nbatch_max_events = 20").await;
    let app = stack.path("app.log");
    let lines = stack.lines("deleted", 0..20_000);
    append(&app, &lines);
    let length = std::fs::metadata(&app).unwrap().len();
    stack.start_edge().await;
    until(&stack, "the first checkpoint past 0", Duration::from_secs(20), || stack.checkpoint(&app).is_some_and(|o| o > 0)).await;
    std::fs::remove_file(&app).unwrap();
    let at_delete = stack.checkpoint(&app).unwrap();
    assert!(at_delete < length, "the file was read completely before it was deleted ({at_delete} of {length}); the test proves nothing");
    let counts = kafka::first_copy_counts(&stack.read_back(&lines).await);
    assert_each(&counts, &lines, 1, "read to its end through the open descriptor");
    until(&stack, "the file closed", Duration::from_secs(10), || stack.edge_log().contains("read to its end and closed")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_line_longer_than_the_limit_is_cut_and_marked() {
    let _gate = gate::shared();
    let mut stack = Stack::start("scan_interval_ms = 200\nmax_line_bytes = 1000").await;
    let app = stack.path("app.log");
    let before = stack.lines("before", 0..30);
    let long = format!("{}-long-{}", stack.run, "x".repeat(100_000));
    let after = stack.lines("after", 0..30);
    append(&app, &[before.clone(), vec![long.clone()], after.clone()].concat());
    stack.start_edge().await;
    let cut = long[..1000].to_owned();
    let expected = [before, vec![cut.clone()], after].concat();
    let records = stack.read_back(&expected).await;
    let counts = kafka::first_copy_counts(&records);
    assert_each(&counts, &expected, 1, "the long line cut, the others whole");
    let event = records.iter().flat_map(|r| &r.batch.events).find(|e| e.raw == cut).unwrap();
    assert_eq!(event.attributes["@truncated_bytes"], serde_json::json!(long.len() - 1000));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gzip_file_is_read_once_even_across_a_restart() {
    let _gate = gate::shared();
    use flate2::write::GzEncoder;
    let mut stack = Stack::start("scan_interval_ms = 200").await;
    let packed = stack.lines("packed", 0..500);
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all((packed.join("\n") + "\n").as_bytes()).unwrap();
    std::fs::write(stack.path("app.log.3.gz"), encoder.finish().unwrap()).unwrap();
    stack.start_edge().await;
    stack.read_back(&packed).await;
    until(&stack, "the .gz marked complete", Duration::from_secs(10), || stack.edge_log().contains("read to its end and closed")).await;

    // A restart finds the file complete in its checkpoint; a plain file shows the edge
    // is reading again.
    stack.edge.as_mut().unwrap().terminate(Duration::from_secs(10));
    stack.start_edge().await;
    let marker = stack.lines("marker", 0..30);
    append(&stack.path("app.log"), &marker);
    let expected = [packed, marker].concat();
    let counts = kafka::first_copy_counts(&stack.read_back(&expected).await);
    assert_each(&counts, &expected, 1, "the .gz once, across the restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn multiline_events_join_their_continuation_lines() {
    let _gate = gate::shared();
    let mut stack = Stack::start("scan_interval_ms = 200\nmultiline_start = '^\\d{4}-\\d\\d-\\d\\d '\nmultiline_timeout_ms = 300").await;
    let app = stack.path("app.log");
    let run = stack.run.clone();
    let mut text = String::new();
    let mut expected = Vec::new();
    for i in 0..40 {
        let event = format!("2024-05-01 10:00:{:02} ERROR {run} failure {i}\n    at com.example.A.f(A.java:{i})\n    at com.example.B.g(B.java:7)", i % 60);
        text.push_str(&event);
        text.push('\n');
        expected.push(event);
    }
    std::fs::write(&app, text).unwrap();
    stack.start_edge().await;
    // The last event has no next start line: it is complete once the file is quiet.
    let counts = kafka::first_copy_counts(&stack.read_back(&expected).await);
    assert_each(&counts, &expected, 1, "one event per start line, continuations joined");
    assert_eq!(counts.len(), expected.len(), "no continuation line became an event of its own: {counts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_of_the_edge_mid_file_loses_nothing_and_repeats_at_most_one_batch() {
    let _gate = gate::shared();
    const BATCH: usize = 50;
    let mut stack = Stack::start(&format!("scan_interval_ms = 200\nbatch_max_events = {BATCH}")).await;
    let app = stack.path("app.log");
    let lines = stack.lines("kill", 0..30_000);
    append(&app, &lines);
    let length = std::fs::metadata(&app).unwrap().len();
    stack.start_edge().await;
    // Killed the moment a checkpoint a fifth into the file appears (no sleep: a checkpoint
    // written ahead of the spool's fsync would be caught in its window).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stack.checkpoint(&app).is_some_and(|o| o > length / 5) {
        assert!(Instant::now() < deadline, "no checkpoint a fifth into the file\nedge log:\n{}", stack.edge_log());
        std::hint::spin_loop();
    }
    stack.edge.as_mut().unwrap().kill9();
    let at_kill = stack.checkpoint(&app).unwrap();
    assert!(at_kill < length, "the edge had read the whole file before the kill; the test proves nothing");
    stack.start_edge().await;
    let records = stack.read_back(&lines).await;

    // The forwarder may send a spooled batch twice across a crash (same batch id: the
    // digest drops the copy). What the file input repeats has new batch ids.
    let counts = kafka::first_copy_counts(&records);
    assert!(counts_of(&counts, &lines).iter().all(|&n| n >= 1), "every line is in Kafka");
    let repeated = counts_of(&counts, &lines).iter().filter(|&&n| n > 1).count();
    assert!(repeated <= BATCH, "{repeated} lines were read twice; at most one batch ({BATCH}) may be");
    assert!(counts_of(&counts, &lines).iter().all(|&n| n <= 2), "no line three times");
    eprintln!("kill -9 at checkpoint {at_kill} of {length}: {repeated} lines repeated");
}

#[test]
fn a_bad_section_is_refused_at_start_naming_it() {
    let _gate = gate::shared();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let spec = EdgeSpec::new(dir.path(), vec!["127.0.0.1:1".into()], &certs);
    let cases = [
        ("include = [\"/var/log/[oops\"]", "include pattern \"/var/log/[oops\" is not a valid glob"),
        ("include = [\"relative/*.log\"]", "is not an absolute path"),
        ("include = [\"/var/log/*.log\"]\nmultiline_start = \"(unclosed\"", "`multiline_start` \"(unclosed\" is not a valid regex"),
        ("include = [\"/var/log/*.log\"]\nmax_line_bytes = 0", "`max_line_bytes` 0 must be between 1"),
        ("include = [\"/var/log/*.log\"]\nread_from = \"middle\"", "found `middle`, expected ``beginning` or `end``"),
    ];
    for (keys, expected) in cases {
        let config = spec.toml() + &format!("\n[[files]]\nname = \"web\"\nrepository = \"r\"\n{keys}\n");
        let path = dir.path().join("edge.toml");
        std::fs::write(&path, config).unwrap();
        let error = weir_edge::config::EdgeConfig::load(&path).err().unwrap_or_else(|| panic!("{keys} accepted")).to_string();
        assert!(error.contains(expected), "{keys}: {error}");
        if !expected.contains("middle") {
            assert!(error.contains("name = \"web\""), "the section is named: {error}");
        }
    }
}
