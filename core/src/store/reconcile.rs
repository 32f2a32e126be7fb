//! At start, once this node's first command applied (so Global holds everything an
//! earlier run of it wrote): make the copies Global records for this node match the files
//! on its disk.
//!
//! - a copy of this node whose file is missing, fails its blake3, or was recorded for
//!   another disk id (an older one, or none: version 1) is removed (`remove_copy`);
//! - a file of a segment Global knows (registered or staged) with no copy of this node on
//!   its current disk is hashed, and recorded (`add_copy`) if its bytes are Global's: a
//!   crash between `register_segment` and `add_copy` left it with none;
//! - a file whose bytes are not Global's is renamed `<id>.parquet.damaged` (kept for the
//!   operator, never served, never swept) and its copy, if any, removed.
//!
//! [`scrub`] runs the same pass again every `storage.scrub_interval_ms`.
//!
//! Orphans (files Global does not know) are the sweep's ([`super::sweep`]). Must never
//! record a copy it did not hash, nor remove a copy of another node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use weir_global::{Location, Outcome};

use super::DataDir;
use crate::cluster::GlobalLog;
use crate::cluster::commands::{node_copy, remove_copy};

/// What a reconciliation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub checked_files: usize,
    pub copies_added: usize,
    pub copies_removed: usize,
    pub damaged: usize,
    /// Commands Global did not confirm (retried by the next start).
    pub unconfirmed: usize,
}

/// A change to this node's copies in Global.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fix {
    Add { segment_id: String, blake3: String },
    Remove { segment_id: String, location: Location, reason: String },
    Damaged { segment_id: String, path: PathBuf },
}

/// Reconciles this node's copies with its disk; hashes files off the async workers.
pub async fn run(global: &GlobalLog, data_dir: &DataDir, node_id: &str, disk_id: &str) -> std::io::Result<Report> {
    // Global first, then the disk: a file is on disk before its copy is recorded, so every
    // copy of this node in the state read has its file in the listing that follows (unless
    // it was deleted since, which only happens to segments Global no longer holds). The
    // other order would remove the copy of a segment the digest registered in between.
    let state = global.state();
    let files = data_dir.segment_files()?;
    let (node, disk) = (node_id.to_owned(), disk_id.to_owned());
    let fixes = tokio::task::spawn_blocking(move || plan(&state, &files, &node, &disk, |path| weir_segment::blake3_of_file(path).map_err(std::io::Error::other)))
        .await
        .expect("reconcile task")?;
    let mut report = Report { checked_files: fixes.1, ..Report::default() };
    for fix in fixes.0 {
        let command = match &fix {
            Fix::Add { segment_id, blake3 } => node_copy(segment_id, blake3, node_id, disk_id),
            Fix::Remove { segment_id, location, reason } => remove_copy(segment_id, location.clone(), node_id, reason),
            Fix::Damaged { segment_id, path } => {
                let aside = path.with_extension("parquet.damaged");
                tracing::error!(segment = %segment_id, file = %path.display(), moved_to = %aside.display(), "segment file does not match Global's blake3: set aside");
                std::fs::rename(path, &aside)?;
                report.damaged += 1;
                continue;
            }
        };
        match global.submit(&command).await {
            Ok((_, Outcome::Applied)) => match fix {
                Fix::Add { .. } => report.copies_added += 1,
                _ => report.copies_removed += 1,
            },
            Ok((_, Outcome::Rejected { reason })) => tracing::warn!(id = %command.id, %reason, "reconciliation command refused"),
            Err(error) => {
                tracing::warn!(id = %command.id, %error, "reconciliation command not confirmed");
                report.unconfirmed += 1;
            }
        }
    }
    metrics::counter!("weir_segment_files_checked_total").increment(report.checked_files as u64);
    metrics::counter!("weir_segment_files_damaged_total").increment(report.damaged as u64);
    Ok(report)
}

/// The same check, again every `interval` while the node runs (a scrub; zero: never), so
/// flipped bytes on a disk are found before a query or a replica needs the file: the file
/// is set aside and its copy removed, after which another copy (a replica fetched back by
/// replication, or the bucket's) serves it.
pub async fn scrub(global: std::sync::Arc<GlobalLog>, data_dir: DataDir, node_id: String, disk_id: String, interval: std::time::Duration, shutdown: tokio_util::sync::CancellationToken) {
    if interval.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        // Only once this process's own first command applied: the start-up pass runs first.
        if !global.own_command_applied() {
            continue;
        }
        match run(&global, &data_dir, &node_id, &disk_id).await {
            Ok(report) if report.damaged > 0 || report.copies_removed > 0 || report.copies_added > 0 => {
                tracing::warn!(?report, "scrub: this node's copies did not match its disk; fixed")
            }
            Ok(report) => tracing::debug!(?report, "scrub: every segment file matches Global"),
            Err(error) => tracing::warn!(%error, "scrub: cannot check this node's segment files"),
        }
    }
}

