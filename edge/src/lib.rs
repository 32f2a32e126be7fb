//! The Weir edge node: accepts events over HTTP (the same API as the core), stores them
//! in a disk [`spool`] before it answers, and [`forwarder`] sends them over QUIC (mutual
//! TLS) to any reachable core.
//!
//! Architecture invariant: the edge is light. It must never link wasmtime, rdkafka or the
//! AWS SDK; it shares only `weir-proto`, `weir-node` and `weir-http-ingest` with the core.

pub mod config;
pub mod dead_letter;
pub mod files;
pub mod forwarder;
pub mod ingest;
pub mod spool;
pub mod syslog;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::EdgeConfig;
use crate::dead_letter::DeadLetters;
use crate::forwarder::Forwarder;
use crate::ingest::SpoolSink;
use crate::spool::{Inspection, Spool, SpoolError};

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("cannot listen for HTTP on {addr}: {source}")]
    HttpBind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open a QUIC client endpoint: {0}")]
    QuicBind(std::io::Error),
    #[error("invalid TLS setup for forwarding: {0}")]
    Tls(#[from] weir_node::tls::TlsError),
    #[error("cannot open the spool: {0}")]
    Spool(#[from] SpoolError),
    #[error("http server failed: {0}")]
    Http(std::io::Error),
    #[error(transparent)]
    DeadLetter(#[from] dead_letter::DeadLetterError),
    #[error(transparent)]
    Syslog(#[from] syslog::SyslogError),
    #[error(transparent)]
    Files(#[from] files::FilesError),
}

/// Opens (and after a crash recovers) the spool; file I/O, so off the runtime's threads.
async fn open_spool(config: &EdgeConfig) -> Result<Spool, SpoolError> {
    let spool_config = config.spool.clone();
    tokio::task::spawn_blocking(move || Spool::open(spool_config)).await.expect("spool open task")
}

/// Appends every dead letter to the spool again and removes it from the dead-letter
/// directory; returns how many. The edge must not be running: opening the spool takes its
/// lock. A letter is removed only after the spool made it durable, so a crash in between
/// requeues it twice at worst.
pub async fn requeue_dead_letters(config: &EdgeConfig) -> Result<usize, EdgeError> {
    let letters = DeadLetters::new(config.dead_letter_dir());
    let found = letters.list()?;
    if found.is_empty() {
        return Ok(0);
    }
    let spool = open_spool(config).await?;
    for letter in &found {
        let seq = spool.append(DeadLetters::spooled(letter)?).await?;
        DeadLetters::remove(letter)?;
        tracing::info!(batch_id = %letter.refusal.batch_id, new_seq = seq, "requeued dead letter");
    }
    Ok(found.len())
}

/// What `weir-edge spool fsck` found, and after `--repair` what is left.
#[derive(Debug, serde::Serialize)]
pub struct FsckReport {
    pub before: Inspection,
    /// Corrupt records moved to the dead-letter directory by the repair.
    pub repaired: usize,
    /// The spool after the repair; `None` without `--repair` or when nothing was broken.
    pub after: Option<Inspection>,
}

impl FsckReport {
    /// Whether the spool is (now) free of anything broken.
    pub fn is_clean(&self) -> bool {
        self.after.as_ref().unwrap_or(&self.before).is_clean()
    }
}

/// What `weir-edge spool inspect` shows: [`spool::inspect`] (read-only, no lock, fine
/// while the edge runs) plus which corrupt records are in the dead-letter directory.
pub fn inspect_spool(config: &EdgeConfig) -> Result<Inspection, EdgeError> {
    let mut report = spool::inspect(&config.spool.dir)?;
    mark_dead_lettered(&mut report, &DeadLetters::new(config.dead_letter_dir()));
    Ok(report)
}

/// Checks every record of the spool; with `repair`, cuts torn tails and moves corrupt
/// records to the dead-letter directory (what the edge also does when it starts).
/// Refuses with [`SpoolError::Locked`] while an edge runs on the spool. Blocking.
pub fn fsck_spool(config: &EdgeConfig, repair: bool) -> Result<FsckReport, EdgeError> {
    let letters = DeadLetters::new(config.dead_letter_dir());
    let mut before = spool::inspect_locked(&config.spool.dir)?;
    mark_dead_lettered(&mut before, &letters);
    if !repair || before.is_clean() {
        return Ok(FsckReport { before, repaired: 0, after: None });
    }
    // Opening is the repair: recovery cuts torn tails and sets corrupt records aside. A
    // damaged reservation or incarnation file makes it fail with what to do about it.
    let spool = Spool::open(config.spool.clone())?;
    let repaired = dead_letter::quarantine_corrupt(&spool, &letters)?;
    // Dropping waits for the writer, so the acks are written before the lock is free.
    drop(spool);
    let mut after = spool::inspect_locked(&config.spool.dir)?;
    mark_dead_lettered(&mut after, &letters);
    Ok(FsckReport { before, repaired, after: Some(after) })
}

/// A corrupt record without a trusted seq cannot be acked in the spool, so it is found
/// again until its segment is deleted; its letter is what says it was handled.
fn mark_dead_lettered(report: &mut Inspection, letters: &DeadLetters) {
    if let Some(incarnation) = &report.incarnation {
        for record in &mut report.corrupt {
            record.dead_lettered = letters.has_corrupt(incarnation, record.segment, record.offset);
        }
    }
}

/// Moves corrupt records to the dead-letter directory as the spool finds them (on open,
/// or when the forwarder reads one), until `shutdown`. Forwarding never waits for it.
async fn quarantine_corrupt(spool: Spool, letters: DeadLetters, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = spool.wait_for_corrupt() => {}
            _ = shutdown.cancelled() => return,
        }
        let (s, l) = (spool.clone(), letters.clone());
        let moved = tokio::task::spawn_blocking(move || dead_letter::quarantine_corrupt(&s, &l))
            .await
            .unwrap_or_else(|join| panic!("dead-letter task panicked: {join}"));
        if let Err(error) = moved {
            tracing::error!(
                %error,
                dir = %letters.dir().display(),
                "could not move corrupt spool records to the dead-letter directory; they stay \
                 in the spool, not forwarded; retrying in 5 s"
            );
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

pub struct RunningEdge {
    pub http_addr: SocketAddr,
    pub spool: Spool,
    pub task: JoinHandle<Result<(), EdgeError>>,
}

/// Runs an edge until `shutdown` is cancelled.
pub async fn run(config: EdgeConfig, shutdown: CancellationToken) -> Result<(), EdgeError> {
    let running = start(config, shutdown).await?;
    running.task.await.unwrap_or_else(|join| panic!("edge task panicked: {join}"))
}

/// Opens the spool (recovering it after a crash), binds, and serves in the background.
pub async fn start(config: EdgeConfig, shutdown: CancellationToken) -> Result<RunningEdge, EdgeError> {
    // The cores refuse batch ids that name another edge than the certificate; say so
    // here rather than at every batch.
    weir_node::tls::check_certificate_name(&config.forward.tls.cert, &config.edge_id)?;
    let spool = open_spool(&config).await?;
    let stats = spool.stats();
    let client = weir_node::tls::client_config(
        &config.forward.tls,
        Duration::from_millis(config.forward.idle_timeout_ms),
    )?;
    let bind: SocketAddr = "0.0.0.0:0".parse().expect("valid address");
    let mut endpoint = quinn::Endpoint::client(bind).map_err(EdgeError::QuicBind)?;
    endpoint.set_default_client_config(client);

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| EdgeError::HttpBind { addr: config.http.listen, source })?;
    let http_addr = listener.local_addr().map_err(|source| EdgeError::HttpBind { addr: config.http.listen, source })?;
    tracing::info!(
        edge_id = %config.edge_id,
        %http_addr,
        cores = ?config.forward.cores,
        pending_batches = stats.pending_batches,
        "edge started"
    );

    let dead_letters = DeadLetters::new(config.dead_letter_dir());
    let sink = Arc::new(SpoolSink {
        spool: spool.clone(),
        dead_letters: dead_letters.clone(),
        default_ack_mode: config.ack_mode,
        core_ack_timeout: Duration::from_millis(config.core_ack_timeout_ms),
        order: Default::default(),
    });
    let syslog = match config.syslog.clone() {
        Some(syslog) => Some(syslog::start(syslog, sink.clone(), shutdown.clone()).await?),
        None => None,
    };
    let file_inputs = files::start(&config.files, &config.spool.dir, sink.clone(), shutdown.clone())?;
    let app = weir_http_ingest::router(&config.ingest, sink, weir_http_ingest::MemoryBudget::new(config.limits.in_flight_bytes));
    let quarantine = tokio::spawn(quarantine_corrupt(spool.clone(), dead_letters.clone(), shutdown.clone()));
    let forwarder = Forwarder::new(
        endpoint,
        spool.clone(),
        config.forward.clone(),
        config.edge_id.clone(),
        spool.incarnation().to_owned(),
        dead_letters,
    );
    let task = tokio::spawn(async move {
        let forwarding = tokio::spawn(forwarder.run(shutdown.clone()));
        let http = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .map_err(EdgeError::Http);
        shutdown.cancel();
        if let Some(syslog) = syslog {
            // Bounded: the spool is local, but a full one must not hold the exit forever.
            let _ = tokio::time::timeout(Duration::from_secs(5), syslog.drained).await;
        }
        for input in file_inputs {
            // A batch waiting for a full spool is given up at shutdown (read again at the
            // next start); this only waits for a read or fsync in progress.
            let _ = tokio::time::timeout(Duration::from_secs(5), input).await;
        }
        let _ = forwarding.await;
        let _ = quarantine.await;
        tracing::info!("edge stopped");
        http
    });
    Ok(RunningEdge { http_addr, spool, task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::SpoolConfig;

    /// The running edge's side of point 7: a record the forwarder finds corrupt while
    /// reading lands in the dead-letter directory without anyone calling for it.
    #[tokio::test]
    async fn the_quarantine_task_dead_letters_a_record_found_corrupt_while_forwarding() {
        let tmp = tempfile::tempdir().unwrap();
        // A 16 KiB cache: most of these batches are read back from disk.
        let config = SpoolConfig { max_bytes: 64 << 10, segment_bytes: 16 << 10, ..SpoolConfig::new(tmp.path()) };
        let spool = Spool::open(config).unwrap();
        for i in 0..40u8 {
            spool.append(bytes::Bytes::from(vec![i; 1000])).await.unwrap();
        }
        let letters = DeadLetters::new(tmp.path().join("dead-letter"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(quarantine_corrupt(spool.clone(), letters.clone(), shutdown.clone()));

        // Seq 20: the 5th 1020-byte record of segment 16.
        let segment = tmp.path().join(format!("{:020}.seg", 16));
        let mut data = std::fs::read(&segment).unwrap();
        data[4 * 1020 + 30] ^= 1;
        std::fs::write(&segment, data).unwrap();
        let sent = spool.pending_after(None, 100).unwrap();
        assert_eq!(sent.len(), 39, "everything but the damaged batch is forwarded");

        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while spool.stats().corrupt_records > 0 || letters.list_corrupt().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "the corrupt record was not dead-lettered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let listed = letters.list_corrupt().unwrap();
        assert_eq!((listed.len(), listed[0].0.seq), (1, Some(20)));
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("the task ends on shutdown").unwrap();
    }
}
