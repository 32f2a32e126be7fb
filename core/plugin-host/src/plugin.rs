//! One configured plugin at run time: its compiled component (swapped on hot
//! reload), a pool of configured instances reused across batches, and the
//! batch call with its deadline, memory cap and failure handling. It must
//! never lose an event nor let a failing instance be reused: a trap, deadline
//! or memory failure drops the instance, and so does output that breaks the
//! contract's layout (see [`crate::decode`]); the failed events are then
//! re-run in parts on fresh instances until the failure is pinned on the
//! events that fail alone (see [`crate::isolate`]). A batch that parses costs
//! one call and no copy beyond it.

use crate::bindings::{BatchContext, Parser, ParserPre, WitPluginInfo};
use crate::cache::{self, Cache};
use crate::config::{Limits, ResolvedPlugin};
use crate::decode::{self, Malformed, Outcome};
use crate::error::Error;
use crate::event::{ErrorKind, Event, RawEvent};
use crate::isolate::{Attempt, Failure, Isolation};
use crate::sandbox::{self, HostState};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};
use wasmtime::component::Linker;
use wasmtime::{Engine, Store, Trap};

/// What a plugin says about itself (`describe`) plus what the host knows.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInfo {
    /// The parser's name in the registry: `[parsers.plugins.NAME]`, or for a file
    /// found in `plugin_dir` the name it declares.
    pub name: String,
    /// The plugin's own name and version.
    pub plugin_name: String,
    pub version: String,
    pub description: String,
    /// `(name, description, required, default)` of each setting it takes.
    pub settings: Vec<(String, String, bool, Option<String>)>,
    /// blake3 of the component file, hex.
    pub hash: String,
    pub path: PathBuf,
}

/// Shared by every plugin of a registry.
pub(crate) struct Runtime {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    pub cache: Option<Cache>,
    pub max_idle_instances: usize,
    pub reload_check: Duration,
}

impl Runtime {
    pub(crate) fn new(
        engine: Engine,
        cache_dir: Option<PathBuf>,
        max_idle: usize,
        reload_check: Duration,
    ) -> Result<Self, Error> {
        let mut linker = Linker::new(&engine);
        sandbox::link_wasi(&mut linker)
            .map_err(|e| Error::Config(format!("cannot link WASI: {e:#}")))?;
        let cache = match &cache_dir {
            Some(dir) => Cache::open(dir)?,
            None => None,
        };
        Ok(Runtime {
            engine,
            linker,
            cache,
            max_idle_instances: max_idle.max(1),
            reload_check,
        })
    }
}

/// One version of the plugin file, compiled and checked.
struct Loaded {
    pre: ParserPre<HostState>,
    hash: blake3::Hash,
    generation: u64,
    info: PluginInfo,
}

/// A configured instance.
struct Instance {
    store: Store<HostState>,
    parser: Parser,
    generation: u64,
}

/// What one `parse` call did.
enum Call {
    /// One outcome per input.
    Parsed(Vec<Outcome>),
    /// The call failed as a whole (trap, deadline, memory cap, output of the
    /// wrong shape); the instance was dropped.
    Failed(Failure),
    /// The outcomes of the first `at` inputs are good; the next one broke the
    /// output layout. The instance was dropped.
    BrokeAt {
        outcomes: Vec<Outcome>,
        at: usize,
        failure: Failure,
    },
    /// No instance could be started.
    Unavailable(Failure),
}

/// What parsing one batch took: calls into the plugin and what failure
/// isolation did (see `ARCHITECTURE.md`, plugin host).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseStats {
    /// `parse` calls into the plugin, re-runs included: one per run of
    /// events sharing a batch context when nothing fails.
    pub calls: u32,
    /// Calls made to isolate failures (part of `calls`).
    pub reruns: u32,
    /// Events that failed in a call of their own: their `@error_msg` is
    /// their own cause.
    pub isolated_failures: u32,
    /// Events marked without being isolated: the isolation budget ran out,
    /// the plugin was taken to fail every event, isolation is off
    /// (`isolation_max_reruns = 0`), or no instance could be started.
    pub unresolved: u32,
}

