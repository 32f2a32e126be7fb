//! The Global log: this node's [`weir_global::State`], fed by the single-partition Global
//! topic (its Kafka side is `kafka::global_topic`).
//!
//! Owns: the applier that applies every record in offset order to this node's
//! [`State`], the local snapshot file (read at start, written every N records or T
//! seconds and at shutdown), the catch-up readiness, and [`GlobalLog::submit`]: produce a
//! command, learn its offset from the delivery report, wait until it is applied here and
//! answer the outcome recorded for it.
//!
//! Must never: decide anything itself (every decision is [`State::apply`]'s, identical on
//! every node), commit consumer group offsets (where to resume is the snapshot's
//! offset + 1, or 0), skip a record it cannot apply (an unknown version stops applying),
//! or write a snapshot of a state it did not apply from this topic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use weir_global::{ApplyError, Command, Outcome, Snapshot, SnapshotError, State, Topics};

use crate::config::{CoreConfig, GlobalConfig, KafkaConfig};
use crate::kafka::ClientError;
use crate::kafka::global_topic::{self, GlobalProducer, GlobalReader, SendError};
use crate::store::DataDir;

/// Outcomes remembered for waiters of [`GlobalLog::submit`], newest offsets kept.
const OUTCOMES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum GlobalError {
    #[error("cannot create the Global {what}: {source}")]
    Setup { what: &'static str, source: ClientError },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    /// Kafka refused the command for good (too large, not authorised, ...).
    #[error("kafka refused Global command {id} ({code}): {reason}")]
    Refused { id: String, code: String, reason: String },
    /// Kafka did not acknowledge the command in time or failed transiently; a retry with
    /// the same command id is safe (a second copy is rejected as a duplicate).
    #[error("kafka did not acknowledge Global command {id}: {reason}")]
    Unavailable { id: String, reason: String },
    #[error("Global command {id} is at offset {offset} but was not applied here within {timeout_ms} ms ({progress})")]
    NotApplied { id: String, offset: u64, timeout_ms: u64, progress: String },
    #[error("the outcome of Global command {id} at offset {offset} is no longer remembered ({OUTCOMES} later records were applied first)")]
    OutcomeForgotten { id: String, offset: u64 },
    #[error("cannot read the Global topic {topic}: {source}")]
    Read { topic: String, source: ClientError },
    #[error("Global topic {topic}: applied {applied} of {target} records within {timeout_ms} ms")]
    CatchUpTimeout { topic: String, applied: u64, target: u64, timeout_ms: u64 },
    #[error("Global stopped applying the topic {topic}: {source}")]
    Stopped { topic: String, source: ApplyError },
}

/// Where the applier is.
#[derive(Debug, Clone)]
enum Progress {
    /// The topic is not verified yet (the reason).
    Verifying(String),
    /// Applying up to the high watermark as of start.
    CatchingUp { target: u64 },
    CaughtUp,
    /// A record this node cannot apply (the reason): nothing after it is applied.
    Stopped(String),
}

struct Shared {
    state: RwLock<State>,
    /// The last applied offset, for waiters.
    applied: watch::Sender<Option<u64>>,
    outcomes: Mutex<BTreeMap<u64, Outcome>>,
    progress: Mutex<Progress>,
    /// Whether a command this process wrote was applied: everything an earlier run of
    /// this node wrote is applied then too (it is earlier in the log).
    own_applied: AtomicBool,
    /// The cluster and topics Kafka answered at start, once it did.
    described: OnceLock<Topics>,
    /// Why the snapshot's topics are not Kafka's (this node must stop), if they are not.
    topics_mismatch: OnceLock<String>,
}

/// This node's view of Global, and the way to change it.
pub struct GlobalLog {
    node_id: String,
    producer: GlobalProducer,
    shared: Arc<Shared>,
    submit_timeout: Duration,
    snapshot_path: PathBuf,
}

impl GlobalLog {
    /// Loads the snapshot (a damaged one is logged and ignored: the node rebuilds from
    /// offset 0) and creates the producer. Nothing is consumed before [`GlobalLog::run`].
    pub fn open(config: &CoreConfig) -> Result<Arc<GlobalLog>, GlobalError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| GlobalError::DataDir { path: config.data_dir.clone(), source })?;
        let snapshot_path = DataDir::new(&config.data_dir).snapshot_path();
        let state = load_snapshot(&snapshot_path);
        let submit_timeout = Duration::from_millis(config.global.submit_timeout_ms);
        let producer = GlobalProducer::new(&config.kafka, submit_timeout).map_err(|source| GlobalError::Setup { what: "producer", source })?;
        let applied = state.applied_offset();
        Ok(Arc::new(GlobalLog {
            node_id: config.node_id.clone(),
            producer,
            shared: Arc::new(Shared {
                state: RwLock::new(state),
                applied: watch::Sender::new(applied),
                outcomes: Mutex::new(BTreeMap::new()),
                progress: Mutex::new(Progress::Verifying("the global topic is not verified yet".into())),
                own_applied: AtomicBool::new(false),
                described: OnceLock::new(),
                topics_mismatch: OnceLock::new(),
            }),
            submit_timeout,
            snapshot_path,
        }))
    }

    /// A copy of the state as applied so far.
    pub fn state(&self) -> State {
        self.shared.state.read().expect("lock").clone()
    }

    /// Reads the state as applied so far without copying it.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.shared.state.read().expect("lock"))
    }

    pub fn snapshot_path(&self) -> &Path {
        &self.snapshot_path
    }

    /// Why this node's Global is not usable yet: the topic is not verified, it has not
    /// caught up to the high watermark seen at start, or it stopped applying.
    pub fn not_ready(&self) -> Option<String> {
        let mut progress = self.shared.progress.lock().expect("lock");
        match &*progress {
            Progress::Verifying(reason) => Some(format!("global topic not ready: {reason}")),
            Progress::CatchingUp { target } => {
                let applied = self.read(State::next_offset);
                if applied >= *target {
                    *progress = Progress::CaughtUp;
                    None
                } else {
                    Some(format!("global catching up: applied {applied} of {target}"))
                }
            }
            Progress::CaughtUp => None,
            Progress::Stopped(reason) => Some(format!("global stopped applying: {reason}")),
        }
    }

    /// The Kafka cluster and topics as Kafka described them at start (`None` before).
    pub fn described_topics(&self) -> Option<Topics> {
        self.shared.described.get().cloned()
    }

    /// Why this node's snapshot describes other topics than Kafka has (it then applies
    /// nothing and must stop), if so.
    pub fn topics_mismatch(&self) -> Option<String> {
        self.shared.topics_mismatch.get().cloned()
    }

    /// Whether a command [`submit`](Self::submit)ted by this process has been applied here,
    /// so that this node's state includes every command an earlier run of it wrote (a
    /// registration whose answer a crash lost): before that, start-up cleanup cannot tell
    /// an unregistered file from one whose registration is about to apply.
    pub fn own_command_applied(&self) -> bool {
        self.shared.own_applied.load(Ordering::Acquire)
    }

    /// Writes `command` to the topic and returns its offset and the outcome this node
    /// applied for it, within `global.submit_timeout_ms`.
    pub async fn submit(&self, command: &Command) -> Result<(u64, Outcome), GlobalError> {
        let deadline = tokio::time::Instant::now() + self.submit_timeout;
        let payload = command.encode();
        let offset = self.producer.send(&command.id, &payload).await.map_err(|error| match error {
            SendError::Refused { code, reason } => GlobalError::Refused { id: command.id.clone(), code, reason },
            SendError::Unavailable(reason) => GlobalError::Unavailable { id: command.id.clone(), reason },
        })?;
        let mut applied = self.shared.applied.subscribe();
        let waited = tokio::time::timeout_at(deadline, applied.wait_for(|a| a.is_some_and(|a| a >= offset))).await;
        if !matches!(waited, Ok(Ok(_))) {
            let progress = self.not_ready().unwrap_or_else(|| format!("applied up to {:?}", self.read(State::applied_offset)));
            return Err(GlobalError::NotApplied {
                id: command.id.clone(),
                offset,
                timeout_ms: self.submit_timeout.as_millis() as u64,
                progress,
            });
        }
        self.shared.own_applied.store(true, Ordering::Release);
        let outcome = self.shared.outcomes.lock().expect("lock").get(&offset).cloned();
        tracing::debug!(node_id = %self.node_id, id = %command.id, offset, outcome = ?outcome, "global command submitted");
        outcome.map(|o| (offset, o)).ok_or_else(|| GlobalError::OutcomeForgotten { id: command.id.clone(), offset })
    }

    /// Verifies the topic (retrying until it is fine or `shutdown`), then applies its
    /// records until `shutdown`, writing snapshots on the way and a last one at the end.
    pub async fn run(self: Arc<Self>, kafka: KafkaConfig, global: GlobalConfig, shutdown: CancellationToken) {
        let verified = global_topic::verify_until_ready(&kafka, &shutdown, |reason| {
            *self.shared.progress.lock().expect("lock") = Progress::Verifying(reason.clone());
            reason
        })
        .await;
        if !verified {
            return;
        }
        // Before applying anything: a snapshot of other topics (recreated since) must not
        // be continued with the new topic's records, nor rebuilt as if nothing happened.
        let progress =
            |reason| *self.shared.progress.lock().expect("lock") = Progress::Verifying(reason);
        let Some(now) = super::topics::describe_until_ready(&kafka, &shutdown, progress).await
        else {
            return;
        };
        let bound = self.read(|s| s.topics().cloned());
        if let Some(reason) = bound.and_then(|bound| super::topics::mismatch(&bound, &now)) {
            tracing::error!(%reason, "this node stops");
            let _ = self.shared.topics_mismatch.set(reason.clone());
            self.stop(reason);
            return;
        }
        let _ = self.shared.described.set(now);
        let node_id = self.node_id.clone();
        let applier = tokio::task::spawn_blocking(move || self.apply_until(&kafka, &global, &node_id, &shutdown));
        if let Err(join) = applier.await {
            tracing::error!(error = %join, "global applier panicked");
        }
    }

    /// The applier's thread: blocking consumer, one record at a time.
    fn apply_until(&self, kafka: &KafkaConfig, global: &GlobalConfig, node_id: &str, shutdown: &CancellationToken) {
        let mut warned = String::new();
        let topic = kafka.global_topic.as_str();
        let (reader, target) = loop {
            match GlobalReader::open(kafka, node_id).and_then(|r| r.high_watermark().map(|hw| (r, hw))) {
                Ok(found) => break found,
                Err(error) => {
                    let reason = error.to_string();
                    if reason != warned {
                        tracing::warn!(%topic, %reason, "cannot read the global topic yet, retrying");
                    }
                    *self.shared.progress.lock().expect("lock") = Progress::Verifying(reason.clone());
                    warned = reason;
                }
            }
            if wait_or_shutdown(shutdown, Duration::from_secs(1)) {
                return;
            }
        };
        {
            let mut state = self.shared.state.write().expect("lock");
            if state.next_offset() > target {
                // The topic is shorter than the snapshot says: it was recreated, and the
                // snapshot describes a log that no longer exists.
                tracing::error!(topic = %topic, snapshot_next = state.next_offset(), topic_end = target, "global snapshot is ahead of the topic, rebuilding from offset 0");
                *state = State::default();
                self.shared.applied.send_replace(None);
            }
        }
        let start = self.read(State::next_offset);
        tracing::info!(topic = %topic, from = start, target, "global applying");
        *self.shared.progress.lock().expect("lock") = Progress::CatchingUp { target };
        if let Err(error) = reader.assign(start) {
            self.stop(format!("cannot assign the global topic: {error}"));
            return;
        }
        let every_records = global.snapshot_every_records.max(1);
        let every = Duration::from_secs(global.snapshot_every_s.max(1));
        let (mut since_snapshot, mut last_snapshot) = (0u64, Instant::now());
        while !shutdown.is_cancelled() {
            match reader.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(error)) => {
                    let reason = error.to_string();
                    if reason != warned {
                        tracing::warn!(topic = %topic, %reason, "global consumer error");
                    }
                    warned = reason;
                }
                Some(Ok((offset, payload))) => {
                    let applied = apply(&self.shared.state, offset, &payload);
                    match applied {
                        Ok(Some(outcome)) => {
                            let mut outcomes = self.shared.outcomes.lock().expect("lock");
                            outcomes.insert(offset, outcome);
                            while outcomes.len() > OUTCOMES {
                                outcomes.pop_first();
                            }
                            drop(outcomes);
                            self.shared.applied.send_replace(Some(offset));
                            since_snapshot += 1;
                        }
                        Ok(None) => {}
                        Err(error) => {
                            tracing::error!(topic = %topic, offset, %error, "global record cannot be applied, this node stops applying");
                            self.stop(error.to_string());
                            break;
                        }
                    }
                }
            }
            if since_snapshot >= every_records || (since_snapshot > 0 && last_snapshot.elapsed() >= every) {
                self.write_snapshot();
                (since_snapshot, last_snapshot) = (0, Instant::now());
            }
        }
        // Commands this node submitted last (a heartbeat abandoned at shutdown) may be in
        // the topic but not applied yet: read to the end, briefly, so the snapshot has them.
        let stopped = matches!(*self.shared.progress.lock().expect("lock"), Progress::Stopped(_));
        if let (false, Ok(end)) = (stopped, reader.high_watermark()) {
            let deadline = Instant::now() + Duration::from_secs(3);
            while self.read(State::next_offset) < end && Instant::now() < deadline {
                let Some(Ok((offset, payload))) = reader.poll(Duration::from_millis(100)) else { continue };
                match apply(&self.shared.state, offset, &payload) {
                    Ok(Some(_)) => {
                        self.shared.applied.send_replace(Some(offset));
                        since_snapshot += 1;
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
        }
        if since_snapshot > 0 {
            self.write_snapshot();
        }
    }

    fn stop(&self, reason: String) {
        *self.shared.progress.lock().expect("lock") = Progress::Stopped(reason);
    }

    fn write_snapshot(&self) {
        let snapshot = self.read(Snapshot::of);
        match snapshot.write(&self.snapshot_path) {
            Ok(()) => tracing::debug!(path = %self.snapshot_path.display(), applied_offset = ?snapshot.applied_offset, "global snapshot written"),
            // Only an optimisation: the node can always rebuild from the topic.
            Err(error) => tracing::warn!(path = %self.snapshot_path.display(), %error, "cannot write the global snapshot"),
        }
    }
}

/// Writes one command from a tool process (an operator's `weir-core global ...`) beside
/// the node of `config`: reads Global from the node's snapshot into a staging directory of
/// its own (never over the node's), waits until caught up (within `timeout`), submits, and
/// returns the outcome.
pub async fn submit_as_tool(
    config: &CoreConfig,
    command: &Command,
    timeout: Duration,
) -> Result<Outcome, ToolError> {
    let data_dir = DataDir::new(&config.data_dir);
    let staging =
        crate::store::staging::Staging::create(&data_dir, &format!("tool-{}", std::process::id()))
            .map_err(ToolError::Staging)?;
    let mut own = config.clone();
    own.node_id = format!("{}-tool", config.node_id);
    own.data_dir = staging.path().to_owned();
    let _ = std::fs::copy(
        data_dir.snapshot_path(),
        DataDir::new(&own.data_dir).snapshot_path(),
    );
    let global = GlobalLog::open(&own)?;
    let shutdown = CancellationToken::new();
    let applier = tokio::spawn(global.clone().run(
        own.kafka.clone(),
        own.global.clone(),
        shutdown.clone(),
    ));
    let deadline = tokio::time::Instant::now() + timeout;
    let result = async {
        while let Some(reason) = global.not_ready() {
            if tokio::time::Instant::now() > deadline {
                return Err(ToolError::NotReady(reason));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(global.submit(command).await?.1)
    }
    .await;
    shutdown.cancel();
    let _ = applier.await;
    result
}

/// Why a tool's command was not written.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Global(#[from] GlobalError),
    #[error("Global did not catch up: {0}")]
    NotReady(String),
    #[error("cannot make a staging directory for the tool: {0}")]
    Staging(std::io::Error),
}

/// Reads the Global topic from the snapshot in `config.data_dir` (or offset 0) to its end
/// as of now, and returns the state. Writes nothing. Blocking.
pub fn dump(config: &CoreConfig, timeout: Duration) -> Result<Snapshot, GlobalError> {
    let topic = config.kafka.global_topic.clone();
    let state = RwLock::new(load_snapshot(&DataDir::new(&config.data_dir).snapshot_path()));
    let read_error = |source| GlobalError::Read { topic: topic.clone(), source };
    let reader = GlobalReader::open(&config.kafka, &config.node_id).map_err(|source| GlobalError::Setup { what: "consumer", source })?;
    let target = reader.high_watermark().map_err(read_error)?;
    if state.read().expect("lock").next_offset() > target {
        tracing::error!(%topic, "global snapshot is ahead of the topic, rebuilding from offset 0");
        *state.write().expect("lock") = State::default();
    }
    let start = state.read().expect("lock").next_offset();
    if start < target {
        reader.assign(start).map_err(read_error)?;
    }
    let deadline = Instant::now() + timeout;
    loop {
        let applied = state.read().expect("lock").next_offset();
        if applied >= target {
            break;
        }
        if Instant::now() > deadline {
            return Err(GlobalError::CatchUpTimeout { topic, applied, target, timeout_ms: timeout.as_millis() as u64 });
        }
        match reader.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(error)) => tracing::warn!(%topic, %error, "global consumer error"),
            Some(Ok((offset, payload))) => {
                apply(&state, offset, &payload)
                    .map_err(|source| GlobalError::Stopped { topic: topic.clone(), source })?;
            }
        }
    }
    let state = state.into_inner().expect("lock");
    Ok(Snapshot::of(&state))
}

