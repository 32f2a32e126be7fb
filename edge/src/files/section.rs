//! The reader of one `[[files]]` section: a thread that scans the globs, keeps the
//! matched files open, reads them batch by batch into the spool and moves their
//! checkpoints after the spool's fsync. The rules it applies are listed in `files`.
//!
//! It runs on a blocking thread of its own (file I/O and fsyncs are all blocking) and
//! reaches the async spool through the runtime's handle. It owns every descriptor it
//! opened; they close when the file is done or the thread ends.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use flate2::read::MultiGzDecoder;
use notify::Watcher;
use regex::Regex;
use tokio_util::sync::CancellationToken;
use weir_http_ingest::{AckMode, IngestRequest, IngestSink, Refusal, RefusalKind};
use weir_proto::{Event, EventBatch};

use super::checkpoint::{Checkpoints, Entry};
use super::discover::Globs;
use super::fingerprint::{self, Fingerprint};
use super::reader::{LineReader, ReadEvent};
use super::{FilesConfig, ReadFrom};

/// (device, inode): a file while it is open, whatever its name.
type FileKey = (u64, u64);

/// Bytes read from a file at a time.
const CHUNK: usize = 64 << 10;

/// What an open file is read through.
enum Source {
    Plain(File),
    Gz(Box<MultiGzDecoder<File>>),
}

impl Source {
    fn file(&self) -> &File {
        match self {
            Source::Plain(file) => file,
            Source::Gz(decoder) => decoder.get_ref(),
        }
    }