/// What was last seen of the plugin file.
struct FileState {
    modified: Option<SystemTime>,
    len: u64,
    checked_at: Instant,
}

pub(crate) struct Plugin {
    name: String,
    /// Found in `plugin_dir`: named by what it declares (see [`Plugin::rename`]).
    discovered: bool,
    path: PathBuf,
    settings: Vec<(String, String)>,
    limits: Limits,
    current: RwLock<Arc<Loaded>>,
    file: Mutex<FileState>,
    idle: Mutex<Vec<Instance>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn file_state(path: &Path) -> Option<(Option<SystemTime>, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().ok(), m.len()))
}

impl Plugin {
    /// Loads, checks and configures the plugin; fails on anything wrong.
    pub(crate) fn load(rt: &Runtime, p: ResolvedPlugin) -> Result<Self, Error> {
        let (modified, len) = file_state(&p.path).unwrap_or((None, 0));
        let bytes = std::fs::read(&p.path).map_err(|source| Error::ReadPlugin {
            plugin: p.name.clone(),
            path: p.path.clone(),
            source,
        })?;
        let plugin = Plugin {
            current: RwLock::new(Arc::new(Self::compile(rt, &p, &bytes, 0)?)),
            file: Mutex::new(FileState {
                modified,
                len,
                checked_at: Instant::now(),
            }),
            idle: Mutex::new(Vec::new()),
            discovered: p.discovered,
            name: p.name,
            path: p.path,
            settings: p.settings,
            limits: p.limits,
        };
        Ok(plugin)
    }

    /// Compiles one version and proves it works: instantiate, describe,
    /// check the setting names, configure.
    fn compile(
        rt: &Runtime,
        p: &ResolvedPlugin,
        bytes: &[u8],
        generation: u64,
    ) -> Result<Loaded, Error> {
        let invalid = |reason: String| Error::InvalidPlugin {
            plugin: p.name.clone(),
            path: p.path.clone(),
            reason,
        };
        let hash = blake3::hash(bytes);
        let component = cache::compile(&rt.engine, rt.cache.as_ref(), &p.name, bytes, &hash)
            .map_err(invalid)?;
        let pre = rt
            .linker
            .instantiate_pre(&component)
            .map_err(|e| invalid(format!("{e:#}")))?;
        let pre = ParserPre::new(pre).map_err(|e| invalid(format!("{e:#}")))?;
        let mut store = sandbox::new_store(
            &rt.engine,
            p.limits.memory_limit_bytes,
            p.limits.allow_clock,
        );
        store.set_epoch_deadline(sandbox::deadline_ticks(init_deadline_ms(&p.limits)));
        let instantiate = |reason: String| Error::Instantiate {
            plugin: p.name.clone(),
            reason,
        };
        let parser = pre
            .instantiate(&mut store)
            .map_err(|e| instantiate(failure_text(&e, &store, init_deadline_ms(&p.limits))))?;
        let info: WitPluginInfo = parser
            .call_describe(&mut store)
            .map_err(|e| instantiate(failure_text(&e, &store, init_deadline_ms(&p.limits))))?;
        for (setting, _) in &p.settings {
            if !info.settings.iter().any(|s| &s.name == setting) {
                let known: Vec<&str> = info.settings.iter().map(|s| s.name.as_str()).collect();
                return Err(Error::UnknownSetting {
                    plugin: p.name.clone(),
                    setting: setting.clone(),
                    known: if known.is_empty() {
                        "no settings".into()
                    } else {
                        known.join(", ")
                    },
                });
            }
        }
        parser
            .call_configure(&mut store, &p.settings)
            .map_err(|e| instantiate(failure_text(&e, &store, init_deadline_ms(&p.limits))))?
            .map_err(|reason| Error::Configure {
                plugin: p.name.clone(),
                reason,
            })?;
        let info = PluginInfo {
            name: p.name.clone(),
            plugin_name: info.name,
            version: info.version,
            description: info.description,
            settings: info
                .settings
                .into_iter()
                .map(|s| (s.name, s.description, s.required, s.default_value))
                .collect(),
            hash: hash.to_hex().to_string(),
            path: p.path.clone(),
        };
        tracing::info!(plugin = %p.name, version = %info.version, hash = %&info.hash[..16], "plugin ready");
        Ok(Loaded {
            pre,
            hash,
            generation,
            info,
        })
    }

