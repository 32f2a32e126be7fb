//! The edge's [`IngestSink`]: a request is encoded once, appended to the spool and
//! answered when the spool fsync'd it (I2), or, in `core` ack mode, when a core
//! acknowledged it after Kafka.
//!
//! Requests reach the spool in the order their `ingest` was called, even when several are
//! in flight: each encodes on its own, then waits for the one called before it to be
//! queued ([`QueueOrder`]). An input that keeps several batches in flight (syslog) thus
//! keeps its read order in the spool, while the spool's group commit shares one fsync
//! among them.

use std::borrow::Borrow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::oneshot;
use weir_http_ingest::{AckMode, IngestRequest, IngestSink, Refusal};
use weir_proto::wire;

use crate::dead_letter::DeadLetters;
use crate::spool::{Spool, SpoolError};

// Moved to the spool, which owns the record format; kept here so existing callers
// (`crate::ingest::decode_spooled`) still compile.
pub use crate::spool::{decode_spooled, encode_spooled};

pub struct SpoolSink {
    pub spool: Spool,
    /// In `core` ack mode, a batch a core refused is acked in the spool once it is
    /// dead-lettered; the waiting client must hear that, not a success.
    pub dead_letters: DeadLetters,
    pub default_ack_mode: AckMode,
    pub core_ack_timeout: Duration,
    pub order: QueueOrder,
}

/// The order in which requests are handed to the spool: that of their `ingest` calls.
#[derive(Default)]
pub struct QueueOrder {
    /// Closed (its sender dropped) once the last request called has been queued or has
    /// given up.
    last: Mutex<Option<oneshot::Receiver<()>>>,
}

impl QueueOrder {
    /// A place behind every request called so far.
    fn take_turn(&self) -> Turn {
        let (done, next) = oneshot::channel();
        let previous = self.last.lock().expect("lock").replace(next);
        Turn { previous, _done: done }
    }
}

/// Dropping it lets the next request queue.
struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    _done: oneshot::Sender<()>,
}

impl Turn {
    async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            // Err: the previous turn was dropped, which is its signal.
            let _ = previous.await;
        }
    }
}

impl IngestSink for SpoolSink {
    fn ingest(&self, request: IngestRequest) -> BoxFuture<'static, Result<(), Refusal>> {
        self.spool_request(request)
    }

    /// Encoding only reads the request: no copy of it is made.
    fn ingest_shared(&self, request: Arc<IngestRequest>) -> BoxFuture<'static, Result<(), Refusal>> {
        self.spool_request(request)
    }

    fn observe(&self) {
        let stats = self.spool.stats();
        metrics::gauge!("weir_spool_used_bytes").set(stats.used_bytes as f64);
        metrics::gauge!("weir_spool_max_bytes").set(stats.max_bytes as f64);
        metrics::gauge!("weir_spool_pending_batches").set(stats.pending_batches as f64);
        // Non-zero for long means they cannot be written to the dead-letter directory.
        metrics::gauge!("weir_spool_corrupt_records").set(stats.corrupt_records as f64);
    }

    fn ready(&self) -> Result<(), String> {
        let stats = self.spool.stats();
        if stats.used_bytes >= stats.max_bytes {
            return Err(format!("spool full ({} of {} bytes)", stats.used_bytes, stats.max_bytes));
        }
        Ok(())
    }
}

impl SpoolSink {
    fn spool_request<R: Borrow<IngestRequest> + Send + 'static>(&self, request: R) -> BoxFuture<'static, Result<(), Refusal>> {
        let spool = self.spool.clone();
        let dead_letters = self.dead_letters.clone();
        let mode = request.borrow().ack_mode.unwrap_or(self.default_ack_mode);
        let core_ack_timeout = self.core_ack_timeout;
        // Taken at the call, not at the first poll: the call order is the spool order.
        let mut turn = self.order.take_turn();
        async move {
            let n_events = request.borrow().n_events as u64;
            // Compression is CPU work; keep it off the runtime's I/O threads.
            let payload = tokio::task::spawn_blocking(move || wire::encode_payload(&request.borrow().batches))
                .await
                .map_err(|e| Refusal::internal(format!("encoding task failed: {e}")))?
                .map_err(|e| Refusal::internal(e.to_string()))?;
            turn.wait().await;
            let queued = spool.queue(encode_spooled(n_events, &payload)).await.map_err(SpoolError::into_refusal);
            drop(turn);
            let seq = queued?.durable().await.map_err(SpoolError::into_refusal)?;
            if mode == AckMode::Core
                && tokio::time::timeout(core_ack_timeout, spool.wait_acked(seq)).await.is_err()
            {
                return Err(Refusal::unavailable(
                    format!(
                        "the events are stored on this edge (batch {seq}) but no core acknowledged them within {} ms; \
                         they will still be forwarded, so a retry may store them twice",
                        core_ack_timeout.as_millis()
                    ),
                    Duration::from_secs(5),
                ));
            }
            if mode == AckMode::Core
                && let Some(refusal) = dead_letters.refusal(seq)
            {
                let message = format!(
                    "a core refused these events ({:?}: {}); they are kept in the edge's dead-letter directory {} \
                     as batch {}; do not resend them, fix the cause and requeue them with `weir-edge dead-letter requeue`",
                    refusal.code,
                    refusal.message,
                    dead_letters.dir().display(),
                    refusal.batch_id
                );
                // The batch is dead-lettered, not refused: the client hears 413 when it was
                // too large and otherwise 500 (its own retry would not help, the letter does).
                return Err(match refusal.code {
                    wire::ErrorCode::TooLarge => Refusal::too_large(message),
                    _ => Refusal::internal(message),
                });
            }
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::SpoolConfig;
    use weir_proto::{Event, EventBatch};

    fn request(first: usize, n: usize, raw_bytes: usize) -> IngestRequest {
        let events = (first..first + n).map(|i| Event::raw(format!("{i}-{}", "x".repeat(raw_bytes)))).collect();
        let batch = EventBatch { repository: "r".into(), tags: Default::default(), parser: None, ingest_ts_ms: 0, attributes: Default::default(), events };
        IngestRequest { batches: vec![batch], n_events: n, ack_mode: Some(AckMode::Spool) }
    }

    /// A large request called first and a small one after, awaited together: the small
    /// one encodes sooner but still takes the later sequence number.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_reach_the_spool_in_call_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(SpoolConfig { dir: dir.path().join("spool"), max_bytes: 1 << 30, segment_bytes: 64 << 20, seq_block: 64 }).unwrap();
        let sink = SpoolSink {
            spool: spool.clone(),
            dead_letters: DeadLetters::new(dir.path().join("dead")),
            default_ack_mode: AckMode::Spool,
            core_ack_timeout: Duration::from_secs(1),
            order: QueueOrder::default(),
        };
        for round in 0..5 {
            let first = round * 1000;
            let (large, small) = (sink.ingest(request(first, 200, 20_000)), sink.ingest(request(first + 500, 1, 1)));
            let (large, small) = futures::join!(large, small);
            large.unwrap();
            small.unwrap();
        }
        let firsts: Vec<String> = spool
            .pending_after(None, usize::MAX)
            .unwrap()
            .iter()
            .map(|b| {
                let (_, payload) = decode_spooled(&b.payload).unwrap();
                let batches = wire::decode_payload(&payload, 1 << 30).unwrap();
                batches[0].events[0].raw.split('-').next().unwrap().to_owned()
            })
            .collect();
        let expected: Vec<String> = (0..5).flat_map(|r| [r * 1000, r * 1000 + 500]).map(|i| i.to_string()).collect();
        assert_eq!(firsts, expected);
    }
}
