//! The digest of one ingest partition under one epoch: read from Global's resume point,
//! turn records into rows, write a segment per flush, register it, go on.
//!
//! Runs on a blocking thread (rdkafka's consumer, wasmtime and the Parquet encoder all
//! block). A segment is registered with `register_segment` under the epoch the worker was
//! started with; Global refuses it once another core claimed the partition, and then the
//! worker deletes its file and stops: a paused or partitioned former owner can never
//! register anything. Must never advance past an offset it has not put in a segment, nor
//! skip an offset Kafka no longer has.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use weir_global::{Cmd, Command, Dedup, Outcome, Rejection};
use weir_plugin_host::ParserRegistry;
use weir_segment::{SegmentMeta, SegmentRow, SegmentWriter};

use super::rows::{RowBuilder, StoredSet};
use crate::cluster::GlobalLog;
use crate::cluster::commands::{node_copy, segment_info};
use crate::config::{DigestConfig, KafkaConfig};
use crate::store::DataDir;
use crate::store::sweep::{Pending, PendingGuard};
use crate::kafka::ingest_reader::{PartitionReader, ReadError};

/// Why a worker stopped.
#[derive(Debug)]
pub enum Exit {
    Shutdown,
    /// Another core claimed the partition (a later epoch): not an error.
    Superseded(Rejection),
    /// Global refused a segment for another reason; the next claim starts over from the
    /// resume point.
    Refused(Rejection),
    /// The resume point is gone from Kafka: an operator must act; never skipped.
    OffsetGone(ReadError),
    /// The resume point is past the partition's end: Global describes records this topic
    /// never had (recreated, or another cluster); never read from the start instead.
    ResumePastEnd {
        resume: u64,
        end: u64,
    },
    Failed(String),
}

/// What a worker needs; shared by every worker of the node.
pub struct Context {
    pub node_id: String,
    pub global: Arc<GlobalLog>,
    pub kafka: KafkaConfig,
    pub config: DigestConfig,
    pub parsers: Option<Arc<ParserRegistry>>,
    pub data_dir: DataDir,
    /// This node's disk id ([`DataDir::disk_id`]), named in the copies it records.
    pub disk_id: String,
    /// Segments whose files this process is registering: the sweep leaves them alone.
    pub pending: Pending,
    pub runtime: Handle,
}

/// The segment being built.
struct Building {
    writer: SegmentWriter,
    offset_start: u64,
    started: Instant,
    record_bytes: u64,
    stored: StoredSet,
    /// From the first row until Global settled the registration (applied, or refused and
    /// the file deleted): the sweep must not take the file, however long Global takes.
    _pending: PendingGuard,
}