    pub(crate) fn info(&self) -> PluginInfo {
        let mut info = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .info
            .clone();
        info.name.clone_from(&self.name);
        info
    }

    /// Names a plugin found in `plugin_dir` by what it declares (it was loaded
    /// under its file stem): its events' `@parser`, its metrics and its logs use it.
    pub(crate) fn rename(&mut self, name: &str) {
        self.name = name.to_string();
    }

    /// Picks up a changed plugin file; a broken new version keeps the old one.
    fn reload_if_changed(&self, rt: &Runtime) {
        let mut file = lock(&self.file);
        if file.checked_at.elapsed() < rt.reload_check {
            return;
        }
        file.checked_at = Instant::now();
        let Some((modified, len)) = file_state(&self.path) else {
            return;
        };
        if modified == file.modified && len == file.len {
            return;
        }
        file.modified = modified;
        file.len = len;
        let Ok(bytes) = std::fs::read(&self.path) else {
            return;
        };
        let current = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if blake3::hash(&bytes) == current.hash {
            return;
        }
        let resolved = ResolvedPlugin {
            name: self.name.clone(),
            path: self.path.clone(),
            settings: self.settings.clone(),
            limits: self.limits,
            discovered: self.discovered,
        };
        match Self::compile(rt, &resolved, &bytes, current.generation + 1) {
            Ok(loaded) => {
                if self.discovered && loaded.info.plugin_name != self.name {
                    tracing::warn!(
                        plugin = %self.name, declared = %loaded.info.plugin_name,
                        "reloaded plugin from plugin_dir declares another name; it keeps its name until the core restarts"
                    );
                }
                tracing::info!(plugin = %self.name, generation = loaded.generation, "plugin reloaded");
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
                lock(&self.idle).clear();
            }
            Err(e) => {
                tracing::warn!(plugin = %self.name, error = %e, "changed plugin file is not usable; keeping the previous version")
            }
        }
    }

    fn instantiate(&self, rt: &Runtime, loaded: &Loaded) -> Result<Instance, String> {
        let mut store = sandbox::new_store(
            &rt.engine,
            self.limits.memory_limit_bytes,
            self.limits.allow_clock,
        );
        store.set_epoch_deadline(sandbox::deadline_ticks(init_deadline_ms(&self.limits)));
        let parser = loaded
            .pre
            .instantiate(&mut store)
            .map_err(|e| failure_text(&e, &store, init_deadline_ms(&self.limits)))?;
        parser
            .call_configure(&mut store, &self.settings)
            .map_err(|e| failure_text(&e, &store, init_deadline_ms(&self.limits)))?
            .map_err(|e| format!("configure failed: {e}"))?;
        Ok(Instance {
            store,
            parser,
            generation: loaded.generation,
        })
    }

    /// Parses a batch; always returns at least one event per input.
    pub(crate) fn parse(&self, rt: &Runtime, batch: Vec<RawEvent>) -> (Vec<Event>, ParseStats) {
        let mut stats = ParseStats::default();
        if batch.is_empty() {
            return (Vec::new(), stats);
        }
        self.reload_if_changed(rt);
        let loaded = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut events = Vec::with_capacity(batch.len());
        for run in runs(batch) {
            self.parse_run(rt, &loaded, run, &mut events, &mut stats);
        }
        (events, stats)
    }

