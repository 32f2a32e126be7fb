//! Re-digesting a lost segment: one whose range Global still needs but of which no copy is
//! reachable (its only holders dead longer than the node timeout, no bucket copy, or
//! registered with no copy at all). Kafka still holds its records unless they were
//! truncated, and truncation only passes segments that were safe; so the partition's owner
//! reads `[offset_start, offset_end)` again and stores exactly the batch parts the lost
//! segment stored (its own list in Global, not today's dedup window, which moved on), each
//! once, then swaps the new file in with `supersede_segment` under its epoch (I4: each
//! event once, whatever happened to the dedup window since).
//!
//! The new file is written in a staging directory of its own, staged in Global, moved into
//! `segments/`, its copy recorded, and only then superseded: never a moment with the range
//! unaccounted for. Must never: run on a partition this node does not own, store a batch
//! part the lost segment did not store, or read past its range.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use std::collections::{BTreeMap, BTreeSet};

use weir_global::{Cmd, Command, Dedup, Location, Outcome, Segment, State, StoredBatches};
use weir_segment::{SegmentMeta, SegmentRow, SegmentWriter};

use super::partition::{Context, submit};
use super::rows::{RowBuilder, StoredSet};
use crate::cluster::commands::{attempt, node_copy, segment_info};
use crate::kafka::ingest_reader::{PartitionReader, ReadError, RecordBatch};
use crate::store::staging::Staging;

/// Why a re-digest did not swap a new segment in.
#[derive(Debug, thiserror::Error)]
pub enum RedigestError {
    #[error("Kafka no longer holds the lost segment's records: {0}; its events are lost unless a copy comes back")]
    Gone(ReadError),
    #[error("cannot read the lost segment's range from Kafka: {0}")]
    Read(ReadError),
    #[error("cannot write the new segment: {0}")]
    Write(String),
    #[error("Global refused the re-digested segment: {0}")]
    Refused(weir_global::Rejection),
    #[error("stopped")]
    Shutdown,
}

/// The registered segments of the partitions `node_id` owns that no live node and no
/// bucket holds (`live` decides which nodes are live), by partition and offset. Segments
/// below the partition's truncation are not listed: Kafka has nothing to re-read there.
pub fn lost<'a>(state: &'a State, node_id: &str, live: impl Fn(&str) -> bool) -> Vec<&'a Segment> {
    state
        .partitions()
        .filter(|p| state.partition(*p).owner.as_deref() == Some(node_id))
        .flat_map(|p| {
            let truncated = state.partition(p).truncated;
            state.segments(p).into_iter().filter(move |s| s.info.offset_start >= truncated)
        })
        .filter(|segment| {
            let in_bucket = segment.copies.iter().any(|l| matches!(l, Location::Bucket(_)));
            !in_bucket && state.counted_node_copies(segment, &live).next().is_none()
        })
        .collect()
}

/// Exactly the batch parts a segment stored: its whole batches as seq ranges and its parts
/// of split batches, per edge incarnation. No window: a segment's own list is kept whole.
#[derive(Debug, Default)]
pub struct Wanted {
    by_incarnation: BTreeMap<(String, String), (Vec<(u64, u64)>, BTreeSet<(u64, u32, u32)>)>,
}

impl Wanted {
    pub fn new(stored: &[StoredBatches]) -> Wanted {
        let mut wanted = Wanted::default();
        for batches in stored {
            let entry = wanted.by_incarnation.entry((batches.edge_id.clone(), batches.incarnation.clone())).or_default();
            entry.0.extend(batches.whole.iter().copied());
            entry.1.extend(batches.parts.iter().map(|p| (p.seq, p.part, p.parts)));
        }
        for (ranges, _) in wanted.by_incarnation.values_mut() {
            ranges.sort_unstable();
        }
        wanted
    }

    /// Whether the segment stored this part of this batch (a single-record batch among its
    /// whole ones, a part of a split batch among its parts).
    pub fn contains(&self, batch: &RecordBatch) -> bool {
        let Some((ranges, parts)) = self.by_incarnation.get(&(batch.id.edge_id.clone(), batch.id.incarnation.clone())) else { return false };
        let seq = batch.id.seq;
        let i = ranges.partition_point(|&(s, _)| s <= seq);
        let in_whole = i > 0 && seq < ranges[i - 1].1;
        in_whole || parts.contains(&(seq, batch.part, batch.parts))
    }
}

