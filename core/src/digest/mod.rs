//! The digest: ingest partitions → parsed events in segment files registered in Global.
//!
//! Ownership is kept in Global, not in a Kafka consumer group: a core that should own a
//! partition ([`assign`]) writes `claim_partition` with the next epoch, and only once Global
//! applied it does it start a worker ([`partition`]) under that epoch. The claim is what
//! fences the former owner (its later registrations are refused), so the thing that
//! decides ownership and the thing that fences are the same log; a consumer group would be
//! a second, differently-timed opinion about the same question, and its committed offsets
//! are never where to resume anyway (Global's resume point is).
//!
//! Module map: [`assign`] (who should own what), [`partition`] (one partition's worker),
//! [`rows`] (record → segment rows: dedup, parse, foreign records).

pub mod assign;
pub mod partition;
pub mod rows;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weir_global::{Cmd, Command, Outcome};

use crate::kafka::ingest_reader;
use partition::{Context, Exit};

/// The segments directory inside `data_dir`.
pub const SEGMENTS_DIR: &str = "segments";

struct Worker {
    epoch: u64,
    cancel: CancellationToken,
    handle: JoinHandle<Exit>,
}

/// The digest of this node until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let interval = Duration::from_millis(ctx.config.assign_interval_ms.max(50));
    let mut workers: BTreeMap<u32, Worker> = BTreeMap::new();
    // After a worker failed, its partition is not claimed again before this instant.
    let mut hold_off: BTreeMap<u32, Instant> = BTreeMap::new();
    let mut partitions: Option<(u32, Instant)> = None;
    let mut cleaned = false;
    let mut last_sweep = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => break,
        }
        if ctx.global.not_ready().is_some() {
            continue;
        }
        if !cleaned {
            // Before any worker writes: files Global does not know are left from a crash.
            remove_unregistered(&ctx, None);
            cleaned = true;
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            // Files of segments a re-parse replaced (run on any core) leave Global while
            // this node runs; old enough that no query or registration still needs them.
            last_sweep = Instant::now();
            let min_age = SWEEP_MIN_AGE.max(Duration::from_millis(ctx.config.flush_interval_ms.saturating_mul(2)));
            let ctx = ctx.clone();
            let _ = tokio::task::spawn_blocking(move || remove_unregistered(&ctx, Some(min_age))).await;
        }
        if partitions.is_none_or(|(_, at)| at.elapsed() > Duration::from_secs(30)) {
            let kafka = ctx.kafka.clone();
            match tokio::task::spawn_blocking(move || ingest_reader::partition_count(&kafka)).await.expect("metadata task") {
                Ok(n) => partitions = Some((n, Instant::now())),
                Err(reason) => {
                    tracing::warn!(%reason, "digest waits for the ingest topic's partitions");
                    continue;
                }
            }
        }
        let n_partitions = partitions.expect("set above").0;
        reap(&mut workers, &mut hold_off);
        let now_ms = weir_proto::event::now_ms().max(0) as u64;
        let (desired, current) = ctx.global.read(|state| {
            let live = assign::live_nodes(state, now_ms, ctx.config.node_timeout_ms);
            let current: BTreeMap<u32, _> = (0..n_partitions).map(|p| (p, state.partition(p))).collect();
            let owners = current.iter().map(|(p, s)| (*p, s.owner.clone())).collect();
            let desired = assign::desired_owners(n_partitions, &live, &owners);
            (desired, current)
        });
        for (p, state) in current {
            if let Some(worker) = workers.get(&p) {
                if state.owner.as_deref() != Some(ctx.node_id.as_str()) || state.epoch != worker.epoch {
                    tracing::info!(partition = p, owner = ?state.owner, epoch = state.epoch, "partition claimed by another core, digest stops");
                    worker.cancel.cancel();
                }
                continue;
            }
            if desired.get(&p) != Some(&ctx.node_id) || hold_off.get(&p).is_some_and(|t| Instant::now() < *t) {
                continue;
            }
            let epoch = state.epoch + 1;
            let claim = Command::new(
                format!("claim:{p}:{epoch}:{}", ctx.node_id),
                ctx.node_id.clone(),
                Cmd::ClaimPartition { partition: p, node_id: ctx.node_id.clone(), epoch },
            );
            match ctx.global.submit(&claim).await {
                Ok((_, Outcome::Applied)) => {
                    tracing::info!(partition = p, epoch, previous_owner = ?state.owner, "partition claimed");
                    let cancel = shutdown.child_token();
                    let handle = {
                        let (ctx, cancel) = (ctx.clone(), cancel.clone());
                        tokio::task::spawn_blocking(move || partition::run(&ctx, p, epoch, &cancel))
                    };
                    workers.insert(p, Worker { epoch, cancel, handle });
                }
                Ok((_, Outcome::Rejected { reason })) => tracing::info!(partition = p, %reason, "claim lost"),
                Err(error) => tracing::warn!(partition = p, %error, "claim not confirmed"),
            }
        }
    }
    for worker in workers.values() {
        worker.cancel.cancel();
    }
    for (_, worker) in workers {
        let _ = worker.handle.await;
    }
}

