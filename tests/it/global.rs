//! Global on a real Kafka topic: cores sharing one Global topic apply the same commands
//! in the same order (a command submitted on one is applied on the other; of two racing
//! claims exactly one wins, on both), a restart from the snapshot reaches the same state
//! as a rebuild from offset 0, a damaged snapshot is rebuilt from 0, and
//! `weir-core global dump` prints the nodes.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_core::RunningCore;
use weir_core::config::CoreConfig;
use weir_core::cluster::global_log::{self, GlobalLog};
use weir_core::store::DataDir;
use weir_global::{Cmd, Command, Outcome, Rejection, Snapshot, State};
use weir_tests::kafka;
use weir_tests::nodes::CoreSpec;
use weir_tests::{certs, cli, eventually, gate, http, init_tracing, unique};

const WAIT: Duration = Duration::from_secs(30);

struct Core {
    running: Option<RunningCore>,
    shutdown: CancellationToken,
}

impl Core {
    async fn start(spec: &CoreSpec, dir: &std::path::Path) -> Core {
        let shutdown = CancellationToken::new();
        let running = weir_core::start(spec.config(dir), shutdown.clone()).await.expect("start core");
        let url = format!("http://{}/ready", running.http_addr);
        let client = http();
        eventually("core ready (global caught up)", WAIT, || {
            let request = client.get(&url);
            async move { request.send().await.ok().filter(|r| r.status().is_success()) }
        })
        .await;
        Core { running: Some(running), shutdown }
    }

    fn global(&self) -> Arc<GlobalLog> {
        self.running.as_ref().expect("running").global()
    }