    /// Content bytes at `pos` (a gzip stream is read in order; `pos` is where it is).
    fn read(&mut self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let read = match self {
                Source::Plain(file) => file.read_at(buf, pos),
                Source::Gz(decoder) => decoder.read(buf),
            };
            match read {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

/// A file being read.
struct Tracked {
    key: FileKey,
    path: PathBuf,
    gz: bool,
    /// `None` after a truncation left it shorter than `fingerprint_bytes`: not read
    /// until it is long enough again.
    fp: Option<Fingerprint>,
    source: Source,
    reader: LineReader,
    /// Events cut but not yet spooled (at most one read's worth beyond a batch).
    ready: VecDeque<ReadEvent>,
    ready_bytes: usize,
    at_eof: bool,
    /// Deleted, or no longer matched by the globs: read to its end, then closed.
    gone: bool,
    /// A read failed: closed without taking its last line as complete.
    failed: bool,
    last_growth: Instant,
}

impl Tracked {
    fn restart(&mut self, config: &FilesConfig, multiline: &Option<Regex>) {
        self.reader = LineReader::new(0, config.max_line_bytes, multiline.clone());
        self.ready.clear();
        self.ready_bytes = 0;
        self.at_eof = false;
        self.last_growth = Instant::now();
    }
}

pub(super) struct Section {
    config: FilesConfig,
    tags: std::collections::BTreeMap<String, String>,
    globs: Globs,
    multiline: Option<Regex>,
    checkpoints: Checkpoints,
    /// The table differs from the file.
    dirty: bool,
    store_failing: bool,
    tracked: HashMap<FileKey, Tracked>,
    /// `.gz` files read to their end (or damaged), by key, length and mtime: not looked
    /// at again until they change.
    done: HashMap<(FileKey, u64, i64), Option<Fingerprint>>,
    first_scan: bool,
    sink: Arc<dyn IngestSink>,
    shutdown: CancellationToken,
    wake_tx: SyncSender<()>,
    wake_rx: Receiver<()>,
    buf: Vec<u8>,
}

impl Section {
    pub(super) fn new(
        config: FilesConfig,
        checkpoints: Checkpoints,
        sink: Arc<dyn IngestSink>,
        shutdown: CancellationToken,
    ) -> Result<Section, String> {
        let globs = Globs::new(&config.include, &config.exclude).map_err(|e| e.to_string())?;
        let multiline = match &config.multiline_start {
            Some(rule) => Some(Regex::new(rule).map_err(|e| format!("multiline_start {rule:?}: {e}"))?),
            None => None,
        };
        // One slot: wake-ups that arrive while one is pending are the same wake-up.
        let (wake_tx, wake_rx) = sync_channel(1);
        Ok(Section {
            tags: config.tags(),
            config,
            globs,
            multiline,
            checkpoints,
            dirty: false,
            store_failing: false,
            tracked: HashMap::new(),
            done: HashMap::new(),
            first_scan: true,
            sink,
            shutdown,
            wake_tx,
            wake_rx,
            buf: vec![0; CHUNK],
        })
    }

    /// Runs the section on a blocking thread until shutdown.
    pub(super) fn spawn(self) -> tokio::task::JoinHandle<()> {
        let runtime = tokio::runtime::Handle::current();
        let (wake, shutdown) = (self.wake_tx.clone(), self.shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            let _ = wake.try_send(());
        });
        tokio::task::spawn_blocking(move || self.run(&runtime))
    }

    fn run(mut self, runtime: &tokio::runtime::Handle) {
        let _watcher = self.watch();
        let scan_interval = Duration::from_millis(self.config.scan_interval_ms);
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            self.scan();
            let Some(caught_up) = self.read_all(runtime, scan_interval) else { break };
            self.close_finished();
            self.store();
            metrics::gauge!("weir_files_open", "input" => self.config.name.clone()).set(self.tracked.len() as f64);
            if !caught_up {
                continue;
            }
            let _ = self.wake_rx.recv_timeout(self.next_wait(scan_interval));
            while self.wake_rx.try_recv().is_ok() {}
        }
        tracing::info!(input = %self.config.name, "file input stopped");
    }

    /// Until the next scan, or sooner when a waiting multiline event is due.
    fn next_wait(&self, scan_interval: Duration) -> Duration {
        let timeout = Duration::from_millis(self.config.multiline_timeout_ms);
        self.tracked
            .values()
            .filter(|t| t.reader.has_pending())
            .map(|t| timeout.saturating_sub(t.last_growth.elapsed()).max(Duration::from_millis(10)))
            .fold(scan_interval, Duration::min)
    }

    fn watch(&self) -> Option<notify::RecommendedWatcher> {
        if !self.config.watch {
            return None;
        }
        let wake = self.wake_tx.clone();
        let mut watcher = match notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
            let _ = wake.try_send(());
        }) {
            Ok(watcher) => watcher,
            Err(error) => {
                tracing::warn!(input = %self.config.name, %error, "cannot watch for file changes; the periodic scan finds them");
                return None;
            }
        };
        for (dir, recursive) in self.globs.watch_dirs() {
            let mode = if recursive { notify::RecursiveMode::Recursive } else { notify::RecursiveMode::NonRecursive };
            if let Err(error) = watcher.watch(&dir, mode) {
                tracing::debug!(input = %self.config.name, dir = %dir.display(), %error, "directory not watched; the periodic scan covers it");
            }
        }
        Some(watcher)
    }

    /// Finds new files, notices renames, deletions and truncations.
    fn scan(&mut self) {
        let now_ms = weir_proto::event::now_ms();
        let n = self.config.fingerprint_bytes;
        let mut matched: HashMap<FileKey, PathBuf> = HashMap::new();
        let mut candidates = Vec::new();
        for path in self.globs.find() {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            let key = (meta.dev(), meta.ino());
            if let Some(fp) = self.done.get(&(key, meta.len(), meta.mtime())) {
                if let Some(fp) = fp {
                    self.checkpoints.seen(fp, now_ms);
                }
                continue;
            }
            if !self.tracked.contains_key(&key) {
                candidates.push(path.clone());
            }
            matched.insert(key, path);
        }

        for t in self.tracked.values_mut() {
            let meta = t.source.file().metadata();
            let unlinked = meta.as_ref().map_or(true, |m| m.nlink() == 0);
            match matched.get(&t.key) {
                Some(path) if *path != t.path => {
                    tracing::info!(input = %self.config.name, from = %t.path.display(), to = %path.display(), "file renamed; reading on");
                    t.path = path.clone();
                }
                _ => {}
            }
            let gone = unlinked || !matched.contains_key(&t.key);
            if gone && !t.gone {
                tracing::info!(input = %self.config.name, path = %t.path.display(), deleted = unlinked, "file deleted or no longer matched; reading it to its end");
            }
            t.gone = gone;
            let (false, Ok(meta)) = (t.gz, meta) else { continue };
            if meta.len() < t.reader.pos() {
                tracing::info!(
                    input = %self.config.name, path = %t.path.display(), length = meta.len(), position = t.reader.pos(),
                    "file shrank below the read position (truncated, e.g. copytruncate); reading it again from its start"
                );
                metrics::counter!("weir_files_truncations_total", "input" => self.config.name.clone()).increment(1);
                let old = t.fp.take();
                t.restart(&self.config, &self.multiline);
                t.fp = fingerprint::plain(t.source.file(), n).ok().flatten();
                if let (Some(old), Some(new)) = (&old, &t.fp)
                    && old == new
                {
                    // Same first bytes, new content behind: a crash must not resume at the
                    // old offset (a copy of the old content then reads from 0; duplicates).
                    self.checkpoints.set(new, entry(t, 0, now_ms));
                    self.dirty = true;
                }
            } else if !gone {
                match (&t.fp, fingerprint::plain(t.source.file(), n)) {
                    (Some(old), Ok(Some(now))) if *old != now => {
                        tracing::info!(input = %self.config.name, path = %t.path.display(), "file starts differently now (rewritten in place); reading it again from its start");
                        t.restart(&self.config, &self.multiline);
                        t.fp = Some(now);
                    }
                    // Long enough again after a truncation: read it from its start.
                    (None, Ok(Some(now))) => t.fp = Some(now),
                    _ => {}
                }
            }
            if let Some(fp) = &t.fp {
                self.checkpoints.seen(fp, now_ms);
            }
        }

        for path in candidates {
            self.consider(&path, now_ms);
        }
        self.first_scan = false;
        if self.checkpoints.forget_old(now_ms) {
            self.dirty = true;
        }
    }

    /// A matched file not being read: starts reading it, unless it is too short, a copy
    /// of one being read, or a `.gz` already read.
    fn consider(&mut self, path: &Path, now_ms: i64) {
        let n = self.config.fingerprint_bytes;
        let file = match File::open(path) {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(input = %self.config.name, path = %path.display(), %error, "cannot open a matched file; trying again at the next scan");
                return;
            }
        };
        let Ok(meta) = file.metadata() else { return };
        let key = (meta.dev(), meta.ino());
        if self.tracked.contains_key(&key) {
            return;
        }
        let gz = path.extension().is_some_and(|e| e == "gz");
        let fp = match if gz { fingerprint::gz(&file, n) } else { fingerprint::plain(&file, n) } {
            Ok(Some(fp)) => fp,
            Ok(None) => {
                tracing::debug!(input = %self.config.name, path = %path.display(), "file shorter than fingerprint_bytes (or an incomplete .gz); waiting");
                return;
            }
            Err(error) => {
                tracing::warn!(input = %self.config.name, path = %path.display(), %error, "cannot read a matched file; trying again at the next scan");
                return;
            }
        };
        self.checkpoints.seen(&fp, now_ms);
        if self.tracked.values().any(|t| t.fp.as_ref() == Some(&fp)) {
            tracing::debug!(input = %self.config.name, path = %path.display(), "same first bytes as a file being read: a copy, left until that one is closed");
            return;
        }
        let len = meta.len();
        let checkpoint = self.checkpoints.get(&fp).cloned();
        let start = match &checkpoint {
            Some(e) if gz && e.complete => {
                self.done.insert((key, len, meta.mtime()), Some(fp));
                return;
            }
            Some(e) if (e.dev, e.ino) == key && !gz && e.offset > len => {
                tracing::info!(
                    input = %self.config.name, path = %path.display(), length = len, checkpoint = e.offset,
                    "file is shorter than its checkpoint (truncated while not read); reading it from its start"
                );
                0
            }
            Some(e) if (e.dev, e.ino) == key || gz => e.offset,
            // A copy of a file read before (copytruncate's copy): the part not yet read.
            Some(e) => e.offset.min(len),
            None if self.first_scan && self.config.read_from == ReadFrom::End => {
                if gz {
                    self.checkpoints.set(&fp, Entry { offset: 0, dev: key.0, ino: key.1, path: path.to_owned(), complete: true, seen_ms: now_ms });
                    self.dirty = true;
                    self.done.insert((key, len, meta.mtime()), Some(fp));
                    return;
                }
                len
            }
            None => 0,
        };
        let (source, start) = if gz {
            let mut decoder = MultiGzDecoder::new(file);
            match io::copy(&mut (&mut decoder).take(start), &mut io::sink()) {
                Ok(skipped) => (Source::Gz(Box::new(decoder)), skipped),
                Err(error) => {
                    tracing::warn!(input = %self.config.name, path = %path.display(), %error, "cannot decompress; left alone until it changes");
                    self.done.insert((key, len, meta.mtime()), None);
                    return;
                }
            }
        } else {
            (Source::Plain(file), start)
        };
        tracing::info!(input = %self.config.name, path = %path.display(), offset = start, fingerprint = %fp, "reading file");
        let tracked = Tracked {
            key,
            path: path.to_owned(),
            gz,
            fp: Some(fp.clone()),
            source,
            reader: LineReader::new(start, self.config.max_line_bytes, self.multiline.clone()),
            ready: VecDeque::new(),
            ready_bytes: 0,
            at_eof: false,
            gone: false,
            failed: false,
            last_growth: Instant::now(),
        };
        // A checkpoint from the start, so that a restart (no longer the first scan)
        // resumes here rather than by read_from.
        if checkpoint.as_ref().is_none_or(|e| e.offset != start || (e.dev, e.ino) != key) {
            self.checkpoints.set(&fp, entry(&tracked, start, now_ms));
            self.dirty = true;
        }
        self.tracked.insert(key, tracked);
    }

    /// Reads and spools batches, one per file in turn, until every file is at its end
    /// (`Some(true)`), `budget` is spent (`Some(false)`: scan, then go on) or shutdown
    /// came (`None`).
    fn read_all(&mut self, runtime: &tokio::runtime::Handle, budget: Duration) -> Option<bool> {
        let started = Instant::now();
        loop {
            let mut progressed = false;
            let keys: Vec<FileKey> = self.tracked.keys().copied().collect();
            for key in keys {
                if self.shutdown.is_cancelled() {
                    return None;
                }
                let Some(events) = self.next_batch(key) else { continue };
                progressed = true;
                if !events.is_empty() && !self.spool(runtime, key, events) {
                    return None;
                }
            }
            if !progressed {
                return Some(true);
            }
            if started.elapsed() >= budget {
                return Some(false);
            }
        }
    }

    /// Up to one batch of the file's next events; `None` when nothing was read or cut.
    fn next_batch(&mut self, key: FileKey) -> Option<Vec<ReadEvent>> {
        let config = &self.config;
        let t = self.tracked.get_mut(&key)?;
        t.fp.as_ref()?;
        let mut cut = Vec::new();
        let mut progressed = false;
        while t.ready.len() < config.batch_max_events && t.ready_bytes < config.batch_max_bytes {
            match t.source.read(t.reader.pos(), &mut self.buf) {
                Ok(0) => {
                    t.at_eof = true;
                    break;
                }
                Ok(n) => {
                    t.reader.push(&self.buf[..n], &mut cut);
                    t.at_eof = false;
                    t.last_growth = Instant::now();
                    progressed = true;
                }
                Err(error) => {
                    // A .gz cut off or damaged: its whole lines are spooled, and it is not
                    // tried again until it changes. A plain file is opened again by the next
                    // scan that finds it, from its checkpoint.
                    tracing::warn!(input = %config.name, path = %t.path.display(), %error, "cannot read file; it is closed");
                    t.at_eof = true;
                    t.gone = true;
                    t.failed = true;
                    break;
                }
            }
            t.ready_bytes += cut.iter().map(|e| e.raw.len()).sum::<usize>();
            t.ready.extend(cut.drain(..));
        }
        if t.at_eof {
            let quiet = t.last_growth.elapsed();
            if t.failed {
                // Not the end of the content: the last line may go on.
            } else if t.gz || (t.gone && quiet >= Duration::from_millis(config.scan_interval_ms)) {
                t.reader.finish(&mut cut);
            } else if t.reader.has_pending() && quiet >= Duration::from_millis(config.multiline_timeout_ms) {
                t.reader.flush_pending(&mut cut);
            }
            t.ready_bytes += cut.iter().map(|e| e.raw.len()).sum::<usize>();
            t.ready.extend(cut.drain(..));
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(next) = t.ready.front() {
            if batch.len() >= config.batch_max_events || (!batch.is_empty() && bytes + next.raw.len() > config.batch_max_bytes) {
                break;
            }
            bytes += next.raw.len();
            batch.push(t.ready.pop_front().expect("front exists"));
        }
        t.ready_bytes -= bytes;
        (progressed || !batch.is_empty()).then_some(batch)
    }

    /// Appends the batch to the spool (waiting while it is full), then moves the file's
    /// checkpoint past it. `false`: shutdown came first; nothing was checkpointed.
    fn spool(&mut self, runtime: &tokio::runtime::Handle, key: FileKey, events: Vec<ReadEvent>) -> bool {
        let t = &self.tracked[&key];
        // With nothing cut left over, skipped empty lines behind the batch count too.
        let last_end = events.last().map_or(0, |e| e.end);
        let end = if t.ready.is_empty() { t.reader.resume_offset().max(last_end) } else { last_end };
        let n_events = events.len();
        let truncated = events.iter().filter(|e| e.truncated_bytes > 0).count() as u64;
        let batch = EventBatch {
            repository: self.config.repository.clone(),
            tags: self.tags.clone(),
            parser: self.config.parser.clone(),
            ingest_ts_ms: weir_proto::event::now_ms(),
            attributes: serde_json::Map::from_iter([("file.path".to_owned(), t.path.display().to_string().into())]),
            events: events
                .into_iter()
                .map(|e| {
                    let mut event = Event::raw(e.raw);
                    if e.truncated_bytes > 0 {
                        event.attributes.insert("@truncated_bytes".into(), e.truncated_bytes.into());
                    }
                    event
                })
                .collect(),
        };
        let mut backoff = Duration::from_millis(50);
        let mut waited = false;
        loop {
            let request = IngestRequest { batches: vec![batch.clone()], n_events, ack_mode: Some(AckMode::Spool) };
            match runtime.block_on(self.sink.ingest(request)) {
                Ok(()) => break,
                Err(Refusal { kind: RefusalKind::Overloaded | RefusalKind::Unavailable, message, .. }) => {
                    if !waited {
                        tracing::warn!(input = %self.config.name, path = %t.path.display(), %message, "file reading paused: the spool pushes back");
                    }
                }
                Err(error) => {
                    // Nothing is dropped: the same batch is tried again until it goes in
                    // or the edge stops (then it is read again at the next start).
                    tracing::error!(input = %self.config.name, path = %t.path.display(), %error, n_events, "file events cannot be spooled; retrying");
                    backoff = Duration::from_secs(5);
                }
            }
            waited = true;
            let until = Instant::now() + backoff;
            while Instant::now() < until {
                if self.shutdown.is_cancelled() {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20).min(backoff));
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        if waited {
            tracing::info!(input = %self.config.name, "file reading resumed: the spool took the batch");
        }
        metrics::counter!("weir_files_events_total", "input" => self.config.name.clone()).increment(n_events as u64);
        if truncated > 0 {
            metrics::counter!("weir_files_truncated_events_total", "input" => self.config.name.clone()).increment(truncated);
        }
        if let Some(fp) = t.fp.clone() {
            self.checkpoints.set(&fp, entry(t, end, weir_proto::event::now_ms()));
            self.dirty = true;
            self.store();
        }
        true
    }

    /// Closes files read to their end that are gone (or `.gz`, which are read once).
    fn close_finished(&mut self) {
        let quiet = Duration::from_millis(self.config.scan_interval_ms);
        let finished: Vec<FileKey> = self
            .tracked
            .values()
            .filter(|t| t.at_eof && t.ready.is_empty() && (t.failed || t.gz || (t.gone && t.last_growth.elapsed() >= quiet)))
            .map(|t| t.key)
            .collect();
        for key in finished {
            let t = self.tracked.remove(&key).expect("listed above");
            if t.gz && t.failed {
                if let Ok(meta) = t.source.file().metadata() {
                    self.done.insert((key, meta.len(), meta.mtime()), None);
                }
            } else if t.gz
                && let Some(fp) = &t.fp
            {
                let mut done = entry(&t, t.reader.pos(), weir_proto::event::now_ms());
                done.complete = true;
                self.checkpoints.set(fp, done);
                self.dirty = true;
                if let Ok(meta) = t.source.file().metadata() {
                    self.done.insert((key, meta.len(), meta.mtime()), Some(fp.clone()));
                }
            }
            tracing::info!(input = %self.config.name, path = %t.path.display(), offset = t.reader.pos(), "file read to its end and closed");
        }
    }

    /// Writes the checkpoints if they changed. A failure is logged once until a write
    /// succeeds: the file stays behind, so a restart repeats more, but loses nothing.
    fn store(&mut self) {
        if !self.dirty {
            return;
        }
        match self.checkpoints.store() {
            Ok(()) => {
                self.dirty = false;
                if self.store_failing {
                    tracing::info!(input = %self.config.name, "file checkpoints written again");
                }
                self.store_failing = false;
            }
            Err(error) => {
                if !self.store_failing {
                    tracing::error!(input = %self.config.name, %error, "cannot write the file checkpoints; a restart will read again what they do not cover");
                }
                self.store_failing = true;
            }
        }
    }
}

fn entry(t: &Tracked, offset: u64, now_ms: i64) -> Entry {
    Entry { offset, dev: t.key.0, ino: t.key.1, path: t.path.clone(), complete: false, seen_ms: now_ms }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A spool stand-in: refuses as full while `full` is set, records what it took.
    struct Sink {
        full: AtomicBool,
        refused: AtomicUsize,
        taken: Mutex<Vec<String>>,
    }

    impl IngestSink for Sink {
        fn ingest(&self, request: IngestRequest) -> futures::future::BoxFuture<'static, Result<(), Refusal>> {
            if self.full.load(Ordering::SeqCst) {
                self.refused.fetch_add(1, Ordering::SeqCst);
                let message = "spool is full".to_owned();
                return Box::pin(async move { Err(Refusal::overloaded(message, Duration::from_secs(1))) });
            }
            let raws = request.batches.iter().flat_map(|b| &b.events).map(|e| e.raw.clone());
            self.taken.lock().unwrap().extend(raws);
            Box::pin(async { Ok(()) })
        }
        fn ready(&self) -> Result<(), String> {
            Ok(())
        }
    }

    fn sink(full: bool) -> Arc<Sink> {
        Arc::new(Sink { full: full.into(), refused: AtomicUsize::new(0), taken: Mutex::new(Vec::new()) })
    }

    /// A directory with `logs/a.log` holding `content`, and where the checkpoints go.
    fn setup(content: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        std::fs::write(logs.join("a.log"), content).unwrap();
        let checkpoints = dir.path().join("t.json");
        (dir, logs, checkpoints)
    }

    /// A section over `<logs>/*.log` with small batches and fingerprints, plus `extra` keys.
    fn config(logs: &Path, extra: &str) -> FilesConfig {
        let toml = format!(
            "name = \"t\"\ninclude = [\"{}/*.log\"]\nrepository = \"r\"\nscan_interval_ms = 50\nbatch_max_events = 10\nfingerprint_bytes = 16\n{extra}",
            logs.display()
        );
        toml::from_str(&toml).unwrap()
    }

    struct Running {
        shutdown: CancellationToken,
        // A failed assertion must still stop the reader, or the runtime waits for it.
        _stop: tokio_util::sync::DropGuard,
        task: tokio::task::JoinHandle<()>,
    }

    impl Running {
        fn start(config: FilesConfig, checkpoints: &Path, sink: &Arc<Sink>) -> Running {
            let shutdown = CancellationToken::new();
            let _stop = shutdown.clone().drop_guard();
            let section = Section::new(config, Checkpoints::load(checkpoints).unwrap(), sink.clone(), shutdown.clone()).unwrap();
            Running { shutdown, _stop, task: section.spawn() }
        }

        async fn stop(self) {
            self.shutdown.cancel();
            tokio::time::timeout(Duration::from_secs(5), self.task).await.expect("stops at shutdown").unwrap();
        }
    }

    fn checkpoint_offset(path: &Path) -> Option<u64> {
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        json["files"].as_object()?.values().next()?["offset"].as_u64()
    }

    async fn until(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Runs a section until `done(lines taken)`, lets a wrong extra read show, stops it.
    async fn run_until(config: FilesConfig, checkpoints: &Path, sink: &Arc<Sink>, done: impl Fn(&[String]) -> bool) {
        let running = Running::start(config, checkpoints, sink);
        until("the expected lines", || done(&sink.taken.lock().unwrap())).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        running.stop().await;
    }

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_spool_stops_reading_and_nothing_is_dropped_or_checkpointed_early() {
        let lines: Vec<String> = (0..95).map(|i| format!("line {i:03}")).collect();
        let (_dir, logs, checkpoints) = setup(&(lines.join("\n") + "\n"));
        let sink = sink(true);
        let running = Running::start(config(&logs, ""), &checkpoints, &sink);

        until("the spool to refuse a few times", || sink.refused.load(Ordering::SeqCst) >= 3).await;
        // Refused batches move nothing: the checkpoint stays where reading began.
        assert_eq!(checkpoint_offset(&checkpoints).unwrap_or(0), 0);
        assert!(sink.taken.lock().unwrap().is_empty());

        sink.full.store(false, Ordering::SeqCst);
        until("every line spooled", || sink.taken.lock().unwrap().len() >= lines.len()).await;
        let length = std::fs::metadata(logs.join("a.log")).unwrap().len();
        until("the checkpoint at the end", || checkpoint_offset(&checkpoints) == Some(length)).await;
        assert_eq!(*sink.taken.lock().unwrap(), lines, "in order, once each");
        running.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_while_the_spool_is_full_ends_the_reader_without_a_checkpoint() {
        let (_dir, logs, checkpoints) = setup("0123456789abcdef\nsecond line\n");
        let sink = sink(true);
        let running = Running::start(config(&logs, ""), &checkpoints, &sink);
        until("a refusal", || sink.refused.load(Ordering::SeqCst) >= 1).await;
        running.stop().await;
        assert_eq!(checkpoint_offset(&checkpoints).unwrap_or(0), 0, "the batch is read again at the next start");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_truncated_while_the_edge_was_down_is_read_from_its_start() {
        let lines: Vec<String> = (0..40).map(|i| format!("old line {i:03}")).collect();
        let (_dir, logs, checkpoints) = setup(&(lines.join("\n") + "\n"));
        let log = logs.join("a.log");
        let first = sink(false);
        run_until(config(&logs, ""), &checkpoints, &first, |taken| taken.len() >= 40).await;
        assert_eq!(*first.taken.lock().unwrap(), lines);

        // Down: cut to 10 lines (same inode, same first bytes), one new line.
        let cut: u64 = lines[..10].iter().map(|l| l.len() as u64 + 1).sum();
        std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(cut).unwrap();
        append(&log, "new line\n");
        let second = sink(false);
        run_until(config(&logs, ""), &checkpoints, &second, |taken| taken.len() >= 11).await;
        let mut expected = lines[..10].to_vec();
        expected.push("new line".into());
        assert_eq!(*second.taken.lock().unwrap(), expected, "from offset 0: the kept lines again, then the new one");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_from_end_skips_what_is_there_at_start_but_not_later_files_or_restarts() {
        let (_dir, logs, checkpoints) = setup("present before the start\n");
        let first = sink(false);
        let appender = {
            let logs = logs.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                append(&logs.join("a.log"), "appended after the start\n");
                append(&logs.join("b.log"), "a file created later is read whole\n");
            })
        };
        let end = || config(&logs, "read_from = \"end\"");
        run_until(end(), &checkpoints, &first, |taken| taken.len() >= 2).await;
        appender.join().unwrap();
        let mut taken = first.taken.lock().unwrap().clone();
        taken.sort();
        assert_eq!(taken, ["a file created later is read whole", "appended after the start"]);

        // A restart resumes at the checkpoints, not at the end.
        append(&logs.join("a.log"), "written while the edge was down\n");
        let second = sink(false);
        run_until(end(), &checkpoints, &second, |taken| !taken.is_empty()).await;
        assert_eq!(*second.taken.lock().unwrap(), ["written while the edge was down"]);
    }
}