/// The fixes for `files` (this node's segment files) against `state`, and how many files
/// were hashed. Pure but for `hash`, so the rules are tested without Kafka.
fn plan(
    state: &weir_global::State,
    files: &[PathBuf],
    node_id: &str,
    disk_id: &str,
    hash: impl Fn(&Path) -> std::io::Result<String>,
) -> std::io::Result<(Vec<Fix>, usize)> {
    let on_disk: BTreeMap<&str, &PathBuf> = files.iter().filter_map(|p| Some((super::data_dir::segment_id(p)?, p))).collect();
    let mut fixes = Vec::new();
    let mut hashed = 0;
    // Segment ids Global knows, with this node's copies of each.
    let mine = |segment: &weir_global::Segment| -> Vec<Location> {
        segment.copies.iter().filter(|l| l.node_id() == Some(node_id)).cloned().collect()
    };
    let mut known: Vec<&weir_global::Segment> = state.partitions().flat_map(|p| state.segments(p)).collect();
    known.extend(files.iter().filter_map(|p| state.segment(super::data_dir::segment_id(p)?)).filter(|s| s.staged));
    // Copies on segments Global has but this node has no file for (or another disk).
    for segment in &known {
        let id = segment.info.segment_id.as_str();
        let current = Location::node(node_id, disk_id);
        let file = on_disk.get(id);
        let good = match file {
            Some(path) => {
                hashed += 1;
                let got = hash(path)?;
                if got == segment.info.blake3 {
                    true
                } else {
                    fixes.push(Fix::Damaged { segment_id: id.to_owned(), path: (*path).clone() });
                    false
                }
            }
            None => false,
        };
        for location in mine(segment) {
            if location != current || !good {
                let reason = match (file.is_some(), good) {
                    (false, _) => "file missing",
                    (true, false) => "file does not match its blake3",
                    (true, true) => "recorded for another disk of this node",
                };
                fixes.push(Fix::Remove { segment_id: id.to_owned(), location, reason: reason.to_owned() });
            }
        }
        if good && !segment.copies.contains(&current) {
            fixes.push(Fix::Add { segment_id: id.to_owned(), blake3: segment.info.blake3.clone() });
        }
    }
    Ok((fixes, hashed))
}

#[cfg(test)]
mod tests {
    use weir_global::{Addresses, Cmd, Command, SegmentInfo, State};

    use super::*;

    fn seg(id: &str, start: u64, end: u64) -> SegmentInfo {
        SegmentInfo {
            segment_id: id.into(),
            partition: 0,
            offset_start: start,
            offset_end: end,
            n_events: 1,
            repositories: vec!["r".into()],
            min_ts_ms: 0,
            max_ts_ms: 0,
            bytes: 1,
            blake3: blake3::hash(id.as_bytes()).to_hex().to_string(),
        }
    }

    #[test]
    fn copies_follow_the_files_on_this_disk() {
        let mut state = State::default();
        let hb = |node: &str, disk: &str, at_ms| Cmd::NodeHeartbeat {
            node_id: node.into(),
            addresses: Addresses { http: "a:1".into(), quic: None },
            zone: "z".into(),
            at_ms,
            digest: true,
            disk_id: disk.into(),
        };
        let (ok, gone, bad, uncopied, old_disk) = (seg("ok", 0, 1), seg("gone", 1, 2), seg("bad", 2, 3), seg("uncopied", 3, 4), seg("old-disk", 4, 5));
        let mut log = vec![
            Command::new("h", "a", hb("a", "d1", 1)),
            Command::new("c", "a", Cmd::ClaimPartition { partition: 0, node_id: "a".into(), epoch: 1 }),
        ];
        for s in [&ok, &gone, &bad, &uncopied, &old_disk] {
            log.push(Command::new(format!("r-{}", s.segment_id), "a", Cmd::RegisterSegment { epoch: 1, segment: s.clone(), dedup: vec![] }));
        }
        for s in [&ok, &gone, &bad, &old_disk] {
            log.push(node_copy(&s.segment_id, &s.blake3, "a", "d1"));
        }
        // Another node's copy is not this node's business.
        log.push(Command::new("hb", "b", hb("b", "db", 1)));
        log.push(node_copy(&gone.segment_id, &gone.blake3, "b", "db"));
        // The disk is now d2 (old-disk's copy was recorded under d1)...
        log.push(Command::new("h2", "a", hb("a", "d2", 2)));
        for (offset, command) in log.iter().enumerate() {
            assert_eq!(state.apply(offset as u64, command).unwrap(), Outcome::Applied, "{command:?}");
        }
        let path = |id: &str| PathBuf::from(format!("/d/segments/{id}.parquet"));
        let files: Vec<PathBuf> = ["ok", "bad", "uncopied", "old-disk", "orphan"].iter().map(|id| path(id)).collect();
        let hash = |p: &Path| -> std::io::Result<String> {
            let id = super::super::data_dir::segment_id(p).unwrap();
            Ok(if id == "bad" { "0".repeat(64) } else { blake3::hash(id.as_bytes()).to_hex().to_string() })
        };
        let (fixes, hashed) = plan(&state, &files, "a", "d2", hash).unwrap();
        assert_eq!(hashed, 4, "every known file is hashed, the orphan is the sweep's");
        let d1 = |_| Location::node("a", "d1");
        let expected = vec![
            Fix::Remove { segment_id: "ok".into(), location: d1(()), reason: "recorded for another disk of this node".into() },
            Fix::Add { segment_id: "ok".into(), blake3: ok.blake3.clone() },
            Fix::Remove { segment_id: "gone".into(), location: d1(()), reason: "file missing".into() },
            Fix::Damaged { segment_id: "bad".into(), path: path("bad") },
            Fix::Remove { segment_id: "bad".into(), location: d1(()), reason: "file does not match its blake3".into() },
            Fix::Add { segment_id: "uncopied".into(), blake3: uncopied.blake3.clone() },
            Fix::Remove { segment_id: "old-disk".into(), location: d1(()), reason: "recorded for another disk of this node".into() },
            Fix::Add { segment_id: "old-disk".into(), blake3: old_disk.blake3.clone() },
        ];
        assert_eq!(fixes, expected);
    }
}
