//! `weir-core reparse`: rebuild the segments of a repository and time range from their
//! stored raw text with another parser (or parser version), and swap them in Global with
//! one `replace_segments` command.
//!
//! The new files are written in this run's own staging directory (`store::staging`, out of
//! the sweep's reach), each staged in Global (`stage_segment`, with the batch parts of the
//! segment it replaces), then moved into `segments/` and its copy recorded: only a staged
//! segment with a copy may be swapped in, so the swap never leaves offsets without a file.
//! One swap command, so a reader that takes its segment list from one Global state sees
//! either every old segment or every new one: each event once. The new files cover exactly the
//! old offset ranges (Global refuses anything else); events of other repositories, and of
//! the repository outside the time range, are copied unchanged. The old files are deleted
//! after a grace period, so a query that listed them just before the swap can finish.
//!
//! Segments whose files are on other cores are fetched from them first, over the peer
//! channel the read API uses (the node's own certificate, blake3 checked against Global),
//! into this node's fetched-segment directory; the new files are this node's. Old files
//! on other cores stop being registered with the swap and are removed by those cores'
//! sweep for unregistered files (`store::sweep`, every 10 minutes, files older than that).
//!
//! Must never: change which events a segment holds or its offsets, or delete an old file
//! before Global applied the swap.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_global::{Cmd, Command, Outcome, SegmentInfo};
use weir_plugin_host::{ParserRegistry, RawEvent};
use weir_segment::{SegmentMeta, SegmentReader, SegmentRow, SegmentWriter};

use super::DataDir;
use super::staging::Staging;
use crate::cluster::GlobalLog;
use crate::cluster::commands::{node_copy, segment_info};
use crate::config::CoreConfig;
use crate::digest::rows::split_fields;
use crate::read::locate::SegmentFiles;