pub fn run(ctx: &Context, partition: u32, epoch: u64, cancel: &CancellationToken) -> Exit {
    let resume = ctx.global.read(|s| s.resume_point(partition));
    let reader = match PartitionReader::open(&ctx.kafka, &ctx.node_id, partition, resume) {
        Ok(reader) => reader,
        Err(error @ ReadError::OffsetGone { .. }) => return offset_gone(partition, error),
        Err(error) => return Exit::Failed(error.to_string()),
    };
    match reader.watermarks() {
        Ok((_, end)) if resume > end => {
            metrics::counter!("weir_digest_resume_past_end_total", "partition" => partition.to_string()).increment(1);
            return Exit::ResumePastEnd { resume, end };
        }
        Ok(_) => {}
        Err(error) => return Exit::Failed(error.to_string()),
    }
    tracing::info!(partition, epoch, from = resume, "digest started");
    let mut dedup: Dedup = ctx.global.read(|s| s.dedup(partition));
    let builder = RowBuilder { partition, parsers: ctx.parsers.as_deref(), foreign_repository: &ctx.config.foreign_repository };
    let flush_interval = Duration::from_millis(ctx.config.flush_interval_ms.max(1));
    let mut position = resume;
    let mut building: Option<Building> = None;
    let mut rows: Vec<SegmentRow> = Vec::new();
    let mut last_lag = Instant::now();
    let lag = metrics::gauge!("weir_digest_lag_records", "partition" => partition.to_string());
    let lag_ms = metrics::gauge!("weir_digest_lag_ms", "partition" => partition.to_string());
    // Kafka deletes by retention whether or not the digest has read the records: a digest
    // that falls behind by more than that loses them (then an operator's `set-log-start`).
    let retention_ms = match ctx.runtime.block_on(crate::kafka::ingest_retention_ms(&ctx.kafka)) {
        Ok(retention) => retention,
        Err(reason) => {
            tracing::warn!(partition, %reason, "cannot read the ingest topic's retention; the digest lag is not checked against it");
            None
        }
    };
    let mut retention_warned: Option<Instant> = None;
    // The timestamp of the last record read: when the digest is behind, the next record
    // it reads is about this old.
    let mut last_timestamp_ms: Option<i64> = None;
    loop {
        if cancel.is_cancelled() {
            // What was read so far is registered, so the next owner resumes after it
            // instead of digesting it again: on a graceful stop Global accepts it, and
            // after a lost claim it refuses it and the file is deleted. Should Global not
            // answer, the file is left for the next start's cleanup and the records stay
            // in Kafka for whoever digests the partition next.
            if let Some(done) = building.take() {
                if let Err(exit) = flush(ctx, partition, epoch, done, position, cancel) {
                    return exit;
                }
                tracing::info!(partition, epoch, up_to = position, "digest stopped after registering its last segment");
            }
            return Exit::Shutdown;
        }
        let due = building
            .as_ref()
            .is_some_and(|b| b.started.elapsed() >= flush_interval || b.record_bytes >= ctx.config.segment_bytes);
        if due {
            let done = building.take().expect("due implies building");
            if let Err(exit) = flush(ctx, partition, epoch, done, position, cancel) {
                return exit;
            }
        }
        if last_lag.elapsed() >= Duration::from_secs(5) {
            if let Some(high) = reader.high_watermark() {
                lag.set(high.saturating_sub(position) as f64);
                let behind_ms = if high > position { last_timestamp_ms.map_or(0, |t| now_ms().saturating_sub(t).max(0) as u64) } else { 0 };
                lag_ms.set(behind_ms as f64);
                if let Some(warning) = retention_risk(behind_ms, retention_ms) {
                    // Once a minute: the condition lasts, the log should not.
                    if retention_warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                        tracing::warn!(partition, lag_ms = behind_ms, retention_ms, "{warning}");
                        retention_warned = Some(Instant::now());
                    }
                }
            }
            last_lag = Instant::now();
        }
        let record = match reader.poll(Duration::from_millis(100), position) {
            Ok(Some(record)) => record,
            Ok(None) => continue,
            Err(error @ ReadError::OffsetGone { .. }) => return offset_gone(partition, error),
            Err(error) => return Exit::Failed(error.to_string()),
        };
        if record.offset < position {
            continue;
        }
        let current = match building.as_mut() {
            Some(current) => current,
            None => match start_segment(ctx, partition, epoch, position) {
                Ok(started) => building.insert(started),
                Err(error) => return Exit::Failed(error),
            },
        };
        rows.clear();
        let outcome = builder.rows(&record, &mut dedup, &mut current.stored, &mut rows);
        if outcome.duplicate {
            metrics::counter!("weir_digest_duplicate_records_total").increment(1);
        }
        if outcome.foreign {
            metrics::counter!("weir_digest_foreign_records_total").increment(1);
        }
        // Counted per record, not per row: the labelled counter is looked up once. A
        // record's rows share the parser chosen for its batch.
        if let Some(first) = rows.first() {
            let parser = first.parser.clone().unwrap_or_else(|| "none".into());
            let failed = outcome.failed;
            metrics::counter!("weir_digest_events_total", "parser" => parser.clone(), "result" => "parsed").increment(outcome.events - failed);
            metrics::counter!("weir_digest_events_total", "parser" => parser, "result" => "failed").increment(failed);
        }
        for row in rows.drain(..) {
            if let Err(error) = current.writer.push(row) {
                return Exit::Failed(error.to_string());
            }
        }
        current.record_bytes += record.payload.len() as u64;
        position = record.offset + 1;
        last_timestamp_ms = record.timestamp_ms.or(last_timestamp_ms);
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// What to tell an operator when the digest is `lag_ms` behind and Kafka keeps records
/// `retention_ms` (`None`: forever): past half the retention the margin is gone, past all
/// of it records are being deleted unread.
fn retention_risk(lag_ms: u64, retention_ms: Option<u64>) -> Option<String> {
    let retention = retention_ms?;
    if lag_ms.saturating_mul(2) <= retention {
        return None;
    }
    let what = if lag_ms >= retention { "records are being deleted by Kafka before the digest reads them" } else { "past half of it" };
    Some(format!(
        "the digest is {}s behind and the ingest topic keeps records {}s (retention.ms): {what}; add digesting cores, find what slows the digest (weir_digest_lag_records), or raise retention.ms",
        lag_ms / 1000,
        retention / 1000
    ))
}

fn offset_gone(partition: u32, error: ReadError) -> Exit {
    metrics::counter!("weir_digest_offset_gone_total", "partition" => partition.to_string()).increment(1);
    Exit::OffsetGone(error)
}

fn start_segment(ctx: &Context, partition: u32, epoch: u64, offset_start: u64) -> Result<Building, String> {
    // Unique even when the same node digests the same range twice (a refused registration
    // retried under a new epoch): the epoch and a per-node nonce are in the name.
    let nonce = blake3::hash(format!("{}:{:?}", ctx.node_id, std::time::SystemTime::now()).as_bytes()).to_hex();
    let segment_id = format!("p{partition}-o{offset_start}-e{epoch}-{}", &nonce[..8]);
    let pending = ctx.pending.hold(&segment_id);
    let meta = SegmentMeta { segment_id, partition: partition as i32, offset_start: offset_start as i64 };
    let writer = SegmentWriter::create(&ctx.data_dir.segments_dir(), meta).map_err(|e| e.to_string())?;
    Ok(Building { writer, offset_start, started: Instant::now(), record_bytes: 0, stored: StoredSet::default(), _pending: pending })
}

/// Finishes the segment at `offset_end`, registers it, and deletes it if Global refused it.
fn flush(ctx: &Context, partition: u32, epoch: u64, done: Building, offset_end: u64, cancel: &CancellationToken) -> Result<(), Exit> {
    let started = Instant::now();
    let dedup = done.stored.to_stored();
    let written = done.writer.finish(offset_end as i64).map_err(|e| Exit::Failed(e.to_string()))?;
    let info = segment_info(&written, done.offset_start, offset_end);
    let command =
        Command::new(format!("register:{}", info.segment_id), ctx.node_id.clone(), Cmd::RegisterSegment { epoch, segment: info.clone(), dedup });
    let refused = |reason: Rejection, exit: fn(Rejection) -> Exit| {
        if let Err(error) = std::fs::remove_file(&written.path) {
            tracing::warn!(path = %written.path.display(), %error, "cannot delete a refused segment");
        }
        Err(exit(reason))
    };
    // A refusal of a registration Global holds anyway (a retry answered after its first
    // copy applied, no longer recognised as one) is no refusal: the file is the only copy.
    let outcome = submit(ctx, &command, cancel).map(|outcome| match outcome {
        Outcome::Rejected { reason } if ctx.global.read(|s| s.holds(&info)) => {
            tracing::info!(segment = %info.segment_id, %reason, "registration refused as a retry, but Global holds the segment: kept");
            Outcome::Applied
        }
        other => other,
    });
    match outcome {
        None => {
            // Shutdown before Global answered: the file may or may not be registered; a
            // registered one is found by `segments verify`, an unregistered one is garbage
            // the next start's cleanup removes.
            Err(Exit::Shutdown)
        }
        Some(Outcome::Applied) => {
            metrics::counter!("weir_digest_segments_total").increment(1);
            metrics::counter!("weir_digest_segment_bytes_total").increment(written.bytes);
            metrics::histogram!("weir_digest_flush_seconds").record(started.elapsed().as_secs_f64());
            tracing::debug!(partition, segment = %written.segment_id, offsets = ?(done.offset_start, offset_end), events = written.n_events, "segment registered");
            // Where the file is, for other cores' queries (and for replication to count).
            // Its hash was computed on the bytes as written; a lost copy command only
            // means queries elsewhere cannot find the file until `segments` tooling or
            // replication adds it: the segment itself is registered.
            let copy = node_copy(&written.segment_id, &written.blake3_hex, &ctx.node_id, &ctx.disk_id);
            match submit(ctx, &copy, cancel) {
                Some(Outcome::Applied) | None => {}
                Some(Outcome::Rejected { reason }) => tracing::warn!(segment = %written.segment_id, %reason, "copy not recorded"),
            }
            Ok(())
        }
        Some(Outcome::Rejected { reason }) => match reason {
            Rejection::StaleEpoch { .. } | Rejection::NotOwner { .. } => refused(reason, Exit::Superseded),
            other => refused(other, Exit::Refused),
        },
    }
}

/// Submits until Global answers (a retry re-sends the same command id, which Global
/// applies at most once); `None` on shutdown.
pub(super) fn submit(ctx: &Context, command: &Command, cancel: &CancellationToken) -> Option<Outcome> {
    loop {
        match ctx.runtime.block_on(ctx.global.submit(command)) {
            Ok((_, Outcome::Rejected { reason: Rejection::DuplicateCommand { first_applied: true, .. } })) => return Some(Outcome::Applied),
            Ok((_, outcome)) => return Some(outcome),
            Err(error) => tracing::warn!(id = %command.id, %error, "segment registration not confirmed, retrying"),
        }
        if cancel.is_cancelled() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::retention_risk;

    #[test]
    fn a_digest_lag_past_half_the_retention_is_a_warning_and_past_all_of_it_says_records_go_unread() {
        let day = 86_400_000;
        assert_eq!(retention_risk(0, Some(day)), None);
        assert_eq!(retention_risk(day / 2, Some(day)), None, "exactly half is still in margin");
        let half = retention_risk(day / 2 + 1000, Some(day)).expect("past half");
        assert!(half.contains("past half of it") && half.contains("86400s"), "{half}");
        let all = retention_risk(day, Some(day)).expect("past all");
        assert!(all.contains("deleted by Kafka before the digest reads them"), "{all}");
        assert_eq!(retention_risk(u64::MAX, None), None, "records kept forever");
    }
}