    /// Stops the core and waits until it is down (its last snapshot written).
    async fn stop(mut self) {
        self.shutdown.cancel();
        let running = self.running.take().expect("running");
        tokio::time::timeout(WAIT, running.task).await.expect("core stops in time").expect("core task").expect("core ran");
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn spec(node_id: &str, bootstrap: &str, dir: &std::path::Path) -> CoreSpec {
    let certs = certs(dir);
    CoreSpec::new(node_id, bootstrap, &unique("weir-test-global-ingest"), &certs)
}

/// Waits until `global` applied this node's heartbeat of its current run (one written
/// after `after_ms`).
async fn own_heartbeat(global: &GlobalLog, node_id: &str, after_ms: u64) {
    eventually(&format!("{node_id}'s heartbeat applied"), WAIT, || {
        let seen = global.read(|s| s.nodes().get(node_id).is_some_and(|n| n.heartbeat_ms >= after_ms));
        async move { seen.then_some(()) }
    })
    .await;
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The state read from offset 0 (an empty data directory) to the topic's end.
async fn rebuild_from_zero(config: &CoreConfig) -> Snapshot {
    let mut config = config.clone();
    config.data_dir = config.data_dir.with_file_name(unique("rebuild-data"));
    tokio::task::spawn_blocking(move || global_log::dump(&config, WAIT)).await.unwrap().expect("dump from 0")
}

/// core-1 and core-2, started in-process on one Global topic.
async fn two_cores_sharing_global(bootstrap: &str, dir: &std::path::Path) -> (CoreSpec, Core, Core) {
    let spec1 = spec("core-1", bootstrap, dir);
    let mut spec2 = spec("core-2", bootstrap, dir);
    // One cluster: both topics shared (a core of other topics stops, `cluster::topics`).
    spec2.global_topic = spec1.global_topic.clone();
    spec2.topic = spec1.topic.clone();
    let (core1, core2) = (
        Core::start(&spec1, dir).await,
        Core::start(&spec2, dir).await,
    );
    (spec1, core1, core2)
}

fn json(snapshot: &Snapshot) -> String {
    serde_json::to_string(snapshot).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_on_one_core_applies_on_both_and_racing_claims_have_one_winner() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let (_, core1, core2) = two_cores_sharing_global(&bootstrap, dir.path()).await;
    let (g1, g2) = (core1.global(), core2.global());

    // Submitted on core-1, seen on core-2.
    let claim = Command::new(unique("claim"), "core-1", Cmd::ClaimPartition { partition: 7, node_id: "core-1".into(), epoch: 1 });
    let (offset, outcome) = g1.submit(&claim).await.expect("submit on core-1");
    assert_eq!(outcome, Outcome::Applied);
    eventually("core-2 applied core-1's claim", WAIT, || {
        let seen = g2.read(|s| s.applied_offset().is_some_and(|o| o >= offset) && s.partition(7).owner.as_deref() == Some("core-1"));
        async move { seen.then_some(()) }
    })
    .await;

    // Two claims of the same epoch race: the first in the log wins, on both nodes.
    let c1 = Command::new(unique("race"), "core-1", Cmd::ClaimPartition { partition: 9, node_id: "core-1".into(), epoch: 1 });
    let c2 = Command::new(unique("race"), "core-2", Cmd::ClaimPartition { partition: 9, node_id: "core-2".into(), epoch: 1 });
    let (r1, r2) = tokio::join!(g1.submit(&c1), g2.submit(&c2));
    let ((o1, out1), (o2, out2)) = (r1.expect("claim on core-1"), r2.expect("claim on core-2"));
    let winner = match (&out1, &out2) {
        (Outcome::Applied, Outcome::Rejected { reason: Rejection::EpochNotNext { .. } }) => "core-1",
        (Outcome::Rejected { reason: Rejection::EpochNotNext { .. } }, Outcome::Applied) => "core-2",
        other => panic!("exactly one claim must win: {other:?}"),
    };
    assert_eq!(winner == "core-1", o1 < o2, "the first in the log wins");
    let last = o1.max(o2);
    for (name, global) in [("core-1", &g1), ("core-2", &g2)] {
        eventually(&format!("{name} applied both claims"), WAIT, || {
            let seen = global.read(|s| s.applied_offset().is_some_and(|o| o >= last));
            async move { seen.then_some(()) }
        })
        .await;
        let partition = global.read(|s| s.partition(9));
        assert_eq!((partition.owner.as_deref(), partition.epoch), (Some(winner), 1), "{name}");
    }
    // Both nodes announced themselves, and both know it.
    for global in [&g1, &g2] {
        eventually("both heartbeats applied", WAIT, || {
            let seen = global.read(|s| s.nodes().contains_key("core-1") && s.nodes().contains_key("core-2"));
            async move { seen.then_some(()) }
        })
        .await;
    }
    core1.stop().await;
    core2.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_from_the_snapshot_or_from_a_damaged_one_reaches_the_state_of_a_rebuild() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec("core-1", &bootstrap, dir.path());
    let config = spec.config(dir.path());
    let snapshot_path = DataDir::new(&spec.data_dir).snapshot_path();

    let core = Core::start(&spec, dir.path()).await;
    let global = core.global();
    // Partitions 10..15: the ingest topic has 2, which the digest claims on its own.
    for p in 10..15 {
        let claim = Command::new(unique("claim"), "core-1", Cmd::ClaimPartition { partition: p, node_id: "core-1".into(), epoch: 1 });
        assert_eq!(global.submit(&claim).await.expect("claim").1, Outcome::Applied);
    }
    own_heartbeat(&global, "core-1", 0).await;
    core.stop().await;
    let written = Snapshot::read(&snapshot_path).expect("a snapshot at shutdown");
    assert_eq!(json(&written), json(&rebuild_from_zero(&config).await), "the snapshot at shutdown is the state of the whole topic");

    // Restart from the snapshot: only the records after it are read.
    spec.http_port = weir_tests::free_port();
    spec.quic_port = weir_tests::free_port();
    let since = now_ms();
    let core = Core::start(&spec, dir.path()).await;
    let global = core.global();
    assert!(global.read(|s| s.partition(14).owner.is_some()), "the restarted node starts from its snapshot");
    own_heartbeat(&global, "core-1", since).await;
    core.stop().await;
    let restarted = Snapshot::read(&snapshot_path).expect("snapshot after the restart");
    assert_eq!(json(&restarted), json(&rebuild_from_zero(&config).await), "restart from snapshot = rebuild from 0");

    // A damaged snapshot: logged, ignored, rebuilt from offset 0 to the same state.
    let mut bytes = std::fs::read(&snapshot_path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x55;
    std::fs::write(&snapshot_path, &bytes).unwrap();
    assert!(Snapshot::read(&snapshot_path).is_err());
    spec.http_port = weir_tests::free_port();
    spec.quic_port = weir_tests::free_port();
    let since = now_ms();
    let core = Core::start(&spec, dir.path()).await;
    let global = core.global();
    own_heartbeat(&global, "core-1", since).await;
    assert_eq!(global.read(|s| (10..15).filter(|p| s.partition(*p).owner.is_some()).count()), 5, "rebuilt claims");
    core.stop().await;
    let rebuilt = Snapshot::read(&snapshot_path).expect("snapshot after the rebuild");
    assert_eq!(json(&rebuilt), json(&rebuild_from_zero(&config).await), "rebuild after damage = rebuild from 0");
    let state: &State = &rebuilt.state;
    assert_eq!(state.nodes().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn global_dump_prints_the_nodes() {
    let _gate = gate::shared();
    init_tracing();
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let (spec1, core1, core2) = two_cores_sharing_global(&bootstrap, dir.path()).await;
    own_heartbeat(&core1.global(), "core-2", 0).await;
    own_heartbeat(&core1.global(), "core-1", 0).await;

    // A config of its own (an empty data directory): the dump reads from offset 0.
    let mut dump_spec = spec1.clone();
    dump_spec.node_id = "dumper".into();
    dump_spec.data_dir = dir.path().join("dump-data");
    let config = dir.path().join("dump.toml");
    std::fs::write(&config, dump_spec.toml()).unwrap();
    // Bounded by the dump's own --timeout-s.
    let (ok, stdout, stderr) = cli::weir_core(&["global", "dump", "--timeout-s", "20", "--config"], &config).await;
    assert!(ok, "dump failed: {stderr}");
    let dumped: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("dump prints JSON ({e}): {stderr}"));
    let nodes = dumped["state"]["nodes"].as_object().unwrap_or_else(|| panic!("no nodes in {dumped}"));
    assert!(nodes.contains_key("core-1") && nodes.contains_key("core-2"), "{dumped}");
    assert_eq!(nodes["core-1"]["addresses"]["http"], format!("127.0.0.1:{}", spec1.http_port));
    assert!(nodes["core-1"]["disk_id"].as_str().is_some_and(|d| d.starts_with("disk-")), "{dumped}");
    assert_ne!(nodes["core-1"]["disk_id"], nodes["core-2"]["disk_id"], "each data directory has its own id");
    core1.stop().await;
    core2.stop().await;
}