/// Applies one record. `Ok(None)`: an offset already applied (skipped, never applied twice).
fn apply(state: &RwLock<State>, offset: u64, payload: &[u8]) -> Result<Option<Outcome>, ApplyError> {
    let mut state = state.write().expect("lock");
    match state.apply_record(offset, payload) {
        Ok(outcome) => {
            if let Outcome::Rejected { reason } = &outcome {
                tracing::debug!(offset, %reason, "global command rejected");
            }
            Ok(Some(outcome))
        }
        Err(ApplyError::NotAfter { offset, applied }) => {
            tracing::warn!(offset, applied, "global record already applied, skipped");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

fn load_snapshot(path: &Path) -> State {
    match Snapshot::read(path) {
        Ok(snapshot) => {
            tracing::info!(path = %path.display(), applied_offset = ?snapshot.applied_offset, "global snapshot loaded");
            snapshot.state
        }
        Err(SnapshotError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(path = %path.display(), "no global snapshot, building global from offset 0");
            State::default()
        }
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "global snapshot unusable, rebuilding from offset 0");
            State::default()
        }
    }
}

/// Sleeps up to `delay`; true if `shutdown` came.
fn wait_or_shutdown(shutdown: &CancellationToken, delay: Duration) -> bool {
    let deadline = Instant::now() + delay;
    while Instant::now() < deadline {
        if shutdown.is_cancelled() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    shutdown.is_cancelled()
}
