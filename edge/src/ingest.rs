//! The edge's [`IngestSink`]: a request is encoded once, appended to the spool and
//! answered when the spool fsync'd it (I2), or, in `core` ack mode, when a core
//! acknowledged it after Kafka.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use weir_http_ingest::{AckMode, IngestError, IngestRequest, IngestSink};
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
}

impl IngestSink for SpoolSink {
    fn ingest(&self, request: IngestRequest) -> BoxFuture<'static, Result<(), IngestError>> {
        let spool = self.spool.clone();
        let dead_letters = self.dead_letters.clone();
        let mode = request.ack_mode.unwrap_or(self.default_ack_mode);
        let core_ack_timeout = self.core_ack_timeout;
        async move {
            let n_events = request.n_events as u64;
            // Compression is CPU work; keep it off the runtime's I/O threads.
            let payload = tokio::task::spawn_blocking(move || wire::encode_payload(&request.batches))
                .await
                .map_err(|e| IngestError::Internal(format!("encoding task failed: {e}")))?
                .map_err(|e| IngestError::Internal(e.to_string()))?;
            let seq = spool.append(encode_spooled(n_events, &payload)).await.map_err(spool_error)?;
            if mode == AckMode::Core
                && tokio::time::timeout(core_ack_timeout, spool.wait_acked(seq)).await.is_err()
            {
                return Err(IngestError::Unavailable {
                    message: format!(
                        "the events are stored on this edge (batch {seq}) but no core acknowledged them within {} ms; \
                         they will still be forwarded, so a retry may store them twice",
                        core_ack_timeout.as_millis()
                    ),
                    retry_after: Duration::from_secs(5),
                });
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
                return Err(match refusal.code {
                    wire::ErrorCode::TooLarge => IngestError::TooLarge(message),
                    _ => IngestError::Internal(message),
                });
            }
            Ok(())
        }
        .boxed()
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

fn spool_error(error: SpoolError) -> IngestError {
    let message = error.to_string();
    match error {
        SpoolError::Full { .. } => IngestError::Overloaded { message, retry_after: Duration::from_secs(5) },
        e if e.is_retryable() => IngestError::Unavailable { message, retry_after: Duration::from_secs(5) },
        SpoolError::TooLarge { .. } => IngestError::TooLarge(message),
        _ => IngestError::Internal(message),
    }
}