    /// One `parse` call: events sharing a repository, tags and ingest time.
    /// When it fails as a whole, [`crate::isolate`] re-runs parts of it to
    /// pin the failure on the events that fail alone.
    fn parse_run(
        &self,
        rt: &Runtime,
        loaded: &Loaded,
        mut run: Vec<RawEvent>,
        events: &mut Vec<Event>,
        stats: &mut ParseStats,
    ) {
        stats.calls += 1;
        let started = Instant::now();
        // The events of `run` that failed, and whether the first of them
        // broke the output layout (the events before it are in `events`).
        let (failure, broke_alone) = match self.call(rt, loaded, true, &run) {
            Call::Parsed(outcomes) => return self.collect(run.into_iter(), outcomes, events),
            Call::Unavailable(failure) => {
                tracing::warn!(plugin = %self.name, error = %failure.msg, events = run.len(), "cannot start plugin instance");
                stats.unresolved += u32::try_from(run.len()).unwrap_or(u32::MAX);
                return self.fail_all(run, failure.kind, &failure.msg, events);
            }
            Call::Failed(failure) => (failure, None),
            Call::BrokeAt {
                outcomes,
                at,
                failure,
            } => {
                let alone = run.len() == 1;
                let rest = run.split_off(at);
                self.collect(run.into_iter(), outcomes, events);
                run = rest;
                (failure, Some(alone))
            }
        };
        let n_events = run.len();
        let first_failure = failure.clone();
        let attempt = |mut batch: Vec<RawEvent>| -> Attempt {
            match self.call(rt, loaded, false, &batch) {
                Call::Parsed(outcomes) => {
                    let mut parsed = Vec::with_capacity(batch.len());
                    self.collect(batch.into_iter(), outcomes, &mut parsed);
                    Attempt::Parsed(parsed)
                }
                Call::Failed(failure) => Attempt::Failed(batch, failure),
                Call::BrokeAt {
                    outcomes,
                    at,
                    failure,
                } => {
                    let rest = batch.split_off(at);
                    let mut parsed = Vec::with_capacity(at);
                    self.collect(batch.into_iter(), outcomes, &mut parsed);
                    Attempt::BrokeAt {
                        parsed,
                        at,
                        rest,
                        failure,
                    }
                }
                Call::Unavailable(failure) => Attempt::Unavailable(batch, failure),
            }
        };
        let mut isolation = Isolation::new(&self.name, self.limits.isolation_max_reruns, attempt);
        match broke_alone {
            None => isolation.failed_batch(run, failure),
            Some(alone) => isolation.broke_at(0, run, failure, alone),
        }
        let counts = isolation.finish(events);
        stats.reruns += counts.reruns;
        stats.calls += counts.reruns;
        stats.isolated_failures += counts.isolated;
        stats.unresolved += counts.unresolved;
        metrics::counter!("weir_plugin_isolation_reruns_total", "parser" => self.name.clone())
            .increment(u64::from(counts.reruns));
        metrics::counter!("weir_plugin_isolated_failures_total", "parser" => self.name.clone())
            .increment(u64::from(counts.isolated));
        metrics::counter!("weir_plugin_isolation_unresolved_total", "parser" => self.name.clone())
            .increment(u64::from(counts.unresolved));
        let ms = started.elapsed().as_millis() as u64;
        if counts.reruns == 0 {
            tracing::warn!(
                plugin = %self.name, kind = first_failure.kind.code(), error = %first_failure.msg, events = n_events, ms,
                "plugin failed a batch; replacing its instance"
            );
        } else {
            tracing::warn!(
                plugin = %self.name, kind = first_failure.kind.code(), error = %first_failure.msg, events = n_events,
                reruns = counts.reruns, isolated = counts.isolated, unresolved = counts.unresolved, ms,
                "plugin failed a batch; re-ran it in parts on fresh instances to isolate the failing events"
            );
        }
    }