/// Collects finished workers and says why they stopped.
fn reap(workers: &mut BTreeMap<u32, Worker>, hold_off: &mut BTreeMap<u32, Instant>) {
    let finished: Vec<u32> = workers.iter().filter(|(_, w)| w.handle.is_finished()).map(|(p, _)| *p).collect();
    for p in finished {
        let worker = workers.remove(&p).expect("listed above");
        let exit = futures::FutureExt::now_or_never(worker.handle).expect("finished").unwrap_or_else(|join| Exit::Failed(join.to_string()));
        let retry_in = match exit {
            Exit::Shutdown => Duration::ZERO,
            Exit::Superseded(reason) => {
                tracing::info!(partition = p, %reason, "digest superseded by a later claim");
                Duration::ZERO
            }
            Exit::Refused(reason) => {
                tracing::error!(partition = p, %reason, "Global refused a segment; digest restarts from the resume point");
                Duration::from_secs(1)
            }
            Exit::OffsetGone(error) => {
                tracing::error!(partition = p, %error, "digest cannot resume: raise the ingest topic's retention or restore the records; nothing is skipped");
                Duration::from_secs(30)
            }
            Exit::Failed(reason) => {
                tracing::error!(partition = p, %reason, "digest failed, retrying");
                Duration::from_secs(2)
            }
        };
        hold_off.insert(p, Instant::now() + retry_in);
    }
}

/// Deletes temporary files and segment files Global does not know (a crash between the
/// write and the registration, or a refused registration whose delete failed).
/// How often a running node looks for segment files Global no longer has.
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// ... and how old such a file must be (at least twice the flush interval).
const SWEEP_MIN_AGE: Duration = Duration::from_secs(600);

/// Removes the segment files of `segments_dir` Global does not know. At start
/// (`min_age` none) also temporary files, which no writer holds then; while running,
/// only finished files last modified at least `min_age` ago: a file just finished is
/// registered moments later, and a replaced one may still be read by a query that listed
/// it before the swap.
fn remove_unregistered(ctx: &Context, min_age: Option<Duration>) {
    let registered = |id: &str| ctx.global.read(|s| s.segment(id).is_some());
    for path in orphans(&ctx.segments_dir, registered, min_age) {
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(file = %path.display(), "removed a segment file Global does not know"),
            Err(error) => tracing::warn!(file = %path.display(), %error, "cannot remove an unregistered segment file"),
        }
    }
}

/// The files [`remove_unregistered`] removes.
fn orphans(dir: &Path, registered: impl Fn(&str) -> bool, min_age: Option<Duration>) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let orphan = if weir_segment::is_segment_file_name(&name) {
            !registered(name.trim_end_matches(".parquet"))
        } else {
            min_age.is_none() && name.starts_with('.') && name.ends_with(".tmp")
        };
        let old_enough = || match min_age {
            None => true,
            Some(min_age) => entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().unwrap_or_default() >= min_age),
        };
        if orphan && old_enough() {
            out.push(entry.path());
        }
    }
    out
}

/// `<data_dir>/segments`.
pub fn segments_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(SEGMENTS_DIR)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn orphans_are_unregistered_files_and_while_running_only_old_finished_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, age_s: u64| {
            let path = dir.path().join(name);
            std::fs::write(&path, b"x").unwrap();
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(SystemTime::now() - Duration::from_secs(age_s)).unwrap();
        };
        file("kept.parquet", 3600);
        file("replaced.parquet", 3600);
        file("just-written.parquet", 1);
        file(".writing.parquet.tmp", 3600);
        let registered = |id: &str| id == "kept";
        let names = |paths: Vec<PathBuf>| {
            let mut names: Vec<String> = paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
            names.sort();
            names
        };
        assert_eq!(names(orphans(dir.path(), registered, None)), [".writing.parquet.tmp", "just-written.parquet", "replaced.parquet"]);
        assert_eq!(names(orphans(dir.path(), registered, Some(Duration::from_secs(600)))), ["replaced.parquet"]);
    }
}
