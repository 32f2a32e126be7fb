//! The sandbox around one plugin instance: the wasmtime engine and its epoch
//! ticker (deadlines), the memory cap, the WASI functions a plugin is linked
//! to, and a WASI context that grants nothing (no files, sockets, environment,
//! arguments or stdin; frozen clocks unless granted; stderr kept in a small
//! buffer for error messages). It must never hand a plugin a capability its
//! configuration did not grant, nor link a host function that can wait: time
//! spent inside the host is out of reach of the epoch deadline, so a plugin
//! waiting there would hang the core's parse call (see [`link_wasi`]).

use bytes::Bytes;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, StoreContextMut};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::bindings::sync::io::poll::HostPollable;
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

/// Granularity of deadlines.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Stderr bytes kept per batch for error messages.
const STDERR_TAIL_BYTES: usize = 4096;

/// Builds the engine every plugin runs on.
pub(crate) fn engine() -> Result<Engine, String> {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    Engine::new(&config).map_err(|e| format!("cannot create the wasmtime engine: {e:#}"))
}

/// The version of WASI 0.2 that wasmtime-wasi links. The waiting functions are
/// replaced under exactly this name (a component importing an older 0.2.x is
/// linked to it by semver); `tests/sandbox.rs` (`sleep`) fails if a wasmtime
/// upgrade moves it and the replacement stops applying.
const WASI_P2_VERSION: &str = "0.2.12";

/// A WASI call that would have waited inside the host, trapped instead.
#[derive(Debug, thiserror::Error)]
#[error(
    "waited in `{0}` on something that is not ready (sleep, timer or blocking poll); a plugin may not wait, so the host stopped it at once"
)]
pub(crate) struct WouldBlock(&'static str);

/// Links the WASI 0.2 interfaces that components built with Rust std or
/// componentize-py import (instantiation fails on a missing import), with the
/// two functions that can wait replaced: `wasi:io/poll.poll` and
/// `pollable.block` return at once when something is ready and trap
/// ([`WouldBlock`]) otherwise. Everything a plugin can wait on goes through
/// them (`std::thread::sleep` is `subscribe-duration` + `block`), and
/// wasmtime-wasi's versions wait in host code where the epoch deadline cannot
/// interrupt them, so a sleeping plugin would hang its caller for as long as it
/// asked. Clock subscriptions stay: they only make a pollable. The other
/// blocking calls (`blocking-read`, `blocking-write-and-flush`, ...) act on the
/// sandbox's streams only, which are always ready (empty stdin, discarded
/// stdout, [`StderrTail`]), and the context grants no file or socket.
pub(crate) fn link_wasi(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    let mut poll = linker.instance(&format!("wasi:io/poll@{WASI_P2_VERSION}"))?;
    poll.func_wrap(
        "poll",
        |mut store: StoreContextMut<'_, HostState>, (pollables,): (Vec<Resource<DynPollable>>,)| {
            let table = &mut store.data_mut().table;
            let mut ready = Vec::new();
            for (i, p) in pollables.iter().enumerate() {
                if is_ready(table, p)? {
                    ready.push(u32::try_from(i)?);
                }
            }
            if ready.is_empty() {
                return Err(WouldBlock("wasi:io/poll.poll").into());
            }
            Ok((ready,))
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, HostState>, (p,): (Resource<DynPollable>,)| {
            if is_ready(&mut store.data_mut().table, &p)? {
                Ok(())
            } else {
                Err(WouldBlock("wasi:io/poll.pollable.block").into())
            }
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Whether a pollable is ready now, without waiting (wasmtime-wasi's `ready`
/// polls its future once).
fn is_ready(table: &mut ResourceTable, p: &Resource<DynPollable>) -> wasmtime::Result<bool> {
    <ResourceTable as HostPollable>::ready(table, Resource::new_borrow(p.rep()))
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weir-plugin-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .ok();
        if thread.is_none() {
            tracing::error!("cannot start the plugin epoch thread; plugin deadlines will not fire");
        }
        EpochTicker { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Epoch ticks for a deadline in milliseconds (rounded up, plus one for the
/// tick already under way).
pub(crate) fn deadline_ticks(ms: u64) -> u64 {
    ms.div_ceil(EPOCH_TICK.as_millis() as u64) + 1
}

/// Caps the linear memory of one instance, all its memories together.
pub(crate) struct MemoryCap {
    cap: usize,
    total: usize,
    /// Size a refused growth asked for, since the last reset.
    pub refused: Option<usize>,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let next = self.total.saturating_sub(current).saturating_add(desired);
        if next > self.cap {
            self.refused = Some(next);
            return Ok(false);
        }
        self.total = next;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// The plugin's stderr: the first [`STDERR_TAIL_BYTES`] of each batch, the
/// rest dropped (never an error, so a chatty plugin does not trap).
#[derive(Clone, Default)]
pub(crate) struct StderrTail(Arc<Mutex<Vec<u8>>>);

impl StderrTail {
    fn append(&self, bytes: &[u8]) {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = STDERR_TAIL_BYTES.saturating_sub(buf.len());
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Takes what was written since the last call, as trimmed text.
    pub(crate) fn take(&self) -> String {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A clock stopped at the Unix epoch: what a plugin sees without `allow_clock`.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Everything the store of one instance holds.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub memory: MemoryCap,
    pub stderr: StderrTail,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A store for one instance, with the memory cap and an empty WASI context.
pub(crate) fn new_store(
    engine: &Engine,
    memory_limit_bytes: u64,
    allow_clock: bool,
) -> Store<HostState> {
    let stderr = StderrTail::default();
    let mut wasi = WasiCtxBuilder::new();
    wasi.stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .insecure_random_seed(0);
    if !allow_clock {
        wasi.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
    }
    let state = HostState {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        memory: MemoryCap {
            cap: usize::try_from(memory_limit_bytes).unwrap_or(usize::MAX),
            total: 0,
            refused: None,
        },
        stderr,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.memory);
    store
}

impl HostState {
    /// The memory cap in bytes.
    pub(crate) fn memory_cap(&self) -> usize {
        self.memory.cap
    }
}