    /// One `parse` call on `run`, on a pooled instance (`pooled`, put back
    /// when the call succeeds) or a fresh one (dropped after the call). A
    /// failed instance is never reused: after a trap its store is poisoned.
    fn call(&self, rt: &Runtime, loaded: &Loaded, pooled: bool, run: &[RawEvent]) -> Call {
        let from_pool = if pooled {
            let mut idle = lock(&self.idle);
            idle.retain(|i| i.generation == loaded.generation);
            idle.pop()
        } else {
            None
        };
        let mut instance = match from_pool.map_or_else(|| self.instantiate(rt, loaded), Ok) {
            Ok(i) => i,
            Err(reason) => {
                return Call::Unavailable(Failure {
                    kind: ErrorKind::PluginUnavailable,
                    msg: format!("could not start: {reason}"),
                });
            }
        };
        let context = BatchContext {
            repository: run[0].repository.clone(),
            tags: run[0].tags.clone(),
            ingest_time_ns: run[0].ingest_time_ns,
        };
        let mut raws = String::with_capacity(run.iter().map(|e| e.raw.len()).sum());
        let ends: Vec<u32> = run
            .iter()
            .map(|e| {
                raws.push_str(&e.raw);
                // `runs` keeps a call under 4 GiB of text.
                u32::try_from(raws.len()).unwrap_or(u32::MAX)
            })
            .collect();
        instance.store.data_mut().memory.refused = None;
        instance
            .store
            .set_epoch_deadline(sandbox::deadline_ticks(self.limits.batch_deadline_ms));
        let started = Instant::now();
        let result = instance
            .parser
            .call_parse(&mut instance.store, &context, &raws, &ends);
        drop(raws);
        let stderr = instance.store.data().stderr.take();
        let output = match result {
            Ok(output) => output,
            Err(err) => {
                let (kind, mut msg) =
                    classify(&err, &instance.store, self.limits.batch_deadline_ms);
                if !stderr.is_empty() {
                    msg.push_str(&format!("; plugin stderr: {}", last_chars(&stderr, 400)));
                }
                tracing::debug!(
                    plugin = %self.name, kind = kind.code(), error = %msg, events = run.len(),
                    ms = started.elapsed().as_millis() as u64, "plugin failed a call; dropping its instance"
                );
                return Call::Failed(Failure { kind, msg });
            }
        };
        let (outcomes, malformed) = decode::decode(&output.index, &output.text, run.len());
        match malformed {
            None => {
                if pooled {
                    let mut idle = lock(&self.idle);
                    if idle.len() < rt.max_idle_instances {
                        idle.push(instance);
                    }
                }
                Call::Parsed(outcomes)
            }
            Some(Malformed::Batch(msg)) => {
                tracing::debug!(plugin = %self.name, error = %msg, "plugin broke the contract; dropping its instance");
                Call::Failed(Failure {
                    kind: ErrorKind::ContractViolation,
                    msg,
                })
            }
            Some(Malformed::From { at, reason }) => {
                tracing::debug!(plugin = %self.name, error = %reason, "plugin broke the contract; dropping its instance");
                Call::BrokeAt {
                    outcomes,
                    at,
                    failure: Failure {
                        kind: ErrorKind::ContractViolation,
                        msg: reason,
                    },
                }
            }
        }
    }

    fn collect(
        &self,
        inputs: impl Iterator<Item = RawEvent>,
        outcomes: Vec<Outcome>,
        events: &mut Vec<Event>,
    ) {
        let cap = usize::try_from(self.limits.max_event_output_bytes).unwrap_or(usize::MAX);
        for (mut input, outcome) in inputs.zip(outcomes) {
            match outcome {
                Outcome::Ok(parsed) => {
                    let n = parsed.len();
                    for (i, p) in parsed.into_iter().enumerate() {
                        if p.size > cap {
                            let msg = format!(
                                "produced an event of {} bytes, over max_event_output_bytes = {cap}",
                                p.size
                            );
                            events.push(Event::failed(
                                input.raw.clone(),
                                &self.name,
                                ErrorKind::OutputTooLarge,
                                &msg,
                            ));
                            continue;
                        }
                        let raw = match p.raw {
                            Some(r) => r,
                            None if i + 1 == n => std::mem::take(&mut input.raw),
                            None => input.raw.clone(),
                        };
                        events.push(Event {
                            raw,
                            timestamp_ns: p.timestamp_ns,
                            fields: p.fields,
                        });
                    }
                }
                Outcome::Error(msg) => events.push(Event::failed(
                    input.raw,
                    &self.name,
                    ErrorKind::ParseFailed,
                    &msg,
                )),
            }
        }
    }