/// Re-digests `old` under `epoch` and supersedes it; returns the new segment's id.
pub fn run(ctx: &Context, epoch: u64, old: &Segment, cancel: &CancellationToken) -> Result<String, RedigestError> {
    let info = &old.info;
    let (partition, start, end) = (info.partition, info.offset_start, info.offset_end);
    tracing::warn!(segment = %info.segment_id, partition, range = ?(start, end), "no copy of the segment is reachable: re-digesting its range from Kafka");
    let staging = Staging::create(&ctx.data_dir, &format!("redigest-{}", info.segment_id)).map_err(|e| RedigestError::Write(e.to_string()))?;
    let reader = PartitionReader::open(&ctx.kafka, &ctx.node_id, partition, start).map_err(|error| match error {
        error @ ReadError::OffsetGone { .. } => RedigestError::Gone(error),
        error => RedigestError::Read(error),
    })?;
    let segment_id = format!("p{partition}-o{start}-e{epoch}-r{}", attempt());
    let meta = SegmentMeta { segment_id: segment_id.clone(), partition: partition as i32, offset_start: start as i64 };
    let mut writer = SegmentWriter::create(staging.path(), meta).map_err(|e| RedigestError::Write(e.to_string()))?;
    // What the lost segment stored, and what this run stored already (a part twice in the
    // range was kept once the first time).
    let wanted = Wanted::new(&old.stored);
    let (mut seen, mut stored, mut rows) = (Dedup::default(), StoredSet::default(), Vec::<SegmentRow>::new());
    let builder = RowBuilder { partition, parsers: ctx.parsers.as_deref(), foreign_repository: &ctx.config.foreign_repository };
    let mut position = start;
    let mut idle_since = Instant::now();
    while position < end {
        if cancel.is_cancelled() {
            return Err(RedigestError::Shutdown);
        }
        let record = match reader.poll(Duration::from_millis(200), position) {
            Ok(Some(record)) => record,
            Ok(None) => {
                // The range may end in offsets without a record (transaction markers).
                let past = reader.high_watermark().is_some_and(|high| high >= end);
                if past && idle_since.elapsed() > Duration::from_secs(2) {
                    break;
                }
                continue;
            }
            Err(error @ ReadError::OffsetGone { .. }) => return Err(RedigestError::Gone(error)),
            Err(error) => return Err(RedigestError::Read(error)),
        };
        idle_since = Instant::now();
        if record.offset < position {
            continue;
        }
        if record.offset >= end {
            break;
        }
        position = record.offset + 1;
        if let Some(batch) = &record.batch
            && !wanted.contains(batch)
        {
            // A part the lost segment dropped as stored before it: drop it again.
            continue;
        }
        rows.clear();
        builder.rows(&record, &mut seen, &mut stored, &mut rows);
        for row in rows.drain(..) {
            writer.push(row).map_err(|e| RedigestError::Write(e.to_string()))?;
        }
    }
    let written = writer.finish(end as i64).map_err(|e| RedigestError::Write(e.to_string()))?;
    let new = segment_info(&written, start, end);
    let say = |command: Command| match submit(ctx, &command, cancel) {
        Some(Outcome::Applied) => Ok(()),
        Some(Outcome::Rejected { reason }) => Err(RedigestError::Refused(reason)),
        None => Err(RedigestError::Shutdown),
    };
    say(Command::new(format!("stage:{segment_id}"), ctx.node_id.clone(), Cmd::StageSegment { segment: new.clone(), stored: old.stored.clone() }))?;
    staging.promote(&ctx.data_dir, &segment_id).map_err(|e| RedigestError::Write(e.to_string()))?;
    let swapped = say(node_copy(&segment_id, &new.blake3, &ctx.node_id, &ctx.disk_id)).and_then(|()| {
        say(Command::new(format!("supersede:{}:{segment_id}", info.segment_id), ctx.node_id.clone(), Cmd::SupersedeSegment { epoch, old: info.segment_id.clone(), new: segment_id.clone() }))
    });
    if let Err(error) = swapped {
        // Refused (a copy came back, the partition moved on): the staged segment goes.
        let _ = submit(ctx, &Command::new(format!("unstage:{segment_id}"), ctx.node_id.clone(), Cmd::DropStaged { segment_id: segment_id.clone() }), cancel);
        let _ = std::fs::remove_file(ctx.data_dir.segment_path(&segment_id));
        return Err(error);
    }
    metrics::counter!("weir_segments_redigested_total").increment(1);
    tracing::info!(old = %info.segment_id, new = %segment_id, events = written.n_events, "lost segment re-digested and superseded");
    Ok(segment_id)
}

#[cfg(test)]
mod tests {
    use weir_global::StoredPart;
    use weir_proto::wire::BatchId;

    use super::*;

    #[test]
    fn wanted_is_exactly_the_lost_segments_list_however_long() {
        let stored = vec![StoredBatches {
            edge_id: "e".into(),
            incarnation: "i".into(),
            // Far more seqs than any dedup window keeps.
            whole: vec![(0, 3), (10, 100_000)],
            parts: vec![StoredPart { seq: 5, part: 1, parts: 3 }],
        }];
        let wanted = Wanted::new(&stored);
        let batch = |inc: &str, seq, part, parts| RecordBatch { id: BatchId { edge_id: "e".into(), incarnation: inc.into(), seq }, part, parts };
        for (b, expected) in [
            (batch("i", 0, 0, 1), true),
            (batch("i", 2, 0, 1), true),
            (batch("i", 3, 0, 1), false),
            (batch("i", 10, 0, 1), true),
            (batch("i", 99_999, 0, 1), true),
            (batch("i", 100_000, 0, 1), false),
            (batch("i", 5, 1, 3), true),
            (batch("i", 5, 0, 3), false),
            (batch("i", 5, 1, 2), false),
            (batch("j", 0, 0, 1), false),
        ] {
            assert_eq!(wanted.contains(&b), expected, "{b:?}");
        }
    }
}