/// What to re-parse.
#[derive(Debug, Clone)]
pub struct Request {
    pub repository: String,
    pub from_ms: i64,
    pub to_ms: i64,
    /// A parser configured in `[parsers]`; `None`: the repository's parser as the digest
    /// would choose it now (after a plugin upgrade).
    pub parser: Option<String>,
    /// How long old files stay after the swap.
    pub grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ReparseError {
    #[error(transparent)]
    Global(#[from] crate::cluster::GlobalError),
    #[error("invalid parser plugin setup: {0}")]
    Parsers(#[from] weir_plugin_host::Error),
    #[error("no parser named {0:?} is configured in [parsers]")]
    UnknownParser(String),
    #[error("repository {0:?} has no parser (none named, none in [parsers.by_repository], no default): name one with --parser")]
    NoParser(String),
    #[error("Global did not catch up: {0}")]
    NotReady(String),
    #[error("segments {0:?} are not on this node and this node has no [quic] section to fetch them from other cores: run reparse on the node that has them")]
    NotLocal(Vec<String>),
    #[error("cannot fetch a segment from another core: {0}")]
    Fetch(#[from] crate::peer::FetchError),
    #[error("cannot set up fetching from other cores: {0}")]
    PeerSetup(#[from] crate::peer::PeerSetupError),
    #[error(transparent)]
    Segment(#[from] weir_segment::SegmentError),
    #[error("Global refused the swap: {0}")]
    Refused(weir_global::Rejection),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What a re-parse did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub old: Vec<String>,
    pub new: Vec<String>,
    pub reparsed_events: u64,
    pub failed_events: u64,
}

/// Runs a re-parse against the node of `config` (run it on that node's host: it reads and
/// writes `<data_dir>/segments`). Reads Global with a consumer of its own; its snapshot
/// goes to this run's staging directory, never over the node's.
pub async fn run(config: &CoreConfig, request: &Request, progress: impl Fn(String)) -> Result<Summary, ReparseError> {
    let data_dir = DataDir::new(&config.data_dir);
    let staging = Staging::create(&data_dir, &format!("reparse-{}", std::process::id()))?;
    let scratch = DataDir::new(staging.path().join("global"));
    std::fs::create_dir_all(scratch.root())?;
    let mut own = config.clone();
    own.node_id = format!("{}-reparse", config.node_id);
    own.data_dir = scratch.root().to_owned();
    // Start from the node's snapshot when there is one: only the rest of the topic is read.
    let _ = std::fs::copy(data_dir.snapshot_path(), scratch.snapshot_path());
    let global = GlobalLog::open(&own)?;
    let shutdown = CancellationToken::new();
    let applier = tokio::spawn(global.clone().run(own.kafka.clone(), own.global.clone(), shutdown.clone()));
    let result = swap(config, request, &global, &staging, &progress).await;
    shutdown.cancel();
    let _ = applier.await;
    drop(staging);
    let summary = result?;
    if !summary.old.is_empty() {
        progress(format!("swapped {} segments; old files are deleted in {} s", summary.old.len(), request.grace.as_secs()));
        tokio::time::sleep(request.grace).await;
        // This node's old files, and the copies it fetched; other cores remove theirs.
        for id in &summary.old {
            for path in [data_dir.segment_path(id), data_dir.fetched_path(id)] {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => tracing::warn!(path = %path.display(), %error, "cannot delete a replaced segment"),
                }
            }
        }
    }
    Ok(summary)
}

async fn swap(
    config: &CoreConfig,
    request: &Request,
    global: &Arc<GlobalLog>,
    staging: &Staging,
    progress: &impl Fn(String),
) -> Result<Summary, ReparseError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Some(reason) = global.not_ready() {
        if tokio::time::Instant::now() > deadline {
            return Err(ReparseError::NotReady(reason));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let selected: Vec<SegmentInfo> = global.read(|state| {
        state.segments_overlapping(&request.repository, request.from_ms, request.to_ms).into_iter().map(|s| s.info.clone()).collect()
    });
    if selected.is_empty() {
        progress(format!("no segment of {} holds events between {} and {}", request.repository, request.from_ms, request.to_ms));
        return Ok(Summary::default());
    }
    let data_dir = DataDir::new(&config.data_dir);
    let disk_id = data_dir.disk_id()?;
    let dir = staging.path().to_owned();
    let missing: Vec<String> = selected
        .iter()
        .filter(|s| !data_dir.segment_path(&s.segment_id).is_file())
        .map(|s| s.segment_id.clone())
        .collect();
    let files = match (&config.quic, missing.is_empty()) {
        (_, true) => None,
        (None, false) => return Err(ReparseError::NotLocal(missing)),
        (Some(_), false) => Some(SegmentFiles::open(config, global.clone())?),
    };
    let registry = Arc::new(crate::digest::load_parsers(&config.parsers).await?);
    let parser = match &request.parser {
        Some(name) if registry.parsers().any(|p| p == name) => name.clone(),
        Some(name) => return Err(ReparseError::UnknownParser(name.clone())),
        None => registry.parser_for(&request.repository, None).map(str::to_owned).ok_or_else(|| ReparseError::NoParser(request.repository.clone()))?,
    };
    let mut summary = Summary::default();
    let mut new = Vec::new();
    for (i, old) in selected.iter().enumerate() {
        let source = match &files {
            Some(files) if missing.contains(&old.segment_id) => {
                let path = files.local_path(old).await?;
                progress(format!("fetched segment {} from another core", old.segment_id));
                path
            }
            _ => data_dir.segment_path(&old.segment_id),
        };
        let (registry, old_info, dir, request, parser) = (registry.clone(), old.clone(), dir.clone(), request.clone(), parser.clone());
        let (info, reparsed, failed) =
            tokio::task::spawn_blocking(move || rewrite(&registry, &parser, &old_info, &source, &dir, &request)).await.expect("rewrite task")?;
        summary.reparsed_events += reparsed;
        summary.failed_events += failed;
        summary.old.push(old.segment_id.clone());
        summary.new.push(info.segment_id.clone());
        new.push(info);
        progress(format!("re-parsed segment {} of {}: {} ({reparsed} events)", i + 1, selected.len(), old.segment_id));
    }
    let issuer = format!("{}-reparse", config.node_id);
    // Stage, move in, record the copy: each new file is known to Global before it enters
    // `segments/`, so no sweep takes it.
    let mut staged = Vec::new();
    let outcome = async {
        for (info, old) in new.iter().zip(&selected) {
            let stored = global.read(|s| s.segment(&old.segment_id).map(|s| s.stored.clone())).unwrap_or_default();
            let stage = Command::new(format!("stage:{}", info.segment_id), issuer.clone(), Cmd::StageSegment { segment: info.clone(), stored });
            match global.submit(&stage).await? {
                (_, Outcome::Applied) => staged.push(info.segment_id.clone()),
                (_, Outcome::Rejected { reason }) => return Ok(Err(reason)),
            }
            staging.promote(&data_dir, &info.segment_id)?;
            match global.submit(&node_copy(&info.segment_id, &info.blake3, &config.node_id, &disk_id)).await? {
                (_, Outcome::Applied) => {}
                (_, Outcome::Rejected { reason }) => return Ok(Err(reason)),
            }
        }
        let swap = Command::new(
            format!("reparse:{}", summary.new.join(",")),
            issuer.clone(),
            Cmd::ReplaceSegments { old: summary.old.clone(), new: summary.new.clone(), at_ms: weir_proto::event::now_ms().max(0) as u64 },
        );
        Ok::<_, ReparseError>(match global.submit(&swap).await? {
            (_, Outcome::Applied) => Ok(()),
            (_, Outcome::Rejected { reason }) => Err(reason),
        })
    }
    .await;
    match outcome {
        Ok(Ok(())) => Ok(summary),
        Ok(Err(reason)) => {
            // Refused (a race with another reparse, a stale disk): the staged segments and
            // their files go; the old ones stay as they were.
            for id in &staged {
                let drop = Command::new(format!("unstage:{id}"), issuer.clone(), Cmd::DropStaged { segment_id: id.clone() });
                if let Ok((_, Outcome::Applied)) = global.submit(&drop).await {
                    let _ = std::fs::remove_file(data_dir.segment_path(id));
                }
            }
            Err(ReparseError::Refused(reason))
        }
        Err(error) => {
            // Unknown whether the last command applied: keep what is staged (its files are
            // known to Global, `segments verify` names them; the next reparse can replace
            // the old segments again).
            Err(error)
        }
    }
}

/// Writes the re-parsed copy of one segment (its file at `source`) into `dir`; returns its
/// Global entry and the counts.
fn rewrite(
    registry: &ParserRegistry,
    parser: &str,
    old: &SegmentInfo,
    source: &std::path::Path,
    dir: &std::path::Path,
    request: &Request,
) -> Result<(SegmentInfo, u64, u64), ReparseError> {
    let reader = SegmentReader::open(source)?;
    let nonce = blake3::hash(format!("{}:{:?}", old.segment_id, std::time::SystemTime::now()).as_bytes()).to_hex();
    let segment_id = format!("p{}-o{}-r{}", old.partition, old.offset_start, &nonce[..12]);
    let meta = SegmentMeta { segment_id, partition: old.partition as i32, offset_start: old.offset_start as i64 };
    let mut writer = SegmentWriter::create(dir, meta)?;
    let (mut reparsed, mut failed) = (0, 0);
    let mut pending: Vec<SegmentRow> = Vec::new();
    let in_range = |row: &SegmentRow| row.repository == request.repository && row.timestamp_ms >= request.from_ms && row.timestamp_ms <= request.to_ms;
    for row in reader.all_rows()? {
        let row = row?;
        if !in_range(&row) {
            writer.push(row)?;
            continue;
        }
        pending.push(row);
        if pending.len() >= 1024 {
            let (r, f) = reparse_rows(registry, parser, std::mem::take(&mut pending), &mut writer)?;
            (reparsed, failed) = (reparsed + r, failed + f);
        }
    }
    let (r, f) = reparse_rows(registry, parser, pending, &mut writer)?;
    (reparsed, failed) = (reparsed + r, failed + f);
    let written = writer.finish(old.offset_end as i64)?;
    Ok((segment_info(&written, old.offset_start, old.offset_end), reparsed, failed))
}

/// Parses the raw text of `rows` again. One row in, one row out: the event keeps its id,
/// offset, tags, ingest time and the fields it had (client attributes, and fields of the
/// former parser the new one does not set); the new parser's fields, timestamp and error
/// state replace the old ones. A plugin answering with a different number of events is
/// asked again one event at a time, and an event it drops keeps its old row.
fn reparse_rows(registry: &ParserRegistry, parser: &str, rows: Vec<SegmentRow>, writer: &mut SegmentWriter) -> Result<(u64, u64), ReparseError> {
    let raw = |row: &SegmentRow| RawEvent {
        raw: row.raw.clone(),
        repository: row.repository.clone(),
        tags: row.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ingest_time_ns: row.ingest_timestamp_ms.saturating_mul(1_000_000),
    };
    let parsed = registry.parse_with(parser, rows.iter().map(raw).collect()).unwrap_or_default();
    let parsed: Vec<Option<weir_plugin_host::Event>> = if parsed.len() == rows.len() {
        parsed.into_iter().map(Some).collect()
    } else {
        rows.iter().map(|row| registry.parse_with(parser, vec![raw(row)]).and_then(|mut events| (events.len() == 1).then(|| events.remove(0)))).collect()
    };
    let (mut reparsed, mut failed) = (0, 0);
    for (mut row, event) in rows.into_iter().zip(parsed) {
        if let Some(event) = event {
            let columns = split_fields(event.fields, &mut row.fields, parser);
            (row.parser, row.error) = (Some(columns.parser), columns.error);
            failed += u64::from(row.error.is_some());
            if let Some(ts) = event.timestamp_ns {
                row.timestamp_ms = ts.div_euclid(1_000_000);
            }
            row.raw = event.raw;
            reparsed += 1;
        }
        writer.push(row)?;
    }
    Ok((reparsed, failed))
}

/// `--from`/`--to`: every form the query API's `start`/`end` take
/// (`weir_query::time::parse_text`: `now`, milliseconds since the epoch, `15m`, `24hours`,
/// `2 days`, ...), and RFC 3339 (`2026-11-30T12:00:00Z`).
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    if let Ok(t) = time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    weir_query::time::parse_text(text, now_ms).map_err(|reason| {
        format!("{text:?} is not a time ({reason}): give milliseconds since the epoch, RFC 3339 (2026-11-30T12:00:00Z), a duration ago (15m, 24hours, 7d) or now")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_documented_form() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("1700000000000", now), Ok(1_700_000_000_000));
        assert_eq!(parse_time("15m", now), Ok(now - 900_000));
        assert_eq!(parse_time("2d", now), Ok(now - 2 * 86_400_000));
        // The query API's forms, which reparse once lacked.
        assert_eq!(parse_time("24hours", now), Ok(now - 86_400_000));
        assert_eq!(parse_time("2 days", now), Ok(now - 2 * 86_400_000));
        assert_eq!(parse_time("1w", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z", now), Ok(1_700_000_000_000));
        assert!(parse_time("yesterday", now).unwrap_err().contains("RFC 3339"));
    }
}