    fn fail_all(&self, batch: Vec<RawEvent>, kind: ErrorKind, msg: &str, events: &mut Vec<Event>) {
        events.extend(
            batch
                .into_iter()
                .map(|e| Event::failed(e.raw, &self.name, kind, msg)),
        );
    }
}

/// Text per `parse` call at most, so that offsets fit the contract's `u32`.
const MAX_RUN_BYTES: usize = 1 << 30;

/// Splits a batch into runs of consecutive events that share a repository,
/// tags and ingest time (the contract's `batch-context`), each under
/// [`MAX_RUN_BYTES`] of text unless one event alone is larger. The core's
/// batches are one run.
fn runs(batch: Vec<RawEvent>) -> Vec<Vec<RawEvent>> {
    let mut runs: Vec<Vec<RawEvent>> = Vec::new();
    let mut bytes = 0usize;
    for e in batch {
        match runs.last_mut() {
            Some(run)
                if run[0].repository == e.repository
                    && run[0].ingest_time_ns == e.ingest_time_ns
                    && run[0].tags == e.tags
                    && bytes.saturating_add(e.raw.len()) <= MAX_RUN_BYTES =>
            {
                bytes += e.raw.len();
                run.push(e);
            }
            _ => {
                bytes = e.raw.len();
                runs.push(vec![e]);
            }
        }
    }
    runs
}

/// Instantiation and `configure` get more time than a batch (language
/// runtimes start slowly), at least 5 s.
fn init_deadline_ms(limits: &Limits) -> u64 {
    limits.batch_deadline_ms.saturating_mul(10).max(5000)
}

fn classify(
    err: &wasmtime::Error,
    store: &Store<HostState>,
    deadline_ms: u64,
) -> (ErrorKind, String) {
    let state = store.data();
    if let Some(wanted) = state.memory.refused {
        return (
            ErrorKind::MemoryLimit,
            format!(
                "exceeded its memory cap: asked for {wanted} bytes, limit {} bytes ({err})",
                store.data().memory_cap()
            ),
        );
    }
    if let Some(blocked) = err.downcast_ref::<sandbox::WouldBlock>() {
        return (ErrorKind::Trap, format!("trapped: {blocked}"));
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => (
            ErrorKind::DeadlineExceeded,
            format!("ran past its batch deadline of {deadline_ms} ms"),
        ),
        Some(Trap::StackOverflow) => (
            ErrorKind::StackOverflow,
            "overflowed its stack (runaway recursion?)".to_string(),
        ),
        Some(trap) => (ErrorKind::Trap, format!("trapped: {trap}")),
        None => (ErrorKind::Trap, format!("failed: {err:#}")),
    }
}

fn failure_text(err: &wasmtime::Error, store: &Store<HostState>, deadline_ms: u64) -> String {
    let (_, msg) = classify(err, store, deadline_ms);
    let stderr = store.data().stderr.take();
    if stderr.is_empty() {
        msg
    } else {
        format!("{msg}; plugin stderr: {}", last_chars(&stderr, 400))
    }
}

fn last_chars(s: &str, n: usize) -> &str {
    let start = s
        .char_indices()
        .rev()
        .nth(n.saturating_sub(1))
        .map_or(0, |(i, _)| i);
    &s[start..]
}
