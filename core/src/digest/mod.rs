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
//! Module map: [`partition`] (one partition's worker: read, build, flush, register),
//! [`rows`] (record → segment rows: dedup, parse, foreign records). Who should own what is
//! `cluster::assign`; the sweep of files Global does not know is `store::sweep`.

pub mod partition;
pub mod redigest;
pub mod rows;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weir_global::{Cmd, Command, Outcome};

use crate::cluster::assign;
use crate::kafka::ingest_reader;
use crate::store::reconcile;
use crate::store::sweep::{self, SWEEP_EVERY, SWEEP_MIN_AGE, When};
use partition::{Context, Exit};

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
    // Lost segments (no reachable copy) by id, since when; one re-digest at a time.
    let mut lost_since: BTreeMap<String, Instant> = BTreeMap::new();
    let mut redigest: Option<JoinHandle<Result<String, redigest::RedigestError>>> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => break,
        }
        // Not before Global is bound to the topics (`cluster::topics`): a partition whose
        // log started late gets its log start recorded first.
        if ctx.global.not_ready().is_some() || ctx.global.read(|s| s.topics().is_none()) {
            continue;
        }
        if !cleaned {
            // Not before this process's own first command (the heartbeat, announcing this
            // disk) applied: until then a registration an earlier run wrote just before it
            // died may still be on its way, and its file would look unregistered.
            let announced = ctx.global.read(|s| s.nodes().get(&ctx.node_id).is_some_and(|n| n.disk_id == ctx.disk_id));
            if !ctx.global.own_command_applied() || !announced {
                continue;
            }
            // Before any worker writes: files Global does not know are left from a crash.
            sweep::remove_unregistered(&ctx.global, &ctx.data_dir, &ctx.pending, When::Start);
            // Copies Global records for this node against the files it has: in the
            // background, it hashes every file.
            let ctx = ctx.clone();
            tokio::spawn(async move {
                match reconcile::run(&ctx.global, &ctx.data_dir, &ctx.node_id, &ctx.disk_id).await {
                    Ok(report) => tracing::info!(?report, "this node's copies reconciled with its disk"),
                    Err(error) => tracing::error!(%error, "cannot reconcile this node's copies with its disk"),
                }
            });
            cleaned = true;
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            // Files of segments a re-parse replaced (run on any core) leave Global while
            // this node runs; old enough that no query or registration still needs them.
            last_sweep = Instant::now();
            let min_age = SWEEP_MIN_AGE.max(Duration::from_millis(ctx.config.flush_interval_ms.saturating_mul(2)));
            let ctx = ctx.clone();
            let _ = tokio::task::spawn_blocking(move || sweep::remove_unregistered(&ctx.global, &ctx.data_dir, &ctx.pending, When::Running(min_age))).await;
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
        repair(&ctx, &workers, &mut lost_since, &mut redigest, now_ms, &shutdown);
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

/// Loads and configures every parser plugin of `[parsers]` (off the async workers: it
/// compiles or loads components), so a bad plugin or setting stops the caller with a clear
/// error instead of failing batches later. The digest and reparse are their callers.
pub async fn load_parsers(config: &weir_plugin_host::ParsersConfig) -> Result<weir_plugin_host::ParserRegistry, weir_plugin_host::Error> {
    let config = config.clone();
    let registry = tokio::task::spawn_blocking(move || weir_plugin_host::ParserRegistry::new(&config)).await.expect("plugin loading task")?;
    tracing::info!(parsers = ?registry.parsers().collect::<Vec<_>>(), "parser plugins loaded");
    Ok(registry)
}

/// Starts a re-digest of the oldest lost segment of a partition this node digests, once it
/// has been lost for `digest.redigest_after_ms` (one at a time), and reports the last one.
fn repair(
    ctx: &Arc<Context>,
    workers: &BTreeMap<u32, Worker>,
    lost_since: &mut BTreeMap<String, Instant>,
    running: &mut Option<JoinHandle<Result<String, redigest::RedigestError>>>,
    now_ms: u64,
    shutdown: &CancellationToken,
) {
    if running.as_ref().is_some_and(|h| !h.is_finished()) {
        return;
    }
    if let Some(done) = running.take() {
        match futures::FutureExt::now_or_never(done).expect("finished") {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                metrics::counter!("weir_redigest_failures_total").increment(1);
                tracing::error!(%error, "re-digest of a lost segment failed; tried again");
            }
            Err(join) => tracing::error!(error = %join, "re-digest task failed"),
        }
    }
    let timeout = ctx.config.node_timeout_ms;
    let lost: Vec<(u64, weir_global::Segment)> = ctx.global.read(|state| {
        let live = |node: &str| node == ctx.node_id || state.is_live(node, now_ms, timeout);
        redigest::lost(state, &ctx.node_id, live)
            .into_iter()
            .filter_map(|s| {
                let epoch = state.partition(s.info.partition).epoch;
                // Only under the epoch a worker of this node holds.
                workers.get(&s.info.partition).filter(|w| w.epoch == epoch).map(|_| (epoch, s.clone()))
            })
            .collect()
    });
    metrics::gauge!("weir_segments_lost").set(lost.len() as f64);
    lost_since.retain(|id, _| lost.iter().any(|(_, s)| s.info.segment_id == *id));
    for (_, segment) in &lost {
        lost_since.entry(segment.info.segment_id.clone()).or_insert_with(Instant::now);
    }
    let grace = Duration::from_millis(ctx.config.redigest_after_ms);
    let due = lost.into_iter().find(|(_, s)| lost_since.get(&s.info.segment_id).is_some_and(|t| t.elapsed() >= grace));
    if let Some((epoch, segment)) = due {
        let (ctx, cancel) = (ctx.clone(), shutdown.child_token());
        *running = Some(tokio::task::spawn_blocking(move || redigest::run(&ctx, epoch, &segment, &cancel)));
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
                tracing::error!(partition = p, %error, "digest cannot resume: restore the records, or accept the loss with `weir-core global set-log-start`; nothing is skipped");
                Duration::from_secs(10)
            }
            Exit::ResumePastEnd { resume, end } => {
                tracing::error!(
                    partition = p,
                    resume,
                    end,
                    "digest cannot resume: Global's resume point is past the end of the partition (the topic was recreated, or this is another Kafka cluster); nothing is read from the start instead"
                );
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
