//! One configured plugin at run time: its compiled component (swapped on hot
//! reload), a pool of configured instances reused across batches, and the
//! batch call with its deadline, memory cap and failure handling. It must
//! never lose an event nor let a failing instance be reused: a trap, deadline
//! or memory failure drops the instance and marks every event of the batch.

use crate::bindings::{ParseOutcome, Parser, ParserPre, RawEvent, WitPluginInfo};
use crate::cache;
use crate::config::{Limits, ResolvedPlugin};
use crate::error::Error;
use crate::event::{ErrorKind, Event};
use crate::sandbox::{self, HostState};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};
use wasmtime::component::Linker;
use wasmtime::{Engine, Store, Trap};

/// What a plugin says about itself (`describe`) plus what the host knows.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInfo {
    /// The configured name (`[parsers.plugins.NAME]`).
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
    pub cache_dir: Option<PathBuf>,
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
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| Error::Config(format!("cannot link WASI: {e:#}")))?;
        Ok(Runtime {
            engine,
            linker,
            cache_dir,
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

/// What was last seen of the plugin file.
struct FileState {
    modified: Option<SystemTime>,
    len: u64,
    checked_at: Instant,
}

pub(crate) struct Plugin {
    name: String,
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
        let component = cache::compile(&rt.engine, rt.cache_dir.as_deref(), &p.name, bytes, &hash)
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
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .info
            .clone()
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
            discovered: false,
        };
        match Self::compile(rt, &resolved, &bytes, current.generation + 1) {
            Ok(loaded) => {
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
    pub(crate) fn parse(&self, rt: &Runtime, batch: Vec<RawEvent>) -> Vec<Event> {
        if batch.is_empty() {
            return Vec::new();
        }
        self.reload_if_changed(rt);
        let loaded = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let pooled = {
            let mut idle = lock(&self.idle);
            idle.retain(|i| i.generation == loaded.generation);
            idle.pop()
        };
        let mut instance = match pooled.map_or_else(|| self.instantiate(rt, &loaded), Ok) {
            Ok(i) => i,
            Err(reason) => {
                tracing::warn!(plugin = %self.name, error = %reason, events = batch.len(), "cannot start plugin instance");
                return self.fail_all(
                    batch,
                    ErrorKind::PluginUnavailable,
                    &format!("could not start: {reason}"),
                );
            }
        };
        instance.store.data_mut().memory.refused = None;
        instance
            .store
            .set_epoch_deadline(sandbox::deadline_ticks(self.limits.batch_deadline_ms));
        let started = Instant::now();
        let result = instance.parser.call_parse(&mut instance.store, &batch);
        let stderr = instance.store.data().stderr.take();
        match result {
            Ok(outcomes) if outcomes.len() == batch.len() => {
                let events = self.collect(batch, outcomes);
                let mut idle = lock(&self.idle);
                if idle.len() < rt.max_idle_instances {
                    idle.push(instance);
                }
                events
            }
            Ok(outcomes) => {
                let msg = format!(
                    "returned {} outcomes for {} events; the contract is one per event",
                    outcomes.len(),
                    batch.len()
                );
                tracing::warn!(plugin = %self.name, error = %msg, "plugin broke the contract; replacing its instance");
                self.fail_all(batch, ErrorKind::ContractViolation, &msg)
            }
            Err(err) => {
                let (kind, mut msg) =
                    classify(&err, &instance.store, self.limits.batch_deadline_ms);
                if !stderr.is_empty() {
                    msg.push_str(&format!("; plugin stderr: {}", last_chars(&stderr, 400)));
                }
                tracing::warn!(
                    plugin = %self.name, kind = kind.code(), error = %msg, events = batch.len(),
                    ms = started.elapsed().as_millis() as u64, "plugin failed a batch; replacing its instance"
                );
                self.fail_all(batch, kind, &msg)
            }
        }
    }

    fn collect(&self, batch: Vec<RawEvent>, outcomes: Vec<ParseOutcome>) -> Vec<Event> {
        let mut events = Vec::with_capacity(batch.len());
        let cap = usize::try_from(self.limits.max_event_output_bytes).unwrap_or(usize::MAX);
        for (mut input, outcome) in batch.into_iter().zip(outcomes) {
            match outcome {
                ParseOutcome::Ok(parsed) => {
                    let n = parsed.len();
                    for (i, p) in parsed.into_iter().enumerate() {
                        let size = p.raw.as_ref().map_or(0, String::len)
                            + p.fields
                                .iter()
                                .map(|f| f.name.len() + f.value.size())
                                .sum::<usize>();
                        if size > cap {
                            let msg = format!(
                                "produced an event of {size} bytes, over max_event_output_bytes = {cap}"
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
                ParseOutcome::Error(msg) => events.push(Event::failed(
                    input.raw,
                    &self.name,
                    ErrorKind::ParseFailed,
                    &msg,
                )),
            }
        }
        events
    }

    fn fail_all(&self, batch: Vec<RawEvent>, kind: ErrorKind, msg: &str) -> Vec<Event> {
        batch
            .into_iter()
            .map(|e| Event::failed(e.raw, &self.name, kind, msg))
            .collect()
    }
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
